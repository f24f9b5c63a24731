"""RedisTokenStore against a real redis-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any, Literal

import pytest
import redis
from conftest import held_in_another_thread, wait_for
from forking import Child, Report

from zeep_sfrefresh import (
    RedisTokenStore,
    RefreshIntent,
    StoredToken,
    TokenStoreConflictError,
    TokenStoreError,
    _redis_store,
)
from zeep_sfrefresh._redis_store import _RENEWER
from zeep_sfrefresh._stores import IntentState
from zeep_sfrefresh._tokens import fingerprint
from zeep_sfrefresh.testing.redis_server import RedisServer

TOKEN = {
    "access_token": "00DSECRETACCESS",
    "refresh_token": "5AepSECRETREFRESH",
    "instance_url": "https://a.my.salesforce.com",
}
NEWER = {**TOKEN, "access_token": "00DSECRETACCESS2", "refresh_token": "5AepSECRETREFRESH2"}


@pytest.mark.parametrize("decode_responses", [False, True])
def test_round_trip_and_compare_and_set(redis_server: RedisServer, decode_responses: bool) -> None:
    store = RedisTokenStore(redis_server.client(decode_responses=decode_responses), "sf:token:test")
    assert store.load() is None
    with store.lock():
        assert store.save(TOKEN, replaces=None) == 1
        with pytest.raises(TokenStoreConflictError, match="holds version 1, not None"):
            store.save(TOKEN, replaces=None)
        assert store.save({**TOKEN, "access_token": "NEW"}, replaces=1) == 2
        with pytest.raises(TokenStoreConflictError):
            store.save({**TOKEN, "access_token": "STALE"}, replaces=1)
    loaded = store.load()
    assert loaded is not None
    assert (loaded.version, loaded.token["access_token"]) == (2, "NEW")
    raw = redis_server.client().hgetall("sf:token:test")
    assert set(raw) == {b"version", b"token"}


def test_cluster_style_key_keeps_lock_in_the_same_slot(redis_server: RedisServer) -> None:
    store = RedisTokenStore(redis_server.client(), "{sf:token:prod}")
    assert store.lock_key == "{sf:token:prod}:lock"
    with store.lock():
        assert redis_server.client().exists("{sf:token:prod}:lock") == 1
    assert redis_server.client().exists("{sf:token:prod}:lock") == 0


def test_lock_wait_is_bounded(redis_server: RedisServer) -> None:
    holder = RedisTokenStore(redis_server.client(), "k")
    waiter = RedisTokenStore(redis_server.client(), "k", lock_wait=0.3)
    with (
        held_in_another_thread(holder.lock()),
        pytest.raises(TokenStoreError, match=r"within 0\.3 s"),
        waiter.lock(),
    ):
        pass


def test_an_expired_lock_is_released_and_logged(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisTokenStore(redis_server.client(), "k", lock_timeout=0.2)
    with store.lock():
        redis_server.client().delete("k:lock")  # as if it had expired mid-refresh
    assert "expired before its refresh ended" in caplog.text
    # A dead holder's lock frees itself after lock_timeout.
    dead = redis_server.client().lock("k:lock", timeout=0.3)
    assert dead.acquire(blocking=False)
    with RedisTokenStore(redis_server.client(), "k", lock_wait=5).lock():
        pass


def test_garbage_under_the_key_is_a_clear_error(redis_server: RedisServer) -> None:
    client = redis_server.client()
    store = RedisTokenStore(client, "k")
    client.hset("k", mapping={"version": "x", "token": "{}"})
    with pytest.raises(TokenStoreError, match="not hold a token"):
        store.load()
    client.hset("k", mapping={"version": "3", "token": '{"no": "access token"}'})
    with pytest.raises(TokenStoreError, match="valid token"):
        store.load()


def test_redis_down_is_a_clear_error(redis_server: RedisServer) -> None:
    store = RedisTokenStore(redis_server.client(), "k", lock_wait=1)
    redis_server.stop()
    for action in (store.load, lambda: store.save(TOKEN, replaces=None)):
        with pytest.raises(TokenStoreError, match="Redis could not"):
            action()
    with pytest.raises(TokenStoreError, match="Redis could not lock"), store.lock():
        pass


def test_repr_and_errors_hold_no_token(redis_server: RedisServer) -> None:
    client = redis_server.client()
    store = RedisTokenStore(client, "k")
    client.hset("k", mapping={"version": "1", "token": '{"access_token": "00DSECRETACCESS"'})
    with pytest.raises(TokenStoreError) as info:
        store.load()
    assert "SECRET" not in str(info.value) + repr(info.value) + repr(store)


# --- waiting for another worker's token without the lock ------------------------------------


def _entry(version: int, token: dict[str, str]) -> tuple[bytes, dict[bytes, bytes]]:
    """The change stream's entry for ``version``: it carries the token as written."""
    fields = {b"version": str(version).encode(), b"token": json.dumps(token).encode()}
    return f"{version}-0".encode(), fields


