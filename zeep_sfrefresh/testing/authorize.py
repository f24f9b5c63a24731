"""The interactive OAuth flows: the web server flow (authorization code, PKCE) and the device flow.

Pure rules and small state types: how a PKCE verifier is checked, what an authorization code
and a device authorization remember, the order in which a device poll is answered, the
refusals Salesforce sends for each step, and the little HTML pages a browser sees. The org's
state (the pending codes, the demo user who consents: :mod:`zeep_sfrefresh.testing.state`) and
knobs live elsewhere; :mod:`zeep_sfrefresh.testing.oauth` calls these with plain values, so the
rules read and test without a server.

Both flows are Salesforce's, not the RFCs' generic ones. The web server flow starts with
``GET /services/oauth2/authorize`` and ends with ``grant_type=authorization_code`` at the token
endpoint; PKCE is optional (a connected app may require it, the stand-in plays one that does
not), and only ``S256`` is supported. The device flow has no device authorization endpoint of
its own: the client posts ``response_type=device_code`` to the token endpoint, the user enters
the code at ``/setup/connect``, and the client polls the token endpoint with
``grant_type=device`` and the device code as ``code`` (forcedotcom/sfdx-core's
deviceOauthService.ts speaks exactly this).

Where no real answer was found the refusal says so and is the stand-in's choice. Nothing here
logs, and no repr or exception raised here carries a code, a verifier or a token.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qs, quote, urlencode

from zeep_sfrefresh.testing.grants import CLIENT_ID_INVALID, Refusal
from zeep_sfrefresh.testing.server import Answer

__all__ = [
    "ACCESS_DENIED",
    "AUTHORIZATION_CODE",
    "AUTHORIZATION_PENDING",
    "AUTHORIZE_PATH",
    "DEFAULT_CALLBACK_URL",
    "DEVICE",
    "DEVICE_CODE",
    "DEVICE_CODE_EXPIRED",
    "INVALID_AUTHORIZATION_CODE",
    "INVALID_CLIENT",
    "INVALID_CODE_CHALLENGE_METHOD",
    "INVALID_CODE_VERIFIER",
    "REDIRECT_URI_MISMATCH",
    "REDIRECT_URI_NOT_REGISTERED",
    "SLOW_DOWN",
    "UNKNOWN_USER_CODE",
    "UNSUPPORTED_RESPONSE_TYPE",
    "USER_CODE_ALPHABET",
    "USER_CODE_LENGTH",
    "USER_CODE_NOT_PENDING",
    "VERIFICATION_PATH",
    "AuthorizationCode",
    "DeviceAuthorization",
    "DeviceState",
    "authorize_refusal",
    "check_client",
    "device_code_body",
    "error_page",
    "new_authorization_code",
    "new_device_code",
    "new_user_code",
    "normalize_user_code",
    "query_params",
    "redirect",
    "redirect_error",
    "redirect_location",
    "s256_challenge",
    "s256_matches",
    "token_request_kind",
    "verification_done_page",
    "verification_form_page",
]

AUTHORIZATION_CODE = "authorization_code"
"""grant_type of the web server flow's token request."""

DEVICE = "device"
"""grant_type of a device flow poll (Salesforce's; RFC 8628 names it
``urn:ietf:params:oauth:grant-type:device_code``)."""

DEVICE_CODE = "device_code"
"""response_type of the request that starts the device flow (posted to the token endpoint,
without a grant_type); also the key it is counted under in ``token_requests_by_grant``."""

AUTHORIZE_PATH = "/services/oauth2/authorize"
VERIFICATION_PATH = "/setup/connect"
"""Where the user enters a device flow's user code (Salesforce's ``verification_uri``)."""

DEFAULT_CALLBACK_URL = "http://localhost:1717/OauthRedirect"
"""The callback URL of Salesforce CLI's connected app, the one local tools reuse most."""

