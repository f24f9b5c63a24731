"""The one place a token is replaced: one refresh per expiry, across threads and processes.

Every SOAP call remembers the :class:`Generation` it sent. When that call meets an expired
session it asks :meth:`Refresher.refresh_after` for a newer one:

1. Under this process's lock, a newer generation may already be here (another thread
   refreshed): take it, no I/O. If instead the refresh of that very token just failed,
   the caller gets that failure, not a second doomed request.
2. Read the store without its lock: a stored token of a newer version was refreshed by
   another worker: adopt it, no lock, no token request. A refresh of this token another
   worker announced (its intent, seen by the store's ``peek_intent``) is waited for before
   anything else (:meth:`Refresher._await_announced`). Otherwise take the store's lock;
   while another worker holds it, wait for the store to change and adopt the token that
   worker stores (:meth:`Refresher._store_lock`). The lock is only taken to refresh, so
   one expiry costs the fleet one lock hold however many workers meet it, instead of each
   queueing on the lock to read what the first one wrote. Under the lock, read the store
   again (the built-in stores hand over the read their lock step made): if this process
   holds a token the store lacks (its write failed), write it first; a newer stored token
   is adopted, as above.
3. Otherwise decide whether the refresh token may be sent (:func:`plan_request`): not if
   it is spent (refused for good, or unanswered twice), and not while another worker's
   request with it may be in flight (its :class:`RefreshIntent` is in the store): wait,
   bounded, for that worker's token instead.
4. Write the intent, make the one token request, and write the new token to the store
   (which clears the intent) before the lock is released; then call ``token_updater``.
5. If the token endpoint answers that this refresh token is already being used by another
   request, wait (bounded) for that worker's token to reach the store and adopt it.

A refresh token is never sent twice without cause: with rotation, a second use revokes
the whole family. Before each call the store's ``peek`` (where it has one) says whether it
holds a newer token, without a round trip (a ``stat`` of the file, a look at memory, the
Redis store's watch of its change stream): a worker that did not meet an expiry adopts the
token another worker stored and sends its call with it, so only the calls in flight when
the session expired fail. And its ``peek_intent`` says whether another worker is
refreshing the token in hand: the call then waits for that token (:meth:`Refresher.begin`,
:meth:`Refresher.join`) rather than meet the expiry; so does a call made while a refresh of
this process is under way. Without ``peek``, each worker holding an outdated token pays one
extra SOAP round trip per expiry (its failed call) and no token request. Lock, then
re-check inside the lock, after authlib's OAuth2 client. The same object serves threads
(:meth:`refresh_after`) and coroutines (:meth:`arefresh_after`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple, cast
from urllib.parse import urlsplit

from ._breaker import DEFAULT_BREAKER, NO_BREAKER, CircuitBreaker
from ._errors import (
    ReauthorizationRequiredError,
    RefreshInProgressError,
    SessionNotRefreshableError,
    SfRefreshError,
    TokenRefreshError,
    TokenStoreConflictError,
    TokenStoreError,
)
from ._events import EventKind, RefreshEvent, RefreshListener, worker_name
from ._faults import INVALID_SESSION_ID
from ._forks import reset_in_child
from ._grants import Grant
from ._stores import (
    DEFAULT_LOCK_WAIT,
    DEFAULT_POLL_INTERVAL,
    MAX_POLL_INTERVAL,
    IntentState,
    RefreshIntent,
    StoredToken,
    TokenStore,
    holds_lock,
    takes_intent,
)
from ._tokens import Generation, Token, fingerprint

if TYPE_CHECKING:  # asyncio loads with the first coroutine that refreshes, not at import
    import asyncio

__all__ = [
    "DEFAULT_OVERLAP_WAIT",
    "JOINED_REFRESH",
    "MAX_ATTEMPTS",
    "NEWER_IN_STORE",
    "Plan",
    "Refresher",
    "join_wait",
    "plan_request",
]

DEFAULT_OVERLAP_WAIT = 30.0
"""Seconds to wait for another worker's token when its refresh may be under way."""

_MAX_ROUNDS = 3
"""Waits for another worker's refresh before giving up: it may change the store twice."""

_LOCK_RETRY_MAX = 1.0
"""Seconds between two tries of a busy store lock, at most, while the store itself says
when the token changes (``wait_for_change``): a try only matters if the holder ended
without storing a token."""

MAX_ATTEMPTS = 2
"""Token requests one refresh token may get that end without an answer: one, and one more.

After a request that got no answer the server may have rotated the refresh token; a second
request then revokes a family that was lost anyway, and otherwise (the request never got
there) saves it. A third would only burn the login rate limit."""

NEWER_IN_STORE = "a newer token in the store"
"""The reason of an ``adopted`` event for a token taken before a call (not after a fault)."""

