"""Getting a first token (zeep_sfrefresh._login) and the token file's settings.

The pure parts are called directly; the flows run against the stand-in org over real
sockets, the loopback redirect included (the test plays the browser with requests).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import zeep

from zeep_sfrefresh import PARTNER_WSDL, FileTokenStore, SalesforceTransport, TokenStoreError
from zeep_sfrefresh._errors import LoginError, TokenRefreshError
from zeep_sfrefresh._login import (
    DEFAULT_REDIRECT_URI,
    DeviceLogin,
    Pkce,
    authorize_url,
    code_from_redirect,
    finish_device_login,
    next_poll_interval,
    parse_sfdx_auth_url,
    redeem_refresh_token,
    start_device_login,
    token_url,
    web_login,
)
from zeep_sfrefresh._tokenfile import TokenFileSettings
from zeep_sfrefresh.testing import StandInOrg

# --- pure parts ----------------------------------------------------------------------------


def test_pkce_challenge_is_the_s256_of_the_verifier() -> None:
    pair = Pkce.new()
    assert 43 <= len(pair.verifier) <= 128
    digest = hashlib.sha256(pair.verifier.encode()).digest()
    assert pair.challenge == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert pair.verifier not in repr(pair)
    assert Pkce.new().verifier != pair.verifier


def test_authorize_url_carries_the_challenge_not_the_verifier() -> None:
    pair = Pkce.new()
    url = authorize_url(
        "https://login.salesforce.com/",
        client_id="3MVGx",
        redirect_uri=DEFAULT_REDIRECT_URI,
        state="s1",
        code_challenge=pair.challenge,
    )
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "login.salesforce.com",
        "/services/oauth2/authorize",
    )
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query == {
        "response_type": "code",
        "client_id": "3MVGx",
        "redirect_uri": "http://localhost:1717/OauthRedirect",
        "state": "s1",
        "code_challenge": pair.challenge,
        "code_challenge_method": "S256",
        "scope": "api refresh_token",
    }
    assert pair.verifier not in url


def test_code_from_redirect_checks_state_and_reports_refusals() -> None:
    assert code_from_redirect("code=abc&state=s1", state="s1") == "abc"
    with pytest.raises(LoginError, match="state does not match"):
        code_from_redirect("code=abc&state=other", state="s1")
    with pytest.raises(LoginError, match="state does not match"):
        code_from_redirect("code=abc", state="s1")
    with pytest.raises(LoginError, match="access_denied \\(end-user denied authorization\\)"):
        code_from_redirect(
            "error=access_denied&error_description=end-user+denied+authorization&state=s1",
            state="s1",
        )
    with pytest.raises(LoginError, match="neither a code"):
        code_from_redirect("state=s1", state="s1")


def test_sfdx_auth_url_parts() -> None:
    auth = parse_sfdx_auth_url("force://PlatformCLI::5Aep861.abc@acme.my.salesforce.com\n")
    assert auth.client_id == "PlatformCLI"
    assert auth.client_secret == ""
    assert auth.refresh_token == "5Aep861.abc"
    assert auth.instance_url == "https://acme.my.salesforce.com"
    assert "5Aep861" not in repr(auth)
    with_secret = parse_sfdx_auth_url("force://3MVGx:s3cret:5Aep:x@http://127.0.0.1:8765")
    assert (with_secret.client_secret, with_secret.refresh_token) == ("s3cret", "5Aep:x")
    assert with_secret.instance_url == "http://127.0.0.1:8765"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("https://acme.my.salesforce.com", "starts with force://"),
        ("force://id:secret:5Aep861SECRET", "no @<instance host>"),
        ("force://id:5Aep861SECRET@acme.my.salesforce.com", "is not force://"),
        ("force://:secret:5Aep861SECRET@acme.my.salesforce.com", "is not force://"),
        ("force://id:secret:5Aep861SECRET@https://acme.com/path", "not a host name"),
    ],
)
def test_sfdx_auth_url_errors_never_echo_the_refresh_token(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_sfdx_auth_url(text)
    assert "5Aep861SECRET" not in str(caught.value)


def test_device_poll_interval_policy() -> None:
    assert next_poll_interval("authorization_pending", 5.0) == 5.0
    assert next_poll_interval("slow_down", 5.0) == 10.0
    assert next_poll_interval("slow_down", 10.0) == 15.0
    with pytest.raises(LoginError, match="expired"):
        next_poll_interval("expired_token", 5.0)
    with pytest.raises(LoginError, match="denied"):
        next_poll_interval("access_denied", 5.0)
    with pytest.raises(LoginError, match="invalid_client_id"):
        next_poll_interval("invalid_client_id", 5.0)


def test_token_file_settings_round_trip_and_errors(tmp_path: Path) -> None:
    settings = TokenFileSettings(
        "jwt", "3MVGx", "https://l/services/oauth2/token", "https://l", "u@x", "/k.pem"
    )
    stored = settings.to_json()
    assert "client_secret_file" not in stored
    assert TokenFileSettings.from_json(stored, path="t.json") == settings
    with pytest.raises(TokenStoreError, match=r"incomplete settings.*zeep-sfrefresh login"):
        TokenFileSettings.from_json({"grant": "jwt"}, path="t.json")
    with pytest.raises(TokenStoreError, match="unknown grant"):
        TokenFileSettings.from_json({**stored, "grant": "password"}, path="t.json")


# --- the token file and the transport built from it ----------------------------------------


def _login_file(org: StandInOrg, path: Path, **settings: str) -> FileTokenStore:
    store = FileTokenStore(path)
    values = TokenFileSettings("refresh_token", org.client_id, org.token_url, org.url)
    with store.lock():
        store.save(org.issue_token(), replaces=None, settings={**values.to_json(), **settings})
    return store


def _client(transport: SalesforceTransport) -> zeep.Client:
    return zeep.Client(PARTNER_WSDL, transport=transport, settings=zeep.Settings(forbid_dtd=True))


def test_from_token_file_refreshes_once_and_keeps_the_settings(
    sf_org: StandInOrg, tmp_path: Path
) -> None:
    sf_org.rotation = True
    secret_file = tmp_path / "secret"
    secret_file.write_text(sf_org.client_secret + "\n")
    store = _login_file(sf_org, tmp_path / "t.json", client_secret_file=str(secret_file))
    settings = store.load_settings()
    service = _client(SalesforceTransport.from_token_file(store.path)).service
    assert service.query("SELECT Id FROM Account").body.result.size == 3
    sf_org.expire_all_sessions()
    assert service.query("SELECT Id FROM Account").body.result.size == 3
    assert sf_org.token_requests == 1
    stored = store.load()
    assert stored is not None
    assert stored.version == 2
    assert sf_org.refresh_token_state(stored.token["refresh_token"]) == "active"
    assert store.load_settings() == settings


def test_from_token_file_takes_the_secret_from_the_caller(
    sf_org: StandInOrg, tmp_path: Path
) -> None:
    store = _login_file(sf_org, tmp_path / "t.json")
    sf_org.expire_all_sessions()
    without = _client(SalesforceTransport.from_token_file(store.path)).service
    with pytest.raises(TokenRefreshError, match="invalid_client"):
        without.query("SELECT Id FROM Account")
    service = _client(
        SalesforceTransport.from_token_file(store.path, client_secret=sf_org.client_secret)
    ).service
    assert service.query("SELECT Id FROM Account").body.result.size == 3


def test_from_token_file_says_how_to_log_in(tmp_path: Path) -> None:
    missing = tmp_path / "none.json"
    with pytest.raises(TokenStoreError, match=r"no token in .*zeep-sfrefresh login"):
        SalesforceTransport.from_token_file(missing)
    bare = FileTokenStore(tmp_path / "bare.json")
    with bare.lock():
        bare.save(
            {"access_token": "00Dx!AQ", "instance_url": "https://a.my.salesforce.com"},
            replaces=None,
        )
    with pytest.raises(TokenStoreError, match=r"not the settings.*--sfdx-auth-url-file"):
        SalesforceTransport.from_token_file(bare.path)
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"access_token": "x", "instance_url": "https://a"}))
    foreign.chmod(0o600)
    with pytest.raises(TokenStoreError, match=r"zeep-sfrefresh login.*--sfdx-auth-url-file"):
        SalesforceTransport.from_token_file(foreign)


# --- the flows against the stand-in org ----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Browser:
    """What a browser does with the printed URL: follow the redirects to the callback.

    The visit runs on its own thread, since the login is waiting for it; `finish` waits for the
    page it ends on, which the login may return before the browser has read.
    """

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.answers: list[requests.Response] = []
        self._visits: list[threading.Thread] = []

    def __call__(self, url: str) -> None:
        self.urls.append(url)

        def visit() -> None:
            self.answers.append(requests.get(url, timeout=10))

        self._visits.append(threading.Thread(target=visit, daemon=True))
        self._visits[-1].start()

    def finish(self) -> list[requests.Response]:
        for visit in self._visits:
            visit.join(timeout=15)
        return self.answers


def test_web_login_with_pkce_through_the_loopback_redirect(sf_org: StandInOrg) -> None:
    redirect = f"http://localhost:{_free_port()}/OauthRedirect"
    sf_org.callback_urls.add(redirect)
    browser = _Browser()
    token = web_login(
        sf_org.url,
        client_id=sf_org.client_id,
        redirect_uri=redirect,
        show=browser,
        wait=20,
    )
    assert token.refresh_token is not None
    assert sf_org.refresh_token_state(token.refresh_token) == "active"
    assert sf_org.is_valid_session(token.access_token)
    assert sf_org.token_requests_by_grant["authorization_code"] == 1
    assert "code_challenge=" in browser.urls[0]
    answers = browser.finish()
    assert len(answers) == 1
    assert answers[0].status_code == 200
    assert "Logged in" in answers[0].text


def test_web_login_reports_a_denial_and_a_wrong_port(sf_org: StandInOrg) -> None:
    redirect = f"http://localhost:{_free_port()}/OauthRedirect"
    sf_org.callback_urls.add(redirect)
    sf_org.deny_authorization = True
    with pytest.raises(LoginError, match="access_denied"):
        web_login(
            sf_org.url,
            client_id=sf_org.client_id,
            redirect_uri=redirect,
            show=_Browser(),
            wait=20,
        )
    assert sf_org.token_requests == 0
    with pytest.raises(LoginError, match="not a loopback http URL"):
        web_login(
            sf_org.url,
            client_id=sf_org.client_id,
            redirect_uri="https://example.com/callback",
            show=print,
        )


def test_web_login_gives_up_after_the_wait_and_frees_the_port(sf_org: StandInOrg) -> None:
    port = _free_port()
    redirect = f"http://localhost:{port}/OauthRedirect"
    with pytest.raises(LoginError, match=r"no redirect .* within 0.3 s"):
        web_login(sf_org.url, client_id=sf_org.client_id, redirect_uri=redirect, show=str, wait=0.3)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_web_login_refuses_a_busy_port(sf_org: StandInOrg) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        redirect = f"http://localhost:{busy.getsockname()[1]}/OauthRedirect"
        with pytest.raises(LoginError, match=r"cannot listen on .*--port"):
            web_login(sf_org.url, client_id=sf_org.client_id, redirect_uri=redirect, show=str)


def test_device_login_polls_until_approved(sf_org: StandInOrg) -> None:
    sf_org.device_interval = 0
    device = start_device_login(sf_org.token_url, client_id=sf_org.client_id)
    assert device.device_code not in repr(device)
    polls: list[float] = []

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 3:
            sf_org.approve_device(device.user_code)

    token = finish_device_login(
        sf_org.token_url, device, client_id=sf_org.client_id, wait=30, sleep=sleep
    )
    assert token.refresh_token is not None
    assert sf_org.refresh_token_state(token.refresh_token) == "active"
    assert len(polls) == 3
    assert sf_org.token_requests_by_grant["device"] == 3


def test_device_login_ends_on_expiry_and_on_the_wait(sf_org: StandInOrg) -> None:
    sf_org.device_interval = 0
    sf_org.device_code_lifetime = 0.0
    device = start_device_login(sf_org.token_url, client_id=sf_org.client_id)
    with pytest.raises(LoginError, match="expired"):
        finish_device_login(sf_org.token_url, device, client_id=sf_org.client_id, sleep=str)
    sf_org.device_code_lifetime = 600.0
    pending = DeviceLogin(
        start_device_login(sf_org.token_url, client_id=sf_org.client_id).device_code,
        "ABCD1234",
        sf_org.url,
        0.05,
    )
    with pytest.raises(LoginError, match=r"not approved within 0.2 s"):
        finish_device_login(sf_org.token_url, pending, client_id=sf_org.client_id, wait=0.2)


def test_device_login_start_refused_for_an_unknown_client(sf_org: StandInOrg) -> None:
    with pytest.raises(LoginError, match="invalid_client_id"):
        start_device_login(sf_org.token_url, client_id="nope")


def test_redeem_refresh_token_keeps_the_rotated_one(sf_org: StandInOrg) -> None:
    sf_org.rotation = True
    first = sf_org.issue_token()
    token = redeem_refresh_token(
        token_url(sf_org.url),
        client_id=sf_org.client_id,
        client_secret=sf_org.client_secret,
        refresh_token=first["refresh_token"],
        instance_url=sf_org.url,
    )
    assert token.refresh_token != first["refresh_token"]
    assert sf_org.refresh_token_state(first["refresh_token"]) == "retired"
    assert token.refresh_token is not None
    assert sf_org.refresh_token_state(token.refresh_token) == "active"
    sf_org.rotation = False
    kept = redeem_refresh_token(
        sf_org.token_url,
        client_id=sf_org.client_id,
        client_secret=sf_org.client_secret,
        refresh_token=token.refresh_token,
        instance_url=sf_org.url,
    )
    assert kept.refresh_token == token.refresh_token


def test_async_transport_from_token_file(sf_org: StandInOrg, tmp_path: Path) -> None:
    from zeep_sfrefresh import AsyncSalesforceTransport

    store = _login_file(sf_org, tmp_path / "t.json")
    sf_org.require_secret_for_refresh = False
    sf_org.expire_all_sessions()

    async def query() -> int:
        transport = AsyncSalesforceTransport.from_token_file(store.path)
        async with zeep.AsyncClient(PARTNER_WSDL, transport=transport) as client:
            answer = await client.service.query("SELECT Id FROM Account")
            return int(answer.body.result.size)

    assert asyncio.run(query()) == 3
    assert sf_org.token_requests == 1
    stored = store.load()
    assert stored is not None
    assert stored.version == 2
