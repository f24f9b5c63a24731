"""REST with the transport's token: a requests auth and session on the SOAP path's refresher.

Salesforce answers an expired session on REST with HTTP 401 ``INVALID_SESSION_ID`` and sends
no ``expires_in``, so requests-oauthlib never refreshes; a REST client that refreshes on its
own races the transport's refresher with the same refresh token, and under rotation the loser
revokes the whole token family. :class:`RestAuth` closes that gap: every REST request takes
the transport's current token, and an expired session is refreshed through the transport's
one refresher (one token request for every SOAP and REST caller, thread and worker sharing the
store) and the request resent once.

The decisions live once, in :func:`zeep_sfrefresh._callouts.token_request_flow` (also behind
callouts and the httpx auth of :mod:`zeep_sfrefresh._async_rest`); this module performs its
steps with requests, the way requests' ``HTTPDigestAuth`` resends from a response hook.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any, cast

import requests
from requests.auth import AuthBase

from ._apis import DEFAULT_API_VERSION
from ._callouts import TokenRequest, token_request_flow
from ._flow import Outcome, Send, Step, settle
from ._forks import reset_in_child

if TYPE_CHECKING:
    from ._core import Core

__all__ = ["RestAuth", "RestSession", "rest_outcome", "rest_url"]

_OUTCOME = "_zeep_sfrefresh_outcome"


def rest_outcome(response: object) -> Outcome | None:
    """What became of the session of the request that got ``response`` (a requests or httpx
    response from :meth:`~SalesforceTransport.rest_session` / ``rest_auth()``):
    ``sent`` (the answer did not say the session expired), ``refreshed``,
    ``expired_again`` (the resend met an expired session too; its 401 was returned as is),
    ``refreshed_not_resent`` (the body was a stream that cannot be sent twice), or None when
    the request carried no token (another host)."""
    value = getattr(response, _OUTCOME, None)
    return cast("Outcome | None", value)


def rest_url(instance_url: str, path: str, api_version: str = DEFAULT_API_VERSION) -> str:
    """An absolute URL for ``path`` on ``instance_url``: kept when already absolute, put on
    the instance when it starts with ``/``, else under ``/services/data/v<version>/``."""
    if path.startswith(("https://", "http://")):
        return path
    if path.startswith("/"):
        return instance_url.rstrip("/") + path
    return f"{instance_url.rstrip('/')}/services/data/v{api_version}/{path}"


def _body(request: requests.PreparedRequest) -> tuple[bytes | None, bool]:
    """The request's body as bytes, and whether it can be sent a second time."""
    body = request.body
    if body is None or isinstance(body, bytes):
        return body, True
    if isinstance(body, str):
        return body.encode("utf-8"), True
    return None, False  # a generator or file: read once, by the first send


class RestAuth(AuthBase):
    """``Authorization: Bearer <current token>`` on requests to the token's instance, and one
    refresh and resend on a 401 ``INVALID_SESSION_ID``. Requests to any other host go out
    untouched. Get one from ``transport.rest_auth()``; it holds no token of its own, so one
    auth serves every thread."""

    def __init__(self, core: Core) -> None:
        self._core = core

    def __repr__(self) -> str:
        return "RestAuth()"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body, resendable = _body(request)
        template = TokenRequest(
            request.method or "GET", request.url or "", body, dict(request.headers)
        )
        current, announced = self._core.refresher.begin()
        flow: Generator[Step, Any, tuple[requests.Response, Outcome | None]] = token_request_flow(
            template,
            current,
            self._core.policy,
            resendable=resendable,
            announced=announced,
        )
        first = next(flow)
        while not isinstance(first, Send):  # a join of a refresh under way
            first = flow.send(settle(first, self._core.refresher))
        _apply(request, first)
        handled = False

        def handle(response: requests.Response, **kwargs: Any) -> requests.Response:
            nonlocal handled
            if handled:  # a redirect's answer: the flow was about the first one
                return response
            handled = True
            return self._finish(flow, request, response, kwargs)

        request.register_hook("response", handle)  # type: ignore[no-untyped-call]
        return request

    def _finish(
        self,
        flow: Generator[Step, Any, tuple[requests.Response, Outcome | None]],
        request: requests.PreparedRequest,
        response: requests.Response,
        send_kwargs: dict[str, Any],
    ) -> requests.Response:
        result: object = response
        while True:
            try:
                step = flow.send(result)
            except StopIteration as done:
                final: requests.Response = done.value[0]
                setattr(final, _OUTCOME, done.value[1])
                return final
            if isinstance(step, Send):
                again = request.copy()
                _apply(again, step)
                response.content  # noqa: B018 - read it so the connection can be reused
                response.close()
                resent = response.connection.send(again, **send_kwargs)
                resent.history.append(response)
                resent.request = again
                response = resent
                result = resent
            else:
                result = settle(step, self._core.refresher)


def _apply(request: requests.PreparedRequest, step: Send) -> None:
    """Put the step's address and headers on ``request`` (its body stays as prepared)."""
    if step.address != request.url:
        request.prepare_url(step.address, None)
    for name in [name for name in request.headers if name.lower() == "authorization"]:
        del request.headers[name]
    request.headers.update(step.headers or {})


class RestSession(requests.Session):
    """A ``requests.Session`` whose auth is the transport's :class:`RestAuth`.

    Relative URLs land on the token's current instance, read at each request, so they follow
    an instance move: ``session.get("query", params={"q": soql})`` goes to
    ``<instance>/services/data/v66.0/query``, ``session.get("/services/apexrest/x")`` to
    ``<instance>/services/apexrest/x``. ``verify``, ``cert`` and ``proxies`` start as the
    transport's SOAP session's. Usable as simple-salesforce's ``session=``.
    """

    def __init__(self, core: Core, *, api_version: str = DEFAULT_API_VERSION) -> None:
        super().__init__()
        self._core = core
        self.api_version = api_version
        """The version relative URLs go under: ``/services/data/v<api_version>/``."""
        self.auth = RestAuth(core)
        """The transport's ``RestAuth``: the current token, refreshed on expiry."""
        reset_in_child(self)

    def _after_fork(self) -> None:
        # A forked child must not share the parent's pooled connections (gunicorn
        # --preload, Celery prefork); closing the child's copies leaves the parent's alone,
        # and the session opens new ones on its next request.
        self.close()

    def url(self, path: str = "") -> str:
        """The absolute URL of ``path`` on the token's current instance (see the class)."""
        instance = self._core.refresher.token.instance_url
        assert instance is not None  # the transport refuses a token without one
        return rest_url(instance, path, self.api_version)

    def request(
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        """``requests.Session.request``, with ``url`` made absolute by :meth:`url` first."""
        target = url.decode("utf-8") if isinstance(url, bytes) else url
        return super().request(method, self.url(target), *args, **kwargs)
