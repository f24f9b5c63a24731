"""One-line clients: the transport and a ``zeep.Client`` in one call (``connect``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import zeep

from ._apis import PARTNER_WSDL
from ._records import keep_field_names
from ._transport import SalesforceTransport

if TYPE_CHECKING:
    from requests_oauthlib import OAuth2Session

    from ._grants import Grant

__all__ = ["connect", "connect_async"]

_Client = TypeVar("_Client", zeep.Client, zeep.AsyncClient)


def connect(
    oauth: OAuth2Session | Grant, wsdl: str = PARTNER_WSDL, **transport_options: Any
) -> zeep.Client:
    """A ``zeep.Client`` on ``wsdl`` whose calls go through a :class:`SalesforceTransport`.

    ``oauth`` is an ``OAuth2Session`` or a credential object (:class:`JwtBearer`, ...);
    ``transport_options`` are the transport's keyword arguments (``store``,
    ``token_timeout``, ``session``, ...). The same as ``zeep.Client(wsdl,
    transport=SalesforceTransport(oauth, **transport_options),
    settings=zeep.Settings(forbid_dtd=True))`` followed, for a partner WSDL, by
    :func:`keep_field_names`. The transport is ``client.transport``.
    """
    transport = SalesforceTransport(oauth, **transport_options)
    mine = transport_options.get("session") is None  # ours to close on failure, not the caller's
    return _client(zeep.Client, wsdl, transport, transport.session.close if mine else None)


def connect_async(
    oauth: OAuth2Session | Grant, wsdl: str = PARTNER_WSDL, **transport_options: Any
) -> zeep.AsyncClient:
    """:func:`connect` for coroutines: a ``zeep.AsyncClient`` over an
    :class:`AsyncSalesforceTransport` (needs the ``[async]`` extra; imported only here).

    The WSDL is read here, synchronously, like ``zeep.AsyncClient`` does. ``async with
    client:`` closes the transport's SOAP connections.
    """
    from ._async_transport import AsyncSalesforceTransport

    transport = AsyncSalesforceTransport(oauth, **transport_options)
    mine = transport_options.get("wsdl_client") is None
    return _client(zeep.AsyncClient, wsdl, transport, transport.wsdl_client.close if mine else None)


def _client(
    kind: type[_Client], wsdl: str, transport: Any, close: Callable[[], object] | None
) -> _Client:
    """``kind(wsdl, ...)`` with DTDs forbidden (a WSDL or an answer cannot make lxml fetch or
    expand entities), partner field names kept; ``close`` frees the transport if it fails."""
    try:
        client = kind(wsdl, transport=transport, settings=zeep.Settings(forbid_dtd=True))
    except BaseException:
        if close is not None:
            close()
        raise
    with contextlib.suppress(ValueError):  # not a partner WSDL: nothing to keep
        keep_field_names(client)
    return client
