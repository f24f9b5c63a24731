"""A real redis-server on a free loopback port, for tests and benchmarks of RedisTokenStore.

Needs the ``redis-server`` binary (Debian package ``redis-server``) and the ``redis``
package (extra ``[redis]``). No persistence: the server's data dies with it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

__all__ = ["REDIS_SERVER", "RedisServer"]

REDIS_SERVER = shutil.which("redis-server")
"""Path of the redis-server binary, or None when it is not installed."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One redis-server process with no persistence, bound to 127.0.0.1; a context manager."""

    def __init__(self, workdir: Path) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not installed (Debian package redis-server)")
        self.binary = REDIS_SERVER
        """The redis-server binary it runs."""
        self.workdir = workdir
        """The server's working folder."""
        self.port = _free_port()
        """A free port on 127.0.0.1, taken when the object is made."""
        self.process: subprocess.Popen[bytes] | None = None
        """The running server, or None."""

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs: Any) -> redis.Redis:
        """A ``redis.Redis`` on this server (2 s socket timeouts); ``kwargs`` go to it."""
        return redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2, **kwargs)

    def start(self) -> RedisServer:
        """Start the server and wait (up to 10 s) until it answers PING. Returns self."""
        self.process = subprocess.Popen(  # noqa: S603 - our own arguments, a resolved binary
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client().ping():
                    return self
            except redis.RedisError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill the server, if running. Safe to call twice."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
