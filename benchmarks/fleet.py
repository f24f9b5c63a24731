"""Token requests per expiry, failed calls and recovery time for a fleet of worker processes.

Part 1: K processes (K = 1, 4, 8, 16) share one rotating refresh token against the stand-in
org, with no shared store, a FileTokenStore and a RedisTokenStore, over three expiries. Each
expiry, every worker makes one call at the same moment. The goal with a store: 1 token
request per expiry and 0 failed calls at every K.

Part 2 (recovery): K processes (K = 8, 32) sharing a FileTokenStore or a RedisTokenStore take
turns making normal rounds, rounds of two calls each and rounds right after an expiry (every
worker calling at once, the token endpoint answering at once). A round lasts from the first
call's start to the last call's end; each round is divided by the median normal round of the
same fleet. The goal: a median at or below 2 after an expiry (a worker that meets the expiry
makes two SOAP calls, the failed one and its resend; one whose call starts after the new
token is stored, or while another worker fetches it, makes one). Figures, not assertions:

    python benchmarks/fleet.py [--workers 1 4 8 16] [--expiries 3]
        [--recovery-workers 8 32] [--recovery-rounds 45] [--json PATH]

Rotation and overlap rejection are on, as on a Salesforce connected app used by several
orgs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

from _common import Counts, Figure, cpu_seconds, markdown_table

from zeep_sfrefresh.testing import StandInOrg, allow_insecure_transport
from zeep_sfrefresh.testing.fleet import Fleet, StoreSpec, run_fleet
from zeep_sfrefresh.testing.redis_server import REDIS_SERVER, RedisServer


@dataclass(frozen=True)
class Row:
    store: str
    workers: int
    expiries: int
    calls: int
    failed_calls: int
    token_requests_per_expiry: float
    family_revocations: int
    overlap_rejections: int
    seconds: float


@dataclass(frozen=True)
class RecoveryRow:
    store: str
    workers: int
    expiries: int
    normal_round_ms: float
    """Median normal round."""
    ratio_median: float
    ratio_min: float
    ratio_max: float
    """A round after an expiry divided by the median normal round."""
    two_calls_median: float
    two_calls_min: float
    two_calls_max: float
    """A round of two normal calls per worker divided by the median normal round: the least
    a round after an expiry can take (a failed call and its resend per worker)."""
    over_two_calls: float
    """The median round after an expiry over the median round of two calls: what the
    refresh itself adds (1: nothing)."""
    cpu_over_two_calls: float | None
    """The median CPU time of a round after an expiry over that of a round of two calls,
    every process together (workers, the org, Redis): the work the refresh adds, a steadier
    figure than wall time on a busy machine (None where it cannot be read)."""
    locks_per_expiry: float
    """Store lock acquisitions per expiry, all workers together."""
    posts_per_worker: float
    """SOAP requests the org got per worker in a round after an expiry (median): 2 when
    every worker sent a call with the old token, 1 when none did (each found the new token
    in the store before sending)."""
    failed_calls: int
    token_requests_per_expiry: float
    family_revocations: int


def measure(spec: StoreSpec, label: str, workers: int, expiries: int) -> Row:
    with allow_insecure_transport(), StandInOrg(rotation=True) as org:
        started = time.perf_counter()
        results = run_fleet(org, spec, workers=workers, rounds=expiries)
        elapsed = time.perf_counter() - started
        return Row(
            store=label,
            workers=workers,
            expiries=expiries,
            calls=workers * expiries,
            failed_calls=sum(r.failed for r in results),
            token_requests_per_expiry=org.token_requests / expiries,
            family_revocations=org.family_revocations,
            overlap_rejections=org.overlap_rejections,
            seconds=round(elapsed, 2),
        )


def measure_recovery(
    spec: StoreSpec, label: str, workers: int, expiries: int, others: Sequence[int] = ()
) -> RecoveryRow:
    """Take turns: a normal round, one of two calls per worker, one after an expiry (after
    one warm-up round). ``others``: more processes whose CPU time counts (redis-server)."""
    with allow_insecure_transport(), StandInOrg(rotation=True) as org:
        with Fleet(org, spec, workers, rounds=1 + 3 * expiries) as fleet:
            fleet.round(expire=False)  # connections opened, WSDL operations warmed
            org.reset_counters()
            pids = [*fleet.pids, *others]

            def cpu() -> float | None:
                children = cpu_seconds(pids)  # this process (the org) by its own clock
                return None if children is None else children + time.process_time()

            normal, twice, after = [], [], []
            cpu_twice: list[float | None] = []
            cpu_after: list[float | None] = []
            posts: list[float] = []
            for _ in range(expiries):
                normal.append(fleet.round(expire=False))
                before = cpu()
                twice.append(fleet.round(expire=False, calls=2))
                cpu_twice.append(_spent(before, cpu()))
                before = cpu()
                sent = org.soap_posts
                after.append(fleet.round())
                cpu_after.append(_spent(before, cpu()))
                posts.append((org.soap_posts - sent) / workers)
        yardstick = statistics.median(r.seconds for r in normal)
        ratios = [r.seconds / yardstick for r in after]
        doubles = [r.seconds / yardstick for r in twice]
        return RecoveryRow(
            store=label,
            workers=workers,
            expiries=expiries,
            normal_round_ms=round(yardstick * 1000, 1),
            ratio_median=round(statistics.median(ratios), 2),
            ratio_min=round(min(ratios), 2),
            ratio_max=round(max(ratios), 2),
            two_calls_median=round(statistics.median(doubles), 2),
            two_calls_min=round(min(doubles), 2),
            two_calls_max=round(max(doubles), 2),
            over_two_calls=round(statistics.median(ratios) / statistics.median(doubles), 2),
            cpu_over_two_calls=_cpu_ratio(cpu_after, cpu_twice),
            locks_per_expiry=sum(r.locks for r in after) / expiries,
            posts_per_worker=round(statistics.median(posts), 2),
            failed_calls=sum(r.failed for r in normal + twice + after),
            token_requests_per_expiry=org.token_requests / expiries,
            family_revocations=org.family_revocations,
        )


def _spent(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _cpu_ratio(after: list[float | None], twice: list[float | None]) -> float | None:
    """Median CPU of the rounds after an expiry over that of the rounds of two calls."""
    if None in after or None in twice or not after:
        return None
    return round(
        statistics.median(cast(list[float], after)) / statistics.median(cast(list[float], twice)),
        2,
    )


RECOVERY_DOC = """Fleet recovery: how long worker processes take to succeed again after an expiry.

