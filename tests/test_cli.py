"""The command line, run as a user runs it (a separate process), against the stand-in org."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from zeep_sfrefresh import ENTERPRISE_WSDL, FileTokenStore, __version__
from zeep_sfrefresh._tokenfile import TokenFileSettings
from zeep_sfrefresh.testing import StandInOrg

USERNAME = "standin@example.com"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # No OAUTHLIB_INSECURE_TRANSPORT: the CLI allows plain http to a loopback org itself.
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SF_") and k != "OAUTHLIB_INSECURE_TRANSPORT"
    }
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "zeep_sfrefresh", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def key_file(tmp_path: Path, sf_org: StandInOrg) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "server.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    sf_org.register_jwt_certificate(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def _jwt_flags(org: StandInOrg, key: Path) -> list[str]:
    return [
        "--jwt",
        "--client-id",
        org.client_id,
        "--username",
        USERNAME,
        "--key",
        str(key),
        "--login-url",
        org.url,
    ]


def test_token_then_query_with_jwt(sf_org: StandInOrg, key_file: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "sf-token.json"
    got = _run("token", "--token-file", str(token_file), *_jwt_flags(sf_org, key_file))
    assert got.returncode == 0, got.stderr
    assert f"saved a token to {token_file}" in got.stdout
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    stored = FileTokenStore(token_file).load()
    assert stored is not None

    soql = "SELECT Id, LastName FROM Contact LIMIT 3"
    first = _run("query", soql, "--token-file", str(token_file), *_jwt_flags(sf_org, key_file))
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].split() == ["Id", "LastName"]
    assert lines[-1] == "(3 rows)"

    sf_org.expire_all_sessions()
    again = _run(
        "query", soql, "--json", "--token-file", str(token_file), *_jwt_flags(sf_org, key_file)
    )
    assert again.returncode == 0, again.stderr
    rows = json.loads(again.stdout)
    assert len(rows) == 3
    assert set(rows[0]) == {"Id", "LastName"}
    assert sf_org.token_requests == 2  # the first token, then one refresh
    refreshed = FileTokenStore(token_file).load()
    assert refreshed is not None
    assert refreshed.version == 2
    for output in (got, first, again):
        assert stored.token["access_token"] not in output.stdout + output.stderr
        assert refreshed.token["access_token"] not in output.stdout + output.stderr


def test_query_with_a_refresh_token_file_keeps_the_rotated_token(
    sf_org: StandInOrg, tmp_path: Path
) -> None:
    token_file = tmp_path / "sf-token.json"
    store = FileTokenStore(token_file)
    with store.lock():
        store.save(sf_org.issue_token(), replaces=None)
    sf_org.rotation = True
    sf_org.expire_all_sessions()
    env = {"SF_CLIENT_ID": sf_org.client_id, "SF_CLIENT_SECRET": sf_org.client_secret}
    got = _run(
        "query",
        "SELECT Id FROM Account",
        "--token-file",
        str(token_file),
        "--login-url",
        sf_org.url,
        env=env,
    )
    assert got.returncode == 0, got.stderr
    assert got.stdout.splitlines()[-1] == "(3 rows)"
    stored = store.load()
    assert stored is not None
    assert stored.version == 2
    assert sf_org.refresh_token_state(stored.token["refresh_token"]) == "active"
    assert sf_org.client_secret not in got.stdout + got.stderr


def test_query_uses_queryMore_and_api_version(
    sf_org: StandInOrg, key_file: Path, tmp_path: Path
) -> None:
    token_file = tmp_path / "t.json"
    assert (
        _run("token", "--token-file", str(token_file), *_jwt_flags(sf_org, key_file)).returncode
        == 0
    )
    got = _run(
        "query",
        "SELECT Id FROM Contact",
        "--api-version",
        "61.0",
        "--json",
        "--token-file",
        str(token_file),
        *_jwt_flags(sf_org, key_file),
    )
    assert got.returncode == 0, got.stderr
    assert len(json.loads(got.stdout)) == 25
    assert sf_org.operations["query"] == 1
    assert sf_org.operations["queryMore"] == 0


def test_query_follows_queryMore_with_progress_on_a_terminal(
    sf_org: StandInOrg, token_file: Path
) -> None:
    sf_org.query_batch_size = 10
    primary, secondary = pty.openpty()
    try:
        got = subprocess.run(
            [
                *(sys.executable, "-m", "zeep_sfrefresh", "query", "SELECT Id FROM Contact"),
                *("--format", "jsonl", "--token-file", str(token_file)),
            ],
            env={k: v for k, v in os.environ.items() if k != "OAUTHLIB_INSECURE_TRANSPORT"},
            stdout=subprocess.PIPE,
            stderr=secondary,
            text=True,
            timeout=120,
            check=False,
        )
        os.close(secondary)
        secondary = -1
        terminal = b""
        with contextlib.suppress(OSError):  # EIO once the writer is gone
            while chunk := os.read(primary, 4096):
                terminal += chunk
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)
    assert got.returncode == 0, terminal
    assert len(got.stdout.splitlines()) == 25
    assert sf_org.operations["queryMore"] == 2
    assert b"fetched 10 of 25 records" in terminal
    assert b"fetched 20 of 25 records" in terminal
    assert terminal.endswith(b"\r\x1b[K")  # the progress line is wiped at the end


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [
                "query",
                "SELECT Id FROM Contact",
                "--token-file",
                "{dir}/none.json",
                "--client-id",
                "x",
            ],
            "no token in",
        ),
        (
            ["token", "--token-file", "{dir}/t.json", "--jwt", "--client-id", "x"],
            "missing --username, --key",
        ),
        (
            [
                "token",
                "--token-file",
                "{dir}/t.json",
                "--client-credentials",
                "--client-id",
                "x",
                "--domain-url",
                "https://a.my.salesforce.com",
            ],
            "client secret is missing",
        ),
    ],
)
def test_mistakes_are_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    got = _run(*(arg.format(dir=tmp_path) for arg in args))
    assert got.returncode == 1
    assert message in got.stderr
    assert "Traceback" not in got.stderr


def test_a_soap_fault_is_one_line(sf_org: StandInOrg, key_file: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "t.json"
    assert (
        _run("token", "--token-file", str(token_file), *_jwt_flags(sf_org, key_file)).returncode
        == 0
    )
    got = _run(
        "query",
        "SELECT Nope FROM Contact",
        "--token-file",
        str(token_file),
        *_jwt_flags(sf_org, key_file),
    )
    assert got.returncode == 1
    assert "INVALID_FIELD" in got.stderr
    assert "Traceback" not in got.stderr


@pytest.fixture
def token_file(sf_org: StandInOrg, tmp_path: Path) -> Path:
    """A token file as ``login`` writes it (settings included) for the stand-in org."""
    path = tmp_path / "sf.json"
    store = FileTokenStore(path)
    settings = TokenFileSettings("refresh_token", sf_org.client_id, sf_org.token_url, sf_org.url)
    with store.lock():
        store.save(sf_org.issue_token(), replaces=None, settings=settings.to_json())
    return path


def _one_error_line(got: subprocess.CompletedProcess[str], command: str) -> str:
    assert got.returncode == 1, got.stdout
    assert "Traceback" not in got.stderr
    lines = got.stderr.splitlines()
    assert len(lines) == 1, got.stderr
    assert lines[0].startswith(f"zeep-sfrefresh {command}: ")
    return lines[0]


def test_a_missing_wsdl_is_one_line(token_file: Path) -> None:
    got = _run(
        "query", "SELECT Id FROM Account", "--token-file", str(token_file), "--wsdl", "nope.wsdl"
    )
    assert "cannot read the WSDL nope.wsdl" in _one_error_line(got, "query")


def test_an_enterprise_wsdl_for_query_is_one_line(token_file: Path) -> None:
    got = _run(
        "query",
        "SELECT Id FROM Account",
        "--token-file",
        str(token_file),
        "--wsdl",
        ENTERPRISE_WSDL,
    )
    assert "query needs a partner WSDL" in _one_error_line(got, "query")


def test_a_bad_api_version_is_one_line(token_file: Path) -> None:
    got = _run(
        "query", "SELECT Id FROM Account", "--token-file", str(token_file), "--api-version", "66"
    )
    assert "--api-version wants a version such as 66.0" in _one_error_line(got, "query")


def _jwt_of(key: Path) -> list[str]:
    return ["--jwt", "--client-id", "x", "--username", USERNAME, "--key", str(key)]


def test_a_certificate_given_as_key_is_one_line(tmp_path: Path) -> None:
    certificate = tmp_path / "server.crt"
    certificate.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    got = _run("token", "--token-file", str(tmp_path / "t.json"), *_jwt_of(certificate))
    assert "must be a PEM private key" in _one_error_line(got, "token")


def test_jwt_without_pyjwt_is_one_line(tmp_path: Path, key_file: Path) -> None:
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "jwt.py").write_text("raise ImportError('No module named jwt')\n")
    got = _run(
        "token",
        "--token-file",
        str(tmp_path / "t.json"),
        *_jwt_of(key_file),
        env={"PYTHONPATH": str(blocker)},
    )
    assert "pip install 'zeep-sfrefresh[jwt]'" in _one_error_line(got, "token")


def test_a_url_that_is_not_the_token_endpoint_is_one_line(
    sf_org: StandInOrg, tmp_path: Path
) -> None:
    got = _run(
        "token",
        "--token-file",
        str(tmp_path / "t.json"),
        "--client-credentials",
        "--client-id",
        sf_org.client_id,
        "--domain-url",
        sf_org.url + "/somewhere/else",
        env={"SF_CLIENT_SECRET": sf_org.client_secret},
    )
    line = _one_error_line(got, "token")
    assert "is it the token endpoint?" in line
    assert sf_org.client_secret not in got.stderr


@pytest.mark.parametrize(
    "login_url", ["http://login.example.com", "http://127.0.0.1.example.com", "http://127.evil"]
)
def test_plain_http_to_another_host_is_refused(tmp_path: Path, login_url: str) -> None:
    # A DNS name that starts like a loopback address may resolve anywhere.
    got = _run(
        "login",
        "--device",
        "--client-id",
        "x",
        "--login-url",
        login_url,
        "--token-file",
        str(tmp_path / "t.json"),
    )
    assert "is plain http" in _one_error_line(got, "login")


def test_debug_shows_the_traceback(token_file: Path) -> None:
    got = _run(
        "--debug",
        "query",
        "SELECT Id FROM Account",
        "--token-file",
        str(token_file),
        "--wsdl",
        "nope.wsdl",
    )
    assert got.returncode == 1
    assert "Traceback" in got.stderr


def test_version_and_usage_errors() -> None:
    version = _run("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"zeep-sfrefresh {__version__}"
    usage = _run("query")
    assert usage.returncode == 2
    assert len(usage.stderr.splitlines()) == 1
    assert "required: soql, --token-file" in usage.stderr


def test_query_formats_relationships_and_count(sf_org: StandInOrg, token_file: Path) -> None:
    soql = "SELECT Id, LastName, Account.Name FROM Contact WHERE LastName = 'Turing'"
    csv_run = _run("query", soql, "--token-file", str(token_file), "--format", "csv")
    assert csv_run.returncode == 0, csv_run.stderr
    header, *lines = csv_run.stdout.splitlines()
    assert header == "Id,LastName,Account.Name"
    assert lines
    assert all(line.split(",")[1] == "Turing" for line in lines)
    jsonl = _run("query", soql, "--token-file", str(token_file), "--format", "jsonl")
    assert jsonl.returncode == 0, jsonl.stderr
    records = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert len(records) == len(lines)
    assert set(records[0]) == {"Id", "LastName", "Account.Name"}
    count = _run("query", "SELECT COUNT() FROM Account", "--token-file", str(token_file))
    assert count.returncode == 0, count.stderr
    assert count.stdout.strip() == "count: 3"
    count_json = _run(
        "query", "SELECT COUNT() FROM Account", "--token-file", str(token_file), "--format", "json"
    )
    assert json.loads(count_json.stdout) == [{"count": 3}]


def test_query_table_fits_the_terminal(token_file: Path) -> None:
    soql = "SELECT Id, FirstName, LastName, Email, Account.Name FROM Contact"
    wide = _run("query", soql, "--token-file", str(token_file))
    assert wide.returncode == 0, wide.stderr
    assert max(len(line) for line in wide.stdout.splitlines()) > 60
    narrow = _run("query", soql, "--token-file", str(token_file), env={"COLUMNS": "60"})
    assert narrow.returncode == 0, narrow.stderr
    table = narrow.stdout.splitlines()
    assert table[-1] == "(25 rows)"
    assert all(len(line) <= 60 for line in table)
    assert all(line == line.rstrip() for line in table)
    assert "…" in narrow.stdout
