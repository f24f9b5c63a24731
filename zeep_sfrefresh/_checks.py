"""Checks of constructor arguments that several classes share."""

from __future__ import annotations

import math

__all__ = ["check_flag", "check_seconds"]


def check_flag(name: str, value: object) -> bool:
    """``value`` if it is a bool, else a TypeError naming ``name``: the string ``"false"``
    from a config file is true."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
    return value


def check_seconds(name: str, value: object, *, zero: bool = False) -> float:
    """``value`` as a duration in seconds, or a clear error naming ``name``: a number (not a
    bool, not a string from a config file), finite (an infinite wait is a hang, a NaN one
    compares false with every clock), above zero (at zero too with ``zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        least = "zero or more" if zero else "a positive number of"
        raise ValueError(f"{name} must be {least} seconds, not {value!r}")
    return float(value)
