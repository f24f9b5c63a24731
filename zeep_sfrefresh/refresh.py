"""The one place a token is replaced: one refresh per expiry, across threads and processes.

Every SOAP call remembers the token it sent. When that call meets an expired session it
asks :meth:`Refresher.refresh_after` for a token newer than the one it sent:

1. Under this process's lock, a token newer than the sent one may already be here (another
   thread refreshed): take it, no I/O.
2. Otherwise, under the store's lock, re-read the store. If its access token differs from
   the sent one, another worker refreshed: adopt its token, no token request.
3. Otherwise make the one token request, with the store's refresh token, write the new
   token to the store before the lock is released, then call ``token_updater``.
4. If the token endpoint answers that this refresh token is already being used by another
   request, wait (bounded) for that worker's token to reach the store and adopt it. The old
   refresh token is never sent twice: with rotation, a second use revokes the whole family.

The happy path does no store I/O; a worker holding an outdated token pays one extra SOAP
round trip per expiry (its failed call) and no token request. Lock, then re-check inside
the lock, after authlib's OAuth2 client. The same object serves threads
(:meth:`refresh_after`) and coroutines (:meth:`arefresh_after`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from .breaker import DEFAULT_BREAKER, CircuitBreaker
from .errors import (
    RefreshInProgressError,
    SessionNotRefreshableError,
    SfRefreshError,
    TokenRefreshError,
    TokenStoreConflictError,
    TokenStoreError,
)
from .events import EventKind, RefreshEvent, RefreshListener, worker_name
from .faults import INVALID_SESSION_ID
from .grants import Grant
from .stores import StoredToken, TokenStore
from .tokens import Token, fingerprint

__all__ = ["DEFAULT_OVERLAP_WAIT", "Refresher"]

DEFAULT_OVERLAP_WAIT = 30.0
"""Seconds to wait for another worker's token when the endpoint says it is refreshing."""

MAX_RETRY_AFTER = 600.0
"""The longest ``Retry-After`` honoured; a larger one is capped so a typo cannot stall a fleet."""

logger = logging.getLogger(__name__)


def _host(token: Token | None) -> str | None:
    if token is None or token.instance_url is None:
        return None
    return urlsplit(token.instance_url).netloc or None


