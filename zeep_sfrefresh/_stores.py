"""Token stores: where the current token lives when several transports or processes share it.

With refresh-token rotation every refresh retires the refresh token it used, and using a
retired one again revokes the whole token family. Workers that refresh on their own are
therefore an outage; they must refresh one at a time and hand the new token to each other.
A store provides what that takes: a lock every refresher holds, a read of the current token,
a compare-and-set write that cannot overwrite a newer token, and a write-ahead
:class:`RefreshIntent` saying that the stored refresh token is being (or was) used, so no
worker sends it twice.

When many workers meet one expiry, one of them refreshes and the others only need its token.
A store may let them learn of it without queueing on the lock: ``try_lock(version)`` takes the
lock only while the token is still ``version`` and never waits, and
``wait_for_change(version, timeout)`` returns as soon as another version may be stored (the
file store looks at its file, the Redis store is woken by the writer). Waiters then adopt
the new token without the lock, so an expiry costs the fleet one lock hold, not one per worker.

The refresh algorithm itself lives once, in :mod:`zeep_sfrefresh._refresh`; stores only keep
bytes. A store of your own (a database row, say) implements :class:`TokenStore`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, get_args

try:
    import fcntl
except ImportError:  # Windows: the lock is filelock's (see _file_lock)
    fcntl = None  # type: ignore[assignment]

from ._checks import check_flag, check_seconds
from ._errors import TokenStoreConflictError, TokenStoreError
from ._forks import reset_in_child
from ._tokens import fingerprint

__all__ = [
    "DEFAULT_LOCK_WAIT",
    "DEFAULT_POLL_INTERVAL",
    "MAX_POLL_INTERVAL",
    "FileTokenStore",
    "IntentState",
    "MemoryTokenStore",
    "RefreshIntent",
    "StoredToken",
    "TokenStore",
]

logger = logging.getLogger(__name__)

DEFAULT_LOCK_WAIT = 30.0
"""Seconds a refresher waits for a store's lock before giving up with TokenStoreError."""

DEFAULT_POLL_INTERVAL = 0.002
"""Seconds before a waiting worker looks again at a busy lock or an unchanged store, at first.

Each further wait doubles, up to :data:`MAX_POLL_INTERVAL`: a refresh that takes a few
milliseconds is noticed within a few milliseconds, and a long one costs a look every 50 ms."""

MAX_POLL_INTERVAL = 0.05
"""The longest pause between two looks at a busy lock or an unchanged store (seconds)."""

IntentState = Literal["sending", "unanswered", "spent"]
"""``sending``: a token request with the refresh token may be in flight (or its sender died).
``unanswered``: a request with it got no answer; the server may have rotated it.
``spent``: it is never sent again (refused for good, or unanswered twice)."""


@dataclass(frozen=True)
class RefreshIntent:
    """What a store records about the use of its token's refresh token.

    Written (under the lock) before the token request and cleared by the write of the new
    token, so a worker that finds one knows that the refresh token may already be spent:
    another worker lost its lock mid-refresh, died, or got no answer. It names the refresh
    token by fingerprint only.
    """

    refresh_token: str
    """``sha256:`` fingerprint of the refresh token concerned."""
    state: IntentState
    """``sending`` (a token request with it may be in flight, or its sender died),
    ``unanswered`` (a request with it got no answer: the server may have rotated it) or
    ``spent`` (it is never sent again)."""
    attempts: int
    """Token requests made with this refresh token that ended without a token."""
    holder: str
    """Which refresher wrote it (``host/pid/id``)."""
    since: float
    """When, in seconds since the epoch."""
    reason: str = ""
    """Why a ``spent`` refresh token is spent (no secret)."""

    def to_json(self) -> dict[str, Any]:
        """The intent as a JSON-ready dict, as stores write it."""
        return asdict(self)

    @classmethod
    def from_json(cls, value: object) -> RefreshIntent:
        """Read one back; ValueError when ``value`` is not an intent this module wrote."""
        if not isinstance(value, dict):
            raise ValueError("not an object")
        try:
            intent = cls(**value)
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        if (
            not isinstance(intent.refresh_token, str)
            or intent.state not in get_args(IntentState)
            or not isinstance(intent.attempts, int)
            or not isinstance(intent.holder, str)
            or not isinstance(intent.since, int | float)
            or not isinstance(intent.reason, str)
        ):
            raise ValueError("unexpected field values")
        return intent


