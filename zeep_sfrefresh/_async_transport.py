"""AsyncSalesforceTransport: the same call policy and refresh core, for ``zeep.AsyncClient``.

Needs the ``[async]`` extra (httpx, and ``packaging`` which zeep's async mode imports).
The refresh runs in a worker thread through :meth:`Refresher.arefresh_after`, so the
event loop never waits on a token request or a store lock, and a sync and an async
transport on the same session (or store) share one refresh.

zeep's ``AsyncClient.create_service`` returns a synchronous proxy; with routing on,
``client.service`` reaches the org whatever address the WSDL names, so it is not needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

try:
    import httpx
    import packaging.version  # noqa: F401 - zeep's AsyncTransport imports it when built
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without the extra
    raise ImportError(
        f"AsyncSalesforceTransport needs {exc.name or 'httpx'}: pip install 'zeep-sfrefresh[async]'"
    ) from exc
import requests
from lxml import etree
from requests_oauthlib import OAuth2Session
from zeep.transports import AsyncTransport

from ._apis import DEFAULT_API_VERSION
from ._async_rest import AsyncRestAuth, AsyncRestClient
from ._base import TransportBase, scrub_answer
from ._flow import Send, adrive

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._core import SalesforceOptions
    from ._grants import Grant

__all__ = ["AsyncSalesforceTransport"]


class AsyncSalesforceTransport(TransportBase, AsyncTransport):
    """A ``zeep.AsyncTransport`` that keeps Salesforce SOAP calls alive across session expiry.

    Takes the same Salesforce arguments as :class:`SalesforceTransport` (``oauth`` or a
    credential object, and :class:`SalesforceOptions`: ``store``, ``route_to_instance``,
    ``token_timeout``, ``overlap_wait``, ``listener``, ``circuit_breaker``,
    ``allowed_domains``, ``redact_logs``, ``name``) and
    ``zeep.AsyncTransport``'s own (``client``, ``wsdl_client``, ``cache``, ``timeout``,
    ``operation_timeout``, ``verify_ssl``, ``proxy``). Close it with ``await
    transport.aclose()`` (or ``async with AsyncClient(...)``).

    httpx clients cannot be reset after ``os.fork()``: build the async transport in the
    process that uses it (after the fork), not before.
    """

    def __init__(
        self,
        oauth: OAuth2Session | Grant,
        *,
        client: httpx.AsyncClient | None = None,
        wsdl_client: httpx.Client | None = None,
        cache: Any = None,
        timeout: float = 300,
        operation_timeout: float | None = None,
        verify_ssl: bool = True,
        proxy: Any = None,
        **options: Unpack[SalesforceOptions],
    ) -> None:
        self._init_core(oauth, options)
        super().__init__(  # type: ignore[no-untyped-call]  # zeep is unannotated
            client=client,
            wsdl_client=wsdl_client,
            cache=cache,
            timeout=timeout,
            operation_timeout=operation_timeout,
            verify_ssl=verify_ssl,
            proxy=proxy,
        )

    async def post_xml(
        self, address: str, envelope: etree._Element, headers: dict[str, str]
    ) -> requests.Response:
        """Send ``envelope`` with the current session id; refresh and resend once if it expired."""

        async def send(step: Send) -> httpx.Response:
            return await self.post(step.address, step.message or b"", headers)

        answer = await adrive(self._call_flow(address, envelope), send, self._core.refresher)
        response: requests.Response = self.new_response(answer)  # type: ignore[no-untyped-call]
        return scrub_answer(response)

    async def acallout(
        self,
        method: str,
        url: str,
        *,
        data: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """:meth:`SalesforceTransport.callout` for coroutines (the answer as a
        ``requests.Response``, like zeep's async transport gives zeep)."""
        answer, _ = await adrive(
            self._callout_flow(method, url, data, headers), self._request, self._core.refresher
        )
        response: requests.Response = self.new_response(answer)  # type: ignore[no-untyped-call]
        return response

    def rest_auth(self) -> AsyncRestAuth:
        """An ``httpx.Auth`` on this transport's token and refresher, for REST calls with
        httpx: Bearer on requests to the token's instance only, one refresh and one resend on
        a 401 ``INVALID_SESSION_ID``. See :mod:`zeep_sfrefresh._async_rest`."""
        return AsyncRestAuth(self._core)

    def rest_client(
        self, *, api_version: str = DEFAULT_API_VERSION, **options: Any
    ) -> AsyncRestClient:
        """An ``httpx.AsyncClient`` with :meth:`rest_auth` whose relative URLs go to the
        token's current instance; ``options`` are httpx's (``verify``, ``timeout``...).
        Close it (``async with``) when done."""
        return AsyncRestClient(self._core, api_version=api_version, **options)

    async def _request(self, step: Send) -> httpx.Response:
        self._log_post(step.address, step.message or b"")
        response = await self.client.request(
            step.method, step.address, content=step.message, headers=dict(step.headers or {})
        )
        self._log_answer(step.address, response.status_code, response.content)
        return response

    async def post(
        self, address: str, message: bytes | str, headers: dict[str, str]
    ) -> httpx.Response:
        """POST like ``zeep.AsyncTransport.post``, but debug-log with session ids masked."""
        self._log_post(address, message)
        response = await self.client.post(address, content=message, headers=headers)
        self._log_answer(address, response.status_code, response.content)
        return response