def _seeded(server: RedisServer, key: str = "k", **options: Any) -> RedisTokenStore:
    store = RedisTokenStore(server.client(), key, **options)
    with store.lock():
        store.save(TOKEN, replaces=None)
    return store


def test_a_token_write_is_announced_on_the_change_stream(redis_server: RedisServer) -> None:
    client = redis_server.client()
    store = _seeded(redis_server, "{sf:token:prod}")
    assert store.changes_key == "{sf:token:prod}:changes"  # same slot as the hash
    with store.lock():
        store.write_intent(None, version=1)  # an intent is not a new token: no entry
        store.save({**TOKEN, "access_token": "NEW"}, replaces=1)
    new = {**TOKEN, "access_token": "NEW"}
    # One entry: the stream never keeps a token the hash no longer holds.
    assert client.xrange(store.changes_key) == [_entry(2, new)]
    for version in range(3, 20):
        with store.lock():
            store.save(TOKEN, replaces=version - 1)
    assert client.xrange(store.changes_key) == [_entry(19, TOKEN)]


def test_a_stream_ahead_of_a_reseeded_hash_starts_over(redis_server: RedisServer) -> None:
    client = redis_server.client()
    store = _seeded(redis_server)
    with store.lock():
        store.save(TOKEN, replaces=1)
    client.delete("k")  # re-seeded by hand: versions start again at 1
    with store.lock():
        assert store.save(TOKEN, replaces=None) == 1
    assert client.xrange(store.changes_key) == [_entry(1, TOKEN)]


@pytest.mark.parametrize("missing", ["both", "compare_and_set", "announce"])
def test_a_server_without_the_scripts_still_takes_and_announces_the_write(
    redis_server: RedisServer, missing: str
) -> None:
    """The write and its announcement go in one round trip by script hash; a server that
    has not seen a script (a restart, SCRIPT FLUSH) gets it loaded and runs it, once."""
    client = redis_server.client()
    store = _seeded(redis_server)
    client.script_flush()
    if missing == "announce":
        client.script_load(_redis_store._COMPARE_AND_SET)
    elif missing == "compare_and_set":
        client.script_load(_redis_store._ANNOUNCE)
    with store.lock():
        assert store.save({**TOKEN, "access_token": "NEW"}, replaces=1) == 2
        assert store.save(TOKEN, replaces=2) == 3  # the scripts are there now
    assert client.xrange(store.changes_key) == [_entry(3, TOKEN)]
    loaded = store.load()
    assert loaded is not None
    assert loaded.version == 3


def test_a_write_that_lost_is_not_announced(redis_server: RedisServer) -> None:
    client = redis_server.client()
    store = _seeded(redis_server)
    with store.lock():
        store.save(TOKEN, replaces=1)
        before = client.xrange(store.changes_key)
        for replaces in (None, 1):  # version 1 or 2 again: another writer was first
            with pytest.raises(TokenStoreConflictError):
                store.save({**TOKEN, "access_token": "LOST"}, replaces=replaces)
    assert client.xrange(store.changes_key) == before == [_entry(2, TOKEN)]