@dataclass(frozen=True)
class StoredToken:
    """A token as a store holds it: the token dict, the version it was written as, and the
    intent recorded on it, if any.

    Versions start at 1 and grow by one per token written (never per intent), so a reader
    can tell a newer token from an older one (and notice a store restored from a backup).
    """

    token: Mapping[str, Any]
    """The token dict (``access_token``, ``refresh_token``, ``instance_url``, ...)."""
    version: int
    """The version it was written as: 1 for the first token, one more for each after it."""
    intent: RefreshIntent | None = None
    """The intent recorded on it, if any."""

    def __repr__(self) -> str:
        intent = f", intent={self.intent.state}" if self.intent is not None else ""
        return (
            f"StoredToken(version={self.version}, "
            f"access_token={fingerprint(self.token.get('access_token'))}{intent})"
        )


class TokenStore(Protocol):
    """What a token store must do. Implement it to keep tokens somewhere of your own.

    The refresher calls :meth:`load`, :meth:`save` and :meth:`write_intent` while holding
    :meth:`lock`, except :meth:`load` when it looks for (or waits for) another worker's
    token, and :meth:`save` when it stores a token whose first write failed (the version
    check keeps that safe). Every method raises :class:`TokenStoreError` (or a subclass) on
    failure, never a backend's own exception.

    Two more methods are optional (both built-in file and Redis stores have them); without
    them a worker that meets an expiry reads the store, and if no newer token is there yet,
    waits on :meth:`lock` and reads it again under the lock:

    * ``try_lock(version: int) -> AbstractContextManager[bool | StoredToken]``: hold the
      lock for the block and yield True if it is free and the stored version is still
      ``version``; otherwise yield False at once, without it (checked atomically where the
      store can). In place of True it may yield the :class:`StoredToken` it read under the
      lock (the built-in stores do), which spares the refresher a read of its own; and in
      place of False, when the store holds another version, the :class:`StoredToken` it
      found, not holding the lock (the built-in stores do). The version tells the two
      apart: the lock is held when the yielded token is ``version``.
    * ``wait_for_change(version: int, timeout: float) -> StoredToken | None``: return once
      the stored version may no longer be ``version`` (a notification, or a cheap look), or
      after ``timeout`` seconds; returning early without a change is allowed. It may return
      the newer :class:`StoredToken` it read on the way (the built-in stores do), which
      spares the refresher a read of its own; None otherwise. Without it the refresher
      sleeps ``timeout`` instead.

    With them, waiters adopt another worker's token as soon as it is stored and never
    queue on the lock to do so. The refresher reads ``lock_wait`` and ``poll_interval``
    (seconds) from the store when it has them.

    Two more optional methods spare the workers that did not meet an expiry the failed call
    each would otherwise make with the old token:

    * ``peek(version: int) -> StoredToken | None``: the stored token when the store knows,
      without a round trip, that it is newer than ``version``; None otherwise. The refresher
      calls it before every call, so it must cost microseconds, never block and never raise
      (a look that fails or misses a change is None: the call that then meets the expiry
      recovers through the store as without it). The built-in stores have it: a ``stat``
      of the file, a look at memory, and for Redis a look (a non-blocking read of a socket)
      at an ``XREAD`` of the change stream kept under way on a connection of its own.
    * ``peek_intent(version: int) -> RefreshIntent | None``: the intent recorded for
      ``version`` when the store knows it as cheaply (same rules as ``peek``); None
      otherwise. A ``sending`` intent of another refresher on the token this process holds
      makes a call wait for that refresh's token (at most ``overlap_wait`` after the intent
      was written, ending as soon as the token is stored or the intent changes) instead of
      going out with a session that most likely expired. The built-in stores have it: a
      ``stat`` of the intent file, a look at memory, the intents the Redis watch read.
    """

    def lock(self) -> AbstractContextManager[object]:
        """Hold the store-wide refresh lock for the block; bounded wait, then TokenStoreError.

        It must be released if its holder dies (a killed process must not block the fleet).
        """
        ...

    def load(self) -> StoredToken | None:
        """Return the current token (with its intent), or None when the store is empty."""
        ...

    def save(self, token: Mapping[str, Any], *, replaces: int | None) -> int:
        """Write ``token`` if the stored version is still ``replaces`` (None: store empty).

        Returns the new version (``replaces + 1``, or 1) and clears any intent. Raises
        :class:`TokenStoreConflictError` when another writer got there first: a writer whose
        lock expired must not overwrite a newer token.
        """
        ...

    def write_intent(self, intent: RefreshIntent | None, *, version: int) -> None:
        """Record ``intent`` on the stored token (None: clear it) if its version is ``version``.

        Raises :class:`TokenStoreConflictError` when the version moved on, and
        :class:`TokenStoreError` when the caller no longer holds the lock (a lease that
        expired): it is the last check before a token request.
        """
        ...


