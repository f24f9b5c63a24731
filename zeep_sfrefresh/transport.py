"""The zeep Transport: a thin synchronous driver of :func:`zeep_sfrefresh.flow.soap_call`.

What the sync and async transports have in common (building the refresher, the token,
masked logging) is :class:`SalesforceTransportMixin`; each transport only performs the
I/O steps the call policy asks for.

Traffic is logged where zeep logs it (logger ``zeep.transports``, DEBUG), with session ids
masked; what happens to the session is logged under ``zeep_sfrefresh``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

import requests
from lxml import etree
from requests_oauthlib import OAuth2Session
from zeep.transports import Transport

from .breaker import DEFAULT_BREAKER, CircuitBreaker
from .errors import TokenDestinationError
from .events import RefreshListener
from .flow import (
    HttpResponse,
    Refresh,
    RestOutcome,
    Send,
    Step,
    TokenRequest,
    Verdict,
    callout_path,
    soap_call,
    token_request_flow,
)
from .forks import reset_in_child
from .grants import DEFAULT_TOKEN_TIMEOUT, Grant, SessionGrant
from .redaction import install_log_redaction, redact
from .refresh import DEFAULT_OVERLAP_WAIT, Refresher
from .rest import DEFAULT_API_VERSION, RestAuth, RestSession
from .routing import SALESFORCE_DOMAINS, DestinationPolicy
from .stores import FileTokenStore, MemoryTokenStore, TokenStore
from .tokens import Generation, Token

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["SalesforceTransport", "SalesforceTransportMixin"]

logger = logging.getLogger(__name__)


def _check_credential(oauth: object) -> None:
    """Refuse, with a TypeError that says what is accepted, anything but a credential."""
    if isinstance(oauth, OAuth2Session) or callable(getattr(oauth, "fetch", None)):
        return
    hint = ""
    if isinstance(oauth, Mapping):
        hint = " (a token dict goes in OAuth2Session(client_id, token=..., ...))"
    elif isinstance(oauth, requests.Session):
        hint = " (a plain requests.Session holds no token; pass it as session= if at all)"
    raise TypeError(
        "the first argument must be a requests_oauthlib.OAuth2Session holding the Salesforce "
        "token, or a credential object (JwtBearer, ClientCredentials, UsernamePassword, or "
        f"your own with a fetch() method), not {type(oauth).__name__}{hint}"
    )


def _check_session(session: object) -> None:
    if isinstance(session, OAuth2Session):
        raise TypeError(
            "session= takes a plain requests.Session: an OAuth2Session would put its Bearer "
            "token on every request, WSDL downloads included; pass the OAuth2Session as the "
            "first argument"
        )


def scrub_answer(response: requests.Response) -> requests.Response:
    """Mask session ids a SOAP error answer echoes, before zeep turns it into a ``Fault``.

    Salesforce fault strings quote session ids ("missing session key: 00D...!AR..."), and
    zeep puts the fault string in the exception's text. Successful answers are not read.
    """
    if response.status_code >= 300 and response.content:
        text = response.content.decode("utf-8", "replace")
        cleaned = redact(text)
        if cleaned != text:
            response._content = cleaned.encode("utf-8")
    return response


class SalesforceTransportMixin:
    """Token handling shared by :class:`SalesforceTransport` and the async transport."""

    # zeep's __del__ reads this; it must exist even when __init__ refuses its arguments.
    _close_session = False
    logger: logging.Logger
    route_to_instance: bool
    name: str
    _refresher: Refresher

    def _init_salesforce(
        self,
        oauth: OAuth2Session | Grant,
        *,
        store: TokenStore | None,
        route_to_instance: bool,
        token_timeout: float,
        overlap_wait: float,
        listener: RefreshListener | None,
        circuit_breaker: CircuitBreaker | None,
        allowed_domains: Iterable[str],
        redact_logs: bool,
        name: str,
    ) -> None:
        _check_credential(oauth)
        options: dict[str, Any] = {
            "listener": listener,
            "overlap_wait": overlap_wait,
            "breaker": circuit_breaker,
        }
        no_instance = ValueError(
            "the token has no instance_url, so there is no org to send its session to; "
            "pass the token dict Salesforce's token endpoint returned"
        )
        if isinstance(oauth, OAuth2Session):
            if not oauth.token:
                raise ValueError(
                    "the OAuth2Session has no token; create it with token=<token dict>"
                )
            seed = Token(oauth.token)
            if seed.instance_url is None:  # refuse before anything reaches a store
                raise no_instance
            if seed.refresh_token is None:
                raise ValueError(
                    "the OAuth2Session's token has no refresh_token, so its session could "
                    "never be refreshed; give the connected app the refresh_token (or "
                    "offline_access) scope and authorise again"
                )
            session = oauth
            self._refresher = Refresher(
                SessionGrant(session, timeout=token_timeout),
                store if store is not None else MemoryTokenStore.for_session(session),
                seed,
                on_refresh=session.token_updater,
                on_change=lambda token: setattr(session, "token", token.as_dict()),
                **options,
            )
        else:  # a credential object (JwtBearer, ClientCredentials, ...): no token yet
            self._refresher = Refresher(
                oauth,
                store if store is not None else MemoryTokenStore.for_session(oauth),
                None,
                **options,
            )
        if self._refresher.token.instance_url is None:
            raise no_instance
        self.route_to_instance = route_to_instance
        self.name = name
        self._policy = DestinationPolicy(
            tuple(allowed_domains),
            # The application's own switch for plain-http OAuth (tests on loopback); read,
            # never set, here.
            allow_loopback=bool(os.environ.get("OAUTHLIB_INSECURE_TRANSPORT")),
        )
        if redact_logs:
            install_log_redaction()

    @classmethod
    def from_token_file(
        cls, path: str | os.PathLike[str], *, client_secret: str | None = None, **options: Any
    ) -> Self:
        """A transport on a token file ``zeep-sfrefresh login`` (or ``token``) wrote.

        The file is the transport's :class:`FileTokenStore`, so every process using it
        shares one refresh; its settings say how to refresh (grant, client id, token URL).
        ``client_secret`` is needed only if the connected app requires one and the settings
        name no ``client_secret_file``. ``options`` are the transport's other keyword
        arguments. A :class:`TokenStoreError` says how to log in when the file has no token
        or no settings.
        """
        from .tokenfile import credential_from_file

        store = FileTokenStore(path)
        credential = credential_from_file(store, client_secret=client_secret)
        return cast(Any, cls)(credential, store=store, **options)  # type: ignore[no-any-return]

    @property
    def token(self) -> Token:
        """The token the next call will send (read-only; ``repr`` shows fingerprints only)."""
        return self._refresher.token

    def use_token(self, token: Mapping[str, Any]) -> None:
        """Start over with a token from a new authorisation (``ReauthorizationRequiredError``).

        The token is written to the store as a new version, so every transport and worker
        sharing the store uses it from its next expiry, this one from its next call.
        """
        new = Token(token)
        if new.instance_url is None:
            raise ValueError("the token has no instance_url, so there is no org to send it to")
        self._refresher.use_token(new)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(token={self.token!r}, store={self._refresher.store!r}, "
            f"route_to_instance={self.route_to_instance})"
        )

    def _call_flow(
        self, address: str, envelope: etree._Element
    ) -> Generator[Step, object, HttpResponse]:
        return soap_call(
            envelope,
            address,
            self._refresher.current,
            route=self.route_to_instance,
            policy=self._policy,
        )

    def _callout_flow(
        self,
        method: str,
        url: str,
        data: str | bytes | None,
        headers: Mapping[str, str] | None,
    ) -> Generator[Step, object, tuple[HttpResponse, RestOutcome | None]]:
        """A callout is a :class:`TokenRequest` like a REST request through the auth, with
        merge fields and Bearer on REST paths only: one flow for both."""
        path = callout_path(url, self.name)
        current = self._refresher.current
        instance = current.token.instance_url
        if instance is None:
            raise TokenDestinationError("the token has no instance_url to send its session to")
        request = TokenRequest(
            method,
            instance.rstrip("/") + path,
            data.encode("utf-8") if isinstance(data, str) else data,
            dict(headers or {}),
            merge_fields=True,
            bearer_paths_only=True,
        )
        return token_request_flow(request, current, self._policy)

    def _settle(self, step: Refresh | Verdict) -> Generation | None:
        """Perform a step that is not a send: a refresh (returns the new generation) or a
        verdict on the session sent."""
        if isinstance(step, Refresh):
            logger.debug("%s; this call waits for a newer session", step.reason)
            return self._refresher.refresh_after(step.sent, step.reason)
        self._refresher.judge(step.sent, step.usable, step.reason)
        return None

    async def _asettle(self, step: Refresh | Verdict) -> Generation | None:
        """:meth:`_settle` for coroutines: the refresh never blocks the event loop."""
        if isinstance(step, Refresh):
            logger.debug("%s; this call waits for a newer session", step.reason)
            return await self._refresher.arefresh_after(step.sent, step.reason)
        self._refresher.judge(step.sent, step.usable, step.reason)
        return None

    def _drive(self, flow: Generator[Step, object, Any], send: Callable[[Send], Any]) -> Any:
        """Perform the flow's steps synchronously; return what the flow returns."""
        step = next(flow)
        while True:
            result = send(step) if isinstance(step, Send) else self._settle(step)
            try:
                step = flow.send(result)
            except StopIteration as done:
                return done.value

    async def _adrive(
        self, flow: Generator[Step, object, Any], send: Callable[[Send], Awaitable[Any]]
    ) -> Any:
        """Perform the flow's steps with ``await``; the refresh never blocks the loop."""
        step = next(flow)
        while True:
            result = await send(step) if isinstance(step, Send) else await self._asettle(step)
            try:
                step = flow.send(result)
            except StopIteration as done:
                return done.value

    # Our own request logging, in place of zeep's and on zeep's logger (zeep.transports):
    # masked whether or not the redacting filter is installed (session ids, merge-field
    # tokens, Bearer headers never appear).
    def _log_post(self, address: str, message: bytes | str) -> None:
        if self.logger.isEnabledFor(logging.DEBUG):
            text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
            self.logger.debug("HTTP Post to %s:\n%s", address, redact(text))

    def _log_answer(self, address: str, status_code: int, content: bytes) -> None:
        if self.logger.isEnabledFor(logging.DEBUG):
            text = redact(content.decode("utf-8", "replace"))
            self.logger.debug("HTTP Response from %s (status: %d):\n%s", address, status_code, text)


