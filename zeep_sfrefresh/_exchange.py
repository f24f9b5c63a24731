"""One token request: bounded by a total deadline, read into a Token or one typed error.

Every grant makes its request through requests-oauthlib (the user's ``OAuth2Session`` for
refresh tokens) and hands the call to :func:`request_token`, which adds what
requests-oauthlib does not do:

* **A total deadline.** requests' ``timeout`` bounds each socket operation, so an answer
  trickled a byte at a time never times out. The request runs in a worker thread (one
  waits idle between requests) and the caller waits at most ``timeout`` seconds. If the
  answer's headers have arrived by then, its socket is shut down (the worker's request
  ends at once); an answer already complete is still used, since it may carry a rotated
  refresh token. If they have not, the request is abandoned: when its headers come, it
  cuts the connection before reading the body.
* **The HTTP status and Retry-After** (seconds or an HTTP date) of the answer, which
  requests-oauthlib parses without looking at.
* **One error type** whatever went wrong, :class:`TokenRefreshError`, saying whether the
  request may have reached the server without an answer coming back (``unanswered``: the
  server may have issued, and rotated, a token never seen here).
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from ._errors import TokenRefreshError
from ._forks import reset_in_child
from ._redaction import redact
from ._tokens import Token

if TYPE_CHECKING:
    from oauthlib.oauth2.rfc6749.errors import OAuth2Error

__all__ = ["TOKEN_PATH", "AnswerWatcher", "parse_retry_after", "public_url", "request_token"]

TOKEN_PATH = "/services/oauth2/token"  # noqa: S105 - a URL path, not a secret

_CUT_GRACE = 1.0
"""Seconds to let a request whose socket was just shut down finish (it ends at once)."""

logger = logging.getLogger(__name__)


def parse_retry_after(value: str | None, *, date: str | None = None, now: float) -> float | None:
    """Seconds to wait, from a ``Retry-After`` of delay-seconds or an HTTP date (RFC 9110).

    An HTTP date is measured from the answer's own ``Date`` header when it has one (the
    server's clock against the server's clock), else from ``now``. None when absent or
    unreadable; never negative.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    reference = now
    if date:
        with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
            reference = email.utils.parsedate_to_datetime(date).timestamp()
    return max(0.0, when - reference)


def public_url(url: str) -> str:
    """The URL without userinfo, query or fragment: safe to put in an error message."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return f"{parts.scheme}://{netloc}{parts.path}"


def _socket_of(response: requests.Response) -> socket.socket | None:
    connection = getattr(response.raw, "connection", None)
    sock = getattr(connection, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


class _DeadlinePassed(Exception):
    """Raised in an abandoned token request's thread to stop it before the body is read."""


