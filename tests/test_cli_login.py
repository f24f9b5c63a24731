"""``zeep-sfrefresh login`` and ``org``, run as a user runs them (separate processes).

The test plays the browser (it follows the printed URL with requests) and the person
approving a device code; nothing sets ``OAUTHLIB_INSECURE_TRANSPORT``: the CLI allows plain
http to a loopback org by itself.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from zeep_sfrefresh import FileTokenStore
from zeep_sfrefresh.testing import StandInOrg

SOQL = "SELECT Id, LastName FROM Contact LIMIT 3"


def _environment() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SF_") and k != "OAUTHLIB_INSECURE_TRANSPORT"
    }


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zeep_sfrefresh", *args],
        env={**_environment(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "zeep_sfrefresh", *args],
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _start_web_login(
    login_url: str, client_id: str, port: int, token_file: Path
) -> subprocess.Popen[str]:
    """``login`` in the browser flow, printing the URL for the test to follow."""
    return _start(
        *("login", "--no-browser", "--port", str(port), "--login-url", login_url),
        *("--client-id", client_id, "--token-file", str(token_file)),
    )


def _line_with(process: subprocess.Popen[str], text: str) -> str:
    """Read the process's stdout up to the first line containing ``text``."""
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        if text in line:
            return line.strip()
    raise AssertionError(f"no line with {text!r} in {seen!r}")


def _finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=60)
    return process.returncode, out, err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def org() -> Iterator[StandInOrg]:
    """A stand-in org set up like a connected app for a command line: rotation on, no
    secret needed to refresh (as the Salesforce CLI's own app)."""
    with StandInOrg(rotation=True) as standin:
        standin.require_secret_for_refresh = False
        yield standin


def _query_across_an_expiry(org: StandInOrg, token_file: Path) -> None:
    """``query`` with nothing but the token file, before and after a forced expiry."""
    first = _run("query", SOQL, "--token-file", str(token_file))
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-1] == "(3 rows)"
    org.reset_counters()
    org.expire_all_sessions()
    again = _run("query", SOQL, "--format", "json", "-v", "--token-file", str(token_file))
    assert again.returncode == 0, again.stderr
    assert len(json.loads(again.stdout)) == 3
    assert org.token_requests == 1  # exactly one refresh
    assert "refreshed in" in again.stderr
    stored = FileTokenStore(token_file).load()
    assert stored is not None
    assert org.refresh_token_state(stored.token["refresh_token"]) == "active"
    for output in (first, again):
        assert stored.token["access_token"] not in output.stdout + output.stderr
        assert stored.token["refresh_token"] not in output.stdout + output.stderr


def test_login_in_the_browser_then_query_from_the_token_file(
    org: StandInOrg, tmp_path: Path
) -> None:
    port = _free_port()
    org.callback_urls.add(f"http://localhost:{port}/OauthRedirect")
    token_file = tmp_path / "sf.json"
    process = _start_web_login(org.url, org.client_id, port, token_file)
    url = _line_with(process, "/services/oauth2/authorize?")
    page = requests.get(url, timeout=30)  # the browser: authorize, redirect, callback page
    assert page.status_code == 200
    assert "Logged in" in page.text
    code, out, err = _finish(process)
    assert code == 0, err
    assert f"saved a token to {token_file}" in out
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    settings = FileTokenStore(token_file).load_settings()
    assert settings == {
        "grant": "refresh_token",
        "client_id": org.client_id,
        "token_url": org.token_url,
        "login_url": org.url,
    }
    assert org.token_requests_by_grant["authorization_code"] == 1
    _query_across_an_expiry(org, token_file)


def test_login_with_a_device_code(org: StandInOrg, tmp_path: Path) -> None:
    org.device_interval = 0
    token_file = tmp_path / "sf.json"
    process = _start(
        "login",
        "--device",
        "--login-url",
        org.url,
        "--client-id",
        org.client_id,
        "--token-file",
        str(token_file),
    )
    line = _line_with(process, "enter the code")
    user_code = line.rsplit(" ", 1)[-1]
    verification = line.split()[1]
    approved = requests.get(verification, params={"user_code": user_code}, timeout=30)
    assert approved.status_code == 200
    code, _, err = _finish(process)
    assert code == 0, err
    assert org.token_requests_by_grant["device"] >= 1
    _query_across_an_expiry(org, token_file)


