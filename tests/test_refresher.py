"""The refresh core (zeep_sfrefresh._refresh) as workers and operators meet it: what is adopted
and what refused from a store, who is told about a new token, what a failed or unanswered
token request leaves for the other workers, and what the events report. Real parts only: the
stand-in org over sockets, file stores on disk, ``OAuth2Session`` grants."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import requests
import zeep
from conftest import Harness, InBackground, make_oauth, wait_for
from disk import file_size_limit

from zeep_sfrefresh import (
    PARTNER_WSDL,
    CircuitBreaker,
    ClientCredentials,
    FileTokenStore,
    ReauthorizationRequiredError,
    RefreshEvent,
    SalesforceTransport,
    SessionNotRefreshableError,
    StoredToken,
    TokenRefreshError,
    TokenStoreConflictError,
    TokenStoreError,
)
from zeep_sfrefresh._grants import SessionGrant
from zeep_sfrefresh._refresh import Plan, Refresher, _wait_for_change, plan_request
from zeep_sfrefresh._stores import RefreshIntent
from zeep_sfrefresh._tokens import Token, fingerprint
from zeep_sfrefresh.testing import StandInOrg

Build = Callable[..., Harness]


def _seeded(path: Path, token: dict[str, Any]) -> FileTokenStore:
    store = FileTokenStore(path)
    with store.lock():
        store.save(token, replaces=None)
    return store


def _held_at_the_token_endpoint(
    h: Harness, requests: int = 1
) -> tuple[threading.Event, InBackground]:
    """Start a call that meets the expiry in the background; return once the org holds its
    token request (the org's ``requests``-th), with the event that lets the org answer."""
    release = h.org.hold_token_requests()
    caller = InBackground(h.client.service.getServerTimestamp)
    wait_for(lambda: h.org.token_requests == requests)
    return release, caller


def _loaded(path: Path) -> StoredToken:
    stored = FileTokenStore(path).load()
    assert stored is not None
    return stored


@contextmanager
def _refresh_in_flight(org: StandInOrg, refresh_token: str) -> Iterator[None]:
    """Another worker's token request with ``refresh_token``, held at the token endpoint for
    the block: Salesforce refuses an overlapping one as "already being processed"."""
    release = org.hold_token_requests()
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": org.client_id,
        "client_secret": org.client_secret,
    }
    other = threading.Thread(
        target=requests.post, args=(org.token_url,), kwargs={"data": form, "timeout": 30}
    )
    other.start()
    try:
        wait_for(lambda: org.token_requests == 1)
        yield
    finally:
        release.set()
        other.join(30)


# --- what a store may hand a worker ------------------------------------------------------------


@pytest.mark.parametrize("adopted", ["at-start", "at-expiry"])
def test_a_store_rolled_back_is_refused_by_a_worker_that_only_adopted(
    harness: Build, tmp_path: Path, adopted: str
) -> None:
    path = tmp_path / "token.json"
    a = harness(store=FileTokenStore(path))
    snapshot = path.read_bytes()  # version 1
    b = harness(store=FileTokenStore(path)) if adopted == "at-expiry" else None
    a.org.expire_all_sessions()
    a.client.service.getServerTimestamp()  # a refreshes: version 2
    if b is None:
        b = harness(store=FileTokenStore(path))  # starts on version 2
    else:
        b.client.service.getServerTimestamp()  # meets the expiry, adopts version 2
    assert b.transport.token.access_token == a.transport.token.access_token
    path.write_bytes(snapshot)  # an old backup restored: its refresh token may be retired
    a.org.expire_all_sessions()
    with pytest.raises(TokenStoreError, match="older than version 2"):
        b.client.service.getServerTimestamp()
    assert a.org.token_requests == 1


@pytest.mark.parametrize("when", ["at-start", "at-expiry"])
def test_an_unusable_token_in_the_store_is_refused(
    harness: Build, sf_org: StandInOrg, tmp_path: Path, when: str
) -> None:
    path = tmp_path / "token.json"
    unusable = {
        "access_token": "00Dx!UNUSABLE",
        "refresh_token": "5Aep!UNUSABLE",
        "instance_url": "ftp://files.example.com",
    }
    if when == "at-start":
        _seeded(path, unusable)
        with pytest.raises(TokenStoreError, match="unusable token") as info:
            harness(store=FileTokenStore(path))
    else:
        h = harness(store=FileTokenStore(path))
        store = FileTokenStore(path)
        with store.lock():
            store.save(unusable, replaces=1)  # another writer, a broken one
        sf_org.expire_all_sessions()
        with pytest.raises(TokenStoreError, match="unusable token") as info:
            h.client.service.getServerTimestamp()
    assert "UNUSABLE" not in str(info.value)
    assert sf_org.token_requests == 0


