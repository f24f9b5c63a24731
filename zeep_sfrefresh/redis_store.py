"""RedisTokenStore: one token for a fleet of workers on many machines (extra ``[redis]``).

The token and its version live in one Redis hash (fields ``version`` and ``token``) at
``key``; the refresh lock is redis-py's ``Lock`` at ``<key>:lock``. Writes are a
compare-and-set Lua script on the hash alone, so they are atomic on a single node and on a
cluster (wrap the key in braces, ``{sf:token:prod}``, to keep the lock in the same slot too).

The lock expires after ``lock_timeout`` seconds so a dead worker cannot block the fleet; set
it longer than a whole refresh (the token request timeout plus a margin). A worker whose lock
expired anyway cannot overwrite a newer token: its write names the version it replaces.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import redis
from redis.exceptions import LockError, RedisError

from .errors import TokenStoreConflictError, TokenStoreError
from .stores import DEFAULT_LOCK_WAIT, StoredToken

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
return {1, ARGV[2]}
"""


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class RedisTokenStore:
    """A token store in Redis, for workers on several machines.

    :param client: a ``redis.Redis`` (or ``redis.RedisCluster``) client. Give it a
        ``socket_timeout`` so a hung server cannot hang a refresh.
    :param key: the hash holding the token; ``<key>:lock`` is the lock.
    :param lock_timeout: seconds after which Redis frees a lock whose holder died.
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

    def __repr__(self) -> str:
        return f"RedisTokenStore(key={self.key!r})"

    def _unavailable(self, action: str, exc: RedisError) -> TokenStoreError:
        return TokenStoreError(f"Redis could not {action} {self.key!r} ({type(exc).__name__})")

    @contextmanager
    def lock(self) -> Iterator[None]:
        lock = self._client.lock(
            self.lock_key, timeout=self.lock_timeout, blocking_timeout=self.lock_wait
        )
        try:
            acquired = lock.acquire()
        except RedisError as exc:
            raise self._unavailable("lock", exc) from exc
        if not acquired:
            raise TokenStoreError(
                f"could not take the Redis lock {self.lock_key!r} within {self.lock_wait:g} s"
            )
        try:
            yield
        finally:
            try:
                lock.release()
            except LockError:
                # Expired (or taken over) before we released it: the version check on save is
                # what kept the token safe. Worth knowing: lock_timeout is too short.
                logger.warning(
                    "the Redis lock %r expired before its refresh ended; raise lock_timeout",
                    self.lock_key,
                )
            except RedisError as exc:
                logger.warning("could not release the Redis lock %r: %s", self.lock_key, exc)

    def load(self) -> StoredToken | None:
        try:
            version, token = self._client.hmget(self.key, ["version", "token"])
        except RedisError as exc:
            raise self._unavailable("read", exc) from exc
        if version is None and token is None:
            return None
        try:
            number = int(_text(version))
            data = json.loads(_text(token))
        except (TypeError, ValueError) as exc:
            raise TokenStoreError(
                f"Redis key {self.key!r} does not hold a token written by zeep-sfrefresh"
            ) from exc
        if number < 1 or not isinstance(data, dict) or not data.get("access_token"):
            raise TokenStoreError(f"Redis key {self.key!r} does not hold a valid token")
        return StoredToken(data, number)

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
