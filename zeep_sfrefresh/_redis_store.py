"""RedisTokenStore: one token for a fleet of workers on many machines (extra ``[redis]``).

The token, its version and any :class:`RefreshIntent` live in one Redis hash (fields
``version``, ``token``, ``intent``) at ``key``; the refresh lock is redis-py's ``Lock`` at
``<key>:lock``. Writes are Lua scripts, so they are atomic: a token write is a
compare-and-set on the version, and an intent write also checks that the writer still owns
the lock. On a cluster the keys must live in one slot: wrap the key in braces
(``{sf:token:prod}``); a ``redis.RedisCluster`` client with a key that does not is refused
when the store is made.

The lock expires after ``lock_timeout`` seconds so a dead worker cannot block the fleet. A
live holder keeps it: a watchdog thread (one per process) renews the lease every third of
``lock_timeout`` while the holder works. If the holder stalls anyway (a stopped process, a
long GC pause), the write-ahead intent tells the next lock holder that the refresh token may
be in use.

After every token write the writer announces it on a stream of one entry, ``<key>:changes``
(entry ID ``<version>-0``, fields ``version`` and ``token``: the token the hash holds, so the
stream never keeps a token the hash no longer has). A worker waiting for another worker's
refresh (:meth:`RedisTokenStore.wait_for_change`) blocks in ``XREAD`` from the version it
holds, so it gets the new token the moment it is stored, in the reply that wakes it, and one
stored before it started waiting at once: no gap to close, no polling of the lock, no second
read. Unlike a pub/sub subscription this needs no connection of its own (nothing to set up
per wait, or to keep from crossing a fork). The announcement is a script of its own,
pipelined behind the compare-and-set (one round trip for both): a server that refuses it (an
ACL without the stream key) costs waiters speed, never a write.

Intents are announced on the same stream, by a script pipelined behind the lock or intent
write the same way: entry ``<version>-<n>`` (n from 1), fields ``version`` and ``intent``
(its JSON, empty when cleared). The store's watch keeps the last one, so a worker about to
send with that version's token learns without a round trip that another worker is
refreshing it (:meth:`RedisTokenStore.peek_intent`), and waits for that token instead. A
waiter reading the stream itself skips intents on the version it holds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

try:
    import redis
    from redis.crc import key_slot
    from redis.exceptions import (
        LockError,
        LockNotOwnedError,
        NoScriptError,
        RedisClusterException,
        RedisError,
        ResponseError,
    )
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without redis
    raise ImportError(
        "RedisTokenStore needs redis-py: pip install 'zeep-sfrefresh[redis]'"
    ) from exc

from ._checks import check_flag, check_seconds
from ._errors import TokenStoreConflictError, TokenStoreError
from ._forks import reset_in_child
from ._stores import (
    DEFAULT_LOCK_WAIT,
    DEFAULT_POLL_INTERVAL,
    RefreshIntent,
    StoredToken,
    newer_than,
    next_version,
    poll_until,
    records_intent,
)

__all__ = ["DEFAULT_LOCK_TIMEOUT", "RedisTokenStore"]

DEFAULT_LOCK_TIMEOUT = 60.0
"""Seconds after which Redis frees a refresh lock whose holder vanished."""

logger = logging.getLogger(__name__)

_FIELDS = ("version", "token", "intent")

_WATCH_BLOCK_MS = 60_000
"""How long the watch's ``XREAD`` blocks, at most (ms): a process that makes calls sends
one this often, an idle one none."""
_WATCH_GRACE = 5.0
"""Seconds after an ``XREAD`` ran out within which its answer must have come, else the watch
takes its connection for dead."""
_WATCH_PAUSE = 0.5
"""Seconds before the watch tries a Redis that failed again, doubling per failure ..."""
_WATCH_PAUSE_MAX = 10.0
"""... up to this."""

_FAILURES = (RedisError, RedisClusterException)
"""What a client raises when Redis cannot answer: a cluster client raises
``RedisClusterException``, outside ``RedisError``, when no node is reachable."""

# KEYS[1] = hash; ARGV = expected version ("" for none), new version, token JSON.
_COMPARE_AND_SET = """
local found = redis.call('HGET', KEYS[1], 'version')
if not found then found = '' end
if found ~= ARGV[1] then return {0, found} end
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'token', ARGV[3])
redis.call('HDEL', KEYS[1], 'intent')
return {1, ARGV[2]}
"""

# KEYS[1] = change stream, KEYS[2] = hash; ARGV = the version just written. Only while the
# hash holds that version, and once: pipelined behind the compare-and-set, it must not
# announce a write that lost. The entry carries the token as the hash holds it (its intent
# was cleared by the write), and the stream keeps that entry alone: the token is never in
# Redis longer than in the hash. Entry IDs must grow: a stream ahead of the version (the
# hash was re-seeded by hand) is started over.
_ANNOUNCE = """
local fields = redis.call('HMGET', KEYS[2], 'version', 'token')
if fields[1] ~= ARGV[1] then return 0 end
local id = ARGV[1] .. '-0'
local entry = {'XADD', KEYS[1], 'MAXLEN', '1', id, 'version', ARGV[1], 'token', fields[2]}
local added = redis.pcall(unpack(entry))
if type(added) == 'table' and added.err then
    local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
    if last and last[1] == id then return 0 end
    redis.call('DEL', KEYS[1])
    redis.call(unpack(entry))