class AnswerWatcher(requests.auth.AuthBase):
    """Passed as the token request's ``auth``: notes the answer's status and Retry-After, and
    knows its socket so the deadline can cut it.

    It wraps the auth the request would have used and registers a response hook on that one
    request; requests runs response hooks after the headers and before reading the body.
    """

    def __init__(self, inner: Callable[[Any], Any] | tuple[str, str] | None) -> None:
        # requests accepts a (user, password) tuple as auth; keep that meaning.
        self._inner = requests.auth.HTTPBasicAuth(*inner) if isinstance(inner, tuple) else inner
        self.status: int | None = None
        self.retry_after: float | None = None
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._cut = False

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self._inner is not None:
            request = self._inner(request)
        request.register_hook("response", self._seen)  # type: ignore[no-untyped-call]
        return request

    def _seen(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.status = response.status_code
        self.retry_after = parse_retry_after(
            response.headers.get("Retry-After"), date=response.headers.get("Date"), now=time.time()
        )
        sock = _socket_of(response)
        with self._lock:
            if self._cut:
                if sock is not None:
                    _shut(sock)
                raise _DeadlinePassed
            self._socket = sock

    def cut(self) -> bool:
        """Stop the request: shut its socket now if known (True), else when its headers come."""
        with self._lock:
            self._cut = True
            if self._socket is None:
                return False
            _shut(self._socket)
            return True

    @property
    def was_cut(self) -> bool:
        """Whether :meth:`cut` was called: the request's outcome is "no answer in time"."""
        return self._cut

    def describe(self) -> str:
        if self.status is None:
            return ""
        wait = f", Retry-After {self.retry_after:g} s" if self.retry_after is not None else ""
        return f" (HTTP {self.status}{wait})"


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Worker:
    """A thread that runs the token requests handed to it, one at a time."""

    def __init__(self, pool: _Workers) -> None:
        self._pool = pool
        self._jobs: queue.SimpleQueue[tuple[Callable[[], None], Callable[[], None]]] = (
            queue.SimpleQueue()
        )
        threading.Thread(
            target=self._serve, name="zeep-sfrefresh-token-request", daemon=True
        ).start()

    def give(self, job: Callable[[], None], then: Callable[[], None]) -> None:
        self._jobs.put((job, then))

    def _serve(self) -> None:
        while True:
            job, then = self._jobs.get()
            job()  # never raises: it carries its outcome to the caller
            # Idle again before the caller learns the outcome: its next request finds this
            # thread waiting instead of starting another.
            keep = self._pool.rest(self)
            then()
            if not keep:
                return


class _Workers:
    """The threads token requests run in: one waits idle between requests, so the usual
    refresh hands its request over to a thread already running instead of starting one.

    A request that outlives its deadline keeps its thread (it is abandoned, not stopped);
    the next request then gets a new thread, so it never queues behind the abandoned one
    and a request that was never sent is never reported as unanswered. Extra threads end
    after their request when one is already idle. A forked child starts with none (the
    parent's threads do not exist there).
    """

    def __init__(self) -> None:
        self._after_fork()
        reset_in_child(self)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []

    def run(self, job: Callable[[], None], then: Callable[[], None]) -> None:
        """Start ``job`` in a thread of its own now (an idle worker's, or a new one), and
        call ``then`` when it is over. ``job`` must not raise."""
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        (worker or _Worker(self)).give(job, then)

    def rest(self, worker: _Worker) -> bool:
        """Keep ``worker`` for the next request (True), unless one is idle already."""
        with self._lock:
            if self._idle:
                return False
            self._idle.append(worker)
            return True


_WORKERS = _Workers()


def _run_with_deadline(
    call: Callable[[AnswerWatcher], Any], watcher: AnswerWatcher, timeout: float
) -> Any:
    """Run ``call`` in a worker thread; return its result or raise, within ``timeout`` s."""
    outcome: list[tuple[bool, Any]] = []
    done = threading.Event()

    def work() -> None:
        try:
            outcome.append((True, call(watcher)))
        except BaseException as exc:  # noqa: BLE001 - carried to the caller's thread
            outcome.append((False, exc))

    _WORKERS.run(work, done.set)
    if not done.wait(timeout) and watcher.cut():
        done.wait(_CUT_GRACE)
    if outcome and outcome[0][0]:
        return outcome[0][1]  # complete, if only just: a rotated refresh token is not dropped
    if not done.is_set() or watcher.was_cut:
        raise _DeadlinePassed
    raise outcome[0][1]


def _nothing_sent(exc: BaseException) -> bool:
    """Whether a requests error happened before the request could reach the server."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    seen: set[int] = set()
    pending: list[object] = [exc]
    while pending:
        item = pending.pop()
        if id(item) in seen or item is None:
            continue
        seen.add(id(item))
        if isinstance(item, NewConnectionError | ConnectTimeoutError):
            return True
        if isinstance(item, BaseException):
            pending.extend([*item.args, item.__cause__, item.__context__])
        pending.append(getattr(item, "reason", None))
    return False


def request_token(
    call: Callable[[AnswerWatcher], Any],
    *,
    url: str,
    inner_auth: Callable[[Any], Any] | tuple[str, str] | None,
    timeout: float,
    previous: Token | None,
    verb: str,
) -> Token:
    """Run one token request (``call`` makes it, passing the watcher as ``auth``) within
    ``timeout`` seconds in all, and map every failure to one :class:`TokenRefreshError`."""
    # Here, not at the top: ``import zeep_sfrefresh`` leaves oauthlib to the first token
    # request (``call`` goes through requests-oauthlib, which imports it anyway).
    from oauthlib.oauth2.rfc6749.errors import (
        InsecureTransportError,
        MissingTokenError,
        OAuth2Error,
    )

    watcher = AnswerWatcher(inner_auth)
    where = public_url(url)

    def error(
        reason: str, exc: OAuth2Error | None = None, *, unanswered: bool = False
    ) -> TokenRefreshError:
        return TokenRefreshError(
            reason + watcher.describe(),
            error=exc.error if exc is not None else None,
            description=redact(exc.description) if exc is not None and exc.description else None,
            status_code=watcher.status,
            retry_after=watcher.retry_after,
            unanswered=unanswered,
        )

    def not_a_token(what: str) -> TokenRefreshError:
        hint = ""
        if watcher.status == 404 or not urlsplit(url).path.rstrip("/").endswith(TOKEN_PATH):
            hint = f"; is it the token endpoint? Salesforce's is https://<login host>{TOKEN_PATH}"
        return error(
            f"the token endpoint {where} answered {what}{hint}",
            unanswered=watcher.status == 200,  # a 200 may have issued a token we cannot read
        )

    try:
        answer = _run_with_deadline(call, watcher, timeout)
    except Warning as exc:
        answer = _token_from_scope_warning(exc)
    except _DeadlinePassed:
        raise error(
            f"the token request to {where} timed out: no complete answer within {timeout:g} s",
            unanswered=True,
        ) from None
    except InsecureTransportError as exc:
        raise TokenRefreshError(
            "oauthlib refuses a token URL that is not https "
            "(unless OAUTHLIB_INSECURE_TRANSPORT is set by the application)"
        ) from exc
    except MissingTokenError as exc:
        raise not_a_token("something that is not a token") from exc
    except OAuth2Error as exc:
        raise error(f"the token endpoint refused the {verb}", exc) from exc
    except requests.Timeout as exc:
        sent = not _nothing_sent(exc)
        raise error(
            f"the token request to {where} timed out (limit {timeout:g} s)", unanswered=sent
        ) from exc
    except requests.RequestException as exc:
        sent = not _nothing_sent(exc)
        raise error(
            f"the token request to {where} failed ({type(exc).__name__})", unanswered=sent
        ) from exc
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise not_a_token(f"a body that is not a token object ({type(exc).__name__})") from exc
    if not isinstance(answer, dict):
        raise not_a_token("a body that is not a token object")
    try:
        return Token(answer, previous=previous)
    except ValueError as exc:
        raise error(f"the token endpoint's answer is unusable: {exc}", unanswered=True) from exc


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
