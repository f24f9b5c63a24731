"""The policy of one SOAP call, free of I/O: inject, route, send, detect, refresh, resend once.

:func:`soap_call` is a generator in the style of httpx's ``Auth.auth_flow``: it yields
what it needs done (:class:`Send` a message, :class:`Refresh` a token) and is sent the
result. A thin driver performs the I/O, synchronously in :class:`SalesforceTransport`
and with ``await`` in an async transport, so the decisions exist once.

The resend checklist, after requests' ``HTTPDigestAuth.handle_401``:

* only an ``INVALID_SESSION_ID`` fault leads to a refresh; any other answer, fault or
  not, is returned as is, and an exception from the send (timeout, dropped connection)
  is never caught here, because the server may have run the call;
* only an envelope that carries our session id is worth resending;
* one refresh and one resend at most: whatever the resend answers is returned, and a
  second ``INVALID_SESSION_ID`` surfaces as zeep's ordinary ``Fault``.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from lxml import etree

from .apis import SOAP_PATH_PREFIX, api_for_address
from .envelope import set_session_id
from .faults import is_invalid_session
from .routing import route_to_instance
from .tokens import Token

__all__ = ["HttpResponse", "Refresh", "Send", "Step", "soap_call"]


class HttpResponse(Protocol):
    """What the policy reads of an HTTP answer (requests' and httpx's responses both fit)."""

    @property
    def status_code(self) -> int: ...

    @property
    def content(self) -> bytes: ...


ResponseT = TypeVar("ResponseT", bound=HttpResponse)


@dataclass(frozen=True)
class Send:
    """POST ``message`` to ``address``; the driver sends back the response."""

    address: str
    message: bytes


@dataclass(frozen=True)
class Refresh:
    """Obtain a token newer than ``sent``; the driver sends back the new :class:`Token`."""

    sent: Token


Step = Send | Refresh


def _send(envelope: etree._Element, address: str, token: Token, *, route: bool) -> Send:
    if route and token.instance_url:
        address = route_to_instance(address, token.instance_url)
    return Send(address, etree.tostring(envelope, xml_declaration=True, encoding="utf-8"))


def soap_call(
    envelope: etree._Element, address: str, token: Token, *, route: bool
) -> Generator[Step, Any, ResponseT]:
    """Drive one SOAP call with ``token`` (the object read from the refresher).

    Requests to paths outside ``/services/Soap/`` pass through untouched: no session id,
    no routing, no refresh, so a token never goes anywhere but a Salesforce SOAP path.
    """
    if not urlsplit(address).path.startswith(SOAP_PATH_PREFIX):
        response: ResponseT = yield Send(
            address, etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
        )
        return response
    api = api_for_address(address)
    namespace = api.namespace if api is not None else None
    injected = set_session_id(envelope, namespace, token.access_token)
    response = yield _send(envelope, address, token, route=route)
    if not injected or not is_invalid_session(response.status_code, response.content):
        return response
    fresh: Token = yield Refresh(token)
    set_session_id(envelope, namespace, fresh.access_token)
    resent: ResponseT = yield _send(envelope, address, fresh, route=route)
    return resent
