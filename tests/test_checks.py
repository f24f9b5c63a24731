"""Durations given to the stores, the breaker, the grants and the transports: a finite
number of seconds, checked when the object is made, with an error naming the argument."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from zeep_sfrefresh import CircuitBreaker, FileTokenStore, MemoryTokenStore, RedisTokenStore
from zeep_sfrefresh._checks import check_seconds

BAD: list[tuple[object, type[Exception], str]] = [
    ("5", TypeError, "must be a number of seconds, not str"),
    (True, TypeError, "must be a number of seconds, not bool"),
    (None, TypeError, "must be a number of seconds, not NoneType"),
    (0, ValueError, "must be a positive number of seconds, not 0"),
    (-1.5, ValueError, "must be a positive number of seconds, not -1.5"),
    (math.inf, ValueError, "must be a positive number of seconds, not inf"),
    (math.nan, ValueError, "must be a positive number of seconds, not nan"),
]

Make = Callable[[Path, str, Any], object]
MAKERS: dict[str, tuple[Make, tuple[str, ...]]] = {
    "MemoryTokenStore": (lambda _, name, value: MemoryTokenStore(**{name: value}), ("lock_wait",)),
    "FileTokenStore": (
        lambda tmp, name, value: FileTokenStore(tmp / "token.json", **{name: value}),
        ("lock_wait", "poll_interval"),
    ),
    # An unconnected client: the store talks to Redis only when used.
    "RedisTokenStore": (
        lambda _, name, value: RedisTokenStore(redis.Redis(port=1), "k", **{name: value}),
        ("lock_timeout", "lock_wait", "poll_interval"),
    ),
    "CircuitBreaker": (lambda _, name, value: CircuitBreaker(**{name: value}), ("cooldown",)),
}
CASES = [(kind, name) for kind, (_, names) in MAKERS.items() for name in names]


@pytest.mark.parametrize(("value", "error", "message"), BAD)
@pytest.mark.parametrize(("kind", "name"), CASES)
def test_a_duration_that_is_not_seconds_is_refused_when_the_object_is_made(
    tmp_path: Path, kind: str, name: str, value: object, error: type[Exception], message: str
) -> None:
    make = MAKERS[kind][0]
    with pytest.raises(error, match=f"^{name} {message}$"):
        make(tmp_path, name, value)


@pytest.mark.parametrize(("kind", "name"), CASES)
def test_a_duration_in_seconds_is_kept(tmp_path: Path, kind: str, name: str) -> None:
    made: Any = MAKERS[kind][0](tmp_path, name, 2)
    assert getattr(made, name) == 2.0


def test_zero_seconds_only_where_allowed() -> None:
    assert check_seconds("overlap_wait", 0, zero=True) == 0.0
    assert check_seconds("overlap_wait", 0.25, zero=True) == 0.25
    with pytest.raises(ValueError, match=r"^overlap_wait must be zero or more seconds, not -1$"):
        check_seconds("overlap_wait", -1, zero=True)
    with pytest.raises(ValueError, match=r"^w must be a positive number of seconds, not 0\.0$"):
        check_seconds("w", 0.0)


@pytest.mark.parametrize(
    ("threshold", "error", "message"),
    [
        ("3", TypeError, "threshold must be an int, not str"),
        (True, TypeError, "threshold must be an int, not bool"),
        (2.5, TypeError, "threshold must be an int, not float"),
        (0, ValueError, "threshold must be at least 1"),
    ],
)
def test_a_breaker_threshold_is_a_count(
    threshold: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{message}$"):
        CircuitBreaker(threshold=threshold)  # type: ignore[arg-type]
    assert CircuitBreaker(threshold=1).threshold == 1
