"""RedisTokenStore against a real redis-server."""

from __future__ import annotations

import threading

import pytest

from zeep_sfrefresh import RedisTokenStore, TokenStoreConflictError, TokenStoreError
from zeep_sfrefresh.testing.redis_server import RedisServer

TOKEN = {
    "access_token": "00DSECRETACCESS",
    "refresh_token": "5AepSECRETREFRESH",
    "instance_url": "https://a.my.salesforce.com",
}


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
    entered = threading.Event()
    leave = threading.Event()

    def hold() -> None:
        with holder.lock():
            entered.set()
            leave.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert entered.wait(5)
        with pytest.raises(TokenStoreError, match=r"within 0\.3 s"), waiter.lock():
            pass
    finally:
        leave.set()
        thread.join()


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