_RECORDS_INTENT = "_zeep_sfrefresh_records_intent"

_F = TypeVar("_F", bound=Callable[..., Any])


def records_intent(try_lock: _F) -> _F:
    """Mark a store's ``try_lock`` as one that takes ``intent=`` (recorded with the lock when
    the store holds none). On the method, not the class: a subclass that overrides
    ``try_lock`` without it is never handed an intent."""
    vars(try_lock)[_RECORDS_INTENT] = True
    return try_lock


def takes_intent(try_lock: object) -> bool:
    """Whether ``try_lock`` (a store's bound method) was marked by :func:`records_intent`."""
    return bool(getattr(try_lock, _RECORDS_INTENT, False))


def holds_lock(held: object, version: int) -> bool:
    """Whether what ``try_lock(version)`` yielded means the lock is held: True, or the
    token read under it (``version``); not False, nor a token of another version (what the
    store held instead, the lock not taken)."""
    return held.version == version if isinstance(held, StoredToken) else bool(held)


def poll_until(
    attempt: Callable[[], bool],
    deadline: float,
    poll_interval: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
) -> bool:
    """Call ``attempt`` until it returns True (then True) or ``clock()`` reaches
    ``deadline`` (then False); at least once. The pauses start at ``poll_interval`` and
    double up to :data:`MAX_POLL_INTERVAL` (never past the deadline): short waits end soon
    after the lock is free, long ones cost little. ``clock`` and ``sleep`` are
    ``time.monotonic`` and ``time.sleep`` except to check the schedule itself."""
    delay = poll_interval
    while not attempt():
        remaining = deadline - clock()
        if remaining <= 0:
            return False
        sleep(min(delay, remaining))
        delay = min(delay * 2, max(poll_interval, MAX_POLL_INTERVAL))
    return True


def watch_until(
    changed: Callable[[], bool],
    deadline: float,
    poll_interval: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
) -> bool:
    """Call ``changed`` until it returns True (then True) or ``clock()`` reaches
    ``deadline`` (then False); at least once. The pauses are ``poll_interval`` at first,
    then a tenth of the time waited so far, up to :data:`MAX_POLL_INTERVAL` (never past the
    deadline): a change is seen within ``poll_interval`` while a refresh takes milliseconds,
    within about a tenth of the wait when the token endpoint is slow, for a few dozen looks a
    second at most. ``clock`` and ``sleep`` as for :func:`poll_until`."""
    started = clock()
    while not changed():
        now = clock()
        if now >= deadline:
            return False
        pause = min(max(poll_interval, (now - started) / 10), MAX_POLL_INTERVAL)
        sleep(min(pause, deadline - now))
    return True


def newer_than(stored: StoredToken | None, version: int) -> StoredToken | None:
    """``stored`` when it is a version newer than ``version``, else None: what a ``peek``
    answers."""
    return stored if stored is not None and stored.version > version else None


def _identity(path: Path) -> tuple[int, int, int] | None:
    """What tells a new version of ``path`` from the last (inode, size, mtime: every write
    replaces the file), from one ``stat``; None when it cannot be read (the caller's next
    read says what is wrong)."""
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def _intent_record(raw: bytes) -> tuple[int, RefreshIntent | None] | None:
    """The version and intent of a ``.intent`` file's bytes; None when they are not a record
    this module wrote (an empty file left by a power loss, say)."""
    try:
        record = json.loads(raw)
        version, intent = record["version"], record["intent"]
        return version, None if intent is None else RefreshIntent.from_json(intent)
    except (ValueError, TypeError, KeyError):
        return None


