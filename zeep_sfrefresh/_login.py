"""A first token with a refresh token: the browser, a device code, or a Salesforce CLI URL.

The transports refresh a token they are given; this module gets one, the three ways a person
can authorise an app on Salesforce:

* **The web server flow with PKCE** (:func:`web_login`): the browser opens the authorize
  URL, the user logs in and allows the app, Salesforce redirects to a loopback callback this
  module listens on (``http://localhost:1717/OauthRedirect`` by default, the callback many
  connected apps already register), and the code is exchanged for a token. The ``state``
  is checked (a redirect that answers another login is refused) and the code is bound to a
  PKCE verifier that never leaves this process.
* **Salesforce's device flow** (:func:`start_device_login`, :func:`finish_device_login`)
  for machines without a browser. It is not RFC 8628's: the device code is asked of the
  token endpoint itself (``response_type=device_code``) and polled with
  ``grant_type=device&code=...``.
* **A Salesforce CLI auth URL** (:func:`parse_sfdx_auth_url`, :func:`redeem_refresh_token`):
  ``force://<client id>:<secret, may be empty>:<refresh token>@<instance host>``, as
  ``sf org display --verbose`` prints it. The refresh token is redeemed once, at the
  instance, for the access token a token file needs; a rotated refresh token in the answer
  is the one kept.

Pure parts (PKCE, URLs, the redirect's query, the auth URL, the device poll's decision) are
functions of their arguments; the I/O (a one-request loopback server, token requests through
:func:`~zeep_sfrefresh._exchange.request_token`, which bounds each one) sits in a few small
functions. Nothing here logs or puts a code, a verifier, a token or a secret in a message.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from oauthlib.oauth2 import Client, WebApplicationClient
from oauthlib.oauth2.rfc6749.parameters import prepare_token_request
from requests_oauthlib import OAuth2Session

from ._errors import LoginError, TokenRefreshError
from ._exchange import TOKEN_PATH, public_url, request_token
from ._grants import DEFAULT_TOKEN_TIMEOUT
from ._redaction import redact
from ._tokens import Token

__all__ = [
    "DEFAULT_REDIRECT_URI",
    "DEFAULT_SCOPE",
    "DeviceLogin",
    "Pkce",
    "SfdxAuthUrl",
    "authorize_url",
    "code_from_redirect",
    "exchange_code",
    "finish_device_login",
    "next_poll_interval",
    "parse_sfdx_auth_url",
    "redeem_refresh_token",
    "start_device_login",
    "token_url",
    "web_login",
]

DEFAULT_REDIRECT_URI = "http://localhost:1717/OauthRedirect"
"""The loopback callback the Salesforce CLI uses, so many connected apps already list it."""

DEFAULT_SCOPE = "api refresh_token"
"""What a SOAP/REST client needs: API access, and a refresh token to outlive the session."""

_AUTHORIZE_PATH = "/services/oauth2/authorize"
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
_SLOW_DOWN_STEP = 5.0
"""Seconds added to the poll interval on each ``slow_down`` (RFC 8628 section 3.5)."""


def token_url(login_url: str) -> str:
    """The token endpoint of a login host or My Domain URL."""
    return login_url.rstrip("/") + TOKEN_PATH


# --- the web server flow -------------------------------------------------------------------


@dataclass(frozen=True)
class Pkce:
    """A PKCE pair (RFC 7636, S256): the challenge travels in the browser, the verifier only
    in the code exchange, so a code caught on the way back is useless to whoever caught it."""

    verifier: str = field(repr=False)
    challenge: str

    @classmethod
    def new(cls) -> Pkce:
        """A fresh pair with a 86-character verifier (43 to 128 allowed)."""
        verifier = secrets.token_urlsafe(64)
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        return cls(verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii"))


def authorize_url(
    login_url: str,
    *,
    client_id: str,
    redirect_uri: str,
    state: str,
    code_challenge: str,
    scope: str | None = DEFAULT_SCOPE,
) -> str:
    """The URL the browser opens to authorise the app (nothing secret in it)."""
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "state": state,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
    }
    if scope:
        query["scope"] = scope
    return login_url.rstrip("/") + _AUTHORIZE_PATH + "?" + urlencode(query)


def code_from_redirect(query: str, *, state: str) -> str:
    """The authorization code in the redirect's query string, after checking its ``state``.

    Raises :class:`LoginError` for a refusal (``error=access_denied``...), a missing or
    different state (the redirect does not answer this login: a stale tab, or a forged
    link), or no code.
    """
    params = {key: values[0] for key, values in parse_qs(query).items() if values}
    if "error" in params:
        description = redact(params.get("error_description", ""))
        raise LoginError(
            f"Salesforce refused the authorization: {params['error']}"
            + (f" ({description})" if description else "")
        )
    if not secrets.compare_digest(params.get("state", "").encode(), state.encode()):
        raise LoginError(
            "the redirect's state does not match this login's (a stale browser tab or a "
            "forged link); run login again"
        )
    code = params.get("code")
    if not code:
        raise LoginError("the redirect carries neither a code nor an error")
    return code


class _CallbackHandler(BaseHTTPRequestHandler):
    server: _CallbackServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request line holds the authorization code

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != self.server.path:
            self._answer(404, "Not the login callback.")
            return
        self.server.query = parts.query
        failed = "error=" in parts.query or "code=" not in parts.query
        self._answer(
            200,
            "Login failed: see the terminal."
            if failed
            else "Logged in: you can close this window and go back to the terminal.",
        )

    def _answer(self, status: int, text: str) -> None:
        body = (
            "<!DOCTYPE html><html><head><meta charset=utf-8><title>zeep-sfrefresh login</title>"
            f"</head><body><p>{text}</p></body></html>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


class _CallbackServer(HTTPServer):
    """Serves one loopback port until the callback path is hit once."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.path = path
        self.query: str | None = None
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _CallbackHandler)

    def server_bind(self) -> None:
        self.socket.bind(self.server_address)  # no reverse DNS lookup (HTTPServer's getfqdn)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = "localhost", int(self.server_address[1])