class _CountingConnection(redis.Connection):
    """A real connection that counts what it sends: one send per round trip."""

    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sends += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(("cluster", "round_trips"), [(False, 1), (True, 2)])
def test_a_token_write_and_its_announcement_take_one_round_trip(
    redis_server: RedisServer, cluster: bool, round_trips: int
) -> None:
    """Pipelined; a cluster client, whose pipelines refuse scripts, makes the two writes
    one after the other, with the same result (on a real cluster: test_redis_cluster.py)."""
    pool = redis.ConnectionPool(
        port=redis_server.port, socket_timeout=2, connection_class=_CountingConnection
    )
    client = redis.Redis(connection_pool=pool)
    store = RedisTokenStore(client, "k")
    store._pipelined = not cluster  # what a redis.RedisCluster client gets
    with store.lock():
        store.save(TOKEN, replaces=None)  # the server learns the scripts
        _CountingConnection.sends = 0
        assert store.save({**TOKEN, "access_token": "NEW"}, replaces=1) == 2
        assert _CountingConnection.sends == round_trips
    assert client.xrange(store.changes_key) == [_entry(2, {**TOKEN, "access_token": "NEW"})]
    loaded = store.load()
    assert loaded is not None
    assert (loaded.version, loaded.token["access_token"]) == (2, "NEW")


def test_a_write_the_server_refuses_is_a_clear_error(redis_server: RedisServer) -> None:
    _seeded(redis_server, "other")  # the server has the scripts: the write goes pipelined
    redis_server.client().set("k", "not a hash")
    store = RedisTokenStore(redis_server.client(), "k")
    with store.lock(), pytest.raises(TokenStoreError, match="Redis could not write 'k'"):
        store.save(TOKEN, replaces=None)


def test_try_lock_takes_a_free_lock_only_on_the_expected_version(redis_server: RedisServer) -> None:
    store = _seeded(redis_server, lock_timeout=3)
    other = RedisTokenStore(redis_server.client(), "k")
    with store.lock():
        store.write_intent(_intent(), version=1)
    with store.try_lock(1) as held:
        # What the script read under the lock it took: the token and its intent.
        assert held == store.load() == StoredToken(TOKEN, 1, _intent())
        assert redis_server.client().pttl("k:lock") > 0  # with a lease, as lock() takes it
        store.write_intent(None, version=1)  # the held lock is this thread's, as with lock()
        with other.try_lock(1) as busy:
            assert not busy  # at once: it never waits
    assert redis_server.client().exists("k:lock") == 0  # released
    with store.try_lock(2) as held:
        # Another version than this worker would refresh: what the hash holds, not locked.
        assert held == StoredToken(TOKEN, 1)
        assert redis_server.client().exists("k:lock") == 0
    with store.lock():
        store.save(NEWER, replaces=1)
        with other.try_lock(1) as moved:
            assert moved == StoredToken(NEWER, 2)  # the version is checked before the lock
    with store.try_lock(1) as held:
        assert held == StoredToken(NEWER, 2)  # the token moved past the one it would refresh
        assert redis_server.client().exists("k:lock") == 0
    with store.try_lock(2) as held:
        assert held == StoredToken(NEWER, 2)
        assert store.load() == StoredToken(NEWER, 2)  # taken without an intent: none recorded
    with RedisTokenStore(redis_server.client(), "empty").try_lock(1) as held:
        assert held is False


def test_a_lock_taken_by_try_lock_keeps_its_lease(redis_server: RedisServer) -> None:
    store = _seeded(redis_server, lock_timeout=0.6)
    with store.try_lock(1) as held:
        assert held
        time.sleep(1.0)  # longer than the lease: the watchdog renews it
        store.write_intent(None, version=1)
    assert redis_server.client().exists("k:lock") == 0


