"""The policy of one SOAP call, free of I/O: inject, route, send, detect, refresh, resend once.

:func:`soap_call` is a generator in the style of httpx's ``Auth.auth_flow``: it yields
what it needs done and is sent the result. A thin driver performs it, synchronously in
:class:`SalesforceTransport` and with ``await`` in :class:`AsyncSalesforceTransport`, so
the decisions exist once. The steps:

* :class:`Send`: POST a message; the driver sends back the HTTP response.
* :class:`Refresh`: obtain a generation newer than the one sent; the driver sends it back.
* :class:`Verdict`: record whether the session sent was accepted (bookkeeping for the
  circuit breaker); the driver sends back None.

The flow works with :class:`~zeep_sfrefresh.tokens.Generation` objects: the token a call
sends, as the refresher handed it out, so the refresher can tell who is asking.

The resend checklist, after requests' ``HTTPDigestAuth.handle_401``:

* only an ``INVALID_SESSION_ID`` fault leads to a refresh; any other answer, fault or
  not, is returned as is, and an exception from the send (timeout, dropped connection)
  is never caught here, because the server may have run the call;
* only an envelope that carries our session id is worth resending;
* one refresh and one resend at most. If the resend meets ``INVALID_SESSION_ID`` again,
  refreshing cannot help: :class:`SessionNotRefreshableError` (a zeep ``Fault``) is raised.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

from lxml import etree

from .apis import SOAP_PATH_PREFIX, api_for_address
from .envelope import serialize_with_session_id
from .errors import JwtAccessTokenError, SessionNotRefreshableError, TokenDestinationError
from .faults import INVALID_SESSION_ID, invalid_session_fault, rest_invalid_session
from .routing import DestinationPolicy, route_to_instance
from .tokens import Generation, Token

__all__ = [
    "MERGE_FIELD",
    "HttpResponse",
    "Refresh",
    "Send",
    "Step",
    "Verdict",
    "callout_flow",
    "callout_path",
    "soap_call",
]


class HttpResponse(Protocol):
    """What the policy reads of an HTTP answer (requests' and httpx's responses both fit)."""

    @property
    def status_code(self) -> int: ...

    @property
    def content(self) -> bytes: ...


ResponseT = TypeVar("ResponseT", bound=HttpResponse)


@dataclass(frozen=True)
class Send:
    """Send ``message`` to ``address`` (``headers``: extra headers for this request only)."""

    address: str
    message: bytes | None = field(repr=False)  # it holds the session id
    method: str = "POST"
    headers: Mapping[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Refresh:
    """Obtain a generation newer than ``sent``; ``reason`` says why, for logs and events."""

    sent: Generation
    reason: str


@dataclass(frozen=True)
class Verdict:
    """Whether the session of ``sent`` was accepted (``usable``) or rejected at once."""

    sent: Generation
    usable: bool
    reason: str


Step = Send | Refresh | Verdict

_WORKED = "the session worked"
"""The reason of a usable verdict: a constant, so the happy path builds no string."""


def _looks_like_jwt(access_token: str) -> bool:
    return access_token.startswith("eyJ") and access_token.count(".") == 2


def _send(
    envelope: etree._Element,
    namespace: str | None,
    address: str,
    token: Token,
    *,
    route: bool,
    policy: DestinationPolicy,
) -> tuple[Send, bool]:
    """Build the request for ``envelope`` with ``token``; also say whether it carries it."""
    message = serialize_with_session_id(envelope, namespace, token.access_token)
    injected = message is not None
    if injected:
        _check_sendable(token)
    if route and token.instance_url:
        address = route_to_instance(address, token.instance_url)
    if injected and token.instance_url:
        policy.check(address, token.instance_url)
    if message is None:
        message = etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
    return Send(address, message), injected


def _check_sendable(token: Token, *, soap: bool = True) -> None:
    """Refuse, before anything is sent, a token that has no instance or that SOAP refuses."""
    if soap and _looks_like_jwt(token.access_token):
        raise JwtAccessTokenError(
            "the access token is a JWT, which Salesforce's SOAP APIs never accept; turn "
            "off 'Issue JSON Web Token (JWT)-based access tokens' on the connected app"
        )
    if token.instance_url is None:
        raise TokenDestinationError("the token has no instance_url to send its session to")


def soap_call(
    envelope: etree._Element,
    address: str,
    current: Generation,
    *,
    route: bool,
    policy: DestinationPolicy,
) -> Generator[Step, Any, ResponseT]:
    """Drive one SOAP call with ``current`` (the generation read from the refresher).

    Requests to paths outside ``/services/Soap/`` pass through untouched: no session id,
    no routing, no refresh, so a token never goes anywhere but a Salesforce SOAP path. An
    envelope that carries the session id goes only where ``policy`` allows. The envelope
    element is left without the session id once serialised.
    """
    if not urlsplit(address).path.startswith(SOAP_PATH_PREFIX):
        response: ResponseT = yield Send(
            address, etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
        )
        return response
    api = api_for_address(address)
    namespace = api.namespace if api is not None else None
    sent, injected = _send(envelope, namespace, address, current.token, route=route, policy=policy)
    response = yield sent
    if not injected:
        return response
    if invalid_session_fault(response.status_code, response.content) is None:
        yield Verdict(current, True, _WORKED)
        return response
    reason = f"{INVALID_SESSION_ID} from {urlsplit(sent.address).netloc}"
    fresh: Generation = yield Refresh(current, reason)
    again, _ = _send(envelope, namespace, address, fresh.token, route=route, policy=policy)
    resent: ResponseT = yield again
    fault = invalid_session_fault(resent.status_code, resent.content)
    yield Verdict(fresh, fault is None, reason)
    if fault is not None:
        raise SessionNotRefreshableError(
            f"Salesforce rejected the refreshed session too: {fault.message}",
            code=fault.code,
            attempts="tried: one token refresh, then one resend with the new session",
        )
    return resent


MERGE_FIELD = "{!$Credential.OAuthToken}"
"""Apex's merge field for a Named Credential's access token; callouts fill it in."""

_BEARER_PATHS = ("/services/data/", "/services/apexrest/", "/services/oauth2/userinfo")


def callout_path(url: str, name: str) -> str:
    """Return the path (and query) of a ``callout:NAME/path`` URL; the name must be ``name``."""
    prefix, _, rest = url.partition(":")
    if prefix != "callout" or not rest:
        raise ValueError(f"a callout URL looks like callout:{name}/services/..., not {url!r}")
    called, slash, path = rest.partition("/")
    if called != name:
        raise ValueError(
            f"this transport is the named credential {name!r}, not {called!r}"
            if name
            else "give the transport a name (SalesforceTransport(..., name='sfa')) to make callouts"
        )
    return slash + path


def _fill(text: str, access_token: str, *, xml: bool) -> str:
    return text.replace(MERGE_FIELD, escape(access_token) if xml else access_token)


def _callout_request(
    method: str,
    path: str,
    data: str | bytes | None,
    headers: Mapping[str, str],
    token: Token,
    policy: DestinationPolicy,
) -> tuple[Send, bool]:
    """Build one callout request with ``token``; also say whether it carries the token."""
    if token.instance_url is None:
        raise TokenDestinationError("the token has no instance_url to send its session to")
    address = token.instance_url.rstrip("/") + path
    body = data.decode("utf-8") if isinstance(data, bytes) else data
    carries = body is not None and MERGE_FIELD in body
    filled = {key: _fill(value, token.access_token, xml=False) for key, value in headers.items()}
    carries = carries or any(MERGE_FIELD in value for value in headers.values())
    if urlsplit(path).path.startswith(_BEARER_PATHS) and "authorization" not in {
        key.lower() for key in headers
    }:
        filled["Authorization"] = f"Bearer {token.access_token}"
        carries = True
    if carries:
        _check_sendable(token, soap=not path.startswith(_BEARER_PATHS))
        policy.check(address, token.instance_url)
    message = None if body is None else _fill(body, token.access_token, xml=True).encode("utf-8")
    return Send(address, message, method.upper(), filled), carries


def callout_flow(
    method: str,
    path: str,
    *,
    data: str | bytes | None,
    headers: Mapping[str, str],
    current: Generation,
    policy: DestinationPolicy,
) -> Generator[Step, Any, ResponseT]:
    """A Named Credential style callout: ``{!$Credential.OAuthToken}`` filled in, REST paths
    given ``Authorization: Bearer``, one refresh and one resend on an expired session (a SOAP
    ``INVALID_SESSION_ID`` fault or a REST 401), whatever the resend answers returned as is.
    """
    request, carries = _callout_request(method, path, data, headers, current.token, policy)
    response: ResponseT = yield request
    if not carries:
        return response
    expired = invalid_session_fault(response.status_code, response.content) is not None
    if not (expired or rest_invalid_session(response.status_code, response.content)):
        yield Verdict(current, True, _WORKED)
        return response
    reason = f"{INVALID_SESSION_ID} from {urlsplit(request.address).netloc}"
    fresh: Generation = yield Refresh(current, reason)
    again, _ = _callout_request(method, path, data, headers, fresh.token, policy)
    resent: ResponseT = yield again
    still = invalid_session_fault(resent.status_code, resent.content) is not None
    yield Verdict(
        fresh, not (still or rest_invalid_session(resent.status_code, resent.content)), reason
    )
    return resent
