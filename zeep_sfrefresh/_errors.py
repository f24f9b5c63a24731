"""The exceptions zeep-sfrefresh raises.

They subclass ``zeep.exceptions.Error`` so code that already catches zeep's errors keeps
working. Their text never holds a token or a secret: messages are built from fixed wording
plus the public ``error`` / ``error_description`` fields of an OAuth answer and fault
strings, and whatever comes from an answer is masked by token shape first.

::

    zeep.exceptions.Error
    └── SfRefreshError
        ├── TokenRefreshError
        │   ├── RefreshInProgressError
        │   └── ReauthorizationRequiredError
        ├── TokenStoreError
        │   └── TokenStoreConflictError
        ├── TokenDestinationError (also a ValueError)
        ├── JwtAccessTokenError
        ├── LoginError
        └── SessionNotRefreshableError (also a zeep.exceptions.Fault)
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from zeep.exceptions import Error, Fault

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "JwtAccessTokenError",
    "LoginError",
    "ReauthorizationRequiredError",
    "RefreshInProgressError",
    "SessionNotRefreshableError",
    "SfRefreshError",
    "TokenDestinationError",
    "TokenRefreshError",
    "TokenStoreConflictError",
    "TokenStoreError",
]


class SfRefreshError(Error):
    """Base class of every exception zeep-sfrefresh raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)  # type: ignore[no-untyped-call]  # zeep is unannotated

    def copy(self) -> Self:
        """Return a new exception with the same fields, chained to this one.

        Callers that waited for a refresh which failed each get their own exception object,
        so threads never share (and mutate) one traceback.
        """
        twin = copy.copy(self)
        twin.__cause__ = self
        return twin


class TokenRefreshError(SfRefreshError):
    """Raised when a refresh did not yield a usable token; the SOAP call was not resent.

    ``error`` and ``description`` carry the OAuth ``error`` / ``error_description`` the
    token endpoint answered (``invalid_grant``, ...), or None when it answered none (a
    timeout, a refused connection, an HTML error page, a body that is not a token).
    ``status_code`` is the HTTP status of the answer when there was one, ``retry_after`` its
    ``Retry-After`` in seconds. ``unanswered`` is True when the request may have reached the
    token endpoint but no complete answer came back (a read timeout, a dropped connection,
    the deadline, an unreadable 200): the server may have issued, and rotated, a token never
    seen here. The underlying exception is chained as ``__cause__``.
    """

    def __init__(
        self,
        reason: str,
        *,
        error: str | None = None,
        description: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
        unanswered: bool = False,
    ) -> None:
        self.error = error
        """The OAuth ``error`` the token endpoint answered (``invalid_grant``, ...), or None."""
        self.description = description
        """The OAuth ``error_description`` the token endpoint answered, or None."""
        self.status_code = status_code
        """The HTTP status of the token endpoint's answer, when there was one."""
        self.retry_after = retry_after
        """The answer's ``Retry-After``, in seconds, when it had one."""
        self.unanswered = unanswered
        """True when the request may have reached the server but no complete answer came back."""
        message = reason
        if error:
            message += f": {error}" + (f" ({description})" if description else "")
        super().__init__(message)


class RefreshInProgressError(TokenRefreshError):
    """Raised when the token endpoint refuses a refresh because another request is using the
    same refresh token ("Token request is already being processed")."""


class ReauthorizationRequiredError(TokenRefreshError):
    """Raised when the refresh token can no longer be used: a person must authorise again.

    The token endpoint refused it for good (``invalid_grant``: expired, revoked, user
    inactive...), requests with it got no answer twice, or a worker that was using it never
    stored its result. It is never sent again, so later expiries raise this at once without
    a token request, until the store holds another refresh token (another worker or an
    operator replaced it) or the application hands over a new token
    (``transport.use_token(...)``).
    """


class TokenStoreError(SfRefreshError):
    """Raised when the token store cannot be locked, read or written in bounded time.

    Stores fail closed: without the store no refresh is made, because an uncoordinated
    refresh with a rotating refresh token can revoke the whole token family. When the write
    of a new token fails, the token is still used in this process and handed to
    ``token_updater`` before this is raised, so it is not lost; the next refresh writes it
    first.
    """


class TokenStoreConflictError(TokenStoreError):
    """Raised when a compare-and-set write finds a version other than the one it replaces."""


class TokenDestinationError(SfRefreshError, ValueError):
    """Raised before sending when the session id would go somewhere other than its token's
    instance, the instance is not https on an allowed Salesforce domain, or the token names
    no instance at all. Nothing is sent; the token itself is kept (its refresh token may be
    the only live one). Also a ``ValueError``: building a transport on a token without
    ``instance_url`` is bad input."""


class JwtAccessTokenError(SfRefreshError):
    """Raised before sending when the access token is a JWT, which Salesforce's SOAP APIs
    never accept (the connected app issues JWT-based access tokens; turn that off for SOAP)."""


class LoginError(SfRefreshError):
    """Raised when a login (browser, device code, imported auth URL) ends without a token
    with a refresh token; nothing was saved."""


class SessionNotRefreshableError(Fault, SfRefreshError):
    """Raised when Salesforce rejects even a freshly issued session: refreshing cannot help.

    IP-restricted sessions, a user without the API Enabled permission, a token the SOAP API
    does not take. It is a ``zeep.exceptions.Fault``, so ``except Fault`` keeps catching it;
    ``code`` is the fault's code and ``attempts`` says what was tried. Also raised, without
    a token request, while the circuit breaker cools down after repeated such answers.
    """

    def __init__(self, message: str, *, code: str | None = None, attempts: str = "") -> None:
        self.attempts = attempts
        """What was tried before giving up (refresh, resend), in words."""
        text = f"{message} ({attempts})" if attempts else message
        Fault.__init__(self, text, code=code)
