"""A call whose token another worker (or another thread) is refreshing waits for that
refresh and goes out with its token, instead of meeting the expiry the refresh is about.
Real parts: the stand-in org over sockets, token files on disk, a real redis-server."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import redis
import zeep
from conftest import Harness, InBackground, make_oauth, store_maker, wait_for, workers_on_one_store

from zeep_sfrefresh import (
    PARTNER_WSDL,
    FileTokenStore,
    MemoryTokenStore,
    ReauthorizationRequiredError,
    RedisTokenStore,
    RefreshEvent,
    RefreshIntent,
    SalesforceTransport,
    StoredToken,
    TokenRefreshError,
    TokenStoreError,
)
from zeep_sfrefresh._refresh import JOINED_REFRESH, join_wait
from zeep_sfrefresh._tokens import Generation, Token, fingerprint
from zeep_sfrefresh.testing import StandInOrg
from zeep_sfrefresh.testing.redis_server import RedisServer

Build = Callable[..., Harness]
Store = FileTokenStore | MemoryTokenStore | RedisTokenStore

TOKEN = {
    "access_token": "00DSECRETACCESS",
    "refresh_token": "5AepSECRETREFRESH",
    "instance_url": "https://a.my.salesforce.com",
}
FP = fingerprint(TOKEN["refresh_token"])


pytestmark = pytest.mark.usefixtures("watches_end")


# --- how long to wait: pure logic ---------------------------------------------------------------


def _intent(
    state: Any = "sending", holder: str = "host/2/b", since: float = 1000.0, fp: str = FP
) -> RefreshIntent:
    return RefreshIntent(fp, state, 1, holder, since)


@pytest.mark.parametrize(
    ("intent", "now", "wait"),
    [
        (None, 1000.0, 0.0),
        (_intent(), 1000.0, 30.0),  # just written: up to overlap_wait
        (_intent(), 1010.5, 19.5),  # counted from when it was written
        (_intent(), 1030.0, 0.0),  # as old as overlap_wait: a refresh that died
        (_intent(), 1100.0, 0.0),
        (_intent(), 990.0, 30.0),  # its writer's clock runs ahead: never longer
        (_intent("unanswered"), 1000.0, 0.0),  # no request in flight
        (_intent("spent"), 1000.0, 0.0),
        (_intent(holder="host/1/a"), 1000.0, 0.0),  # this refresher's own
        (_intent(fp="sha256:another"), 1000.0, 0.0),  # about another refresh token
    ],
)
def test_join_wait(intent: RefreshIntent | None, now: float, wait: float) -> None:
    assert join_wait(intent, FP, holder="host/1/a", now=now, limit=30.0) == wait


# --- through the transports ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "redis", "redis-cluster", "memory"])
def test_a_call_made_while_another_worker_refreshes_waits_for_its_token(
    harness: Build, request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    events: list[RefreshEvent] = []
    a, b, b_store = workers_on_one_store(
        harness, store_maker(kind, request, tmp_path), listener=events.append
    )
    release = a.org.hold_token_requests()
    first = InBackground(a.client.service.getServerTimestamp)
    wait_for(lambda: a.org.token_requests == 1)  # a met the expiry; its request is held
    wait_for(lambda: b_store.peek_intent(1) is not None)  # Redis: announced to b's watch
    posts = a.org.soap_posts
    second = InBackground(b.client.service.getServerTimestamp)
    wait_for(lambda: _running("_await_announced"))  # b's call joined a's refresh
    time.sleep(0.1)
    assert second.running
    assert a.org.soap_posts == posts  # b waits for a's token rather than send a doomed call
    release.set()
    assert first.join().error is None, first.error
    assert second.join().error is None, second.error
    fresh = a.saved[0]["access_token"]
    assert a.org.soap_posts == posts + 2  # a's resend, b's one call
    assert (a.org.token_requests, a.org.family_revocations) == (1, 0)
    assert b.transport.token.access_token == fresh
    assert b.oauth.token["access_token"] == fresh
    assert b.saved == []  # its token_updater is for tokens it refreshed itself
    assert [(e.kind, e.reason) for e in events] == [("adopted", JOINED_REFRESH)]


def _running(function: str) -> bool:
    """Whether a thread is inside a function of that name (a call waiting where a test
    needs it to be before it goes on)."""
    for top in sys._current_frames().values():
        frame: FrameType | None = top
        while frame is not None:
            if frame.f_code.co_name == function:
                return True
            frame = frame.f_back
    return False


class _LateStore(MemoryTokenStore):
    """A store whose waits for a change always run their course and find nothing, as one
    whose pause ends just before the token comes."""

    def wait_for_change(self, version: int, timeout: float) -> StoredToken | None:
        time.sleep(timeout)
        return None


class _UnpeekedStore(MemoryTokenStore):
    """A store of one's own with the intent look and a wait for a change, but no ``peek``."""

    peek = None  # type: ignore[assignment]

    def wait_for_change(self, version: int, timeout: float) -> StoredToken | None:
        deadline = time.monotonic() + timeout
        while (stored := self.load()) is not None and stored.version == version:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.005)
        return stored


