"""The token endpoint's grants besides refresh_token: JWT bearer, client credentials, password.

Pure-ish functions and constants: how a JWT bearer assertion is verified, the refusals
Salesforce answers for each of these grants, and the shape of a JWT-format access token. The
org's state (users, registered keys, sessions: :mod:`zeep_sfrefresh.testing.state`) and knobs
live elsewhere; the token endpoint (:mod:`zeep_sfrefresh.testing.oauth`) calls these with plain
values, so the rules can be read and tested without a server.

Every refusal string below was seen coming from real orgs; the comment on each names where.
The one exception is an assertion whose ``exp`` lies too far ahead, for which no real answer
was found: the stand-in refuses it like an expired one.

pyjwt (with its ``crypto`` extra) is imported only when a key is registered or an assertion
verified, so the rest of the stand-in works without it. Nothing here logs, and no exception
raised here carries an assertion, a token or a key.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zeep_sfrefresh.testing import wire
from zeep_sfrefresh.testing.server import Answer

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

__all__ = [
    "ASSERTION_EXPIRED",
    "AUDIENCE_INVALID",
    "AUTHENTICATION_FAILURE",
    "CLIENT_CREDENTIALS",
    "CLIENT_ID_INVALID",
    "DEFAULT_JWT_AUDIENCE",
    "INVALID_ASSERTION",
    "JWT_BEARER",
    "JWT_LEEWAY",
    "JWT_MAX_LIFETIME",
    "NO_CLIENT_CREDENTIALS_USER",
    "PASSWORD",
    "USER_NOT_APPROVED",
    "Refusal",
    "jwt_access_token",
    "load_public_key",
    "looks_like_jwt",
    "verify_assertion",
]

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_CREDENTIALS = "client_credentials"
PASSWORD = "password"

DEFAULT_JWT_AUDIENCE = "https://login.salesforce.com"
"""The ``aud`` a production org expects (a sandbox expects https://test.salesforce.com)."""

JWT_MAX_LIFETIME = 300.0
"""How far ahead of now (seconds) an assertion's ``exp`` may lie.

Salesforce documents "within 3 minutes", but assertions good for 5 minutes are what common
clients send and real orgs accept them (newrelic-salesforce-exporter's default offset is 5
minutes; simple-salesforce#491 reports ``int(time.time()) + 300`` working), so the stand-in
draws the line there rather than refuse what production accepts.
"""

JWT_LEEWAY = 30.0
"""Clock skew (seconds) allowed on both edges of the ``exp`` window."""

_ALGORITHMS = ["RS256"]
"""Salesforce verifies JWT bearer assertions with RS256 only (the connected app holds an RSA
certificate); anything else, ``none`` included, is an invalid assertion."""


@dataclass(frozen=True)
class Refusal:
    """One OAuth error the token endpoint answers (HTTP 400 with Salesforce's JSON body)."""

    error: str
    description: str

    def answer(self) -> Answer:
        """The HTTP answer: 400, ``{"error": ..., "error_description": ...}``."""
        return Answer.json(400, wire.oauth_error(self.error, self.description))


CLIENT_ID_INVALID = Refusal("invalid_client_id", "client identifier invalid")
"""The assertion's ``iss`` is no connected app's consumer key (the same answer as an unknown
client_id on the other grants)."""

INVALID_ASSERTION = Refusal("invalid_grant", "invalid assertion")
"""Not a JWT, not signed with the certificate's key, or not RS256. Seen when the assertion
was signed with a key that does not match the connected app's certificate
(forcedotcom/sfdx-travisci#135) or was not a JWT at all (salesforce.stackexchange.com, "JWT
yields an invalid assertion error"). The stand-in also answers it, unverified, for a missing
assertion and a missing or non-numeric ``exp``."""

AUDIENCE_INVALID = Refusal("invalid_grant", "audience is invalid")
"""``aud`` is not the login URL the org expects (salesforce.stackexchange.com/q/184363; a
Confluent Salesforce connector's log). Salesforce Help's example of a JWT error reads
"Audience validation failed", but real orgs answer this string."""

ASSERTION_EXPIRED = Refusal("invalid_grant", "expired authorization code")
"""``exp`` is in the past: simple-salesforce#371 and #491, newrelic-salesforce-exporter#31
(fixed by PR #39, which added the offset to the current time instead of subtracting it).

The same description Salesforce gives a refresh that overlaps another one in flight; a client
must read it per grant: on a JWT bearer grant it means "sign a new assertion", never "another
refresh is running". The stand-in also answers it for an ``exp`` too far ahead, for which no
real answer was found."""

USER_NOT_APPROVED = Refusal("invalid_grant", "user hasn't approved this consumer")
"""``sub`` names no user the app may act for: a user without a prior approval or a
pre-authorised profile (salesforce.stackexchange.com/q/184363), one just created
(forcedotcom/cli#2665). For a username that does not exist at all only third-party
troubleshooting notes report this string; the stand-in answers it for both."""

AUTHENTICATION_FAILURE = Refusal("invalid_grant", "authentication failure")
"""Username-password grant with wrong credentials, and also when the flow is blocked in the
org (the default for orgs created since Summer '23): only Login History tells the two apart
("Username-Password Flow Disabled"), the API answer is the same (jsforce/jsforce#1506,
vdesabou/kafka-docker-playground#4178)."""

NO_CLIENT_CREDENTIALS_USER = Refusal("invalid_grant", "no client credentials user enabled")
"""Client credentials grant while the connected app has no "Run As" user (Sumo Logic's
Salesforce source troubleshooting docs, and the error handling of several integrations)."""


def load_public_key(pem: bytes | str) -> RSAPublicKey:
    """The RSA public key of a PEM certificate (what a connected app stores) or public key.

    Raises ValueError for anything else (a private key, an EC key, garbage), without quoting
    the input: key material never lands in an exception message.
    """
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key
    except ImportError:  # pragma: no cover - depends on the environment
        raise RuntimeError("the JWT bearer grant needs pyjwt[crypto] (cryptography)") from None
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else bytes(pem)
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key: object = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = load_pem_public_key(data)
    except (ValueError, TypeError):
        raise ValueError("not a PEM certificate or public key") from None
    if not isinstance(key, RSAPublicKey):
        raise ValueError("Salesforce verifies JWT bearer assertions with RSA keys only")
    return key


def _require_pyjwt() -> None:
    """Fail loudly (an internal error of the org, HTTP 500) when pyjwt is missing."""
    try:
        import jwt  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the environment
        raise RuntimeError("the JWT bearer grant needs pyjwt[crypto]") from None


def _claims(assertion: str) -> dict[str, Any] | None:
    """The assertion's claims, unverified (None when it is no JWS with a JSON object payload)."""
    import jwt

    try:
        payload = jwt.PyJWS().decode(assertion, options={"verify_signature": False})
        claims = json.loads(payload)
    except (jwt.PyJWTError, ValueError, TypeError):
        return None
    return claims if isinstance(claims, dict) else None


def _signed_by(assertion: str, key: RSAPublicKey) -> bool:
    import jwt

    try:
        jwt.PyJWS().decode(assertion, key, algorithms=_ALGORITHMS)
    except jwt.PyJWTError:
        return False
    return True


def _numeric_date(value: object) -> float | None:
    """``exp`` as seconds since the epoch; a numeric string counts (simple-salesforce sends one)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def verify_assertion(
    assertion: str,
    *,
    keys: Sequence[RSAPublicKey],
    client_id: str,
    audiences: Collection[str],
    usernames: Collection[str],
    now: float,
    max_lifetime: float = JWT_MAX_LIFETIME,
    leeway: float = JWT_LEEWAY,
) -> str | Refusal:
    """The username in ``sub`` when Salesforce would accept the assertion, else its refusal.

    Checked in this order: a JWS with a JSON payload, ``iss`` is the connected app's consumer
    key, an RS256 signature by one of ``keys``, ``aud`` (a string) is one of ``audiences``,
    ``exp`` lies within ``(now - leeway, now + max_lifetime + leeway]``, ``sub`` is one of
    ``usernames``. Real orgs check the audience before the user's approval
    (salesforce.stackexchange.com/q/184363: a bad ``aud`` turned "user hasn't approved this
    consumer" into "audience is invalid"); the rest of the order is the stand-in's choice.
    """
    _require_pyjwt()
    claims = _claims(assertion) if assertion else None
    if claims is None:
        return INVALID_ASSERTION
    if claims.get("iss") != client_id:
        return CLIENT_ID_INVALID
    if not any(_signed_by(assertion, key) for key in keys):
        return INVALID_ASSERTION
    audience = claims.get("aud")
    if not isinstance(audience, str) or audience not in audiences:
        return AUDIENCE_INVALID
    expires = _numeric_date(claims.get("exp"))
    if expires is None:
        return INVALID_ASSERTION
    if expires <= now - leeway or expires > now + max_lifetime + leeway:
        return ASSERTION_EXPIRED
    subject = claims.get("sub")
    if not isinstance(subject, str) or subject not in usernames:
        return USER_NOT_APPROVED
    return subject


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_json(value: object) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def jwt_access_token(
    *,
    org_id: str,
    user_id: str,
    issuer: str,
    client_id: str,
    scope: str,
    now: float,
    lifetime: int = 7200,
) -> str:
    """An access token in JWT format, as a connected app set to issue JWT-based tokens sends.

    Three base64url parts (``eyJ...``) with an RS256 header and RFC 9068-style claims
    (``iss``, ``sub``, ``aud``, ``client_id``, ``scp``, times, ``jti``). The signature is
    random bytes: the stand-in holds no signing key, and what matters to a client is the
    format, which Salesforce's SOAP APIs refuse (JWT-based access tokens work with REST only).
    """
    issued = int(now)
    header = {"alg": "RS256", "typ": "JWT", "kid": f"CORE_ATJWT.{org_id}"}
    payload = {
        "iss": issuer,
        "sub": f"uid:{user_id}",
        "aud": [issuer],
        "client_id": client_id,
        "scp": scope.split(),
        "mty": "oauth",
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime,
        "jti": secrets.token_hex(16),
    }
    return ".".join(
        (_b64url_json(header), _b64url_json(payload), _b64url(secrets.token_bytes(256)))
    )


def looks_like_jwt(token: str) -> bool:
    """Whether a token has the JWT shape (three dot-separated base64url parts, ``eyJ...``)."""
    parts = token.split(".")
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    return (
        len(parts) == 3
        and token.startswith("eyJ")
        and all(part and set(part) <= alphabet for part in parts)
    )