def _callback_server(redirect_uri: str) -> _CallbackServer:
    parts = urlsplit(redirect_uri)
    host = (parts.hostname or "").lower()
    if parts.scheme != "http" or host not in _LOOPBACK_HOSTS or not parts.port:
        raise LoginError(
            f"the redirect URI {redirect_uri} is not a loopback http URL with a port "
            "(e.g. http://localhost:1717/OauthRedirect); this command can only listen there"
        )
    bind = "127.0.0.1" if host == "localhost" else host
    try:
        return _CallbackServer(bind, parts.port, parts.path or "/")
    except OSError as exc:
        raise LoginError(
            f"cannot listen on {host}:{parts.port} for the redirect ({exc.strerror}); "
            "is another login running? Choose another port with --port (and register "
            "that callback URL on the connected app)"
        ) from exc


def exchange_code(
    token_url: str,
    *,
    client_id: str,
    code: str,
    redirect_uri: str,
    code_verifier: str,
    client_secret: str | None = None,
    timeout: float = DEFAULT_TOKEN_TIMEOUT,
) -> Token:
    """Trade an authorization code for a token (``grant_type=authorization_code``)."""
    session = OAuth2Session(client=WebApplicationClient(client_id), redirect_uri=redirect_uri)
    token = request_token(
        lambda watcher: session.fetch_token(
            token_url,
            code=code,
            code_verifier=code_verifier,
            include_client_id=True,
            client_secret=client_secret,
            timeout=timeout,
            auth=watcher,
        ),
        url=token_url,
        inner_auth=None,
        timeout=timeout,
        previous=None,
        verb="authorization code",
    )
    return _with_refresh_token(token)


