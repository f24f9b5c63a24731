"""The stand-in org's OAuth side: the token endpoint, the authorize page, device verification.

The token endpoint (``POST /services/oauth2/token``) serves the ``refresh_token`` grant
(rotation with families, refusal of overlapping refreshes), the JWT bearer, client
credentials and username-password grants, the web server flow's ``authorization_code``
exchange and Salesforce's device flow (its start, ``response_type=device_code``, and its
polls, ``grant_type=device``). Requests are counted on arrival, then held, delayed or failed
as the knobs say (:mod:`zeep_sfrefresh.testing.knobs`), then answered by the grant
:data:`GRANTS` names for them. The browser's side of the interactive flows is here too:
``GET /services/oauth2/authorize`` and the device verification page ``/setup/connect``.

The rules of each grant (what a JWT assertion must hold, what PKCE checks, how a device poll
is paced) are pure functions of :mod:`zeep_sfrefresh.testing.grants` and
:mod:`zeep_sfrefresh.testing.authorize`; this module applies them to the org's state
(:class:`~zeep_sfrefresh.testing.state.OrgState`), taking its lock around each change.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import parse_qs, unquote_plus

from zeep_sfrefresh.testing import authorize, grants, wire
from zeep_sfrefresh.testing.knobs import TOKEN_FAILURES, Knobs
from zeep_sfrefresh.testing.server import Answer
from zeep_sfrefresh.testing.state import Family, OrgState

__all__ = [
    "GRANTS",
    "Grant",
    "approve_device",
    "deny_device",
    "handle_authorize_request",
    "handle_device_verification",
    "handle_token_request",
    "issue_token",
    "pending_user_codes",
]

_EXPIRED_GRANT = "expired access/refresh token"
_NO_STORE = {"Cache-Control": "no-cache,no-store"}


# --- the token endpoint ----------------------------------------------------------------------


def handle_token_request(org: OrgState, body: bytes, authorization: str | None) -> Answer:
    """Answer ``POST /services/oauth2/token`` (called by the HTTP handler).

    The overlap check happens on arrival, before any hold or delay, since that window is
    exactly when another request is "being processed"; the in-flight mark is taken then
    and released however the request ends (answered, failed, dropped or cut by stop()).
    A trickled answer (``token_trickle``) keeps the mark until the server has written it
    or given up: the mark's release is then the answer's ``on_done``, which whoever
    writes the answer must call (the HTTP handler does).
    """
    form = {
        key: values[0]
        for key, values in parse_qs(body.decode("utf-8", "replace")).items()
        if values
    }
    presented = ""
    if form.get("grant_type") == "refresh_token":
        presented = form.get("refresh_token", "")
    knobs = org.knobs
    with org.lock:
        org.counters.token_requests += 1
        org.counters.token_requests_by_grant[authorize.token_request_kind(form)] += 1
        delay = knobs.token_delay
        if presented and knobs.reject_overlapping_refreshes and org.in_flight[presented]:
            # Refused without touching the family: no rotation, no revocation.
            org.counters.token_failures += 1
            org.counters.overlap_rejections += 1
            refusal = Answer.json(400, wire.oauth_error("invalid_grant", knobs.overlap_description))
            refusal.trickle = knobs.token_trickle
            return refusal
        if presented:
            org.in_flight[presented] += 1
    release = _in_flight_release(org, presented)
    try:
        answer = _answer_token_request(org, form, authorization, delay)
    except BaseException:
        release()
        raise
    if answer.trickle > 0 and not answer.drop:
        answer.on_done = release  # in flight until the last byte is written
    else:
        release()
    return answer


def _in_flight_release(org: OrgState, presented: str) -> Callable[[], None]:
    """A function that clears one in-flight mark of ``presented``; later calls do nothing."""
    released = False

    def release() -> None:
        nonlocal released
        if not presented:
            return
        with org.lock:
            if released:
                return
            released = True
            org.in_flight[presented] -= 1
            if org.in_flight[presented] <= 0:
                del org.in_flight[presented]

    return release


def _wait_for_release(org: OrgState) -> bool:
    """Wait while token requests are held (``hold_token_requests``); False when stopping."""
    with org.lock:
        hold = org.token_hold
    while hold is not None and not hold.wait(0.05):
        if org.stopping.is_set():
            return False
    return not org.stopping.is_set()


def _answer_token_request(
    org: OrgState, form: Mapping[str, str], authorization: str | None, delay: float
) -> Answer:
    if not _wait_for_release(org) or not org.wait(delay):
        return Answer(drop=True)
    # Knobs are read when the answer is made, so a test may change them while a request
    # is held or delayed.
    knobs = org.knobs
    failure = knobs.token_failure
    if failure is not None and failure != "drop_after_issue":
        with org.lock:
            org.counters.token_failures += 1
        if not org.wait(knobs.token_answer_delay):
            return Answer(drop=True)
        answer = _failure_answer(failure)  # made (and dated) when it is sent
    else:
        answer = _grant_answer(org, form, authorization)
        if answer.status != 200:
            with org.lock:
                org.counters.token_failures += 1
        if failure == "drop_after_issue":
            answer = Answer(drop=True)  # issued and rotated, but never told
        # The grant is processed: whatever happens from here, the server has moved on.
        if not org.wait(knobs.token_answer_delay):
            return Answer(drop=True)
    if not answer.drop:
        answer.trickle = knobs.token_trickle
    return answer


def _failure_answer(failure: str) -> Answer:
    """The answer of a ``token_failure`` mode that leaves the grant unprocessed."""
    if failure == "rate_limited_429_date":
        now = time.time()
        return Answer(
            429,
            b"Too Many Requests",
            "text/plain;charset=UTF-8",
            {
                "Date": email.utils.formatdate(now, usegmt=True),
                "Retry-After": email.utils.formatdate(now + 30, usegmt=True),
            },
        )
    if failure == "invalid_grant":
        return Answer.json(400, wire.oauth_error("invalid_grant", _EXPIRED_GRANT))
    if failure == "html_500":
        return Answer(500, wire.HTML_500_PAGE.encode("utf-8"), "text/html;charset=UTF-8")
    if failure == "garbage_200":
        return Answer(200, wire.TRUNCATED_TOKEN_BODY.encode("utf-8"), wire.JSON_CONTENT_TYPE)
    if failure == "drop":
        return Answer(drop=True)
    if failure == "rate_limited_429":
        return Answer(429, b"Too Many Requests", "text/plain;charset=UTF-8", {"Retry-After": "30"})
    if failure == "unavailable_503":
        return Answer(
            503,
            wire.HTML_503_PAGE.encode("utf-8"),
            "text/html;charset=UTF-8",
            {"Retry-After": "120"},
        )
    raise ValueError(f"unknown token_failure {failure!r}; use one of {sorted(TOKEN_FAILURES)}")


def _grant_answer(org: OrgState, form: Mapping[str, str], authorization: str | None) -> Answer:
    """Check the client as the grant wants, then let the grant answer."""
    basic = _basic_credentials(authorization)
    if basic is not None:
        # HTTP Basic client credentials (requests-oauthlib's default) replace form fields.
        form = {**form, "client_id": basic[0], "client_secret": basic[1]}
    # Salesforce starts the device flow at the token endpoint with no grant_type; it is
    # answered here (as "device_code") so holds, delays and failure modes apply as to a grant.
    grant = GRANTS.get(authorize.token_request_kind(form))
    if grant is None:
        return Answer.json(
            400, wire.oauth_error("unsupported_grant_type", "grant type not supported")
        )
    if grant.requires_secret is not None:
        refused = authorize.check_client(
            form,
            client_id=org.client_id,
            client_secret=org.client_secret,
            require_secret=grant.requires_secret(org.knobs),
        )
        if refused is not None:
            return refused.answer()
    return grant.answer(org, form)


def _basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """client_id and client_secret from ``Authorization: Basic`` (RFC 6749 2.3.1 encoding)."""
    if not authorization or authorization[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, client_secret = decoded.partition(":")
    if not sep:
        return None
    return unquote_plus(client_id), unquote_plus(client_secret)


# --- the grants (each called with the client checked as its entry in GRANTS says) -----------


def _refresh_token(org: OrgState, form: Mapping[str, str]) -> Answer:
    refresh_token = form.get("refresh_token", "")
    refused = Answer.json(400, wire.oauth_error("invalid_grant", _EXPIRED_GRANT))
    with org.lock:
        grant = org.refresh_tokens.get(refresh_token)
        if grant is None or grant.state == "revoked":
            return refused
        family = grant.family
        if grant.retired:
            org.revoke(family)
            return refused
        new_refresh: str | None = None
        if org.knobs.rotation:
            # The previous refresh token is invalidated as soon as a new one is issued;
            # it is kept (retired) so that presenting it again is seen as a reuse.
            grant.retired = True
            new_refresh = org.new_refresh_token(family)
        access_token = org.new_session(family.user_id, family, oauth=True)
        body = _token_body(org, access_token, new_refresh, family.user_id)
    return Answer.json(200, body, _NO_STORE)


def _jwt_bearer(org: OrgState, form: Mapping[str, str]) -> Answer:
    """JWT bearer: an assertion signed with a registered certificate's key names the user.

    The assertion's ``iss`` names the client and its signature proves it (no secret is
    sent). Verified outside the lock (RSA is slow); the user is looked up again afterwards.
    """
    with org.lock:
        keys = list(org.jwt_keys)
        audiences = {org.knobs.jwt_audience, org.url, org.instance_url}
        usernames = {user.username for user in org.users.values()}
    verdict = grants.verify_assertion(
        form.get("assertion", ""),
        keys=keys,
        client_id=org.client_id,
        audiences=audiences,
        usernames=usernames,
        now=time.time(),
    )
    if isinstance(verdict, grants.Refusal):
        return verdict.answer()
    return _token_without_refresh(org, verdict, grants.USER_NOT_APPROVED)


def _client_credentials(org: OrgState, form: Mapping[str, str]) -> Answer:
    """Client credentials: the token is the connected app's "Run As" user's."""
    return _token_without_refresh(
        org, org.knobs.client_credentials_user, grants.NO_CLIENT_CREDENTIALS_USER
    )


def _password(org: OrgState, form: Mapping[str, str]) -> Answer:
    """Username-password; blocked or wrong, Salesforce answers "authentication failure"."""
    with org.lock:
        user = org.user_named(form.get("username"))
        if (
            not org.knobs.password_grant_enabled
            or user is None
            or not user.password_is(form.get("password", ""))
        ):
            return grants.AUTHENTICATION_FAILURE.answer()
    return _token_without_refresh(org, user.username, grants.AUTHENTICATION_FAILURE)


def _authorization_code(org: OrgState, form: Mapping[str, str]) -> Answer:
    """The web server flow's exchange: a code from the authorize endpoint buys a token.

    The code is used up by any exchange that names the right client, successful or not.
    A code presented twice is refused; the tokens the first exchange issued stay valid
    (RFC 6749 10.5 lets a server revoke them, which Salesforce is not known to do).
    """
    with org.lock:
        pending = org.authorization_codes.pop(form.get("code", ""), None)
        if pending is None:
            return authorize.INVALID_AUTHORIZATION_CODE.answer()
        refused = pending.redeem(
            client_id=form.get("client_id", ""),
            redirect_uri=form.get("redirect_uri"),
            code_verifier=form.get("code_verifier"),
            now=time.monotonic(),
        )
        if refused is not None:
            return refused.answer()
        return Answer.json(200, _new_family_token(org, pending.user_id), _NO_STORE)


def _start_device_flow(org: OrgState, form: Mapping[str, str]) -> Answer:
    """``response_type=device_code``: a device code for the client, a user code for the user.

    No secret is needed (Salesforce CLI's connected app has none); a wrong one that is
    sent is refused. The ``scope`` asked for is accepted and the token gets ``scope``.
    """
    with org.lock:
        interval = org.knobs.device_interval
        device_code = authorize.new_device_code()
        user_code = authorize.new_user_code(
            {pending.user_code for pending in org.device_authorizations.values()}
        )
        org.device_authorizations[device_code] = authorize.DeviceAuthorization(
            client_id=org.client_id,
            user_code=user_code,
            expires_at=time.monotonic() + org.knobs.device_code_lifetime,
            interval=float(interval),
        )
        body = authorize.device_code_body(
            device_code=device_code,
            user_code=user_code,
            verification_uri=org.url + authorize.VERIFICATION_PATH,
            interval=interval,
        )
    return Answer.json(200, body, _NO_STORE)


def _device_poll(org: OrgState, form: Mapping[str, str]) -> Answer:
    """A device flow poll (the device code comes as ``code``); see ``DeviceAuthorization.poll``.

    Once approved, the first poll at the right pace gets the token and spends the code.
    """
    with org.lock:
        pending = org.device_authorizations.get(form.get("code", ""))
        if pending is None or pending.client_id != form.get("client_id"):
            return authorize.INVALID_AUTHORIZATION_CODE.answer()
        refused = pending.poll(time.monotonic())
        if refused is not None:
            return refused.answer()
        pending.state = "spent"
        return Answer.json(200, _new_family_token(org, pending.user_id or org.user_id), _NO_STORE)


@dataclass(frozen=True)
class Grant:
    """How the token endpoint answers one kind of request."""

    answer: Callable[[OrgState, Mapping[str, str]], Answer]
    requires_secret: Callable[[Knobs], bool] | None
    """Whether the client_secret must come with the client_id (checked, with the id, before
    ``answer`` runs; a secret that is sent must be right either way); None when the grant
    proves the client itself (the JWT bearer grant's signed ``iss``)."""


def _always(knobs: Knobs) -> bool:
    return True


def _never(knobs: Knobs) -> bool:
    return False


GRANTS: Mapping[str, Grant] = MappingProxyType(
    {
        "refresh_token": Grant(_refresh_token, lambda knobs: knobs.require_secret_for_refresh),
        grants.CLIENT_CREDENTIALS: Grant(_client_credentials, _always),
        grants.PASSWORD: Grant(_password, _always),
        grants.JWT_BEARER: Grant(_jwt_bearer, None),
        authorize.AUTHORIZATION_CODE: Grant(
            _authorization_code, lambda knobs: knobs.require_secret_for_web_server_flow
        ),
        authorize.DEVICE_CODE: Grant(_start_device_flow, _never),
        authorize.DEVICE: Grant(_device_poll, _never),
    }
)
"""What a token request is (its grant_type, or ``device_code`` for a device flow's start:
:func:`~zeep_sfrefresh.testing.authorize.token_request_kind`) -> how it is answered.
Adding a grant is one function and one entry here."""


# --- tokens ----------------------------------------------------------------------------------


def issue_token(org: OrgState) -> dict[str, str]:
    """A token for the demo user with a refresh token of a new family (``issue_token``)."""
    with org.lock:
        return _new_family_token(org, org.user_id)


def _new_family_token(org: OrgState, user_id: str) -> dict[str, str]:
    """A token body with a refresh token that starts a new family (called with the lock
    held): rotation and family revocation apply to it."""
    family = Family(user_id)
    access_token = org.new_session(user_id, family, oauth=True)
    refresh_token = org.new_refresh_token(family)
    return _token_body(org, access_token, refresh_token, user_id)


def _token_without_refresh(org: OrgState, username: str | None, unknown: grants.Refusal) -> Answer:
    """A token answer without refresh_token for a user, or ``unknown`` when there is none."""
    with org.lock:
        user = org.user_named(username)
        if user is None:
            return unknown.answer()
        access_token = org.new_session(user.user_id, oauth=True)
        body = _token_body(org, access_token, None, user.user_id)
    return Answer.json(200, body, _NO_STORE)


def _token_body(
    org: OrgState, access_token: str, refresh_token: str | None, user_id: str
) -> dict[str, str]:
    return wire.token_body(
        access_token=access_token,
        refresh_token=refresh_token,
        instance_url=org.instance_url,
        identity_url=org.identity_url(user_id),
        issued_at=str(int(time.time() * 1000)),
        scope=org.knobs.scope,
        client_secret=org.client_secret,
    )


# --- the browser's side of the interactive flows ---------------------------------------------


def handle_authorize_request(org: OrgState, query: str) -> Answer:
    """Answer ``GET /services/oauth2/authorize`` (the web server flow's first step).

    The demo user is taken as logged in and consenting, so a valid request is answered
    at once with a 302 to the redirect_uri carrying ``code`` (and ``state`` when sent);
    ``deny_authorization`` makes it carry ``error=access_denied`` instead. Refusals are
    :func:`zeep_sfrefresh.testing.authorize.authorize_refusal`'s.
    """
    params = authorize.query_params(query)
    knobs = org.knobs
    with org.lock:
        refused = authorize.authorize_refusal(
            params, client_id=org.client_id, callback_urls=set(knobs.callback_urls)
        )
        if refused is not None:
            return refused
        redirect_uri, state = params["redirect_uri"], params.get("state")
        if knobs.deny_authorization:
            return authorize.redirect_error(redirect_uri, authorize.ACCESS_DENIED, state)
        now = time.monotonic()
        codes = org.authorization_codes
        for stale in [c for c, p in codes.items() if now >= p.expires_at]:
            del codes[stale]  # would be refused as unknown anyway
        code = authorize.new_authorization_code()
        codes[code] = authorize.AuthorizationCode(
            client_id=org.client_id,
            redirect_uri=redirect_uri,
            user_id=org.user_id,
            expires_at=now + knobs.authorization_code_lifetime,
            code_challenge=params.get("code_challenge") or None,
        )
    location = authorize.redirect_location(redirect_uri, {"code": code, "state": state})
    return authorize.redirect(location)


def handle_device_verification(org: OrgState, query: str) -> Answer:
    """Answer ``GET /setup/connect``: the form, or the user's answer to a device flow.

    With ``user_code`` (what submitting the form sends) the demo user approves that
    device flow, or denies it with ``action=deny``; an unknown code, or one that expired
    or was already answered, gets a 400 page.
    """
    params = authorize.query_params(query)
    user_code = params.get("user_code")
    if user_code is None:
        return authorize.verification_form_page()
    approve = params.get("action", "approve") != "deny"
    try:
        if approve:
            approve_device(org, user_code)
        else:
            deny_device(org, user_code)
    except KeyError:
        return authorize.error_page(authorize.UNKNOWN_USER_CODE)
    except ValueError:
        return authorize.error_page(authorize.USER_CODE_NOT_PENDING)
    return authorize.verification_done_page(approve)


def approve_device(org: OrgState, user_code: str) -> None:
    """Approve a device flow for the demo user; KeyError for an unknown code, ValueError
    for one that expired or was already answered."""
    with org.lock:
        org.device_by_user_code(user_code).approve(org.user_id, time.monotonic())


def deny_device(org: OrgState, user_code: str) -> None:
    """Deny a device flow: its next poll answers access_denied (errors as approve_device)."""
    with org.lock:
        org.device_by_user_code(user_code).deny(time.monotonic())


def pending_user_codes(org: OrgState) -> list[str]:
    """User codes of the device flows waiting for the user (not expired), oldest first."""
    now = time.monotonic()
    with org.lock:
        return [
            pending.user_code
            for pending in org.device_authorizations.values()
            if pending.state == "pending" and now < pending.expires_at
        ]