@pytest.mark.parametrize(
    "store_class",
    [
        # The look that sees the intent go has the token: adopted as the refresh joined,
        # not as a token found in the store.
        pytest.param(_LateStore, id="token-as-a-pause-ends"),
        # The token the wait returns is the one adopted: nothing else would look for it.
        pytest.param(_UnpeekedStore, id="store-without-peek"),
    ],
)
def test_a_joined_refresh_is_adopted_as_joined(
    harness: Build, store_class: type[MemoryTokenStore]
) -> None:
    events: list[RefreshEvent] = []
    shared = store_class()
    a, b, _ = workers_on_one_store(harness, lambda: shared, listener=events.append)
    release = a.org.hold_token_requests()
    first = InBackground(a.client.service.getServerTimestamp)
    wait_for(lambda: a.org.token_requests == 1)
    posts = a.org.soap_posts
    second = InBackground(b.client.service.getServerTimestamp)
    wait_for(lambda: _running("_await_announced"))
    release.set()
    assert first.join().error is None, first.error
    assert second.join().error is None, second.error
    assert a.org.soap_posts == posts + 2  # a's resend, b's one call
    assert b.transport.token.access_token == a.saved[0]["access_token"]
    assert [(e.kind, e.reason) for e in events] == [("adopted", JOINED_REFRESH)]


def test_a_rest_request_made_while_another_worker_refreshes_waits_for_its_token(
    sf_org: StandInOrg, tmp_path: Path
) -> None:
    path = tmp_path / "token.json"
    a = SalesforceTransport(
        make_oauth(sf_org, sf_org.issue_token(), []), store=FileTokenStore(path)
    )
    b = SalesforceTransport(
        make_oauth(sf_org, sf_org.issue_token(), []), store=FileTokenStore(path)
    )
    rest = b.rest_session()
    sf_org.rotation = True
    sf_org.expire_all_sessions()
    release = sf_org.hold_token_requests()
    first = InBackground(lambda: a.rest_session().get("limits"))
    wait_for(lambda: sf_org.token_requests == 1)
    requests_before = sf_org.rest_requests
    second = InBackground(lambda: rest.get("limits"))
    time.sleep(0.2)
    assert second.running
    assert sf_org.rest_requests == requests_before
    release.set()
    assert first.join().error is None, first.error
    assert second.join().error is None, second.error
    assert getattr(second.result, "status_code", None) == 200
    assert sf_org.rest_requests == requests_before + 2  # a's resend, b's one request
    assert sf_org.token_requests == 1