@pytest.mark.parametrize("decode_responses", [False, True])
def test_wait_for_change_is_woken_by_the_write(
    redis_server: RedisServer, decode_responses: bool
) -> None:
    store = RedisTokenStore(redis_server.client(decode_responses=decode_responses), "k")
    with store.lock():
        store.save(TOKEN, replaces=None)
    writer = RedisTokenStore(redis_server.client(), "k")

    def write_later() -> None:
        time.sleep(0.2)
        with writer.lock():
            writer.save({**TOKEN, "access_token": "NEW"}, replaces=1)

    thread = threading.Thread(target=write_later)
    thread.start()
    started = time.monotonic()
    newer = store.wait_for_change(1, timeout=20)  # read in the round trip that woke it
    waited = time.monotonic() - started
    thread.join()
    assert 0.1 < waited < 10
    assert newer is not None
    assert (newer.version, newer.token["access_token"]) == (2, "NEW")
    assert newer == store.load()


def test_wait_for_change_is_bounded_and_sees_a_change_already_made(
    redis_server: RedisServer,
) -> None:
    store = _seeded(redis_server)
    started = time.monotonic()
    assert store.wait_for_change(1, timeout=0.3) is None  # nothing changes
    assert 0.3 <= time.monotonic() - started < 5
    started = time.monotonic()
    newer = store.wait_for_change(0, timeout=20)  # version 1 was written before it waited
    assert time.monotonic() - started < 5
    assert newer is not None
    assert newer.version == 1


@pytest.mark.parametrize(("protocol", "decode_responses"), [(2, False), (3, False), (3, True)])
def test_a_waiting_worker_gets_the_token_in_the_reply_that_wakes_it(
    redis_server: RedisServer, protocol: int, decode_responses: bool
) -> None:
    """One round trip, the XREAD, in either reply shape: no read of the hash after it."""
    _seeded(redis_server).save(NEWER, replaces=1)
    pool = redis.ConnectionPool(
        port=redis_server.port,
        socket_timeout=2,
        protocol=protocol,
        decode_responses=decode_responses,
        connection_class=_CountingConnection,
    )
    store = RedisTokenStore(redis.Redis(connection_pool=pool), "k")
    stored = store.load()  # the connection opened (its handshake sends too)
    _CountingConnection.sends = 0
    newer = store.wait_for_change(1, timeout=20)
    assert _CountingConnection.sends == 1
    assert newer == stored
    assert newer is not None
    assert (newer.version, newer.token, newer.intent) == (2, NEWER, None)


def test_an_entry_without_the_token_costs_a_read(redis_server: RedisServer) -> None:
    """An entry written by an older release carries the version alone: the waiting worker
    reads the hash, and goes by the last entry, not the first one after its version."""
    client = redis_server.client()
    store = _seeded(redis_server)
    with store.lock():
        store.save(NEWER, replaces=1)
        store.save(TOKEN, replaces=2)
    client.delete(store.changes_key)
    client.xadd(store.changes_key, _entry(2, NEWER)[1], id="2-0")  # type: ignore[arg-type]
    client.xadd(store.changes_key, {"version": "3"}, id="3-0")  # an older writer's
    pool = redis.ConnectionPool(
        port=redis_server.port, socket_timeout=2, connection_class=_CountingConnection
    )
    waiter = RedisTokenStore(redis.Redis(connection_pool=pool), "k")
    waiter.load()  # the connection opened (its handshake sends too)
    _CountingConnection.sends = 0
    newer = waiter.wait_for_change(1, timeout=20)
    assert _CountingConnection.sends == 2  # the XREAD, then the read of the hash
    assert newer is not None
    assert (newer.version, newer.token) == (3, TOKEN)


def test_redis_down_while_waiting_is_a_clear_error(redis_server: RedisServer) -> None:
    store = _seeded(redis_server, lock_wait=1)
    redis_server.stop()
    with pytest.raises(TokenStoreError, match="Redis could not watch"):
        store.wait_for_change(1, timeout=1)
    with pytest.raises(TokenStoreError, match="Redis could not lock"), store.try_lock(1):
        pass