end
return 1
"""

# KEYS[1] = hash, KEYS[2] = lock; ARGV = version, lock token, lease in ms, intent JSON ("":
# none). Takes the lock (as redis-py's Lock would) only while the token is still that
# version, and then records the intent if the hash holds none: {1, version, token, intent}
# as read before. Another version: {0, version, token, intent}, the lock not taken. The
# lock busy: {0}.
_LOCK_IF_VERSION = """
local fields = redis.call('HMGET', KEYS[1], 'version', 'token', 'intent')
if (fields[1] or '') ~= ARGV[1] then return {0, fields[1], fields[2], fields[3]} end
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return {0} end
if ARGV[4] ~= '' and not fields[3] then redis.call('HSET', KEYS[1], 'intent', ARGV[4]) end
return {1, fields[1], fields[2], fields[3]}
"""

# KEYS[1] = hash, KEYS[2] = lock; ARGV = version, lock token, intent JSON ("" clears it).
_WRITE_INTENT = """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return {0, 'lock'} end
local found = redis.call('HGET', KEYS[1], 'version')
if not found then found = '' end
if found ~= ARGV[1] then return {0, found} end
if ARGV[3] == '' then
    redis.call('HDEL', KEYS[1], 'intent')
else
    redis.call('HSET', KEYS[1], 'intent', ARGV[3])
end
return {1, found}
"""

# KEYS[1] = change stream, KEYS[2] = hash, KEYS[3] = lock; ARGV = version, lock token, intent
# JSON ("": cleared). Pipelined behind the lock or intent script: announces the intent just
# recorded, as entry <version>-<n> (n counting from 1 after the token's <version>-0) with
# fields ``version`` and ``intent``, so the watches learn that a refresh of that version is
# under way (or ended without a token). Only while the caller holds the lock and the hash
# holds that version and that intent: a script before it that did not record it (lock
# busy, another intent kept, version moved on) announces nothing. A script of its own, as
# the token's announcement: a server that refuses the stream (an ACL without it) refuses
# this one alone. A stream already ahead of the version (the hash re-seeded by hand) is
# left to the next token write.
_ANNOUNCE_INTENT = """
if redis.call('GET', KEYS[3]) ~= ARGV[2] then return 0 end
local fields = redis.call('HMGET', KEYS[2], 'version', 'intent')
if fields[1] ~= ARGV[1] or (fields[2] or '') ~= ARGV[3] then return 0 end
local seq = 1
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if last then
    local found, n = string.match(last[1], '^(%d+)-(%d+)$')
    if not found or tonumber(found) > tonumber(ARGV[1]) then return 0 end
    if found == ARGV[1] then seq = tonumber(n) + 1 end
end
redis.call('XADD', KEYS[1], 'MAXLEN', '1', ARGV[1] .. '-' .. seq,
           'version', ARGV[1], 'intent', ARGV[3])