def test_a_refresh_that_fails_lets_the_waiting_calls_go_at_once(
    harness: Build, tmp_path: Path
) -> None:
    path = tmp_path / "token.json"
    a = harness(store=FileTokenStore(path))
    b = harness(store=FileTokenStore(path), overlap_wait=30)
    a.org.rotation = True
    a.org.expire_all_sessions()
    release = a.org.hold_token_requests()
    first = InBackground(a.client.service.getServerTimestamp)
    wait_for(lambda: a.org.token_requests == 1)
    started = time.monotonic()
    second = InBackground(b.client.service.getServerTimestamp)
    time.sleep(0.2)
    assert second.running
    a.org.token_failure = "invalid_grant"  # the held request is refused: the family is gone
    release.set()
    assert isinstance(first.join().error, ReauthorizationRequiredError), first.error
    # b's wait ended with the intent (marked spent), not with overlap_wait: its call went
    # out, met the expiry, and the refresh it led to found the refresh token spent.
    assert isinstance(second.join().error, ReauthorizationRequiredError), second.error
    assert time.monotonic() - started < 15
    assert a.org.token_requests == 1


def _transport(org: StandInOrg, store: Any, **options: Any) -> SalesforceTransport:
    return SalesforceTransport(make_oauth(org, org.issue_token(), []), store=store, **options)


def _announce(path: Path, intent: RefreshIntent) -> None:
    """Record ``intent`` on version 1 of the token file, as another worker's refresh would."""
    other = FileTokenStore(path)
    with other.lock():
        other.write_intent(intent, version=1)


