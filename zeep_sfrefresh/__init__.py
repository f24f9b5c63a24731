"""zeep-sfrefresh: keep Salesforce SOAP calls made with zeep alive when the OAuth session expires.

Salesforce answers an expired session on its SOAP APIs with HTTP 500 and an
``INVALID_SESSION_ID`` fault, not HTTP 401, so OAuth clients that refresh on 401 never
refresh. :class:`SalesforceTransport` recognises that fault, refreshes the token through
the user's ``requests_oauthlib.OAuth2Session`` and resends the call once.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

# What a SalesforceTransport needs loads now; the rest (login flows, token files, records,
# connect(), REST, the async side, Redis) on first use, through __getattr__ below, so that
# ``import zeep_sfrefresh`` costs little more than ``import zeep``.
from ._apis import (
    APEX_WSDL,
    ENTERPRISE_WSDL,
    METADATA_WSDL,
    PARTNER_WSDL,
    SOAP_APIS,
    TOOLING_WSDL,
    SoapApi,
)
from ._breaker import CircuitBreaker
from ._core import SalesforceOptions
from ._errors import (
    JwtAccessTokenError,
    LoginError,
    ReauthorizationRequiredError,
    RefreshInProgressError,
    SessionNotRefreshableError,
    SfRefreshError,
    TokenDestinationError,
    TokenRefreshError,
    TokenStoreConflictError,
    TokenStoreError,
)
from ._events import RefreshEvent, RefreshListener
from ._flow import Outcome as RestOutcome
from ._grants import ClientCredentials, Grant, JwtBearer, SessionGrant, UsernamePassword
from ._redaction import RedactingFilter, install_log_redaction, remove_log_redaction
from ._routing import SALESFORCE_DOMAINS
from ._stores import FileTokenStore, MemoryTokenStore, RefreshIntent, StoredToken, TokenStore
from ._tokens import Token, fingerprint
from ._transport import SalesforceTransport

if TYPE_CHECKING:
    from ._async_rest import AsyncRestAuth, AsyncRestClient
    from ._async_transport import AsyncSalesforceTransport
    from ._clients import connect, connect_async
    from ._login import (
        DeviceLogin,
        SfdxAuthUrl,
        finish_device_login,
        parse_sfdx_auth_url,
        redeem_refresh_token,
        start_device_login,
        web_login,
    )
    from ._records import fields, keep_field_names, sobject
    from ._redis_store import RedisTokenStore
    from ._rest import RestAuth, RestSession, rest_outcome
    from ._tokenfile import TokenFileSettings

__all__ = [
    "APEX_WSDL",
    "ENTERPRISE_WSDL",
    "METADATA_WSDL",
    "PARTNER_WSDL",
    "SALESFORCE_DOMAINS",
    "SOAP_APIS",
    "TOOLING_WSDL",
    "AsyncRestAuth",
    "AsyncRestClient",
    "AsyncSalesforceTransport",
    "CircuitBreaker",
    "ClientCredentials",
    "DeviceLogin",
    "FileTokenStore",
    "Grant",
    "JwtAccessTokenError",
    "JwtBearer",
    "LoginError",
    "MemoryTokenStore",
    "ReauthorizationRequiredError",
    "RedactingFilter",
    "RedisTokenStore",
    "RefreshEvent",
    "RefreshInProgressError",
    "RefreshIntent",
    "RefreshListener",
    "RestAuth",
    "RestOutcome",
    "RestSession",
    "SalesforceOptions",
    "SalesforceTransport",
    "SessionGrant",
    "SessionNotRefreshableError",
    "SfRefreshError",
    "SfdxAuthUrl",
    "SoapApi",
    "StoredToken",
    "Token",
    "TokenDestinationError",
    "TokenFileSettings",
    "TokenRefreshError",
    "TokenStore",
    "TokenStoreConflictError",
    "TokenStoreError",
    "UsernamePassword",
    "__version__",
    "connect",
    "connect_async",
    "fields",
    "fingerprint",
    "finish_device_login",
    "install_log_redaction",
    "keep_field_names",
    "parse_sfdx_auth_url",
    "redeem_refresh_token",
    "remove_log_redaction",
    "rest_outcome",
    "sobject",
    "start_device_login",
    "web_login",
]

__version__ = "0.1.0"
"""The version of this package."""

# A library leaves output to the application: no "No handlers could be found" last-resort
# printing of our warnings when logging is not configured.
logging.getLogger(__name__).addHandler(logging.NullHandler())


_LAZY = {
    # [async] extra (httpx)
    "AsyncRestAuth": "._async_rest",
    "AsyncRestClient": "._async_rest",
    "AsyncSalesforceTransport": "._async_transport",
    # [redis] extra
    "RedisTokenStore": "._redis_store",
    # one-off setup: the login flows (http.server, secrets) and token files
    "DeviceLogin": "._login",
    "SfdxAuthUrl": "._login",
    "finish_device_login": "._login",
    "parse_sfdx_auth_url": "._login",
    "redeem_refresh_token": "._login",
    "start_device_login": "._login",
    "web_login": "._login",
    "TokenFileSettings": "._tokenfile",
    # helpers around the client, and REST on the transport's token
    "connect": "._clients",
    "connect_async": "._clients",
    "fields": "._records",
    "keep_field_names": "._records",
    "sobject": "._records",
    "RestAuth": "._rest",
    "RestSession": "._rest",
    "rest_outcome": "._rest",
}
"""Public names imported on first access (``from zeep_sfrefresh import web_login`` too)."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