@pytest.mark.parametrize("options", [{"poll_interval": 0}, {"lock_wait": -1}, {"lock_timeout": 0}])
def test_waits_must_be_positive(redis_server: RedisServer, options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="positive"):
        RedisTokenStore(redis_server.client(), "k", **options)


@pytest.mark.parametrize("cluster", [False, True])
def test_a_user_without_the_change_stream_still_writes_and_waits(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture, cluster: bool
) -> None:
    """The change stream is a hint: an ACL that grants the hash and the lock but not the
    stream must not fail a token write, and waiting degrades to looking again."""
    redis_server.client().acl_setuser(
        "worker", enabled=True, passwords=["+pw"], keys=["k", "k:lock"], commands=["+@all"]
    )
    url = f"redis://worker:pw@127.0.0.1:{redis_server.port}/0"
    store = RedisTokenStore(redis.Redis.from_url(url, socket_timeout=2), "k")
    store._pipelined = not cluster  # what a redis.RedisCluster client gets
    with store.lock():
        assert store.save(TOKEN, replaces=None) == 1
        assert store.save(TOKEN, replaces=1) == 2  # its announcement was refused, not the write
    assert redis_server.client().exists(store.changes_key) == 0
    assert "could not announce version 1" in caplog.text
    assert "could not announce version 2" in caplog.text
    for _ in range(2):
        started = time.monotonic()
        store.wait_for_change(2, timeout=0.2)
        assert 0.2 <= time.monotonic() - started < 5
    assert caplog.text.count("refused to read") == 1


# --- intents: the last check before a token request ------------------------------------------


def _intent(state: IntentState = "sending") -> RefreshIntent:
    return RefreshIntent(fingerprint(TOKEN["refresh_token"]), state, 1, "host/1/1", 1.7e9)


def test_an_intent_is_written_under_the_lock_and_cleared(redis_server: RedisServer) -> None:
    store = _seeded(redis_server)
    with store.lock():
        store.write_intent(_intent(), version=1)
        assert store.load() == StoredToken(TOKEN, 1, _intent())
        store.write_intent(None, version=1)
    assert store.load() == StoredToken(TOKEN, 1)
    assert set(redis_server.client().hgetall("k")) == {b"version", b"token"}


def test_an_intent_without_the_lock_is_refused_and_not_written(redis_server: RedisServer) -> None:
    store = _seeded(redis_server)
    with pytest.raises(TokenStoreError, match="needs the Redis lock 'k:lock' held"):
        store.write_intent(_intent(), version=1)
    with store.lock():
        pass
    with pytest.raises(TokenStoreError, match="needs the Redis lock"):  # released: not held
        store.write_intent(_intent(), version=1)
    assert store.load() == StoredToken(TOKEN, 1)


def test_an_intent_after_the_lease_passed_to_another_worker_is_refused(
    redis_server: RedisServer,
) -> None:
    # The lease ran out mid-refresh and another worker took the lock: the token request
    # must not go out under a lock this worker no longer holds.
    store = _seeded(redis_server)
    with store.lock():
        redis_server.client().set("k:lock", b"another-worker")
        with pytest.raises(TokenStoreError, match="expired before the token request"):
            store.write_intent(_intent(), version=1)
        redis_server.client().delete("k:lock")
    assert store.load() == StoredToken(TOKEN, 1)


def test_an_intent_for_a_version_that_moved_on_is_a_conflict(redis_server: RedisServer) -> None:
    store = _seeded(redis_server)
    with store.lock():
        store.save(TOKEN, replaces=1)
        with pytest.raises(TokenStoreConflictError, match="'k' holds version 2, not 1"):
            store.write_intent(_intent(), version=1)
    assert store.load() == StoredToken(TOKEN, 2)