def test_what_is_joined(sf_org: StandInOrg, tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    transport = _transport(sf_org, FileTokenStore(path))
    refresher = transport._core.refresher
    fp = fingerprint(refresher.token.refresh_token)
    now = time.time()
    assert refresher.begin() == (refresher.current, False)  # no intent: no file to look at
    for intent, joined in [
        (RefreshIntent(fp, "sending", 1, "host/2/b", now), True),
        (RefreshIntent(fp, "sending", 1, "host/2/b", now - 100), False),  # a refresh that died
        (RefreshIntent(fp, "unanswered", 1, "host/2/b", now), False),
        (RefreshIntent(fp, "sending", 1, refresher._holder, now), False),  # its own
        (RefreshIntent("sha256:another", "sending", 1, "host/2/b", now), False),
    ]:
        _announce(path, intent)
        assert refresher.begin() == (refresher.current, joined), intent
    _announce(path, RefreshIntent(fp, "sending", 1, "host/2/b", now))
    unwatched = _transport(sf_org, FileTokenStore(path, watch=False))
    assert unwatched._core.refresher.begin()[1] is False  # watch=False: no looks at all


def test_an_intent_waited_for_in_vain_is_not_waited_for_again(
    sf_org: StandInOrg, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker that wrote an intent and died: the first call waits overlap_wait after the
    intent was written, then goes out with its token (which still works here); the next
    calls go out at once."""
    path = tmp_path / "token.json"
    store = _CountingWaits(path)
    client_transport = _transport(sf_org, store, overlap_wait=0.3)
    refresher = client_transport._core.refresher
    fp = fingerprint(refresher.token.refresh_token)
    _announce(path, RefreshIntent(fp, "sending", 1, "host/2/dead", time.time()))
    generation, joined = refresher.begin()
    assert joined
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="zeep_sfrefresh"):
        assert refresher.join(generation) is generation
        assert refresher.begin() == (generation, False)
    assert time.monotonic() - started < 0.9  # not past overlap_wait after the intent
    assert 1 <= store.waits <= 10  # pauses of up to 50 ms: no spinning
    message = "another worker's refresh of this token stored no token within 0.3 s of its start"
    assert sum(message in m for m in caplog.messages) == 1


class _CountingWaits(FileTokenStore):
    waits = 0

    def wait_for_change(self, version: int, timeout: float) -> StoredToken | None:
        self.waits += 1
        return super().wait_for_change(version, timeout)


class _NoWaitStore:
    """A store of one's own with the looks (``peek``, ``peek_intent``) and a
    ``poll_interval``, but no ``wait_for_change``: a join looks again every
    ``poll_interval``."""

    poll_interval = 0.1

    def __init__(self, path: Path) -> None:
        inner = FileTokenStore(path)
        self.lock, self.load, self.save = inner.lock, inner.load, inner.save
        self.write_intent, self.peek_intent = inner.write_intent, inner.peek_intent
        self._peek = inner.peek
        self.looks = 0

    def peek(self, version: int) -> StoredToken | None:
        self.looks += 1
        return self._peek(version)


def test_a_join_with_a_store_without_wait_for_change_looks_every_poll_interval(
    sf_org: StandInOrg, tmp_path: Path
) -> None:
    path = tmp_path / "token.json"
    store = _NoWaitStore(path)
    refresher = _transport(sf_org, store, overlap_wait=0.5)._core.refresher
    fp = fingerprint(refresher.token.refresh_token)
    _announce(path, RefreshIntent(fp, "sending", 1, "host/2/dead", time.time()))
    store.looks = 0
    generation = refresher.current
    assert refresher.join(generation) is refresher.current
    assert 2 <= store.looks <= 8  # every 0.1 s, not every 2 ms


def test_a_join_adopts_the_token_stored_during_a_short_wait(
    sf_org: StandInOrg, tmp_path: Path
) -> None:
    path = tmp_path / "token.json"
    refresher = _transport(sf_org, FileTokenStore(path), overlap_wait=0.8)._core.refresher
    fp = fingerprint(refresher.token.refresh_token)
    _announce(path, RefreshIntent(fp, "sending", 1, "host/2/b", time.time()))
    generation = refresher.current
    joined = InBackground(lambda: refresher.join(generation))
    time.sleep(0.2)
    assert joined.running
    other = FileTokenStore(path)
    with other.lock():
        other.save({**TOKEN, "instance_url": sf_org.url}, replaces=1)
    result = joined.join().result
    assert isinstance(result, Generation)
    assert result.token.access_token == TOKEN["access_token"]


def test_nothing_is_joined_without_looks_a_stored_token_or_a_refresh_token(
    sf_org: StandInOrg, tmp_path: Path
) -> None:
    path = tmp_path / "token.json"
    now = time.time()
    plain = _transport(sf_org, _PlainStore(path))._core.refresher  # no peek_intent
    assert plain.begin() == (plain.current, False)
    refresher = _transport(sf_org, FileTokenStore(path))._core.refresher
    fp = fingerprint(refresher.token.refresh_token)
    intent = RefreshIntent(fp, "sending", 1, "host/2/b", now)
    _announce(path, intent)
    assert refresher.begin()[1] is True
    refresher._unstored = True  # its token is newer than the store's: that refresh is not its
    assert refresher.begin()[1] is False
    refresher._unstored = False
    refresher._joined = intent  # waited for in vain already (a wall clock set back since)
    assert refresher.begin()[1] is False
    refresher._joined = None
    old = refresher.current
    refresher._generation = Generation(old.token, old.epoch + 1)  # as a settled failure does
    assert refresher._joinable(old) is None  # a generation no longer current joins nothing
    bare = {k: v for k, v in old.token.data.items() if k != "refresh_token"}
    refresher._generation = Generation(Token(bare), old.epoch + 2)  # a credential grant's
    assert refresher.begin()[1] is False


class _PlainStore:
    """A store of one's own with only the four required methods."""

    def __init__(self, path: Path) -> None:
        inner = FileTokenStore(path)
        self.lock, self.load, self.save = inner.lock, inner.load, inner.save
        self.write_intent = inner.write_intent


def test_a_refresh_token_whose_refresh_was_waited_out_is_spent_without_a_second_wait(
    sf_org: StandInOrg, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker died mid-refresh: a call waits for its intent (overlap_wait after it was
    written), goes out, meets the expiry; its refresh finds that same intent and marks the
    refresh token spent at once, not after a second overlap_wait."""
    path = tmp_path / "token.json"
    transport = _transport(sf_org, FileTokenStore(path), overlap_wait=0.3)
    client = zeep.Client(PARTNER_WSDL, transport=transport)
    fp = fingerprint(transport._core.refresher.token.refresh_token)
    _announce(path, RefreshIntent(fp, "sending", 1, "host/2/dead", time.time()))
    sf_org.expire_all_sessions()
    with (
        caplog.at_level(logging.INFO, logger="zeep_sfrefresh"),
        pytest.raises(ReauthorizationRequiredError, match="never stored its result"),
    ):
        client.service.getServerTimestamp()
    assert "another refresh of this token may be running" not in caplog.text
    assert (sf_org.soap_posts, sf_org.token_requests) == (1, 0)


@pytest.mark.parametrize("refresh", ["works", "fails"])
def test_a_call_made_while_another_thread_refreshes_waits_for_it(
    harness: Build, refresh: str
) -> None:
    """One transport, two threads (or tasks): the second call waits for the first one's
    refresh, with any store (the default memory store here), and shares its failure: no
    call of its own, no second token request."""
    h = harness()
    h.org.expire_all_sessions()
    release = h.org.hold_token_requests()
    first = InBackground(h.client.service.getServerTimestamp)
    wait_for(lambda: h.org.token_requests == 1)
    posts = h.org.soap_posts
    second = InBackground(h.client.service.getServerTimestamp)
    time.sleep(0.2)
    assert second.running
    assert h.org.soap_posts == posts
    if refresh == "fails":
        h.org.token_failure = "unavailable_503"
    release.set()
    first.join()
    second.join()
    assert h.org.token_requests == 1
    if refresh == "works":
        assert (first.error, second.error) == (None, None)
        assert h.org.soap_posts == posts + 2  # the first call's resend, the second's one call
        return
    assert isinstance(first.error, TokenRefreshError), first.error
    assert isinstance(second.error, TokenRefreshError), second.error
    assert str(second.error) == str(first.error)
    assert h.org.soap_posts == posts


# --- FileTokenStore.peek_intent -----------------------------------------------------------------


class _CountingReads(FileTokenStore):
    reads = 0

    def _read(self, path: Path) -> bytes | None:
        if path == self.intent_path:
            self.reads += 1
        return super()._read(path)


def test_file_peek_intent(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    store = _CountingReads(path)
    with store.lock():
        store.save(TOKEN, replaces=None)
    assert store.peek_intent(1) is None  # no intent file: a stat, no read
    assert store.reads == 0
    intent = _intent(since=time.time())
    _announce(path, intent)
    assert store.peek_intent(1) == intent
    assert store.peek_intent(1) == intent
    assert store.reads == 1  # read once per change
    assert store.peek_intent(2) is None  # recorded for version 1 only
    store.intent_path.chmod(0o644)  # a file this store refuses to read: None, not an error
    _announce(path, _intent(since=time.time() + 1))
    store.intent_path.chmod(0o644)
    assert store.peek_intent(1) is None
    assert FileTokenStore(path, watch=False).peek_intent(1) is None


def test_memory_peek_intent() -> None:
    store = MemoryTokenStore()
    assert store.peek_intent(1) is None  # empty
    store.save(TOKEN, replaces=None)
    intent = _intent(since=time.time())
    store.write_intent(intent, version=1)
    assert store.peek_intent(1) == intent
    assert store.peek_intent(2) is None
    store.save(TOKEN, replaces=1)
    store.write_intent(intent, version=2)
    assert store.peek_intent(1) is None  # recorded for version 2


# --- RedisTokenStore: intents on the change stream ---------------------------------------------


def _seeded(server: RedisServer, **options: Any) -> RedisTokenStore:
    store = RedisTokenStore(server.client(), "{k}", **options)
    with store.lock():
        store.save(TOKEN, replaces=None)
    return store


@pytest.mark.parametrize("cluster", [False, True])
def test_redis_intents_are_announced_to_the_watch(redis_server: RedisServer, cluster: bool) -> None:
    writer = _seeded(redis_server)
    writer._pipelined = not cluster  # what a redis.RedisCluster client gets
    redis_server.client().script_flush()  # a server that has not seen the scripts yet
    client = redis_server.client()
    reads: list[object] = []
    hmget = client.hmget

    def counted_hmget(*args: Any) -> Any:
        reads.append(args)
        return hmget(*args)

    client.hmget = counted_hmget  # type: ignore[method-assign,assignment]
    reader = RedisTokenStore(client, "{k}")
    assert reader.peek(1) is None  # starts the watch
    if not cluster:  # pipelined: the lock script loaded, the announcement's not yet
        with writer.try_lock(1):
            pass
    mine = _intent(since=time.time())
    with writer.try_lock(1, intent=mine) as held:
        assert held == StoredToken(TOKEN, 1)
        wait_for(lambda: reader.peek_intent(1) == mine)
        assert reader.peek_intent(2) is None
        assert reads == []  # the entry told the watch all it needed: no read of the hash
        writer.write_intent(None, version=1)
        wait_for(lambda: reader.peek_intent(1) is None)
        writer.write_intent(mine, version=1)
        wait_for(lambda: reader.peek_intent(1) == mine)
        newer = {**TOKEN, "access_token": "00DSECRETACCESS2"}
        assert writer.save(newer, replaces=1) == 2
    wait_for(lambda: reader.peek(1) is not None)
    assert reader.peek(1) == StoredToken(newer, 2)
    busy = RedisTokenStore(redis_server.client(), "{k}")
    busy._pipelined = not cluster
    redis_server.client().config_resetstat()
    with writer.lock(), busy.try_lock(2, intent=mine):
        pass  # the lock is busy: nothing recorded, nothing announced
    stats = redis_server.client().info("commandstats")
    assert "cmdstat_xadd" not in stats
    # The lock script (and, pipelined, the announcement behind it, which finds no intent
    # of its own), then the writer's release; unpipelined no announcement is tried at all.
    assert stats["cmdstat_evalsha"]["calls"] == (2 if cluster else 3)
    assert reader.peek_intent(1) is None  # version 2 is current: the intent was about 1
    assert reader.peek_intent(2) is None
    entries = redis_server.client().xrange(writer.changes_key) or []
    assert [entry_id for entry_id, _ in entries] == [b"2-0"]  # one entry kept, no token left


def test_a_new_watch_learns_of_a_newer_version_from_its_intent(redis_server: RedisServer) -> None:
    """The token's entry was replaced by an intent on the newer version before the watch
    read it: the watch reads the token from the hash."""
    writer = _seeded(redis_server)
    newer = {**TOKEN, "access_token": "00DSECRETACCESS2"}
    with writer.lock():
        writer.save(newer, replaces=1)
    mine = _intent(since=time.time())
    with writer.try_lock(2, intent=mine):
        entries = redis_server.client().xrange(writer.changes_key) or []
        assert [entry_id for entry_id, _ in entries] == [b"2-1"]
        reader = RedisTokenStore(redis_server.client(), "{k}")
        assert reader.peek(1) is None  # starts the watch from version 1
        wait_for(lambda: reader.peek(1) is not None)
        assert reader.peek(1) == StoredToken(newer, 2, mine)
        assert reader.peek_intent(2) == mine


def test_a_wait_for_a_newer_version_is_not_woken_by_intents(redis_server: RedisServer) -> None:
    """Without the watch, a waiting worker reads the stream itself: an intent on the version
    it holds neither ends its wait nor makes it read again and again."""
    writer = _seeded(redis_server)
    waiter = RedisTokenStore(redis_server.client(), "{k}", watch=False)
    redis_server.client().config_resetstat()
    waiting = InBackground(lambda: waiter.wait_for_change(1, 0.5))
    time.sleep(0.1)
    with writer.try_lock(1, intent=_intent(since=time.time())):
        writer.write_intent(None, version=1)
    assert waiting.join().error is None
    assert waiting.result is None  # no newer version came
    calls = redis_server.client().info("commandstats")["cmdstat_xread"]["calls"]
    assert calls <= 8  # blocks of 100 ms, and one wake per intent


def test_intents_are_recorded_when_an_acl_refuses_the_stream(redis_server: RedisServer) -> None:
    redis_server.client().acl_setuser(
        "worker", enabled=True, passwords=["+pw"], keys=["k", "k:lock"], commands=["+@all"]
    )
    url = f"redis://worker:pw@127.0.0.1:{redis_server.port}/0"
    store = RedisTokenStore(redis.Redis.from_url(url, socket_timeout=2), "k")
    with store.lock():
        store.save(TOKEN, replaces=None)
    mine = _intent(since=time.time())
    with store.try_lock(1, intent=mine) as held:
        assert held == StoredToken(TOKEN, 1)
        assert store.load() == StoredToken(TOKEN, 1, mine)
        store.write_intent(None, version=1)
        assert store.load() == StoredToken(TOKEN, 1)
    assert redis_server.client().exists(store.changes_key) == 0


def test_a_join_on_a_refresh_in_this_process_ends_when_it_does(
    sf_org: StandInOrg, tmp_path: Path
) -> None:
    transport = _transport(sf_org, FileTokenStore(tmp_path / "token.json"), overlap_wait=5)
    refresher = transport._core.refresher
    generation = refresher.current
    with refresher._lock:  # as a refresh of this generation holds it
        refresher._refreshing = generation
        assert refresher.begin() == (generation, True)
        joined = InBackground(lambda: refresher.join(generation))
        time.sleep(0.1)
        assert joined.running
        refresher._refreshing = None
    assert joined.join().result is generation
    assert refresher.begin() == (generation, False)
    assert refresher._lock.acquire(blocking=False)  # the join let go of it
    refresher._lock.release()


def test_a_garbled_intent_on_the_stream_is_logged_and_skipped(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    writer = _seeded(redis_server)
    reader = RedisTokenStore(redis_server.client(), "{k}")
    reader.peek(1)
    with caplog.at_level(logging.WARNING):
        redis_server.client().xadd(writer.changes_key, {"version": "1", "intent": "{"}, id="1-1")
        # A look reads the entry (the watch reads only when looked at).
        wait_for(lambda: reader.peek_intent(1) is None and "not written by" in caplog.text)
        assert reader.peek(1) is None
        mine = _intent(since=time.time())
        with writer.try_lock(1, intent=mine):
            wait_for(lambda: reader.peek_intent(1) == mine)  # the watch read on
    waiter = RedisTokenStore(redis_server.client(), "{k}", watch=False)
    redis_server.client().xadd(writer.changes_key, {"version": "1", "intent": "{"}, id="1-9")
    with pytest.raises(TokenStoreError, match="holds an intent not written by zeep-sfrefresh"):
        waiter.wait_for_change(0, 1.0)


def test_a_lock_script_refused_by_an_acl_is_a_store_error(redis_server: RedisServer) -> None:
    writer = _seeded(redis_server)
    redis_server.client().acl_setuser(
        "streamonly",
        enabled=True,
        passwords=["+pw"],
        keys=["{k}:changes"],
        commands=["+@all"],
    )
    url = f"redis://streamonly:pw@127.0.0.1:{redis_server.port}/0"
    store = RedisTokenStore(redis.Redis.from_url(url, socket_timeout=2), "{k}", watch=False)
    with (
        pytest.raises(TokenStoreError, match="could not lock"),
        store.try_lock(1, intent=_intent(since=time.time())),
    ):
        pass
    assert writer.load() == StoredToken(TOKEN, 1)  # nothing recorded