USER_CODE_LENGTH = 8
USER_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""Upper-case letters and digits without 0/O and 1/I, which a user copies wrong from a screen."""

# --- refusals at the authorize endpoint ------------------------------------------------------

REDIRECT_URI_MISMATCH = Refusal("redirect_uri_mismatch", "redirect_uri must match configuration")
"""A redirect_uri that is no callback URL of the connected app. Salesforce shows this on an
error page of its own (``error=redirect_uri_mismatch&error_description=redirect_uri must match
configuration``, as reported in petewarden/salesforce_restphp_example#1 and
sfdx-mass-action-scheduler#29) and never redirects to the unregistered address."""

UNSUPPORTED_RESPONSE_TYPE = Refusal("unsupported_response_type", "response type not supported")
"""A response_type other than ``code`` on the web server flow (redirected to the callback)."""

INVALID_CODE_CHALLENGE_METHOD = Refusal("invalid_request", "invalid code_challenge_method")
"""A code_challenge_method other than S256 (Salesforce supports only S256). No real answer
was found; the error follows RFC 7636 4.4.1, the description is the stand-in's."""

ACCESS_DENIED = Refusal("access_denied", "end-user denied authorization")
"""The user clicked Deny: on the web server flow it is redirected to the callback; on the
device flow the next poll answers it (HTTP 400 JSON)."""

UNKNOWN_USER_CODE = Refusal("invalid_user_code", "the code you entered is not valid")
"""A user code at ``/setup/connect`` that no device authorization has (page text is the
stand-in's)."""

USER_CODE_NOT_PENDING = Refusal("invalid_user_code", "the code has expired or was already used")
"""A user code whose device authorization expired or was already approved or denied."""

# --- refusals at the token endpoint ----------------------------------------------------------

INVALID_CLIENT = Refusal("invalid_client", "invalid client credentials")
"""A wrong client_secret, or a missing one when the connected app requires it (the same
answer the other grants give)."""

INVALID_AUTHORIZATION_CODE = Refusal("invalid_grant", "invalid authorization code")
"""An unknown, already used or expired authorization code, and a device code that is unknown
or already exchanged. The stand-in gives all of them this text, never "expired authorization
code", which a client reads as an overlapping refresh on the refresh_token grant."""

REDIRECT_URI_NOT_REGISTERED = Refusal("invalid_grant", "redirect_uri must match configuration")
"""The token request's redirect_uri differs from the authorize request's (RFC 6749 4.1.3)."""

INVALID_CODE_VERIFIER = Refusal("invalid_grant", "invalid code verifier")
"""A code_verifier that is missing or does not hash to the authorize request's challenge."""

AUTHORIZATION_PENDING = Refusal("authorization_pending", "authorization pending")
"""A device poll before the user approved (sfdx-core polls on exactly this error)."""

SLOW_DOWN = Refusal("slow_down", "polling too quickly")
"""A device poll less than ``interval`` seconds after the previous one (RFC 8628 3.5)."""

DEVICE_CODE_EXPIRED = Refusal("expired_token", "the device code has expired")
"""A device poll after the device code's lifetime (RFC 8628's error; the description is the
stand-in's, chosen so it cannot be mistaken for Salesforce's "expired authorization code")."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def s256_challenge(verifier: str) -> str:
    """The S256 code_challenge of a verifier: base64url(sha256(verifier)), unpadded."""
    return _b64url(hashlib.sha256(verifier.encode("ascii", "replace")).digest())


def s256_matches(verifier: str, challenge: str) -> bool:
    """Whether ``verifier`` hashes to ``challenge`` (RFC 7636 4.6, compared in constant time).

    Only the hash is checked, not the verifier's length or alphabet.
    """
    return secrets.compare_digest(
        s256_challenge(verifier).encode("ascii"), challenge.encode("ascii", "replace")
    )


def new_authorization_code() -> str:
    """A single-use authorization code, URL-safe (Salesforce's start with ``aPrx``)."""
    return "aPrx" + secrets.token_urlsafe(48)


def new_device_code() -> str:
    """A device code, URL-safe; only the client ever sees it."""
    return "DC" + secrets.token_urlsafe(48)


def new_user_code(taken: Collection[str] = ()) -> str:
    """An 8-character user code from :data:`USER_CODE_ALPHABET`, none of ``taken``."""
    while True:
        code = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))
        if code not in taken:
            return code


def normalize_user_code(text: str) -> str:
    """A user code as typed (any case, dashes or spaces in it) in its canonical form."""
    return "".join(text.split()).replace("-", "").upper()


