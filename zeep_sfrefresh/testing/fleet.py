"""A fleet of worker processes sharing one refresh token, against a stand-in org.

Each worker is a separate process with its own ``OAuth2Session``, transport and zeep client,
as in production; they share only the token store. The coordinator (in the test or benchmark
process) expires the org's sessions, lets every worker make one call at the same moment, and
counts what happened: token requests, failed calls, revoked token families.
"""

from __future__ import annotations

import multiprocessing
import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from typing import Any

from zeep_sfrefresh.testing.insecure import INSECURE_TRANSPORT_VARIABLE
from zeep_sfrefresh.testing.org import StandInOrg

__all__ = ["Fleet", "RoundResult", "StoreSpec", "run_fleet"]


@dataclass(frozen=True)
class StoreSpec:
    """Which store the workers share, in a form that crosses process boundaries.

    ``kind`` is ``"none"`` (each worker keeps its token to itself: the outage case),
    ``"file"`` (``target`` is the path) or ``"redis"`` (``target`` is a ``redis://`` URL,
    ``key`` the key).
    """

    kind: str
    target: str = ""
    key: str = "sf:token:fleet"

    def build(self) -> Any:
        """Create the store inside a worker process (None for ``"none"``)."""
        if self.kind == "none":
            return None
        if self.kind == "file":
            from zeep_sfrefresh import FileTokenStore

            return FileTokenStore(self.target)
        if self.kind == "redis":
            import redis

            from zeep_sfrefresh import RedisTokenStore

            client = redis.Redis.from_url(self.target, socket_timeout=5)
            return RedisTokenStore(client, self.key)
        raise ValueError(f"unknown store kind {self.kind!r}")


@dataclass(frozen=True)
class RoundResult:
    """What one round (one expiry, one call per worker) produced."""

    ok: int
    failed: int
    errors: tuple[str, ...]


def _worker(
    org_url: str,
    client_id: str,
    client_secret: str,
    token: dict[str, Any],
    spec: StoreSpec,
    rounds: int,
    barrier: Barrier,
    results: Any,
) -> None:
    """One worker process: build a client, then make one call per round when released."""
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
        results.put(("setup", traceback.format_exc(limit=3)))
        barrier.abort()
        return
    results.put(("ready", ""))
    for _ in range(rounds):
        barrier.wait()
        try:
            client.service.getServerTimestamp()
        except Exception as exc:  # noqa: BLE001 - counted as a failed call
            results.put(("failed", f"{type(exc).__name__}: {exc}"))
        else:
            results.put(("ok", ""))


class Fleet:
    """K worker processes sharing ``spec``; use as a context manager, then :meth:`round`."""

    def __init__(self, org: StandInOrg, spec: StoreSpec, workers: int, rounds: int) -> None:
        self.org = org
        self.workers = workers
        self._context = multiprocessing.get_context("spawn")
        self._barrier = self._context.Barrier(workers + 1)
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
            state, detail = self._results.get(timeout=120)
            if state != "ready":
                raise RuntimeError(f"a fleet worker failed to start:\n{detail}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._barrier.abort()
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()

    def round(self, *, hold_token_endpoint: bool = False) -> RoundResult:
        """Expire every session, release all workers at once, and collect their outcomes.

        With ``hold_token_endpoint`` the token endpoint answers nobody until every worker
        has met the expired session, which makes the race as wide as it can be.
        """
        self.org.expire_all_sessions()
        posts_before = self.org.soap_posts
        release = self.org.hold_token_requests() if hold_token_endpoint else None
        self._barrier.wait(timeout=120)
        if release is not None:
            with _released(release):
                _wait_until(lambda: self.org.soap_posts - posts_before >= self.workers)
        outcomes = [self._results.get(timeout=120) for _ in range(self.workers)]
        errors = tuple(detail for state, detail in outcomes if state != "ok")
        return RoundResult(self.workers - len(errors), len(errors), errors)


@contextmanager
def _released(event: Any) -> Iterator[None]:
    try:
        yield
    finally:
        event.set()


def _wait_until(condition: Any, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the fleet did not reach the org in time")
        time.sleep(0.01)


def run_fleet(
    org: StandInOrg, spec: StoreSpec, *, workers: int, rounds: int, hold: bool = False
) -> list[RoundResult]:
    """Run ``rounds`` expiries against ``workers`` processes sharing ``spec``."""
    with Fleet(org, spec, workers, rounds) as fleet:
        return [fleet.round(hold_token_endpoint=hold) for _ in range(rounds)]
