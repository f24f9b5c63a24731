"""Where new tokens come from: one class per Salesforce OAuth grant, all on requests-oauthlib.

* :class:`SessionGrant`: the refresh_token grant through the user's own ``OAuth2Session``.
* :class:`JwtBearer`: the JWT bearer grant (server to server, a certificate on the app).
* :class:`ClientCredentials`: the client-credentials grant (My Domain token URL).
* :class:`UsernamePassword`: the username-password grant (discouraged; blocked by default
  in new orgs).

The last three are credential objects: pass one to the transport instead of an
``OAuth2Session``. They hold no refresh token; "refreshing" asks for a brand-new token.

Every request goes through :func:`zeep_sfrefresh._exchange.request_token`: a total deadline,
and every failure mode (OAuth error JSON, an HTML error page, a body that is not a token, a
timeout, a refused connection) becomes one :class:`TokenRefreshError`, whatever the grant.
Salesforce token answers carry no ``expires_in``, so requests-oauthlib never refreshes on its
own; and a session opened with ``scope=[...]`` makes oauthlib raise ``Warning("Scope has
changed")`` when Salesforce answers a wider scope string, after the server issued (and maybe
rotated) the token, which rides on the warning and is kept.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from ._checks import check_seconds
from ._errors import RefreshInProgressError, TokenRefreshError
from ._exchange import TOKEN_PATH, request_token
from ._forks import reset_in_child
from ._tokens import Token, fingerprint

if TYPE_CHECKING:
    # At run time imported where a session is made: ``import zeep_sfrefresh`` leaves
    # requests-oauthlib (and all of oauthlib) to the first credential object's token request.
    from requests_oauthlib import OAuth2Session

__all__ = [
    "DEFAULT_LOGIN_URL",
    "DEFAULT_TOKEN_TIMEOUT",
    "ClientCredentials",
    "Grant",
    "JwtBearer",
    "SessionGrant",
    "UsernamePassword",
]

DEFAULT_TOKEN_TIMEOUT = 30.0
"""Seconds a whole token request may take, connect to last byte, before it is abandoned."""

DEFAULT_LOGIN_URL = "https://login.salesforce.com"
"""Production login host; sandboxes use https://test.salesforce.com, or use your My Domain."""

logger = logging.getLogger(__name__)

_OVERLAP_DESCRIPTIONS = ("already being processed", "expired authorization code")


class Grant(Protocol):
    """A source of new tokens. :meth:`fetch` makes one token request and no retry."""

    def fetch(self, current: Token | None) -> Token:
        """Return a token to replace ``current`` (None: the first one), or raise
        :class:`TokenRefreshError`."""
        ...


class SessionGrant:
    """The refresh_token grant, through ``OAuth2Session.refresh_token()``.

    ``OAuth2Session.refresh_token()`` sends neither the session's ``client_id`` nor its
    secret by itself: they come from ``auto_refresh_kwargs`` (``client_id`` is added from the
    session when missing there), in the form body as Salesforce documents. The token URL is
    the session's ``auto_refresh_url``, read at each request, so correcting it on the session
    takes effect.
    """

    def __init__(self, oauth: OAuth2Session, *, timeout: float = DEFAULT_TOKEN_TIMEOUT) -> None:
        self._oauth = oauth
        self._token_url()  # refuse a session without a token URL now, not at the first expiry
        self.timeout = check_seconds("timeout", timeout)
        """Seconds the whole token request may take, connect to last byte."""
        reset_in_child(self)

    def _after_fork(self) -> None:
        # Pooled keep-alive connections to the token endpoint belong to the parent.
        self._oauth.close()

    def __repr__(self) -> str:
        return f"SessionGrant(token_url={self._oauth.auto_refresh_url!r}, timeout={self.timeout:g})"

    def _token_url(self) -> str:
        url = self._oauth.auto_refresh_url
        if not url:
            raise ValueError(
                "the OAuth2Session has no auto_refresh_url; pass "
                f"auto_refresh_url='https://login.salesforce.com{TOKEN_PATH}' "
                "(or your My Domain's token URL)"
            )
        return str(url)

    def _request_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self._oauth.auto_refresh_kwargs or {})
        if "client_id" not in kwargs and self._oauth.client_id:
            kwargs["client_id"] = self._oauth.client_id
        return kwargs

    def fetch(self, current: Token | None) -> Token:
        """Make one refresh_token request and return the new token (rotated or not).

        Raises :class:`RefreshInProgressError` when Salesforce says another request is
        using the same refresh token right now.
        """
        refresh_token = current.refresh_token if current is not None else None
        if current is None or refresh_token is None:
            raise TokenRefreshError(
                "the token holds no refresh_token, so the expired session cannot be refreshed"
            )
        url = self._token_url()
        try:
            token = request_token(
                lambda watcher: self._oauth.refresh_token(
                    url,
                    refresh_token=refresh_token,
                    timeout=self.timeout,
                    auth=watcher,
                    **self._request_kwargs(),
                ),
                url=url,
                inner_auth=self._oauth.auth,
                timeout=self.timeout,
                previous=current,
                verb="refresh",
            )
        except TokenRefreshError as exc:
            description = (exc.description or "").lower()
            if exc.error == "invalid_grant" and any(
                t in description for t in _OVERLAP_DESCRIPTIONS
            ):
                raise RefreshInProgressError(
                    "another request is refreshing with this refresh token",
                    error=exc.error,
                    description=exc.description,
                    status_code=exc.status_code,
                ) from exc
            raise
        logger.info(
            "refreshed the Salesforce session: access token %s -> %s, refresh token %s",
            fingerprint(current.access_token),
            fingerprint(token.access_token),
            "rotated" if token.refresh_token != refresh_token else "kept",
        )
        return token


