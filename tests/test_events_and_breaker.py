"""Sessions a refresh cannot save, the circuit breaker, a moving instance, and refresh events."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SOQL, Harness
from zeep.exceptions import Fault

from zeep_sfrefresh import (
    CircuitBreaker,
    FileTokenStore,
    JwtAccessTokenError,
    RefreshEvent,
    SessionNotRefreshableError,
    TokenRefreshError,
)

Build = Callable[..., Harness]


def _rejected_after_refresh(h: Harness) -> SessionNotRefreshableError:
    """One call whose session is dead and whose refreshed session is rejected at once too."""
    h.org.fail_next_soap("INVALID_SESSION_ID", count=2)
    with pytest.raises(SessionNotRefreshableError) as info:
        h.client.service.query(SOQL)
    return info.value


def test_a_session_rejected_again_after_refresh_is_not_refreshable(harness: Build) -> None:
    h = harness()
    error = _rejected_after_refresh(h)
    assert isinstance(error, Fault)  # existing `except Fault` code keeps working
    assert error.code == "INVALID_SESSION_ID"
    assert "one token refresh, then one resend" in str(error)
    assert (h.org.token_requests, h.org.soap_posts) == (1, 2)


def test_the_breaker_stops_token_requests_after_repeated_useless_refreshes(harness: Build) -> None:
    events: list[RefreshEvent] = []
    h = harness(circuit_breaker=CircuitBreaker(threshold=2, cooldown=600), listener=events.append)
    for _ in range(2):
        _rejected_after_refresh(h)
    assert h.org.token_requests == 2
    h.org.fail_next_soap("INVALID_SESSION_ID")
    with pytest.raises(SessionNotRefreshableError, match="circuit breaker open"):
        h.client.service.query(SOQL)
    assert h.org.token_requests == 2  # no third token request while it cools down
    kinds = [event.kind for event in events]
    assert kinds.count("not_refreshable") == 2
    assert kinds.count("circuit_open") == 1


def test_a_usable_refresh_resets_the_count(harness: Build) -> None:
    h = harness(circuit_breaker=CircuitBreaker(threshold=2, cooldown=600))
    _rejected_after_refresh(h)
    h.org.expire_all_sessions()
    h.client.service.getServerTimestamp()  # a refresh whose session works
    _rejected_after_refresh(h)  # one useless refresh again: below the threshold
    h.org.expire_all_sessions()
    h.client.service.getServerTimestamp()
    assert h.org.token_requests == 4


def test_no_breaker_when_turned_off(harness: Build) -> None:
    h = harness(circuit_breaker=None)
    for _ in range(4):
        _rejected_after_refresh(h)
    assert h.org.token_requests == 4


def test_events_of_a_refresh_and_an_adoption(harness: Build, tmp_path: Path) -> None:
    events_a: list[RefreshEvent] = []
    events_b: list[RefreshEvent] = []
    store = tmp_path / "token.json"
    a = harness(store=FileTokenStore(store), listener=events_a.append)
    # Without watch, b meets the expiry too and adopts after its failed call (with watch it
    # adopts before the call: tests/test_store_peek.py).
    b = harness(store=FileTokenStore(store, watch=False), listener=events_b.append)
    a.org.expire_all_sessions()
    a.client.service.getServerTimestamp()
    b.client.service.getServerTimestamp()
    (refreshed,) = events_a
    (adopted,) = events_b
    host = a.org.url.removeprefix("http://")
    assert refreshed.kind == "refreshed"
    assert adopted.kind == "adopted"
    for event in (refreshed, adopted):
        assert event.reason == f"INVALID_SESSION_ID from {host}"
        assert (event.old_instance, event.new_instance) == (host, host)
        assert event.duration >= 0
        assert event.error is None
        assert str(os.getpid()) in event.worker
    a.assert_no_secrets(repr(events_a + events_b))


def test_a_failed_refresh_is_an_event(harness: Build) -> None:
    events: list[RefreshEvent] = []
    h = harness(listener=events.append)
    h.org.expire_all_sessions()
    h.org.token_failure = "invalid_grant"
    with pytest.raises(TokenRefreshError):
        h.client.service.getServerTimestamp()
    (event,) = events
    assert event.kind == "failed"
    assert event.error is not None
    assert "invalid_grant" in event.error


def test_a_moving_instance_is_followed_and_announced(
    harness: Build, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[RefreshEvent] = []
    h = harness(listener=events.append)
    caplog.set_level("INFO", logger="zeep_sfrefresh")
    old_host = h.org.url.removeprefix("http://")
    moved = h.org.url.replace("127.0.0.1", "localhost")
    h.org.instance_url = moved
    h.org.expire_all_sessions()
    h.client.service.getServerTimestamp()
    h.client.service.getServerTimestamp()
    new_host = moved.removeprefix("http://")
    assert h.org.soap_hosts == [old_host, new_host, new_host]  # the resend and later calls
    assert [e.kind for e in events] == ["refreshed", "instance_moved"]
    assert (events[1].old_instance, events[1].new_instance) == (old_host, new_host)
    assert f"instance moved: {old_host} -> {new_host}" in caplog.text


def test_a_listener_that_raises_does_not_break_the_call(
    harness: Build, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: RefreshEvent) -> None:
        raise RuntimeError("monitoring is down")

    h = harness(listener=broken)
    h.org.expire_all_sessions()
    assert h.client.service.getServerTimestamp() is not None
    assert "refresh listener raised" in caplog.text


def test_session_hash_echoed_in_a_fault_is_masked(harness: Build) -> None:
    h = harness()
    h.org.fail_next_soap(
        "INVALID_SESSION_ID",
        "INVALID_SESSION_ID: Invalid Session ID found in SessionHeader: Illegal Session. "
        "Session not found, missing session hash: yNHBjIbNE79KEGtRRO+Qa/QH3oWryUWoKU2afYoBC0A=",
        count=2,
    )
    with pytest.raises(SessionNotRefreshableError) as info:
        h.client.service.getServerTimestamp()
    assert "yNHBj" not in str(info.value)
    assert "session hash: ***" in str(info.value)


def test_an_org_that_rejects_every_new_session(harness: Build) -> None:
    h = harness()
    h.org.reject_new_sessions = True  # an IP-locked user, a user without API access
    h.org.expire_all_sessions()
    with pytest.raises(SessionNotRefreshableError, match="rejected the refreshed session"):
        h.client.service.getServerTimestamp()
    assert (h.org.token_requests, h.org.soap_posts) == (1, 2)


def test_a_jwt_access_token_is_refused_before_sending(harness: Build) -> None:
    h = harness()
    h.org.jwt_access_tokens = True
    h.org.expire_all_sessions()
    with pytest.raises(JwtAccessTokenError, match="JWT"):
        h.client.service.getServerTimestamp()  # the refresh brought a JWT: no resend with it
    assert (h.org.token_requests, h.org.soap_posts) == (1, 1)
    jwt_first = harness(token=h.org.issue_token())  # a JWT from the start: nothing is sent
    h.org.reset_counters()
    with pytest.raises(JwtAccessTokenError):
        jwt_first.client.service.getServerTimestamp()
    assert h.org.soap_posts == 0