JOINED_REFRESH = "a refresh under way, joined before the call"
"""The reason of an ``adopted`` event for the token of another worker's refresh that a call
waited for before going out (:meth:`Refresher.join`)."""

logger = logging.getLogger(__name__)


class Plan(NamedTuple):
    """What to do with a refresh token: send it (``attempt``), wait, or never send it.

    A named tuple, as the flow's steps are: immutable, and cheap to define at import."""

    attempt: int = 0
    """The number this token request would be among those made with the refresh token."""
    wait_for: RefreshIntent | None = None
    """Another worker's request with it may be in flight: wait for that worker's token."""
    spent: str = ""
    """Why it is never sent again."""


def plan_request(
    intent: RefreshIntent | None, refresh_token: str, *, holder: str, unanswered: int
) -> Plan:
    """Decide about the refresh token with fingerprint ``refresh_token`` (pure logic).

    ``intent`` is what the store recorded, ``holder`` this refresher's name, ``unanswered``
    how many of this process's requests with it ended without an answer.
    """
    made = unanswered
    if intent is not None and intent.refresh_token == refresh_token:
        if intent.state == "spent":
            return Plan(spent=intent.reason or "marked spent in the store")
        if intent.state == "sending" and intent.holder != holder:
            return Plan(wait_for=intent)
        made = max(made, intent.attempts)
    if made >= MAX_ATTEMPTS:
        return Plan(spent=f"{made} token requests with it got no answer")
    return Plan(attempt=made + 1)


def join_wait(
    intent: RefreshIntent | None, refresh_token: str, *, holder: str, now: float, limit: float
) -> float:
    """Seconds a call should wait, before going out, for the refresh that ``intent`` (read
    from the store) announces; 0: send now (pure logic).

    ``refresh_token`` is the fingerprint of the refresh token of the token the call holds,
    ``holder`` this refresher's name, ``now`` the time (seconds since the epoch). Only a
    ``sending`` intent of another refresher, about that refresh token, is waited for: that
    worker met an expiry with the same session and is fetching its successor. At most until
    ``limit`` seconds after the intent was written (a worker's clock running ahead never
    makes it longer): an intent older than that is a refresh that died, not one under way.
    """
    if (
        intent is None
        or intent.state != "sending"
        or intent.holder == holder
        or intent.refresh_token != refresh_token
    ):
        return 0.0
    return max(0.0, min(limit, intent.since + limit - now))


def _host(token: Token | None) -> str | None:
    if token is None or token.instance_url is None:
        return None
    return urlsplit(token.instance_url).netloc or None


def _holder_name() -> str:
    return f"{socket.gethostname()}/{os.getpid()}/{os.urandom(4).hex()}"