def test_redis_down_while_writing_an_intent_is_a_clear_error(redis_server: RedisServer) -> None:
    store = _seeded(redis_server)
    with store.lock():
        redis_server.stop()
        with pytest.raises(TokenStoreError, match=r"Redis could not write 'k' \(ConnectionError"):
            store.write_intent(_intent(), version=1)
        with pytest.raises(TokenStoreError, match=r"Redis could not write 'k' \(ConnectionError"):
            store.save(TOKEN, replaces=1)
        with pytest.raises(TokenStoreError, match=r"Redis could not read 'k' \(ConnectionError"):
            store.load()


# --- what a half-written or hand-edited hash gives --------------------------------------------


def test_a_version_without_a_token_or_a_version_below_one_is_refused(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()
    store = RedisTokenStore(client, "k")
    client.hset("k", "version", "1")  # no token beside it: not an empty store
    with pytest.raises(TokenStoreError, match="not hold a token written by zeep-sfrefresh"):
        store.load()
    client.hset("k", mapping={"version": "0", "token": '{"access_token": "x"}'})
    with pytest.raises(TokenStoreError, match="valid token"):
        store.load()
    client.hset("k", "version", "1")
    loaded = store.load()
    assert loaded is not None
    assert loaded.version == 1


# --- construction, defaults, repr -------------------------------------------------------------


def test_defaults_and_repr(redis_server: RedisServer) -> None:
    store = RedisTokenStore(redis_server.client(), "sf:token:prod")
    # as the workers guide says
    assert (store.lock_timeout, store.lock_wait, store.poll_interval) == (60.0, 30.0, 0.002)
    assert repr(store) == "RedisTokenStore(key='sf:token:prod')"
    with pytest.raises(ValueError, match="non-empty Redis key name"):
        RedisTokenStore(redis_server.client(), "")
    with pytest.raises(TypeError, match=r"^key must be a str, not bytes$"):
        RedisTokenStore(redis_server.client(), b"sf:token")  # type: ignore[arg-type]


@pytest.mark.parametrize("cluster", [False, True])
def test_an_asyncio_client_is_refused_when_the_store_is_made(
    redis_server: RedisServer, cluster: bool
) -> None:
    # Its commands return coroutines: without the check the first refresh would fail
    # ("cannot unpack non-iterable coroutine object"), long after the setup.
    import redis.asyncio

    kind = redis.asyncio.RedisCluster if cluster else redis.asyncio.Redis
    client = kind.from_url(redis_server.url)  # a cluster client connects on first use
    with pytest.raises(TypeError, match=r"needs a synchronous client \(redis.Redis or"):
        RedisTokenStore(client, "{k}")  # type: ignore[arg-type]  # mypy says so too


@pytest.mark.parametrize(
    ("client", "message"),
    [
        ("redis://127.0.0.1:6379/0", r"str \(for a URL: redis\.Redis\.from_url\(url, "),
        (None, "NoneType$"),
        (object(), "object$"),
    ],
)
def test_what_is_not_a_redis_client_is_refused_when_the_store_is_made(
    client: object, message: str
) -> None:
    expected = r"^client must be a redis\.Redis or redis\.RedisCluster client, not " + message
    with pytest.raises(TypeError, match=expected):
        RedisTokenStore(client, "k")  # type: ignore[arg-type]


@pytest.mark.parametrize("lock_wait", [0.0, -0.5])
def test_a_lock_wait_of_zero_or_less_is_refused(
    redis_server: RedisServer, lock_wait: float
) -> None:
    with pytest.raises(ValueError, match="positive"):
        RedisTokenStore(redis_server.client(), "k", lock_wait=lock_wait)


def test_without_redis_py_the_error_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "try:\n"
        "    from zeep_sfrefresh import RedisTokenStore\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == (
        "RedisTokenStore needs redis-py: pip install 'zeep-sfrefresh[redis]'"
    )


# --- the lease keeper -------------------------------------------------------------------------


def _lease_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "zeep-sfrefresh-lease"]


