"""The policy of one call, free of I/O: inject, route, send, detect, refresh, resend once.

Policies are generators in the style of httpx's ``Auth.auth_flow``: they yield what they
need done and are sent the result. :func:`drive` and :func:`adrive` perform the steps,
synchronously and with ``await``, so the decisions exist once for both transports. The
steps:

* :class:`Send`: send a request; the driver sends back the HTTP response.
* :class:`Join`: wait for a refresh of the current token that is under way before sending
  (another worker, or this process, met the expiry first); the driver sends back the
  generation to send with.
* :class:`Refresh`: obtain a generation newer than the one sent; the driver sends it back.
* :class:`Verdict`: record whether the session sent was accepted (bookkeeping for the
  circuit breaker); the driver sends back None.

Policies work with :class:`~zeep_sfrefresh._tokens.Generation` objects: the token a call
sends, as the refresher handed it out, so the refresher can tell who is asking.

:func:`resend_once` is the one resend skeleton, after requests' ``HTTPDigestAuth.handle_401``:

* only an answer that says the session expired leads to a refresh; any other answer,
  error or not, is returned as is, and an exception from the send (timeout, dropped
  connection) is never caught here, because the server may have run the call;
* only a request that carries our token is worth resending, and only when its body can be
  sent again;
* one refresh and one resend at most.

:func:`soap_call` specialises it for a zeep envelope (a resend that meets
``INVALID_SESSION_ID`` again raises :class:`SessionNotRefreshableError`, a zeep ``Fault``);
:mod:`zeep_sfrefresh._callouts` for REST requests and Named Credential style callouts.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Generator, Mapping
from functools import lru_cache
from typing import Any, Literal, NamedTuple, Protocol, TypeVar
from urllib.parse import urlsplit

from lxml import etree

from ._apis import SOAP_PATH_PREFIX, api_for_address
from ._envelope import serialize_with_session_id
from ._errors import JwtAccessTokenError, SessionNotRefreshableError, TokenDestinationError
from ._faults import INVALID_SESSION_ID, invalid_session_fault
from ._routing import DestinationPolicy, destination, route_to_instance
from ._tokens import Generation, Token

__all__ = [
    "HttpResponse",
    "Join",
    "Outcome",
    "Refresh",
    "Send",
    "SessionKeeper",
    "Step",
    "Verdict",
    "adrive",
    "asettle",
    "check_sendable",
    "drive",
    "resend_once",
    "settle",
    "soap_call",
]

logger = logging.getLogger(__name__)


class HttpResponse(Protocol):
    """What the policy reads of an HTTP answer (requests' and httpx's responses both fit)."""

    @property
    def status_code(self) -> int: ...

    @property
    def content(self) -> bytes: ...


ResponseT = TypeVar("ResponseT", bound=HttpResponse)
ResultT = TypeVar("ResultT")


# The steps are named tuples, not dataclasses: immutable all the same, and defining one costs
# a sixth of a dataclass at ``import zeep_sfrefresh`` (no generated methods to compile).


class Send(NamedTuple):
    """Send ``message`` to ``address`` (``headers``: extra headers for this request only)."""

    address: str
    message: bytes | None
    method: str = "POST"
    headers: Mapping[str, str] | None = None

    def __repr__(self) -> str:
        # The message holds the session id, and headers may hold a Bearer token.
        return f"Send(address={self.address!r}, method={self.method!r})"


class Join(NamedTuple):
    """Wait for the refresh of ``current``'s token that is under way (the call has not gone
    out yet); the driver sends back the generation to send with."""

    current: Generation


class Refresh(NamedTuple):
    """Obtain a generation newer than ``sent``; ``reason`` says why, for logs and events."""

    sent: Generation
    reason: str


class Verdict(NamedTuple):
    """Whether the session of ``sent`` was accepted (``usable``) or rejected at once."""

    sent: Generation
    usable: bool
    reason: str


Step = Send | Join | Refresh | Verdict

Outcome = Literal["sent", "refreshed", "expired_again", "refreshed_not_resent"]
"""What became of a request that carried the token (:func:`resend_once`).

