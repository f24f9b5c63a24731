"""The exceptions zeep-sfrefresh raises.

They subclass ``zeep.exceptions.Error`` so code that already catches zeep's errors keeps
working. Their text never holds a token or a secret: messages are built here from fixed
wording plus the public ``error`` / ``error_description`` fields of an OAuth answer.
"""

from __future__ import annotations

from zeep.exceptions import Error

__all__ = ["SfRefreshError", "TokenRefreshError"]


class SfRefreshError(Error):
    """Base class of every exception zeep-sfrefresh raises."""


class TokenRefreshError(SfRefreshError):
    """Raised when a refresh did not yield a usable token; the SOAP call was not resent.

    ``error`` and ``description`` carry the OAuth ``error`` / ``error_description`` the
    token endpoint answered (``invalid_grant``, ...), or None when it answered none (a
    timeout, a refused connection, an HTML error page, a body that is not a token). The
    underlying exception is chained as ``__cause__``.
    """

    def __init__(
        self, reason: str, *, error: str | None = None, description: str | None = None
    ) -> None:
        self.reason = reason
        self.error = error
        self.description = description
        message = reason
        if error:
            message += f": {error}" + (f" ({description})" if description else "")
        super().__init__(message)  # type: ignore[no-untyped-call]  # zeep is unannotated

    def copy(self) -> TokenRefreshError:
        """Return a new exception with the same fields, chained to this one.

        Callers that waited for a refresh which failed each get their own exception
        object, so threads never share (and mutate) one traceback.
        """
        twin = TokenRefreshError(self.reason, error=self.error, description=self.description)
        twin.__cause__ = self
        return twin