def web_login(
    login_url: str,
    *,
    client_id: str,
    redirect_uri: str = DEFAULT_REDIRECT_URI,
    client_secret: str | None = None,
    scope: str | None = DEFAULT_SCOPE,
    show: Callable[[str], object],
    wait: float = 300.0,
    token_timeout: float = DEFAULT_TOKEN_TIMEOUT,
) -> Token:
    """Run the web server flow: listen on ``redirect_uri``, hand the authorize URL to
    ``show`` (print it, open a browser), wait up to ``wait`` seconds for the redirect and
    exchange its code. Ctrl-C ends the wait at once and closes the port."""
    server = _callback_server(redirect_uri)
    try:
        pkce, state = Pkce.new(), secrets.token_urlsafe(24)
        show(
            authorize_url(
                login_url,
                client_id=client_id,
                redirect_uri=redirect_uri,
                state=state,
                code_challenge=pkce.challenge,
                scope=scope,
            )
        )
        deadline = time.monotonic() + wait
        while server.query is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LoginError(
                    f"no redirect to {redirect_uri} within {wait:g} s; run login again "
                    "(--wait to allow longer)"
                )
            server.timeout = min(left, 0.5)  # short slices: Ctrl-C is seen promptly
            server.handle_request()
        code = code_from_redirect(server.query, state=state)
    finally:
        server.server_close()
    return exchange_code(
        token_url(login_url),
        client_id=client_id,
        code=code,
        redirect_uri=redirect_uri,
        code_verifier=pkce.verifier,
        client_secret=client_secret,
        timeout=token_timeout,
    )


def _with_refresh_token(token: Token) -> Token:
    if not token.refresh_token:
        raise LoginError(
            "Salesforce issued no refresh token: add the refresh_token scope ('Perform "
            "requests at any time') to the connected app and to --scope"
        )
    return token


# --- the device flow -----------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceLogin:
    """What the token endpoint answers to ``response_type=device_code``."""

    device_code: str = field(repr=False)
    """The code the polls present (``grant_type=device``); not for the user."""
    user_code: str
    """The code the user enters at ``verification_uri``."""
    verification_uri: str
    """Where the user approves the login (``.../setup/connect``)."""
    interval: float
    """Seconds to wait between polls, as Salesforce asks."""


class _DeviceClient(Client):
    """oauthlib's client for Salesforce's device grant: ``grant_type=device&code=...``
    (oauthlib's own DeviceClient speaks RFC 8628's ``device_code`` grant, which Salesforce
    does not)."""

    grant_type = "device"

    def prepare_request_body(
        self, code: str | None = None, body: str = "", include_client_id: bool = True, **kwargs: Any
    ) -> str:
        kwargs["client_id"] = self.client_id
        kwargs["include_client_id"] = include_client_id
        return str(prepare_token_request(self.grant_type, body=body, code=code, **kwargs))


