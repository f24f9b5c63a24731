"""Figure 3, token requests per expiry: threads, asyncio tasks and processes racing one refresh.

    python benchmarks/races.py [--quick]

N threads on one transport, N asyncio tasks on one ``AsyncSalesforceTransport``, and N processes
sharing a ``FileTokenStore`` (``zeep_sfrefresh.testing.fleet``), every caller calling right
after the org expired all sessions; rotation and overlap rejection are on, so a second refresh
would show as a failed call or a revoked family. "held" rows park the token endpoint until every
caller has met the expired session or waits for the refresh under way (a call that starts
once the refresh began waits for it instead of posting: fewer SOAP posts); "free" rows let
the refresh answer as soon as it arrives, so late callers may already send the new token. Each
expiry is a round: token requests, SOAP posts and seconds are per expiry, median (min-max)
over the expiries. The threads and tasks talk to a stand-in org in a process of its own (one
per kind of caller, its counters zeroed between rows); the processes, already apart from it,
to one in the benchmark's process. Goal: 1 token request per expiry.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests
import zeep
from _common import (
    Counts,
    Figure,
    OrgCounters,
    RemoteOrg,
    Spread,
    counters_of,
    make_oauth,
    markdown_table,
    run_alone,
)
from requests.adapters import HTTPAdapter

from zeep_sfrefresh import PARTNER_WSDL, SalesforceTransport
from zeep_sfrefresh.testing import StandInOrg
from zeep_sfrefresh.testing.fleet import Fleet, StoreSpec


def pooled_session(size: int) -> requests.Session:
    """A requests session whose pool keeps ``size`` connections per host (128-thread races)."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


@dataclass
class Race:
    """One configuration of figure 3, filled in expiry by expiry."""

    kind: str
    callers: int
    held: bool
    token_requests: list[float] = field(default_factory=list)
    soap_posts: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def expiry(self, before: OrgCounters, after: OrgCounters, seconds: float) -> None:
        """Record one expiry from the org's counters around it."""
        self.token_requests.append(after.token_requests - before.token_requests)
        self.soap_posts.append(after.soap_posts - before.soap_posts)
        self.seconds.append(seconds)

    def row(self, last: OrgCounters) -> dict[str, Any]:
        """The row, ``last`` being the org's counters after the last expiry."""
        assert not last.internal_errors, last.internal_errors
        return {
            "kind": self.kind,
            "callers": self.callers,
            "held": self.held,
            "expiries": len(self.seconds),
            "calls": self.callers * len(self.seconds),
            "failed_calls": len(self.errors),
            "token_requests_per_expiry": asdict(Spread.of(self.token_requests)),
            "soap_posts_per_expiry": asdict(Spread.of(self.soap_posts)),
            "seconds_per_expiry": asdict(Spread.of(self.seconds)),
            "family_revocations": last.family_revocations,
            "overlap_rejections": last.overlap_rejections,
            "errors": self.errors[:3],
        }


def race_threads(org: RemoteOrg, callers: int, held: bool, expiries: int) -> dict[str, Any]:
    """N threads sharing one SalesforceTransport meet each expiry."""
    race = Race("threads, one transport", callers, held)
    errors_lock = threading.Lock()
    org.reset_counters()
    session = pooled_session(max(callers, 10))
    transport = SalesforceTransport(make_oauth(org, org.issue_token()), session=session)
    service = zeep.Client(PARTNER_WSDL, transport=transport).service
    service.getServerTimestamp()
    for _ in range(expiries):
        barrier = threading.Barrier(callers + 1)

        def call(barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                service.getServerTimestamp()
            except Exception as exc:  # noqa: BLE001 - counted as a failed call
                with errors_lock:
                    race.errors.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=call, daemon=True) for _ in range(callers)]
        for thread in threads:
            thread.start()
        org.expire_all_sessions()
        before = org.counters()
        with org.holding_token_requests(held):
            started = time.perf_counter()
            barrier.wait()
            if held:
                org.wait_for_soap_posts(before.soap_posts + callers)
        for thread in threads:
            thread.join(timeout=120)
        race.expiry(before, org.counters(), time.perf_counter() - started)
    session.close()
    return race.row(org.counters())


