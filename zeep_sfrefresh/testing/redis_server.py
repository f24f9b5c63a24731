"""A real redis-server on a free loopback port, or a real Redis cluster of three, for tests
and benchmarks of RedisTokenStore.

Needs the ``redis-server`` binary (Debian package ``redis-server``, 7.0 or later for a
cluster) and the ``redis`` package (extra ``[redis]``). No persistence: the servers' data
dies with them.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS as SLOTS
from redis.crc import key_slot

__all__ = ["REDIS_SERVER", "RedisClusterServer", "RedisServer"]

REDIS_SERVER = shutil.which("redis-server")
"""Path of the redis-server binary, or None when it is not installed."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _command(client: redis.Redis, *args: object) -> Any:
    """Run a raw command (``"CLUSTER INFO"`` and the like) on ``client`` and return its reply."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


class RedisServer:
    """One redis-server process with no persistence, bound to 127.0.0.1; a context manager.

    With ``cluster=True`` it runs in cluster mode (its cluster bus on a free port of its
    own), owning no slot until told: :class:`RedisClusterServer` makes a cluster of them.
    """

    def __init__(self, workdir: Path, *, cluster: bool = False) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not installed (Debian package redis-server)")
        self.binary = REDIS_SERVER
        """The redis-server binary it runs."""
        self.workdir = workdir
        """The server's working folder."""
        self.port = _free_port()
        """A free port on 127.0.0.1, taken when the object is made."""
        self.bus_port = _free_port() if cluster else None
        """The cluster bus's port (a cluster node), or None."""
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
                *self._cluster_options(),
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

    def _cluster_options(self) -> list[str]:
        if self.bus_port is None:
            return []
        return [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-port",
            str(self.bus_port),
            "--cluster-node-timeout",
            "1000",
        ]

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


class RedisClusterServer:
    """A Redis cluster of three masters (no replicas) on loopback, each owning a third of the
    hash slots; a context manager. Starting it takes about two seconds: a master reports
    the cluster ready only two seconds after it started."""

    def __init__(self, workdir: Path) -> None:
        self.nodes = [RedisServer(workdir / f"node{n}", cluster=True) for n in range(3)]
        """The cluster's servers."""

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` of the first node: a cluster client finds the others."""
        return self.nodes[0].url

    def client(self, **kwargs: Any) -> redis.RedisCluster:
        """A ``redis.RedisCluster`` on this cluster (2 s socket timeouts); ``kwargs`` go to
        it."""
        return redis.RedisCluster(
            host="127.0.0.1",
            port=self.nodes[0].port,
            socket_timeout=2,
            socket_connect_timeout=2,
            **kwargs,
        )

    def _first_slot(self, n: int) -> int:
        """The first hash slot node ``n`` serves (node ``len(nodes)``: one past the last)."""
        return n * SLOTS // len(self.nodes)

    def node_of(self, key: str) -> RedisServer:
        """The node that serves ``key``'s hash slot."""
        slot = key_slot(key.encode())
        return next(node for n, node in enumerate(self.nodes) if slot < self._first_slot(n + 1))

    def flush(self) -> None:
        """Delete every key on every node."""
        for node in self.nodes:
            node.client().flushall()

    def start(self) -> RedisClusterServer:
        """Start the nodes, split the slots between them, introduce them to each other and
        wait (up to 20 s) until every node reports the cluster ready. Returns self."""
        try:
            for node in self.nodes:
                node.workdir.mkdir(parents=True, exist_ok=True)
                node.start()
            for n, node in enumerate(self.nodes):
                last = self._first_slot(n + 1) - 1
                _command(node.client(), "CLUSTER ADDSLOTSRANGE", self._first_slot(n), last)
            first_node = self.nodes[0].client()
            for node in self.nodes[1:]:
                _command(first_node, "CLUSTER MEET", "127.0.0.1", node.port, node.bus_port)
            deadline = time.monotonic() + 20
            while not all(self._ready(node) for node in self.nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError("the Redis cluster did not become ready within 20 s")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self, node: RedisServer) -> bool:
        """Whether ``node`` knows every node and reports the cluster ready."""
        info = _command(node.client(decode_responses=True), "CLUSTER INFO")
        fields = (
            info
            if isinstance(info, dict)
            else dict(line.split(":", 1) for line in str(info).splitlines() if ":" in line)
        )
        known = str(len(self.nodes))
        return fields.get("cluster_state") == "ok" and fields.get("cluster_known_nodes") == known

    def stop(self) -> None:
        """Kill every node. Safe to call twice."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisClusterServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
