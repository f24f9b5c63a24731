"""Fork safety: locks and connection pools must not cross ``os.fork()``.

Production fleets fork after importing (gunicorn ``--preload``, Celery prefork,
``multiprocessing`` with fork). A child inherits every lock in the state some other thread
of the parent left it, possibly held forever, and every pooled connection, whose socket it
then shares with the parent. Objects that own such things register here, and each one's
``_after_fork`` runs in the child right after the fork, before anything else does.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Protocol

__all__ = ["ForkAware", "reset_in_child"]


class ForkAware(Protocol):
    """An object that re-creates its locks (and drops inherited connections) in a child."""

    def _after_fork(self) -> None: ...


_REGISTERED: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def reset_in_child(obj: ForkAware) -> None:
    """Call ``obj._after_fork()`` in every child forked from now on (held weakly)."""
    _REGISTERED.add(obj)


def _after_fork_in_child() -> None:
    for obj in list(_REGISTERED):
        try:
            obj._after_fork()
        except Exception:  # one object's failure must not leave the others' locks held
            logging.getLogger(__name__).exception("resetting %r after fork failed", obj)


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)