class _FetchTokenGrant:
    """A grant that asks ``OAuth2Session.fetch_token`` for a brand-new token each time."""

    grant_name = ""

    def __init__(self, token_url: str, timeout: float) -> None:
        if not token_url.startswith(("https://", "http://")):
            raise ValueError("token_url must be an http(s) URL")
        self.token_url = token_url
        """The OAuth token endpoint: ``<login_url>/services/oauth2/token`` unless given."""
        self.timeout = check_seconds("timeout", timeout)
        """Seconds the whole token request may take, connect to last byte."""

    def _session(self) -> OAuth2Session:
        raise NotImplementedError

    def _fetch_kwargs(self) -> dict[str, Any]:
        raise NotImplementedError

    def fetch(self, current: Token | None) -> Token:
        """Make one token request with the stored credentials and return the new token."""
        session = self._session()  # a fresh one per request: nothing shared between threads
        kwargs = self._fetch_kwargs()
        # Passing an auth (the watcher) also keeps requests-oauthlib from adding a Basic
        # header: client credentials, where a grant needs them, go in the body.
        token = request_token(
            lambda watcher: session.fetch_token(
                self.token_url, timeout=self.timeout, auth=watcher, **kwargs
            ),
            url=self.token_url,
            inner_auth=None,
            timeout=self.timeout,
            previous=current,
            verb=f"{self.grant_name} grant",
        )
        logger.info(
            "obtained a Salesforce session with the %s grant: access token %s",
            self.grant_name,
            fingerprint(token.access_token),
        )
        return token


def _token_url(login_url: str, token_url: str | None) -> str:
    return token_url or login_url.rstrip("/") + TOKEN_PATH