class SalesforceTransport(SalesforceTransportMixin, Transport):
    """A ``zeep.Transport`` that keeps Salesforce SOAP calls alive across session expiry.

    Every SOAP envelope gets ``SessionHeader/sessionId`` = the current access token and is
    sent to the token's ``instance_url``. When Salesforce answers ``INVALID_SESSION_ID``
    the token is refreshed through ``oauth`` (one token request however many threads or
    workers hit the expiry), ``oauth.token_updater`` is called with the new token, and the
    call is resent once.

    SOAP traffic and WSDL downloads go through ``session`` (a plain ``requests.Session``),
    never through ``oauth``, which would put a Bearer header on every request, to any host.

    :param oauth: the ``OAuth2Session`` holding the Salesforce token (it needs
        ``auto_refresh_url`` and, in ``auto_refresh_kwargs``, the client secret if the
        connected app requires one), or a credential object: :class:`JwtBearer`,
        :class:`ClientCredentials`, :class:`UsernamePassword`. A credential object gets its
        first token when the transport is built, unless the store already holds one.
    :param store: where the token is shared with other transports and processes
        (:class:`FileTokenStore`, :class:`RedisTokenStore`, your own :class:`TokenStore`).
        When it already holds a token, that token wins over the session's; when it is empty,
        the session's token seeds it. Default: an in-memory store shared by every transport
        built on the same ``oauth``.
    :param route_to_instance: send ``/services/Soap/...`` requests to the token's
        ``instance_url`` whatever host the WSDL names (default). Turn off to post to the
        WSDL's address as is.
    :param token_timeout: seconds a token request may take before it fails (credential
        objects carry their own ``timeout``).
    :param overlap_wait: when the token endpoint says another request is already refreshing
        with this refresh token, seconds to wait for that worker's token to reach the store.
    :param listener: called with a :class:`RefreshEvent` for each refresh, adoption,
        failure, rejected session and instance move; never given a token.
    :param circuit_breaker: after ``threshold`` refreshed sessions in a row are rejected at
        once, no token request for ``cooldown`` seconds (None turns this off).
    :param allowed_domains: domains whose hosts may be a token's instance (the session id is
        only ever sent to that instance, over https). Loopback http instances are allowed
        only when the application set ``OAUTHLIB_INSECURE_TRANSPORT``.
    :param redact_logs: put :class:`RedactingFilter` on the loggers of requests-oauthlib,
        oauthlib, zeep, urllib3 and httpx, which log tokens and secrets at DEBUG.
    :param name: the Named Credential name this transport answers to in :meth:`callout`
        URLs (``callout:NAME/...``).
    :param cache, timeout, operation_timeout, session: as for ``zeep.Transport``.
    """

    def __init__(
        self,
        oauth: OAuth2Session | Grant,
        *,
        store: TokenStore | None = None,
        route_to_instance: bool = True,
        token_timeout: float = DEFAULT_TOKEN_TIMEOUT,
        overlap_wait: float = DEFAULT_OVERLAP_WAIT,
        listener: RefreshListener | None = None,
        circuit_breaker: CircuitBreaker | None = DEFAULT_BREAKER,
        allowed_domains: Iterable[str] = SALESFORCE_DOMAINS,
        redact_logs: bool = True,
        name: str = "",
        cache: Any = None,
        timeout: float = 300,
        operation_timeout: float | None = None,
        session: requests.Session | None = None,
    ) -> None:
        _check_session(session)
        self._init_salesforce(
            oauth,
            store=store,
            route_to_instance=route_to_instance,
            token_timeout=token_timeout,
            overlap_wait=overlap_wait,
            listener=listener,
            circuit_breaker=circuit_breaker,
            allowed_domains=allowed_domains,
            redact_logs=redact_logs,
            name=name,
        )
        super().__init__(  # type: ignore[no-untyped-call]  # zeep is unannotated
            cache=cache, timeout=timeout, operation_timeout=operation_timeout, session=session
        )
        reset_in_child(self)

    def _after_fork(self) -> None:
        # A forked child must not use the parent's pooled connections: both processes would
        # read and write one socket. Closing the child's copies leaves the parent's alone.
        self.session.close()

    def post_xml(
        self, address: str, envelope: etree._Element, headers: dict[str, str]
    ) -> requests.Response:
        """Send ``envelope`` with the current session id; refresh and resend once if it expired."""
        response: requests.Response = self._drive(
            self._call_flow(address, envelope),
            lambda step: self.post(step.address, step.message or b"", headers),
        )
        return scrub_answer(response)

    def callout(
        self,
        method: str,
        url: str,
        *,
        data: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Make a Named Credential style callout, as Apex does with ``callout:NAME/path``.

        ``callout:NAME`` (NAME = this transport's ``name``) is the token's instance;
        ``{!$Credential.OAuthToken}`` in ``data`` (XML-escaped) or a header value is the
        current access token; ``/services/data/``, ``/services/apexrest/`` and userinfo paths
        get ``Authorization: Bearer``. An expired session (a SOAP ``INVALID_SESSION_ID`` fault,
        a REST 401 ``INVALID_SESSION_ID``) leads to one refresh and one resend with the merge
        field filled again; the answer is returned as is, whatever its status.
        """
        response: requests.Response
        response, _ = self._drive(self._callout_flow(method, url, data, headers), self._request)
        return response

    def rest_auth(self) -> RestAuth:
        """A ``requests`` auth on this transport's token and refresher, for REST calls:
        ``Authorization: Bearer`` on requests to the token's instance (never another host),
        one refresh through this transport's refresher and one resend on a 401
        ``INVALID_SESSION_ID``. See :mod:`zeep_sfrefresh.rest`."""
        return RestAuth(self)

    def rest_session(self, *, api_version: str = DEFAULT_API_VERSION) -> RestSession:
        """A ``requests.Session`` with :meth:`rest_auth`, whose relative URLs go to the
        token's current instance (``session.get("query", params={"q": soql})``); it starts
        with this transport's ``verify``, ``cert`` and ``proxies``."""
        session = RestSession(self, api_version=api_version)
        session.verify = self.session.verify
        session.cert = self.session.cert
        session.proxies = dict(self.session.proxies)
        return session

    def _request(self, step: Send) -> requests.Response:
        self._log_post(step.address, step.message or b"")
        response: requests.Response = self.session.request(
            step.method,
            step.address,
            data=step.message,
            headers=dict(step.headers or {}),
            timeout=self.operation_timeout,
        )
        self._log_answer(step.address, response.status_code, response.content)
        return response

    def post(
        self, address: str, message: bytes | str, headers: dict[str, str]
    ) -> requests.Response:
        """POST like ``zeep.Transport.post``, but debug-log envelopes with session ids masked."""
        self._log_post(address, message)
        response: requests.Response = self.session.post(
            address, data=message, headers=headers, timeout=self.operation_timeout
        )
        self._log_answer(address, response.status_code, response.content)
        return response