def test_login_imports_a_salesforce_cli_auth_url(org: StandInOrg, tmp_path: Path) -> None:
    issued = org.issue_token()
    auth_file = tmp_path / "auth.txt"
    auth_file.write_text(f"force://{org.client_id}::{issued['refresh_token']}@{org.url}\n")
    token_file = tmp_path / "sf.json"
    got = _run("login", "--sfdx-auth-url-file", str(auth_file), "--token-file", str(token_file))
    assert got.returncode == 0, got.stderr
    assert "imported the Salesforce CLI login" in got.stdout
    assert issued["refresh_token"] not in got.stdout + got.stderr
    stored = FileTokenStore(token_file).load()
    assert stored is not None
    # The import redeemed the refresh token once; with rotation the new one is kept.
    assert org.refresh_token_state(issued["refresh_token"]) == "retired"
    assert org.refresh_token_state(stored.token["refresh_token"]) == "active"
    _query_across_an_expiry(org, token_file)


def test_login_imports_sf_org_display_json(org: StandInOrg, tmp_path: Path) -> None:
    issued = org.issue_token()
    auth_file = tmp_path / "org.json"
    url = f"force://{org.client_id}::{issued['refresh_token']}@{org.url}"
    auth_file.write_text(json.dumps({"status": 0, "result": {"sfdxAuthUrl": url}}))
    token_file = tmp_path / "sf.json"
    got = _run("login", "--sfdx-auth-url-file", str(auth_file), "--token-file", str(token_file))
    assert got.returncode == 0, got.stderr
    assert FileTokenStore(token_file).load() is not None


def test_a_bad_auth_url_is_one_line_without_the_refresh_token(tmp_path: Path) -> None:
    auth_file = tmp_path / "auth.txt"
    auth_file.write_text("force://id:5Aep861TOPSECRET@acme.my.salesforce.com")
    got = _run(
        "login",
        "--sfdx-auth-url-file",
        str(auth_file),
        "--token-file",
        str(tmp_path / "t.json"),
    )
    assert got.returncode == 1
    assert len(got.stderr.splitlines()) == 1
    assert "5Aep861TOPSECRET" not in got.stderr
    assert not (tmp_path / "t.json").exists()


def test_org_command_serves_login_and_query(tmp_path: Path) -> None:
    callback_port = _free_port()
    process = _start(
        "org",
        "--port",
        "0",
        "--expire-every",
        "0.5",
        "--callback",
        f"http://localhost:{callback_port}/OauthRedirect",
    )
    try:
        listening = _line_with(process, "listening on")
        org_url = listening.split()[4]
        client_id = _line_with(process, "client id:").split()[-1]
        login_line = _line_with(process, "zeep-sfrefresh login ")
        query_line = _line_with(process, "zeep-sfrefresh query ")
        assert f"--login-url {org_url}" in login_line
        assert "--token-file" in query_line
        token_file = tmp_path / "sf.json"
        login = _start_web_login(org_url, client_id, callback_port, token_file)
        assert requests.get(_line_with(login, "authorize?"), timeout=30).status_code == 200
        code, _, err = _finish(login)
        assert code == 0, err
        _line_with(process, "expired 1 session")  # the login's session, 0.5 s after it
        got = _run("query", "-v", "SELECT Id FROM Account", "--token-file", str(token_file))
        assert got.returncode == 0, got.stderr
        assert got.stdout.splitlines()[-1] == "(3 rows)"
        assert "refreshed in" in got.stderr
    finally:
        process.send_signal(signal.SIGINT)
        code, _, err = _finish(process)
    assert code == 0, err
    assert "Traceback" not in err


def test_org_command_on_a_busy_port_is_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        got = _run("org", "--port", str(busy.getsockname()[1]))
    assert got.returncode == 1
    assert "choose another --port" in got.stderr
    assert len(got.stderr.splitlines()) == 1


def test_ctrl_c_during_login_is_one_line_and_frees_the_port(
    org: StandInOrg, tmp_path: Path
) -> None:
    port = _free_port()
    process = _start_web_login(org.url, org.client_id, port, tmp_path / "sf.json")
    _line_with(process, "authorize?")
    process.send_signal(signal.SIGINT)
    code, _, err = _finish(process)
    assert code == 130
    assert err.strip() == "zeep-sfrefresh login: interrupted"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert not (tmp_path / "sf.json").exists()
