"""RedisTokenStore: one token for a fleet of workers on many machines (extra ``[redis]``).

The token, its version and any :class:`RefreshIntent` live in one Redis hash (fields
``version``, ``token``, ``intent``) at ``key``; the refresh lock is redis-py's ``Lock`` at
``<key>:lock``. Writes are Lua scripts, so they are atomic: a token write is a
compare-and-set on the version, and an intent write also checks that the writer still owns
the lock. On a cluster both keys must live in one slot: wrap the key in braces
(``{sf:token:prod}``).

The lock expires after ``lock_timeout`` seconds so a dead worker cannot block the fleet. A
live holder keeps it: a watchdog thread renews the lease every third of ``lock_timeout``
while the holder works. If the holder stalls anyway (a stopped process, a long GC pause),
the write-ahead intent tells the next lock holder that the refresh token may be in use.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

try:
    import redis
    from redis.exceptions import LockError, LockNotOwnedError, RedisError
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without redis
    raise ImportError(
        "RedisTokenStore needs redis-py: pip install 'zeep-sfrefresh[redis]'"
    ) from exc

from ._errors import TokenStoreConflictError, TokenStoreError
from ._stores import DEFAULT_LOCK_WAIT, RefreshIntent, StoredToken

__all__ = ["DEFAULT_LOCK_TIMEOUT", "RedisTokenStore"]

DEFAULT_LOCK_TIMEOUT = 60.0
"""Seconds after which Redis frees a refresh lock whose holder vanished."""

logger = logging.getLogger(__name__)

# KEYS[1] = hash; ARGV = expected version ("" for none), new version, token JSON.
_COMPARE_AND_SET = """
local found = redis.call('HGET', KEYS[1], 'version')
if not found then found = '' end
if found ~= ARGV[1] then return {0, found} end
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'token', ARGV[3])
redis.call('HDEL', KEYS[1], 'intent')
return {1, ARGV[2]}
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


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class _LeaseKeeper:
    """Renews a held Redis lock's lease until stopped, from a thread of its own."""

    def __init__(self, lock: redis.lock.Lock, interval: float) -> None:
        self._lock = lock
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zeep-sfrefresh-lease", daemon=True)

    def __enter__(self) -> _LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._lock.reacquire()
            except LockNotOwnedError:
                logger.warning("the Redis lock %r expired under its holder", self._lock.name)
                return
            except (LockError, RedisError) as exc:
                logger.warning("could not renew the Redis lock %r: %s", self._lock.name, exc)


class RedisTokenStore:
    """A token store in Redis, for workers on several machines.

    :param client: a ``redis.Redis`` (or ``redis.RedisCluster``) client. Give it a
        ``socket_timeout`` so a hung server cannot hang a refresh.
    :param key: the hash holding the token; ``<key>:lock`` is the lock.
    :param lock_timeout: seconds after which Redis frees a lock whose holder died; a live
        holder renews it every ``lock_timeout / 3`` seconds.
    :param lock_wait: seconds to wait for the lock before giving up with TokenStoreError.

    Redis errors become :class:`TokenStoreError`: the store fails closed (no refresh without
    coordination) and nothing retries in a loop.
    """

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        lock_wait: float = DEFAULT_LOCK_WAIT,
    ) -> None:
        if not key:
            raise ValueError("key must be a non-empty Redis key name")
        if lock_timeout <= 0 or lock_wait <= 0:
            raise ValueError("lock_timeout and lock_wait must be positive numbers of seconds")
        self._client = client
        self.key = key
        self.lock_key = f"{key}:lock"
        self.lock_timeout = lock_timeout
        self.lock_wait = lock_wait
        self._compare_and_set = client.register_script(_COMPARE_AND_SET)
        self._write_intent = client.register_script(_WRITE_INTENT)
        self._held = threading.local()  # the lock this thread holds, for write_intent

    def __repr__(self) -> str:
        return f"RedisTokenStore(key={self.key!r})"

    def _unavailable(self, action: str, exc: RedisError) -> TokenStoreError:
        return TokenStoreError(f"Redis could not {action} {self.key!r} ({type(exc).__name__})")

    @contextmanager
    def lock(self) -> Iterator[None]:
        # thread_local=False: the lease keeper renews it from another thread.
        lock = self._client.lock(
            self.lock_key,
            timeout=self.lock_timeout,
            blocking_timeout=self.lock_wait,
            thread_local=False,
        )
        try:
            acquired = lock.acquire()
        except RedisError as exc:
            raise self._unavailable("lock", exc) from exc
        if not acquired:
            raise TokenStoreError(
                f"could not take the Redis lock {self.lock_key!r} within {self.lock_wait:g} s"
            )
        self._held.lock = lock
        try:
            with _LeaseKeeper(lock, self.lock_timeout / 3):
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
            except RedisError as exc:
                logger.warning("could not release the Redis lock %r: %s", self.lock_key, exc)

    def load(self) -> StoredToken | None:
        try:
            version, token, intent = self._client.hmget(self.key, ["version", "token", "intent"])
        except RedisError as exc:
            raise self._unavailable("read", exc) from exc
        if version is None and token is None:
            return None
        try:
            number = int(_text(version))
            data = json.loads(_text(token))
            recorded = (
                None if intent is None else RefreshIntent.from_json(json.loads(_text(intent)))
            )
        except (TypeError, ValueError) as exc:
            raise TokenStoreError(
                f"Redis key {self.key!r} does not hold a token written by zeep-sfrefresh"
            ) from exc
        if number < 1 or not isinstance(data, dict) or not data.get("access_token"):
            raise TokenStoreError(f"Redis key {self.key!r} does not hold a valid token")
        return StoredToken(data, number, recorded)

    def save(self, token: Mapping[str, Any], *, replaces: int | None) -> int:
        version = 1 if replaces is None else replaces + 1
        expected = "" if replaces is None else str(replaces)
        try:
            written, found = self._compare_and_set(
                keys=[self.key], args=[expected, str(version), json.dumps(dict(token))]
            )
        except RedisError as exc:
            raise self._unavailable("write", exc) from exc
        if int(written) != 1:
            raise TokenStoreConflictError(
                f"Redis key {self.key!r} holds version {_text(found) or None}, not {replaces}: "
                "another writer replaced the token"
            )
        return version

    def write_intent(self, intent: RefreshIntent | None, *, version: int) -> None:
        lock = getattr(self._held, "lock", None)
        token = getattr(getattr(lock, "local", None), "token", None)
        if token is None:
            raise TokenStoreError(f"write_intent needs the Redis lock {self.lock_key!r} held")
        payload = "" if intent is None else json.dumps(intent.to_json())
        try:
            written, found = self._write_intent(
                keys=[self.key, self.lock_key], args=[str(version), token, payload]
            )
        except RedisError as exc:
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
