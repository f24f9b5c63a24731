"""Tests of the stand-in org's interactive flows, over real sockets.

The web server flow (``GET /services/oauth2/authorize``, then ``grant_type=authorization_code``,
with and without PKCE) and Salesforce's device flow (``response_type=device_code``, approval at
``/setup/connect``, ``grant_type=device`` polls): their successes, which answer a refresh token
of a new family, and their refusals. The rules themselves live in
:mod:`zeep_sfrefresh.testing.authorize`.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from requests_oauthlib import OAuth2Session
from test_org import fault_parts, post_soap, refresh

from zeep_sfrefresh.testing import StandInOrg, authorize

pytest_plugins = ["zeep_sfrefresh.testing.pytest_plugin"]

CALLBACK = "http://localhost:1717/OauthRedirect"
TOKEN_FIELDS = {
    "access_token",
    "refresh_token",
    "signature",
    "scope",
    "instance_url",
    "id",
    "token_type",
    "issued_at",
}


def new_verifier() -> str:
    return secrets.token_urlsafe(48)


def challenge_of(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorize_url(org: StandInOrg, **overrides: str | None) -> str:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": org.client_id,
        "redirect_uri": CALLBACK,
        "state": "st4te",
        **overrides,
    }
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{org.url}/services/oauth2/authorize?{query}"


def get_authorize(org: StandInOrg, **overrides: str | None) -> requests.Response:
    return requests.get(authorize_url(org, **overrides), allow_redirects=False, timeout=10)


def redirected_to(response: requests.Response) -> tuple[str, dict[str, str]]:
    """The callback a 302 points at (without its query) and that query's parameters."""
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    parts = urlsplit(location)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    assert len(query) == len(parse_qs(parts.query))
    return f"{parts.scheme}://{parts.netloc}{parts.path}", query


def code_from(org: StandInOrg, **overrides: str | None) -> str:
    callback, query = redirected_to(get_authorize(org, **overrides))
    assert callback == overrides.get("redirect_uri", CALLBACK)
    return query["code"]


def exchange(org: StandInOrg, code: str | None, **overrides: str | None) -> requests.Response:
    form: dict[str, str | None] = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": org.client_id,
        "redirect_uri": CALLBACK,
        **overrides,
    }
    data = {k: v for k, v in form.items() if v is not None}
    return requests.post(org.token_url, data=data, timeout=10)


def assert_refresh_answer(org: StandInOrg, response: requests.Response) -> dict[str, Any]:
    """A 200 token answer WITH a refresh_token, for the demo user."""
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert response.headers["Cache-Control"] == "no-cache,no-store"
    body: dict[str, Any] = response.json()
    assert set(body) == TOKEN_FIELDS
    assert body["id"] == org.identity_url(org.user_id)
    assert body["instance_url"] == org.instance_url
    assert body["scope"] == org.scope
    assert org.refresh_token_state(body["refresh_token"]) == "active"
    return body


def assert_refused(response: requests.Response, error: str, description: str) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert response.json() == {"error": error, "error_description": description}


def assert_error_page(response: requests.Response, error: str) -> None:
    """An HTML error page naming ``error``: no redirect anywhere."""
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert response.headers["Content-Type"] == "text/html;charset=UTF-8"
    assert error in response.text


def soap_accepts(org: StandInOrg, access_token: str) -> bool:
    response = post_soap(org, "u", "getServerTimestamp", access_token)
    if response.status_code == 200:
        return True
    assert fault_parts(response)["faultcode"] == "sf:INVALID_SESSION_ID"
    return False


# --- web server flow -------------------------------------------------------------------------


def test_pkce_flow_end_to_end(sf_org: StandInOrg) -> None:
    verifier = new_verifier()
    response = get_authorize(
        sf_org,
        code_challenge=challenge_of(verifier),
        code_challenge_method="S256",
        scope="api refresh_token",
        prompt="login consent",
    )
    callback, query = redirected_to(response)
    assert callback == CALLBACK
    assert set(query) == {"code", "state"}
    assert query["state"] == "st4te"
    assert re.fullmatch(r"[A-Za-z0-9_-]+", query["code"])

    body = assert_refresh_answer(sf_org, exchange(sf_org, query["code"], code_verifier=verifier))
    assert soap_accepts(sf_org, body["access_token"])
    assert sf_org.token_requests_by_grant == Counter({"authorization_code": 1})
    assert sf_org.token_failures == 0
    assert sf_org.internal_errors == []