class Refresher:
    """Holds this process's current token and serialises its replacement through a store.

    ``seed`` is the token to start from (an ``OAuth2Session``'s); None asks ``grant`` for the
    first one (credential grants), unless the store already holds one. ``on_change`` is told
    about every new token (refreshed here or adopted), e.g. to keep ``OAuth2Session.token``
    current. ``on_refresh`` (the session's ``token_updater``) is called only for tokens
    refreshed here, after the store has them, still under this process's lock so saved
    tokens are written in the order they were issued. If either raises, the new token is
    already in use and the error propagates. ``listener`` gets a :class:`RefreshEvent` for
    each refresh, adoption, failure and instance move.
    """

    def __init__(
        self,
        grant: Grant,
        store: TokenStore,
        seed: Token | None,
        *,
        on_refresh: Callable[[dict[str, Any]], object] | None = None,
        on_change: Callable[[Token], object] | None = None,
        listener: RefreshListener | None = None,
        overlap_wait: float = DEFAULT_OVERLAP_WAIT,
        breaker: CircuitBreaker | None = DEFAULT_BREAKER,
    ) -> None:
        self._grant = grant
        self._store = store
        self._on_refresh = on_refresh
        self._on_change = on_change
        self._listener = listener
        self._overlap_wait = overlap_wait
        self._breaker = breaker
        self._lock = threading.Lock()
        self._async_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._async_locks_guard = threading.Lock()
        # The breaker's counters have their own lock: judge() runs on event loop threads, which
        # must never wait behind a token request.
        self._breaker_lock = threading.Lock()
        self._last_failure: SfRefreshError | None = None
        self._version_seen = 0
        self._useless_refreshes = 0
        self._last_judged: str | None = None
        self._open_until = 0.0
        self._not_before = 0.0
        self._token = self._seed(seed)

    @property
    def token(self) -> Token:
        """The current token. Reading it takes no lock: tokens are replaced, never edited."""
        return self._token

    @property
    def store(self) -> TokenStore:
        """Where the token is shared."""
        return self._store

    # --- starting ------------------------------------------------------------------------

    def _seed(self, seed: Token | None) -> Token:
        """Adopt the store's token, or fill an empty store with ``seed`` or a first token."""
        with self._store.lock():
            stored = self._store.load()
            if stored is None:
                first = seed if seed is not None else self._grant.fetch(None)
                self._version_seen = self._store.save(first.data, replaces=None)
                return first
        adopted = self._accept(stored)
        if self._on_change is not None and (
            seed is None or adopted.access_token != seed.access_token
        ):
            self._on_change(adopted)
        return adopted

    def _accept(self, stored: StoredToken) -> Token:
        """Turn a stored token into a Token, refusing one older than a version already seen."""
        if stored.version < self._version_seen:
            raise TokenStoreError(
                f"the store holds version {stored.version} of the token, older than version "
                f"{self._version_seen} this process already saw (restored from an old "
                "snapshot?); its refresh token may be retired, so it is not used"
            )
        try:
            token = Token(stored.token)
        except ValueError as exc:
            raise TokenStoreError(f"the store holds an unusable token: {exc}") from exc
        self._version_seen = stored.version
        return token

    def _load(self) -> StoredToken:
        stored = self._store.load()
        if stored is None:
            raise TokenStoreError(
                f"the store is empty but held version {self._version_seen} of the token; "
                "refusing to guess which refresh token is current"
            )
        return stored

    # --- refreshing ------------------------------------------------------------------------

    def refresh_after(self, sent: Token, reason: str = INVALID_SESSION_ID) -> Token:
        """Return a token newer than ``sent`` (the object the caller read from :attr:`token`).

        Decided under this process's lock:

        * the current token is ``sent`` itself: refresh through the store (see module doc);
        * it holds another access token: someone refreshed meanwhile, take it;
        * it holds the same access token in a new object: a refresh of that token failed
          after this caller sent it. The caller gets that failure (as a copy) instead of
          trying the same doomed refresh again; calls that read the token after the
          failure hold the new object and do try again.

        While the circuit breaker is open this raises :class:`SessionNotRefreshableError`
        without a token request.
        """
        with self._lock:
            current = self._token
            newer = self._settled(sent)
            if newer is not None:
                return newer
            self._check_breaker()
            self._check_retry_after()
            started = time.monotonic()
            try:
                fresh, kind = self._refresh(sent)
            except SfRefreshError as exc:
                logger.warning("refreshing the Salesforce session failed: %s", exc)
                if isinstance(exc, TokenRefreshError) and exc.retry_after is not None:
                    self._not_before = started + min(exc.retry_after, MAX_RETRY_AFTER)
                if self._token is current:  # no new token came of it (else: keep the new one)
                    self._last_failure = exc
                    self._token = Token(current.data)  # same token, new object: marks the failure
                self._emit("failed", reason, started, current, self._token, error=exc)
                raise
            self._emit(kind, reason, started, current, fresh)
            if _host(fresh) != _host(current):
                logger.info("the org's instance moved: %s -> %s", _host(current), _host(fresh))
                self._emit("instance_moved", reason, started, current, fresh)
            return fresh

    async def arefresh_after(self, sent: Token, reason: str = INVALID_SESSION_ID) -> Token:
        """:meth:`refresh_after` for coroutines; the event loop is never blocked.

        The tasks of one loop queue on an asyncio lock, so one expiry costs one worker thread
        however many tasks meet it; the refresh itself (locks, token request, store I/O)
        runs in that thread, under the same thread lock as synchronous callers. A cancelled
        task leaves its refresh running to completion in the thread, for the others.
        """
        async with self._async_lock():
            newer = self._settled(sent)
            if newer is not None:
                return newer
            return await asyncio.to_thread(self.refresh_after, sent, reason)

    def _async_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        # Not self._lock: a worker thread may hold that for a whole token request.
        with self._async_locks_guard:
            lock = self._async_locks.get(loop)
            if lock is None:
                lock = self._async_locks[loop] = asyncio.Lock()
            return lock

    def _settled(self, sent: Token) -> Token | None:
        """Return the token that replaced ``sent``, None if there is none, or raise its failure.

        Safe without the lock for a quick look: a failure is recorded before the token
        object that marks it, and tokens are replaced whole.
        """
        current = self._token
        if current is sent:
            return None
        if current.access_token != sent.access_token or self._last_failure is None:
            return current
        raise self._last_failure.copy()

    def _change(self, token: Token) -> Token:
        self._token = token
        self._last_failure = None
        if self._on_change is not None:
            self._on_change(token)
        return token

    def _refresh(self, sent: Token) -> tuple[Token, EventKind]:
        in_progress: RefreshInProgressError | None = None
        store_error: TokenStoreError | None = None
        with self._store.lock():
            stored = self._load()
            if stored.token.get("access_token") != sent.access_token:
                logger.info(
                    "adopted the token another worker refreshed: %s",
                    fingerprint(stored.token.get("access_token")),
                )
                return self._change(self._accept(stored)), "adopted"
            base = self._accept(stored)
            try:
                fresh = self._grant.fetch(base)
            except RefreshInProgressError as exc:
                in_progress = exc
            else:
                try:
                    self._version_seen = self._store.save(fresh.data, replaces=stored.version)
                except TokenStoreError as exc:
                    store_error = exc
        if in_progress is not None:
            return self._await_other_refresh(sent, in_progress), "adopted"
        self._change(fresh)
        if self._on_refresh is not None:
            self._on_refresh(fresh.as_dict())
        if store_error is not None:
            if isinstance(store_error, TokenStoreConflictError):
                logger.error("a newer token reached the store during this refresh: %s", store_error)
            raise store_error
        return fresh, "refreshed"

    def _await_other_refresh(self, sent: Token, overlap: RefreshInProgressError) -> Token:
        """Poll the store (without its lock) until another worker's new token shows up."""
        logger.info("another refresh of this token is running; waiting for its token")
        deadline = time.monotonic() + self._overlap_wait
        delay = 0.05
        while True:
            stored = self._load()
            if stored.token.get("access_token") != sent.access_token:
                return self._change(self._accept(stored))
            if time.monotonic() >= deadline:
                raise TokenRefreshError(
                    "the refresh token was in use by another refresh whose token did not reach "
                    f"the store within {self._overlap_wait:g} s",
                    error=overlap.error,
                    description=overlap.description,
                ) from overlap
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0)

    # --- sessions a refresh cannot save -------------------------------------------------------

    def judge(self, fresh: Token, usable: bool, reason: str = INVALID_SESSION_ID) -> None:
        """Record whether the session of a refreshed token worked on its first use.

        Feeds the circuit breaker: ``threshold`` refreshed tokens in a row rejected at once
        open it. Each token is judged once, however many calls resent with it.
        """
        with self._breaker_lock:
            if self._last_judged == fresh.access_token:
                return
            self._last_judged = fresh.access_token
            if usable:
                self._useless_refreshes = 0
                return
            self._useless_refreshes += 1
            breaker = self._breaker
            opened = breaker is not None and self._useless_refreshes >= breaker.threshold
            if opened and breaker is not None:
                self._open_until = time.monotonic() + breaker.cooldown
        error = f"Salesforce rejected a freshly refreshed session ({reason})"
        self._emit("not_refreshable", reason, None, fresh, fresh, error=error)
        if opened and breaker is not None:
            logger.warning(
                "%d refreshed sessions in a row were rejected at once; no token requests for %g s",
                self._useless_refreshes,
                breaker.cooldown,
            )
            self._emit("circuit_open", reason, None, fresh, fresh, error=error)

    def _check_retry_after(self) -> None:
        """Honour the token endpoint's last Retry-After: no token request before it is over."""
        remaining = self._not_before - time.monotonic()
        if remaining > 0:
            raise TokenRefreshError(
                f"the token endpoint asked to wait; {remaining:.0f} s left before another "
                "token request",
                retry_after=remaining,
            )

    def _check_breaker(self) -> None:
        with self._breaker_lock:
            remaining = self._open_until - time.monotonic()
        if remaining > 0:
            raise SessionNotRefreshableError(
                "not refreshing: the last refreshed sessions were rejected at once",
                code=INVALID_SESSION_ID,
                attempts=f"circuit breaker open for another {remaining:.0f} s",
            )

    def _emit(
        self,
        kind: EventKind,
        reason: str,
        started: float | None,
        before: Token | None,
        after: Token | None,
        *,
        error: BaseException | str | None = None,
    ) -> None:
        if self._listener is None:
            return
        event = RefreshEvent(
            kind=kind,
            reason=reason,
            duration=0.0 if started is None else time.monotonic() - started,
            old_instance=_host(before),
            new_instance=_host(after),
            worker=worker_name(),
            error=None if error is None else str(error),
        )
        try:
            self._listener(event)
        except Exception:
            logger.exception("the refresh listener raised on a %s event", kind)