class Refresher:
    """Holds this process's current token and serialises its replacement through a store.

    ``seed`` is the token to start from (an ``OAuth2Session``'s); None asks ``grant`` for the
    first one (credential grants), unless the store already holds one. A store whose refresh
    token is spent takes a seed with another refresh token in its place. ``on_change`` is
    told about every new token (refreshed here or adopted), e.g. to keep
    ``OAuth2Session.token`` current. ``on_refresh`` (the session's ``token_updater``) is
    called only for tokens refreshed here, after the store has them (or failed to take
    them), still under this process's lock so saved tokens are written in the order they
    were issued. If either raises, the new token is already in use and the error
    propagates. ``listener`` gets a :class:`RefreshEvent` for each refresh, adoption,
    failure and instance move.
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
        self._breaker = breaker if breaker is not None else NO_BREAKER
        self._after_fork()
        self._version = 0
        """Store version of the current token; while it is unstored, the version it replaces."""
        self._unstored = False
        """The current token's store write failed: the store is behind this process."""
        self._spent: dict[str, ReauthorizationRequiredError] = {}
        """Refresh tokens (by fingerprint) never to be sent again, and why."""
        self._unanswered: dict[str, int] = {}
        """Refresh tokens (by fingerprint) whose requests here ended without an answer."""
        self._worked: Generation | None = None
        self._rejected: Generation | None = None
        self._generation = Generation(self._seed(seed), 1)
        self._peek: Callable[[int], StoredToken | None] | None = getattr(store, "peek", None)
        """The store's cheap look for a newer token, asked before every call (or None)."""
        self._peek_intent: Callable[[int], RefreshIntent | None] | None = getattr(
            store, "peek_intent", None
        )
        """The store's cheap look for the intent of a refresh under way (or None)."""
        self._joined: RefreshIntent | None = None
        """The last intent whose refresh a call waited for in vain: not waited for again."""
        reset_in_child(self)

    def _after_fork(self) -> None:
        # In a child every lock starts free (the thread that held one does not exist there)
        # and the holder name changes: the parent's intents are not the child's.
        self._lock = threading.Lock()
        """Serialises refreshes; held for a whole token request."""
        self._guard = threading.Lock()
        """Short sections only (verdicts, breaker, async locks): event loops take it."""
        self._refreshing: Generation | None = None
        """The generation a refresh of this process is replacing now (under ``_lock``); in
        a child, none (the thread that ran the parent's does not exist there)."""
        self._async_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._holder = _holder_name()

    @property
    def current(self) -> Generation:
        """The generation to send now. Reading it takes no lock (generations are replaced
        whole): a store with ``peek`` is asked first for a newer token, which is adopted
        (:meth:`_adopt_peeked`), so a worker that did not meet an expiry sends its next call
        with the token another worker stored instead of failing once with the old one."""
        if self._peek is not None:
            newer = self._peek(self._version)
            if newer is not None:
                return self._adopt_peeked(newer)
        return self._generation

    def begin(self) -> tuple[Generation, bool]:
        """The generation to send a call with (:attr:`current`), and whether a refresh of its
        token is under way, in this process or announced in the store by another worker's
        intent: the call should then wait for it (:meth:`join`) rather than go out with a
        session that most likely expired. A look at an attribute, and the store's
        ``peek_intent`` (a ``stat``, a look at memory)."""
        generation = self.current
        return generation, self._refreshing is generation or self._joinable(generation) is not None

    def _joinable(self, generation: Generation) -> tuple[RefreshIntent, float] | None:
        """:meth:`_announced` for ``generation``, while it is this process's current one."""
        found = self._announced(generation.token)
        return found if found is not None and generation is self._generation else None

    def _announced(self, token: Token) -> tuple[RefreshIntent, float] | None:
        """The intent of another worker's refresh of ``token`` (this process's current
        one), as the store's ``peek_intent`` tells of it, and how long to wait for it
        (:func:`join_wait`); None: nothing to wait for."""
        if self._peek_intent is None or self._unstored or not token.refresh_token:
            return None
        intent = self._peek_intent(self._version)
        if intent is None or intent == self._joined:
            return None
        wait = join_wait(
            intent,
            fingerprint(token.refresh_token),
            holder=self._holder,
            now=time.time(),
            limit=self._overlap_wait,
        )
        return (intent, wait) if wait > 0 else None

    def join(self, sent: Generation) -> Generation:
        """Wait for the refresh of ``sent``'s token that :meth:`begin` found under way, then
        return the generation to send with: the new token's, or ``sent``'s own when that
        refresh ended without a token or took too long (the call then goes out with it and
        recovers as any call that meets an expiry).

        A refresh in this process is waited for until it ends (its lock is free), at most
        ``overlap_wait``; if it failed, its error is raised here (the call does not go out).
        Another worker's, until the store holds its token, its intent
        changes (the refresh failed, or gave way), or ``overlap_wait`` after the intent was
        written; an intent waited for in vain is not waited for again.
        """
        if self._refreshing is sent:
            if self._lock.acquire(timeout=self._overlap_wait):
                self._lock.release()
            # Its failure is this call's too, as for the calls that sent the token: raised
            # now, not after a doomed call and a second token request.
            return self._settled(sent) or self.current
        found = self._joinable(sent)
        stored = None if found is None else self._await_announced(sent.token, *found)
        return self.current if stored is None else self._adopt_peeked(stored, JOINED_REFRESH)

    def _await_announced(
        self, sent: Token, intent: RefreshIntent, wait: float
    ) -> StoredToken | None:
        """Wait up to ``wait`` seconds for the token of the refresh ``intent`` announced:
        the store's newer token once it holds one (also when it comes just as a pause of
        the wait ends); None as soon as the intent changes without one (that refresh ended
        without a token, or gave way) or this process's token is no longer ``sent``, and
        when the wait runs out (then :attr:`_joined`: not waited for again)."""
        store, version, peek_intent = self._store, self._version, self._peek_intent
        assert peek_intent is not None  # _announced found the intent through it
        pause = _pause(store)
        deadline = time.monotonic() + wait
        while (remaining := deadline - time.monotonic()) > 0:
            stored = _wait_for_change(store, version, min(remaining, pause))
            if stored is not None and stored.version > version:
                return stored
            if self._generation.token is not sent or peek_intent(version) != intent:
                # That refresh ended, maybe with the token it stored just after the wait
                # above gave up: the same look that saw the intent go has it.
                return None if self._peek is None else self._peek(version)
        self._joined = intent
        logger.info(
            "another worker's refresh of this token stored no token within %.3g s of its "
            "start; going on with the token in hand",
            self._overlap_wait,
        )
        return None

    async def ajoin(self, sent: Generation) -> Generation:
        """:meth:`join` for coroutines; the event loop is never blocked. The tasks of one
        loop queue on its asyncio lock (held by a refresh of a task of that loop), and one
        of them at a time waits for another worker's token in a worker thread."""
        import asyncio

        async with self._async_lock():
            settled = self._settled(sent)  # a task's refresh ended: its token, or its failure
            if settled is not None:
                return settled
            return await asyncio.to_thread(self.join, sent)

    def _adopt_peeked(self, stored: StoredToken, reason: str = NEWER_IN_STORE) -> Generation:
        """Adopt ``stored`` (newer than this process's version when peeked) unless a refresh
        holds this process's lock: then the generation as it is (the refresh settles it; a
        call never waits for a token request here). A token that cannot be used is logged
        and left to the next failed call, which reads the store under its rules. ``reason``
        is the ``adopted`` event's."""
        if not self._lock.acquire(blocking=False):
            return self._generation
        try:
            before = self._generation
            try:
                token = self._accept_peeked(stored)
            except TokenStoreError as exc:
                logger.warning("not adopting the store's newer token: %s", exc)
                return before
            if token is not None and token.access_token != before.token.access_token:
                self._adopt(token)
                self._emit("adopted", reason, None, before.token, token)
                if _host(token) != _host(before.token):
                    logger.info(
                        "the org's instance moved: %s -> %s", _host(before.token), _host(token)
                    )
                    self._emit("instance_moved", reason, None, before.token, token)
            return self._generation
        finally:
            self._lock.release()

    def _accept_peeked(self, stored: StoredToken) -> Token | None:
        """``stored`` (from ``peek``) accepted (see :meth:`_accept`), or None when this
        process caught up with it since the look. Under this process's lock."""
        if stored.version <= self._version:
            return None
        unstored = self._unstored
        token = self._accept(stored)
        if unstored:
            self._drop_unstored(stored)
        return token

    @property
    def token(self) -> Token:
        """The current token."""
        return self._generation.token

    @property
    def store(self) -> TokenStore:
        """Where the token is shared."""
        return self._store

    # --- starting over ---------------------------------------------------------------------

    def _seed(self, seed: Token | None) -> Token:
        """Adopt the store's token, or fill an empty store (or a spent one) with ``seed``."""
        with self._store.lock():
            stored = self._store.load()
            if stored is None:
                first = seed if seed is not None else self._grant.fetch(None)
                self._version = self._store.save(first.data, replaces=None)
                return first
            if seed is not None and _replaces_spent(stored, seed):
                logger.info("the store's refresh token is spent; storing the session's token")
                self._version = self._store.save(seed.data, replaces=stored.version)
                return seed
        adopted = self._accept(stored)
        if self._on_change is not None and (
            seed is None or adopted.access_token != seed.access_token
        ):
            self._on_change(adopted)
        return adopted

    def use_token(self, fresh: Token) -> Token:
        """Start over with ``fresh`` (from a new authorisation): store it and send it next.

        It becomes a new version in the store, so every worker adopts it at its next
        expiry, and whatever was known about spent refresh tokens is forgotten.
        """
        with self._lock, self._store.lock():
            stored = self._store.load()
            self._version = self._store.save(
                fresh.data, replaces=None if stored is None else stored.version
            )
            self._unstored = False
            self._spent.clear()
            self._unanswered.clear()
            return self._change(fresh)

    def _accept(self, stored: StoredToken) -> Token:
        """Turn a stored token into a Token, refusing one older than a version already seen."""
        if stored.version < self._version:
            raise TokenStoreError(
                f"the store holds version {stored.version} of the token, older than version "
                f"{self._version} this process already saw (restored from an old "
                "snapshot?); its refresh token may be retired, so it is not used"
            )
        try:
            token = Token(stored.token)
        except ValueError as exc:
            raise TokenStoreError(f"the store holds an unusable token: {exc}") from exc
        self._version = stored.version
        self._unstored = False
        return token

    def _load(self) -> StoredToken:
        stored = self._store.load()
        if stored is None:
            raise TokenStoreError(
                f"the store is empty but held version {self._version} of the token; "
                "refusing to guess which refresh token is current"
            )
        return stored

    # --- refreshing ------------------------------------------------------------------------

    def refresh_after(self, sent: Generation, reason: str = INVALID_SESSION_ID) -> Generation:
        """Return a generation newer than ``sent`` (the object the caller read from
        :attr:`current`), or raise why there is none.

        While the circuit breaker is open this raises :class:`SessionNotRefreshableError`,
        and while the token endpoint's Retry-After lasts :class:`TokenRefreshError`, both
        without a token request.
        """
        with self._lock:
            newer = self._settled(sent)
            if newer is not None:
                return newer
            self._refreshing = sent  # calls about to go out with it wait (begin, join)
            try:
                return self._refresh(sent, reason)
            finally:
                self._refreshing = None

    def _refresh(self, sent: Generation, reason: str) -> Generation:
        """:meth:`refresh_after`'s work, under this process's lock."""
        started = time.monotonic()
        self._check_breaker(started)
        try:
            fresh, kind = self._replace(sent.token, reason)
        except SfRefreshError as exc:
            logger.warning("refreshing the Salesforce session failed: %s", exc)
            if isinstance(exc, TokenRefreshError) and exc.retry_after is not None:
                with self._guard:
                    self._breaker = self._breaker.retry_after(exc.retry_after, time.monotonic())
            if self._generation is sent:  # no new token came of it
                self._generation = Generation(sent.token, sent.epoch + 1, exc)
            self._emit("failed", reason, started, sent.token, self._generation.token, error=exc)
            raise
        self._emit(kind, reason, started, sent.token, fresh)
        if _host(fresh) != _host(sent.token):
            logger.info("the org's instance moved: %s -> %s", _host(sent.token), _host(fresh))
            self._emit("instance_moved", reason, started, sent.token, fresh)
        return self._generation

    async def arefresh_after(
        self, sent: Generation, reason: str = INVALID_SESSION_ID
    ) -> Generation:
        """:meth:`refresh_after` for coroutines; the event loop is never blocked.

        The tasks of one loop queue on an asyncio lock, so one expiry costs one worker thread
        however many tasks meet it; the refresh itself (locks, token request, store I/O)
        runs in that thread, under the same thread lock as synchronous callers. A cancelled
        task leaves its refresh running to completion in the thread, for the others.
        """
        import asyncio

        async with self._async_lock():
            newer = self._settled(sent)
            if newer is not None:
                return newer
            return await asyncio.to_thread(self.refresh_after, sent, reason)

    def _async_lock(self) -> asyncio.Lock:
        import asyncio

        loop = asyncio.get_running_loop()
        # Not self._lock: a worker thread may hold that for a whole token request.
        with self._guard:
            lock = self._async_locks.get(loop)
            if lock is None:
                lock = self._async_locks[loop] = asyncio.Lock()
            return lock

    def _settled(self, sent: Generation) -> Generation | None:
        """Return the generation that replaced ``sent``, None if there is none, or raise the
        failure of the refresh of ``sent``'s token. Safe without the lock: generations are
        replaced whole."""
        current = self._generation
        if current is sent:
            return None
        if current.failure is not None and current.token is sent.token:
            raise cast(SfRefreshError, current.failure).copy()
        return current

    def _change(self, token: Token) -> Token:
        self._generation = Generation(token, self._generation.epoch + 1)
        if self._on_change is not None:
            self._on_change(token)
        return token

    def _adopt(self, token: Token) -> Token:
        """Use ``token`` (already accepted from the store) in place of this process's."""
        logger.info(
            "adopted the token another worker refreshed: %s", fingerprint(token.access_token)
        )
        return self._change(token)

    def _catch_up(self, stored: StoredToken) -> StoredToken:
        """Write this process's unstored token when the store is still where it was left."""
        if not self._unstored:
            return stored
        mine = self._generation.token
        if stored.version > self._version:
            self._drop_unstored(stored)
            return stored
        if stored.version < self._version:
            return stored  # _accept refuses it
        version = self._store.save(mine.data, replaces=stored.version)
        logger.info("stored the token whose earlier write failed (version %d)", version)
        self._version, self._unstored = version, False
        return StoredToken(mine.data, version)

    def _drop_unstored(self, stored: StoredToken) -> None:
        """Say that this process's unstored token gives way to the store's newer one."""
        logger.warning(
            "the store moved on (version %d) while this process's token %s was unstored; "
            "using the store's",
            stored.version,
            fingerprint(self._generation.token.access_token),
        )

    def _replace(self, sent: Token, reason: str) -> tuple[Token, EventKind]:
        """Replace ``sent`` through the store (see the module doc); wait outside its lock.
        A newer token the store's ``peek`` already knows of is adopted first, with no store
        I/O (the Redis store's watch may have it before the failed call came back)."""
        peeked = None if self._peek is None else self._peek(self._version)
        announced = None if peeked is not None else self._announced(sent)
        if announced is not None:  # another worker's refresh of it is under way: no lock try
            peeked = self._await_announced(sent, *announced)
        if peeked is not None:
            token = self._accept_peeked(peeked)
            if token is not None and token.access_token != sent.access_token:
                return self._adopt(token), "adopted"
        # An intent waited for until overlap_wait after it was written (by a call before it
        # went out, or just now) is not waited for again: its refresh token is spent.
        waited_for = self._joined
        for _ in range(_MAX_ROUNDS):
            overlap: RefreshInProgressError | None = None
            ahead = self._intent_ahead(sent)
            with self._store_lock(sent, ahead) as locked:
                if isinstance(locked, Token):
                    return self._adopt(locked), "adopted"
                # Recorded with the lock if the store held no intent (_store_lock hands
                # ``ahead`` over only for a lock at this process's version).
                recorded = (
                    ahead is not None and locked.version == self._version and not locked.intent
                )
                stored = self._catch_up(locked)
                if stored.version != self._version:
                    token = self._accept(stored)  # refuses an older version
                    if token.access_token != sent.access_token:
                        return self._adopt(token), "adopted"
                fp = fingerprint(sent.refresh_token) if sent.refresh_token else None
                plan = Plan(attempt=1)
                if fp is not None:
                    known = self._spent.get(fp)
                    if known is not None:
                        raise known.copy()
                    plan = plan_request(
                        stored.intent,
                        fp,
                        holder=self._holder,
                        unanswered=self._unanswered.get(fp, 0),
                    )
                    if plan.spent:
                        raise self._spend(fp, stored.version, plan.spent)
                    if plan.wait_for is not None and plan.wait_for == waited_for:
                        raise self._spend(
                            fp,
                            stored.version,
                            f"used by a refresh of {waited_for.holder} that never stored its "
                            "result (the worker stopped, lost its lock, or could not write)",
                        )
                if plan.wait_for is None:
                    try:
                        return self._exchange(sent, stored, fp, plan.attempt, reason, recorded)
                    except RefreshInProgressError as exc:
                        overlap = exc
            # Another worker's refresh may bring the token: wait for it without the lock.
            changed = self._await_change(stored, intent_too=overlap is None)
            if changed is not None and changed.version > stored.version:
                return self._adopt(self._accept(changed)), "adopted"
            if overlap is not None:
                raise TokenRefreshError(
                    "the refresh token was in use by another refresh whose token did not reach "
                    f"the store within {self._overlap_wait:g} s",
                    error=overlap.error,
                    description=overlap.description,
                ) from overlap
            # The intent changed (decide again), or it did not for overlap_wait: that
            # worker's refresh never stored its result.
            waited_for = None if changed is not None else plan.wait_for
        raise TokenRefreshError(
            "other workers' refreshes kept changing the store; not refreshing this time"
        )

    def _intent_ahead(self, sent: Token) -> RefreshIntent | None:
        """The intent a store that can (the Redis store) records with its lock when it holds
        none: the one the refresh of ``sent`` would write next, so the token request follows
        the lock with no round trip between. With no intent stored, the plan made under the
        lock is this one (same refresh token, holder and unanswered count: this process's
        lock is held throughout). None when this refresh would not send the refresh token at
        once whatever the store holds (spent here, no attempt left), or writes something
        else first (this process's unstored token): a recorded intent is always followed by
        its request, as one written just before it."""
        if (
            not takes_intent(getattr(self._store, "try_lock", None))
            or self._unstored
            or not sent.refresh_token
        ):
            return None
        fp = fingerprint(sent.refresh_token)
        if fp in self._spent:
            return None
        plan = plan_request(None, fp, holder=self._holder, unanswered=self._unanswered.get(fp, 0))
        if not plan.attempt:
            return None
        return self._intent(fp, "sending", plan.attempt)

    @contextmanager
    def _store_lock(
        self, sent: Token, ahead: RefreshIntent | None = None
    ) -> Iterator[Token | StoredToken]:
        """Hold the store's lock for the block, yielding what the store holds (read under the
        lock), unless the store holds, or gets while the lock is busy, a token newer than
        ``sent``: then yield that token (accepted), unlocked. ``ahead`` goes to the store's
        ``try_lock`` (see :meth:`_intent_ahead`).

        The lock is for refreshing. A worker that only needs the token another worker is
        refreshing learns of it by a plain read, or by :func:`_wait_for_change` (returning
        when the store changed: the Redis writer wakes it, the file store is looked at from
        every few ms on), never by queueing on the lock. ``try_lock`` takes the lock only
        while the stored version is still the one read, so the worker that wins it is one
        that must refresh (or must find why not: an intent, a spent token). Waits are
        bounded by the store's ``lock_wait``. Without ``try_lock`` (a store of your own),
        the lock is waited for.

        A store with both ``try_lock`` and ``wait_for_change`` is first tried at this
        process's own version, without a read before: the worker that must refresh takes
        the lock in one step, one that finds it busy goes straight to waiting, and one that
        finds the store moved on gets the newer token from ``try_lock`` (the built-in stores
        hand it over) or at once from ``wait_for_change``. Every read and round trip saved
        here is on the path all the fleet's waiting workers wait on.

        A store with ``wait_for_change`` ends a pause as soon as the token changes (looking
        at itself from its ``poll_interval`` on), so the pause only sets how often the lock
        is tried again in case its holder ends without a token: after MAX_POLL_INTERVAL,
        then twice that, up to a second, as a try costs more than a look (an open and a
        flock, Redis round trips) and is only useful then. Without it, pauses start at
        the store's ``poll_interval`` and double up to MAX_POLL_INTERVAL.
        """
        store = self._store
        lock_wait = float(getattr(store, "lock_wait", DEFAULT_LOCK_WAIT))
        watched = hasattr(store, "wait_for_change")
        delay = _pause(store)
        longest = _LOCK_RETRY_MAX if watched else MAX_POLL_INTERVAL
        deadline = time.monotonic() + lock_wait
        seen: StoredToken | None = None
        # The version to try the lock at; None: read the store first.
        version = self._version if watched and hasattr(store, "try_lock") else None
        while True:
            if version is None:
                stored = seen or self._load()
                if (
                    stored.version > self._version
                    and stored.token.get("access_token") != sent.access_token
                ):
                    yield self._accept(self._catch_up(stored))  # _catch_up: log an unstored loss
                    return
                version = stored.version
            # The intent only for the version this process holds: for another one the
            # refresher may stop before any request (an older version is refused).
            intent = ahead if version == self._version else None
            with _try_lock(store, version, intent) as held:
                if holds_lock(held, version):
                    # The store's own read under the lock where it gives one (no second read).
                    yield held if isinstance(held, StoredToken) else self._load()
                    return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TokenStoreError(
                    f"could not take the lock of {store!r} within {lock_wait:g} s (another "
                    "worker held it for longer than a refresh takes, without storing a token)"
                )
            if isinstance(held, StoredToken):  # not locked: the store holds another version
                seen = held
            else:
                seen = _wait_for_change(store, version, min(delay, remaining))
                delay = min(delay * 2, longest)
            version = None

    def _exchange(
        self,
        sent: Token,
        stored: StoredToken,
        fp: str | None,
        attempt: int,
        reason: str,
        recorded: bool = False,
    ) -> tuple[Token, EventKind]:
        """Make the token request (under the store's lock) and store what it brings; the
        intent first, unless the store ``recorded`` it with the lock."""
        if fp is not None and not recorded:
            self._store.write_intent(
                self._intent(fp, "sending", attempt),
                version=stored.version,
            )
        logger.info("%s; refreshing the session", reason)
        try:
            fresh = self._grant.fetch(sent)
        except RefreshInProgressError:
            if fp is not None:
                self._note(None, stored.version)
            raise
        except TokenRefreshError as exc:
            if fp is None:
                raise
            if exc.unanswered:
                self._unanswered[fp] = attempt
                if attempt >= MAX_ATTEMPTS:
                    raise self._spend(
                        fp, stored.version, f"{attempt} token requests with it got no answer", exc
                    ) from exc
                self._note(
                    self._intent(fp, "unanswered", attempt),
                    stored.version,
                )
            elif exc.error == "invalid_grant":
                raise self._spend(fp, stored.version, _refusal(exc), exc) from exc
            else:
                self._note(None, stored.version)
            raise
        store_error: TokenStoreError | None = None
        try:
            version = self._store.save(fresh.data, replaces=stored.version)
        except TokenStoreError as exc:
            store_error = exc
        else:
            self._version, self._unstored = version, False
        self._change(fresh)
        if store_error is not None:
            self._version, self._unstored = stored.version, True
        if self._on_refresh is not None:
            self._on_refresh(fresh.as_dict())
        if store_error is not None:
            if isinstance(store_error, TokenStoreConflictError):
                logger.error("a newer token reached the store during this refresh: %s", store_error)
            else:
                logger.error(
                    "the new token could not be stored (%s); it is in use here and the next "
                    "refresh stores it first",
                    store_error,
                )
            raise store_error
        return fresh, "refreshed"

    def _intent(self, fp: str, state: IntentState, attempts: int, why: str = "") -> RefreshIntent:
        """This refresher's intent about the refresh token ``fp``, as of now."""
        return RefreshIntent(fp, state, attempts, self._holder, time.time(), why)

    def _note(self, intent: RefreshIntent | None, version: int) -> None:
        """Record what became of a token request in the store; this process remembers it
        anyway, so a store that fails now only costs the other workers a wait."""
        try:
            self._store.write_intent(intent, version=version)
        except TokenStoreError as exc:
            logger.warning("could not record the token request's outcome in the store: %s", exc)

    def _spend(
        self, fp: str, version: int, why: str, cause: TokenRefreshError | None = None
    ) -> ReauthorizationRequiredError:
        """Mark a refresh token as never to be sent again, here and in the store."""
        error = ReauthorizationRequiredError(
            f"the refresh token {fp} can no longer be used ({why}); it is not sent again: "
            "authorise the connected app again, or hand the transport a new token",
            error=cause.error if cause is not None else None,
            description=cause.description if cause is not None else None,
            status_code=cause.status_code if cause is not None else None,
        )
        self._spent[fp] = error
        self._note(self._intent(fp, "spent", 0, why), version)
        return error

    def _await_change(self, seen: StoredToken, *, intent_too: bool) -> StoredToken | None:
        """Poll the store (without its lock) until its version (or, with ``intent_too``, its
        intent) differs from ``seen``; None when nothing changed within ``overlap_wait``.
        A new version ends each pause at once where the store has ``wait_for_change``."""
        logger.info("another refresh of this token may be running; waiting for its token")
        deadline = time.monotonic() + self._overlap_wait
        delay = 0.05
        newer: StoredToken | None = None
        while True:
            stored = newer or self._load()
            if stored.version > seen.version or (intent_too and stored.intent != seen.intent):
                return stored
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            newer = _wait_for_change(self._store, seen.version, min(delay, remaining))
            delay = min(delay * 2, 1.0)

    # --- sessions a refresh cannot save -------------------------------------------------------

    def judge(self, sent: Generation, usable: bool, reason: str = INVALID_SESSION_ID) -> None:
        """Record whether the session of ``sent`` was accepted (``usable``) or rejected at once.

        Only the current generation is judged, each once: a session that has worked once is
        usable, and the rejection of a token that was already replaced says nothing. Feeds
        the circuit breaker: ``threshold`` refreshed sessions in a row rejected at once open
        it. The first verdict on a generation takes a short lock; later ones take none.
        """
        if sent is not self._generation or self._worked is sent:
            return
        now = time.monotonic()
        with self._guard:
            if sent is not self._generation or self._worked is sent:
                return
            if usable:
                self._worked = sent
                self._breaker = self._breaker.record(True, now)
                return
            if self._rejected is sent:
                return
            self._rejected = sent
            before = self._breaker
            self._breaker = before.record(False, now)
            opened = self._breaker.opened_by(before)
        error = f"Salesforce rejected a freshly refreshed session ({reason})"
        self._emit("not_refreshable", reason, None, sent.token, sent.token, error=error)
        if opened:
            logger.warning(
                "%d refreshed sessions in a row were rejected at once; no token requests for %g s",
                self._breaker.rejected,
                self._breaker.cooldown,
            )
            self._emit("circuit_open", reason, None, sent.token, sent.token, error=error)

    def _check_breaker(self, now: float) -> None:
        breaker = self._breaker
        if breaker.is_open(now):
            raise SessionNotRefreshableError(
                "not refreshing: the last refreshed sessions were rejected at once",
                code=INVALID_SESSION_ID,
                attempts=f"circuit breaker open for another {breaker.open_until - now:.0f} s",
            )
        if now < breaker.not_before:
            remaining = breaker.not_before - now
            raise TokenRefreshError(
                f"the token endpoint asked to wait; {remaining:.0f} s left before another "
                "token request",
                retry_after=remaining,
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


def _try_lock(
    store: TokenStore, version: int, intent: RefreshIntent | None = None
) -> AbstractContextManager[bool | StoredToken]:
    """``store.try_lock(version)`` (``intent=`` too, when given); for a store without it,
    its ``lock()`` (waited for)."""
    try_lock = getattr(store, "try_lock", None)
    if try_lock is None:
        return _waited_lock(store)
    held = try_lock(version) if intent is None else try_lock(version, intent=intent)
    return cast(AbstractContextManager[bool | StoredToken], held)


@contextmanager
def _waited_lock(store: TokenStore) -> Iterator[bool]:
    with store.lock():
        yield True


def _pause(store: TokenStore) -> float:
    """Seconds between two looks at ``store`` while waiting for another worker's token: a
    store with ``wait_for_change`` ends each pause itself when the token changes, so the
    pause is long (MAX_POLL_INTERVAL); another is looked at every ``poll_interval``."""
    if hasattr(store, "wait_for_change"):
        return MAX_POLL_INTERVAL
    return float(getattr(store, "poll_interval", DEFAULT_POLL_INTERVAL))


def _wait_for_change(store: TokenStore, version: int, timeout: float) -> StoredToken | None:
    """``store.wait_for_change(version, timeout)``; for a store without it, a sleep and then
    its ``peek`` where it has one. Returns the newer token the store read on the way, if it
    says so (else the caller reads)."""
    wait = getattr(store, "wait_for_change", None)
    if wait is None:
        time.sleep(timeout)
        peek = getattr(store, "peek", None)
        newer = None if peek is None else peek(version)
    else:
        newer = wait(version, timeout)
    return newer if isinstance(newer, StoredToken) and newer.version != version else None


def _refusal(exc: TokenRefreshError) -> str:
    """The token endpoint's public words for a permanent refusal (no secret)."""
    return f"{exc.error}: {exc.description}" if exc.description else str(exc.error)


def _replaces_spent(stored: StoredToken, seed: Token) -> bool:
    """Whether ``seed`` brings a new refresh token for a store whose refresh token is spent."""
    intent = stored.intent
    current = stored.token.get("refresh_token")
    return (
        intent is not None
        and intent.state == "spent"
        and isinstance(current, str)
        and intent.refresh_token == fingerprint(current)
        and seed.refresh_token is not None
        and seed.refresh_token != current
    )