def check_client(
    form: Mapping[str, str], *, client_id: str, client_secret: str, require_secret: bool
) -> Refusal | None:
    """None when the request names the connected app, else the refusal.

    The client_id must always match. The secret is optional unless ``require_secret``: a
    connected app may skip "Require Secret for Web Server Flow" (a public client using PKCE),
    and the device flow sends none. A secret that is sent must be right; an empty one counts
    as none, since requests-oauthlib sends HTTP Basic with an empty password when it has no
    secret. (HTTP Basic credentials reach here as ``client_id`` and ``client_secret``.)
    """
    if form.get("client_id") != client_id:
        return CLIENT_ID_INVALID
    given = form.get("client_secret") or None
    if given is None:
        return INVALID_CLIENT if require_secret else None
    if not secrets.compare_digest(given.encode("utf-8"), client_secret.encode("utf-8")):
        return INVALID_CLIENT
    return None


def token_request_kind(form: Mapping[str, str]) -> str:
    """What a token endpoint post is counted as: its grant_type, or ``device_code`` for the
    device flow's start (which has no grant_type), or "" when it names neither."""
    if "grant_type" not in form and form.get("response_type") == DEVICE_CODE:
        return DEVICE_CODE
    return form.get("grant_type", "")


# --- state -----------------------------------------------------------------------------------


@dataclass(eq=False)
class AuthorizationCode:
    """What the org remembers about one authorization code (the code is the dict key).

    Times are ``time.monotonic()`` values.
    """

    client_id: str
    redirect_uri: str
    user_id: str
    expires_at: float
    code_challenge: str | None = field(default=None, repr=False)
    """The S256 challenge of the authorize request; None when it sent none (no PKCE)."""

    def redeem(
        self, *, client_id: str, redirect_uri: str | None, code_verifier: str | None, now: float
    ) -> Refusal | None:
        """None when this code buys a token, else the refusal.

        The caller removes the code before calling, whatever the verdict: a code is good for
        one exchange only, so a stolen one cannot be tried with several verifiers.
        """
        if now >= self.expires_at or client_id != self.client_id:
            return INVALID_AUTHORIZATION_CODE
        if redirect_uri != self.redirect_uri:
            return REDIRECT_URI_NOT_REGISTERED
        if self.code_challenge is not None and (
            not code_verifier or not s256_matches(code_verifier, self.code_challenge)
        ):
            return INVALID_CODE_VERIFIER
        return None


DeviceState = Literal["pending", "approved", "denied", "spent"]
"""Where a device authorization stands: waiting for the user, approved (the next poll at the
right pace gets a token), denied, or spent (its token was handed out)."""


@dataclass(eq=False)
class DeviceAuthorization:
    """What the org remembers about one device code (the device code is the dict key).

    Times are ``time.monotonic()`` values.
    """

    client_id: str
    user_code: str = field(repr=False)
    expires_at: float
    interval: float
    """The polling interval the client was told (seconds)."""
    state: DeviceState = "pending"
    user_id: str | None = None
    """Who approved it (set with the approval)."""
    last_poll: float | None = None

    def approve(self, user_id: str, now: float) -> None:
        """Record the user's approval; ValueError when the code expired or was decided."""
        self._decide(now)
        self.state = "approved"
        self.user_id = user_id

    def deny(self, now: float) -> None:
        """Record the user's refusal; ValueError when the code expired or was decided."""
        self._decide(now)
        self.state = "denied"

    def _decide(self, now: float) -> None:
        if now >= self.expires_at:
            raise ValueError("this device code has expired")
        if self.state != "pending":
            raise ValueError(f"this device code is already {self.state}")

    def poll(self, now: float) -> Refusal | None:
        """Answer one poll: None when a token may be issued (then mark it ``spent``), else the
        refusal.

        In this order: a spent code is invalid, a denied one answers access_denied, an
        expired one expired_token; then a poll sooner than ``interval`` after the previous
        one is slow_down (every poll, slow_down ones included, becomes the new reference
        time); then authorization_pending until the user approved.
        """
        if self.state == "spent":
            return INVALID_AUTHORIZATION_CODE
        if self.state == "denied":
            return ACCESS_DENIED
        if now >= self.expires_at:
            return DEVICE_CODE_EXPIRED
        too_soon = self.last_poll is not None and now - self.last_poll < self.interval
        self.last_poll = now
        if too_soon:
            return SLOW_DOWN
        if self.state == "pending":
            return AUTHORIZATION_PENDING
        return None