def test_through_requests_oauthlib_with_pkce(sf_org: StandInOrg) -> None:
    """requests-oauthlib sends the client as HTTP Basic with an empty secret: accepted."""
    session = OAuth2Session(sf_org.client_id, redirect_uri=CALLBACK, pkce="S256")
    url, state = session.authorization_url(sf_org.url + "/services/oauth2/authorize")
    response = requests.get(url, allow_redirects=False, timeout=10)
    assert response.status_code == 302
    token = session.fetch_token(
        sf_org.token_url, authorization_response=response.headers["Location"]
    )
    assert state
    assert sf_org.refresh_token_state(token["refresh_token"]) == "active"
    assert soap_accepts(sf_org, token["access_token"])


@pytest.mark.parametrize("state", ["a b&c=d/é?#", "x" * 200])
def test_state_is_echoed(sf_org: StandInOrg, state: str) -> None:
    _, query = redirected_to(get_authorize(sf_org, state=state))
    assert query["state"] == state


def test_no_state_no_state_in_the_redirect(sf_org: StandInOrg) -> None:
    response = get_authorize(sf_org, state=None)
    _, query = redirected_to(response)
    assert set(query) == {"code"}
    assert "state" not in response.headers["Location"]


@pytest.mark.parametrize("verifier", [None, "", "wrong-verifier-" + "x" * 40])
def test_wrong_or_missing_verifier(sf_org: StandInOrg, verifier: str | None) -> None:
    right = new_verifier()
    code = code_from(sf_org, code_challenge=challenge_of(right), code_challenge_method="S256")
    assert_refused(
        exchange(sf_org, code, code_verifier=verifier), "invalid_grant", "invalid code verifier"
    )
    # The failed exchange used the code up: the right verifier comes too late.
    assert_refused(
        exchange(sf_org, code, code_verifier=right), "invalid_grant", "invalid authorization code"
    )
    assert sf_org.token_failures == 2


def test_challenge_method_may_be_left_out(sf_org: StandInOrg) -> None:
    verifier = new_verifier()
    code = code_from(sf_org, code_challenge=challenge_of(verifier))
    assert_refresh_answer(sf_org, exchange(sf_org, code, code_verifier=verifier))


def test_a_code_is_good_once(sf_org: StandInOrg) -> None:
    verifier = new_verifier()
    code = code_from(sf_org, code_challenge=challenge_of(verifier))
    first = assert_refresh_answer(sf_org, exchange(sf_org, code, code_verifier=verifier))
    assert_refused(
        exchange(sf_org, code, code_verifier=verifier),
        "invalid_grant",
        "invalid authorization code",
    )
    # Refused, not revoked: the first exchange's tokens still work.
    assert soap_accepts(sf_org, first["access_token"])
    assert sf_org.refresh_token_state(first["refresh_token"]) == "active"


@pytest.mark.parametrize("code", ["", "aPrxnot-a-code", None])
def test_unknown_code(sf_org: StandInOrg, code: str | None) -> None:
    response = exchange(sf_org, code)
    assert_refused(response, "invalid_grant", "invalid authorization code")


def test_expired_code(sf_org: StandInOrg) -> None:
    sf_org.authorization_code_lifetime = 0.05
    code = code_from(sf_org)
    time.sleep(0.1)
    assert_refused(exchange(sf_org, code), "invalid_grant", "invalid authorization code")


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://localhost:1717/OauthRedirect/",
        "http://localhost:1718/OauthRedirect",
        "https://localhost:1717/OauthRedirect",
        "http://localhost:1717/oauthredirect",
        "http://evil.example/OauthRedirect",
        "",
        None,
    ],
)
def test_unregistered_redirect_uri_gets_a_page(
    sf_org: StandInOrg, redirect_uri: str | None
) -> None:
    response = get_authorize(sf_org, redirect_uri=redirect_uri)
    assert_error_page(response, "redirect_uri_mismatch")
    assert "st4te" not in response.text


@pytest.mark.parametrize("client_id", ["someone-else", None])
def test_unknown_client_at_authorize_gets_a_page(sf_org: StandInOrg, client_id: str | None) -> None:
    response = get_authorize(sf_org, client_id=client_id)
    assert_error_page(response, "invalid_client_id")


def test_another_registered_callback(sf_org: StandInOrg) -> None:
    mine = "http://127.0.0.1:54321/callback"
    assert_error_page(get_authorize(sf_org, redirect_uri=mine), "redirect_uri_mismatch")
    sf_org.callback_urls.add(mine)
    code = code_from(sf_org, redirect_uri=mine)
    assert_refresh_answer(sf_org, exchange(sf_org, code, redirect_uri=mine))