@pytest.mark.parametrize(
    ("state", "names_stored", "seed_refresh", "seed_wins"),
    [
        ("spent", True, "new", True),
        ("spent", True, "same", False),  # a restarted worker's old token brings nothing new
        ("spent", False, "new", False),  # the spent one is not the stored one
        ("unanswered", True, "new", False),
        ("sending", True, "new", False),
    ],
)
def test_a_starting_worker_replaces_the_stored_token_only_when_its_refresh_token_is_spent(
    harness: Build,
    sf_org: StandInOrg,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    state: Any,
    names_stored: bool,
    seed_refresh: str,
    seed_wins: bool,
) -> None:
    path = tmp_path / "token.json"
    stored = sf_org.issue_token()
    store = _seeded(path, stored)
    named = stored["refresh_token"] if names_stored else sf_org.issue_token()["refresh_token"]
    intent = RefreshIntent(fingerprint(named), state, 1, "elsewhere/1/x", time.time(), "refused")
    with store.lock():
        store.write_intent(intent, version=1)
    seed = sf_org.issue_token()
    if seed_refresh == "same":
        seed["refresh_token"] = stored["refresh_token"]
    snapshot = path.read_bytes()
    caplog.set_level(logging.INFO, logger="zeep_sfrefresh")
    h = harness(token=seed, store=FileTokenStore(path))
    winner = seed if seed_wins else stored
    assert h.transport.token.access_token == winner["access_token"]
    assert _loaded(path).token["access_token"] == winner["access_token"]
    assert _loaded(path).version == (2 if seed_wins else 1)
    replaced = "the store's refresh token is spent; storing the session's token"
    assert (replaced in caplog.messages) is seed_wins
    if seed_wins:  # the spent token's snapshot restored: refused, as any older version
        path.write_bytes(snapshot)
        sf_org.expire_all_sessions()
        with pytest.raises(TokenStoreError, match="older than version 2"):
            h.client.service.getServerTimestamp()


# --- who is told about a new token -------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "seed", "told"),
    [
        (None, "session", False),  # the store is seeded with the session's own token
        ("session", "session", False),  # the store holds the token the session has
        ("other", "session", True),
        ("other", None, True),  # a credential object has no token of its own
    ],
)
def test_on_change_is_told_only_about_a_token_it_does_not_have(
    sf_org: StandInOrg, tmp_path: Path, stored: str | None, seed: str | None, told: bool
) -> None:
    tokens = {"session": sf_org.issue_token(), "other": sf_org.issue_token()}
    path = tmp_path / "token.json"
    if stored is not None:
        _seeded(path, tokens[stored])
    changes: list[Token] = []
    refresher = Refresher(
        SessionGrant(make_oauth(sf_org, tokens["session"], [])),
        FileTokenStore(path),
        None if seed is None else Token(tokens[seed]),
        on_change=changes.append,
    )
    expected = [tokens["other"]["access_token"]] if told else []
    assert [token.access_token for token in changes] == expected
    sf_org.expire_all_sessions()
    fresh = refresher.refresh_after(refresher.current)  # a token refreshed here: told
    assert [token.access_token for token in changes] == [*expected, fresh.token.access_token]


def test_a_caller_whose_token_was_already_replaced_touches_neither_store_nor_endpoint(
    sf_org: StandInOrg, tmp_path: Path
) -> None:
    path = tmp_path / "token.json"
    token = sf_org.issue_token()
    refresher = Refresher(
        SessionGrant(make_oauth(sf_org, token, [])), FileTokenStore(path), Token(token)
    )
    old = refresher.current
    sf_org.expire_all_sessions()
    new = refresher.refresh_after(old)
    path.write_text("{ not a token file")  # any read of the store would now fail
    assert refresher.refresh_after(old) is new  # a thread that sent the old token, late
    assert asyncio.run(refresher.arefresh_after(old)) is new
    assert sf_org.token_requests == 1
    with pytest.raises(TokenStoreError):  # the refresh of the newer token fails...
        refresher.refresh_after(new)
    # ...which is no answer for a caller of the older one: it gets the current token.
    assert refresher.refresh_after(old) is refresher.current
    assert refresher.current.token is new.token


def test_callers_of_a_failed_refresh_share_its_failure_and_later_calls_try_again(
    sf_org: StandInOrg, tmp_path: Path
) -> None:
    token = sf_org.issue_token()
    refresher = Refresher(
        SessionGrant(make_oauth(sf_org, token, [])),
        FileTokenStore(tmp_path / "token.json"),
        Token(token),
    )
    old = refresher.current  # two calls sent this session; both met the expiry
    sf_org.expire_all_sessions()
    sf_org.token_failure = "html_500"
    with pytest.raises(TokenRefreshError) as first:
        refresher.refresh_after(old)
    with pytest.raises(TokenRefreshError) as second:
        refresher.refresh_after(old)  # the other call: the same failure, no second request
    assert second.value is not first.value
    assert str(second.value) == str(first.value)
    assert sf_org.token_requests == 1
    sf_org.token_failure = None
    later = refresher.current  # a call made after the failure sends the same token again...
    assert later.token is old.token
    fresh = refresher.refresh_after(later)  # ...and its expiry is worth another request
    assert fresh.token.access_token != token["access_token"]
    assert sf_org.token_requests == 2