return 1
"""


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _last(reply: Any, *, raw: bool = False) -> tuple[str, Mapping[Any, Any]] | None:
    """The ID and fields of the last entry of a one-stream ``XREAD`` reply (None: no entry),
    in either of redis-py's shapes: ``[[name, entries]]`` (RESP2), ``{name: [entries]}``
    (RESP3). ``raw``: a reply as the connection read it, not shaped by the client (RESP3:
    ``{name: entries}``; an entry's fields a flat list of names and values)."""
    if not reply:
        return None
    if isinstance(reply, dict):
        entries = next(iter(reply.values()))
        entries = entries if raw else entries[0]
    else:
        entries = reply[0][1]
    if not entries:
        return None
    entry_id, fields = entries[-1]
    if raw:
        fields = zip(fields[::2], fields[1::2], strict=False)
    return _text(entry_id), dict(fields)


def _field(entry: Mapping[Any, Any], name: str) -> Any:
    """A field of a stream entry, whether the client decodes responses or not."""
    found = entry.get(name.encode())
    return entry.get(name) if found is None else found


def _intent(value: object) -> RefreshIntent | None:
    """An intent as the hash or a stream entry holds it (JSON; absent or empty: none);
    ValueError or TypeError when it is not one this library wrote."""
    text = None if value is None else _text(value)
    return RefreshIntent.from_json(json.loads(text)) if text else None


def _parse(key: str, fields: Sequence[Any]) -> StoredToken | None:
    """The stored token from the ``version``, ``token`` and ``intent`` fields of the hash
    at ``key`` (or of an entry that announced it)."""
    version, token, intent = fields
    if version is None and token is None:
        return None
    try:
        number = int(_text(version))
        data = json.loads(_text(token))
        recorded = _intent(intent)
    except (TypeError, ValueError) as exc:
        raise TokenStoreError(
            f"Redis key {key!r} does not hold a token written by zeep-sfrefresh"
        ) from exc
    if number < 1 or not isinstance(data, dict) or not data.get("access_token"):
        raise TokenStoreError(f"Redis key {key!r} does not hold a valid token")
    return StoredToken(data, number, recorded)


def _announced_intent(
    key: str, entry: Mapping[Any, Any]
) -> tuple[int, RefreshIntent | None] | None:
    """The version and intent an entry of the change stream announced (its intent None:
    cleared), or None for an entry that announced a token."""
    intent = _field(entry, "intent")
    if intent is None:
        return None
    try:
        return int(_text(_field(entry, "version"))), _intent(intent)
    except (TypeError, ValueError) as exc:
        raise TokenStoreError(
            f"the change stream of Redis key {key!r} holds an intent not written by zeep-sfrefresh"
        ) from exc


class _Watcher:
    """Keeps the newest token announced on a store's change stream without a thread of its
    own: a connection of its own always has an ``XREAD`` of the stream under way, and each
    look (:meth:`look`, before every call) asks its socket, without waiting, whether the
    answer came, then sends the next ``XREAD``. So an announcement costs a process nothing
    until it looks, and wakes no thread of it but one that waits for a change (:meth:`wait`,
    blocked on that socket): no thread hand-off, no contention for the GIL with the call it
    is read for. Only making the connection waits on the network, so a short-lived thread
    makes it; looks meanwhile answer what the watch has.

    It holds the client and the key names, not the store: when the store is collected,
    :meth:`stop` closes the connection. Each ``XREAD`` blocks at most
    :data:`_WATCH_BLOCK_MS`, and its answer counts as lost :data:`_WATCH_GRACE` seconds
    later (a connection that died without a word is then made anew). A token written
    between an ``XREAD`` that ran out and the next look (a process that made no call for
    that long) is in the answer to the next ``XREAD``: that look's call may still go with
    the old token, and fails once. A Redis that cannot answer is logged once per outage and
    tried again after a pause that grows to :data:`_WATCH_PAUSE_MAX`; one that refuses the
    stream (an ACL without it) ends the watch, logged once. Meanwhile :attr:`latest` stays
    as it was: a worker then learns of a new token at its next failed call, as with
    ``watch=False``.
    """

    def __init__(self, client: Any, key: str, changes_key: str, since: int) -> None:
        self.latest: StoredToken | None = None
        """The newest token announced since the watch began (None: none yet)."""
        self.intent: tuple[int, RefreshIntent | None] = (since, None)
        """The newest version the watch knows of and the intent last announced for it
        (None: none, or cleared)."""
        self.reading = True
        """Whether the watch is reading the stream (not failing, not ended): only then can a
        wait for a change rely on it."""
        self._client = client
        self._key = key
        self._changes_key = changes_key
        self._after = f"{since}-0"
        self._lock = threading.Lock()  # one thread reads the connection at a time
        self._connection: Any = None  # with an XREAD under way, whose answer is due by:
        self._due = 0.0
        self._opening: threading.Thread | None = None  # making the connection
        self._failures = 0
        self._resume = 0.0  # after a failure, no new connection before this (monotonic)
        self._ended = False

    def stop(self) -> None:
        """End the watch: close its connection (now, or when the read under way is done)."""
        self._ended = True
        self.reading = False
        if self._lock.acquire(blocking=False):
            try:
                self._drop()
            finally:
                self._lock.release()

    def look(self) -> None:
        """Read what the stream sent since the last look, never waiting (nothing while
        another thread reads it: that one takes it)."""
        if self._lock.acquire(blocking=False):
            try:
                self._read(0.0)
            finally:
                self._lock.release()

    def newer(self, version: int) -> StoredToken | None:
        """:attr:`latest` after a :meth:`look`, when it is newer than ``version``, else
        None."""
        self.look()
        return newer_than(self.latest, version)

    def intent_for(self, version: int) -> RefreshIntent | None:
        """The intent last announced for ``version``, after a :meth:`look`, when that is the
        newest version the watch knows of, else None."""
        self.look()
        known, intent = self.intent
        return intent if known == version else None

    def wait(self, version: int, timeout: float) -> StoredToken | None:
        """The newest token once it is newer than ``version``, or None after ``timeout``
        seconds (or as soon as the watch stops reading: the caller then reads for itself).
        One waiting thread reads the connection, blocked on its socket; the others wait for
        it to be done."""
        deadline = time.monotonic() + timeout
        while newer_than(self.latest, version) is None and self.reading:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._lock.acquire(timeout=remaining):
                break
            try:
                if newer_than(self.latest, version) is not None:
                    break
                opening = self._read(remaining)
            finally:
                self._lock.release()
            if opening is not None:  # no connection yet: wait for it to be made
                opening.join(max(0.0, deadline - time.monotonic()))
        return newer_than(self.latest, version)

    def _read(self, timeout: float) -> threading.Thread | None:
        """Take the answer to the ``XREAD`` under way if it comes within ``timeout``
        seconds, and send the next one (the lock held). With no connection, start making
        one (after a failure, once its pause is over) and return the thread making it."""
        if self._ended:
            self._drop()
            return None
        connection = self._connection
        if connection is None:
            return self._open()
        try:
            if not connection.can_read(timeout):
                if time.monotonic() > self._due + _WATCH_GRACE:
                    raise RedisTimeoutError("its XREAD went unanswered")
                return None
            self._take(connection.read_response())  # a token, an intent; None: ran out
            self._send(connection)
        except ResponseError as exc:
            self._refused(exc)
        except Exception as exc:  # noqa: BLE001 - a look never raises: a failed watch, logged
            self._failed(exc)
        else:
            self._failures = 0
        return None

    def _open(self) -> threading.Thread | None:
        if self._opening is None and time.monotonic() >= self._resume:
            self._opening = threading.Thread(
                target=self._connect, name="zeep-sfrefresh-watch-connect", daemon=True
            )
            self._opening.start()
        return self._opening

    def _connect(self) -> None:
        """Make the connection (as the client's pool makes one, not taken from it: it is
        never free) and send its first ``XREAD``, in a thread of its own."""
        connection = None
        try:
            client = self._client
            if isinstance(client, redis.RedisCluster):  # the node that holds the stream
                node = client.get_node_from_key(self._changes_key)  # type: ignore[no-untyped-call]
                client = client.get_redis_connection(node)
            pool = client.connection_pool
            connection = pool.connection_class(**pool.connection_kwargs)
            self._send(connection)  # connects first
        except Exception as exc:  # noqa: BLE001 - in a thread of its own: logged, tried again
            with self._lock:
                if not self._ended:  # a watch whose store is gone has nothing to report
                    self._failed(exc)
            if connection is not None:
                connection.disconnect()
        else:
            with self._lock:
                self._connection = connection
                self.reading = not self._ended
                if self._ended:
                    self._drop()
        finally:
            self._opening = None

    def _send(self, connection: Any) -> None:
        connection.send_command(
            "XREAD",
            "BLOCK",
            _WATCH_BLOCK_MS,
            "STREAMS",
            self._changes_key,
            self._after,
            check_health=False,  # a health check would read an answer, in a look
        )
        self._due = time.monotonic() + _WATCH_BLOCK_MS / 1000

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.disconnect()

    def _take(self, reply: Any) -> None:
        last = _last(reply, raw=True)
        if last is None:
            return
        self._after, entry = last  # past it, whatever it holds
        announced = _announced_intent(self._key, entry)
        if announced is not None and announced[0] <= self.intent[0]:
            self.intent = announced  # a refresh of a version known here began, or ended
            return
        token = _field(entry, "token")
        if token is None:  # a newer version's intent, its token's entry trimmed; or an
            fields = self._client.hmget(self._key, _FIELDS)  # older release's entry
        else:
            fields = [_field(entry, "version"), token, None]
        stored = _parse(self._key, fields)
        if stored is not None:  # entries come in version order (an older one: never peeked)
            self.latest = stored
            self.intent = (stored.version, stored.intent)

    def _refused(self, exc: ResponseError) -> None:
        logger.warning(
            "Redis refused to read %r (%s); workers learn of a new token at "
            "their next failed call (grant the key in the ACL, like %r)",
            self._changes_key,
            exc,
            self._key,
        )
        self._ended = True
        self.reading = False
        self._drop()

    def _failed(self, exc: Exception) -> None:
        self.reading = False
        self._drop()
        if self._failures == 0:
            logger.warning(
                "watching %r for new tokens failed (%s: %s); trying again, workers "
                "meanwhile learn of a new token at their next failed call",
                self._changes_key,
                type(exc).__name__,
                exc,
            )
        self._resume = time.monotonic() + min(_WATCH_PAUSE * 2**self._failures, _WATCH_PAUSE_MAX)
        self._failures += 1


class _Lease:
    """A held lock whose lease :class:`_Renewer` keeps, until the holder ends it."""

    def __init__(self, lock: redis.lock.Lock, interval: float) -> None:
        self.lock = lock
        self.interval = interval
        self.due = time.monotonic() + interval
        self.renewing = threading.Lock()
        """Held while renewing: the holder's end waits for a renewal under way."""
        self.ended = False


class _Renewer:
    """Renews the leases of the Redis locks this process holds, from one thread that waits
    idle while none is held.

    One thread for the process, started with the first hold, not one per hold: a holder
    never waits for a thread to start (on a busy machine, milliseconds of the refresh that
    every other worker is waiting for). A forked child starts without it (the parent's
    thread does not exist there) and starts its own with its first hold.
    """

    def __init__(self) -> None:
        self._after_fork()
        reset_in_child(self)

    def _after_fork(self) -> None:
        self._changed = threading.Condition()
        self._leases: set[_Lease] = set()
        self._thread: threading.Thread | None = None

    @contextmanager
    def keep(self, lock: redis.lock.Lock, interval: float) -> Iterator[_Lease]:
        """Renew ``lock`` (already taken) every ``interval`` seconds during the block. When
        the block ends, a renewal under way has ended and none starts after."""
        lease = _Lease(lock, interval)
        with self._changed:
            self._leases.add(lease)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="zeep-sfrefresh-lease", daemon=True
                )
                self._thread.start()
            self._changed.notify()
        try:
            yield lease
        finally:
            with lease.renewing:
                lease.ended = True
            self._drop(lease)

    def _drop(self, lease: _Lease) -> None:
        with self._changed:
            self._leases.discard(lease)

    def _run(self) -> None:
        while True:
            with self._changed:
                now = time.monotonic()
                due = [lease for lease in self._leases if lease.due <= now]
                if not due:  # sleep until the next renewal, or until a hold begins
                    first = min((lease.due for lease in self._leases), default=None)
                    self._changed.wait(None if first is None else first - now)
            for lease in due:
                self._renew(lease)

    def _renew(self, lease: _Lease) -> None:
        lease.due = time.monotonic() + lease.interval  # not due again at once, come what may
        with lease.renewing:
            if not lease.ended:
                try:
                    lease.lock.reacquire()
                except LockNotOwnedError:
                    logger.warning("the Redis lock %r expired under its holder", lease.lock.name)
                    lease.ended = True
                except Exception as exc:  # noqa: BLE001 - the one renewing thread lives on
                    logger.warning("could not renew the Redis lock %r: %s", lease.lock.name, exc)
        if lease.ended:
            self._drop(lease)