def _copy(stored: StoredToken) -> StoredToken:
    """A copy whose token dict may be changed without changing ``stored``'s."""
    return StoredToken(dict(stored.token), stored.version, stored.intent)


def next_version(replaces: int | None) -> int:
    """The version a token written over version ``replaces`` (None: an empty store) gets."""
    return 1 if replaces is None else replaces + 1


def _conflict(found: int | None, replaces: int | None) -> TokenStoreConflictError:
    return TokenStoreConflictError(
        f"the store holds version {found}, not {replaces}: another writer replaced the token"
    )


class MemoryTokenStore:
    """A store in this process's memory: the default, shared by transports on one session.

    Two transports built on the same ``OAuth2Session`` (a sync and an async one, say) get the
    same instance from :meth:`for_session`, so they share one refresh.
    """

    def __init__(self, *, lock_wait: float = DEFAULT_LOCK_WAIT) -> None:
        self.lock_wait = check_seconds("lock_wait", lock_wait)
        """Seconds :meth:`lock` waits for another thread's refresh before TokenStoreError."""
        self._lock = threading.Lock()
        self._data_lock = threading.Lock()
        self._stored: StoredToken | None = None
        reset_in_child(self)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._data_lock = threading.Lock()

    @classmethod
    def for_session(cls, session: object) -> MemoryTokenStore:
        """Return the store belonging to ``session``, creating it on first use."""
        with _SESSION_STORES_LOCK:
            store = _SESSION_STORES.get(session)
            if store is None:
                store = _SESSION_STORES[session] = cls()
            return store

    def __repr__(self) -> str:
        return f"MemoryTokenStore({self._stored!r})"

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold this store's lock for the block; see ``TokenStore.lock``."""
        if not self._lock.acquire(timeout=self.lock_wait):
            raise TokenStoreError(
                f"could not take the in-memory token lock within {self.lock_wait:g} s"
            )
        try:
            yield
        finally:
            self._lock.release()

    def load(self) -> StoredToken | None:
        """The token held, or None; see ``TokenStore.load``. A copy, as a read from any
        other store is: changing it does not change the store."""
        stored = self._stored
        return None if stored is None else _copy(stored)

    def peek(self, version: int) -> StoredToken | None:
        """The token held (a copy) when it is newer than ``version``, else None: what a
        transport on the same session refreshed, taken before a call that would fail without
        it; see ``TokenStore``."""
        newer = newer_than(self._stored, version)
        return None if newer is None else _copy(newer)

    def peek_intent(self, version: int) -> RefreshIntent | None:
        """The intent recorded for ``version``, else None; see ``TokenStore``."""
        stored = self._stored
        return stored.intent if stored is not None and stored.version == version else None

    def save(self, token: Mapping[str, Any], *, replaces: int | None) -> int:
        """Compare-and-set on the version; see ``TokenStore.save``."""
        with self._data_lock:
            found = None if self._stored is None else self._stored.version
            if found != replaces:
                raise _conflict(found, replaces)
            version = next_version(replaces)
            self._stored = StoredToken(dict(token), version)
            return version

    def write_intent(self, intent: RefreshIntent | None, *, version: int) -> None:
        """Record ``intent`` if the version is still ``version``; see
        ``TokenStore.write_intent``."""
        with self._data_lock:
            stored = self._stored
            if stored is None or stored.version != version:
                raise _conflict(None if stored is None else stored.version, version)
            self._stored = StoredToken(stored.token, version, intent)


_SESSION_STORES: weakref.WeakKeyDictionary[object, MemoryTokenStore] = weakref.WeakKeyDictionary()
_SESSION_STORES_LOCK = threading.Lock()


def _reset_module_lock() -> None:
    global _SESSION_STORES_LOCK  # a lock held at fork time would be held forever
    _SESSION_STORES_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_module_lock)


_BUSY = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES})
"""What ``flock(LOCK_NB)`` fails with when another holds the lock (EACCES on some NFS)."""