def test_a_store_version_that_brings_no_new_session_does_not_stop_a_refresh(
    harness: Build, tmp_path: Path
) -> None:
    path = tmp_path / "token.json"
    a, b = harness(store=FileTokenStore(path)), harness(store=FileTokenStore(path))
    b.transport.use_token(a.issued)  # the token every worker already holds, stored anew
    assert _loaded(path).version == 2
    a.org.expire_all_sessions()
    assert a.client.service.getServerTimestamp() is not None  # refreshed, not "adopted"
    assert a.org.token_requests == 1
    assert _loaded(path).version == 3
    a.org.expire_all_sessions()
    a.client.service.getServerTimestamp()
    assert (_loaded(path).version, a.org.token_requests) == (4, 2)  # one write per token


# --- what a failed or unanswered token request leaves for the other workers ---------------------


@pytest.mark.parametrize("failure", ["html_500", "rate_limited_429", "unavailable_503"])
def test_after_an_answered_failure_another_worker_refreshes_without_waiting(
    harness: Build, tmp_path: Path, failure: str
) -> None:
    path = tmp_path / "token.json"
    a = harness(store=FileTokenStore(path))
    b = harness(store=FileTokenStore(path), overlap_wait=0.3)
    a.org.expire_all_sessions()
    a.org.token_failure = failure
    with pytest.raises(TokenRefreshError) as info:
        a.client.service.getServerTimestamp()
    assert not info.value.unanswered
    assert _loaded(path).intent is None  # no request with the refresh token is in flight
    a.org.token_failure = None
    if info.value.retry_after is not None:  # the endpoint asked this worker to wait
        with pytest.raises(TokenRefreshError, match="asked to wait") as waiting:
            a.client.service.getServerTimestamp()
        assert waiting.value.retry_after is not None
        assert 0 < waiting.value.retry_after <= info.value.retry_after
        assert a.org.token_requests == 1
    assert b.client.service.getServerTimestamp() is not None
    assert a.org.token_requests == 2


@pytest.mark.parametrize("second_answered", [True, False])
def test_workers_share_the_count_of_unanswered_token_requests(
    harness: Build, tmp_path: Path, second_answered: bool
) -> None:
    path = tmp_path / "token.json"
    a = harness(store=FileTokenStore(path))
    b = harness(store=FileTokenStore(path), overlap_wait=0.3)
    a.org.expire_all_sessions()
    a.org.token_failure = "drop_after_issue"  # issued, never answered
    with pytest.raises(TokenRefreshError) as info:
        a.client.service.getServerTimestamp()
    assert info.value.unanswered
    assert not isinstance(info.value, ReauthorizationRequiredError)
    if second_answered:
        a.org.token_failure = None
        assert b.client.service.getServerTimestamp() is not None  # the one further attempt
        assert a.org.token_requests == 2
        return
    with pytest.raises(
        ReauthorizationRequiredError, match="2 token requests with it got no answer"
    ):
        b.client.service.getServerTimestamp()  # the one further attempt, unanswered too
    with pytest.raises(
        ReauthorizationRequiredError, match="2 token requests with it got no answer"
    ):
        a.client.service.getServerTimestamp()  # spent for every worker now
    assert a.org.token_requests == 2


