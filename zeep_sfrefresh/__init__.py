"""zeep-sfrefresh: keep Salesforce SOAP calls made with zeep alive when the OAuth session expires.

Salesforce answers an expired session on its SOAP APIs with HTTP 500 and an
``INVALID_SESSION_ID`` fault, not HTTP 401, so OAuth clients that refresh on 401 never
refresh. :class:`SalesforceTransport` recognises that fault, refreshes the token through
the user's ``requests_oauthlib.OAuth2Session`` and resends the call once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

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
from ._clients import connect, connect_async
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
from ._redaction import RedactingFilter, install_log_redaction, remove_log_redaction
from ._rest import RestAuth, RestSession, rest_outcome
from ._routing import SALESFORCE_DOMAINS
from ._stores import FileTokenStore, MemoryTokenStore, RefreshIntent, StoredToken, TokenStore
from ._tokenfile import TokenFileSettings
from ._tokens import Token, fingerprint
from ._transport import SalesforceTransport

if TYPE_CHECKING:
    from ._async_rest import AsyncRestAuth, AsyncRestClient
    from ._async_transport import AsyncSalesforceTransport
    from ._redis_store import RedisTokenStore

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

# A library leaves output to the application: no "No handlers could be found" last-resort
# printing of our warnings when logging is not configured.
logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    # These need optional extras ([async]: httpx; [redis]: redis): import them when asked for.
    if name == "AsyncSalesforceTransport":
        from ._async_transport import AsyncSalesforceTransport

        return AsyncSalesforceTransport
    if name in ("AsyncRestAuth", "AsyncRestClient"):
        from . import _async_rest

        return getattr(_async_rest, name)
    if name == "RedisTokenStore":
        from ._redis_store import RedisTokenStore

        return RedisTokenStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
