"""How stores wait: the schedules of ``poll_until`` (a busy lock) and ``watch_until`` (an
unchanged store), on a clock the test drives; the documented defaults; the values stores
hand out (intents, stored tokens)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from zeep_sfrefresh import FileTokenStore, RefreshIntent
from zeep_sfrefresh._stores import StoredToken, poll_until, watch_until
from zeep_sfrefresh._tokens import fingerprint

START = 1000.0
"""Where the test clock starts: far from 0, so elapsed time and clock readings differ."""


class Clock:
    """A monotonic clock that only moves when slept on; records every pause."""

    def __init__(self, now: float = START) -> None:
        self.now = now
        self.pauses: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds if seconds > 0 else 1.0  # a zero pause must not hang the test


def _never(limit: int = 10_000) -> Callable[[], bool]:
    """A condition that never holds, and fails the test if asked ``limit`` times (a loop
    that neither sleeps nor ends)."""
    calls = 0

    def check() -> bool:
        nonlocal calls
        calls += 1
        assert calls < limit, "looked without end"
        return False

    return check


def _after(looks: int) -> Callable[[], bool]:
    """A condition that holds from its ``looks``-th call on."""
    calls = 0

    def check() -> bool:
        nonlocal calls
        calls += 1
        return calls >= looks

    return check


# --- poll_until: a busy lock ------------------------------------------------------------------


def test_poll_until_doubles_its_pauses_up_to_50_ms_and_stops_at_the_deadline() -> None:
    clock = Clock()
    assert poll_until(_never(), START + 0.2, 0.002, clock=clock, sleep=clock.sleep) is False
    expected = [0.002, 0.004, 0.008, 0.016, 0.032, 0.05, 0.05]
    assert clock.pauses[:-1] == pytest.approx(expected)
    assert clock.pauses[-1] == pytest.approx(0.2 - sum(expected))  # cut at the deadline
    assert clock.now == pytest.approx(START + 0.2)


def test_poll_until_starts_longer_pauses_at_poll_interval_and_keeps_them() -> None:
    clock = Clock()
    assert poll_until(_never(), START + 0.5, 0.1, clock=clock, sleep=clock.sleep) is False
    assert clock.pauses == pytest.approx([0.1] * 5)


def test_poll_until_returns_true_once_the_attempt_succeeds() -> None:
    clock = Clock()
    assert poll_until(_after(1), START + 1, 0.002, clock=clock, sleep=clock.sleep) is True
    assert clock.pauses == []
    assert poll_until(_after(3), START + 1, 0.002, clock=clock, sleep=clock.sleep) is True
    assert clock.pauses == pytest.approx([0.002, 0.004])


def test_poll_until_tries_once_even_at_its_deadline() -> None:
    tries: list[int] = []

    def attempt() -> bool:
        tries.append(1)
        return False

    clock = Clock()
    assert poll_until(attempt, START, 0.002, clock=clock, sleep=clock.sleep) is False
    assert (len(tries), clock.pauses) == (1, [])


# --- watch_until: an unchanged store ----------------------------------------------------------


def test_watch_until_looks_every_poll_interval_then_every_tenth_of_the_wait() -> None:
    clock = Clock()
    assert watch_until(_never(), START + 1.0, 0.002, clock=clock, sleep=clock.sleep) is False
    waited = 0.0
    for pause in clock.pauses[:-1]:
        assert pause == pytest.approx(min(max(0.002, waited / 10), 0.05))
        waited += pause
    assert clock.pauses[:10] == pytest.approx([0.002] * 10)  # until 20 ms have passed
    assert max(clock.pauses) == pytest.approx(0.05)
    assert clock.pauses[-2] == pytest.approx(0.05)  # long waits: 50 ms apart
    assert clock.pauses[-1] <= 0.05
    assert clock.now == pytest.approx(START + 1.0)  # the last pause ends at the deadline
    assert 30 < len(clock.pauses) < 60  # a few dozen looks in a second, not 500


def test_watch_until_returns_true_when_the_store_changes() -> None:
    clock = Clock()
    assert watch_until(_after(1), START + 1, 0.002, clock=clock, sleep=clock.sleep) is True
    assert clock.pauses == []
    assert watch_until(_after(4), START + 1, 0.002, clock=clock, sleep=clock.sleep) is True
    assert clock.pauses == pytest.approx([0.002] * 3)


def test_watch_until_looks_once_even_at_its_deadline() -> None:
    clock = Clock()
    looks: list[int] = []

    def changed() -> bool:
        looks.append(1)
        return False

    assert watch_until(changed, START, 0.002, clock=clock, sleep=clock.sleep) is False
    assert (len(looks), clock.pauses) == (1, [])


def test_watch_until_cuts_a_pause_at_the_deadline() -> None:
    clock = Clock()
    assert watch_until(_never(), START + 0.003, 0.002, clock=clock, sleep=clock.sleep) is False
    assert clock.pauses == pytest.approx([0.002, 0.001])


# --- defaults and values ----------------------------------------------------------------------


def test_file_store_defaults_are_the_documented_ones(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "token.json")
    assert (store.lock_wait, store.poll_interval) == (30.0, 0.002)  # the workers guide's


def _intent(**changes: object) -> RefreshIntent:
    fields: dict[str, object] = {
        "refresh_token": fingerprint("5Aep861Secret"),
        "state": "unanswered",
        "attempts": 1,
        "holder": "host/1/1",
        "since": 1_700_000_000.5,
    }
    return RefreshIntent(**{**fields, **changes})  # type: ignore[arg-type]


def test_an_intent_round_trips_through_json_with_an_empty_reason_by_default() -> None:
    intent = _intent()
    assert intent.reason == ""
    assert intent.to_json()["reason"] == ""
    assert RefreshIntent.from_json(intent.to_json()) == intent
    spent = _intent(state="spent", reason="refused")
    assert RefreshIntent.from_json(spent.to_json()) == spent
    with pytest.raises(dataclasses.FrozenInstanceError):
        intent.attempts = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["sending"], "not an object"),
        ("sending", "not an object"),
        (None, "not an object"),
        ({**_intent().to_json(), "state": "resting"}, "unexpected field values"),
        ({**_intent().to_json(), "attempts": "1"}, "unexpected field values"),
        ({**_intent().to_json(), "since": "yesterday"}, "unexpected field values"),
        ({**_intent().to_json(), "reason": None}, "unexpected field values"),
        ({**_intent().to_json(), "extra": 1}, "unexpected keyword argument 'extra'"),
        ({"state": "sending"}, "missing 4 required positional arguments"),
    ],
)
def test_an_intent_this_package_did_not_write_is_refused_with_why(
    value: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        RefreshIntent.from_json(value)


def test_a_stored_token_shows_its_version_and_fingerprint_only() -> None:
    access = "00Dxx0000001gPL!AQ4AQSecret"
    stored = StoredToken({"access_token": access}, 4)
    assert repr(stored) == f"StoredToken(version=4, access_token={fingerprint(access)})"
    with_intent = StoredToken({"access_token": access}, 4, _intent())
    assert repr(with_intent) == (
        f"StoredToken(version=4, access_token={fingerprint(access)}, intent=unanswered)"
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        stored.version = 5  # type: ignore[misc]