def test_the_lease_is_renewed_by_one_daemon_thread_while_the_lock_is_held(
    redis_server: RedisServer,
) -> None:
    store = _seeded(redis_server, lock_timeout=0.3)
    with store.try_lock(1) as held:
        assert held
        # A daemon thread: a worker exiting mid-refresh is not held up by it.
        [renewer] = _lease_threads()
        assert renewer.daemon
        lease = redis_server.client().pttl("k:lock")
        assert 0 < lease <= 300  # the lease is lock_timeout, in ms
        time.sleep(0.5)  # longer than the lease: renewed meanwhile
        assert redis_server.client().get("k:lock") is not None
    assert redis_server.client().exists("k:lock") == 0  # released when the block ends
    # The same thread keeps the next hold: none is started per hold (a holder would wait
    # for it to start).
    with store.lock():
        assert _lease_threads() == [renewer]
        time.sleep(0.5)
        assert redis_server.client().get("k:lock") is not None
    assert _lease_threads() == [renewer]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_a_forked_child_renews_its_own_hold(redis_server: RedisServer) -> None:
    """The parent's renewer thread does not exist in a forked child: the child's first
    hold starts one of its own, and its lease outlives lock_timeout."""
    store = _seeded(redis_server, lock_timeout=0.3)
    with store.lock():  # the parent's renewer is running
        pass

    def child() -> Report:
        with store.lock():
            time.sleep(0.5)
            kept = redis_server.client().get("k:lock") is not None
        return {"kept": kept, "renewers": len(_lease_threads())}

    forked = Child(child)
    try:
        report, code = forked.result(timeout=10)
    finally:
        forked.kill()
    assert (report, code) == ({"kept": True, "renewers": 1}, 0)


class _CountedLock(redis.lock.Lock):
    """A real redis-py lock that counts its renewals."""

    renewals = 0

    def reacquire(self) -> Literal[True]:
        self.renewals += 1
        return super().reacquire()


def test_no_renewal_starts_once_the_hold_has_ended(redis_server: RedisServer) -> None:
    lock = _CountedLock(redis_server.client(), "k:lock", timeout=5, thread_local=False)
    assert lock.acquire(blocking=False)
    with _RENEWER.keep(lock, 0.001):
        wait_for(lambda: lock.renewals >= 3)  # renewing every millisecond
    ended = lock.renewals
    time.sleep(0.05)
    assert lock.renewals == ended
    lock.release()


class _FailingOnceLock(_CountedLock):
    """A lock whose first renewal fails with an error redis-py does not usually raise."""

    def reacquire(self) -> Literal[True]:
        if self.renewals == 0:
            self.renewals += 1
            raise ValueError("unexpected reply")
        return super().reacquire()


