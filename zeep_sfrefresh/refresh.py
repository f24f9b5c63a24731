"""The one place a token is replaced: one refresh per expired session, however many callers.

Every SOAP call remembers the token it sent. When that call meets an expired session it
asks :meth:`Refresher.refresh_after` for a token newer than the one it sent. Inside the
lock the current token is compared with the sent one: if they differ, another caller has
already refreshed and the new token is simply returned (the caller resends, no token
request). Only a caller whose sent token is still current makes the token request.

Refresh tokens may rotate, and Salesforce rejects overlapping refreshes with one refresh
token, so two refreshes for one expiry are not just waste but an outage; hence the lock
around the compare and the request, after authlib's OAuth2 client.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .errors import TokenRefreshError
from .grants import Grant
from .tokens import Token

__all__ = ["Refresher"]

logger = logging.getLogger(__name__)


class Refresher:
    """Holds the current token and serialises its replacement.

    ``on_refresh`` (the OAuth2Session's ``token_updater``) is called with the new token
    dict inside the lock, so saved tokens are written in the order they were issued. If it
    raises, the new token is already in use in this process and the error propagates.
    """

    def __init__(
        self,
        grant: Grant,
        token: Token,
        *,
        on_refresh: Callable[[dict[str, Any]], object] | None = None,
    ) -> None:
        self._grant = grant
        self._token = token
        self._on_refresh = on_refresh
        self._lock = threading.Lock()
        self._last_failure: TokenRefreshError | None = None

    @property
    def token(self) -> Token:
        """The current token. Reading it takes no lock: tokens are replaced, never edited."""
        return self._token

    def refresh_after(self, sent: Token) -> Token:
        """Return a token newer than ``sent`` (the object the caller read from :attr:`token`).

        Three cases, decided under the lock:

        * the current token is ``sent`` itself: make the one token request;
        * it holds another access token: someone refreshed meanwhile, adopt it;
        * it holds the same access token in a new object: a refresh of that token failed
          after this caller sent it. The caller gets that failure (as a copy) instead of
          sending the same doomed request again; calls that read the token after the
          failure hold the new object and do try again.
        """
        with self._lock:
            current = self._token
            if current is not sent:
                if current.access_token != sent.access_token or self._last_failure is None:
                    return current
                raise self._last_failure.copy()
            try:
                fresh = self._grant.fetch(current)
            except TokenRefreshError as exc:
                self._last_failure = exc
                self._token = Token(current.data)  # same token, new object: marks the failure
                logger.warning("refreshing the Salesforce session failed: %s", exc)
                raise
            self._last_failure = None
            self._token = fresh
            if self._on_refresh is not None:
                self._on_refresh(fresh.as_dict())
            return fresh
