"""zeep-sfrefresh: keep Salesforce SOAP calls made with zeep alive when the OAuth session expires.

Salesforce answers an expired session on its SOAP APIs with HTTP 500 and an
``INVALID_SESSION_ID`` fault, not HTTP 401, so OAuth clients that refresh on 401 never
refresh. :class:`SalesforceTransport` recognises that fault, refreshes the token through
the user's ``requests_oauthlib.OAuth2Session`` and resends the call once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .apis import (
    APEX_WSDL,
    ENTERPRISE_WSDL,
    METADATA_WSDL,
    PARTNER_WSDL,
    SOAP_APIS,
    TOOLING_WSDL,
    SoapApi,
)
from .breaker import CircuitBreaker
from .clients import connect, connect_async
from .errors import (
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
from .events import RefreshEvent, RefreshListener
from .grants import ClientCredentials, Grant, JwtBearer, SessionGrant, UsernamePassword
from .records import fields, keep_field_names, sobject
from .redaction import RedactingFilter, install_log_redaction, remove_log_redaction
from .routing import SALESFORCE_DOMAINS
from .stores import FileTokenStore, MemoryTokenStore, RefreshIntent, StoredToken, TokenStore
from .tokens import Token
from .transport import SalesforceTransport

if TYPE_CHECKING:
    from .async_transport import AsyncSalesforceTransport
    from .redis_store import RedisTokenStore

__all__ = [
    "APEX_WSDL",
    "ENTERPRISE_WSDL",
    "METADATA_WSDL",
    "PARTNER_WSDL",
    "SALESFORCE_DOMAINS",
    "SOAP_APIS",
    "TOOLING_WSDL",
    "AsyncSalesforceTransport",
    "CircuitBreaker",
    "ClientCredentials",
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
    "SalesforceTransport",
    "SessionGrant",
    "SessionNotRefreshableError",
    "SfRefreshError",
    "SoapApi",
    "StoredToken",
    "Token",
    "TokenDestinationError",
    "TokenRefreshError",
    "TokenStore",
    "TokenStoreConflictError",
    "TokenStoreError",
    "UsernamePassword",
    "__version__",
    "connect",
    "connect_async",
    "fields",
    "install_log_redaction",
    "keep_field_names",
    "remove_log_redaction",
    "sobject",
]

__version__ = "0.1.0"

# A library leaves output to the application: no "No handlers could be found" last-resort
# printing of our warnings when logging is not configured.
logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    # These need optional extras ([async]: httpx; [redis]: redis): import them when asked for.
    if name == "AsyncSalesforceTransport":
        from .async_transport import AsyncSalesforceTransport

        return AsyncSalesforceTransport
    if name == "RedisTokenStore":
        from .redis_store import RedisTokenStore

        return RedisTokenStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
