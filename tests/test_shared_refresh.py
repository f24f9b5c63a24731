"""The refresh algorithm with shared stores: adopt, refresh, persist, wait for another worker."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import pytest
import requests
import zeep
from conftest import Harness, InBackground, wait_for

from zeep_sfrefresh import (
    FileTokenStore,
    RedisTokenStore,
    RefreshIntent,
    SalesforceTransport,
    StoredToken,
    TokenRefreshError,
    TokenStoreError,
)
from zeep_sfrefresh._stores import holds_lock, records_intent, takes_intent
from zeep_sfrefresh._tokens import fingerprint
from zeep_sfrefresh.testing import StandInOrg
from zeep_sfrefresh.testing.redis_server import RedisClusterServer, RedisServer

Build = Callable[..., Harness]


def _stored(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def test_empty_store_is_seeded_and_a_stored_token_wins(harness: Build, tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    first = harness(store=FileTokenStore(path))
    assert _stored(path) == {"version": 1, "token": first.issued}

    second = harness(store=FileTokenStore(path))  # its session holds another, newer-looking token
    assert second.issued["access_token"] != first.issued["access_token"]
    assert second.transport.token.access_token == first.issued["access_token"]
    assert second.oauth.token["access_token"] == first.issued["access_token"]
    second.client.service.getServerTimestamp()
    assert second.org.sessions_seen == [first.issued["access_token"]]


@pytest.mark.parametrize("rotation", [False, True])
def test_workers_sharing_a_file_store_refresh_once(
    harness: Build, tmp_path: Path, rotation: bool
) -> None:
    path = tmp_path / "token.json"
    a = harness(store=FileTokenStore(path))
    b = harness(store=FileTokenStore(path))
    a.org.rotation = rotation
    a.org.expire_all_sessions()
    a.client.service.getServerTimestamp()
    b.client.service.getServerTimestamp()
    assert a.org.token_requests == 1
    assert len(a.saved) == 1
    assert b.saved == []  # b adopted: its token_updater is for tokens it refreshed itself
    assert b.transport.token.access_token == a.saved[0]["access_token"]
    assert b.oauth.token["access_token"] == a.saved[0]["access_token"]
    # b found a's token in the store before its call: no failed call, no token request.
    assert a.org.soap_posts == 3
    assert a.org.sessions_seen[-1] == a.saved[0]["access_token"]
    stored = _stored(path)
    assert stored["version"] == 2
    assert stored["token"]["access_token"] == a.saved[0]["access_token"]
    if rotation:
        new_refresh = stored["token"]["refresh_token"]
        assert new_refresh != a.issued["refresh_token"]
        assert a.org.refresh_token_state(new_refresh) == "active"
        assert a.org.refresh_token_state(a.issued["refresh_token"]) == "retired"


def test_transports_on_one_session_share_one_refresh(harness: Build) -> None:
    h = harness()
    twin = SalesforceTransport(h.oauth)  # a second transport (an async one, say) on one session
    twin_client = zeep.Client(h.client.wsdl.location, transport=twin)
    h.org.expire_all_sessions()
    h.client.service.getServerTimestamp()
    twin_client.service.getServerTimestamp()  # adopts the session's new token, then sends
    assert twin.token.access_token == h.transport.token.access_token
    assert h.org.token_requests == 1
    assert h.org.soap_posts == 3  # the twin's call did not fail first


def test_another_workers_refresh_in_flight_is_waited_for_not_repeated(
    harness: Build, tmp_path: Path
) -> None:
    """ "Already being processed": wait for the other token, never send the old one again."""
    store = FileTokenStore(tmp_path / "token.json")
    h = harness(store=store)
    h.org.rotation = True
    h.org.expire_all_sessions()
    release = h.org.hold_token_requests()
    other: dict[str, Any] = {}

    def other_worker() -> None:  # a worker outside the lock (its lock expired, say)
        other["answer"] = requests.post(
            h.org.token_url,
            data={
                "grant_type": "refresh_token",
                "refresh_token": h.issued["refresh_token"],
                "client_id": h.org.client_id,
                "client_secret": h.org.client_secret,
            },
            timeout=30,
        ).json()

    worker = threading.Thread(target=other_worker)
    worker.start()
    wait_for(lambda: h.org.token_requests == 1)
    caller = InBackground(h.client.service.getServerTimestamp)
    wait_for(lambda: h.org.overlap_rejections == 1)
    release.set()
    worker.join(30)
    with store.lock():  # the other worker writes its token, as it would have under its lock
        store.save({**h.issued, **other["answer"]}, replaces=1)
    assert caller.join().error is None, caller.error
    assert h.transport.token.access_token == other["answer"]["access_token"]
    assert (h.org.token_requests, h.org.overlap_rejections, h.org.family_revocations) == (2, 1, 0)
    assert h.org.refresh_token_state(other["answer"]["refresh_token"]) == "active"


def test_waiting_for_another_refresh_is_bounded(harness: Build, tmp_path: Path) -> None:
    h = harness(store=FileTokenStore(tmp_path / "token.json"), overlap_wait=0.3)
    h.org.expire_all_sessions()
    release = h.org.hold_token_requests()
    blocker = threading.Thread(
        target=requests.post,
        args=(h.org.token_url,),
        kwargs={
            "data": {
                "grant_type": "refresh_token",
                "refresh_token": h.issued["refresh_token"],
                "client_id": h.org.client_id,
                "client_secret": h.org.client_secret,
            },
            "timeout": 30,
        },
    )
    blocker.start()
    try:
        wait_for(lambda: h.org.token_requests == 1)
        with pytest.raises(TokenRefreshError, match="did not reach the store") as info:
            h.client.service.getServerTimestamp()
        assert info.value.error == "invalid_grant"
        assert h.org.token_requests == 2
    finally:
        release.set()
        blocker.join(30)


def test_a_store_older_than_one_already_seen_is_refused(harness: Build, tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    h = harness(store=FileTokenStore(path))
    snapshot = path.read_bytes()  # version 1
    h.org.expire_all_sessions()
    h.client.service.getServerTimestamp()  # version 2
    path.write_bytes(snapshot)  # restored from an old backup
    h.org.expire_all_sessions()
    with pytest.raises(TokenStoreError, match="older than version 2"):
        h.client.service.getServerTimestamp()
    assert h.org.token_requests == 1


def test_an_emptied_store_is_refused(harness: Build, tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    h = harness(store=FileTokenStore(path))
    path.unlink()
    h.org.expire_all_sessions()
    with pytest.raises(TokenStoreError, match="store is empty"):
        h.client.service.getServerTimestamp()
    assert h.org.token_requests == 0


@pytest.mark.parametrize("redis_kind", ["redis_server", "redis_cluster"])
def test_redis_store_shares_one_refresh(
    harness: Build, request: pytest.FixtureRequest, redis_kind: str
) -> None:
    # A redis-server, or a cluster of three through a redis.RedisCluster client.
    redis_at: RedisServer | RedisClusterServer = request.getfixturevalue(redis_kind)
    a = harness(store=RedisTokenStore(redis_at.client(), "{sf:token}"))
    b = harness(store=RedisTokenStore(redis_at.client(), "{sf:token}"))
    a.org.rotation = True
    a.org.expire_all_sessions()
    a.client.service.getServerTimestamp()
    b.client.service.getServerTimestamp()
    assert (a.org.token_requests, a.org.family_revocations) == (1, 0)
    assert b.transport.token.access_token == a.transport.token.access_token


def test_a_lower_version_in_redis_is_refused(harness: Build, redis_server: RedisServer) -> None:
    client = redis_server.client()
    h = harness(store=RedisTokenStore(client, "sf:token"))
    snapshot = client.dump("sf:token")  # version 1, as an RDB backup would hold it
    assert snapshot is not None
    h.org.expire_all_sessions()
    h.client.service.getServerTimestamp()
    client.restore("sf:token", 0, snapshot, replace=True)  # the old backup restored
    h.org.expire_all_sessions()
    with pytest.raises(TokenStoreError, match="older than version 2"):
        h.client.service.getServerTimestamp()
    assert h.org.token_requests == 1
    # Refused before any intent: none says its refresh token is in use (no request went out).
    restored = RedisTokenStore(client, "sf:token").load()
    assert restored is not None
    assert (restored.version, restored.intent) == (1, None)


def test_store_in_repr_without_secrets(harness: Build, tmp_path: Path, sf_org: StandInOrg) -> None:
    h = harness(store=FileTokenStore(tmp_path / "token.json"))
    text = repr(h.transport)
    assert "FileTokenStore" in text
    assert h.issued["access_token"] not in text
    assert h.issued["refresh_token"] not in text


# --- workers that wait for another worker's refresh -------------------------------------------


class CountingFileStore(FileTokenStore):
    """Counts how often this worker holds the store's lock."""

    taken = 0

    @contextmanager
    def lock(self) -> Iterator[None]:
        with super().lock():
            self.taken += 1
            yield

    @contextmanager
    def try_lock(self, version: int) -> Iterator[StoredToken | Literal[False]]:
        with super().try_lock(version) as held:
            self.taken += holds_lock(held, version)
            yield held