def start_device_login(
    token_url: str,
    *,
    client_id: str,
    scope: str | None = DEFAULT_SCOPE,
    timeout: float = DEFAULT_TOKEN_TIMEOUT,
) -> DeviceLogin:
    """Ask for a device code and the user code a person enters at the verification URL."""
    form = {"response_type": "device_code", "client_id": client_id}
    if scope:
        form["scope"] = scope
    where = public_url(token_url)
    try:
        answer = requests.post(token_url, data=form, timeout=timeout)
    except requests.RequestException as exc:
        raise LoginError(
            f"the device code request to {where} failed ({type(exc).__name__})"
        ) from exc
    try:
        body = answer.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise LoginError(
            f"{where} answered HTTP {answer.status_code} with no JSON; is it the token endpoint?"
        )
    if answer.status_code != 200 or "error" in body:
        error = redact(str(body.get("error")))
        description = redact(str(body.get("error_description", "")))
        raise LoginError(
            f"{where} refused the device code request: {error} ({description}); is the "
            "device flow enabled on the connected app?"
        )
    try:
        interval = float(body.get("interval") or 5)
        return DeviceLogin(
            str(body["device_code"]),
            str(body["user_code"]),
            str(body["verification_uri"]),
            max(interval, 0.0),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise LoginError(f"{where} answered a device code without {exc}") from exc


def next_poll_interval(error: str | None, interval: float) -> float:
    """The wait before the next poll after an answer with OAuth ``error``, or raise.

    ``authorization_pending``: the same interval. ``slow_down``: 5 seconds more, for this
    and every later poll. Anything else ends the login with a :class:`LoginError`.
    """
    if error == "authorization_pending":
        return interval
    if error == "slow_down":
        return interval + _SLOW_DOWN_STEP
    if error in ("expired_token", "invalid_grant"):
        raise LoginError("the device code expired before it was approved; run login again")
    if error == "access_denied":
        raise LoginError("the authorization was denied")
    raise LoginError(f"the token endpoint refused the device login: {error}")


def finish_device_login(
    token_url: str,
    device: DeviceLogin,
    *,
    client_id: str,
    client_secret: str | None = None,
    wait: float = 600.0,
    token_timeout: float = DEFAULT_TOKEN_TIMEOUT,
    sleep: Callable[[float], object] = time.sleep,
) -> Token:
    """Poll the token endpoint until the user code is approved, refused or ``wait`` seconds
    have passed. Each poll is one bounded token request; Ctrl-C stops between polls."""
    session = OAuth2Session(client=_DeviceClient(client_id))
    interval = device.interval
    deadline = time.monotonic() + wait
    while True:
        sleep(interval)
        try:
            token = request_token(
                lambda watcher: session.fetch_token(
                    token_url,
                    code=device.device_code,
                    include_client_id=True,
                    client_secret=client_secret,
                    timeout=token_timeout,
                    auth=watcher,
                ),
                url=token_url,
                inner_auth=None,
                timeout=token_timeout,
                previous=None,
                verb="device login",
            )
        except TokenRefreshError as exc:
            if exc.error is None:
                raise
            interval = next_poll_interval(exc.error, interval)
        else:
            return _with_refresh_token(token)
        if time.monotonic() + interval > deadline:
            raise LoginError(
                f"the user code {device.user_code} was not approved within {wait:g} s; "
                "run login --device again"
            )


# --- a Salesforce CLI auth URL -------------------------------------------------------------


@dataclass(frozen=True)
class SfdxAuthUrl:
    """The parts of ``force://<client id>:<secret>:<refresh token>@<instance host>``."""

    client_id: str
    """The connected app's consumer key."""
    client_secret: str = field(repr=False)
    """The connected app's secret (often empty for the Salesforce CLI's app)."""
    refresh_token: str = field(repr=False)
    """The refresh token to redeem."""
    instance_url: str
    """``https://<instance host>``, where the refresh token is redeemed."""


def parse_sfdx_auth_url(text: str) -> SfdxAuthUrl:
    """Read a Salesforce CLI auth URL; a ValueError names what is wrong, never the text
    (it holds a refresh token)."""
    value = text.strip()
    if not value.startswith("force://"):
        raise ValueError("a Salesforce CLI auth URL starts with force://")
    credentials, at, host = value[len("force://") :].rpartition("@")
    if not at or not host:
        raise ValueError("the auth URL has no @<instance host> part")
    parts = credentials.split(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[2]:
        raise ValueError(
            "the auth URL is not force://<client id>:<client secret>:<refresh token>@<host>"
        )
    instance = host.rstrip("/") if "://" in host else "https://" + host.rstrip("/")
    parsed = urlsplit(instance)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path:
        raise ValueError("the auth URL's instance is not a host name")
    return SfdxAuthUrl(parts[0], parts[1], parts[2], instance)


def redeem_refresh_token(
    token_url: str,
    *,
    client_id: str,
    refresh_token: str,
    instance_url: str,
    client_secret: str | None = None,
    timeout: float = DEFAULT_TOKEN_TIMEOUT,
) -> Token:
    """One refresh_token request: the access token for a refresh token held alone.

    The answer's refresh token (rotated or not: the one sent is kept when none comes back)
    is in the returned token; save it before anything else.
    """
    kwargs: dict[str, Any] = {"client_id": client_id}
    if client_secret:
        kwargs["client_secret"] = client_secret
    session = OAuth2Session(client_id)
    seed = Token(
        {"access_token": "-", "refresh_token": refresh_token, "instance_url": instance_url}
    )
    return request_token(
        lambda watcher: session.refresh_token(
            token_url, refresh_token=refresh_token, timeout=timeout, auth=watcher, **kwargs
        ),
        url=token_url,
        inner_auth=None,
        timeout=timeout,
        previous=seed,
        verb="refresh",
    )
