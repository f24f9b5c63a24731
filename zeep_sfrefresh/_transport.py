"""The zeep Transport: a thin synchronous shell around the shared core.

:class:`SalesforceTransport` performs, with requests, the steps its call policies ask for
(:mod:`zeep_sfrefresh._flow`); what it shares with the async transport (the core, the token,
masked logging) comes from :class:`~zeep_sfrefresh._base.TransportBase`.

Traffic is logged where zeep logs it (logger ``zeep.transports``, DEBUG), with session ids
masked; what happens to the session is logged under ``zeep_sfrefresh``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import requests
from lxml import etree
from zeep.transports import Transport

from ._apis import DEFAULT_API_VERSION
from ._base import TransportBase, scrub_answer
from ._core import check_session
from ._flow import Send, drive
from ._forks import reset_in_child

if TYPE_CHECKING:
    from requests_oauthlib import OAuth2Session
    from typing_extensions import Unpack

    from ._core import SalesforceOptions
    from ._grants import Grant
    from ._rest import RestAuth, RestSession

__all__ = ["SalesforceTransport"]


class SalesforceTransport(TransportBase, Transport):
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
    :param cache: as for ``zeep.Transport``.
    :param timeout: as for ``zeep.Transport``: seconds for WSDL and XSD downloads.
    :param operation_timeout: as for ``zeep.Transport``: seconds for a SOAP call.
    :param session: as for ``zeep.Transport``: a plain ``requests.Session`` for SOAP posts and
        WSDL downloads (proxies, CA bundle, pool size); never the ``OAuth2Session``.
    :param options: the Salesforce keyword arguments, :class:`SalesforceOptions` (``store``,
        ``route_to_instance``, ``token_timeout``, ``overlap_wait``, ``listener``,
        ``circuit_breaker``, ``allowed_domains``, ``redact_logs``, ``name``); both
        transports take the same.
    """

    def __init__(
        self,
        oauth: OAuth2Session | Grant,
        *,
        cache: Any = None,
        timeout: float = 300,
        operation_timeout: float | None = None,
        session: requests.Session | None = None,
        **options: Unpack[SalesforceOptions],
    ) -> None:
        check_session(session)
        self._init_core(oauth, options)
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
        response = drive(
            self._call_flow(address, envelope),
            lambda step: self.post(step.address, step.message or b"", headers),
            self._core.refresher,
        )
        assert isinstance(response, requests.Response)
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
        response, _ = drive(
            self._callout_flow(method, url, data, headers), self._request, self._core.refresher
        )
        assert isinstance(response, requests.Response)
        return response

    def rest_auth(self) -> RestAuth:
        """A ``requests`` auth on this transport's token and refresher, for REST calls:
        ``Authorization: Bearer`` on requests to the token's instance (never another host),
        one refresh through this transport's refresher and one resend on a 401
        ``INVALID_SESSION_ID``. See :mod:`zeep_sfrefresh._rest`."""
        from ._rest import RestAuth  # REST only: not imported with the transport

        return RestAuth(self._core)

    def rest_session(self, *, api_version: str = DEFAULT_API_VERSION) -> RestSession:
        """A ``requests.Session`` with :meth:`rest_auth`, whose relative URLs go to the
        token's current instance (``session.get("query", params={"q": soql})``); it starts
        with this transport's ``verify``, ``cert`` and ``proxies``."""
        from ._rest import RestSession

        session = RestSession(self._core, api_version=api_version)
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
