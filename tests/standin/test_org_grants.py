"""Tests of the stand-in org's other token grants, over real sockets.

JWT bearer, client credentials and username-password: their successes (a token without
refresh_token that the SOAP APIs accept) and Salesforce's real refusals, plus the knobs that
make sessions a refresh cannot save (``reject_new_sessions``, ``jwt_access_tokens``) and the
per-grant counter. The rules themselves live in :mod:`zeep_sfrefresh.testing.grants`; the
refresh_token grant keeps its own tests in test_org.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from test_org import bearer, fault_parts, post_soap, refresh

from zeep_sfrefresh.testing import StandInOrg, grants

pytest_plugins = ["zeep_sfrefresh.testing.pytest_plugin"]

PARTNER = "urn:partner.soap.sforce.com"
DEFAULT_USER = "standin@example.com"
TOKEN_FIELDS = {
    "access_token",
    "signature",
    "scope",
    "instance_url",
    "id",
    "token_type",
    "issued_at",
}


@dataclass(frozen=True)
class KeyPair:
    private_pem: bytes
    public_pem: bytes
    certificate_pem: bytes


def _key_pair() -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stand-in connected app")])
    now = datetime.now(timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return KeyPair(
        private_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        public_pem=key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        certificate_pem=certificate.public_bytes(serialization.Encoding.PEM),
    )


@pytest.fixture(scope="module")
def app_key() -> KeyPair:
    """The key whose certificate the connected app holds."""
    return _key_pair()


@pytest.fixture(scope="module")
def other_key() -> KeyPair:
    """A key the org does not know."""
    return _key_pair()


@pytest.fixture
def jwt_org(sf_org: StandInOrg, app_key: KeyPair) -> StandInOrg:
    sf_org.register_jwt_certificate(app_key.public_pem)
    return sf_org


_DROP = object()


@dataclass(frozen=True)
class FromNow:
    """An ``exp`` relative to the moment the assertion is signed (``scale`` 1000: in ms)."""

    seconds: int
    scale: int = 1

    def value(self) -> int:
        return int((time.time() + self.seconds) * self.scale)


def assertion(org: StandInOrg, key: KeyPair, **claims: object) -> str:
    """A JWT bearer assertion as a client signs it; a claim set to ``_DROP`` is left out."""
    body: dict[str, object] = {
        "iss": org.client_id,
        "sub": DEFAULT_USER,
        "aud": "https://login.salesforce.com",
        "exp": FromNow(180),
    }
    body.update(claims)
    body = {
        name: value.value() if isinstance(value, FromNow) else value
        for name, value in body.items()
        if value is not _DROP
    }
    return jwt.encode(body, key.private_pem, algorithm="RS256")


def post_jwt(org: StandInOrg, signed: str | None) -> requests.Response:
    form = {"grant_type": grants.JWT_BEARER}
    if signed is not None:
        form["assertion"] = signed
    return requests.post(org.token_url, data=form, timeout=10)


def post_form(
    org: StandInOrg, form: dict[str, str], auth: tuple[str, str] | None = None
) -> requests.Response:
    return requests.post(org.token_url, data=form, auth=auth, timeout=10)


def client_credentials(org: StandInOrg, **overrides: str) -> requests.Response:
    form = {
        "grant_type": "client_credentials",
        "client_id": org.client_id,
        "client_secret": org.client_secret,
        **overrides,
    }
    return post_form(org, form)


def password_grant(org: StandInOrg, username: str, password: str) -> requests.Response:
    form = {
        "grant_type": "password",
        "username": username,
        "password": password,
        "client_id": org.client_id,
        "client_secret": org.client_secret,
    }
    return post_form(org, form)


def soap_accepts(org: StandInOrg, access_token: str, code: str = "u") -> bool:
    """Whether a SOAP API runs a call with this token (False: INVALID_SESSION_ID fault)."""
    response = post_soap(org, code, "getServerTimestamp", access_token)
    if response.status_code == 200:
        return True
    assert response.status_code == 500
    assert fault_parts(response)["faultcode"] == "sf:INVALID_SESSION_ID"
    return False


def rest_accepts(org: StandInOrg, access_token: str) -> bool:
    response = requests.get(
        org.url + "/services/oauth2/userinfo",
        headers=bearer({"access_token": access_token}),
        timeout=5,
    )
    assert response.status_code in (200, 401)
    return response.status_code == 200


def assert_token_answer(org: StandInOrg, response: requests.Response, user_id: str) -> str:
    """A 200 token answer without refresh_token for ``user_id``; returns the access token."""
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert response.headers["Cache-Control"] == "no-cache,no-store"
    body = response.json()
    assert set(body) == TOKEN_FIELDS  # no refresh_token, no expires_in
    assert body["id"] == org.identity_url(user_id)
    assert body["instance_url"] == org.instance_url
    assert body["token_type"] == "Bearer"
    expected = hmac.new(
        org.client_secret.encode(), (body["id"] + body["issued_at"]).encode(), hashlib.sha256
    ).digest()
    assert base64.b64decode(body["signature"]) == expected
    return str(body["access_token"])


def assert_refused(response: requests.Response, refusal: grants.Refusal) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert response.json() == {"error": refusal.error, "error_description": refusal.description}


# --- JWT bearer ------------------------------------------------------------------------------


def test_jwt_bearer_success_and_the_token_works_on_soap(
    jwt_org: StandInOrg, app_key: KeyPair
) -> None:
    response = post_jwt(jwt_org, assertion(jwt_org, app_key))
    access_token = assert_token_answer(jwt_org, response, jwt_org.user_id)
    assert access_token.startswith(jwt_org.org_id[:15] + "!")
    assert jwt_org.is_valid_session(access_token)
    assert soap_accepts(jwt_org, access_token)
    assert rest_accepts(jwt_org, access_token)
    assert (jwt_org.token_requests, jwt_org.token_failures) == (1, 0)
    assert jwt_org.internal_errors == []


def test_jwt_bearer_needs_no_client_secret_and_ignores_a_wrong_one(
    jwt_org: StandInOrg, app_key: KeyPair
) -> None:
    form = {
        "grant_type": grants.JWT_BEARER,
        "assertion": assertion(jwt_org, app_key),
        "client_id": "someone-else",
        "client_secret": "wrong",
    }
    assert post_form(jwt_org, form).status_code == 200


def test_jwt_bearer_for_an_added_user(jwt_org: StandInOrg, app_key: KeyPair) -> None:
    user_id = jwt_org.add_user("ada@example.com", "s3cret", "Ada")
    response = post_jwt(jwt_org, assertion(jwt_org, app_key, sub="ada@example.com"))
    access_token = assert_token_answer(jwt_org, response, user_id)
    info = requests.get(
        jwt_org.url + "/services/oauth2/userinfo",
        headers=bearer({"access_token": access_token}),
        timeout=5,
    ).json()
    assert info["preferred_username"] == "ada@example.com"


@pytest.mark.parametrize(
    "audience",
    ["https://login.salesforce.com", "org url", "instance url"],
)
def test_jwt_bearer_audiences(jwt_org: StandInOrg, app_key: KeyPair, audience: str) -> None:
    jwt_org.instance_url = jwt_org.url.replace("127.0.0.1", "localhost")
    aud = {"org url": jwt_org.url, "instance url": jwt_org.instance_url}.get(audience, audience)
    assert post_jwt(jwt_org, assertion(jwt_org, app_key, aud=aud)).status_code == 200


def test_jwt_audience_knob_for_a_sandbox(jwt_org: StandInOrg, app_key: KeyPair) -> None:
    sandbox = "https://test.salesforce.com"
    assert_refused(
        post_jwt(jwt_org, assertion(jwt_org, app_key, aud=sandbox)), grants.AUDIENCE_INVALID
    )
    jwt_org.jwt_audience = sandbox
    assert post_jwt(jwt_org, assertion(jwt_org, app_key, aud=sandbox)).status_code == 200
    login = "https://login.salesforce.com"
    assert_refused(
        post_jwt(jwt_org, assertion(jwt_org, app_key, aud=login)), grants.AUDIENCE_INVALID
    )


def test_jwt_bearer_with_a_certificate_and_several_keys(
    sf_org: StandInOrg, app_key: KeyPair, other_key: KeyPair
) -> None:
    sf_org.register_jwt_certificate(app_key.certificate_pem.decode("ascii"))  # str is fine too
    sf_org.register_jwt_certificate(other_key.certificate_pem)
    for key in (app_key, other_key):
        assert post_jwt(sf_org, assertion(sf_org, key)).status_code == 200


def test_jwt_exp_as_a_numeric_string_is_accepted(jwt_org: StandInOrg, app_key: KeyPair) -> None:
    # simple-salesforce sends exp as a string; real orgs accept it.
    signed = assertion(jwt_org, app_key, exp=str(FromNow(120).value()))
    assert post_jwt(jwt_org, signed).status_code == 200


def test_jwt_five_minute_assertions_are_accepted(jwt_org: StandInOrg, app_key: KeyPair) -> None:
    signed = assertion(jwt_org, app_key, exp=FromNow(300))
    assert post_jwt(jwt_org, signed).status_code == 200


_REFUSED_ASSERTIONS: list[tuple[str, dict[str, object], grants.Refusal]] = [
    ("bad audience", {"aud": "https://example.my.site.com"}, grants.AUDIENCE_INVALID),
    ("audience list", {"aud": ["https://login.salesforce.com"]}, grants.AUDIENCE_INVALID),
    ("expired", {"exp": FromNow(-3600)}, grants.ASSERTION_EXPIRED),
    ("expired a minute ago", {"exp": FromNow(-60)}, grants.ASSERTION_EXPIRED),
    ("exp too far ahead", {"exp": FromNow(3600)}, grants.ASSERTION_EXPIRED),
    ("exp in milliseconds", {"exp": FromNow(180, scale=1000)}, grants.ASSERTION_EXPIRED),
    ("no exp", {"exp": _DROP}, grants.INVALID_ASSERTION),
    ("exp not a number", {"exp": "soon"}, grants.INVALID_ASSERTION),
    ("unknown user", {"sub": "nobody@example.com"}, grants.USER_NOT_APPROVED),
    ("no sub", {"sub": _DROP}, grants.USER_NOT_APPROVED),
    ("unknown client id", {"iss": "3MVG9someone-else"}, grants.CLIENT_ID_INVALID),
    ("no iss", {"iss": _DROP}, grants.CLIENT_ID_INVALID),
]


@pytest.mark.parametrize(
    ("claims", "refusal"),
    [(claims, refusal) for _, claims, refusal in _REFUSED_ASSERTIONS],
    ids=[name for name, _, _ in _REFUSED_ASSERTIONS],
)
def test_jwt_bearer_refusals(
    jwt_org: StandInOrg, app_key: KeyPair, claims: dict[str, object], refusal: grants.Refusal
) -> None:
    signed = assertion(jwt_org, app_key, **claims)
    assert_refused(post_jwt(jwt_org, signed), refusal)
    assert (jwt_org.token_requests, jwt_org.token_failures) == (1, 1)


def test_jwt_signed_with_the_wrong_key(jwt_org: StandInOrg, other_key: KeyPair) -> None:
    assert_refused(post_jwt(jwt_org, assertion(jwt_org, other_key)), grants.INVALID_ASSERTION)


def test_jwt_with_no_certificate_registered(sf_org: StandInOrg, app_key: KeyPair) -> None:
    assert_refused(post_jwt(sf_org, assertion(sf_org, app_key)), grants.INVALID_ASSERTION)


@pytest.mark.parametrize("signed", [None, "", "not-a-jwt", "a.b.c", "-----BEGIN PRIVATE KEY-----"])
def test_jwt_missing_or_malformed_assertion(jwt_org: StandInOrg, signed: str | None) -> None:
    assert_refused(post_jwt(jwt_org, signed), grants.INVALID_ASSERTION)


def test_jwt_other_algorithms_are_invalid(jwt_org: StandInOrg, app_key: KeyPair) -> None:
    claims = {
        "iss": jwt_org.client_id,
        "sub": DEFAULT_USER,
        "aud": "https://login.salesforce.com",
        "exp": int(time.time()) + 120,
    }
    # Salesforce verifies RS256 only: a shared-secret, an unsigned or an EC assertion is invalid.
    hs256 = jwt.encode(claims, "x" * 32, algorithm="HS256")
    unsigned = jwt.encode(claims, "", algorithm="none")
    ec_key = ec.generate_private_key(ec.SECP256R1())
    es256 = jwt.encode(claims, ec_key, algorithm="ES256")
    for signed in (hs256, unsigned, es256):
        assert_refused(post_jwt(jwt_org, signed), grants.INVALID_ASSERTION)


def test_jwt_refusal_order_audience_before_user(jwt_org: StandInOrg, app_key: KeyPair) -> None:
    # salesforce.stackexchange.com/q/184363: a bad aud wins over an unapproved user.
    signed = assertion(jwt_org, app_key, aud="https://example.com", sub="nobody@example.com")
    assert_refused(post_jwt(jwt_org, signed), grants.AUDIENCE_INVALID)


def test_jwt_refusals_echo_nothing_and_make_no_session(
    jwt_org: StandInOrg, other_key: KeyPair
) -> None:
    signed = assertion(jwt_org, other_key)
    response = post_jwt(jwt_org, signed)
    assert signed[:40] not in response.text
    assert signed.split(".")[2][:20] not in repr(jwt_org)
    assert jwt_org.internal_errors == []


def test_register_jwt_certificate_refuses_what_is_not_an_rsa_public_key(
    sf_org: StandInOrg, app_key: KeyPair
) -> None:
    ec_public = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for bad in (app_key.private_pem, ec_public, b"garbage", "-----BEGIN CERTIFICATE-----\nxx"):
        with pytest.raises(ValueError, match=r"RSA|PEM") as caught:
            sf_org.register_jwt_certificate(bad)
        assert "PRIVATE" not in str(caught.value)
        assert "MII" not in str(caught.value)


def test_token_failure_modes_apply_to_the_jwt_grant(jwt_org: StandInOrg, app_key: KeyPair) -> None:
    jwt_org.token_failure = "html_500"
    assert post_jwt(jwt_org, assertion(jwt_org, app_key)).status_code == 500
    jwt_org.token_failure = None
    assert post_jwt(jwt_org, assertion(jwt_org, app_key)).status_code == 200


# --- verify_assertion, without a server -------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [
        (-grants.JWT_LEEWAY - 1, False),
        (-grants.JWT_LEEWAY + 1, True),  # just expired, within the clock skew
        (1, True),
        (grants.JWT_MAX_LIFETIME + grants.JWT_LEEWAY, True),
        (grants.JWT_MAX_LIFETIME + grants.JWT_LEEWAY + 1, False),
    ],
)
def test_verify_assertion_exp_window(app_key: KeyPair, offset: float, accepted: bool) -> None:
    now = 1_750_000_000.0
    claims = {"iss": "cid", "sub": "u@example.com", "aud": "aud", "exp": int(now + offset)}
    signed = jwt.encode(claims, app_key.private_pem, algorithm="RS256")
    verdict = grants.verify_assertion(
        signed,
        keys=[grants.load_public_key(app_key.public_pem)],
        client_id="cid",
        audiences={"aud"},
        usernames={"u@example.com"},
        now=now,
    )
    assert verdict == ("u@example.com" if accepted else grants.ASSERTION_EXPIRED)


# --- client credentials ----------------------------------------------------------------------


def test_client_credentials_in_the_body(sf_org: StandInOrg) -> None:
    access_token = assert_token_answer(sf_org, client_credentials(sf_org), sf_org.user_id)
    assert soap_accepts(sf_org, access_token)


def test_client_credentials_by_basic_auth(sf_org: StandInOrg) -> None:
    form = {"grant_type": "client_credentials"}
    good = post_form(sf_org, form, auth=(sf_org.client_id, sf_org.client_secret))
    assert soap_accepts(sf_org, assert_token_answer(sf_org, good, sf_org.user_id))
    bad = post_form(sf_org, form, auth=(sf_org.client_id, "nope"))
    assert bad.status_code == 400
    assert bad.json() == {
        "error": "invalid_client",
        "error_description": "invalid client credentials",
    }


def test_client_credentials_runs_as_the_configured_user(sf_org: StandInOrg) -> None:
    user_id = sf_org.add_user("integration@example.com", "s3cret")
    sf_org.client_credentials_user = "integration@example.com"
    assert_token_answer(sf_org, client_credentials(sf_org), user_id)


@pytest.mark.parametrize("run_as", [None, "deleted@example.com"])
def test_client_credentials_without_a_run_as_user(sf_org: StandInOrg, run_as: str | None) -> None:
    sf_org.client_credentials_user = run_as
    assert_refused(client_credentials(sf_org), grants.NO_CLIENT_CREDENTIALS_USER)
    assert sf_org.token_failures == 1


def test_client_credentials_client_errors(sf_org: StandInOrg) -> None:
    assert client_credentials(sf_org, client_id="x").json()["error"] == "invalid_client_id"
    assert client_credentials(sf_org, client_secret="x").json()["error"] == "invalid_client"


# --- username-password -----------------------------------------------------------------------


def test_password_grant_success(sf_org: StandInOrg) -> None:
    user_id = sf_org.add_user("ada@example.com", "s3cretTOKEN")
    response = password_grant(sf_org, "ada@example.com", "s3cretTOKEN")
    assert soap_accepts(sf_org, assert_token_answer(sf_org, response, user_id))


@pytest.mark.parametrize(
    ("username", "password"),
    [("ada@example.com", "wrong"), ("ada@example.com", ""), ("nobody@example.com", "s3cret")],
)
def test_password_grant_wrong_credentials(sf_org: StandInOrg, username: str, password: str) -> None:
    sf_org.add_user("ada@example.com", "s3cret")
    assert_refused(password_grant(sf_org, username, password), grants.AUTHENTICATION_FAILURE)


def test_password_grant_blocked(sf_org: StandInOrg) -> None:
    sf_org.add_user("ada@example.com", "s3cret")
    sf_org.password_grant_enabled = False
    assert_refused(
        password_grant(sf_org, "ada@example.com", "s3cret"), grants.AUTHENTICATION_FAILURE
    )
    sf_org.password_grant_enabled = True
    assert password_grant(sf_org, "ada@example.com", "s3cret").status_code == 200


def test_password_grant_checks_the_client_first(sf_org: StandInOrg) -> None:
    sf_org.add_user("ada@example.com", "s3cret")
    form = {
        "grant_type": "password",
        "username": "ada@example.com",
        "password": "s3cret",
        "client_id": sf_org.client_id,
        "client_secret": "wrong",
    }
    assert post_form(sf_org, form).json()["error"] == "invalid_client"


# --- sessions a refresh cannot save ----------------------------------------------------------


def _soap_login(org: StandInOrg, username: str, password: str) -> str:
    children = f"<username>{username}</username><password>{password}</password>"
    response = post_soap(org, "u", "login", None, children)
    assert response.status_code == 200, response.text
    found = etree.fromstring(response.content).find(f".//{{{PARTNER}}}sessionId")
    assert found is not None
    return found.text or ""


def test_reject_new_sessions(jwt_org: StandInOrg, app_key: KeyPair) -> None:
    jwt_org.add_user("ada@example.com", "s3cret")
    before = jwt_org.issue_token()
    jwt_org.reject_new_sessions = True
    issued = {
        "refresh": refresh(jwt_org, before["refresh_token"]).json()["access_token"],
        "jwt": post_jwt(jwt_org, assertion(jwt_org, app_key)).json()["access_token"],
        "client_credentials": client_credentials(jwt_org).json()["access_token"],
        "password": password_grant(jwt_org, "ada@example.com", "s3cret").json()["access_token"],
        "issue_token": jwt_org.issue_token()["access_token"],
        "soap login": _soap_login(jwt_org, "ada@example.com", "s3cret"),
    }
    for grant, access_token in issued.items():
        assert access_token.startswith(jwt_org.org_id[:15] + "!"), grant  # looks normal
        assert not soap_accepts(jwt_org, access_token), grant
        assert not soap_accepts(jwt_org, access_token, "T"), grant
        assert not rest_accepts(jwt_org, access_token), grant
        assert not jwt_org.is_valid_session(access_token), grant
    assert soap_accepts(jwt_org, before["access_token"])  # issued before: still good
    jwt_org.reject_new_sessions = False
    fresh = refresh(jwt_org, before["refresh_token"]).json()["access_token"]
    assert soap_accepts(jwt_org, fresh)
    assert not soap_accepts(jwt_org, issued["refresh"])  # refused for good


def _jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")

    def decode(part: str) -> dict[str, Any]:
        value = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        assert isinstance(value, dict)
        return value

    return decode(header), decode(payload)


def test_jwt_access_tokens(jwt_org: StandInOrg, app_key: KeyPair) -> None:
    jwt_org.add_user("ada@example.com", "s3cret")
    before = jwt_org.issue_token()
    jwt_org.jwt_access_tokens = True
    issued = {
        "refresh": refresh(jwt_org, before["refresh_token"]).json()["access_token"],
        "jwt": post_jwt(jwt_org, assertion(jwt_org, app_key)).json()["access_token"],
        "client_credentials": client_credentials(jwt_org).json()["access_token"],
        "password": password_grant(jwt_org, "ada@example.com", "s3cret").json()["access_token"],
        "issue_token": jwt_org.issue_token()["access_token"],
    }
    assert len(set(issued.values())) == len(issued)
    for grant, access_token in issued.items():
        assert grants.looks_like_jwt(access_token), grant
        header, payload = _jwt_parts(access_token)
        assert (header["alg"], header["typ"]) == ("RS256", "JWT")
        assert payload["iss"] == jwt_org.instance_url
        assert payload["client_id"] == jwt_org.client_id
        for code in ("u", "c", "T", "m", "s"):
            assert not soap_accepts(jwt_org, access_token, code), (grant, code)
        assert rest_accepts(jwt_org, access_token), grant  # JWT-based tokens are REST-only
        assert not jwt_org.is_valid_session(access_token), grant
    # A SOAP login's sessionId is never a JWT.
    session_id = _soap_login(jwt_org, "ada@example.com", "s3cret")
    assert not grants.looks_like_jwt(session_id)
    assert soap_accepts(jwt_org, session_id)
    # Expiry and revocation reach JWT-format tokens like any other.
    jwt_org.expire_session(issued["jwt"])
    assert not rest_accepts(jwt_org, issued["jwt"])
    jwt_org.jwt_access_tokens = False
    opaque = refresh(jwt_org, before["refresh_token"]).json()["access_token"]
    assert not grants.looks_like_jwt(opaque)
    assert soap_accepts(jwt_org, opaque)


def test_looks_like_jwt() -> None:
    assert grants.looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")
    assert not grants.looks_like_jwt("00D000000000001!AQ.abc_def")
    assert not grants.looks_like_jwt("eyJ.x")
    assert not grants.looks_like_jwt("eyJa.b.c=")


# --- counters and dispatch -------------------------------------------------------------------


def test_token_requests_by_grant(jwt_org: StandInOrg, app_key: KeyPair) -> None:
    token = jwt_org.issue_token()
    refresh(jwt_org, token["refresh_token"])
    refresh(jwt_org, "unknown")
    post_jwt(jwt_org, assertion(jwt_org, app_key))
    post_jwt(jwt_org, None)
    client_credentials(jwt_org)
    password_grant(jwt_org, DEFAULT_USER, "wrong")
    post_form(jwt_org, {"grant_type": "authorization_code", "code": "x"})
    post_form(jwt_org, {})
    expected = Counter(
        {
            "refresh_token": 2,
            grants.JWT_BEARER: 2,
            "client_credentials": 1,
            "password": 1,
            "authorization_code": 1,
            "": 1,
        }
    )
    counted = jwt_org.token_requests_by_grant
    assert counted == expected
    assert jwt_org.token_requests == sum(expected.values())
    assert jwt_org.token_failures == 5
    counted["password"] += 10  # a copy
    assert jwt_org.token_requests_by_grant == expected
    jwt_org.reset_counters()
    assert jwt_org.token_requests_by_grant == Counter()


def test_unknown_grant_types_stay_unsupported(sf_org: StandInOrg) -> None:
    for grant_type in (
        "urn:ietf:params:oauth:grant-type:device_code",  # RFC 8628's, not Salesforce's
        "implicit",
        "urn:ietf:params:oauth:grant-type:saml2-bearer",
    ):
        response = post_form(
            sf_org,
            {
                "grant_type": grant_type,
                "client_id": sf_org.client_id,
                "client_secret": sf_org.client_secret,
            },
        )
        assert response.json() == {
            "error": "unsupported_grant_type",
            "error_description": "grant type not supported",
        }


def test_repr_and_errors_hold_no_secret(jwt_org: StandInOrg, app_key: KeyPair) -> None:
    jwt_org.jwt_access_tokens = True
    signed = assertion(jwt_org, app_key)
    access_token = post_jwt(jwt_org, signed).json()["access_token"]
    shown = repr(jwt_org)
    for secret in (signed, access_token, app_key.public_pem.decode()):
        assert secret[-30:] not in shown
    assert jwt_org.internal_errors == []
