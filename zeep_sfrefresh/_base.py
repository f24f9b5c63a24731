"""What the sync and async transports have in common: a base they both import, side by side.

:class:`TransportBase` holds the :class:`~zeep_sfrefresh._core.Core` and everything that is
not I/O: the token, ``use_token``, the policies a call or a callout runs on, building from a
token file, and masked logging of traffic. Each transport adds only how it sends.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any, cast

import requests
from lxml import etree

from ._core import Core, SalesforceOptions, build_core
from ._flow import HttpResponse, Outcome, Step, check_sendable, soap_call
from ._redaction import redact
from ._stores import FileTokenStore
from ._tokens import Token

if TYPE_CHECKING:
    from requests_oauthlib import OAuth2Session
    from typing_extensions import Self

    from ._grants import Grant

__all__ = ["TransportBase", "scrub_answer"]


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


class TransportBase:
    """The token side of a Salesforce transport (see the module docstring)."""

    # zeep's __del__ reads this; it must exist even when __init__ refuses its arguments.
    _close_session = False
    logger: logging.Logger
    """zeep's ``zeep.transports`` logger, where SOAP requests and answers are logged (masked)."""
    _core: Core

    def _init_core(self, oauth: OAuth2Session | Grant, options: SalesforceOptions) -> None:
        self._core = build_core(oauth, options)

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
        from ._tokenfile import credential_from_file

        store = FileTokenStore(path)
        credential = credential_from_file(store, client_secret=client_secret)
        return cast("Self", cast(Any, cls)(credential, store=store, **options))

    @property
    def route_to_instance(self) -> bool:
        """Whether SOAP paths go to the token's instance whatever host the WSDL names."""
        return self._core.route_to_instance

    @property
    def name(self) -> str:
        """The Named Credential name :meth:`callout` URLs use (``callout:NAME/...``)."""
        return self._core.name

    @property
    def token(self) -> Token:
        """The token the next call will send (read-only; ``repr`` shows fingerprints only)."""
        return self._core.refresher.token

    def use_token(self, token: Mapping[str, Any]) -> None:
        """Start over with a token from a new authorisation (``ReauthorizationRequiredError``).

        The token is written to the store as a new version, so every transport and worker
        sharing the store uses it from its next expiry, this one from its next call.
        """
        new = Token(token)
        check_sendable(new, soap=False)  # a token without instance_url has no org to go to
        self._core.refresher.use_token(new)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(token={self.token!r}, "
            f"store={self._core.refresher.store!r}, "
            f"route_to_instance={self.route_to_instance})"
        )

    def _call_flow(
        self, address: str, envelope: etree._Element
    ) -> Generator[Step, Any, HttpResponse]:
        core = self._core
        current, announced = core.refresher.begin()
        return soap_call(
            envelope,
            address,
            current,
            route=core.route_to_instance,
            policy=core.policy,
            announced=announced,
        )

    def _callout_flow(
        self,
        method: str,
        url: str,
        data: str | bytes | None,
        headers: Mapping[str, str] | None,
    ) -> Generator[Step, Any, tuple[Any, Outcome | None]]:
        """A callout is a :class:`TokenRequest` like a REST request through the auth, with
        merge fields and Bearer on REST paths only: one policy for both."""
        # Here, not at the top: a transport that makes no callout never loads them.
        from ._callouts import TokenRequest, callout_path, token_request_flow

        path = callout_path(url, self.name)
        current, announced = self._core.refresher.begin()
        instance = check_sendable(current.token, soap=False)
        request = TokenRequest(
            method,
            instance.rstrip("/") + path,
            data.encode("utf-8") if isinstance(data, str) else data,
            dict(headers or {}),
            merge_fields=True,
            bearer_paths_only=True,
        )
        return token_request_flow(request, current, self._core.policy, announced=announced)

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