def test_a_renewal_failing_unexpectedly_neither_stops_that_lease_nor_the_others(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis_server.client()
    lock = _FailingOnceLock(client, "k:lock", timeout=5, thread_local=False)
    assert lock.acquire(blocking=False)
    with _RENEWER.keep(lock, 0.001):
        wait_for(lambda: lock.renewals >= 3)  # renewed again after the failure
    lock.release()
    assert "could not renew the Redis lock 'k:lock': unexpected reply" in caplog.text
    other = _CountedLock(client, "k2:lock", timeout=5, thread_local=False)
    assert other.acquire(blocking=False)
    with _RENEWER.keep(other, 0.001):
        wait_for(lambda: other.renewals >= 2)  # the renewing thread lives on
    other.release()


def test_a_lease_is_renewed_every_interval_from_one_interval_after_it_was_taken(
    redis_server: RedisServer,
) -> None:
    lock = _CountedLock(redis_server.client(), "k:lock", timeout=5, thread_local=False)
    assert lock.acquire(blocking=False)
    with _RENEWER.keep(lock, 1.0):
        time.sleep(0.1)
    assert lock.renewals == 0  # not renewed at once: it was just taken
    with _RENEWER.keep(lock, 0.05):
        time.sleep(0.5)
    assert 2 <= lock.renewals <= 20  # every 50 ms, not in a loop
    lock.release()


def test_a_hold_that_ended_is_neither_renewed_nor_kept(redis_server: RedisServer) -> None:
    lock = _CountedLock(redis_server.client(), "k:lock", timeout=5, thread_local=False)
    assert lock.acquire(blocking=False)
    with _RENEWER.keep(lock, 60) as lease:
        assert lease in _RENEWER._leases
    assert lease not in _RENEWER._leases
    _RENEWER._renew(lease)  # what the thread does with a lease found due as the hold ended
    assert lock.renewals == 0
    lock.release()


def _cpu_seconds(thread: threading.Thread) -> float:
    """CPU time ``thread`` has used so far, from Linux's per-thread scheduler statistics."""
    with open(f"/proc/self/task/{thread.native_id}/schedstat") as stats:
        return int(stats.read().split()[0]) / 1e9


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux's /proc")
def test_an_idle_renewer_sleeps(redis_server: RedisServer) -> None:
    store = _seeded(redis_server)
    with store.lock():  # the renewer thread is running from here on
        [renewer] = _lease_threads()
    before = _cpu_seconds(renewer)
    time.sleep(0.5)
    assert _cpu_seconds(renewer) - before < 0.05  # a thread spinning would use most of 0.5 s


def test_a_lease_lost_or_unrenewable_is_logged(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = _seeded(redis_server, lock_timeout=0.3)
    with store.lock():
        redis_server.client().set("k:lock", b"another-worker")
        # The next renewal finds another owner, and the lease is not kept (it is another
        # worker's now); no renewal is tried after it.
        wait_for(lambda: not _RENEWER._leases)
        time.sleep(0.25)
        redis_server.client().delete("k:lock")  # whose refresh ends
    assert caplog.text.count("the Redis lock 'k:lock' expired under its holder") == 1
    caplog.clear()
    with store.lock():
        redis_server.stop()
        wait_for(lambda: "could not renew the Redis lock 'k:lock': " in caplog.text)
    assert "could not release the Redis lock 'k:lock': " in caplog.text


# --- waiting: bounded, and without a busy loop ------------------------------------------------


def _xreads(server: RedisServer) -> int:
    stats = server.client().info("commandstats")
    return int(stats.get("cmdstat_xread", {}).get("calls", 0))


def test_a_wait_blocks_in_redis_100_ms_at_a_time(redis_server: RedisServer) -> None:
    store = _seeded(redis_server)
    # Redis ends blocked reads on its own clock, hz times a second (10 by default): at 100
    # the length of each block shows.
    redis_server.client().config_set("hz", 100)
    redis_server.client().config_resetstat()
    started = time.monotonic()
    store.wait_for_change(1, timeout=0.35)
    elapsed = time.monotonic() - started
    # Each XREAD blocks up to 100 ms (within any socket_timeout), not 1 ms in a busy loop,
    # not the whole wait at once; and the wait ends at its timeout, not a second later.
    assert 3 <= _xreads(redis_server) <= 6
    assert 0.35 <= elapsed < 0.9


def test_a_wait_shorter_than_a_millisecond_still_returns(redis_server: RedisServer) -> None:
    # XREAD BLOCK 0 would block for ever: the shortest block is 1 ms.
    store = _seeded(redis_server)
    for _ in range(20):
        store.wait_for_change(1, timeout=0.0004)


def test_a_refused_stream_read_at_the_deadline_does_not_oversleep(
    redis_server: RedisServer,
) -> None:
    redis_server.client().acl_setuser(
        "worker", enabled=True, passwords=["+pw"], keys=["k", "k:lock"], commands=["+@all"]
    )
    url = f"redis://worker:pw@127.0.0.1:{redis_server.port}/0"
    store = RedisTokenStore(redis.Redis.from_url(url, socket_timeout=2), "k")
    started = time.monotonic()
    store.wait_for_change(1, timeout=0.00001)  # refused after its deadline: no sleep then
    assert time.monotonic() - started < 0.9
    started = time.monotonic()
    store.wait_for_change(1, timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 0.9
