"""Figure 5, memory: resident and traced memory over many calls on one transport.

    python benchmarks/memory.py [--quick]

A child process (so neither the org's memory nor the benchmark's is counted) drives
``SalesforceTransport.post_xml`` directly with one prebuilt ``getServerTimestamp`` envelope
against a stand-in org in a process of its own, 50,000 calls (2,000 with ``--quick``) in 20
rounds, the org expiring every session before each round (20 refreshes). At 0, 25, 50, 75 and
100% of the calls (after ``gc.collect()``): resident memory from ``/proc/self/statm``,
``tracemalloc``'s traced memory (Python allocations only; lxml's C allocations show in RSS
alone) and the number of objects the garbage collector tracks. "0" is after building the
client and one warm-up call, with tracemalloc on from there. The largest growth sites between
25% and 100% come from two tracemalloc snapshots (tracemalloc's and this file's bookkeeping
left out). The throughput is calls per second in each round, median (min-max) over the 20
rounds, with tracemalloc on (it slows the client about 3x: this figure is half of the suite's
full run). What it leaves out: zeep's envelope building and answer parsing (not the
transport's), and the async transport.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import sys
import sysconfig
import time
import tracemalloc
from dataclasses import asdict
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import zeep
from _common import MIB, Counts, Figure, RemoteOrg, Spread, markdown_table, run_alone
from requests_oauthlib import OAuth2Session

from zeep_sfrefresh import PARTNER_WSDL, SalesforceTransport
from zeep_sfrefresh.testing.insecure import INSECURE_TRANSPORT_VARIABLE

SOAP_HEADERS = {"SOAPAction": '""', "Content-Type": "text/xml; charset=utf-8"}


def resident_bytes() -> int:
    """Resident set size of this process, from /proc/self/statm."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _memory_child(
    conn: Connection, org_url: str, client_id: str, client_secret: str, token: dict[str, Any]
) -> None:
    """The client side of figure 5, in its own process; obeys commands sent over ``conn``."""
    os.environ[INSECURE_TRANSPORT_VARIABLE] = "1"  # the stand-in org is plain http on loopback
    oauth = OAuth2Session(
        client_id,
        token=token,
        auto_refresh_url=org_url + "/services/oauth2/token",
        auto_refresh_kwargs={"client_id": client_id, "client_secret": client_secret},
    )
    transport = SalesforceTransport(oauth)
    client = zeep.Client(PARTNER_WSDL, transport=transport)
    address = client.service._binding_options["address"]
    envelope = client.create_message(client.service, "getServerTimestamp")
    assert transport.post_xml(address, envelope, SOAP_HEADERS).status_code == 200
    tracemalloc.start()
    first: tracemalloc.Snapshot | None = None
    last: tracemalloc.Snapshot | None = None
    while True:
        command, argument = conn.recv()
        if command == "calls":
            failed = 0
            started = time.perf_counter()
            for _ in range(argument):
                if transport.post_xml(address, envelope, SOAP_HEADERS).status_code != 200:
                    failed += 1
            conn.send((failed, time.perf_counter() - started))
        elif command == "measure":
            gc.collect()
            traced, _ = tracemalloc.get_traced_memory()
            rss = resident_bytes()
            objects = len(gc.get_objects())
            if argument == "first":
                first = tracemalloc.take_snapshot()
            elif argument == "last":
                last = tracemalloc.take_snapshot()
            conn.send((rss, traced, objects))
        elif command == "growth":
            assert first is not None
            assert last is not None
            # tracemalloc's own and this file's bookkeeping (the snapshots) are left out.
            ignore = [
                tracemalloc.Filter(False, tracemalloc.__file__),
                tracemalloc.Filter(False, __file__),
            ]
            stats = last.filter_traces(ignore).compare_to(first.filter_traces(ignore), "lineno")
            conn.send([(str(s.traceback), s.size_diff, s.count_diff) for s in stats[:argument]])
        else:
            conn.send(None)
            return