class JwtBearer(_FetchTokenGrant):
    """The OAuth 2.0 JWT bearer grant: Salesforce's usual server-to-server credential.

    Each token request carries a new RS256 assertion (``iss`` = the connected app's client
    id, ``sub`` = the Salesforce username, ``aud`` = the login host, ``exp`` = ``lifetime``
    seconds ahead, at most 3 minutes as Salesforce requires) signed with ``private_key``,
    the PEM key whose certificate is uploaded to the connected app. There is no refresh
    token: on expiry a new assertion buys a new session. Needs the ``[jwt]`` extra.

    :param login_url: ``https://login.salesforce.com``, ``https://test.salesforce.com`` or
        your My Domain URL; the token URL is ``<login_url>/services/oauth2/token``.
    :param audience: the ``aud`` claim; defaults to ``login_url``.
    """

    grant_name = "JWT bearer"
    """How errors and logs name this grant."""

    def __init__(
        self,
        client_id: str,
        username: str,
        private_key: str | bytes,
        *,
        login_url: str = DEFAULT_LOGIN_URL,
        audience: str | None = None,
        token_url: str | None = None,
        lifetime: float = 180.0,
        timeout: float = DEFAULT_TOKEN_TIMEOUT,
    ) -> None:
        super().__init__(_token_url(login_url, token_url), timeout)
        try:
            import jwt  # noqa: F401 - oauthlib signs the assertion with pyjwt
        except ImportError as exc:
            raise ImportError("JwtBearer needs pyjwt: pip install 'zeep-sfrefresh[jwt]'") from exc
        if not 0 < lifetime <= 180:
            raise ValueError("lifetime must be between 0 and 180 seconds (Salesforce's limit)")
        self.client_id = client_id
        """The connected app's consumer key: the assertion's ``iss``."""
        self.username = username
        """The Salesforce username the token is for: the assertion's ``sub``."""
        self.audience = audience or login_url.rstrip("/")
        """The assertion's ``aud``: the login host, unless given."""
        self.lifetime = lifetime
        """Seconds from an assertion's issue to its ``exp`` (at most 180)."""
        key = private_key.decode("utf-8") if isinstance(private_key, bytes) else private_key
        if "PRIVATE KEY" not in key:
            raise ValueError("private_key must be a PEM private key (-----BEGIN ... PRIVATE KEY)")
        self._private_key = key

    def __repr__(self) -> str:
        return (
            f"JwtBearer(client_id={self.client_id!r}, username={self.username!r}, "
            f"token_url={self.token_url!r}, private_key=<{fingerprint(self._private_key)}>)"
        )

    def _session(self) -> OAuth2Session:
        from oauthlib.oauth2 import ServiceApplicationClient
        from requests_oauthlib import OAuth2Session

        client = ServiceApplicationClient(
            self.client_id,
            private_key=self._private_key,
            subject=self.username,
            issuer=self.client_id,
            audience=self.audience,
        )
        return OAuth2Session(client=client)

    def _fetch_kwargs(self) -> dict[str, Any]:
        now = time.time()
        # No client authentication: the signed assertion is the credential.
        return {"issued_at": int(now), "expires_at": int(now + self.lifetime)}


class ClientCredentials(_FetchTokenGrant):
    """The client-credentials grant: the connected app's id and secret, run as its set user.

    Salesforce serves it only on your My Domain (``https://<domain>.my.salesforce.com``),
    not on login.salesforce.com. No refresh token: on expiry a new token is requested.
    """

    grant_name = "client credentials"
    """How errors and logs name this grant."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        domain_url: str,
        token_url: str | None = None,
        timeout: float = DEFAULT_TOKEN_TIMEOUT,
    ) -> None:
        super().__init__(_token_url(domain_url, token_url), timeout)
        self.client_id = client_id
        """The connected app's consumer key."""
        self._client_secret = client_secret

    def __repr__(self) -> str:
        return f"ClientCredentials(client_id={self.client_id!r}, token_url={self.token_url!r})"

    def _session(self) -> OAuth2Session:
        from oauthlib.oauth2 import BackendApplicationClient
        from requests_oauthlib import OAuth2Session

        return OAuth2Session(client=BackendApplicationClient(self.client_id))

    def _fetch_kwargs(self) -> dict[str, Any]:
        return {"include_client_id": True, "client_secret": self._client_secret}


class UsernamePassword(_FetchTokenGrant):
    """The username-password grant. Discouraged: it puts a password in your configuration,
    bypasses MFA, and is blocked by default in orgs created since Summer '23. Prefer
    :class:`JwtBearer` or :class:`ClientCredentials`. Append the security token to the
    password when the org requires one.
    """

    grant_name = "username-password"
    """How errors and logs name this grant."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        username: str,
        password: str,
        *,
        login_url: str = DEFAULT_LOGIN_URL,
        token_url: str | None = None,
        timeout: float = DEFAULT_TOKEN_TIMEOUT,
    ) -> None:
        super().__init__(_token_url(login_url, token_url), timeout)
        self.client_id = client_id
        """The connected app's consumer key."""
        self.username = username
        """The Salesforce username."""
        self._client_secret = client_secret
        self._password = password

    def __repr__(self) -> str:
        return (
            f"UsernamePassword(client_id={self.client_id!r}, username={self.username!r}, "
            f"token_url={self.token_url!r})"
        )

    def _session(self) -> OAuth2Session:
        from oauthlib.oauth2 import LegacyApplicationClient
        from requests_oauthlib import OAuth2Session

        return OAuth2Session(client=LegacyApplicationClient(self.client_id))

    def _fetch_kwargs(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "password": self._password,
            "include_client_id": True,
            "client_secret": self._client_secret,
        }
