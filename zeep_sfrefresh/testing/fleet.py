"""A fleet of worker processes sharing one refresh token, against a stand-in org.

Each worker is a separate process with its own ``OAuth2Session``, transport and zeep client,
as in production; they share only the token store. The coordinator (in the test or benchmark
process) expires the org's sessions (or not, for a normal round), lets every worker make one
call at the same moment, and counts what happened: token requests, failed calls, revoked token
families, how long the round took, and how often the workers took the store's lock.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from typing import Any

from zeep_sfrefresh._stores import holds_lock
from zeep_sfrefresh.testing.insecure import INSECURE_TRANSPORT_VARIABLE
from zeep_sfrefresh.testing.org import StandInOrg

__all__ = ["Fleet", "RoundResult", "StoreSpec", "run_fleet", "wait_for_posts"]

_LOCKS_TAKEN = 0
"""Store lock acquisitions in this worker process (``lock()`` entered, ``try_lock`` held)."""


def _counted(lock: Any) -> Any:
    """Wrap a store's lock context manager so that holding it is counted."""

    @functools.wraps(lock)  # a mark the refresher reads on it too (records_intent)
    @contextmanager
    def counting(*version: int, **options: Any) -> Iterator[Any]:
        global _LOCKS_TAKEN
        with lock(*version, **options) as held:
            # lock() yields None; try_lock(version) yields what says whether it holds it.
            if not version or holds_lock(held, version[0]):
                _LOCKS_TAKEN += 1
            yield held

    return counting


@dataclass(frozen=True)
class StoreSpec:
    """Which store the workers share, in a form that crosses process boundaries.

    ``kind`` is ``"none"`` (each worker keeps its token to itself: the outage case),
    ``"file"`` (``target`` is the path), ``"redis"`` (``target`` is a ``redis://`` URL,
    ``key`` the key) or ``"redis-cluster"`` (``target`` the ``redis://`` URL of one node of a
    cluster, which a ``redis.RedisCluster`` client starts from).
    """

    kind: str
    """``"none"``, ``"file"``, ``"redis"`` or ``"redis-cluster"``."""
    target: str = ""
    """The file's path, or the ``redis://`` URL."""
    key: str = "sf:token:fleet"
    """The Redis key of the token."""

    def build(self) -> Any:
        """Create the store inside a worker process (None for ``"none"``); its lock
        acquisitions are counted for :attr:`RoundResult.locks`."""
        store: Any
        if self.kind == "none":
            return None
        if self.kind == "file":
            from zeep_sfrefresh import FileTokenStore

            store = FileTokenStore(self.target)
        elif self.kind in ("redis", "redis-cluster"):
            import redis

            from zeep_sfrefresh import RedisTokenStore

            client_class = redis.RedisCluster if self.kind == "redis-cluster" else redis.Redis
            client = client_class.from_url(self.target, socket_timeout=5)
            store = RedisTokenStore(client, self.key)
        else:
            raise ValueError(f"unknown store kind {self.kind!r}")
        for name in ("lock", "try_lock"):
            if hasattr(store, name):
                setattr(store, name, _counted(getattr(store, name)))
        return store


@dataclass(frozen=True)
class RoundResult:
    """What one round (one expiry, or none, and one call per worker) produced."""

    ok: int
    """Calls that succeeded."""
    failed: int
    """Calls that raised."""
    errors: tuple[str, ...]
    """The failed calls' errors, as text."""
    seconds: float = 0.0
    """From the first worker's call starting to the last worker's call ending."""
    locks: int = 0
    """How many times the workers took the store's lock during the round."""


def _worker(
    org_url: str,
    client_id: str,
    client_secret: str,
    token: dict[str, Any],
    spec: StoreSpec,
    rounds: int,
    barrier: Barrier,
    calls: Any,
    results: Any,
) -> None:
    """One worker process: build a client, then make ``calls.value`` calls in a row (one,
    unless the round asks for more) each round when released."""
    os.environ[INSECURE_TRANSPORT_VARIABLE] = "1"  # the stand-in org is plain http on loopback
    import zeep
    from requests_oauthlib import OAuth2Session

    from zeep_sfrefresh import PARTNER_WSDL, SalesforceTransport

    try:
        oauth = OAuth2Session(
            client_id,
            token=token,
            auto_refresh_url=org_url + "/services/oauth2/token",
            auto_refresh_kwargs={"client_id": client_id, "client_secret": client_secret},
        )
        transport = SalesforceTransport(oauth, store=spec.build(), token_timeout=30, overlap_wait=2)
        client = zeep.Client(PARTNER_WSDL, transport=transport)
    except Exception:  # noqa: BLE001 - reported to the coordinator, which fails loudly
        results.put(("setup", traceback.format_exc(limit=3), 0.0, 0.0, 0))
        barrier.abort()
        return
    results.put(("ready", "", 0.0, 0.0, 0))
    for _ in range(rounds):
        barrier.wait()
        locks_before = _LOCKS_TAKEN
        started = time.time()  # wall clock: the coordinator compares it across processes
        try:
            for _ in range(calls.value):
                client.service.getServerTimestamp()
        except Exception as exc:  # noqa: BLE001 - counted as a failed call
            state, detail = "failed", f"{type(exc).__name__}: {exc}"
        else:
            state, detail = "ok", ""
        results.put((state, detail, started, time.time(), _LOCKS_TAKEN - locks_before))


