"""Waking a waiter when a file is written: inotify on Linux, a plain sleep elsewhere.

A :class:`~zeep_sfrefresh.FileTokenStore` worker that waits for another worker's token
looks at the token file on a schedule (``watch_until``) and sleeps between looks. On Linux
that sleep ends as soon as the kernel reports that the file's name was written, replaced or
removed in its folder (inotify), so the new token is read within microseconds of its rename
instead of within a poll interval, and the sleeping waiters use no CPU meanwhile.

The schedule stays the backstop, so nothing depends on the kernel's report: where inotify
is missing or refused (another OS, the per-user limit of inotify instances, a full
descriptor table) the wait is the sleep it was, and a file on a network share, whose
writes by other machines the kernel never reports, is still seen at the next look.
"""

from __future__ import annotations

import logging
import os
import select
import struct
import sys
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import TracebackType

__all__ = ["FileWatch", "names_file"]

logger = logging.getLogger(__name__)

# inotify(7). Events on a name in the folder that may change what the name holds: written
# in place and closed, renamed onto (how this package writes), created, removed, renamed away.
_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_FROM = 0x00000040
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_DELETE = 0x00000200
_ON_NAME = _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
# Events on the folder itself, or on the watch: each wakes the waiter, whose next look says
# what became of the file (the kernel reports these without being asked).
_IN_DELETE_SELF = 0x00000400
_IN_MOVE_SELF = 0x00000800
_IN_UNMOUNT = 0x00002000
_IN_Q_OVERFLOW = 0x00004000
_IN_IGNORED = 0x00008000
_ON_FOLDER = _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_UNMOUNT | _IN_Q_OVERFLOW | _IN_IGNORED
_IN_ONLYDIR = 0x01000000
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name
_READ_SIZE = 4096  # whole events only; what does not fit is read at the next turn


def names_file(events: bytes, name: bytes) -> bool:
    """Whether the inotify events in ``events`` (bytes read from the descriptor) may have
    changed the file called ``name`` in the watched folder: an event on that name, or one
    on the folder or the watch itself. Events on other names (the temp file a write goes
    through, the ``.intent`` file beside the token) are not."""
    offset = 0
    while offset + _EVENT.size <= len(events):
        _wd, mask, _cookie, length = _EVENT.unpack_from(events, offset)
        offset += _EVENT.size
        if offset + length > len(events):  # cut short: the kernel writes whole events only
            return False
        named = events[offset : offset + length].rstrip(b"\0")
        offset += length
        if mask & _ON_FOLDER or (mask & _ON_NAME and named == name):
            return True
    return False


_Inotify = tuple[Callable[[int], int], Callable[[int, bytes, int], int]]


@cache
def _inotify() -> _Inotify | None:
    """libc's ``inotify_init1`` and ``inotify_add_watch``, or None (not Linux, no such
    calls). Loaded at the first wait, not at import: most processes never wait."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # here: only a process that waits pays for it

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        init, add = libc.inotify_init1, libc.inotify_add_watch
    except (OSError, AttributeError):
        return None
    init.argtypes, init.restype = [ctypes.c_int], ctypes.c_int
    add.argtypes, add.restype = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32], ctypes.c_int
    return init, add


@cache
def _unwatched(reason: str) -> None:
    """Say once per process and reason that waits sleep their whole pause."""
    logger.debug("waiting for token files by their schedule alone: %s", reason)


def _watch(folder: Path) -> int:
    """An inotify descriptor watching ``folder`` (non-blocking, closed on exec), or -1."""
    calls = _inotify()
    if calls is None:
        _unwatched("no inotify on this system")
        return -1
    init, add = calls
    fd = init(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        _unwatched(os.strerror(_errno()))  # EMFILE: the per-user limit of instances
        return -1
    if add(fd, os.fsencode(folder), _ON_NAME | _ON_FOLDER | _IN_ONLYDIR) < 0:
        reason = os.strerror(_errno())  # ENOSPC: the per-user limit of watches
        os.close(fd)
        _unwatched(reason)
        return -1
    return fd


def _errno() -> int:
    import ctypes  # imported already by _inotify

    return ctypes.get_errno()


class FileWatch:
    """Sleeps that end when a file is written, for one wait of one thread.

    Made before the waiter's first look at the file, so a write after that look is reported
    (a write before it is reported too, and costs one look more). A context manager: the
    descriptor is closed at its end. Not shared between threads (an event read by one
    would not wake the other): each wait makes its own, one descriptor and three system
    calls, only when a worker has to wait."""

    def __init__(self, path: Path) -> None:
        self._name = os.fsencode(path.name)
        self._fd = _watch(path.parent)
        self._poll: select.poll | None = None
        if self._fd >= 0:
            self._poll = select.poll()
            self._poll.register(self._fd, select.POLLIN)

    @property
    def watching(self) -> bool:
        """Whether the kernel reports writes (else :meth:`sleep` sleeps it all)."""
        return self._poll is not None

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or less: until the file may have changed (see
        :func:`names_file`). The caller looks at the file either way."""
        if self._poll is None:
            time.sleep(seconds)
            return
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if not self._poll.poll(remaining * 1000):  # milliseconds, rounded up
                return
            try:
                events = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:  # pragma: no cover - poll said readable
                continue
            if names_file(events, self._name):
                return

    def close(self) -> None:
        """Stop watching (idempotent)."""
        if self._fd >= 0:
            fd, self._fd, self._poll = self._fd, -1, None
            os.close(fd)

    def __enter__(self) -> FileWatch:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
