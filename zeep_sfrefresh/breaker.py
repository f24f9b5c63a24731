"""The circuit breaker: stop asking the token endpoint when refreshing does not help.

Some orgs reject every new session at once (IP-restricted sessions, a user without API
access). Each expiry would then cost a token request, and Salesforce limits token requests
per user (3,600 an hour). After ``threshold`` refreshes in a row whose new session was
rejected at once, the breaker opens: for ``cooldown`` seconds expiries raise
``SessionNotRefreshableError`` without a token request. A refresh whose session works closes
it again. The policy is an immutable value, after urllib3's ``Retry``; the counting lives
with the refresher.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_BREAKER", "CircuitBreaker"]


@dataclass(frozen=True)
class CircuitBreaker:
    """How many useless refreshes in a row open the breaker, and for how long."""

    threshold: int = 3
    cooldown: float = 300.0

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ValueError("threshold must be at least 1")
        if self.cooldown <= 0:
            raise ValueError("cooldown must be a positive number of seconds")


DEFAULT_BREAKER = CircuitBreaker()
