"""A worker that did not meet an expiry sends its next call with the token another worker
stored (the stores' ``peek``), instead of failing once with the old one. Real parts: the
stand-in org over sockets, token files on disk, a real redis-server and cluster."""

from __future__ import annotations

import functools
import gc
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import Harness, InBackground, make_oauth, store_maker, wait_for, workers_on_one_store
from forking import Child
from redis.backoff import NoBackoff
from redis.retry import Retry

import zeep_sfrefresh._redis_store as redis_store_module
from zeep_sfrefresh import (
    FileTokenStore,
    MemoryTokenStore,
    RedisTokenStore,
    RefreshEvent,
    SalesforceTransport,
    StoredToken,
    TokenStore,
)
from zeep_sfrefresh._refresh import NEWER_IN_STORE
from zeep_sfrefresh.testing import StandInOrg
from zeep_sfrefresh.testing.redis_server import RedisClusterServer, RedisServer

Build = Callable[..., Harness]

TOKEN = {
    "access_token": "00DSECRETACCESS",
    "refresh_token": "5AepSECRETREFRESH",
    "instance_url": "https://a.my.salesforce.com",
}
NEWER = {**TOKEN, "access_token": "00DSECRETACCESS2", "refresh_token": "5AepSECRETREFRESH2"}
NEWEST = {**TOKEN, "access_token": "00DSECRETACCESS3", "refresh_token": "5AepSECRETREFRESH3"}


Store = FileTokenStore | MemoryTokenStore | RedisTokenStore


pytestmark = pytest.mark.usefixtures("watches_end")


def _watches(server: RedisServer) -> int:
    """How many connections wait in an ``XREAD`` of ``k:changes``: the watches."""
    return sum(
        1
        for client in _stats_client(server).client_list()
        if client["cmd"] == "xread" and "b" in client["flags"]
    )


