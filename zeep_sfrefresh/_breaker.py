"""When not to ask the token endpoint: the circuit breaker and the endpoint's own Retry-After.

Some orgs reject every new session at once (IP-restricted sessions, a user without API
access). Each expiry would then cost a token request, and Salesforce limits token requests
per user (3,600 an hour). After ``threshold`` refreshed sessions in a row were rejected at
once, the breaker opens: for ``cooldown`` seconds expiries raise ``SessionNotRefreshableError``
without a token request. A refreshed session that works closes it again. Separately, a
``Retry-After`` from the token endpoint (429, 503) holds back every token request until
it is over.

:class:`CircuitBreaker` is an immutable value that carries its own state, after urllib3's
``Retry``: :meth:`~CircuitBreaker.record` and :meth:`~CircuitBreaker.retry_after` return a
new breaker, so the refresher swaps one reference and never edits shared counters.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace

from ._checks import check_seconds

__all__ = ["DEFAULT_BREAKER", "MAX_RETRY_AFTER", "NO_BREAKER", "CircuitBreaker"]

MAX_RETRY_AFTER = 600.0
"""The longest ``Retry-After`` honoured; a larger one is capped so a typo cannot stall a fleet."""


@dataclass(frozen=True)
class CircuitBreaker:
    """How many rejected sessions in a row open the breaker, for how long, and its state.

    Construct it with ``threshold`` and ``cooldown`` only; the other fields are its state
    (monotonic clock times), advanced by :meth:`record` and :meth:`retry_after`.
    """

    threshold: int = 3
    """Refreshed sessions rejected at once, in a row, that open the breaker."""
    cooldown: float = 300.0
    """Seconds the breaker stays open: expiries then raise without a token request."""
    rejected: int = 0
    """Refreshed sessions rejected at once since the last one that worked."""
    open_until: float = 0.0
    """No token request before this time: the breaker is open."""
    not_before: float = 0.0
    """No token request before this time: the token endpoint asked to wait."""

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int):
            raise TypeError(f"threshold must be an int, not {type(self.threshold).__name__}")
        if self.threshold < 1:
            raise ValueError("threshold must be at least 1")
        check_seconds("cooldown", self.cooldown)

    def record(self, usable: bool, now: float) -> CircuitBreaker:
        """Return the breaker after a refreshed session worked (``usable``) or was rejected."""
        if usable:
            return replace(self, rejected=0, open_until=0.0)
        rejected = self.rejected + 1
        open_until = now + self.cooldown if rejected >= self.threshold else self.open_until
        return replace(self, rejected=rejected, open_until=open_until)

    def retry_after(self, seconds: float, now: float) -> CircuitBreaker:
        """Return the breaker after the token endpoint answered ``Retry-After: seconds``."""
        wait = min(max(seconds, 0.0), MAX_RETRY_AFTER)
        return replace(self, not_before=max(self.not_before, now + wait))

    def is_open(self, now: float) -> bool:
        """Whether rejected sessions stop token requests at ``now``."""
        return now < self.open_until

    def opened_by(self, before: CircuitBreaker) -> bool:
        """Whether this breaker is the one that opened after ``before`` (for a one-time event)."""
        return self.open_until > before.open_until


DEFAULT_BREAKER = CircuitBreaker()

NO_BREAKER = CircuitBreaker(threshold=sys.maxsize)
"""What ``circuit_breaker=None`` means: never opens (Retry-After is still honoured)."""