def race_tasks(org: RemoteOrg, callers: int, held: bool, expiries: int) -> dict[str, Any]:
    """N asyncio tasks sharing one AsyncSalesforceTransport meet each expiry."""
    from zeep_sfrefresh import AsyncSalesforceTransport

    race = Race("asyncio tasks, one async transport", callers, held)
    org.reset_counters()

    async def main() -> None:
        transport = AsyncSalesforceTransport(make_oauth(org, org.issue_token()))
        async with zeep.AsyncClient(PARTNER_WSDL, transport=transport) as client:
            await client.service.getServerTimestamp()
            for _ in range(expiries):
                org.expire_all_sessions()
                before = org.counters()
                with org.holding_token_requests(held):
                    started = time.perf_counter()
                    tasks = [
                        asyncio.ensure_future(client.service.getServerTimestamp())
                        for _ in range(callers)
                    ]
                    if held:  # the org waits in a thread: the event loop runs the tasks
                        await asyncio.to_thread(
                            org.wait_for_soap_posts, before.soap_posts + callers
                        )
                outcomes = await asyncio.gather(*tasks, return_exceptions=True)
                race.expiry(before, org.counters(), time.perf_counter() - started)
                race.errors.extend(
                    f"{type(o).__name__}: {o}" for o in outcomes if isinstance(o, BaseException)
                )

    asyncio.run(main())
    return race.row(org.counters())


def race_processes(callers: int, held: bool, expiries: int, scratch: Path) -> dict[str, Any]:
    """N processes sharing a FileTokenStore meet each expiry (``testing.fleet.Fleet``)."""
    race = Race("processes, FileTokenStore", callers, held)
    path = scratch / f"token-{callers}-{'held' if held else 'free'}.json"
    with (
        StandInOrg(rotation=True) as org,
        Fleet(org, StoreSpec("file", str(path)), callers, expiries) as fleet,
    ):
        for _ in range(expiries):
            before = counters_of(org)
            started = time.perf_counter()
            result = fleet.round(hold_token_endpoint=held)
            race.expiry(before, counters_of(org), time.perf_counter() - started)
            race.errors.extend(result.errors)
        return race.row(counters_of(org))


def races(counts: Counts) -> dict[str, Any]:
    """Figure 3: token requests per expiry for threads, tasks and processes."""
    expiries = counts.race_expiries
    rows = []
    with RemoteOrg(rotation=True) as org:
        for callers in counts.threads:
            for held in (True, False):
                rows.append(race_threads(org, callers, held, expiries))
    with RemoteOrg(rotation=True) as org:
        for callers in counts.tasks:
            for held in (True, False):
                rows.append(race_tasks(org, callers, held, expiries))
    with tempfile.TemporaryDirectory() as scratch:
        for callers in counts.processes:
            for held in (True, False):
                rows.append(race_processes(callers, held, expiries, Path(scratch)))
    return {"rows": rows}


def render_races(result: dict[str, Any]) -> str:
    """One row per configuration, then the first errors of any row that had failed calls."""
    rows = result["rows"]
    lines = [
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
                "seconds / expiry",
            ],
            [
                [
                    row["kind"],
                    row["callers"],
                    "held" if row["held"] else "free",
                    row["expiries"],
                    row["calls"],
                    row["failed_calls"],
                    Spread.load(row["token_requests_per_expiry"]).show(lambda n: f"{n:g}"),
                    Spread.load(row["soap_posts_per_expiry"]).show(lambda n: f"{n:g}"),
                    row["family_revocations"],
                    Spread.load(row["seconds_per_expiry"]).show(lambda s: f"{s:.2f}"),
                ]
                for row in rows
            ],
        )
    ]
    lines += [
        f"- {row['kind']} N={row['callers']}: {error}" for row in rows for error in row["errors"]
    ]
    return "\n".join(lines)


FIGURE = Figure(
    "races",
    "3. Token requests per expiry (rotation and overlap rejection on)",
    races,
    render_races,
    __doc__,
)

if __name__ == "__main__":
    sys.exit(run_alone(FIGURE))
