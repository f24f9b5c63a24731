"""The policy of one call, free of I/O: inject, route, send, detect, refresh, resend once.

Two flows share the steps below: :func:`soap_call` for a zeep envelope, and
:func:`token_request_flow` for any other request that carries the token: REST through the
transports' ``rest_auth()`` (requests and httpx) and Named Credential style callouts, one
path for both.

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
from typing import Any, Literal, Protocol, TypeVar
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
    "RestOutcome",
    "Send",
    "Step",
    "TokenRequest",
    "Verdict",
    "callout_path",
    "route_any_path",
    "soap_call",
    "token_request_flow",
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

_REST_PATHS = ("/services/data/", "/services/apexrest/", "/services/oauth2/userinfo")
"""Paths whose requests authenticate with ``Authorization: Bearer`` (REST, Apex REST, userinfo)."""

RestOutcome = Literal["sent", "refreshed", "expired_again", "refreshed_not_resent"]
"""What became of a request that carried the token (:func:`token_request_flow`).

``sent``: the answer (whatever its status) did not say the session expired; a 401 "not
valid for use with the REST API" is one of those. ``refreshed``: it had expired; the
token was refreshed and the request resent once, and the resend's answer is returned.
``expired_again``: the resend met an expired session too; its 401 (or fault) is returned
as is, and refreshing cannot help. ``refreshed_not_resent``: the session had expired and
the token was refreshed, but the request's body could not be sent again (a stream): the
401 is returned as is and the next request goes out with the new token."""


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


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


@dataclass(frozen=True)
class TokenRequest:
    """A request made with whatever token is current: REST through the transport's auth, or
    a Named Credential style callout. A refresh builds it again from this template.

    ``url`` is absolute. A request to the token's instance gets ``Authorization: Bearer``
    (``bearer_paths_only``: only on REST paths, as a callout's SOAP envelope carries the
    session in its body); a request elsewhere is sent without any Authorization header, so
    no session id of the org leaves its instance. ``merge_fields`` fills
    :data:`MERGE_FIELD` in the body (XML-escaped) and header values. When a refresh moves
    the org to another instance, a request addressed to the old instance follows it.
    """

    method: str
    url: str
    body: bytes | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    merge_fields: bool = False
    bearer_paths_only: bool = False

    def build(self, token: Token, first: Token, policy: DestinationPolicy) -> tuple[Send, bool]:
        """The request with ``token`` (``first``: the token of the first attempt), and
        whether it carries the token."""
        address = self.url
        if (
            first.instance_url
            and token.instance_url
            and token.instance_url != first.instance_url
            and _origin(address) == _origin(first.instance_url)
        ):
            address = route_any_path(address, token.instance_url)
        headers = dict(self.headers)
        body = self.body
        carries = False
        if self.merge_fields:
            text = None if body is None else body.decode("utf-8")
            carries = (text is not None and MERGE_FIELD in text) or any(
                MERGE_FIELD in value for value in headers.values()
            )
            headers = {k: _fill(v, token.access_token, xml=False) for k, v in headers.items()}
            if text is not None:
                body = _fill(text, token.access_token, xml=True).encode("utf-8")
        at_instance = token.instance_url is not None and _origin(address) == _origin(
            token.instance_url
        )
        path = urlsplit(address).path
        rest = path.startswith(_REST_PATHS)
        if self.bearer_paths_only:
            # A callout: Bearer on REST paths unless the caller wrote its own Authorization.
            bearer = rest and not any(k.lower() == "authorization" for k in headers)
        else:
            # The REST auth: the current token always wins over a header a client library
            # set from a session id that may have gone stale.
            bearer = True
        if at_instance and bearer:
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            headers["Authorization"] = f"Bearer {token.access_token}"
            carries = True
        elif not at_instance and not self.bearer_paths_only:
            # Another host never gets an Authorization through the REST auth, not even one
            # a client library set itself: it may hold a session id of this org.
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        if carries:
            _check_sendable(token, soap=not rest)
            assert token.instance_url is not None  # _check_sendable refuses a token without
            policy.check(address, token.instance_url)
        return Send(address, body, self.method.upper(), headers), carries


def route_any_path(address: str, instance_url: str) -> str:
    """``address`` with the scheme, host and port of ``instance_url`` (path kept)."""
    target, base = urlsplit(address), urlsplit(instance_url)
    return target._replace(scheme=base.scheme, netloc=base.netloc).geturl()


def _expired(response: HttpResponse) -> bool:
    """An expired session: a SOAP ``INVALID_SESSION_ID`` fault or a REST 401 saying so."""
    status, content = response.status_code, response.content
    if 200 <= status < 300:
        return False
    return (
        rest_invalid_session(status, content) or invalid_session_fault(status, content) is not None
    )


def token_request_flow(
    request: TokenRequest,
    current: Generation,
    policy: DestinationPolicy,
    *,
    resendable: bool = True,
) -> Generator[Step, Any, tuple[ResponseT, RestOutcome | None]]:
    """One request with the current token; on an expired session one refresh and, when the
    body can be sent again, one resend (requests' ``HTTPDigestAuth.handle_401`` checklist).
    Returns the answer to give the caller, as is whatever its status, and what became of
    the session (None when the request carried no token)."""
    first, carries = request.build(current.token, current.token, policy)
    response: ResponseT = yield first
    if not carries:
        return response, None
    if not _expired(response):
        yield Verdict(current, True, _WORKED)
        return response, "sent"
    reason = f"{INVALID_SESSION_ID} from {urlsplit(first.address).netloc}"
    fresh: Generation = yield Refresh(current, reason)
    if not resendable:
        return response, "refreshed_not_resent"
    again, _ = request.build(fresh.token, current.token, policy)
    resent: ResponseT = yield again
    expired = _expired(resent)
    yield Verdict(fresh, not expired, reason)
    return resent, "expired_again" if expired else "refreshed"
