"""Figure 3, token requests per expiry: threads, asyncio tasks and processes racing one refresh.

    python benchmarks/races.py [--quick]

N threads on one transport, N asyncio tasks on one ``AsyncSalesforceTransport``, and N processes
sharing a ``FileTokenStore`` (``run_fleet``), every caller calling right after the org expired
all sessions; rotation and overlap rejection are on, so a second refresh would show as a failed
call or a revoked family. "held" rows park the token endpoint until every caller has met the
expired session (the widest race); the other rows let the refresh answer as soon as it arrives,
so late callers may already send the new token (fewer SOAP posts). Goal: 1 token request per
expiry.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests
import zeep
from _common import Counts, Figure, make_oauth, markdown_table, run_alone, section
from requests.adapters import HTTPAdapter

from zeep_sfrefresh import PARTNER_WSDL, SalesforceTransport
from zeep_sfrefresh.testing import StandInOrg
from zeep_sfrefresh.testing.fleet import StoreSpec, run_fleet


def pooled_session(size: int) -> requests.Session:
    """A requests session whose pool keeps ``size`` connections per host (128-thread races)."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll ``condition`` every millisecond until it holds; raise after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the callers did not reach the org in time")
        time.sleep(0.001)


async def await_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """:func:`wait_until` without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the tasks did not reach the org in time")
        await asyncio.sleep(0.001)


def posts_reached(org: StandInOrg, target: int) -> Callable[[], bool]:
    """A condition: the org has received ``target`` SOAP posts in all."""
    return lambda: org.soap_posts >= target


@contextmanager
def released(event: threading.Event | None) -> Iterator[None]:
    """Set ``event`` (a held token endpoint) on the way out, whatever happened."""
    try:
        yield
    finally:
        if event is not None:
            event.set()


@dataclass(frozen=True)
class RaceRow:
    """One configuration of figure 3."""

    kind: str
    callers: int
    held: bool
    expiries: int
    calls: int
    failed_calls: int
    token_requests_per_expiry: float
    soap_posts_per_expiry: float
    family_revocations: int
    overlap_rejections: int
    seconds: float
    errors: tuple[str, ...] = ()


def race_row(
    kind: str,
    org: StandInOrg,
    *,
    callers: int,
    held: bool,
    expiries: int,
    errors: list[str],
    started: float,
    tokens_before: int = 0,
    posts_before: int = 0,
) -> RaceRow:
    """Read one configuration's outcome off the org's counters."""
    assert not org.internal_errors, org.internal_errors
    return RaceRow(
        kind=kind,
        callers=callers,
        held=held,
        expiries=expiries,
        calls=callers * expiries,
        failed_calls=len(errors),
        token_requests_per_expiry=(org.token_requests - tokens_before) / expiries,
        soap_posts_per_expiry=(org.soap_posts - posts_before) / expiries,
        family_revocations=org.family_revocations,
        overlap_rejections=org.overlap_rejections,
        seconds=time.perf_counter() - started,
        errors=tuple(errors[:3]),
    )


def race_threads(callers: int, held: bool, expiries: int) -> RaceRow:
    """N threads sharing one SalesforceTransport meet each expiry."""
    started = time.perf_counter()
    errors: list[str] = []
    errors_lock = threading.Lock()
    with StandInOrg(rotation=True) as org:
        transport = SalesforceTransport(
            make_oauth(org, org.issue_token()), session=pooled_session(max(callers, 10))
        )
        service = zeep.Client(PARTNER_WSDL, transport=transport).service
        service.getServerTimestamp()
        tokens_before, posts_before = org.token_requests, org.soap_posts
        for _ in range(expiries):
            barrier = threading.Barrier(callers + 1)

            def call(barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                try:
                    service.getServerTimestamp()
                except Exception as exc:  # noqa: BLE001 - counted as a failed call
                    with errors_lock:
                        errors.append(f"{type(exc).__name__}: {exc}")

            threads = [threading.Thread(target=call, daemon=True) for _ in range(callers)]
            for thread in threads:
                thread.start()
            org.expire_all_sessions()
            target = org.soap_posts + callers
            release = org.hold_token_requests() if held else None
            with released(release):
                barrier.wait()
                if release is not None:
                    wait_until(posts_reached(org, target))
            for thread in threads:
                thread.join(timeout=120)
        return race_row(
            "threads, one transport",
            org,
            callers=callers,
            held=held,
            expiries=expiries,
            errors=errors,
            started=started,
            tokens_before=tokens_before,
            posts_before=posts_before,
        )


def race_tasks(callers: int, held: bool, expiries: int) -> RaceRow:
    """N asyncio tasks sharing one AsyncSalesforceTransport meet each expiry."""
    from zeep_sfrefresh import AsyncSalesforceTransport

    started = time.perf_counter()
    errors: list[str] = []
    with StandInOrg(rotation=True) as org:
        tokens_before = posts_before = 0

        async def main() -> None:
            nonlocal tokens_before, posts_before
            transport = AsyncSalesforceTransport(make_oauth(org, org.issue_token()))
            async with zeep.AsyncClient(PARTNER_WSDL, transport=transport) as client:
                await client.service.getServerTimestamp()
                tokens_before, posts_before = org.token_requests, org.soap_posts
                for _ in range(expiries):
                    org.expire_all_sessions()
                    target = org.soap_posts + callers
                    release = org.hold_token_requests() if held else None
                    with released(release):
                        tasks = [
                            asyncio.ensure_future(client.service.getServerTimestamp())
                            for _ in range(callers)
                        ]
                        if release is not None:
                            await await_until(posts_reached(org, target))
                    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
                    errors.extend(
                        f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException)
                    )

        asyncio.run(main())
        return race_row(
            "asyncio tasks, one async transport",
            org,
            callers=callers,
            held=held,
            expiries=expiries,
            errors=errors,
            started=started,
            tokens_before=tokens_before,
            posts_before=posts_before,
        )


def race_processes(callers: int, held: bool, expiries: int, scratch: Path) -> RaceRow:
    """N processes sharing a FileTokenStore meet each expiry (``run_fleet``)."""
    started = time.perf_counter()
    path = scratch / f"token-{callers}-{'held' if held else 'free'}.json"
    with StandInOrg(rotation=True) as org:
        results = run_fleet(
            org, StoreSpec("file", str(path)), workers=callers, rounds=expiries, hold=held
        )
        errors = [error for result in results for error in result.errors]
        return race_row(
            "processes, FileTokenStore",
            org,
            callers=callers,
            held=held,
            expiries=expiries,
            errors=errors,
            started=started,
        )


def races(counts: Counts) -> dict[str, Any]:
    """Figure 3: token requests per expiry for threads, tasks and processes."""
    expiries = counts.race_expiries
    rows = []
    for callers in counts.threads:
        for held in (True, False):
            rows.append(race_threads(callers, held, expiries))
    for callers in counts.tasks:
        for held in (True, False):
            rows.append(race_tasks(callers, held, expiries))
    with tempfile.TemporaryDirectory() as scratch:
        for callers in counts.processes:
            for held in (True, False):
                rows.append(race_processes(callers, held, expiries, Path(scratch)))
    return {"rows": [asdict(row) for row in rows]}


def print_races(result: dict[str, Any]) -> None:
    section("3. Token requests per expiry (rotation and overlap rejection on)")
    rows = result["rows"]
    print(
        markdown_table(
            [
                "callers",
                "N",
                "token endpoint",
                "expiries",
                "calls",
                "failed",
                "token requests / expiry",
                "SOAP posts / expiry",
                "revocations",
                "seconds",
            ],
            [
                [
                    row["kind"],
                    row["callers"],
                    "held" if row["held"] else "free",
                    row["expiries"],
                    row["calls"],
                    row["failed_calls"],
                    f"{row['token_requests_per_expiry']:.2f}",
                    f"{row['soap_posts_per_expiry']:.1f}",
                    row["family_revocations"],
                    f"{row['seconds']:.1f}",
                ]
                for row in rows
            ],
        )
    )
    for row in rows:
        for error in row["errors"]:
            print(f"- {row['kind']} N={row['callers']}: {error}")


FIGURE = Figure("races", races, print_races)

if __name__ == "__main__":
    sys.exit(run_alone(FIGURE, __doc__))
