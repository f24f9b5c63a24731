"""zeep-sfrefresh: keep Salesforce SOAP calls made with zeep alive when the OAuth session expires.

Salesforce answers an expired session on its SOAP APIs with HTTP 500 and an
``INVALID_SESSION_ID`` fault, not HTTP 401, so OAuth clients that refresh on 401 never
refresh. :class:`SalesforceTransport` recognises that fault, refreshes the token through
the user's ``requests_oauthlib.OAuth2Session`` and resends the call once.
"""

from __future__ import annotations

from .apis import PARTNER_WSDL, SOAP_APIS, SoapApi
from .errors import SfRefreshError, TokenRefreshError
from .tokens import Token
from .transport import SalesforceTransport

__all__ = [
    "PARTNER_WSDL",
    "SOAP_APIS",
    "SalesforceTransport",
    "SfRefreshError",
    "SoapApi",
    "Token",
    "TokenRefreshError",
    "__version__",
]

__version__ = "0.1.0"