class _Flock:
    """An exclusive ``flock`` on the lock file: the lock filelock's Unix lock takes, so older
    workers of this store and newer ones exclude each other, for a try costing an ``open``,
    a ``flock`` and an ``fstat`` (filelock's own machinery costs some 30 times that, and a
    fleet meeting an expiry tries the lock once per worker)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free (True), else False at once."""
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(self.path, flags, 0o600)
        if not _locked(fd):
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        """Unlock, then close: the explicit unlock also ends the hold for a forked child
        that still has the descriptor."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def forget(self) -> None:
        """In a forked child: close the parent's descriptor without unlocking. The hold stays
        the parent's, and ends when the parent lets go or dies (not when this child does)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _locked(fd: int) -> bool:
    """``flock`` the open lock file ``fd`` without waiting: True if held, else False with
    ``fd`` closed (busy, or a file another program unlinked in between: not the lock any
    more); any other failure is raised, ``fd`` closed."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_nlink > 0:
            return True
    except OSError as exc:
        os.close(fd)
        if exc.errno in _BUSY:
            return False
        raise
    os.close(fd)
    return False


class _PortableLock:
    """filelock's lock on the lock file, where there is no ``flock`` (Windows)."""

    def __init__(self, path: str) -> None:
        from filelock import FileLock

        self._lock = FileLock(path, mode=0o600, thread_local=False)

    def try_acquire(self) -> bool:
        """Take the lock if it is free (True), else False at once."""
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return False
        return True

    def release(self) -> None:
        """Let the lock go."""
        self._lock.release()

    def forget(self) -> None:
        """Nothing to drop: there is no fork where this lock is used."""


_FileLock = _Flock | _PortableLock


def _file_lock(path: str) -> _FileLock:
    """``flock`` where the platform has it, else filelock's lock."""
    return _PortableLock(path) if fcntl is None else _Flock(path)