@pytest.mark.parametrize("redirect_uri", ["http://127.0.0.1:54321/callback", "", None])
def test_redirect_uri_must_match_at_the_token_endpoint(
    sf_org: StandInOrg, redirect_uri: str | None
) -> None:
    sf_org.callback_urls.add("http://127.0.0.1:54321/callback")
    code = code_from(sf_org)
    response = exchange(sf_org, code, redirect_uri=redirect_uri)
    assert_refused(response, "invalid_grant", "redirect_uri must match configuration")


def test_deny(sf_org: StandInOrg) -> None:
    sf_org.deny_authorization = True
    callback, query = redirected_to(get_authorize(sf_org))
    assert callback == CALLBACK
    assert query == {
        "error": "access_denied",
        "error_description": "end-user denied authorization",
        "state": "st4te",
    }


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": None}, "unsupported_response_type"),
        ({"code_challenge": "abc", "code_challenge_method": "plain"}, "invalid_request"),
    ],
)
def test_errors_after_the_redirect_uri_is_trusted_are_redirected(
    sf_org: StandInOrg, overrides: dict[str, str | None], error: str
) -> None:
    callback, query = redirected_to(get_authorize(sf_org, **overrides))
    assert callback == CALLBACK
    assert query["error"] == error
    assert query["error_description"]
    assert query["state"] == "st4te"
    assert "code" not in query


def test_without_pkce(sf_org: StandInOrg) -> None:
    code = code_from(sf_org)
    assert_refresh_answer(sf_org, exchange(sf_org, code))
    # A verifier nobody asked for is ignored.
    code = code_from(sf_org)
    assert_refresh_answer(sf_org, exchange(sf_org, code, code_verifier=new_verifier()))


def test_client_secret_optional_but_checked(sf_org: StandInOrg) -> None:
    code = code_from(sf_org)
    assert_refused(
        exchange(sf_org, code, client_secret="wrong"),
        "invalid_client",
        "invalid client credentials",
    )
    # A refused client does not use the code up.
    assert_refresh_answer(sf_org, exchange(sf_org, code, client_secret=sf_org.client_secret))


def test_client_id_must_match(sf_org: StandInOrg) -> None:
    code = code_from(sf_org)
    for client_id in ("someone-else", None):
        assert_refused(
            exchange(sf_org, code, client_id=client_id),
            "invalid_client_id",
            "client identifier invalid",
        )
    assert_refresh_answer(sf_org, exchange(sf_org, code))


def test_require_secret_for_web_server_flow(sf_org: StandInOrg) -> None:
    sf_org.require_secret_for_web_server_flow = True
    code = code_from(sf_org)
    for secret in (None, "", "wrong"):
        assert_refused(
            exchange(sf_org, code, client_secret=secret),
            "invalid_client",
            "invalid client credentials",
        )
    basic = requests.post(
        sf_org.token_url,
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK},
        auth=(sf_org.client_id, sf_org.client_secret),
        timeout=10,
    )
    assert_refresh_answer(sf_org, basic)