def device_code_body(
    *, device_code: str, user_code: str, verification_uri: str, interval: int
) -> dict[str, str | int]:
    """The answer to ``response_type=device_code``: the four fields Salesforce sends (no
    ``expires_in``, no ``verification_uri_complete``)."""
    return {
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": verification_uri,
        "interval": interval,
    }


def query_params(query: str) -> dict[str, str]:
    """A query string's parameters, the first value of each (blank ones left out)."""
    return {name: values[0] for name, values in parse_qs(query).items() if values}


# --- the browser's side ----------------------------------------------------------------------


def redirect_location(redirect_uri: str, params: Mapping[str, str | None]) -> str:
    """``redirect_uri`` with ``params`` added to its query (None values left out)."""
    query = urlencode({k: v for k, v in params.items() if v is not None}, quote_via=quote)
    if not query:
        return redirect_uri
    return redirect_uri + ("&" if "?" in redirect_uri else "?") + query


def redirect(location: str) -> Answer:
    """HTTP 302 to ``location``, as the authorize endpoint answers once consent is given."""
    return Answer(302, b"", "text/html;charset=UTF-8", {"Location": location})


def _page(status: int, title: str, body: str) -> Answer:
    text = (
        f"<!DOCTYPE html><html><head><title>{html.escape(title)}</title></head>"
        f"<body>{body}</body></html>"
    )
    return Answer(status, text.encode("utf-8"), "text/html;charset=UTF-8")


def error_page(refusal: Refusal, status: int = 400) -> Answer:
    """An error page naming the error and its description; nothing from the request in it."""
    return _page(
        status,
        "Error",
        f"<h1>{html.escape(refusal.error)}</h1><p>{html.escape(refusal.description)}</p>",
    )


def authorize_refusal(
    params: Mapping[str, str], *, client_id: str, callback_urls: Collection[str]
) -> Answer | None:
    """The answer refusing an authorize request, or None when the user may be asked to consent.

    An unknown client_id or a redirect_uri that is not exactly a registered callback URL gets
    an error page (400): redirecting to an unregistered address would hand the error, and
    with it the user, to whoever forged the link. Once the redirect_uri is trusted, errors go
    back to it with ``error``, ``error_description`` and the ``state`` the client sent: a
    response_type other than ``code``, and a code_challenge_method other than S256 (an absent
    method counts as S256, the only one Salesforce supports).
    """
    if params.get("client_id") != client_id:
        return error_page(CLIENT_ID_INVALID)
    redirect_uri = params.get("redirect_uri", "")
    if redirect_uri not in callback_urls:
        return error_page(REDIRECT_URI_MISMATCH)
    refusal: Refusal | None = None
    if params.get("response_type") != "code":
        refusal = UNSUPPORTED_RESPONSE_TYPE
    elif params.get("code_challenge") and params.get("code_challenge_method", "S256") != "S256":
        refusal = INVALID_CODE_CHALLENGE_METHOD
    if refusal is None:
        return None
    return redirect_error(redirect_uri, refusal, params.get("state"))


def redirect_error(redirect_uri: str, refusal: Refusal, state: str | None) -> Answer:
    """A 302 to the (registered) callback carrying an OAuth error and the client's state."""
    return redirect(
        redirect_location(
            redirect_uri,
            {"error": refusal.error, "error_description": refusal.description, "state": state},
        )
    )


def verification_form_page() -> Answer:
    """``GET /setup/connect``: the form where the user types the device flow's code."""
    return _page(
        200,
        "Connect Your Device",
        "<h1>Connect Your Device</h1>"
        f'<form method="get" action="{VERIFICATION_PATH}">'
        '<label>Code <input name="user_code" autocomplete="off"></label>'
        '<button type="submit">Connect</button></form>',
    )


def verification_done_page(approved: bool) -> Answer:
    """The page after the user submitted a valid code (approved or denied)."""
    if approved:
        return _page(200, "Device Connected", "<h1>Device Connected</h1><p>approved</p>")
    return _page(200, "Access Denied", "<h1>Access Denied</h1><p>denied</p>")