def memory(counts: Counts) -> dict[str, Any]:
    """Figure 5: resident and traced memory over many calls on one transport."""
    total = counts.memory_calls
    chunk = total // 20
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    with RemoteOrg() as org:
        process = context.Process(
            target=_memory_child,
            args=(child, org.url, org.client_id, org.client_secret, org.issue_token()),
            daemon=True,
        )
        process.start()
        try:
            checkpoints = []
            calls = failed = token_requests = soap_posts = 0
            rates: list[float] = []

            def measure(tag: str) -> None:
                parent.send(("measure", tag))
                rss, traced, objects = parent.recv()
                checkpoints.append(
                    {
                        "calls": calls,
                        "rss_bytes": rss,
                        "traced_bytes": traced,
                        "gc_objects": objects,
                    }
                )

            measure("")
            for number in range(20):
                org.expire_all_sessions()
                parent.send(("calls", chunk))
                chunk_failed, chunk_seconds = parent.recv()
                calls += chunk
                failed += chunk_failed
                rates.append(chunk / chunk_seconds)
                # The org keeps a list of every post; empty it so its process stays small too.
                counters = org.counters()
                token_requests += counters.token_requests
                soap_posts += counters.soap_posts
                org.reset_counters()
                if (number + 1) % 5 == 0:
                    measure("first" if number + 1 == 5 else "last" if number + 1 == 20 else "")
            parent.send(("growth", 5))
            growth = parent.recv()
            parent.send(("stop", None))
            parent.recv()
        finally:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
        org.check()
    return {
        "calls": total,
        "expiries": 20,
        "failed_calls": failed,
        "token_requests": token_requests,
        "soap_posts": soap_posts,
        "calls_per_second": asdict(Spread.of(rates)),
        "checkpoints": checkpoints,
        "growth_25_to_100": [
            {"where": where, "size_diff": size, "count_diff": count}
            for where, size, count in growth
        ],
    }


def short_path(where: str) -> str:
    """``/…/site-packages/urllib3/x.py:9`` -> ``urllib3/x.py:9``; the repo and stdlib likewise."""
    repo = str(Path(__file__).resolve().parent.parent) + os.sep
    stdlib = sysconfig.get_paths()["stdlib"] + os.sep
    if "site-packages" + os.sep in where:
        return where.split("site-packages" + os.sep, 1)[1]
    if where.startswith(repo):
        return where[len(repo) :]
    if where.startswith(stdlib):
        return "(stdlib) " + where[len(stdlib) :]
    return where


def render_memory(result: dict[str, Any]) -> str:
    """The checkpoints, the run's counts and throughput, the largest growth sites."""
    base = next(row for row in result["checkpoints"] if row["calls"] == result["calls"] // 4)
    rate = Spread.load(result["calls_per_second"]).show(lambda value: f"{value:,.0f}")
    return "\n".join(
        [
            f"{result['calls']:,} calls of `SalesforceTransport.post_xml` (getServerTimestamp, "
            f"prebuilt envelope), {result['expiries']} expiries:",
            "",
            markdown_table(
                ["calls", "RSS MiB", "traced MiB", "gc objects", "RSS vs 25%", "traced vs 25%"],
                [
                    [
                        f"{row['calls']:,}",
                        f"{row['rss_bytes'] / MIB:.2f}",
                        f"{row['traced_bytes'] / MIB:.3f}",
                        f"{row['gc_objects']:,}",
                        f"{(row['rss_bytes'] - base['rss_bytes']) / 1024:+.0f} KiB",
                        f"{(row['traced_bytes'] - base['traced_bytes']) / 1024:+.1f} KiB",
                    ]
                    for row in result["checkpoints"]
                ],
            ),
            "",
            f"{result['calls']:,} calls, {result['failed_calls']} failed, "
            f"{result['token_requests']} token requests, {result['soap_posts']:,} SOAP posts; "
            f"{rate} calls/s per round (tracemalloc on).",
            "",
            "Largest traced growth between 25% and 100% of the calls:",
            "",
            markdown_table(
                ["where", "bytes", "blocks"],
                [
                    [
                        short_path(row["where"]),
                        f"{row['size_diff']:+,}",
                        f"{row['count_diff']:+,}",
                    ]
                    for row in result["growth_25_to_100"]
                ],
            ),
        ]
    )


FIGURE = Figure(
    "memory",
    "5. Memory over many calls of one transport",
    memory,
    render_memory,
    __doc__,
)

if __name__ == "__main__":
    sys.exit(run_alone(FIGURE))