# --- through the transports -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "redis", "redis-cluster", "memory"])
def test_a_worker_that_did_not_meet_the_expiry_sends_the_new_token_at_once(
    harness: Build, request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    events: list[RefreshEvent] = []
    a, b, b_store = workers_on_one_store(
        harness, store_maker(kind, request, tmp_path), listener=events.append
    )
    a.client.service.getServerTimestamp()  # a meets the expiry and refreshes
    fresh = a.saved[0]["access_token"]
    wait_for(lambda: b_store.peek(1) is not None)  # Redis: the announcement reached b's watch
    posts = a.org.soap_posts
    b.client.service.getServerTimestamp()
    # One post, with the new token: no failed call, no token request, no revocation.
    assert a.org.soap_posts == posts + 1
    assert a.org.sessions_seen[-1] == fresh
    assert (a.org.token_requests, a.org.family_revocations) == (1, 0)
    assert b.transport.token.access_token == fresh
    assert b.oauth.token["access_token"] == fresh  # told, as after any adoption
    assert b.saved == []  # its token_updater is for tokens it refreshed itself
    assert [(e.kind, e.reason) for e in events] == [("adopted", NEWER_IN_STORE)]
    b.client.service.getServerTimestamp()
    assert len(events) == 1  # adopted once


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_without_watch_a_worker_fails_once_and_adopts(
    harness: Build, request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    make = store_maker(kind, request, tmp_path, watch=False)
    a = harness(store=make())
    b = harness(store=make())
    b.client.service.getServerTimestamp()
    a.org.expire_all_sessions()
    a.client.service.getServerTimestamp()
    time.sleep(0.2)  # time enough for a watch, had there been one
    posts = a.org.soap_posts
    b.client.service.getServerTimestamp()
    assert a.org.soap_posts == posts + 2  # the failed call, then the resend
    assert a.org.token_requests == 1
    assert b.transport.token.access_token == a.saved[0]["access_token"]


def _transport(org: StandInOrg, store: TokenStore, **options: Any) -> SalesforceTransport:
    return SalesforceTransport(make_oauth(org, org.issue_token(), []), store=store, **options)


def test_a_look_never_waits_for_a_refresh_under_way(
    sf_org: StandInOrg, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "token.json"
    events: list[RefreshEvent] = []
    transport = _transport(sf_org, FileTokenStore(path), listener=events.append)
    refresher = transport._core.refresher
    before = refresher.current
    other = FileTokenStore(path)
    with other.lock():
        other.save(NEWER, replaces=1)
    with refresher._lock:  # as a refresh in another thread holds it for its token request
        assert refresher.current is before  # at once, with the token in hand
    with caplog.at_level(logging.INFO, logger="zeep_sfrefresh"):
        assert refresher.current.token.access_token == NEWER["access_token"]
    assert refresher.current.epoch == before.epoch + 1
    # The stored token names another instance: the move is told, as after a refresh.
    host = sf_org.url.removeprefix("http://")
    assert [(e.kind, e.reason, e.old_instance, e.new_instance) for e in events] == [
        ("adopted", NEWER_IN_STORE, host, "a.my.salesforce.com"),
        ("instance_moved", NEWER_IN_STORE, host, "a.my.salesforce.com"),
    ]
    assert f"the org's instance moved: {host} -> a.my.salesforce.com" in caplog.messages


def test_a_look_at_the_version_held_is_no_news(sf_org: StandInOrg, tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    transport = _transport(sf_org, FileTokenStore(path))
    refresher = transport._core.refresher
    other = FileTokenStore(path)
    with other.lock():
        other.save(NEWER, replaces=1)
    seen = other.peek(1)
    assert seen == StoredToken(NEWER, 2)
    adopted = refresher.current  # adopts version 2
    # A look made before that, handed over after it: the process holds version 2 already.
    assert refresher._adopt_peeked(seen) is adopted
    assert refresher._adopt_peeked(StoredToken(NEWEST, 2)) is adopted
    assert refresher.current.token.access_token == NEWER["access_token"]


def test_an_unusable_newer_token_is_logged_and_left(
    sf_org: StandInOrg, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "token.json"
    transport = _transport(sf_org, FileTokenStore(path))
    before = transport._core.refresher.current
    other = FileTokenStore(path)
    with other.lock():
        other.save({**NEWER, "instance_url": "ftp://a.example"}, replaces=1)
    with caplog.at_level(logging.WARNING):
        assert transport._core.refresher.current is before
    assert "not adopting the store's newer token" in caplog.text
    assert "SECRET" not in caplog.text


# --- FileTokenStore.peek ----------------------------------------------------------------------


def _seeded_file(path: Path) -> FileTokenStore:
    store = FileTokenStore(path)
    with store.lock():
        store.save(TOKEN, replaces=None)
    return store


def test_file_peek_reads_each_change_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "token.json"
    writer = _seeded_file(path)
    looker = FileTokenStore(path)
    assert looker.peek(1) is None
    assert looker.peek(0) == StoredToken(TOKEN, 1)
    with writer.lock():
        writer.save(NEWER, replaces=1)
    assert looker.peek(1) == StoredToken(NEWER, 2)
    assert looker.peek(2) is None
    # A change of mode alone is no write: the file is not read again (it would be refused).
    path.chmod(0o644)
    assert looker.peek(1) == StoredToken(NEWER, 2)
    assert caplog.text == ""
    path.chmod(0o600)
    # A file that cannot be read: None, logged once for that change.
    path.write_text("not a token file")
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING):
        assert looker.peek(1) is None
        assert looker.peek(1) is None
    assert caplog.text.count("not looking for a newer token") == 1


def test_file_peek_without_a_file_or_without_watch(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    assert FileTokenStore(path).peek(0) is None
    _seeded_file(path)
    assert FileTokenStore(path, watch=False).peek(0) is None
    assert FileTokenStore(path).peek(0) == StoredToken(TOKEN, 1)


def test_memory_peek_is_a_copy_of_a_newer_token() -> None:
    store = MemoryTokenStore()
    assert store.peek(0) is None
    with store.lock():
        store.save(TOKEN, replaces=None)
    found = store.peek(0)
    assert found == StoredToken(TOKEN, 1)
    assert found is not None
    found.token["access_token"] = "changed"  # type: ignore[index]
    assert store.peek(0) == StoredToken(TOKEN, 1)
    assert store.peek(1) is None


@pytest.mark.parametrize("watch", [True, False])
def test_store_watch_must_be_a_bool(tmp_path: Path, watch: bool) -> None:
    assert FileTokenStore(tmp_path / "t.json", watch=watch).watch is watch
    with pytest.raises(TypeError, match="watch must be a bool, not str"):
        FileTokenStore(tmp_path / "t.json", watch="false")  # type: ignore[arg-type]


# --- RedisTokenStore.peek: the watch of the change stream -------------------------------------


def _seeded_redis(client: redis.Redis | redis.RedisCluster, key: str = "k") -> RedisTokenStore:
    store = RedisTokenStore(client, key)
    with store.lock():
        store.save(TOKEN, replaces=None)
    return store


def _connections(server: RedisServer) -> int:
    """Connections the server accepted (this count's own client connects once per server)."""
    return int(_stats_client(server).info("stats")["total_connections_received"])


@functools.cache
def _stats_client(server: RedisServer) -> redis.Redis:
    return server.client()


def _commands(server: RedisServer, name: str) -> int:
    stats = _stats_client(server).info("commandstats").get(f"cmdstat_{name}", {})
    return int(stats.get("calls", 0))


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("decode_responses", [False, True])
def test_redis_peek_learns_of_a_write_with_no_round_trip(
    redis_server: RedisServer, protocol: int, decode_responses: bool
) -> None:
    writer = _seeded_redis(redis_server.client())
    looker = RedisTokenStore(
        redis_server.client(protocol=protocol, decode_responses=decode_responses), "k"
    )
    assert looker.peek(1) is None  # the watch starts, from version 1
    with writer.lock():
        writer.save(NEWER, replaces=1)
    wait_for(lambda: looker.peek(1) is not None)
    assert looker.peek(1) == StoredToken(NEWER, 2)
    assert looker.peek(2) is None
    reads = [_commands(redis_server, name) for name in ("hmget", "evalsha", "xread")]
    for _ in range(50):
        looker.peek(1)
    # No command for the looks (the watch's own XREAD, at most one a second, aside).
    assert [_commands(redis_server, name) for name in ("hmget", "evalsha")] == reads[:2]


def test_redis_peek_starts_from_a_write_made_before_it(redis_server: RedisServer) -> None:
    writer = _seeded_redis(redis_server.client())
    with writer.lock():
        writer.save(NEWER, replaces=1)
    looker = RedisTokenStore(redis_server.client(), "k")
    looker.peek(1)  # the watch starts, reading from version 1 on: it finds version 2
    wait_for(lambda: looker.peek(1) == StoredToken(NEWER, 2))


def test_redis_peek_without_watch_reads_nothing(redis_server: RedisServer) -> None:
    writer = _seeded_redis(redis_server.client())
    looker = RedisTokenStore(redis_server.client(), "k", watch=False)
    with writer.lock():
        writer.save(NEWER, replaces=1)
    connections = _connections(redis_server)
    assert looker.peek(1) is None
    assert looker.peek_intent(1) is None
    assert _connections(redis_server) == connections
    with pytest.raises(TypeError, match="watch must be a bool"):
        RedisTokenStore(redis_server.client(), "k", watch=1)  # type: ignore[arg-type]


def test_redis_watch_ends_with_its_store(redis_server: RedisServer) -> None:
    connections = _connections(redis_server)
    looker = RedisTokenStore(redis_server.client(), "k")
    for _ in range(20):
        looker.peek(0)
    wait_for(lambda: _watches(redis_server) == 1)  # one per store, however many looks
    assert _connections(redis_server) == connections + 1
    del looker
    gc.collect()
    wait_for(lambda: _watches(redis_server) == 0)  # its connection closed


def test_a_watch_costs_no_thread(redis_server: RedisServer) -> None:
    threads = threading.active_count()
    looker = RedisTokenStore(redis_server.client(), "k")
    looker.peek(0)  # a thread makes the connection, and ends
    wait_for(lambda: _watches(redis_server) == 1)
    wait_for(lambda: threading.active_count() == threads)
    for _ in range(20):
        looker.peek(0)
    assert threading.active_count() == threads


def test_redis_watch_outlasts_a_short_socket_timeout(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # No read of the watch waits on the socket's timeout: its XREAD blocks far longer.
    # Nor does a health check (a PING and its answer, from a look) come before it.
    writer = _seeded_redis(redis_server.client())
    short = redis.Redis.from_url(redis_server.url, socket_timeout=0.05, health_check_interval=1e-6)
    looker = RedisTokenStore(short, "k")
    with caplog.at_level(logging.WARNING):
        looker.peek(1)
        wait_for(lambda: _watches(redis_server) == 1)
        connections, pings = _connections(redis_server), _commands(redis_server, "ping")
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            assert looker.peek(1) is None
            time.sleep(0.01)
        assert looker.wait_for_change(1, 0.3) is None  # waits on the watch, past 50 ms
        with writer.lock():
            writer.save(NEWER, replaces=1)
        wait_for(lambda: looker.peek(1) == StoredToken(NEWER, 2))
        time.sleep(0.05)
        with writer.lock():  # read after a pause longer than the health check's interval
            writer.save(NEWEST, replaces=2)
        wait_for(lambda: looker.peek(2) == StoredToken(NEWEST, 3))
        assert _connections(redis_server) == connections  # no reconnect
        assert _commands(redis_server, "ping") == pings
    assert caplog.text == ""


def test_redis_watch_whose_xread_goes_unanswered_starts_over(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A connection that died without a word (the server stopped, a network cut): the
    # XREAD's answer is overdue, so the watch takes a new connection.
    monkeypatch.setattr(redis_store_module, "_WATCH_BLOCK_MS", 200)
    monkeypatch.setattr(redis_store_module, "_WATCH_GRACE", 0.3)
    monkeypatch.setattr(redis_store_module, "_WATCH_PAUSE", 0.1)
    writer = _seeded_redis(redis_server.client())
    looker = RedisTokenStore(redis.Redis.from_url(redis_server.url, socket_timeout=5), "k")
    looker.peek(1)
    wait_for(lambda: _watches(redis_server) == 1)
    assert redis_server.process is not None
    with caplog.at_level(logging.WARNING):
        # Answered in time (blocks that ran out) is no failure, however long nothing comes.
        connections = _connections(redis_server)
        deadline = time.monotonic() + 0.8
        while time.monotonic() < deadline:
            assert looker.peek(1) is None
            time.sleep(0.01)
        assert (_connections(redis_server), caplog.text) == (connections, "")
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            # Past the block and the grace (an answer that came just before the stop is
            # read first, and its next XREAD waited for).
            wait_for(lambda: looker.peek(1) is None and "went unanswered" in caplog.text)
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        assert caplog.text.count("for new tokens failed (TimeoutError: ") == 1
        assert "went unanswered" in caplog.text
        with writer.lock():
            writer.save(NEWER, replaces=1)
        wait_for(lambda: looker.peek(1) == StoredToken(NEWER, 2))


def test_redis_watch_that_ran_out_reads_on_at_the_next_look(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An XREAD that ran out while nobody looked: the look that reads its empty answer sends
    # the next one, whose answer holds the token written meanwhile, at once.
    monkeypatch.setattr(redis_store_module, "_WATCH_BLOCK_MS", 100)
    writer = _seeded_redis(redis_server.client())
    looker = RedisTokenStore(redis_server.client(), "k")
    looker.peek(1)
    wait_for(lambda: _watches(redis_server) == 1)
    wait_for(lambda: _watches(redis_server) == 0)  # it ran out: nothing under way
    with writer.lock():
        writer.save(NEWER, replaces=1)
    reads = _commands(redis_server, "xread")
    wait_for(lambda: looker.peek(1) == StoredToken(NEWER, 2))
    assert _commands(redis_server, "xread") - reads == 2  # the one answered, the next


def test_redis_watch_reads_the_hash_for_an_entry_without_the_token(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()
    _seeded_redis(client)
    looker = RedisTokenStore(client, "k")
    looker.peek(1)
    client.hset("k", mapping={"version": "2", "token": '{"access_token": "00DSECRETACCESS2"}'})
    client.xadd("k:changes", {"version": "2"}, id="2-0")  # as an older release announced
    wait_for(lambda: looker.peek(1) == StoredToken({"access_token": "00DSECRETACCESS2"}, 2))


def test_redis_watch_outlives_a_garbled_entry(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis_server.client()
    writer = _seeded_redis(client)
    looker = RedisTokenStore(client, "k")
    looker.peek(1)
    with caplog.at_level(logging.WARNING):
        client.xadd("k:changes", {"version": "2", "token": "{"}, id="2-0")
        wait_for(lambda: looker.peek(1) is None and "for new tokens failed" in caplog.text)
        client.hset("k", mapping={"version": "2"})
        with writer.lock():
            writer.save(NEWEST, replaces=2)
        wait_for(lambda: looker.peek(1) == StoredToken(NEWEST, 3))
    assert caplog.text.count("watching") == 1
    assert "SECRET" not in caplog.text


def test_redis_down_is_logged_once_and_peek_keeps_what_it_saw(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    writer = _seeded_redis(redis_server.client())
    looker = RedisTokenStore(redis_server.client(), "k")
    looker.peek(1)
    with writer.lock():
        writer.save(NEWER, replaces=1)
    wait_for(lambda: looker.peek(1) is not None)
    with caplog.at_level(logging.WARNING):
        redis_server.stop()
        wait_for(lambda: looker.peek(1) is not None and "failed (ConnectionError: " in caplog.text)
        deadline = time.monotonic() + 1.6  # pauses of 0.5 s and 1 s: two more failed
        while time.monotonic() < deadline:  # tries (at looks), not logged
            assert looker.peek(1) == StoredToken(NEWER, 2)
            time.sleep(0.01)
        assert caplog.text.count("for new tokens failed") == 1
        # Back (empty: no persistence): the watch reads again, and relies on it again.
        redis_server.start()
        writer = _seeded_redis(redis_server.client())
        for version, token in ((2, NEWER), (3, NEWEST)):
            with writer.lock():
                writer.save(token, replaces=version - 1)
        wait_for(lambda: looker.peek(2) == StoredToken(NEWEST, 3), timeout=15)
        reads = _commands(redis_server, "xread")
        assert looker.wait_for_change(3, 0.3) is None
        assert _commands(redis_server, "xread") - reads <= 1  # on the watch, not its own
        # A second outage is logged again, at its first failure (a look finds it).
        redis_server.stop()
        watcher = looker._watcher
        assert watcher is not None
        wait_for(lambda: looker.peek(3) is None and not watcher.reading)
        assert caplog.text.count("tokens failed") == 2


def test_redis_watch_refused_by_an_acl_ends_logged_once(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    _seeded_redis(redis_server.client())
    redis_server.client().acl_setuser(
        "worker", enabled=True, passwords=["+pw"], keys=["k", "k:lock"], commands=["+@all"]
    )
    url = f"redis://worker:pw@127.0.0.1:{redis_server.port}/0"
    looker = RedisTokenStore(redis.Redis.from_url(url, socket_timeout=2), "k")
    with caplog.at_level(logging.WARNING):
        assert looker.peek(0) is None
        wait_for(lambda: looker.peek(0) is None and "Redis refused to read" in caplog.text)
        # Its connection closed by that look, not left idle until the next one.
        clients = _stats_client(redis_server).client_list
        wait_for(lambda: not any(client["user"] == "worker" for client in clients()))
        connections = _connections(redis_server)
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:  # ended: no more tries, however many looks
            assert looker.peek(0) is None
            time.sleep(0.01)
        assert _connections(redis_server) == connections
    assert caplog.text.count("Redis refused to read 'k:changes'") == 1
    # A waiting worker then reads the stream itself (refused too: it polls instead).
    with caplog.at_level(logging.WARNING):
        assert looker.wait_for_change(1, 0.2) is None
    assert "waiting workers poll instead" in caplog.text


def test_redis_watch_on_a_cluster(redis_cluster: RedisClusterServer) -> None:
    writer = _seeded_redis(redis_cluster.client(), "{sf:token}")
    looker = RedisTokenStore(redis_cluster.client(), "{sf:token}")
    looker.peek(1)
    with writer.lock():
        writer.save(NEWER, replaces=1)
    wait_for(lambda: looker.peek(1) == StoredToken(NEWER, 2))


def test_a_forked_child_watches_on_a_connection_of_its_own(redis_server: RedisServer) -> None:
    writer = _seeded_redis(redis_server.client())
    looker = RedisTokenStore(redis_server.client(), "k")
    looker.peek(1)  # the parent's watch: the child must not read its connection
    wait_for(lambda: _watches(redis_server) == 1)

    def in_child() -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while (found := looker.peek(1)) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return {"version": None if found is None else found.version, "pid": os.getpid()}

    child = Child(in_child)
    wait_for(lambda: _watches(redis_server) == 2)  # the child's own
    with writer.lock():
        writer.save(NEWER, replaces=1)  # after the fork
    report, code = child.result()
    assert code == 0
    assert report is not None
    assert report["version"] == 2
    wait_for(lambda: looker.peek(1) == StoredToken(NEWER, 2))  # the parent's, still its own


def test_a_failed_call_adopts_what_the_watch_has_with_no_round_trip(
    sf_org: StandInOrg, redis_server: RedisServer
) -> None:
    transport = _transport(sf_org, RedisTokenStore(redis_server.client(), "k"))
    refresher = transport._core.refresher
    sent = refresher.current  # the watch starts; this is what a call sends
    writer = RedisTokenStore(redis_server.client(), "k")
    with writer.lock():
        writer.save(NEWER, replaces=1)
    store = refresher.store
    assert isinstance(store, RedisTokenStore)
    wait_for(lambda: store.peek(1) is not None)
    before = [_commands(redis_server, name) for name in ("evalsha", "hmget", "set")]
    newer = refresher.refresh_after(sent)  # that call met INVALID_SESSION_ID
    assert newer.token.access_token == NEWER["access_token"]
    assert [_commands(redis_server, name) for name in ("evalsha", "hmget", "set")] == before
    assert sf_org.token_requests == 0


def test_a_waiting_worker_waits_on_the_watch(redis_server: RedisServer) -> None:
    writer = _seeded_redis(redis_server.client())
    looker = RedisTokenStore(redis_server.client(), "k")
    looker.peek(1)
    wait_for(lambda: _commands(redis_server, "xread") >= 1)  # the watch is in its XREAD
    reads = _commands(redis_server, "xread")
    started = time.monotonic()
    assert looker.wait_for_change(1, 0.3) is None
    assert time.monotonic() - started >= 0.3
    # An XREAD of its own would be one every 100 ms; the watch's may end its block once.
    assert _commands(redis_server, "xread") - reads <= 1
    waiter = InBackground(lambda: looker.wait_for_change(1, 10))
    with writer.lock():
        writer.save(NEWER, replaces=1)
    assert waiter.join(5).result == StoredToken(NEWER, 2)
    started = time.monotonic()
    assert looker.wait_for_change(2, 0.2) is None  # the version it holds is no change
    assert time.monotonic() - started >= 0.2


def test_a_wait_on_the_watch_ends_when_redis_goes_away(redis_server: RedisServer) -> None:
    _seeded_redis(redis_server.client())
    looker = RedisTokenStore(redis_server.client(), "k")
    looker.peek(1)
    wait_for(lambda: _commands(redis_server, "xread") >= 1)
    started = time.monotonic()
    waiter = InBackground(lambda: looker.wait_for_change(1, 10))
    time.sleep(0.1)
    redis_server.stop()
    waiter.join(8)
    # Early, not after its 10 s: the caller then reads for itself (and learns Redis is down).
    assert (waiter.result, waiter.error) == (None, None)
    assert time.monotonic() - started < 8


class _Listener:
    """A TCP server on 127.0.0.1 handing each connection it accepts to :meth:`_take`, in its
    accepting thread, until closed."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                accepted, _ = self._server.accept()
            except OSError:
                return  # closed
            self._take(accepted)

    def _take(self, accepted: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._server.close()


class _Hangup(_Listener):
    """Closes every connection at once, noting when each came: a Redis that fails every
    command the same way, so the watch's retries can be counted."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        super().__init__()

    def _take(self, accepted: socket.socket) -> None:
        self.arrivals.append(time.monotonic())
        accepted.close()


class _Relay(_Listener):
    """A relay to a Redis that makes each new connection wait ``delay`` seconds before it
    reaches the server (None: never): a watch still being connected, for as long as a test
    needs. Each side's close closes the other."""

    def __init__(self, upstream: int, delay: float | None) -> None:
        self._upstream, self._delay = upstream, delay
        self._closed = threading.Event()
        super().__init__()

    def _take(self, accepted: socket.socket) -> None:
        threading.Thread(target=self._relay, args=(accepted,), daemon=True).start()

    def _relay(self, accepted: socket.socket) -> None:
        if self._closed.wait(self._delay):
            accepted.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self._upstream))
        with accepted, upstream:
            ends = {accepted: upstream, upstream: accepted}
            while not self._closed.is_set():
                for end in select.select(list(ends), [], [], 0.1)[0]:
                    data = end.recv(65536)
                    if not data:
                        return
                    ends[end].sendall(data)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, retry=Retry(NoBackoff(), 0))

    def close(self) -> None:
        self._closed.set()
        super().close()


@pytest.fixture
def relay(redis_server: RedisServer) -> Iterator[Callable[[float | None], _Relay]]:
    relays: list[_Relay] = []

    def make(delay: float | None) -> _Relay:
        relays.append(_Relay(redis_server.port, delay))
        return relays[-1]

    yield make
    for made in relays:
        made.close()


def _connecting() -> bool:
    """Whether a watch's connection is being made (its thread runs)."""
    return any(t.name == "zeep-sfrefresh-watch-connect" for t in threading.enumerate())


def _timed_wait(
    store: RedisTokenStore, version: int, timeout: float
) -> Callable[[], tuple[StoredToken | None, float, float]]:
    """A ``wait_for_change`` that returns what it returned, its seconds and its thread's CPU
    seconds."""

    def wait() -> tuple[StoredToken | None, float, float]:
        started, cpu = time.monotonic(), time.thread_time()
        found = store.wait_for_change(version, timeout)
        return found, time.monotonic() - started, time.thread_time() - cpu

    return wait


def test_a_wait_while_the_watch_connects_waits_for_the_watch(
    redis_server: RedisServer, relay: Callable[[float | None], _Relay]
) -> None:
    # Not by reading the stream on a connection of its own, nor by asking again and again
    # (no CPU spent): it sleeps until the connection is made, then on its socket.
    writer = _seeded_redis(redis_server.client())
    looker = RedisTokenStore(relay(0.5).client(), "k")
    connections = _connections(redis_server)
    looker.peek(1)
    assert _connecting()
    waiter = InBackground(_timed_wait(looker, 1, 10))
    time.sleep(0.1)
    with writer.lock():
        writer.save(NEWER, replaces=1)
    result = waiter.join(10).result
    assert isinstance(result, tuple)
    found, waited, cpu = result
    assert found == StoredToken(NEWER, 2)
    assert waited >= 0.3  # the connection's making, not a read of its own
    assert cpu < 0.1
    assert _connections(redis_server) == connections + 1  # the watch's only


def test_a_wait_ends_on_time_while_the_watch_is_still_connecting(
    redis_server: RedisServer, relay: Callable[[float | None], _Relay]
) -> None:
    _seeded_redis(redis_server.client())
    looker = RedisTokenStore(relay(3).client(), "k")
    looker.peek(1)
    found, waited, _ = _timed_wait(looker, 1, 0.2)()
    assert found is None
    assert 0.2 <= waited < 0.9
    assert _connecting()  # it waited no longer than it was told


def test_a_store_collected_while_its_watch_connects_closes_the_connection_made(
    redis_server: RedisServer, relay: Callable[[float | None], _Relay]
) -> None:
    # Even when something keeps the watch itself alive (an interpreter without reference
    # counting, say): the store's end is the watch's.
    looker = RedisTokenStore(relay(0.3).client(), "k")
    looker.peek(0)
    watcher = looker._watcher
    del looker
    gc.collect()
    wait_for(lambda: not _connecting())
    time.sleep(0.1)  # an XREAD sent would be in the server's client list by now
    assert _watches(redis_server) == 0
    assert watcher is not None
    assert not watcher.reading


def test_a_store_collected_while_its_watch_connects_logs_no_failure_of_it(
    redis_server: RedisServer,
    relay: Callable[[float | None], _Relay],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The connection then fails (the relay hangs up): nobody is left to be told.
    connecting = relay(None)
    looker = RedisTokenStore(connecting.client(), "k")
    with caplog.at_level(logging.WARNING):
        looker.peek(0)
        del looker
        gc.collect()
        connecting.close()
        wait_for(lambda: not _connecting())
    assert caplog.text == ""


def _watched(server: RedisServer) -> tuple[RedisTokenStore, redis_store_module._Watcher]:
    """A store whose watch is reading, and that watch."""
    looker = RedisTokenStore(server.client(), "k")
    looker.peek(0)
    wait_for(lambda: _watches(server) == 1)
    watcher = looker._watcher
    assert watcher is not None
    return looker, watcher


def test_a_store_collected_closes_its_watch_even_while_a_look_reads_it(
    redis_server: RedisServer,
) -> None:
    looker, watcher = _watched(redis_server)
    connections = _connections(redis_server)
    with watcher._lock:  # as a look under way in another thread holds it
        del looker
        gc.collect()
        assert not watcher.reading  # a wait no longer relies on it
        time.sleep(0.1)
        assert _watches(redis_server) == 1  # that look's to close
    watcher.look()
    wait_for(lambda: _watches(redis_server) == 0)
    for _ in range(5):
        watcher.look()
    time.sleep(0.1)
    assert _connections(redis_server) == connections  # ended: never made anew


def test_a_watch_kept_alive_by_something_else_still_ends_with_its_store(
    redis_server: RedisServer,
) -> None:
    looker, watcher = _watched(redis_server)
    del looker
    gc.collect()
    wait_for(lambda: _watches(redis_server) == 0)
    assert not watcher.reading


def test_a_look_never_waits_for_a_waiting_worker(redis_server: RedisServer) -> None:
    # That worker reads the watch's socket, blocked: a call's look skips it instead.
    looker, watcher = _watched(redis_server)
    waiter = InBackground(lambda: looker.wait_for_change(1, 3))
    wait_for(watcher._lock.locked)
    started = time.monotonic()
    assert looker.peek(1) is None
    assert looker.peek_intent(1) is None
    assert time.monotonic() - started < 1.5
    assert waiter.join(10).result is None


def test_waiting_workers_all_wake_for_one_token(redis_server: RedisServer) -> None:
    # One of them reads the watch's socket, the others queue for it: each, once it has its
    # turn, finds the token already read.
    writer = _seeded_redis(redis_server.client())
    looker = RedisTokenStore(redis_server.client(), "k")
    looker.peek(1)
    wait_for(lambda: _watches(redis_server) == 1)
    waiters = [InBackground(lambda: looker.wait_for_change(1, 20)) for _ in range(3)]
    time.sleep(0.1)
    with writer.lock():
        writer.save(NEWER, replaces=1)
    assert [w.join(5).result for w in waiters] == [StoredToken(NEWER, 2)] * 3


def test_a_connection_that_fails_before_it_exists_is_logged_not_raised(
    redis_cluster: RedisClusterServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The cluster's node for the stream cannot be found: the connecting thread logs it, and
    # ends without an exception of its own.
    client = redis_cluster.client()

    def no_node(key: str) -> None:
        raise redis.exceptions.SlotNotCoveredError(f"no node covers {key}")

    monkeypatch.setattr(client, "get_node_from_key", no_node)
    thrown: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", thrown.append)
    looker = RedisTokenStore(client, "{sf:token}")
    with caplog.at_level(logging.WARNING):
        looker.peek(0)
        wait_for(lambda: not _connecting())
    assert caplog.text.count("for new tokens failed (SlotNotCoveredError: no node covers") == 1
    assert thrown == []


class _FailingHandshake(redis.Connection):
    """A connection whose handshake fails with an error redis-py does not clean up after
    (not a ``RedisError``), once its socket is open."""

    def on_connect(self) -> None:  # what redis-py before 5.1 calls
        raise ValueError("handshake went wrong")

    def on_connect_check_health(self, check_health: bool = True) -> None:
        self.on_connect()


def test_a_connection_that_fails_once_open_is_closed(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Even while the logged failure (and its traceback) is kept by a log handler.
    pool = redis.ConnectionPool(port=redis_server.port, connection_class=_FailingHandshake)
    looker = RedisTokenStore(redis.Redis(connection_pool=pool), "k")
    connections = _connections(redis_server)
    with caplog.at_level(logging.WARNING):
        looker.peek(0)
        wait_for(lambda: "for new tokens failed (ValueError: handshake went wrong" in caplog.text)
    wait_for(lambda: not _connecting())
    assert _connections(redis_server) == connections + 1  # it was open
    clients = _stats_client(redis_server).client_list
    wait_for(lambda: len(clients()) == 1)  # and is closed: only the stats client's is left


def test_a_program_exits_while_its_watch_is_still_connecting(
    relay: Callable[[float | None], _Relay],
) -> None:
    # A Redis that accepts and never answers (the client's AUTH waits for its minute):
    # the connecting thread must not keep the program alive.
    silent = relay(None)
    code = (
        "import threading, redis\n"
        "from zeep_sfrefresh import RedisTokenStore\n"
        f"client = redis.Redis(port={silent.port}, password='pw', socket_timeout=60)\n"
        "store = RedisTokenStore(client, 'k')\n"
        "store.peek(0)\n"
        "print(any(t.name == 'zeep-sfrefresh-watch-connect' for t in threading.enumerate()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=20, check=True
    )
    assert done.stdout == "True\n"


def test_redis_watch_tries_a_failing_redis_again_after_growing_pauses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hangup = _Hangup()
    try:
        client = redis.Redis(
            port=hangup.port, socket_timeout=2, retry=Retry(NoBackoff(), 0), protocol=2
        )
        store = RedisTokenStore(client, "hangup")
        with caplog.at_level(logging.WARNING):
            store.peek(1)  # tries come with looks, once each pause is over
            wait_for(lambda: store.peek(1) is None and len(hangup.arrivals) >= 3, timeout=5)
        first, second, third = hangup.arrivals[:3]
        assert 0.45 <= second - first < 0.95  # 0.5 s after the first failure
        assert 0.95 <= third - second < 1.45  # then 1 s
        assert caplog.text.count("watching 'hangup:changes' for new tokens failed") == 1
    finally:
        hangup.close()


def test_looks_at_once_start_one_watch(redis_server: RedisServer) -> None:
    store = RedisTokenStore(redis_server.client(), "k")
    connections = _connections(redis_server)
    with store._watch_lock:  # both looks find no watch, then queue for the lock
        looks = [InBackground(lambda: store.peek(0)) for _ in range(2)]
        time.sleep(0.1)
    for look in looks:
        look.join()
    wait_for(lambda: _watches(redis_server) == 1)
    assert _connections(redis_server) == connections + 1


def test_a_program_that_never_drops_its_store_still_exits(redis_server: RedisServer) -> None:
    # A program ends with its store, and the watch's XREAD under way, still in a global.
    code = (
        "import redis\n"
        "from zeep_sfrefresh import RedisTokenStore\n"
        f"store = RedisTokenStore(redis.Redis.from_url({redis_server.url!r}), 'k')\n"
        "store.peek(0)\n"
        "print('started')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout == "started\n"