``sent``: the answer (whatever its status) did not say the session expired; a 401 "not
valid for use with the REST API" is one of those. ``refreshed``: it had expired; the
token was refreshed and the request resent once, and the resend's answer is returned.
``expired_again``: the resend met an expired session too; refreshing cannot help.
``refreshed_not_resent``: the session had expired and the token was refreshed, but the
request's body could not be sent again (a stream): the first answer is returned and the
next request goes out with the new token."""

_WORKED = "the session worked"
"""The reason of a usable verdict: a constant, so the happy path builds no string."""


def check_sendable(token: Token, *, soap: bool) -> str:
    """Refuse, before anything is sent, a token that has no instance or, for a SOAP API, a
    JWT access token (the SOAP APIs never accept one); return the instance URL."""
    if soap and token.access_token.startswith("eyJ") and token.access_token.count(".") == 2:
        raise JwtAccessTokenError(
            "the access token is a JWT, which Salesforce's SOAP APIs never accept; turn "
            "off 'Issue JSON Web Token (JWT)-based access tokens' on the connected app"
        )
    if token.instance_url is None:
        raise TokenDestinationError(
            "the token has no instance_url, so there is no org to send its session to; "
            "use the token dict Salesforce's token endpoint returned"
        )
    return token.instance_url


def resend_once(
    build: Callable[[Token], tuple[Send, bool]],
    expired: Callable[[HttpResponse], bool],
    current: Generation,
    *,
    resendable: bool = True,
    announced: bool,
) -> Generator[Step, Any, tuple[ResponseT, Outcome | None]]:
    """The resend skeleton: send ``build(token)`` (the request and whether it carries the
    token); when ``expired`` says its answer's session expired, refresh once and, if the
    body can be sent again, resend once. Returns the answer to give the caller and what
    became of the session (None when the request carried no token).

    ``announced`` (from ``Refresher.begin``): a refresh of ``current``'s token is under way,
    so a request that carries it first waits for that refresh (:class:`Join`) and goes out
    with the token it brings, instead of meeting the expiry the refresh is about."""
    first, carries = build(current.token)
    if carries and announced:
        joined: Generation = yield Join(current)
        if joined is not current:
            current = joined
            first, carries = build(current.token)
    response: ResponseT = yield first
    if not carries:
        return response, None
    if not expired(response):
        yield Verdict(current, True, _WORKED)
        return response, "sent"
    reason = f"{INVALID_SESSION_ID} from {urlsplit(first.address).netloc}"
    fresh: Generation = yield Refresh(current, reason)
    if not resendable:
        return response, "refreshed_not_resent"
    again, _ = build(fresh.token)
    resent: ResponseT = yield again
    still = expired(resent)
    yield Verdict(fresh, not still, reason)
    return resent, "expired_again" if still else "refreshed"


@lru_cache(maxsize=256)
def _soap_target(address: str) -> tuple[bool, str | None]:
    """Whether ``address`` is a SOAP path, and its API's namespace (None: unknown API).
    Cached: a client posts to a few addresses, on every call."""
    if not urlsplit(address).path.startswith(SOAP_PATH_PREFIX):
        return False, None
    api = api_for_address(address)
    return True, api.namespace if api is not None else None


def _fault_expired(response: HttpResponse) -> bool:
    return invalid_session_fault(response.status_code, response.content) is not None


def soap_call(
    envelope: etree._Element,
    address: str,
    current: Generation,
    *,
    route: bool,
    policy: DestinationPolicy,
    announced: bool = False,
) -> Generator[Step, Any, ResponseT]:
    """Drive one SOAP call with ``current`` (the generation read from the refresher;
    ``announced``: see :func:`resend_once`).

    Requests to paths outside ``/services/Soap/`` pass through untouched: no session id,
    no routing, no refresh, so a token never goes anywhere but a Salesforce SOAP path. An
    envelope that carries the session id goes only where ``policy`` allows. The envelope
    element is left without the session id once serialised.
    """
    soap, namespace = _soap_target(address)
    if not soap:
        response: ResponseT = yield Send(
            address, etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
        )
        return response

    def build(token: Token) -> tuple[Send, bool]:
        message = serialize_with_session_id(envelope, namespace, token.access_token)
        if message is None:  # no SessionHeader to carry it (a login call): sent as is
            target = address
            if route and token.instance_url:
                target = route_to_instance(address, token.instance_url)
            plain = etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
            return Send(target, plain), False
        instance = check_sendable(token, soap=True)
        return Send(destination(address, instance, route, policy), message), True

    answer: ResponseT
    outcome: Outcome | None
    answer, outcome = yield from resend_once(build, _fault_expired, current, announced=announced)
    if outcome == "expired_again":
        fault = invalid_session_fault(answer.status_code, answer.content)
        assert fault is not None  # what made the outcome
        raise SessionNotRefreshableError(
            f"Salesforce rejected the refreshed session too: {fault.message}",
            code=fault.code,
            attempts="tried: one token refresh, then one resend with the new session",
        )
    result: ResponseT = answer
    return result


class SessionKeeper(Protocol):
    """What the drivers need of the refresher."""

    def join(self, sent: Generation) -> Generation: ...

    async def ajoin(self, sent: Generation) -> Generation: ...

    def refresh_after(self, sent: Generation, reason: str = ...) -> Generation: ...

    async def arefresh_after(self, sent: Generation, reason: str = ...) -> Generation: ...

    def judge(self, sent: Generation, usable: bool, reason: str = ...) -> None: ...


def settle(step: Join | Refresh | Verdict, keeper: SessionKeeper) -> Generation | None:
    """Perform a step that is not a send: a join or a refresh (returns the generation to
    send with) or a verdict on the session sent."""
    if isinstance(step, Join):
        return keeper.join(step.current)
    if isinstance(step, Refresh):
        logger.debug("%s; this call waits for a newer session", step.reason)
        return keeper.refresh_after(step.sent, step.reason)
    keeper.judge(step.sent, step.usable, step.reason)
    return None


async def asettle(step: Join | Refresh | Verdict, keeper: SessionKeeper) -> Generation | None:
    """:func:`settle` for coroutines: neither a join nor a refresh blocks the event loop."""
    if isinstance(step, Join):
        return await keeper.ajoin(step.current)
    if isinstance(step, Refresh):
        logger.debug("%s; this call waits for a newer session", step.reason)
        return await keeper.arefresh_after(step.sent, step.reason)
    keeper.judge(step.sent, step.usable, step.reason)
    return None


def drive(
    flow: Generator[Step, Any, ResultT],
    send: Callable[[Send], HttpResponse],
    keeper: SessionKeeper,
) -> ResultT:
    """Perform a policy's steps synchronously; return what the policy returns."""
    step = next(flow)
    while True:
        result = send(step) if isinstance(step, Send) else settle(step, keeper)
        try:
            step = flow.send(result)
        except StopIteration as done:
            value: ResultT = done.value
            return value


async def adrive(
    flow: Generator[Step, Any, ResultT],
    send: Callable[[Send], Awaitable[HttpResponse]],
    keeper: SessionKeeper,
) -> ResultT:
    """Perform a policy's steps with ``await``; the refresh never blocks the loop."""
    step = next(flow)
    while True:
        result = await send(step) if isinstance(step, Send) else await asettle(step, keeper)
        try:
            step = flow.send(result)
        except StopIteration as done:
            value: ResultT = done.value
            return value