K worker processes (8 and 32; 8 with ``--quick``) share a FileTokenStore or a RedisTokenStore
(when ``redis-server`` is installed) against the stand-in org, in this process, with rotation
and overlap rejection on and a token endpoint that answers at once. They take turns making a
normal round (one call each), a round of two calls each, and a round right after an expiry,
every worker calling at once; a round lasts from the first call's start to the last call's
end, and each round is divided by the median normal round of the same fleet. Goal: a median
at or below 2 for a round after an expiry. A worker that meets the expiry makes two SOAP
calls, the failed one and its resend; the refreshing worker also makes the token request and
the store's writes (a synced file write each for the file store) while the others wait for
its token. A worker whose call starts after the new token is stored finds it first (the
store's ``peek``: a ``stat`` of the file, the Redis store's watch of its change stream), and
one whose call starts while the refreshing worker fetches it waits for that token (the
store's ``peek_intent`` sees the refresh's intent); both make one call, so a round after an
expiry can take less than a round of two calls each; the SOAP posts column says how many
calls the org got per worker (2: every worker sent one with the old token; 1: none did).
The after / two calls column divides the two medians. The CPU column divides the CPU time
every process used in those rounds (the workers, this process with the org, redis-server;
read from Linux's /proc), which wall time on two cores follows, but noisily. Locks per
expiry counts the store lock's acquisitions by all workers together (1: only the worker
that refreshes takes it). Part 1 of ``benchmarks/fleet.py`` (token requests per expiry with
no store, a file store and Redis, for 1 to 16 processes) runs on its own.
"""


def recovery_stores(
    scratch: str, workers: int, redis: RedisServer | None
) -> list[tuple[str, StoreSpec]]:
    """The stores a recovery fleet of ``workers`` is measured with: a file, and Redis if any."""
    specs = [("file", StoreSpec("file", f"{scratch}/recovery-{workers}.json"))]
    if redis is not None:
        specs.append(("redis", StoreSpec("redis", redis.url, f"{{recovery:{workers}}}")))
    return specs


def _server_pids(redis: RedisServer | None) -> list[int]:
    """The redis-server process, whose CPU time a recovery round counts too."""
    return [redis.process.pid] if redis is not None and redis.process is not None else []


def fleet_recovery(counts: Counts) -> dict[str, Any]:
    """Figure 7: the recovery rows for each store and fleet size."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        redis = RedisServer(Path(scratch)).start() if REDIS_SERVER else None
        try:
            for workers in counts.recovery_workers:
                for label, spec in recovery_stores(scratch, workers, redis):
                    row = measure_recovery(
                        spec, label, workers, counts.recovery_rounds, _server_pids(redis)
                    )
                    rows.append(asdict(row))
        finally:
            if redis is not None:
                redis.stop()
    return {"rows": rows, "redis": redis is not None}