class CountingRedisStore(RedisTokenStore):
    taken = 0

    @contextmanager
    def lock(self) -> Iterator[None]:
        with super().lock():
            self.taken += 1
            yield

    @contextmanager
    def try_lock(
        self, version: int, *, intent: RefreshIntent | None = None
    ) -> Iterator[StoredToken | Literal[False]]:
        with super().try_lock(version, intent=intent) as held:
            self.taken += holds_lock(held, version)
            yield held


class SteppedStore:
    """A built-in store (``inner``) that records the steps a worker's refresh takes with it:
    ``try_lock:held`` (the lock taken), ``try_lock:moved`` (another version handed over,
    not locked), ``try_lock:busy``, ``load``, ``wait``, ``intent``, ``save``."""

    def __init__(self, inner: FileTokenStore | RedisTokenStore, *, hands_over: bool = True) -> None:
        self._inner = inner
        self._hands_over = hands_over
        """False: like a store of one's own may, yield False for another version."""
        self.steps: list[str] = []
        self.lock = inner.lock
        self.lock_wait = inner.lock_wait

        @contextmanager
        def try_lock(version: int, **options: Any) -> Iterator[StoredToken | Literal[False]]:
            with inner.try_lock(version, **options) as held:
                if not self._hands_over and not holds_lock(held, version):
                    held = False
                self.steps.append("try_lock:" + _outcome(held, version))
                yield held

        # Handed the next request's intent where the inner store takes it (Redis).
        self.try_lock = records_intent(try_lock) if takes_intent(inner.try_lock) else try_lock

    def load(self) -> StoredToken | None:
        self.steps.append("load")
        return self._inner.load()

    def wait_for_change(self, version: int, timeout: float) -> StoredToken | None:
        self.steps.append("wait")
        return self._inner.wait_for_change(version, timeout)

    def write_intent(self, intent: Any, *, version: int) -> None:
        self.steps.append("intent")
        self._inner.write_intent(intent, version=version)

    def save(self, token: Any, *, replaces: int | None) -> int:
        self.steps.append("save")
        return self._inner.save(token, replaces=replaces)


