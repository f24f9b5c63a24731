"""Where new tokens come from: the refresh_token grant, made through the user's OAuth2Session.

requests-oauthlib does most of the work, but three of its habits need handling for
Salesforce, whose token answers carry no ``expires_in``:

* ``OAuth2Session.refresh_token()`` sends neither the session's ``client_id`` nor its
  secret by itself; they come from ``auto_refresh_kwargs`` (``client_id`` is added from
  the session when missing there), in the form body as Salesforce documents.
* A session opened with ``scope=[...]`` makes oauthlib raise ``Warning("Scope has
  changed ...")`` when Salesforce answers a wider scope string. By then the server has
  issued, and maybe rotated, the token: it rides on the warning and is kept, not lost.
* Every failure mode (OAuth error JSON, an HTML error page, a body that is not a token,
  a timeout, a refused connection) becomes one :class:`TokenRefreshError`.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import requests
from oauthlib.oauth2.rfc6749.errors import (
    InsecureTransportError,
    MissingTokenError,
    OAuth2Error,
)
from requests_oauthlib import OAuth2Session

from .errors import TokenRefreshError
from .tokens import Token, fingerprint

__all__ = ["DEFAULT_TOKEN_TIMEOUT", "Grant", "SessionGrant"]

DEFAULT_TOKEN_TIMEOUT = 30.0
"""Seconds a token request may take (connect and read each) before it is abandoned."""

logger = logging.getLogger(__name__)


class Grant(Protocol):
    """A source of new tokens. :meth:`fetch` makes one token request and no retry."""

    def fetch(self, current: Token) -> Token:
        """Return a new token to replace ``current``, or raise :class:`TokenRefreshError`."""
        ...


class SessionGrant:
    """The refresh_token grant, through ``OAuth2Session.refresh_token()``."""

    def __init__(self, oauth: OAuth2Session, *, timeout: float = DEFAULT_TOKEN_TIMEOUT) -> None:
        if not oauth.auto_refresh_url:
            raise ValueError(
                "the OAuth2Session has no auto_refresh_url; pass "
                "auto_refresh_url='https://login.salesforce.com/services/oauth2/token' "
                "(or your My Domain's token URL)"
            )
        if timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        self._oauth = oauth
        self._token_url: str = oauth.auto_refresh_url
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"SessionGrant(token_url={self._token_url!r}, timeout={self._timeout})"

    def _request_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self._oauth.auto_refresh_kwargs or {})
        if "client_id" not in kwargs and self._oauth.client_id:
            kwargs["client_id"] = self._oauth.client_id
        return kwargs

    def fetch(self, current: Token) -> Token:
        """Make one refresh_token request and return the new token (rotated or not)."""
        refresh_token = current.refresh_token
        if refresh_token is None:
            raise TokenRefreshError(
                "the token holds no refresh_token, so the expired session cannot be refreshed"
            )
        try:
            answer = self._oauth.refresh_token(
                self._token_url,
                refresh_token=refresh_token,
                timeout=self._timeout,
                **self._request_kwargs(),
            )
        except Warning as exc:
            answer = _token_from_scope_warning(exc)
        except InsecureTransportError as exc:
            raise TokenRefreshError(
                "oauthlib refuses a token URL that is not https "
                "(unless OAUTHLIB_INSECURE_TRANSPORT is set by the application)"
            ) from exc
        except MissingTokenError as exc:
            raise TokenRefreshError(
                "the token endpoint answered something that is not a token "
                "(an error page, or a body that is not token JSON)"
            ) from exc
        except OAuth2Error as exc:
            raise TokenRefreshError(
                "the token endpoint refused the refresh",
                error=exc.error,
                description=exc.description,
            ) from exc
        except requests.Timeout as exc:
            raise TokenRefreshError(
                f"the token request timed out (limit {self._timeout:g} s)"
            ) from exc
        except requests.RequestException as exc:
            raise TokenRefreshError(f"the token request failed ({type(exc).__name__})") from exc
        except (ValueError, TypeError) as exc:
            raise TokenRefreshError(
                f"the token endpoint's answer could not be read ({type(exc).__name__})"
            ) from exc
        try:
            token = Token(answer, previous=current)
        except ValueError as exc:
            raise TokenRefreshError(f"the token endpoint's answer is unusable: {exc}") from exc
        logger.info(
            "refreshed the Salesforce session: access token %s -> %s, refresh token %s",
            fingerprint(current.access_token),
            fingerprint(token.access_token),
            "rotated" if token.refresh_token != refresh_token else "kept",
        )
        return token


def _token_from_scope_warning(exc: Warning) -> Any:
    """Return the token oauthlib attached to its "Scope has changed" warning.

    oauthlib raises that warning after parsing a valid token whose scope string differs
    from the one the session asked for (Salesforce answers "api refresh_token" for a
    session opened with ``scope=["api"]``). The token is already issued: dropping it
    would lose a rotated refresh token for good.
    """
    token = getattr(exc, "token", None)
    if not isinstance(token, dict) or "access_token" not in token:
        raise TokenRefreshError(
            f"the token request raised a warning as an error ({type(exc).__name__})"
        ) from exc
    logger.info(
        "the token endpoint granted scope %s where the session asked for %s; keeping the token",
        getattr(exc, "new_scope", None),
        getattr(exc, "old_scope", None),
    )
    return token
