"""What the transport tells monitoring: one event per refresh, adoption, failure or move.

Events never hold a token: hosts, durations, fingerprint-free reasons and error texts only
(error texts of this package hold no secret either).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["EventKind", "RefreshEvent", "RefreshListener", "worker_name"]

EventKind = Literal[
    "refreshed", "adopted", "failed", "not_refreshable", "circuit_open", "instance_moved"
]
"""``refreshed``: this worker made the token request. ``adopted``: it took the token another
worker wrote to the store. ``failed``: the refresh raised. ``not_refreshable``: Salesforce
rejected the new session at once. ``circuit_open``: the breaker stopped token requests.
``instance_moved``: the new token names another ``instance_url`` host."""


@dataclass(frozen=True)
class RefreshEvent:
    """One thing that happened to the session of a transport."""

    kind: EventKind
    """What happened: ``refreshed`` (this worker made the token request), ``adopted`` (it took
    the token another worker stored), ``failed``, ``not_refreshable`` (Salesforce rejected the
    new session at once), ``circuit_open`` (the breaker stopped the token request) or
    ``instance_moved`` (the new token names another instance host)."""
    reason: str
    """Why: e.g. ``INVALID_SESSION_ID from acme.my.salesforce.com``; for a token adopted
    before a call, ``a newer token in the store`` (the store's ``peek`` had it) or ``a refresh
    under way, joined before the call`` (the call waited for another worker's refresh)."""
    duration: float
    """Seconds the refresh took (lock waits and token request), 0 when not applicable."""
    old_instance: str | None
    """Host of the token's instance before."""
    new_instance: str | None
    """Host of the token's instance after (the same unless it moved)."""
    worker: str
    """Which worker: ``host/pid/thread``."""
    error: str | None = None
    """The error's text for ``failed``, ``not_refreshable`` and ``circuit_open``."""


RefreshListener = Callable[[RefreshEvent], object]
"""A callable told about every :class:`RefreshEvent`; exceptions it raises are logged, not
propagated, so monitoring cannot break a SOAP call."""


def worker_name() -> str:
    """``host/pid/thread`` of the caller, to tell workers of a fleet apart in events."""
    return f"{socket.gethostname()}/{os.getpid()}/{threading.current_thread().name}"
