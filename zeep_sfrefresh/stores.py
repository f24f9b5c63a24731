"""Token stores: where the current token lives when several transports or processes share it.

With refresh-token rotation every refresh retires the refresh token it used, and using a
retired one again revokes the whole token family. Workers that refresh on their own are
therefore an outage; they must refresh one at a time and hand the new token to each other.
A store provides the three things that takes: a lock every refresher holds, a read of the
current token, and a compare-and-set write that cannot overwrite a newer token.

The refresh algorithm itself lives once, in :mod:`zeep_sfrefresh.refresh`; stores only keep
bytes. A store of your own (a database row, say) implements :class:`TokenStore`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import weakref
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from filelock import FileLock, Timeout

from .errors import TokenStoreConflictError, TokenStoreError
from .tokens import fingerprint

__all__ = [
    "DEFAULT_LOCK_WAIT",
    "FileTokenStore",
    "MemoryTokenStore",
    "StoredToken",
    "TokenStore",
]

DEFAULT_LOCK_WAIT = 30.0
"""Seconds a refresher waits for a store's lock before giving up with TokenStoreError."""


@dataclass(frozen=True, repr=False)
class StoredToken:
    """A token as a store holds it: the token dict and the version it was written as.

    Versions start at 1 and grow by one per write, so a reader can tell a newer token from
    an older one (and notice a store restored from an old backup).
    """

    token: Mapping[str, Any]
    version: int

    def __repr__(self) -> str:
        return (
            f"StoredToken(version={self.version}, "
            f"access_token={fingerprint(self.token.get('access_token'))})"
        )


class TokenStore(Protocol):
    """What a token store must do. Implement it to keep tokens somewhere of your own.

    The refresher calls :meth:`load` and :meth:`save` only while holding :meth:`lock`, except
    :meth:`load` when it waits for another worker's refresh. Every method raises
    :class:`TokenStoreError` (or a subclass) on failure, never a backend's own exception.
    """

    def lock(self) -> AbstractContextManager[object]:
        """Hold the store-wide refresh lock for the block; bounded wait, then TokenStoreError.

        It must be released if its holder dies (a killed process must not block the fleet).
        """
        ...

    def load(self) -> StoredToken | None:
        """Return the current token, or None when the store is empty."""
        ...

    def save(self, token: Mapping[str, Any], *, replaces: int | None) -> int:
        """Write ``token`` if the stored version is still ``replaces`` (None: store empty).

        Returns the new version (``replaces + 1``, or 1). Raises
        :class:`TokenStoreConflictError` when another writer got there first: a writer whose
        lock expired must not overwrite a newer token.
        """
        ...


def _next_version(replaces: int | None) -> int:
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

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data_lock = threading.Lock()
        self._stored: StoredToken | None = None

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
        if not self._lock.acquire(timeout=DEFAULT_LOCK_WAIT):
            raise TokenStoreError(
                f"could not take the in-memory token lock within {DEFAULT_LOCK_WAIT:g} s"
            )
        try:
            yield
        finally:
            self._lock.release()

    def load(self) -> StoredToken | None:
        return self._stored

    def save(self, token: Mapping[str, Any], *, replaces: int | None) -> int:
        with self._data_lock:
            found = None if self._stored is None else self._stored.version
            if found != replaces:
                raise _conflict(found, replaces)
            version = _next_version(replaces)
            self._stored = StoredToken(dict(token), version)
            return version


_SESSION_STORES: weakref.WeakKeyDictionary[object, MemoryTokenStore] = weakref.WeakKeyDictionary()
_SESSION_STORES_LOCK = threading.Lock()


class FileTokenStore:
    """A JSON file, shared by the processes of one machine.

    * Written atomically (a temp file in the same folder, fsync, ``os.replace``, fsync of the
      folder), mode 0600 whatever the umask, so a crash leaves the old token or the new one.
    * Locked through a separate ``<name>.lock`` file with the ``filelock`` package (``flock``
      on POSIX: the kernel releases it when its holder dies, even by SIGKILL). Waiting for it
      is bounded by ``lock_wait`` seconds.
    * A file that cannot be read or parsed raises :class:`TokenStoreError` and is never
      overwritten: it may hold the only copy of a rotated refresh token.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, lock_wait: float = DEFAULT_LOCK_WAIT
    ) -> None:
        if lock_wait <= 0:
            raise ValueError("lock_wait must be a positive number of seconds")
        self.path = Path(path).expanduser()
        self.lock_wait = lock_wait
        # Threads of this process queue on _thread_lock; processes on the file lock, which
        # is then only ever held by one thread of ours at a time.
        self._thread_lock = threading.Lock()
        self._file_lock = FileLock(
            str(self.path) + ".lock", timeout=lock_wait, mode=0o600, thread_local=False
        )

    def __repr__(self) -> str:
        return f"FileTokenStore({str(self.path)!r})"

    @contextmanager
    def lock(self) -> Iterator[None]:
        timed_out = TokenStoreError(
            f"could not lock {self.path} within {self.lock_wait:g} s "
            "(another refresher holds it for longer than a refresh takes)"
        )
        if not self._thread_lock.acquire(timeout=self.lock_wait):
            raise timed_out
        try:
            try:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._file_lock.acquire()
            except Timeout as exc:
                raise timed_out from exc
            except OSError as exc:
                raise TokenStoreError(f"could not lock {self.path}: {exc.strerror}") from exc
            try:
                yield
            finally:
                self._file_lock.release()
        finally:
            self._thread_lock.release()

    def load(self) -> StoredToken | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TokenStoreError(f"cannot read {self.path}: {exc.strerror}") from exc
        try:
            document = json.loads(raw)
            version, token = document["version"], document["token"]
        except (ValueError, TypeError, KeyError) as exc:
            raise TokenStoreError(
                f"{self.path} is not a token file written by zeep-sfrefresh; "
                "it is left as is (fix or remove it by hand)"
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
        return StoredToken(token, version)

    def save(self, token: Mapping[str, Any], *, replaces: int | None) -> int:
        current = self.load()
        found = None if current is None else current.version
        if found != replaces:
            raise _conflict(found, replaces)
        version = _next_version(replaces)
        payload = json.dumps({"version": version, "token": dict(token)}, indent=1).encode()
        self._write_atomically(payload)
        return version

    def _write_atomically(self, payload: bytes) -> None:
        folder = self.path.parent
        try:
            fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=folder)
        except OSError as exc:
            raise TokenStoreError(f"cannot write in {folder}: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "wb") as file:
                os.fchmod(file.fileno(), 0o600)  # mkstemp's default, made explicit
                file.write(payload)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise TokenStoreError(f"cannot write {self.path}: {exc.strerror}") from exc
        with contextlib.suppress(OSError):  # durability of the rename; not every FS allows it
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
