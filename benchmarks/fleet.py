"""Token requests per expiry and failed calls for a fleet of worker processes.

K processes (K = 1, 4, 8, 16) share one rotating refresh token against the stand-in org,
with no shared store, a FileTokenStore and a RedisTokenStore, over three expiries. Each
expiry, every worker makes one call at the same moment. Figures, not assertions:

    python benchmarks/fleet.py [--workers 1 4 8 16] [--expiries 3] [--json PATH]

Rotation and overlap rejection are on, as on a Salesforce connected app used by several
orgs. The goal with a store: 1 token request per expiry and 0 failed calls at every K.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from zeep_sfrefresh.testing import StandInOrg, allow_insecure_transport
from zeep_sfrefresh.testing.fleet import StoreSpec, run_fleet
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--expiries", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()

    rows: list[Row] = []
    header = (
        f"{'store':<7} {'K':>3} {'calls':>6} {'failed':>7} {'token req/expiry':>17} "
        f"{'revocations':>12} {'overlaps':>9} {'seconds':>8}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as scratch:
        redis = RedisServer(Path(scratch)).start() if REDIS_SERVER else None
        try:
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
        finally:
            if redis is not None:
                redis.stop()
    if redis is None:
        print("(redis-server not installed: Redis rows skipped)", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps([asdict(row) for row in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