def _outcome(held: StoredToken | Literal[False], version: int) -> str:
    if holds_lock(held, version):
        return "held"
    return "busy" if held is False else "moved"


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_each_worker_takes_the_fewest_store_steps_an_expiry_needs(
    harness: Build, tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    """The worker that refreshes takes the lock at its own version without reading first;
    one that finds the lock busy goes straight to waiting; one that comes after the refresh
    gets the new token from its one try of the lock. No read repeats what a step found."""

    def store() -> SteppedStore:
        if kind == "file":
            return SteppedStore(FileTokenStore(tmp_path / "token.json"))
        server: RedisServer = request.getfixturevalue("redis_server")
        return SteppedStore(RedisTokenStore(server.client(), "{sf:token}"))

    stores = store(), store(), store()
    a, b, c = (harness(store=s) for s in stores)
    a.org.rotation = True
    a.org.expire_all_sessions()
    release = a.org.hold_token_requests()
    for each in stores:
        each.steps.clear()
    first = InBackground(a.client.service.getServerTimestamp)
    wait_for(lambda: a.org.token_requests == 1)  # a holds the lock, in its token request
    posts = a.org.soap_posts
    second = InBackground(b.client.service.getServerTimestamp)
    wait_for(lambda: a.org.soap_posts == posts + 1)  # b met the expiry
    wait_for(lambda: "wait" in stores[1].steps)
    release.set()
    assert first.join().error is None, first.error
    assert second.join().error is None, second.error
    c.client.service.getServerTimestamp()  # c meets the expiry after the refresh
    assert (a.org.token_requests, a.org.family_revocations) == (1, 0)
    # Redis records the intent with the lock (one round trip); the file store writes it.
    refresher = (
        ["try_lock:held", "save"] if kind == "redis" else ["try_lock:held", "intent", "save"]
    )
    assert stores[0].steps == refresher
    # Straight to waiting (then, while a's refresh lasts, a look and a try now and then).
    assert stores[1].steps[:2] == ["try_lock:busy", "wait"]
    assert "try_lock:held" not in stores[1].steps
    assert stores[2].steps == ["try_lock:moved"]
    assert a.transport.token.access_token == b.transport.token.access_token
    assert c.transport.token.access_token == a.transport.token.access_token


def test_redis_records_the_intent_with_the_lock_before_the_token_request(
    harness: Build, redis_server: RedisServer
) -> None:
    """Write-ahead as ever: while the request is out, the store says the refresh token may
    be in use, by whom, in which attempt; one round trip fewer before the request."""
    inner = RedisTokenStore(redis_server.client(), "{sf:token}")
    store = SteppedStore(inner)
    h = harness(store=store)
    sent_with = h.transport.token.refresh_token
    assert sent_with is not None
    h.org.expire_all_sessions()
    release = h.org.hold_token_requests()
    store.steps.clear()
    call = InBackground(h.client.service.getServerTimestamp)
    wait_for(lambda: h.org.token_requests == 1)
    stored = inner.load()
    assert stored is not None
    intent = stored.intent
    assert intent is not None
    assert (intent.refresh_token, intent.state, intent.attempts, intent.reason) == (
        fingerprint(sent_with),
        "sending",
        1,
        "",  # a reason only says why a refresh token is spent
    )
    assert intent.holder.startswith(f"{socket.gethostname()}/{os.getpid()}/")  # this process
    release.set()
    assert call.join().error is None, call.error
    assert store.steps == ["try_lock:held", "save"]  # no intent step of its own
    stored = inner.load()
    assert stored is not None
    assert stored.intent is None  # cleared by the token's write


def test_redis_leaves_an_intent_it_finds_to_the_refresher(redis_server: RedisServer) -> None:
    store = RedisTokenStore(redis_server.client(), "k")
    token = {"access_token": "00DSECRETACCESS", "refresh_token": "5AepSECRETREFRESH"}
    with store.lock():
        store.save(token, replaces=None)
    mine = RefreshIntent("fp", "sending", 1, "host/1/1", 1.7e9)
    theirs = RefreshIntent("fp", "unanswered", 1, "host/2/1", 1.6e9)
    with store.try_lock(1, intent=mine) as held:
        assert held == StoredToken(token, 1)  # as read before: no intent, so mine is recorded
        assert store.load() == StoredToken(token, 1, mine)
        store.write_intent(theirs, version=1)
    with store.try_lock(1, intent=mine) as held:
        assert held == StoredToken(token, 1, theirs)  # one was there: left for the caller
        assert store.load() == StoredToken(token, 1, theirs)
        store.write_intent(None, version=1)
        with RedisTokenStore(redis_server.client(), "k").try_lock(1, intent=mine) as busy:
            assert busy is False
            assert store.load() == StoredToken(token, 1)  # not recorded without the lock
    with store.try_lock(2, intent=mine) as moved:
        assert moved == StoredToken(token, 1)  # another version: nothing recorded either
        assert store.load() == StoredToken(token, 1)


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_a_try_lock_that_does_not_hand_over_a_newer_token_costs_one_wait_that_ends_at_once(
    harness: Build, tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    inner: FileTokenStore | RedisTokenStore
    if kind == "file":
        inner = FileTokenStore(tmp_path / "token.json")
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        inner = RedisTokenStore(server.client(), "{sf:token}")
    late = SteppedStore(inner, hands_over=False)
    a, b = harness(store=inner), harness(store=late)
    a.org.expire_all_sessions()
    a.client.service.getServerTimestamp()  # a refreshes
    late.steps.clear()
    b.client.service.getServerTimestamp()  # b meets the expiry after it
    # The wait found the newer token at once: no pause, no second look or try.
    assert late.steps == ["try_lock:busy", "wait"]
    assert (a.org.token_requests, b.transport.token.access_token) == (
        1,
        a.transport.token.access_token,
    )


class PlainStore:
    """A store of one's own with only the four required methods (no try_lock, no
    wait_for_change): it gets the refresher's default behaviour."""

    def __init__(self, path: Path) -> None:
        self._inner = FileTokenStore(path)
        self.lock = self._inner.lock
        self.load = self._inner.load
        self.save = self._inner.save
        self.write_intent = self._inner.write_intent


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_a_worker_waiting_for_another_refresh_adopts_without_the_lock(
    harness: Build, tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    # watch=False: b's call goes out and meets the expiry (joining before it: test_join.py).
    def store() -> CountingFileStore | CountingRedisStore:
        if kind == "file":
            return CountingFileStore(tmp_path / "token.json", watch=False)
        server: RedisServer = request.getfixturevalue("redis_server")
        return CountingRedisStore(server.client(), "{sf:token}", watch=False)

    a_store, b_store = store(), store()
    a, b = harness(store=a_store), harness(store=b_store)
    a.org.rotation = True
    a.org.expire_all_sessions()
    release = a.org.hold_token_requests()
    a_store.taken = b_store.taken = 0
    first = InBackground(a.client.service.getServerTimestamp)
    wait_for(lambda: a.org.token_requests == 1)  # a holds the lock, in its token request
    posts = a.org.soap_posts
    second = InBackground(b.client.service.getServerTimestamp)
    wait_for(lambda: a.org.soap_posts == posts + 1)  # b met the expiry and waits
    time.sleep(0.1)
    assert second.running
    release.set()
    assert first.join().error is None, first.error
    assert second.join().error is None, second.error
    assert (a.org.token_requests, a.org.family_revocations) == (1, 0)
    assert b.transport.token.access_token == a.transport.token.access_token
    assert (a_store.taken, b_store.taken) == (1, 0)  # b never took the lock to adopt
    assert b.saved == []


def test_a_store_of_ones_own_without_the_optional_methods_still_refreshes_once(
    harness: Build, tmp_path: Path
) -> None:
    path = tmp_path / "token.json"
    a, b = harness(store=PlainStore(path)), harness(store=PlainStore(path))
    a.org.rotation = True
    a.org.expire_all_sessions()
    release = a.org.hold_token_requests()
    first = InBackground(a.client.service.getServerTimestamp)
    wait_for(lambda: a.org.token_requests == 1)
    second = InBackground(b.client.service.getServerTimestamp)  # queues on the lock
    time.sleep(0.1)
    release.set()
    assert first.join().error is None, first.error
    assert second.join().error is None, second.error
    assert (a.org.token_requests, a.org.family_revocations) == (1, 0)
    assert b.transport.token.access_token == a.transport.token.access_token


def test_waiting_for_a_lock_held_without_a_new_token_is_bounded(
    harness: Build, tmp_path: Path
) -> None:
    path = tmp_path / "token.json"
    h = harness(store=FileTokenStore(path, lock_wait=0.3))
    other = FileTokenStore(path)  # another worker, stuck holding the lock
    h.org.expire_all_sessions()
    with other.lock():
        started = time.monotonic()
        with pytest.raises(TokenStoreError, match=r"could not take the lock .* within 0\.3 s"):
            h.client.service.getServerTimestamp()
        assert time.monotonic() - started < 10
    assert h.org.token_requests == 0
    h.client.service.getServerTimestamp()  # the lock is free again: this worker refreshes
    assert h.org.token_requests == 1
