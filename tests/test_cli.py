"""The command line, run as a user runs it (a separate process), against the stand-in org."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from zeep_sfrefresh import FileTokenStore
from zeep_sfrefresh.testing import StandInOrg

USERNAME = "standin@example.com"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SF_")}
    environment["OAUTHLIB_INSECURE_TRANSPORT"] = "1"  # the stand-in org is plain http
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