def test_a_refusal_for_good_keeps_the_token_endpoints_words(harness: Build, tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    a = harness(store=FileTokenStore(path))
    b = harness(store=FileTokenStore(path))
    a.org.expire_all_sessions()
    a.org.token_failure = "invalid_grant"
    with pytest.raises(ReauthorizationRequiredError) as mine:
        a.client.service.getServerTimestamp()
    error = mine.value
    assert (error.error, error.status_code) == ("invalid_grant", 400)
    assert error.description == "expired access/refresh token"
    assert "(invalid_grant: expired access/refresh token)" in str(error)
    with pytest.raises(ReauthorizationRequiredError) as again:
        a.client.service.getServerTimestamp()  # never sent again: the same error, told again
    assert (again.value.error, again.value.status_code) == ("invalid_grant", 400)
    with pytest.raises(ReauthorizationRequiredError) as theirs:
        b.client.service.getServerTimestamp()  # learns it from the store
    assert "(invalid_grant: expired access/refresh token)" in str(theirs.value)
    assert a.org.token_requests == 1


@pytest.mark.parametrize(
    ("failure", "spent_at_once"), [("invalid_grant", True), ("drop_after_issue", False)]
)
def test_a_token_handed_over_again_is_tried_afresh(
    harness: Build, failure: str, spent_at_once: bool
) -> None:
    # What was learnt about a refresh token (refused for good; unanswered once) is forgotten
    # when the application hands a token over: an administrator may have fixed the cause.
    h = harness()
    h.org.expire_all_sessions()
    h.org.token_failure = failure
    for requests_made in (1, 2):
        with pytest.raises(TokenRefreshError) as info:
            h.client.service.getServerTimestamp()
        assert isinstance(info.value, ReauthorizationRequiredError) is spent_at_once
        assert h.org.token_requests == requests_made
        h.transport.use_token(h.issued)


class _CountingStore:
    """A store of one's own with the four required methods only, counting its reads."""

    def __init__(self, path: Path) -> None:
        inner = FileTokenStore(path)
        self.lock = inner.lock
        self.save = inner.save
        self.write_intent = inner.write_intent
        self._load = inner.load
        self.loads = 0

    def load(self) -> StoredToken | None:
        self.loads += 1
        return self._load()


class _CountingFileStore(FileTokenStore):
    loads = 0

    def load(self) -> StoredToken | None:
        self.loads += 1
        return super().load()


@pytest.mark.parametrize(("kind", "most"), [("own", 16), ("file", 32)])
def test_waiting_for_an_overlapping_refresh_looks_at_the_store_less_and_less_often(
    harness: Build, tmp_path: Path, kind: str, most: int
) -> None:
    path = tmp_path / "token.json"
    store = _CountingStore(path) if kind == "own" else _CountingFileStore(path)
    h = harness(store=store, overlap_wait=1.0)
    h.org.expire_all_sessions()
    with _refresh_in_flight(h.org, h.issued["refresh_token"]):
        store.loads = 0
        with pytest.raises(TokenRefreshError, match="did not reach the store"):
            h.client.service.getServerTimestamp()
    # Two reads to decide, then looks from 50 ms apart, each pause twice the last, for the
    # second it waits: about eight (the file store reads once more per pause, then only
    # stats the file). Looking at a fixed short interval would be dozens; one long pause
    # would notice the other worker's token late.
    assert 6 <= store.loads <= most, store.loads
    stored = store.load()
    assert stored is not None
    assert stored.intent is None  # nothing left that would make other workers wait for it


class _TryLockOnlyStore(_CountingStore):
    """A store of one's own that can try its lock but cannot say when the token changes."""

    lock_wait = 1.0  # read by the refresher when a store has it

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.try_lock = FileTokenStore(path).try_lock


@pytest.mark.parametrize(("kind", "fewest", "most"), [("file", 8, 30), ("try-lock-only", 10, 60)])
def test_waiting_for_a_lock_held_without_a_token_looks_at_the_store_less_and_less_often(
    harness: Build, tmp_path: Path, kind: str, fewest: int, most: int
) -> None:
    path = tmp_path / "token.json"
    store: _CountingFileStore | _TryLockOnlyStore = (
        _CountingFileStore(path, lock_wait=1.0) if kind == "file" else _TryLockOnlyStore(path)
    )
    h = harness(store=store)
    h.org.expire_all_sessions()
    with FileTokenStore(path).lock():  # another worker, stuck, never storing a token
        store.loads = 0
        with pytest.raises(TokenStoreError, match="could not take the lock"):
            h.client.service.getServerTimestamp()
    # The file store: a look (and a read by wait_for_change) after 50 ms, then 100 ms...
    # for the second it may wait: about a dozen reads. Without wait_for_change, pauses start
    # at the store's poll_interval (2 ms) and double up to 50 ms: about two dozen.
    assert fewest <= store.loads <= most, store.loads
    assert h.org.token_requests == 0


class _SpentJustBeforeTheLock(FileTokenStore):
    """Another worker's refresh with the stored refresh token was refused for good between
    this worker's look at the store and its lock: only what the store holds under the lock
    says so. ``try_lock`` yields that read, or, like a store of one's own may, just True."""

    def __init__(self, path: Path, *, hands_over_its_read: bool) -> None:
        super().__init__(path)
        self.hands_over_its_read = hands_over_its_read

    @contextmanager
    def try_lock(self, version: int) -> Iterator[StoredToken | bool | None]:  # type: ignore[override]
        with super().try_lock(version) as held:
            if held is False:
                yield False
                return
            spent = fingerprint(held.token["refresh_token"])
            why = "invalid_grant: expired access/refresh token"
            self.write_intent(
                RefreshIntent(spent, "spent", 0, "other/1/1", time.time(), why), version=version
            )
            yield self.load() if self.hands_over_its_read else True


@pytest.mark.parametrize("hands_over_its_read", [True, False])
def test_the_refresh_is_decided_on_what_the_store_holds_under_the_lock(
    harness: Build, tmp_path: Path, hands_over_its_read: bool
) -> None:
    store = _SpentJustBeforeTheLock(
        tmp_path / "token.json", hands_over_its_read=hands_over_its_read
    )
    h = harness(store=store)
    requests_made = h.org.token_requests
    h.org.expire_all_sessions()
    with pytest.raises(ReauthorizationRequiredError, match="expired access/refresh token"):
        h.client.service.getServerTimestamp()
    assert h.org.token_requests == requests_made  # the spent refresh token was not sent


class _PauseRecordingFileStore(FileTokenStore):
    """A file store that records how long the refresher asks it to wait for a change."""

    def __init__(self, path: Path, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.waits: list[float] = []

    def wait_for_change(self, version: int, timeout: float) -> None:
        self.waits.append(timeout)
        super().wait_for_change(version, timeout)


def test_a_busy_lock_is_tried_again_after_50_ms_then_twice_as_long_each_time(
    harness: Build, tmp_path: Path
) -> None:
    # The store says when the token changes, so a try of the lock is only for a holder that
    # ended without a token: 50, 100, 200, 400 ms..., each pause cut at lock_wait.
    path = tmp_path / "token.json"
    store = _PauseRecordingFileStore(path, lock_wait=1.0)
    h = harness(store=store)
    h.org.expire_all_sessions()
    with (
        FileTokenStore(path).lock(),  # another worker, stuck, never storing a token
        pytest.raises(TokenStoreError, match="could not take the lock"),
    ):
        h.client.service.getServerTimestamp()
    assert store.waits[:4] == pytest.approx([0.05, 0.1, 0.2, 0.4])
    assert sum(store.waits) == pytest.approx(1.0, abs=0.1)  # then the rest of lock_wait


class _TimedTryLockStore(_TryLockOnlyStore):
    """A try-lock-only store with a poll interval of its own, noting when it is read."""

    poll_interval = 0.3

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.read_at: list[float] = []

    def load(self) -> StoredToken | None:
        self.read_at.append(time.monotonic())
        return super().load()


def test_without_wait_for_change_the_first_pause_is_the_store_s_poll_interval(
    harness: Build, tmp_path: Path
) -> None:
    path = tmp_path / "token.json"
    store = _TimedTryLockStore(path)
    h = harness(store=store)
    h.org.expire_all_sessions()
    with FileTokenStore(path).lock():
        store.read_at.clear()
        with pytest.raises(TokenStoreError, match="could not take the lock"):
            h.client.service.getServerTimestamp()
    # A sleep never ends early: the second look comes poll_interval after the first at
    # least; later pauses are MAX_POLL_INTERVAL (50 ms) at most, so the rest of lock_wait's
    # second still gets several looks.
    gaps = [b - a for a, b in zip(store.read_at, store.read_at[1:], strict=False)]
    assert gaps[0] >= 0.3
    assert len(gaps) >= 8


# --- what the events and logs report -----------------------------------------------------------


def test_event_durations_span_the_refresh_they_report(harness: Build) -> None:
    events: list[RefreshEvent] = []
    h = harness(listener=events.append, circuit_breaker=CircuitBreaker(threshold=1, cooldown=600))
    h.org.token_delay = 0.3  # the token endpoint takes its time, refusals too

    def timed(call: Callable[[], object]) -> float:
        started = time.monotonic()
        with suppress(TokenRefreshError, SessionNotRefreshableError):
            call()
        return time.monotonic() - started

    h.org.instance_url = h.org.url.replace("127.0.0.1", "localhost")
    h.org.expire_all_sessions()
    elapsed = timed(h.client.service.getServerTimestamp)
    h.org.token_failure = "html_500"
    h.org.expire_all_sessions()
    elapsed_failed = timed(h.client.service.getServerTimestamp)
    assert [e.kind for e in events] == ["refreshed", "instance_moved", "failed"]
    for event, spent in zip(events, (elapsed, elapsed, elapsed_failed), strict=True):
        assert 0.3 <= event.duration <= spent, (event.kind, event.duration, spent)
    h.org.token_failure = None
    h.org.fail_next_soap("INVALID_SESSION_ID", count=2)
    timed(h.client.service.getServerTimestamp)
    assert [e.kind for e in events[3:]] == ["refreshed", "not_refreshable", "circuit_open"]
    assert [e.duration for e in events[4:]] == [0.0, 0.0]  # verdicts, not refreshes


def test_refreshes_and_adoptions_log_fingerprints_and_no_errors(
    harness: Build, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="zeep_sfrefresh")
    path = tmp_path / "token.json"
    a, b = harness(store=FileTokenStore(path)), harness(store=FileTokenStore(path))
    a.org.expire_all_sessions()
    a.client.service.getServerTimestamp()
    b.client.service.getServerTimestamp()
    new = a.transport.token.access_token
    messages = [r.getMessage() for r in caplog.records]
    host = a.org.url.removeprefix("http://")
    assert messages.count(f"INVALID_SESSION_ID from {host}; refreshing the session") == 1
    assert f"adopted the token another worker refreshed: {fingerprint(new)}" in messages
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    a.assert_no_secrets(caplog.text)
    assert new not in caplog.text


# --- the decision about a refresh token, as a table -----------------------------------------------

_FP, _OTHER_FP = "sha256:0123abcd", "sha256:4567ef01"
_ME, _THEM = "here/1/aaaa", "there/2/bbbb"


def _intent(state: Any, *, fp: str = _FP, holder: str = _THEM, attempts: int = 1) -> RefreshIntent:
    reason = "invalid_grant: expired access/refresh token" if state == "spent" else ""
    return RefreshIntent(fp, state, attempts, holder, 1700000000.0, reason)


@pytest.mark.parametrize(
    ("intent", "unanswered", "expected"),
    [
        (None, 0, Plan(attempt=1)),
        (None, 1, Plan(attempt=2)),  # one of ours went unanswered: the one further attempt
        (None, 2, Plan(spent="2 token requests with it got no answer")),
        (_intent("spent"), 0, Plan(spent="invalid_grant: expired access/refresh token")),
        (
            RefreshIntent(_FP, "spent", 0, _THEM, 1700000000.0),
            0,
            Plan(spent="marked spent in the store"),
        ),
        (_intent("sending"), 0, Plan(wait_for=_intent("sending"))),  # may be in flight
        (_intent("sending", holder=_ME), 0, Plan(attempt=2)),  # ours, and it ended
        (_intent("unanswered"), 0, Plan(attempt=2)),  # another worker's went unanswered
        (
            _intent("unanswered", attempts=2),
            0,
            Plan(spent="2 token requests with it got no answer"),
        ),
        (_intent("unanswered"), 2, Plan(spent="2 token requests with it got no answer")),
        (_intent("spent", fp=_OTHER_FP), 0, Plan(attempt=1)),  # about another refresh token
        (_intent("sending", fp=_OTHER_FP), 1, Plan(attempt=2)),
    ],
)
def test_when_a_refresh_token_may_be_sent(
    intent: RefreshIntent | None, unanswered: int, expected: Plan
) -> None:
    assert plan_request(intent, _FP, holder=_ME, unanswered=unanswered) == expected


# --- other workers' refreshes that never end, or end without a stored token --------------------


def _waits(caplog: pytest.LogCaptureFixture) -> int:
    text = "another refresh of this token may be running; waiting for its token"
    return sum(record.getMessage() == text for record in list(caplog.records))


@pytest.mark.parametrize("changes", [0, 2, 3])
def test_a_worker_waits_out_other_workers_refreshes_for_three_rounds_at_most(
    harness: Build, tmp_path: Path, caplog: pytest.LogCaptureFixture, changes: int
) -> None:
    """Workers that took over the refresh token and lost their locks mid-request (their
    intents say "sending"): this worker waits for each instead of sending the token again;
    an intent that stays put is spent; a store that keeps changing is given up on."""
    caplog.set_level(logging.INFO, logger="zeep_sfrefresh")
    path = tmp_path / "token.json"
    # watch=False: the call goes out and meets the expiry (a join is tested on its own).
    h = harness(store=FileTokenStore(path, watch=False), overlap_wait=0.5 if changes == 0 else 20)
    other = FileTokenStore(path)
    fp = fingerprint(h.issued["refresh_token"])
    seen = [RefreshIntent(fp, "sending", 1, "worker/1/a", time.time())]
    if changes:
        seen.append(RefreshIntent(fp, "sending", 1, "worker/2/b", time.time()))
    if changes == 3:
        seen.append(RefreshIntent(fp, "sending", 1, "worker/3/c", time.time()))
    if changes:  # and at last one of them went unanswered: the one further attempt is ours
        seen.append(RefreshIntent(fp, "unanswered", 1, "worker/3/c", time.time()))
    with other.lock():
        other.write_intent(seen[0], version=1)
    h.org.expire_all_sessions()
    caller = InBackground(h.client.service.getServerTimestamp)
    for rounds, intent in enumerate(seen[1:], start=1):

        def waiting(rounds: int = rounds) -> bool:
            return _waits(caplog) >= rounds or not caller.running

        wait_for(waiting)  # this worker waits for the store to change: change it
        with other.lock():
            other.write_intent(intent, version=1)
    caller.join()
    if changes == 2:
        assert caller.error is None, caller.error
        assert h.org.token_requests == 1
        return
    assert isinstance(caller.error, TokenRefreshError), caller.error
    assert h.org.token_requests == 0
    assert _waits(caplog) == min(len(seen), 3)
    if changes == 0:
        assert isinstance(caller.error, ReauthorizationRequiredError)
        assert "used by a refresh of worker/1/a that never stored its result" in str(caller.error)
        assert _loaded(path).intent is not None
        assert _loaded(path).intent.state == "spent"  # type: ignore[union-attr]
    else:
        assert "other workers' refreshes kept changing the store" in str(caller.error)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"refreshing the Salesforce session failed: {caller.error}"]


@pytest.mark.parametrize("own_store", [False, True], ids=["file-store", "own-store"])
@pytest.mark.parametrize("then", ["store-moved-on", "token-handed-over", "store-unchanged"])
def test_a_token_the_disk_would_not_take_is_never_lost_nor_sent_twice(
    harness: Build, tmp_path: Path, caplog: pytest.LogCaptureFixture, then: str, own_store: bool
) -> None:
    """With the file store, and with a store of one's own, which the refresher reads before
    it takes the lock (no ``try_lock``)."""
    caplog.set_level(logging.INFO, logger="zeep_sfrefresh")
    path = tmp_path / "token.json"
    a = harness(store=_CountingStore(path) if own_store else FileTokenStore(path))
    b = harness(store=FileTokenStore(path), overlap_wait=0.3)
    a.org.rotation = True
    a.org.expire_all_sessions()
    release, caller = _held_at_the_token_endpoint(a)  # its intent is written; the disk fills up
    with file_size_limit(16):
        release.set()
        caller.join()
    assert isinstance(caller.error, TokenStoreError), caller.error
    assert "File too large" in str(caller.error)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        f"the new token could not be stored ({caller.error}); it is in use here and the next "
        "refresh stores it first"
    ]
    mine = a.transport.token  # in use here, not in the store
    assert mine.access_token != a.issued["access_token"]
    assert a.saved == [mine.as_dict()]
    # Another worker must not send the refresh token a used: with rotation that revokes all.
    with pytest.raises(ReauthorizationRequiredError, match="never stored its result"):
        b.client.service.getServerTimestamp()
    assert (a.org.token_requests, a.org.family_revocations) == (1, 0)
    if then == "store-moved-on":
        a.org.expire_all_sessions()
        operator = a.org.issue_token()  # a new authorisation, written by an operator
        with FileTokenStore(path).lock():
            FileTokenStore(path).save(operator, replaces=1)
        assert a.client.service.getServerTimestamp() is not None
        assert a.transport.token.access_token == operator["access_token"]  # the store's wins
        assert _loaded(path).token["access_token"] == operator["access_token"]
        assert any("the store moved on (version 2)" in m for m in caplog.messages)
        assert a.org.token_requests == 1
        a.org.expire_all_sessions()
        a.client.service.getServerTimestamp()  # its own token is forgotten: nothing to store
        assert (_loaded(path).version, a.org.token_requests) == (3, 2)
        return
    if then == "token-handed-over":
        a.transport.use_token(a.org.issue_token())  # stored: version 2
        a.org.expire_all_sessions()
        a.client.service.getServerTimestamp()
        assert (_loaded(path).version, a.org.token_requests) == (3, 2)
        return
    a.org.expire_all_sessions()
    a.org.token_failure = "html_500"
    with pytest.raises(TokenRefreshError):  # stores its token first, then the request fails
        a.client.service.getServerTimestamp()
    assert "stored the token whose earlier write failed (version 2)" in caplog.messages
    assert _loaded(path).token["access_token"] == mine.access_token
    a.org.token_failure = None
    assert a.client.service.getServerTimestamp() is not None  # refreshes: stored once more
    assert _loaded(path).version == 3
    assert b.client.service.getServerTimestamp() is not None  # adopts
    assert b.transport.token.access_token == a.transport.token.access_token
    assert (a.org.token_requests, a.org.family_revocations) == (3, 0)


