"""The policy of one SOAP call, free of I/O: inject, route, send, detect, refresh, resend once.

:func:`soap_call` is a generator in the style of httpx's ``Auth.auth_flow``: it yields
what it needs done and is sent the result. A thin driver performs it, synchronously in
:class:`SalesforceTransport` and with ``await`` in :class:`AsyncSalesforceTransport`, so
the decisions exist once. The steps:

* :class:`Send`: POST a message; the driver sends back the HTTP response.
* :class:`Refresh`: obtain a token newer than the one sent; the driver sends back the token.
* :class:`Verdict`: record whether a refreshed session worked (bookkeeping for the circuit
  breaker); the driver sends back None.

The resend checklist, after requests' ``HTTPDigestAuth.handle_401``:

* only an ``INVALID_SESSION_ID`` fault leads to a refresh; any other answer, fault or
  not, is returned as is, and an exception from the send (timeout, dropped connection)
  is never caught here, because the server may have run the call;
* only an envelope that carries our session id is worth resending;
* one refresh and one resend at most. If the resend meets ``INVALID_SESSION_ID`` again,
  refreshing cannot help: :class:`SessionNotRefreshableError` (a zeep ``Fault``) is raised.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from lxml import etree

from .apis import SOAP_PATH_PREFIX, api_for_address
from .envelope import set_session_id
from .errors import JwtAccessTokenError, SessionNotRefreshableError, TokenDestinationError
from .faults import INVALID_SESSION_ID, invalid_session_fault
from .routing import DestinationPolicy, route_to_instance
from .tokens import Token

__all__ = ["HttpResponse", "Refresh", "Send", "Step", "Verdict", "soap_call"]


class HttpResponse(Protocol):
    """What the policy reads of an HTTP answer (requests' and httpx's responses both fit)."""

    @property
    def status_code(self) -> int: ...

    @property
    def content(self) -> bytes: ...


ResponseT = TypeVar("ResponseT", bound=HttpResponse)


@dataclass(frozen=True)
class Send:
    """POST ``message`` to ``address``."""

    address: str
    message: bytes


@dataclass(frozen=True)
class Refresh:
    """Obtain a token newer than ``sent``; ``reason`` says why, for logs and events."""

    sent: Token
    reason: str


@dataclass(frozen=True)
class Verdict:
    """Whether the session of the refreshed token ``fresh`` worked on its first use."""

    fresh: Token
    usable: bool
    reason: str


Step = Send | Refresh | Verdict


def _looks_like_jwt(access_token: str) -> bool:
    return access_token.startswith("eyJ") and access_token.count(".") == 2


def _send(
    envelope: etree._Element,
    address: str,
    token: Token,
    *,
    route: bool,
    policy: DestinationPolicy,
    injected: bool,
) -> Send:
    if injected:
        if _looks_like_jwt(token.access_token):
            raise JwtAccessTokenError(
                "the access token is a JWT, which Salesforce's SOAP APIs never accept; turn "
                "off 'Issue JSON Web Token (JWT)-based access tokens' on the connected app"
            )
        if token.instance_url is None:
            raise TokenDestinationError("the token has no instance_url to send its session to")
    if route and token.instance_url:
        address = route_to_instance(address, token.instance_url)
    if injected and token.instance_url:
        policy.check(address, token.instance_url)
    return Send(address, etree.tostring(envelope, xml_declaration=True, encoding="utf-8"))


def soap_call(
    envelope: etree._Element,
    address: str,
    token: Token,
    *,
    route: bool,
    policy: DestinationPolicy,
) -> Generator[Step, Any, ResponseT]:
    """Drive one SOAP call with ``token`` (the object read from the refresher).

    Requests to paths outside ``/services/Soap/`` pass through untouched: no session id,
    no routing, no refresh, so a token never goes anywhere but a Salesforce SOAP path. An
    envelope that carries the session id goes only where ``policy`` allows.
    """
    if not urlsplit(address).path.startswith(SOAP_PATH_PREFIX):
        response: ResponseT = yield Send(
            address, etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
        )
        return response
    api = api_for_address(address)
    namespace = api.namespace if api is not None else None
    injected = set_session_id(envelope, namespace, token.access_token)
    sent = _send(envelope, address, token, route=route, policy=policy, injected=injected)
    response = yield sent
    if not injected or invalid_session_fault(response.status_code, response.content) is None:
        return response
    reason = f"{INVALID_SESSION_ID} from {urlsplit(sent.address).netloc}"
    fresh: Token = yield Refresh(token, reason)
    set_session_id(envelope, namespace, fresh.access_token)
    resent: ResponseT = yield _send(
        envelope, address, fresh, route=route, policy=policy, injected=True
    )
    fault = invalid_session_fault(resent.status_code, resent.content)
    yield Verdict(fresh, fault is None, reason)
    if fault is not None:
        raise SessionNotRefreshableError(
            f"Salesforce rejected the refreshed session too: {fault.message}",
            code=fault.code,
            attempts="tried: one token refresh, then one resend with the new session",
        )
    return resent
