"""RedisTokenStore with a ``redis.RedisCluster`` client, against a real Redis cluster of three
nodes on loopback: the scripts, the lock, the change stream and a fleet's one refresh per
expiry, the keys' slot check, and failures that stay TokenStoreError. (Two transports sharing
one refresh through a cluster: test_shared_refresh.py.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from conftest import need_redis_server
from redis.crc import key_slot

from zeep_sfrefresh import (
    RedisTokenStore,
    RefreshIntent,
    StoredToken,
    TokenStoreConflictError,
    TokenStoreError,
)
from zeep_sfrefresh._tokens import fingerprint
from zeep_sfrefresh.testing import StandInOrg
from zeep_sfrefresh.testing.fleet import StoreSpec, run_fleet
from zeep_sfrefresh.testing.redis_server import RedisClusterServer

KEY = "{sf:token:prod}"
TOKEN = {
    "access_token": "00DSECRETACCESS",
    "refresh_token": "5AepSECRETREFRESH",
    "instance_url": "https://a.my.salesforce.com",
}
NEWER = {**TOKEN, "access_token": "00DSECRETACCESS2", "refresh_token": "5AepSECRETREFRESH2"}
INTENT = RefreshIntent(fingerprint(TOKEN["refresh_token"]), "sending", 1, "host/1/1", 1.7e9)


def _seeded(cluster: RedisClusterServer) -> RedisTokenStore:
    store = RedisTokenStore(cluster.client(), KEY)
    with store.lock():
        store.save(TOKEN, replaces=None)
    return store


def test_the_keys_live_together_on_the_node_serving_the_slot(
    redis_cluster: RedisClusterServer,
) -> None:
    store = _seeded(redis_cluster)
    with store.lock():
        store.save(NEWER, replaces=1)
        # The lock is held: all three keys exist, on one node, the one serving the slot.
        keys = (store.key, store.lock_key, store.changes_key)
        slot = key_slot(KEY.encode())
        for node in redis_cluster.nodes:
            counted = node.client().cluster("COUNTKEYSINSLOT", slot)
            assert counted == (3 if node is redis_cluster.node_of(KEY) else 0)
        assert {key_slot(name.encode()) for name in keys} == {slot}
    assert store.load() == StoredToken(NEWER, 2)
    with store.lock(), pytest.raises(TokenStoreConflictError, match="holds version 2, not 1"):
        store.save(TOKEN, replaces=1)
    assert store.load() == StoredToken(NEWER, 2)


def test_node_of_names_the_node_the_cluster_sends_a_key_to(
    redis_cluster: RedisClusterServer,
) -> None:
    client = redis_cluster.client()
    edges = {0, 5460, 5461, 10921, 10922, 16383}  # each node's first and last slot
    keys: dict[int, str] = {}
    n = 0
    while len(keys) < len(edges):
        slot = key_slot(f"k{n}".encode())
        if slot in edges:
            keys.setdefault(slot, f"k{n}")
        n += 1
    for key in keys.values():
        served_by = client.get_node_from_key(key)  # type: ignore[no-untyped-call]
        assert redis_cluster.node_of(key).port == served_by.port


def test_try_lock_and_intents_on_a_cluster(redis_cluster: RedisClusterServer) -> None:
    store = _seeded(redis_cluster)
    other = RedisTokenStore(redis_cluster.client(), KEY)
    with store.try_lock(1, intent=INTENT) as held:
        assert held == StoredToken(TOKEN, 1)  # as read before the intent was recorded
        assert store.load() == StoredToken(TOKEN, 1, INTENT)
        with other.try_lock(1) as busy:
            assert busy is False
        store.write_intent(None, version=1)
        assert store.load() == StoredToken(TOKEN, 1)
        store.save(NEWER, replaces=1)
    # At a version the store has left, the lock is not taken and the token is handed over.
    with other.try_lock(1) as moved:
        assert moved == StoredToken(NEWER, 2)
    with other.try_lock(2) as taken:
        assert taken == StoredToken(NEWER, 2)


def test_a_waiting_worker_is_woken_by_the_write_on_a_cluster(
    redis_cluster: RedisClusterServer,
) -> None:
    store = _seeded(redis_cluster)
    waiter = RedisTokenStore(redis_cluster.client(), KEY)
    assert waiter.wait_for_change(1, 0.2) is None  # nothing newer: bounded
    woken: list[StoredToken | None] = []
    thread = threading.Thread(target=lambda: woken.append(waiter.wait_for_change(1, 10)))
    thread.start()
    time.sleep(0.3)  # the waiter is blocked in XREAD by now
    with store.lock():
        store.save(NEWER, replaces=1)
    thread.join(timeout=10)
    assert woken == [StoredToken(NEWER, 2)]
    assert waiter.wait_for_change(1, 5) == StoredToken(NEWER, 2)  # written before: at once


def _two_slots() -> str:
    """A key whose hash, lock and stream a cluster puts in two slots, not three."""
    for n in range(1_000_000):
        key = f"sf:token:{n}"
        if len({key_slot(f"{key}{suffix}".encode()) for suffix in ("", ":lock", ":changes")}) == 2:
            return key
    raise AssertionError("no such key")


@pytest.mark.parametrize("key", ["sf:token:prod", "{}sf:token", _two_slots()])
def test_a_key_a_cluster_splits_over_slots_is_refused_when_the_store_is_made(
    redis_cluster: RedisClusterServer, key: str
) -> None:
    client = redis_cluster.client()
    with pytest.raises(ValueError, match="must share a hash slot: put the key in braces"):
        RedisTokenStore(client, key)
    RedisTokenStore(client, "sf:{token}:prod")  # a tag anywhere in the key will do
    RedisTokenStore(redis_cluster.nodes[0].client(), key)  # not a cluster client: no slots


def test_eight_processes_refresh_once_per_expiry_through_a_cluster(
    sf_org: StandInOrg, redis_cluster: RedisClusterServer
) -> None:
    sf_org.rotation = True
    sf_org.reject_overlapping_refreshes = True
    spec = StoreSpec("redis-cluster", redis_cluster.url, key="{sf:token:fleet}")
    results = run_fleet(sf_org, spec, workers=8, rounds=3, hold=True)
    assert [r.errors for r in results] == [()] * 3
    assert [r.ok for r in results] == [8] * 3
    assert [r.locks for r in results] == [1] * 3
    assert (sf_org.token_requests, sf_org.family_revocations, sf_org.overlap_rejections) == (
        3,
        0,
        0,
    )


def test_nodes_down_are_token_store_errors_in_bounded_time(tmp_path: Path) -> None:
    need_redis_server()
    with RedisClusterServer(tmp_path) as cluster:
        store = _seeded(cluster)
        cluster.node_of(KEY).stop()  # the node serving the key's slot
        _fails_closed(store)
        for node in cluster.nodes:
            node.stop()
        # No node reachable: redis-py raises RedisClusterException, which is not a RedisError.
        with pytest.raises(redis.RedisClusterException):
            cluster.client()
        assert "RedisClusterException" in _fails_closed(store)


def _fails_closed(store: RedisTokenStore) -> list[str]:
    """Every step of the store raises TokenStoreError within seconds; the causes' names."""

    def lock() -> None:
        with store.try_lock(1):
            pass

    steps: dict[str, Callable[[], object]] = {
        "read": store.load,
        "write": lambda: store.save(NEWER, replaces=1),
        "lock": lock,
        "watch": lambda: store.wait_for_change(1, 1),
    }
    causes = []
    for action, step in steps.items():
        started = time.monotonic()
        with pytest.raises(
            TokenStoreError, match=f"Redis could not {action} '{{sf:token:prod}}'"
        ) as failed:
            step()
        assert time.monotonic() - started < 10
        causes.append(type(failed.value.__cause__).__name__)
    return causes