def test_a_rollback_is_refused_even_while_this_workers_token_is_unstored(
    harness: Build, tmp_path: Path
) -> None:
    path = tmp_path / "token.json"
    h = harness(store=FileTokenStore(path))
    snapshot = path.read_bytes()  # version 1
    h.org.expire_all_sessions()
    h.client.service.getServerTimestamp()  # version 2
    h.org.expire_all_sessions()
    release, caller = _held_at_the_token_endpoint(h, requests=2)
    with file_size_limit(16):  # the disk fills up: the third token is not stored
        release.set()
        caller.join()
    assert isinstance(caller.error, TokenStoreError), caller.error
    path.write_bytes(snapshot)  # and then an old backup comes back
    h.org.expire_all_sessions()
    with pytest.raises(TokenStoreError, match="older than version 2"):
        h.client.service.getServerTimestamp()
    assert h.org.token_requests == 2


def test_a_token_another_writer_stored_during_a_refresh_wins(
    harness: Build, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A writer that does not wait for the lock (an operator's script; a Redis lease that
    # ran out): this worker's refresh must not overwrite what it stored.
    caplog.set_level(logging.INFO, logger="zeep_sfrefresh")
    path = tmp_path / "token.json"
    h = harness(store=FileTokenStore(path))
    h.org.expire_all_sessions()
    release, caller = _held_at_the_token_endpoint(h)
    theirs = h.org.issue_token()
    FileTokenStore(path).save(theirs, replaces=1)
    release.set()
    assert isinstance(caller.join().error, TokenStoreConflictError), caller.error
    mine = h.transport.token.access_token  # in use here for now, not stored
    assert mine not in (theirs["access_token"], h.issued["access_token"])
    assert _loaded(path).token["access_token"] == theirs["access_token"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [f"a newer token reached the store during this refresh: {caller.error}"]
    h.org.expire_session(mine)
    assert h.client.service.getServerTimestamp() is not None  # the store's token, adopted
    assert h.transport.token.access_token == theirs["access_token"]
    assert h.org.token_requests == 1


def test_a_failure_the_store_cannot_record_is_still_the_endpoints_failure(
    harness: Build, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="zeep_sfrefresh")
    path = tmp_path / "token.json"
    h = harness(store=FileTokenStore(path))
    h.org.expire_all_sessions()
    release, caller = _held_at_the_token_endpoint(h)
    h.org.token_failure = "html_500"
    with file_size_limit(16):
        release.set()
        caller.join()
    assert isinstance(caller.error, TokenRefreshError), caller.error
    assert caller.error.status_code == 500
    assert any(
        m.startswith("could not record the token request's outcome in the store: cannot write")
        for m in caplog.messages
    )


@pytest.mark.parametrize("way", ["read-under-the-lock", "after-an-overlap"])
def test_a_token_another_worker_stored_is_reported_as_adopted(
    harness: Build, tmp_path: Path, way: str
) -> None:
    events: list[RefreshEvent] = []
    path = tmp_path / "token.json"
    store = _CountingStore(path) if way == "read-under-the-lock" else FileTokenStore(path)
    h = harness(store=store, listener=events.append)
    h.org.expire_all_sessions()
    other = FileTokenStore(path)
    theirs = h.org.issue_token()
    if way == "read-under-the-lock":
        with other.lock():  # another worker refreshing: this one queues on the lock
            caller = InBackground(h.client.service.getServerTimestamp)
            wait_for(lambda: h.org.soap_posts == 1)
            time.sleep(0.1)
            other.save(theirs, replaces=1)
    else:
        with _refresh_in_flight(h.org, h.issued["refresh_token"]):
            caller = InBackground(h.client.service.getServerTimestamp)
            wait_for(lambda: h.org.overlap_rejections == 1)  # refused: waits for the store
            with other.lock():
                other.save(theirs, replaces=1)
    assert caller.join().error is None, caller.error
    assert h.transport.token.access_token == theirs["access_token"]
    assert [event.kind for event in events] == ["adopted"]


def test_only_a_session_rejected_at_once_counts_toward_the_breaker(
    sf_org: StandInOrg, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[RefreshEvent] = []
    token = sf_org.issue_token()
    refresher = Refresher(
        SessionGrant(make_oauth(sf_org, token, [])),
        FileTokenStore(tmp_path / "token.json"),
        Token(token),
        listener=events.append,
        breaker=CircuitBreaker(threshold=2, cooldown=600),
    )
    first = refresher.current
    sf_org.expire_all_sessions()
    second = refresher.refresh_after(first)
    refresher.judge(second, usable=True)  # a call with it worked
    refresher.judge(first, usable=False)  # a late call's rejection of a replaced session
    refresher.judge(second, usable=False)  # it expired after working: nothing unusual
    assert [e.kind for e in events] == ["refreshed"]
    third = refresher.refresh_after(second)
    refresher.judge(third, usable=False)  # rejected at once: one
    refresher.judge(third, usable=False)  # the same session, told twice: still one
    fourth = refresher.refresh_after(third)
    caplog.set_level(logging.INFO, logger="zeep_sfrefresh")
    refresher.judge(fourth, usable=False)  # two in a row: open
    assert [e.kind for e in events] == [
        "refreshed",
        "refreshed",
        "not_refreshable",
        "refreshed",
        "not_refreshable",
        "circuit_open",
    ]
    rejected = "Salesforce rejected a freshly refreshed session (INVALID_SESSION_ID)"
    assert [e.error for e in events[2:]] == [rejected, None, rejected, rejected]
    assert "2 refreshed sessions in a row were rejected at once; no token requests for 600 s" in (
        caplog.messages
    )
    with pytest.raises(SessionNotRefreshableError) as info:
        refresher.refresh_after(fourth)
    assert str(info.value).startswith(
        "not refreshing: the last refreshed sessions were rejected at once"
    )
    assert sf_org.token_requests == 3


@pytest.mark.parametrize("failure", ["refused", "unanswered"])
def test_a_credential_grant_that_fails_is_asked_again_next_time(
    sf_org: StandInOrg, tmp_path: Path, failure: str
) -> None:
    # A credential object (here client credentials) holds no refresh token: nothing can be
    # spent, and no intent names one; a fixed configuration works at the next expiry.
    path = tmp_path / "token.json"
    credential = ClientCredentials(sf_org.client_id, sf_org.client_secret, domain_url=sf_org.url)
    transport = SalesforceTransport(credential, store=FileTokenStore(path))
    client = zeep.Client(PARTNER_WSDL, transport=transport)
    sf_org.expire_all_sessions()
    if failure == "refused":
        sf_org.client_credentials_user = None  # the admin removed the app's Run As user
    else:
        sf_org.token_failure = "drop_after_issue"
    for _ in range(2):
        with pytest.raises(TokenRefreshError) as info:
            client.service.getServerTimestamp()
        assert not isinstance(info.value, ReauthorizationRequiredError)
        assert _loaded(path).intent is None
    sf_org.client_credentials_user = "standin@example.com"
    sf_org.token_failure = None
    assert client.service.getServerTimestamp() is not None
    assert sf_org.token_requests == 4  # the first token, two failures, the fixed one


class _HandsOver:
    """A store's wait that ends with ``answer`` (a store of one's own may return anything)."""

    def __init__(self, answer: object) -> None:
        self.answer = answer

    def wait_for_change(self, version: int, timeout: float) -> object:
        return self.answer


def test_a_newer_token_a_store_waited_for_is_used_without_another_read() -> None:
    newer = StoredToken({"access_token": "00DNEWER"}, 2)
    assert _wait_for_change(_HandsOver(newer), 1, 0.0) is newer  # type: ignore[arg-type]
    # Anything else sends the refresher back to the store: the same version, no token, or
    # the truthy answer of a store of one's own.
    for answer in (StoredToken({"access_token": "00DSAME"}, 1), None, True):
        assert _wait_for_change(_HandsOver(answer), 1, 0.0) is None  # type: ignore[arg-type]