class FileTokenStore:
    """A JSON file, shared by the processes of one machine.

    * Written atomically (a temp file in the same folder, fsync, ``os.replace``, fsync of the
      folder), mode 0600 whatever the umask, so a crash leaves the old token or the new one.
    * The intent of a refresh under way goes to ``<name>.intent`` (:attr:`intent_path`),
      atomically but without fsync: one sync fewer before each token request, the token
      file untouched by it (see :meth:`write_intent`). A token file that holds an intent
      itself (written by an earlier release) is still read; a newer ``.intent`` for the
      same version wins.
    * Read like ssh reads a private key: a symlink, a file readable or writable by group or
      others, or a file owned by another user is refused with :class:`TokenStoreError`
      saying how to fix it (the file holds a refresh token).
    * Locked through a separate ``<name>.lock`` file with ``flock`` (the kernel releases it
      when its holder dies, even by SIGKILL; the lock the ``filelock`` package takes on
      POSIX, which this store uses where there is no ``flock``, on Windows). Waiting for it
      is bounded by ``lock_wait`` seconds; a waiter tries it again after ``poll_interval``
      seconds, then after twice that, and so on up to :data:`MAX_POLL_INTERVAL`. A forked
      child gets locks of its own.
    * Waiting for another worker's token (:meth:`wait_for_change`) looks at the file's
      identity (a ``stat``: every write replaces the file) every ``poll_interval`` seconds
      at first, then every tenth of the time waited, and reads the file once it changed.
    * Before every call the refresher asks :meth:`peek` for a newer token: a ``stat`` of the
      file (two or three microseconds on a local disk), and a read only when it changed, so a
      worker that did not meet an expiry sends its next call with the token another worker
      stored instead of failing once with the old one. ``watch=False`` turns the look off
      (a file on a network share, where a ``stat`` may be a round trip).
    * A file that cannot be read or parsed raises :class:`TokenStoreError` and is never
      overwritten: it may hold the only copy of a rotated refresh token.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        lock_wait: float = DEFAULT_LOCK_WAIT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        watch: bool = True,
    ) -> None:
        lock_wait = check_seconds("lock_wait", lock_wait)
        poll_interval = check_seconds("poll_interval", poll_interval)
        check_flag("watch", watch)
        self.path = Path(path).expanduser()
        """The token file (``~`` expanded); its lock is ``<path>.lock``."""
        if self.path.name == ".." or self.path.is_dir():  # "", "." and "/" are folders
            raise ValueError(f"path must name the token file, not a folder: {str(path)!r}")
        self.intent_path = self.path.with_name(self.path.name + ".intent")
        """Where the intent of a refresh under way is recorded (``<path>.intent``)."""
        self.lock_wait = lock_wait
        """Seconds to wait for the lock before raising ``TokenStoreError``."""
        self.poll_interval = poll_interval
        """Seconds before a busy lock or an unchanged file is looked at again, at first (doubling
        up to 50 ms)."""
        self.watch = watch
        """Whether :meth:`peek` looks at the file (else it is always None)."""
        self._peeked: tuple[tuple[int, int, int] | None, StoredToken | None] | None = None
        """The file's identity when :meth:`peek` last read it, and what it read (None: not
        read yet)."""
        self._intent_peeked: (
            tuple[tuple[int, int, int], tuple[int, RefreshIntent | None] | None] | None
        ) = None
        """The intent file's identity when :meth:`peek_intent` last read it, and the version
        and intent it held (None: not read yet, or not an intent record)."""
        self._after_fork()
        reset_in_child(self)

    def _after_fork(self) -> None:
        # Threads of this process queue on _thread_lock; processes on the file lock, which
        # is then only ever held by one thread of ours at a time. A child must not use the
        # parent's hold (it has no copy of the holding thread): it gets locks of its own.
        inherited: _FileLock | None = getattr(self, "_file_lock", None)
        if inherited is not None:
            inherited.forget()
        self._thread_lock = threading.Lock()
        self._file_lock = _file_lock(str(self.path) + ".lock")

    def __repr__(self) -> str:
        return f"FileTokenStore({str(self.path)!r})"

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``<path>.lock`` (``flock``: freed if its holder dies) for the block; see
        ``TokenStore.lock``."""
        if not self._acquire(self.lock_wait):
            raise TokenStoreError(
                f"could not lock {self.path} within {self.lock_wait:g} s "
                "(another refresher holds it for longer than a refresh takes)"
            )
        try:
            yield
        finally:
            self._release()

    @contextmanager
    def try_lock(self, version: int) -> Iterator[StoredToken | Literal[False]]:
        """Hold the lock for the block, yielding the token read under it, if the lock is
        free and the file still holds ``version``. Otherwise, at once and not holding it:
        the token read when the file holds another version (an empty store: False), or
        False when the lock is busy. The version is checked under the lock, which a changed
        one gives back at once: a worker never holds the lock just to find another worker's
        token."""
        locked = self._acquire(0.0)
        try:
            stored = self.load() if locked else None
            if stored is None or stored.version != version:
                if locked:
                    self._release()
                    locked = False
                yield stored or False
            else:
                yield stored
        finally:
            if locked:
                self._release()

    def _acquire(self, wait: float) -> bool:
        """Take this process's thread lock, then the file lock, within ``wait`` seconds
        (0: one try each)."""
        deadline = time.monotonic() + wait
        if not self._thread_lock.acquire(timeout=wait):
            return False
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if poll_until(self._file_lock.try_acquire, deadline, self.poll_interval):
                return True
        except OSError as exc:
            self._thread_lock.release()
            raise TokenStoreError(f"could not lock {self.path}: {exc.strerror}") from exc
        except BaseException:
            self._thread_lock.release()
            raise
        self._thread_lock.release()
        return False

    def _release(self) -> None:
        try:
            self._file_lock.release()
        finally:
            self._thread_lock.release()

    def wait_for_change(self, version: int, timeout: float) -> StoredToken | None:
        """Return the token once the file holds another version than ``version``, or None
        after ``timeout`` seconds (or when the file is gone: the next read says why).

        Between reads it only ``stat``s the file (inode, size, mtime: every write replaces
        it), every ``poll_interval`` seconds at first, then every tenth of the time waited
        (:func:`watch_until`). A file rewritten on the same version (by an earlier release,
        which kept the intent in it) is read and waited past: waking every waiter for an
        intent would spend the CPU the refresh itself needs."""
        deadline = time.monotonic() + timeout
        while True:
            before = self._identity()  # before the read: a write after it is noticed below
            stored = self.load()
            if stored is None or stored.version != version:
                return stored
            if not watch_until(partial(self._moved, before), deadline, self.poll_interval):
                return None

    def peek(self, version: int) -> StoredToken | None:
        """The stored token when the file holds a version newer than ``version``, else None;
        see ``TokenStore``. A ``stat`` per look, and a read only when the file changed since
        the last read, whose result the looks share until the next change (transports on
        one store object each adopt it). A file that cannot be read is None here, logged
        once per change: the call goes on with the token in hand, and the refresh that may
        follow reports it."""
        if not self.watch:
            return None
        identity = self._identity()
        seen = self._peeked
        if seen is None or seen[0] != identity:
            try:
                stored = self.load()
            except TokenStoreError as exc:
                logger.warning("not looking for a newer token in %s: %s", self.path, exc)
                stored = None
            # The identity from before the read: a write after it is read at the next look.
            seen = self._peeked = (identity, stored)
        return newer_than(seen[1], version)

    def _moved(self, identity: tuple[int, int, int] | None) -> bool:
        return self._identity() != identity

    def _identity(self) -> tuple[int, int, int] | None:
        return _identity(self.path)

    def _read(self, path: Path) -> bytes | None:
        """Read ``path`` (the token file or its intent), refusing what ssh refuses for a
        private key."""
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)  # os.open sets close-on-exec itself
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise TokenStoreError(
                    f"{path} is a symbolic link; a token file must be the file itself "
                    "(replace the link by the file, or point the store at the target)"
                ) from None
            raise TokenStoreError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise TokenStoreError(f"cannot read {path}: not a regular file")
            if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
                raise TokenStoreError(
                    f"{path} is owned by uid {info.st_uid}, not by this user "
                    f"(uid {os.geteuid()}); a token file must be your own (chown it)"
                )
            if info.st_mode & 0o077:
                raise TokenStoreError(
                    f"{path} is open to group or others "
                    f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
                )
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks)
        except OSError as exc:
            raise TokenStoreError(f"cannot read {path}: {exc.strerror}") from exc
        finally:
            os.close(fd)

    def _document(self) -> dict[str, Any] | None:
        raw = self._read(self.path)
        if raw is None:
            return None
        try:
            document = json.loads(raw)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise TokenStoreError(
                f"{self.path} is not a token file written by zeep-sfrefresh; it is left "
                "as is (a token from elsewhere comes in through `zeep-sfrefresh login`, "
                "e.g. --sfdx-auth-url-file for a Salesforce CLI login)"
            )
        return document

    def load(self) -> StoredToken | None:
        """Read the file (refusing a symlink, loose permissions or another owner) and the
        intent recorded for its version; see ``TokenStore.load``."""
        stored = self._stored(self._document())
        if stored is None:
            return None
        raw = self._read(self.intent_path)
        if raw is None:
            return stored  # no intent since the last token write (or an embedded one, older)
        record = _intent_record(raw)
        if record is None:
            # Written without fsync: a power loss may leave it empty. Read as no intent: the
            # refresh token may then be sent once more, which fails only where giving up
            # unsent would have left the user to log in again too.
            logger.warning("%s does not hold an intent; read as none", self.intent_path)
            return stored
        if record[0] != stored.version:
            return stored  # left by the refresh that wrote this token, or an earlier one
        return StoredToken(stored.token, stored.version, record[1])

    def peek_intent(self, version: int) -> RefreshIntent | None:
        """The intent recorded for ``version`` in :attr:`intent_path`, else None; see
        ``TokenStore``. A ``stat`` per look (the file exists only while a refresh is under
        way, or after one that ended without a token), a read only when it changed. A file
        that cannot be read is None here: :meth:`load` says why when it matters."""
        if not self.watch:
            return None
        identity = _identity(self.intent_path)
        if identity is None:
            return None
        seen = self._intent_peeked
        if seen is None or seen[0] != identity:
            try:
                raw = self._read(self.intent_path)
            except TokenStoreError:
                raw = None
            seen = self._intent_peeked = (identity, None if raw is None else _intent_record(raw))
        record = seen[1]
        return record[1] if record is not None and record[0] == version else None

    def _stored(self, document: dict[str, Any] | None) -> StoredToken | None:
        if document is None:
            return None
        try:
            version, token = document["version"], document["token"]
            intent = document.get("intent")
            intent = None if intent is None else RefreshIntent.from_json(intent)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise TokenStoreError(
                f"{self.path} is not a token file written by zeep-sfrefresh; it is left "
                "as is (a token from elsewhere comes in through `zeep-sfrefresh login`, "
                "e.g. --sfdx-auth-url-file for a Salesforce CLI login)"
            ) from exc
        if (
            not isinstance(version, int)
            or version < 1
            or not isinstance(token, dict)
            or not token.get("access_token")
        ):
            raise TokenStoreError(
                f"{self.path} does not hold a valid token and version; it is left as is"
            )
        return StoredToken(token, version, intent)

    def load_settings(self) -> dict[str, str] | None:
        """The file's ``settings``: what a refresh needs that is not secret (grant, client
        id, token URL...), as ``zeep-sfrefresh login`` wrote them; None when it has none."""
        return self._settings(self._document())

    def _settings(self, document: dict[str, Any] | None) -> dict[str, str] | None:
        settings = None if document is None else document.get("settings")
        if settings is None:
            return None
        if not isinstance(settings, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in settings.items()
        ):
            raise TokenStoreError(f"{self.path} has settings that are not strings; left as is")
        return settings

    def save(
        self,
        token: Mapping[str, Any],
        *,
        replaces: int | None,
        settings: Mapping[str, str] | None = None,
    ) -> int:
        """Write ``token`` as the version after ``replaces``; ``settings`` replace the file's
        settings when given, else the file keeps its own (refreshes never touch them)."""
        found_document = self._document()
        current = self._stored(found_document)
        found = None if current is None else current.version
        if found != replaces:
            raise _conflict(found, replaces)
        version = next_version(replaces)
        document: dict[str, Any] = {"version": version, "token": dict(token)}
        kept = dict(settings) if settings is not None else self._settings(found_document)
        if kept is not None:
            document["settings"] = kept
        self._write(self.path, json.dumps(document, indent=1).encode(), sync=True)
        with contextlib.suppress(OSError):  # stale now: it names the version just replaced
            os.unlink(self.intent_path)
        return version

    def write_intent(self, intent: RefreshIntent | None, *, version: int) -> None:
        """Record ``intent`` (None: clear it) for ``version`` if the file still holds that
        version, in ``<path>.intent``, written atomically; see ``TokenStore.write_intent``."""
        current = self._stored(self._document())
        if current is None or current.version != version:
            raise _conflict(None if current is None else current.version, version)
        record = {"version": version, "intent": None if intent is None else intent.to_json()}
        # Beside the token file, not in it, and not synced. The token file is never at risk
        # (a power loss may leave this file empty or old, never the token file) and stays the
        # same file, so the workers waiting for its next version are not woken for this.
        # After a power loss the intent may be gone: the restarted workers may send that
        # refresh token once more, which, if the lost request had been answered, fails where
        # giving up unsent would have failed too (a user logs in again), and otherwise
        # works. A process that dies (the usual crash) loses nothing: the kernel keeps the
        # file. One sync fewer, and no rewrite of the token, before every token request.
        self._write(self.intent_path, json.dumps(record).encode(), sync=False)

    def _write(self, path: Path, payload: bytes, *, sync: bool) -> None:
        """Replace ``path`` atomically: a crash leaves the old file or the new one. ``sync``:
        a power loss too (the bytes, then the rename, reach the disk before returning)."""
        folder = path.parent
        try:
            fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
        except OSError as exc:
            raise TokenStoreError(f"cannot write in {folder}: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "wb") as file:
                os.fchmod(file.fileno(), 0o600)  # mkstemp's default, made explicit
                file.write(payload)
                file.flush()
                if sync:
                    os.fsync(file.fileno())
            os.replace(temp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise TokenStoreError(f"cannot write {path}: {exc.strerror}") from exc
        if not sync:
            return
        with contextlib.suppress(OSError):  # durability of the rename; not every FS allows it
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
