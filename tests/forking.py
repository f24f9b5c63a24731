"""A forked child that reports back: for tests of what survives ``os.fork``.

A child that deadlocks never reports and is killed at a deadline; a child that fails reports
nothing and exits non-zero; every child leaves through ``os._exit``, so pytest never runs on
in it.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import time
from collections.abc import Callable
from typing import Any

__all__ = ["CHILD_DEADLINE", "Child", "Report"]

CHILD_DEADLINE = 20.0
"""Seconds a forked child gets to report; a child still silent then is deadlocked."""

Report = dict[str, Any]
"""What a child says, as JSON."""


class Child:
    """A forked child running ``action``; its report comes back as JSON through a pipe."""

    def __init__(self, action: Callable[[], Report]) -> None:
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest, whatever happens
            code = 70
            try:
                os.close(reader)
                report = json.dumps(action()).encode()
                while report:
                    report = report[os.write(writer, report) :]
                code = 0
            finally:
                os._exit(code)
        os.close(writer)
        self.pid = pid
        self._reader = reader
        self._status: int | None = None

    def result(self, timeout: float = CHILD_DEADLINE) -> tuple[Report | None, int | None]:
        """The child's report (None: it said nothing in time) and exit code (None: still
        running at the deadline; it is then killed by :meth:`kill`)."""
        deadline = time.monotonic() + timeout
        data = b""
        while (remaining := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self._reader], [], [], remaining)
            if not ready:
                break
            chunk = os.read(self._reader, 65536)
            if not chunk:  # EOF: the child closed its end (it exited)
                break
            data += chunk
        while self._status is None and time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._status = os.waitstatus_to_exitcode(status)
            else:
                time.sleep(0.01)
        report: Report | None = json.loads(data) if data else None
        return report, self._status

    def kill(self) -> None:
        """Kill the child if it still runs, reap it, close the pipe. Safe to call twice."""
        if self._status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            _, status = os.waitpid(self.pid, 0)
            self._status = os.waitstatus_to_exitcode(status)
        if self._reader >= 0:
            os.close(self._reader)
            self._reader = -1
