"""REST with the async transport's token: an ``httpx.Auth`` and ``httpx.AsyncClient``.

The same policy as :mod:`zeep_sfrefresh._rest`
(:func:`zeep_sfrefresh._callouts.token_request_flow`),
performed in httpx's own style: ``auth_flow`` generators that yield requests and are sent
responses. In an ``httpx.AsyncClient`` the refresh is awaited (it runs in a worker thread, so
the event loop never waits on a token request); in an ``httpx.Client`` it runs inline. Needs
the ``[async]`` extra.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import TYPE_CHECKING, Any

import httpx

from ._apis import DEFAULT_API_VERSION
from ._callouts import TokenRequest, token_request_flow
from ._flow import Outcome, Send, Step, asettle, settle
from ._rest import _OUTCOME, rest_url

if TYPE_CHECKING:
    from ._core import Core

__all__ = ["AsyncRestAuth", "AsyncRestClient"]

_Flow = Generator[Step, Any, "tuple[httpx.Response, Outcome | None]"]


class AsyncRestAuth(httpx.Auth):
    """``Authorization: Bearer <current token>`` on requests to the token's instance, and one
    refresh (through the transport's refresher) and resend on a 401 ``INVALID_SESSION_ID``.
    Requests to other hosts go out untouched. From ``transport.rest_auth()``."""

    # Both flows below read the request body first (a resend sends it again) and every
    # answer's body (a 401's says whether the session expired), as httpx's
    # requires_request_body / requires_response_body would for a plain auth_flow.

    def __init__(self, core: Core) -> None:
        self._core = core

    def __repr__(self) -> str:
        return "AsyncRestAuth()"

    def _flow(self, request: httpx.Request) -> _Flow:
        template = TokenRequest(
            request.method, str(request.url), request.content, dict(request.headers)
        )
        current, announced = self._core.refresher.begin()
        return token_request_flow(template, current, self._core.policy, announced=announced)

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """The flow in ``httpx.Client``: send with the current token; on a 401
        ``INVALID_SESSION_ID``, refresh once through the transport's refresher and resend once."""
        request.read()  # httpx reads bodies for its own auth_flow only; ours is overridden
        flow = self._flow(request)
        step = next(flow)
        while True:
            result: object
            if isinstance(step, Send):
                response = yield _apply(request, step)
                response.read()
                result = response
            else:
                result = settle(step, self._core.refresher)
            try:
                step = flow.send(result)
            except StopIteration as done:
                _mark(*done.value)
                return

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """The same flow in ``httpx.AsyncClient``, the refresh awaited off the event loop."""
        await request.aread()
        flow = self._flow(request)
        step = next(flow)
        while True:
            result: object
            if isinstance(step, Send):
                response = yield _apply(request, step)
                await response.aread()
                result = response
            else:
                result = await asettle(step, self._core.refresher)
            try:
                step = flow.send(result)
            except StopIteration as done:
                _mark(*done.value)
                return


def _apply(request: httpx.Request, step: Send) -> httpx.Request:
    """Put the step's address and headers on ``request`` (httpx auths edit and re-yield it)."""
    if step.address != str(request.url):
        request.url = httpx.URL(step.address)
        request.headers["Host"] = request.url.netloc.decode("ascii")
    for name in [name for name in request.headers if name.lower() == "authorization"]:
        del request.headers[name]
    request.headers.update(dict(step.headers or {}))
    return request


def _mark(response: httpx.Response, outcome: Outcome | None) -> None:
    setattr(response, _OUTCOME, outcome)


class AsyncRestClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` with the transport's :class:`AsyncRestAuth`; relative URLs
    land on the token's current instance (``await client.get("query", params={"q": soql})``),
    so they follow an instance move. Other keyword arguments are httpx's (``verify``,
    ``timeout``...)."""

    def __init__(
        self,
        core: Core,
        *,
        api_version: str = DEFAULT_API_VERSION,
        **options: Any,
    ) -> None:
        super().__init__(auth=AsyncRestAuth(core), **options)
        self._core = core  # never _transport: httpx's own attribute
        self.api_version = api_version
        """The version relative URLs go under: ``/services/data/v<api_version>/``."""

    def url(self, path: str = "") -> str:
        """The absolute URL of ``path`` on the token's current instance."""
        instance = self._core.refresher.token.instance_url
        assert instance is not None  # the transport refuses a token without one
        return rest_url(instance, path, self.api_version)

    def build_request(self, method: str, url: httpx.URL | str, **kwargs: Any) -> httpx.Request:
        """httpx's ``build_request``, with a relative ``url`` made absolute by :meth:`url`."""
        if isinstance(url, str):
            url = self.url(url)
        return super().build_request(method, url, **kwargs)