class Fleet:
    """K worker processes sharing ``spec``; use as a context manager, then :meth:`round`."""

    def __init__(self, org: StandInOrg, spec: StoreSpec, workers: int, rounds: int) -> None:
        self.org = org
        """The org the workers call."""
        self.workers = workers
        """How many worker processes."""
        self._context = multiprocessing.get_context("spawn")
        self._barrier = self._context.Barrier(workers + 1)
        self._calls = self._context.Value("i", 1, lock=False)  # set before the barrier opens
        self._results = self._context.Queue()
        token = org.issue_token()
        self._processes = [
            self._context.Process(
                target=_worker,
                args=(
                    org.url,
                    org.client_id,
                    org.client_secret,
                    token,
                    spec,
                    rounds,
                    self._barrier,
                    self._calls,
                    self._results,
                ),
                daemon=True,
            )
            for _ in range(workers)
        ]

    def __enter__(self) -> Fleet:
        for process in self._processes:
            process.start()
        for _ in range(self.workers):
            state, detail, *_ = self._results.get(timeout=120)
            if state != "ready":
                raise RuntimeError(f"a fleet worker failed to start:\n{detail}")
        return self

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids (once started)."""
        return [process.pid for process in self._processes if process.pid is not None]

    def __exit__(self, *exc_info: object) -> None:
        self._barrier.abort()
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()

    def round(
        self, *, hold_token_endpoint: bool = False, expire: bool = True, calls: int = 1
    ) -> RoundResult:
        """Expire every session, release all workers at once, and collect their outcomes.

        With ``hold_token_endpoint`` the token endpoint answers nobody until every worker
        has met the expired session or is waiting for the refresh under way
        (:func:`wait_for_posts`), which makes the race as wide as it can be. Without
        ``expire`` it is a normal round, the yardstick for one after an expiry. Each worker
        makes ``calls`` calls in a row (a round of two normal calls each is what a round
        after an expiry costs at least: the failed call and its resend).
        """
        if calls < 1:
            raise ValueError("a round needs at least one call per worker")
        self._calls.value = calls
        if expire:
            self.org.expire_all_sessions()
        posts_before = self.org.soap_posts
        release = self.org.hold_token_requests() if hold_token_endpoint else None
        self._barrier.wait(timeout=120)
        if release is not None:
            with _released(release):
                wait_for_posts(lambda: self.org.soap_posts, posts_before + self.workers)
        outcomes = [self._results.get(timeout=120) for _ in range(self.workers)]
        errors = tuple(detail for state, detail, *_ in outcomes if state != "ok")
        seconds = max(o[3] for o in outcomes) - min(o[2] for o in outcomes)
        locks = sum(o[4] for o in outcomes)
        return RoundResult(self.workers - len(errors), len(errors), errors, seconds, locks)


@contextmanager
def _released(event: Any) -> Iterator[None]:
    try:
        yield
    finally:
        event.set()


def wait_for_posts(
    posts: Callable[[], int], target: int, *, quiet: float = 0.3, timeout: float = 60.0
) -> None:
    """Return once ``posts()`` (an org's SOAP post count) reaches ``target``, or has not
    grown for ``quiet`` seconds: callers whose call starts while a refresh is under way wait
    for its token instead of posting (the refresher's join), so with the token endpoint held
    not every caller posts. TimeoutError after ``timeout`` seconds of growth that never
    settles."""
    deadline = time.monotonic() + timeout
    seen, since = posts(), time.monotonic()
    while seen < target:
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f"{seen} SOAP posts of {target}, still growing")
        time.sleep(0.005)
        count = posts()
        if count != seen:
            seen, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return


def run_fleet(
    org: StandInOrg, spec: StoreSpec, *, workers: int, rounds: int, hold: bool = False
) -> list[RoundResult]:
    """Run ``rounds`` expiries against ``workers`` processes sharing ``spec``."""
    with Fleet(org, spec, workers, rounds) as fleet:
        return [fleet.round(hold_token_endpoint=hold) for _ in range(rounds)]