def test_the_refresh_token_refreshes(sf_org: StandInOrg) -> None:
    body = assert_refresh_answer(sf_org, exchange(sf_org, code_from(sf_org)))
    sf_org.expire_all_sessions()
    assert not soap_accepts(sf_org, body["access_token"])
    refreshed = refresh(sf_org, body["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert "refresh_token" not in refreshed.json()
    assert soap_accepts(sf_org, refreshed.json()["access_token"])


def test_rotation_applies_to_the_new_family(sf_org: StandInOrg) -> None:
    sf_org.rotation = True
    other = sf_org.issue_token()
    body = assert_refresh_answer(sf_org, exchange(sf_org, code_from(sf_org)))
    rotated = refresh(sf_org, body["refresh_token"])
    assert rotated.status_code == 200
    assert sf_org.refresh_token_state(body["refresh_token"]) == "retired"
    new_refresh = rotated.json()["refresh_token"]
    assert refresh(sf_org, body["refresh_token"]).status_code == 400  # reuse
    assert sf_org.refresh_token_state(new_refresh) == "revoked"
    assert sf_org.family_revocations == 1
    assert sf_org.refresh_token_state(other["refresh_token"]) == "active"


def test_token_failure_modes_leave_the_code_unused(sf_org: StandInOrg) -> None:
    code = code_from(sf_org)
    sf_org.token_failure = "html_500"
    assert exchange(sf_org, code).status_code == 500
    sf_org.token_failure = None
    assert_refresh_answer(sf_org, exchange(sf_org, code))


# --- device flow -----------------------------------------------------------------------------


def start_device(org: StandInOrg, **overrides: str | None) -> requests.Response:
    form: dict[str, str | None] = {
        "response_type": "device_code",
        "client_id": org.client_id,
        "scope": "refresh_token web api",
        **overrides,
    }
    data = {k: v for k, v in form.items() if v is not None}
    return requests.post(org.token_url, data=data, timeout=10)


def device_codes(org: StandInOrg) -> dict[str, Any]:
    response = start_device(org)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def poll(org: StandInOrg, device_code: str, **overrides: str | None) -> requests.Response:
    form: dict[str, str | None] = {
        "grant_type": "device",
        "client_id": org.client_id,
        "code": device_code,
        **overrides,
    }
    data = {k: v for k, v in form.items() if v is not None}
    return requests.post(org.token_url, data=data, timeout=10)


def visit(org: StandInOrg, **params: str) -> requests.Response:
    return requests.get(
        org.url + "/setup/connect", params=params, allow_redirects=False, timeout=10
    )


@pytest.fixture
def device_org(sf_org: StandInOrg) -> StandInOrg:
    sf_org.device_interval = 0
    return sf_org


def test_device_flow_start(sf_org: StandInOrg) -> None:
    response = start_device(sf_org)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    body = response.json()
    assert set(body) == {"device_code", "user_code", "verification_uri", "interval"}
    assert re.fullmatch(r"[A-Z0-9]{8}", body["user_code"])
    assert re.fullmatch(r"[A-Za-z0-9_-]+", body["device_code"])
    assert body["verification_uri"] == sf_org.url + "/setup/connect"
    assert body["interval"] == 5
    assert sf_org.pending_user_codes == [body["user_code"]]
    assert sf_org.token_requests_by_grant == Counter({"device_code": 1})
    assert sf_org.token_failures == 0


def test_device_flow_start_needs_the_client(sf_org: StandInOrg) -> None:
    for client_id in ("someone-else", None):
        response = start_device(sf_org, client_id=client_id)
        assert_refused(response, "invalid_client_id", "client identifier invalid")
    response = start_device(sf_org, client_secret="wrong")
    assert_refused(response, "invalid_client", "invalid client credentials")
    assert sf_org.pending_user_codes == []


def test_device_flow_end_to_end(device_org: StandInOrg) -> None:
    codes = device_codes(device_org)
    pending = poll(device_org, codes["device_code"])
    assert_refused(pending, "authorization_pending", "authorization pending")

    form = visit(device_org)
    assert form.status_code == 200
    assert 'name="user_code"' in form.text
    typed = codes["user_code"].lower()[:4] + "-" + codes["user_code"].lower()[4:]
    approved = visit(device_org, user_code=typed)
    assert approved.status_code == 200
    assert approved.headers["Content-Type"] == "text/html;charset=UTF-8"
    assert "approved" in approved.text
    assert device_org.pending_user_codes == []

    body = assert_refresh_answer(device_org, poll(device_org, codes["device_code"]))
    assert soap_accepts(device_org, body["access_token"])
    # Spent: the device code buys one token.
    assert_refused(
        poll(device_org, codes["device_code"]), "invalid_grant", "invalid authorization code"
    )
    assert device_org.token_requests_by_grant == Counter({"device_code": 1, "device": 3})
    assert device_org.internal_errors == []


def test_device_poll_slow_down(sf_org: StandInOrg) -> None:
    sf_org.device_interval = 1
    codes = device_codes(sf_org)
    assert codes["interval"] == 1
    assert_refused(
        poll(sf_org, codes["device_code"]), "authorization_pending", "authorization pending"
    )
    assert_refused(poll(sf_org, codes["device_code"]), "slow_down", "polling too quickly")
    time.sleep(0.6)
    assert_refused(poll(sf_org, codes["device_code"]), "slow_down", "polling too quickly")
    time.sleep(0.6)
    # Over a second since the first poll, but every poll is the new reference time, the
    # refused ones too.
    assert_refused(poll(sf_org, codes["device_code"]), "slow_down", "polling too quickly")
    time.sleep(1.1)
    sf_org.approve_device(codes["user_code"])
    assert_refresh_answer(sf_org, poll(sf_org, codes["device_code"]))


def test_device_code_expires(device_org: StandInOrg) -> None:
    device_org.device_code_lifetime = 0.05
    codes = device_codes(device_org)
    time.sleep(0.1)
    assert device_org.pending_user_codes == []
    assert_refused(
        poll(device_org, codes["device_code"]), "expired_token", "the device code has expired"
    )
    with pytest.raises(ValueError, match="expired") as raised:
        device_org.approve_device(codes["user_code"])
    assert codes["user_code"] not in str(raised.value)
    assert_error_page(visit(device_org, user_code=codes["user_code"]), "invalid_user_code")


def test_device_denied(device_org: StandInOrg) -> None:
    codes = device_codes(device_org)
    device_org.deny_device(codes["user_code"])
    for _ in range(2):
        assert_refused(
            poll(device_org, codes["device_code"]), "access_denied", "end-user denied authorization"
        )
    with pytest.raises(ValueError, match="denied"):
        device_org.approve_device(codes["user_code"])


def test_device_denied_in_the_browser(device_org: StandInOrg) -> None:
    codes = device_codes(device_org)
    page = visit(device_org, user_code=codes["user_code"], action="deny")
    assert page.status_code == 200
    assert "denied" in page.text
    assert_refused(
        poll(device_org, codes["device_code"]), "access_denied", "end-user denied authorization"
    )


def test_unknown_user_codes(device_org: StandInOrg) -> None:
    codes = device_codes(device_org)
    assert_error_page(visit(device_org, user_code="NOPE2345"), "invalid_user_code")
    with pytest.raises(KeyError) as raised:
        device_org.approve_device("NOPE2345")
    assert "NOPE2345" not in str(raised.value)
    with pytest.raises(KeyError):
        device_org.deny_device("NOPE2345")
    # A code answered once cannot be answered again.
    device_org.approve_device(codes["user_code"])
    assert_error_page(visit(device_org, user_code=codes["user_code"]), "invalid_user_code")


@pytest.mark.parametrize("device_code", ["", "DCunknown"])
def test_unknown_device_codes(device_org: StandInOrg, device_code: str) -> None:
    device_codes(device_org)
    assert_refused(poll(device_org, device_code), "invalid_grant", "invalid authorization code")


def test_device_poll_needs_the_client(device_org: StandInOrg) -> None:
    codes = device_codes(device_org)
    device_org.approve_device(codes["user_code"])
    refused = poll(device_org, codes["device_code"], client_id="someone-else")
    assert_refused(refused, "invalid_client_id", "client identifier invalid")
    assert_refresh_answer(device_org, poll(device_org, codes["device_code"]))


def test_device_refresh_token_rotates(device_org: StandInOrg) -> None:
    device_org.rotation = True
    codes = device_codes(device_org)
    device_org.approve_device(codes["user_code"])
    body = assert_refresh_answer(device_org, poll(device_org, codes["device_code"]))
    rotated = refresh(device_org, body["refresh_token"])
    assert rotated.status_code == 200
    assert rotated.json()["refresh_token"] != body["refresh_token"]
    assert device_org.refresh_token_state(body["refresh_token"]) == "retired"


def test_user_codes_are_distinct_and_readable(device_org: StandInOrg) -> None:
    seen = {device_codes(device_org)["user_code"] for _ in range(20)}
    assert len(seen) == 20
    assert all(set(code) <= set(authorize.USER_CODE_ALPHABET) for code in seen)
    assert len(device_org.pending_user_codes) == 20


def test_codes_stay_out_of_the_repr(device_org: StandInOrg) -> None:
    codes = device_codes(device_org)
    device_org.approve_device(codes["user_code"])
    token = poll(device_org, codes["device_code"]).json()
    shown = repr(device_org)
    for secret in (codes["device_code"], codes["user_code"], token["refresh_token"]):
        assert secret not in shown


# --- pure rules ------------------------------------------------------------------------------


def test_s256_matches() -> None:
    # RFC 7636 appendix B.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert authorize.s256_challenge(verifier) == challenge
    assert authorize.s256_matches(verifier, challenge)
    assert not authorize.s256_matches(verifier + "x", challenge)
    assert not authorize.s256_matches(verifier, challenge + "=")


def test_normalize_user_code() -> None:
    assert authorize.normalize_user_code(" abcd-1234 ") == "ABCD1234"


def test_redirect_location_keeps_an_existing_query() -> None:
    location = authorize.redirect_location("http://x/cb?a=1", {"code": "c d", "state": None})
    assert location == "http://x/cb?a=1&code=c%20d"


def test_state_repr_hides_codes() -> None:
    pending = authorize.DeviceAuthorization("client", "ABCD2345", expires_at=1.0, interval=0)
    code = authorize.AuthorizationCode("client", CALLBACK, "005", 1.0, code_challenge="CHALLENGE")
    assert "ABCD2345" not in repr(pending)
    assert "CHALLENGE" not in repr(code)