def render_fleet_recovery(result: dict[str, Any]) -> str:
    """One row per store and fleet size."""
    table = markdown_table(
        [
            "store",
            "processes",
            "rounds after an expiry",
            "normal round ms",
            "after an expiry / normal (goal <= 2)",
            "two calls each / normal",
            "after an expiry / two calls each",
            "CPU: after an expiry / two calls each",
            "store locks per expiry",
            "SOAP posts per worker after an expiry",
            "token requests per expiry",
            "failed calls",
            "family revocations",
        ],
        [
            [
                row["store"],
                row["workers"],
                row["expiries"],
                f"{row['normal_round_ms']:.1f}",
                f"{row['ratio_median']:.2f} ({row['ratio_min']:.2f}-{row['ratio_max']:.2f})",
                f"{row['two_calls_median']:.2f} "
                f"({row['two_calls_min']:.2f}-{row['two_calls_max']:.2f})",
                f"{row['over_two_calls']:.2f}",
                "n/a" if row["cpu_over_two_calls"] is None else f"{row['cpu_over_two_calls']:.2f}",
                f"{row['locks_per_expiry']:g}",
                f"{row['posts_per_worker']:.2f}",
                f"{row['token_requests_per_expiry']:g}",
                row["failed_calls"],
                row["family_revocations"],
            ]
            for row in result["rows"]
        ],
    )
    if not result["redis"]:
        table += "\n\n(redis-server is not installed: no Redis rows.)"
    return table


FIGURE = Figure(
    "fleet_recovery",
    "7. Fleet recovery: worker processes after an expiry, file and Redis stores",
    fleet_recovery,
    render_fleet_recovery,
    RECOVERY_DOC,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 4, 8, 16])
    parser.add_argument("--expiries", type=int, default=3)
    parser.add_argument("--recovery-workers", type=int, nargs="*", default=[8, 32])
    parser.add_argument("--recovery-rounds", type=int, default=45)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()

    rows: list[Row] = []
    recovery: list[RecoveryRow] = []
    with tempfile.TemporaryDirectory() as scratch:
        redis = RedisServer(Path(scratch)).start() if REDIS_SERVER else None
        try:
            if args.workers:
                header = (
                    f"{'store':<7} {'K':>3} {'calls':>6} {'failed':>7} {'token req/expiry':>17} "
                    f"{'revocations':>12} {'overlaps':>9} {'seconds':>8}"
                )
                print(header)
                print("-" * len(header))
            for workers in args.workers:
                specs = [("none", StoreSpec("none"))]
                specs.append(("file", StoreSpec("file", f"{scratch}/token-{workers}.json")))
                if redis is not None:
                    specs.append(("redis", StoreSpec("redis", redis.url, f"{{fleet:{workers}}}")))
                for label, spec in specs:
                    row = measure(spec, label, workers, args.expiries)
                    rows.append(row)
                    print(
                        f"{row.store:<7} {row.workers:>3} {row.calls:>6} {row.failed_calls:>7} "
                        f"{row.token_requests_per_expiry:>17.2f} {row.family_revocations:>12} "
                        f"{row.overlap_rejections:>9} {row.seconds:>8.2f}",
                        flush=True,
                    )
            for workers in args.recovery_workers:
                for label, spec in recovery_stores(scratch, workers, redis):
                    recovery.append(
                        measure_recovery(
                            spec, label, workers, args.recovery_rounds, _server_pids(redis)
                        )
                    )
            if recovery:
                rendered = [asdict(row) for row in recovery]
                print()
                print(render_fleet_recovery({"rows": rendered, "redis": redis is not None}))
        finally:
            if redis is not None:
                redis.stop()
    if redis is None:
        print("(redis-server not installed: Redis rows skipped)", file=sys.stderr)
    if args.json:
        document = {
            "fleet": [asdict(row) for row in rows],
            "recovery": [asdict(row) for row in recovery],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