_RENEWER = _Renewer()


def _check_client(client: object) -> None:
    """Refuse what is not a synchronous redis-py client when the store is made: a URL (give
    a client made from it), or a ``redis.asyncio`` client, whose commands return coroutines,
    so the first refresh, not the setup, would fail. (``redis.asyncio`` is only looked for
    when a program imported it: one that did not cannot have made such a client.)"""
    if not callable(getattr(client, "register_script", None)):
        hint = " (for a URL: redis.Redis.from_url(url, socket_timeout=5))"
        raise TypeError(
            "client must be a redis.Redis or redis.RedisCluster client, not "
            f"{type(client).__name__}{hint if isinstance(client, str) else ''}"
        )
    aio = sys.modules.get("redis.asyncio")
    if aio is not None and isinstance(client, (aio.Redis, aio.RedisCluster)):
        raise TypeError(
            "RedisTokenStore needs a synchronous client (redis.Redis or redis.RedisCluster), "
            "not a redis.asyncio one: the async transport runs the store's steps in a worker "
            "thread, off the event loop"
        )


class RedisTokenStore:
    """A token store in Redis, for workers on several machines.

    :param client: a ``redis.Redis`` (or ``redis.RedisCluster``) client, synchronous
        with the async transport too (a ``redis.asyncio`` client is refused: ``TypeError``).
        Give it a ``socket_timeout`` so a hung server cannot hang a refresh.
    :param key: the hash holding the token; ``<key>:lock`` is the lock and
        ``<key>:changes`` the change stream. With a cluster client they must share a hash
        slot (a key in braces, ``{sf:token:prod}``), else ``ValueError``.
    :param lock_timeout: seconds after which Redis frees a lock whose holder died; a live
        holder renews it every ``lock_timeout / 3`` seconds.
    :param lock_wait: seconds to wait for the lock before giving up with TokenStoreError.
    :param poll_interval: seconds before :meth:`lock` tries a busy lock again, at first;
        the pauses double up to ``MAX_POLL_INTERVAL`` (50 ms). Workers waiting for another
        worker's token do not poll for it: its write wakes them (:meth:`wait_for_change`).
    :param watch: keep the newest token announced on the change stream, so that a worker
        that did not meet an expiry sends its next call with the new token instead of
        failing once with the old one (:meth:`peek`), and one about to send with a token
        another worker is refreshing waits for the new one (:meth:`peek_intent`). The watch
        is an ``XREAD`` always under way on one more connection per process (made like the
        client's pool's, not taken from it), started with the first call, which each call
        looks at without waiting (a non-blocking read of its socket); no thread. False: no
        watch.

    Redis errors (a cluster client's too, whose "no node reachable" is not a ``RedisError``)
    become :class:`TokenStoreError`: the store fails closed (no refresh without
    coordination) and nothing retries in a loop.
    """

    def __init__(
        self,
        client: redis.Redis | redis.RedisCluster,
        key: str,
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        lock_wait: float = DEFAULT_LOCK_WAIT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        watch: bool = True,
    ) -> None:
        if not isinstance(key, str):  # bytes would name the lock "b'...':lock"
            raise TypeError(f"key must be a str, not {type(key).__name__}")
        if not key:
            raise ValueError("key must be a non-empty Redis key name")
        lock_timeout = check_seconds("lock_timeout", lock_timeout)
        lock_wait = check_seconds("lock_wait", lock_wait)
        poll_interval = check_seconds("poll_interval", poll_interval)
        check_flag("watch", watch)
        _check_client(client)
        self._client = client
        # Whether a token write and its announcement go in one pipeline: redis-py's cluster
        # pipelines refuse scripts, so with a cluster client they go one after the other.
        self._pipelined = not isinstance(client, redis.RedisCluster)
        self.key = key
        """The hash holding the token, its version and its intent."""
        self.lock_key = f"{key}:lock"
        """The key of the refresh lock: ``<key>:lock``."""
        self.changes_key = f"{key}:changes"
        """The stream of written versions that wakes waiting workers: ``<key>:changes``."""
        if isinstance(client, redis.RedisCluster):
            self._check_slots()
        self.lock_timeout = lock_timeout
        """Seconds after which Redis frees the lock of a holder that died."""
        self.lock_wait = lock_wait
        """Seconds to wait for the lock before raising ``TokenStoreError``."""
        self.poll_interval = poll_interval
        """Seconds before a busy lock is tried again, at first (doubling up to 50 ms)."""
        self._compare_and_set = client.register_script(_COMPARE_AND_SET)
        self._write_intent = client.register_script(_WRITE_INTENT)
        self._lock_if_version = client.register_script(_LOCK_IF_VERSION)
        self._announce_script = client.register_script(_ANNOUNCE)
        self._announce_intent = client.register_script(_ANNOUNCE_INTENT)
        self._notified = True
        """False once the server refused to read the change stream: waits are then sleeps."""
        self._held = threading.local()  # the lock this thread holds, for write_intent
        self.watch = watch
        """Whether :meth:`peek` keeps a watch on the change stream (else it is always None)."""
        self._after_fork()
        reset_in_child(self)

    def _after_fork(self) -> None:
        # The parent's watch connection is not the child's to read: the child's first peek
        # makes one of its own.
        self._watcher: _Watcher | None = None
        self._watch_lock = threading.Lock()

    def peek(self, version: int) -> StoredToken | None:
        """The newest token announced on :attr:`changes_key` when it is newer than
        ``version``, else None; see ``TokenStore``. No round trip: the first look starts the
        watch (an ``XREAD`` of the stream from ``version`` on, always under way on a
        connection of the watch's own, closed when the store is collected), and each look
        asks that connection's socket, without waiting, whether it answered."""
        watcher = self._watcher
        if watcher is None:
            if not self.watch:
                return None
            with self._watch_lock:
                watcher = self._watcher
                if watcher is None:
                    watcher = self._watcher = _Watcher(
                        self._client, self.key, self.changes_key, version
                    )
                    weakref.finalize(self, watcher.stop)
        return watcher.newer(version)

    def peek_intent(self, version: int) -> RefreshIntent | None:
        """The intent last announced on :attr:`changes_key` for ``version`` when the watch
        (started by :meth:`peek`) knows no newer version, else None; see ``TokenStore``.
        No round trip: a look as :meth:`peek`'s."""
        watcher = self._watcher
        return None if watcher is None else watcher.intent_for(version)

    def __repr__(self) -> str:
        return f"RedisTokenStore(key={self.key!r})"

    def _check_slots(self) -> None:
        """Refuse keys a cluster keeps in different slots: every script takes two of them
        at once, which a cluster refuses, so the first refresh would fail, not the setup."""
        keys = (self.key, self.lock_key, self.changes_key)
        if len({key_slot(name.encode()) for name in keys}) > 1:
            raise ValueError(
                f"on a Redis cluster the keys {', '.join(map(repr, keys))} must share a hash "
                f"slot: put the key in braces, like {'{' + self.key + '}'!r}"
            )

    def _unavailable(self, action: str, exc: Exception) -> TokenStoreError:
        return TokenStoreError(f"Redis could not {action} {self.key!r} ({type(exc).__name__})")

    def _new_lock(self) -> redis.lock.Lock:
        # thread_local=False: the lease keeper renews it from another thread.
        lock: redis.lock.Lock = self._client.lock(
            self.lock_key, timeout=self.lock_timeout, thread_local=False
        )
        return lock

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``<key>:lock`` for the block, its lease renewed meanwhile; see
        ``TokenStore.lock``."""
        lock = self._new_lock()
        try:
            acquired = poll_until(
                lambda: bool(lock.acquire(blocking=False)),
                time.monotonic() + self.lock_wait,
                self.poll_interval,
            )
        except _FAILURES as exc:
            raise self._unavailable("lock", exc) from exc
        if not acquired:
            raise TokenStoreError(
                f"could not take the Redis lock {self.lock_key!r} within {self.lock_wait:g} s"
            )
        with self._holding(lock):
            yield

    @records_intent
    @contextmanager
    def try_lock(
        self, version: int, *, intent: RefreshIntent | None = None
    ) -> Iterator[StoredToken | Literal[False]]:
        """Hold the lock for the block, yielding the token read under it, if the lock is
        free and the token is still ``version``, all in one script. Otherwise, at once and
        not holding it: the token the hash holds when that is another version (what a
        read would have found; an empty hash: False), or False when the lock is busy. A
        worker never takes the lock just to find another worker's token.

        With ``intent`` the script also records it when it takes the lock and the hash
        holds no intent: the refreshing worker's token request then follows the lock with
        no round trip between. The token yielded is as read before (its intent None: the
        given one is recorded now)."""
        token = uuid.uuid1().hex.encode()  # what redis-py's Lock would use
        payload = "" if intent is None else json.dumps(intent.to_json())
        try:
            taken, *fields = self._with_intent_announced(
                self._lock_if_version,
                [str(version), token, int(self.lock_timeout * 1000), payload],
                [str(version), token, payload] if payload else None,
            )
        except _FAILURES as exc:
            raise self._unavailable("lock", exc) from exc
        if int(taken) != 1:
            yield (_parse(self.key, fields) if fields else None) or False
            return
        lock = self._new_lock()
        lock.local.token = token  # the Lock now releases and renews the lease we took
        with self._holding(lock):
            stored = _parse(self.key, fields)
            assert stored is not None  # the script found the version
            yield stored

    def wait_for_change(self, version: int, timeout: float) -> StoredToken | None:
        """Return the token once one newer than ``version`` is stored, or None after
        ``timeout`` seconds.

        It blocks in ``XREAD`` on :attr:`changes_key` from entry ``<version>-0``: a newer
        version written before the call ends it at once, one written during it wakes it.
        Each ``XREAD`` blocks at most 100 ms, well within any sane ``socket_timeout``; an
        intent announced on ``version`` is read past. The entry that wakes it carries the
        token, so a woken worker adopts it with no second
        round trip (on a busy machine, milliseconds, and a pipeline's CPU); an entry
        without one (written by an older release of this library) costs a read. A server
        that refuses the stream (an ACL without the key, a proxy without streams) is
        logged once; waits then simply last ``timeout``.

        While the store's watch (:meth:`peek`) reads the stream, it waits on the watch's
        connection instead, which has the token as soon as it is announced: no command of
        its own (a waiting worker then costs Redis the one ``try_lock`` script)."""
        watcher = self._watcher
        if watcher is not None and watcher.reading:  # it reads the stream already
            return watcher.wait(version, timeout)
        deadline = time.monotonic() + timeout
        if not self._notified:
            time.sleep(timeout)
            return None
        after = f"{version}-0"
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                block = max(1, round(min(remaining, 0.1) * 1000))
                reply = self._client.xread({self.changes_key: after}, block=block)
                last = _last(reply)
                if last is not None:
                    after, entry = last
                    announced = _announced_intent(self.key, entry)
                    if announced is not None and announced[0] <= version:
                        continue  # a refresh of this version began or ended: wait on
                    token = _field(entry, "token")
                    if token is None:
                        return self.load()
                    return _parse(self.key, [_field(entry, "version"), token, None])
        except ResponseError as exc:
            self._notified = False
            logger.warning(
                "Redis refused to read %r (%s); waiting workers poll instead (grant the key "
                "in the ACL, like %r)",
                self.changes_key,
                exc,
                self.key,
            )
            time.sleep(max(0.0, deadline - time.monotonic()))
        except _FAILURES as exc:
            raise self._unavailable("watch", exc) from exc
        return None

    @contextmanager
    def _holding(self, lock: redis.lock.Lock) -> Iterator[None]:
        """Keep ``lock`` (already taken) for the block: renew its lease, release it after."""
        self._held.lock = lock
        try:
            with _RENEWER.keep(lock, self.lock_timeout / 3):
                yield
        finally:
            self._held.lock = None
            try:
                lock.release()
            except LockError:
                # Expired (or taken over) before we released it: the version check on save
                # is what kept the token safe.
                logger.warning(
                    "the Redis lock %r expired before its refresh ended; raise lock_timeout",
                    self.lock_key,
                )
            except _FAILURES as exc:
                logger.warning("could not release the Redis lock %r: %s", self.lock_key, exc)

    def load(self) -> StoredToken | None:
        """Read the token, its version and its intent in one step; see ``TokenStore.load``."""
        try:
            fields = self._client.hmget(self.key, _FIELDS)
        except _FAILURES as exc:
            raise self._unavailable("read", exc) from exc
        return _parse(self.key, fields)

    def save(self, token: Mapping[str, Any], *, replaces: int | None) -> int:
        """Compare-and-set on the version (a Lua script), then wake the workers waiting for
        it (:meth:`wait_for_change`) in the same round trip; see ``TokenStore.save``."""
        version = next_version(replaces)
        expected = "" if replaces is None else str(replaces)
        args = [expected, str(version), json.dumps(dict(token))]
        try:
            written, found, announced = self._write(args, version)
        except _FAILURES as exc:
            raise self._unavailable("write", exc) from exc
        if int(written) != 1:
            raise TokenStoreConflictError(
                f"Redis key {self.key!r} holds version {_text(found) or None}, not {replaces}: "
                "another writer replaced the token"
            )
        if isinstance(announced, RedisError):
            self._unannounced(version, announced)
        elif announced is None:
            self._announce(version)
        return version

    def _write(self, args: list[str], version: int) -> tuple[Any, Any, object]:
        """Run the compare-and-set and, pipelined behind it, the announcement: two scripts
        in one round trip (not one script: a server that refuses the stream, an ACL without
        it, must still take the write). Returns the compare-and-set's reply and the
        announcement's: its result, its error, or None when it is still to be made (a
        cluster client, whose pipelines refuse scripts, or a script the server did not have
        yet, which redis-py then loads)."""
        if not self._pipelined:
            return *self._compare_and_set(keys=[self.key], args=args), None
        pipe = self._client.pipeline(transaction=False)
        pipe.evalsha(self._compare_and_set.sha, 1, self.key, *args)
        pipe.evalsha(self._announce_script.sha, 2, self.changes_key, self.key, str(version))
        written, announced = pipe.execute(raise_on_error=False)
        if isinstance(written, NoScriptError):
            return *self._compare_and_set(keys=[self.key], args=args), None
        if isinstance(written, RedisError):
            raise written
        return *written, None if isinstance(announced, NoScriptError) else announced

    def _with_intent_announced(
        self, script: Any, args: list[Any], announcement: list[Any] | None
    ) -> Any:
        """Run ``script`` (the lock or intent script, on the hash and the lock) and return
        its reply; with ``announcement`` (version, lock token, intent), announce the intent
        behind it: pipelined (one round trip), or right after it when the script succeeded
        (a cluster client, a script the server did not have yet). Both scripts' replies
        start with 1 for success. The announcement is a hint: its failure (an ACL without
        the stream) is left unsaid; the token's own announcement says it."""
        keys = [self.key, self.lock_key]
        if announcement is None:
            return script(keys=keys, args=args)
        announce_keys = [self.changes_key, self.key, self.lock_key]
        if self._pipelined:
            pipe = self._client.pipeline(transaction=False)
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            pipe.evalsha(self._announce_intent.sha, 3, *announce_keys, *announcement)
            reply, announced = pipe.execute(raise_on_error=False)
            if not isinstance(reply, NoScriptError):  # else: loaded by the call below
                if isinstance(reply, RedisError):
                    raise reply
                if isinstance(announced, NoScriptError):  # loaded by a call of its own
                    self._announce_intent_once(announce_keys, announcement)
                return reply
        reply = script(keys=keys, args=args)
        if int(reply[0]) == 1:  # the lock taken, the intent written: else nothing to tell
            self._announce_intent_once(announce_keys, announcement)
        return reply

    def _announce_intent_once(self, keys: list[str], announcement: list[Any]) -> None:
        with contextlib.suppress(*_FAILURES):
            self._announce_intent(keys=keys, args=announcement)

    def _announce(self, version: int) -> None:
        """Wake the workers waiting for this token (:meth:`wait_for_change`). The token is
        stored already: a failure here only leaves them to find it at their next look."""
        try:
            self._announce_script(keys=[self.changes_key, self.key], args=[str(version)])
        except _FAILURES as exc:
            self._unannounced(version, exc)

    def _unannounced(self, version: int, exc: Exception) -> None:
        logger.warning(
            "could not announce version %d on %r (%s); waiting workers find it at their next look",
            version,
            self.changes_key,
            exc,
        )

    def write_intent(self, intent: RefreshIntent | None, *, version: int) -> None:
        """Record the intent if the version and the lock are still the caller's (a Lua script);
        see ``TokenStore.write_intent``."""
        lock = getattr(self._held, "lock", None)
        token = getattr(getattr(lock, "local", None), "token", None)
        if token is None:
            raise TokenStoreError(f"write_intent needs the Redis lock {self.lock_key!r} held")
        payload = "" if intent is None else json.dumps(intent.to_json())
        try:
            written, found = self._with_intent_announced(
                self._write_intent, [str(version), token, payload], [str(version), token, payload]
            )
        except _FAILURES as exc:
            raise self._unavailable("write", exc) from exc
        if int(written) == 1:
            return
        if _text(found) == "lock":
            raise TokenStoreError(
                f"the Redis lock {self.lock_key!r} expired before the token request; "
                "not refreshing (raise lock_timeout)"
            )
        raise TokenStoreConflictError(
            f"Redis key {self.key!r} holds version {_text(found) or None}, not {version}: "
            "another writer replaced the token"
        )
