"""Credential grants against the stand-in org: JWT bearer, client credentials, username-password."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
import zeep
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from zeep_sfrefresh import (
    PARTNER_WSDL,
    AsyncSalesforceTransport,
    ClientCredentials,
    JwtBearer,
    RefreshInProgressError,
    SalesforceTransport,
    TokenRefreshError,
    UsernamePassword,
)
from zeep_sfrefresh.testing import StandInOrg

USERNAME = "standin@example.com"


def _pem_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return _pem_pair()


def _jwt(org: StandInOrg, private_key: str, **kwargs: Any) -> JwtBearer:
    return JwtBearer(org.client_id, USERNAME, private_key, login_url=org.url, **kwargs)


GrantFactory = Callable[[StandInOrg, tuple[str, str]], Any]
GRANTS: dict[str, GrantFactory] = {
    "jwt-bearer": lambda org, keys: _jwt(org, keys[0]),
    "client-credentials": lambda org, keys: ClientCredentials(
        org.client_id, org.client_secret, domain_url=org.url
    ),
    "password": lambda org, keys: UsernamePassword(
        org.client_id, org.client_secret, "grace@example.com", "s3cret!", login_url=org.url
    ),
}
GRANT_TYPES = {
    "jwt-bearer": "urn:ietf:params:oauth:grant-type:jwt-bearer",
    "client-credentials": "client_credentials",
    "password": "password",
}


@pytest.fixture
def org(sf_org: StandInOrg, keys: tuple[str, str]) -> StandInOrg:
    sf_org.register_jwt_certificate(keys[1])
    sf_org.add_user("grace@example.com", "s3cret!")
    return sf_org


@pytest.mark.parametrize("name", GRANTS)
def test_a_credential_object_gets_a_first_token_and_a_new_one_on_expiry(
    org: StandInOrg, keys: tuple[str, str], name: str
) -> None:
    transport = SalesforceTransport(GRANTS[name](org, keys))
    assert org.token_requests == 1  # the first token, when the transport is built
    client = zeep.Client(PARTNER_WSDL, transport=transport)
    assert client.service.getServerTimestamp() is not None
    first = transport.token.access_token
    assert transport.token.refresh_token is None
    org.expire_all_sessions()
    assert client.service.getServerTimestamp() is not None
    assert transport.token.access_token != first
    assert org.token_requests_by_grant == {GRANT_TYPES[name]: 2}
    assert org.sessions_seen == [first, first, transport.token.access_token]


@pytest.mark.parametrize("name", GRANTS)
def test_the_async_transport_takes_credential_objects_too(
    org: StandInOrg, keys: tuple[str, str], name: str
) -> None:
    import asyncio

    async def main() -> None:
        transport = AsyncSalesforceTransport(GRANTS[name](org, keys))
        async with zeep.AsyncClient(PARTNER_WSDL, transport=transport) as client:
            org.expire_all_sessions()
            assert await client.service.getServerTimestamp() is not None
        transport.wsdl_client.close()

    asyncio.run(main())
    assert org.token_requests == 2


@pytest.mark.parametrize(
    ("make", "description"),
    [
        (
            lambda org, keys: _jwt(org, keys[0], audience="https://elsewhere.example"),
            "audience is invalid",
        ),
        (lambda org, keys: _jwt(org, _pem_pair()[0]), "invalid assertion"),
        (
            lambda org, keys: JwtBearer(
                org.client_id, "nobody@example.com", keys[0], login_url=org.url
            ),
            "user hasn't approved this consumer",
        ),
        (
            lambda org, keys: UsernamePassword(
                org.client_id, org.client_secret, "grace@example.com", "wrong", login_url=org.url
            ),
            "authentication failure",
        ),
    ],
    ids=["jwt-bad-audience", "jwt-wrong-key", "jwt-unknown-user", "password-wrong"],
)
def test_refused_credentials_raise_token_refresh_error(
    org: StandInOrg, keys: tuple[str, str], make: GrantFactory, description: str
) -> None:
    with pytest.raises(TokenRefreshError) as info:
        SalesforceTransport(make(org, keys))
    assert (info.value.error, info.value.description) == ("invalid_grant", description)


class _ClockSkewedJwt(JwtBearer):
    """Signs assertions that expired an hour ago once ``skewed`` is set (a wrong clock)."""

    skewed = False

    def _fetch_kwargs(self) -> dict[str, Any]:
        kwargs = super()._fetch_kwargs()
        if self.skewed:
            kwargs["expires_at"] = int(time.time()) - 3600
        return kwargs


def test_an_expired_jwt_answer_is_not_mistaken_for_a_refresh_in_progress(
    org: StandInOrg, keys: tuple[str, str]
) -> None:
    # Salesforce answers an expired assertion with "expired authorization code", the words it
    # also uses for overlapping refresh_token requests; only the refresh_token grant waits.
    grant = _ClockSkewedJwt(org.client_id, USERNAME, keys[0], login_url=org.url)
    transport = SalesforceTransport(grant, overlap_wait=60)
    client = zeep.Client(PARTNER_WSDL, transport=transport)
    grant.skewed = True
    org.expire_all_sessions()
    with pytest.raises(TokenRefreshError) as info:
        client.service.getServerTimestamp()
    assert not isinstance(info.value, RefreshInProgressError)
    assert info.value.description == "expired authorization code"
    assert org.token_requests == 2


def test_client_credentials_without_a_run_as_user(org: StandInOrg, keys: tuple[str, str]) -> None:
    org.client_credentials_user = None
    with pytest.raises(TokenRefreshError, match="no client credentials user enabled"):
        SalesforceTransport(GRANTS["client-credentials"](org, keys))


def test_credentials_never_reach_logs_or_reprs(
    org: StandInOrg, keys: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("", "requests_oauthlib", "oauthlib", "urllib3"):
        caplog.set_level(logging.DEBUG, logger=name)
    grants = [GRANTS[name](org, keys) for name in GRANTS]
    transports = [SalesforceTransport(grant) for grant in grants]
    for transport in transports:
        org.expire_all_sessions()
        zeep.Client(PARTNER_WSDL, transport=transport).service.getServerTimestamp()
    text = "\n".join(r.getMessage() for r in caplog.records) + repr(grants) + repr(transports)
    assert "assertion=***" in text  # requests-oauthlib logged the JWT request body, masked
    body = keys[0].split("-----")[2].strip().splitlines()[1]
    for secret in (body, org.client_secret, "s3cret!", *(t.token.access_token for t in transports)):
        assert secret not in text
    assert "eyJ" not in text  # no assertion, whole or in part


def test_jwt_bearer_validates_its_arguments(keys: tuple[str, str]) -> None:
    with pytest.raises(ValueError, match="PEM private key"):
        JwtBearer("id", "user", "not a key")
    with pytest.raises(ValueError, match="180 seconds"):
        JwtBearer("id", "user", keys[0], lifetime=600)


@pytest.mark.parametrize(
    ("timeout", "error", "message"),
    [
        ("30", TypeError, "timeout must be a number of seconds, not str"),
        (None, TypeError, "timeout must be a number of seconds, not NoneType"),
        (0, ValueError, "timeout must be a positive number of seconds, not 0"),
        (float("inf"), ValueError, "timeout must be a positive number of seconds, not inf"),
    ],
)
@pytest.mark.parametrize("name", GRANTS)
def test_a_credential_object_refuses_a_timeout_that_is_not_seconds(
    sf_org: StandInOrg,
    keys: tuple[str, str],
    name: str,
    timeout: object,
    error: type[Exception],
    message: str,
) -> None:
    assert GRANTS[name](sf_org, keys).timeout == 30.0  # the default
    kind = type(GRANTS[name](sf_org, keys))
    arguments: dict[str, tuple[Any, ...]] = {
        "jwt-bearer": (sf_org.client_id, USERNAME, keys[0]),
        "client-credentials": (sf_org.client_id, sf_org.client_secret),
        "password": (sf_org.client_id, "s", "u@example.com", "p"),
    }
    where = {"domain_url": sf_org.url} if name == "client-credentials" else {}
    with pytest.raises(error, match=message):
        kind(*arguments[name], timeout=timeout, **where)
