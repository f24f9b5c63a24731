"""Figures for zeep-sfrefresh, side by side in one run, against the stand-in org on loopback.

    python benchmarks/suite.py [--quick] [--json PATH]

Prints Markdown tables and writes every figure as JSON (default ``benchmarks/results.json``).
``--quick`` shrinks every count (a smoke check, under a minute); the full run takes about ten
minutes on a 2-core machine, nine of them figure 5 (tracemalloc slows the client 3x). These
are figures, not tests: nothing here fails on a bad number. The org (:class:`StandInOrg`) is a
Python HTTP server in this process (a child process holds the client for figure 5), so
absolute times are loopback-and-Python times, not Salesforce's.

What each figure means, and what it does not:

1. **Happy path.** Wall time per call, through ``zeep.Client``, of ``SalesforceTransport``
   against a plain ``zeep.Transport`` whose ``SessionHeader`` is passed by hand
   (``_soapheaders``) to a service made with ``create_service``: same compact partner WSDL, same
   org, same operation, calls interleaved in blocks of 10 whose order flips every round (ABBA)
   so drift hits both alike. The ratio is SalesforceTransport / plain (goal <= 1.02), with a
   95% bootstrap interval over blocks. Most of a call is zeep (building and parsing XML) and
   the stand-in org's own Python, so the ratio is diluted: it says what a user pays per call on
   loopback, not how much slower the transport's code is. The ``query (1 MB answer)`` row is
   the same comparison with a 1 MB answer (32 contacts of 32,000-character descriptions,
   uploaded through the API by a third client before timing). The overhead table times the
   transport's non-I/O work without any network: the pure functions on a real envelope, and
   the whole I/O-free call policy (:func:`zeep_sfrefresh.flow.soap_call`) fed a 200 answer,
   minus the ``etree.tostring`` that zeep's own transport performs too; and what the plain
   client pays instead, zeep serialising ``_soapheaders`` into each envelope.
2. **One expiry.** A call that meets ``INVALID_SESSION_ID``: the org's counters give its
   token requests and SOAP posts (goal: 1 token request, 2 posts = 1 resend), and its latency is
   compared with normal calls interleaved with it. The stand-in token endpoint answers at once;
   against Salesforce, add the real token endpoint's latency to the added time.
3. **Token requests per expiry.** N threads on one transport, N asyncio tasks on one
   ``AsyncSalesforceTransport``, and N processes sharing a ``FileTokenStore`` (``run_fleet``),
   every caller calling right after the org expired all sessions; rotation and overlap
   rejection are on, so a second refresh would show as a failed call or a revoked family.
   "held" rows park the token endpoint until every caller has met the expired session (the
   widest race); the other rows let the refresh answer as soon as it arrives, so late callers
   may already send the new token (fewer SOAP posts). Goal: 1 token request per expiry.
4. **Detection cost.** ``invalid_session_fault(status, body)`` timed directly on bytes of 1 KB,
   64 KiB, 1 MB and 50 MB (``timeit``, best of several repeats, Python call overhead included:
   see the empty-call row). A 2xx is never parsed, so its time is constant; ``parse_fault``
   and a plain lxml parse of the same bytes show what a parse would cost. Error (500) bodies
   carrying a real ``INVALID_SESSION_ID`` fault are parsed up to ``MAX_FAULT_BYTES``; a bigger
   one is not parsed (no refresh, constant time). This is the detector alone: a 50 MB answer
   through zeep is mostly zeep's own parsing (the lxml parse column is its floor), which no
   transport changes.
5. **Memory.** A child process (so the org's memory is not counted) drives
   ``SalesforceTransport.post_xml`` directly with one prebuilt ``getServerTimestamp`` envelope
   against the org, 100,000 calls (5,000 with ``--quick``), the org expiring every session
   every 1/20th of the run (20 refreshes). At 0, 25, 50, 75 and 100% of the calls (after
   ``gc.collect()``): resident memory from ``/proc/self/statm``, ``tracemalloc``'s traced
   memory (Python allocations only; lxml's C allocations show in RSS alone) and the number of
   objects the garbage collector tracks. "0" is after building the client and one warm-up
   call, with tracemalloc on from there. The largest growth sites between 25% and 100% come
   from two tracemalloc snapshots (tracemalloc's and this file's bookkeeping left out). What it
   leaves out: zeep's envelope building and answer parsing (not the transport's), and the
   async transport.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import functools
import gc
import json
import logging
import multiprocessing
import os
import platform
import random
import statistics
import sys
import sysconfig
import tempfile
import threading
import time
import timeit
import tracemalloc
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import lxml
import requests
import zeep
from lxml import etree
from requests.adapters import HTTPAdapter
from requests_oauthlib import OAuth2Session

from zeep_sfrefresh import PARTNER_WSDL, SALESFORCE_DOMAINS, SalesforceTransport
from zeep_sfrefresh.apis import SOAP_APIS, api_for_address
from zeep_sfrefresh.envelope import set_session_id
from zeep_sfrefresh.faults import MAX_FAULT_BYTES, invalid_session_fault, parse_fault
from zeep_sfrefresh.flow import Step, Verdict, soap_call
from zeep_sfrefresh.routing import DestinationPolicy, route_to_instance
from zeep_sfrefresh.testing import StandInOrg, allow_insecure_transport, wire
from zeep_sfrefresh.testing.fleet import StoreSpec, run_fleet
from zeep_sfrefresh.testing.insecure import INSECURE_TRANSPORT_VARIABLE
from zeep_sfrefresh.tokens import Generation

PARTNER_NS = SOAP_APIS["u"].namespace
SOBJECT_NS = wire.SOBJECT_NS
BINDING = f"{{{PARTNER_NS}}}SoapBinding"
SMALL_QUERY = "SELECT Id, Name FROM Contact LIMIT 10"
BULK_NAME = "Bulk"
BULK_QUERY = "SELECT Id, Description FROM Contact WHERE LastName = 'Bulk'"
BULK_RECORDS = 32
BULK_DESCRIPTION = 32_000
SOAP_HEADERS = {"SOAPAction": '""', "Content-Type": "text/xml; charset=utf-8"}
MIB = 1024 * 1024


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """Every count the suite uses; ``--quick`` picks the small set."""

    happy_rounds: int
    happy_block: int
    bulk_rounds: int
    bulk_block: int
    overhead_items: int
    overhead_repeats: int
    expiry_trials: int
    race_expiries: int
    threads: tuple[int, ...]
    tasks: tuple[int, ...]
    processes: tuple[int, ...]
    timeit_repeats: int
    timeit_target: float
    memory_calls: int


FULL = Counts(
    happy_rounds=200,
    happy_block=10,
    bulk_rounds=25,
    bulk_block=2,
    overhead_items=10_000,
    overhead_repeats=3,
    expiry_trials=100,
    race_expiries=3,
    threads=(1, 8, 32, 128),
    tasks=(1, 8, 32, 128),
    processes=(1, 4, 8),
    timeit_repeats=5,
    timeit_target=0.05,
    memory_calls=100_000,
)
QUICK = Counts(
    happy_rounds=24,
    happy_block=5,
    bulk_rounds=2,
    bulk_block=1,
    overhead_items=2_000,
    overhead_repeats=2,
    expiry_trials=10,
    race_expiries=1,
    threads=(1, 8, 32),
    tasks=(1, 8, 32),
    processes=(1, 4),
    timeit_repeats=2,
    timeit_target=0.01,
    memory_calls=5_000,
)


def machine_facts(quick: bool) -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "zeep": zeep.__version__,
        "lxml": ".".join(str(part) for part in lxml.etree.LXML_VERSION),
        "requests": requests.__version__,
        "quick": quick,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


# --- small helpers ---------------------------------------------------------------------------


def make_oauth(org: StandInOrg, token: dict[str, Any]) -> OAuth2Session:
    """An OAuth2Session on ``token`` that refreshes at the org's token endpoint."""
    return OAuth2Session(
        org.client_id,
        token=token,
        auto_refresh_url=org.token_url,
        auto_refresh_kwargs={"client_id": org.client_id, "client_secret": org.client_secret},
    )


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
class Summary:
    """Per-call times of one client, in microseconds."""

    calls: int
    median_us: float
    mean_us: float
    p10_us: float
    p90_us: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Summary:
        ordered = sorted(seconds)
        deciles = statistics.quantiles(ordered, n=10) if len(ordered) > 1 else ordered * 9
        return cls(
            calls=len(ordered),
            median_us=statistics.median(ordered) * 1e6,
            mean_us=statistics.fmean(ordered) * 1e6,
            p10_us=deciles[0] * 1e6,
            p90_us=deciles[-1] * 1e6,
        )


def bootstrap_ratio(
    blocks_a: Sequence[Sequence[float]],
    blocks_b: Sequence[Sequence[float]],
    resamples: int = 400,
) -> tuple[float, float]:
    """95% interval of median(a) / median(b), resampling whole paired blocks."""
    rng = random.Random(0)  # noqa: S311 - statistics, not secrets
    pairs = list(zip(blocks_a, blocks_b, strict=True))
    ratios = []
    for _ in range(resamples):
        picked = [pairs[rng.randrange(len(pairs))] for _ in pairs]
        a = [value for block, _ in picked for value in block]
        b = [value for _, block in picked for value in block]
        ratios.append(statistics.median(a) / statistics.median(b))
    ratios.sort()
    return ratios[int(0.025 * resamples)], ratios[int(0.975 * resamples) - 1]


def best_seconds(call: Callable[[], object], repeats: int, target: float = 0.05) -> float:
    """Seconds per call of ``call``: best of ``repeats`` runs of at least ``target`` seconds.

    Like ``timeit``'s autorange (and with its garbage collector off), with a shorter target.
    """
    timer = timeit.Timer(call)
    number = 1
    while True:
        elapsed = timer.timeit(number)
        if elapsed >= target:
            break
        number *= 10 if elapsed < target / 10 else 2
    times = [elapsed, *timer.repeat(repeat=repeats - 1, number=number)]
    return min(times) / number


def human_time(seconds: float) -> str:
    """``123 ns``, ``4.5 µs``, ``6.7 ms`` or ``1.23 s``."""
    if seconds < 1e-6:
        return f"{seconds * 1e9:.0f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def human_size(size: int) -> str:
    """``1 KB``-style labels for the body sizes (KiB/MiB shown as KB/MB, as in the brief)."""
    if size >= MIB:
        return f"{size / MIB:.0f} MB"
    return f"{size / 1024:.0f} KB"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; columns after the first are right-aligned."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(str(h)), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|"
        + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths))
        + "|",
    ]
    for row in cells:
        padded = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("| " + " | ".join(padded) + " |")
    return "\n".join(lines)


def section(title: str) -> None:
    print(f"\n### {title}\n", flush=True)


# --- 1. happy path ---------------------------------------------------------------------------


def create_bulk_contacts(client: zeep.Client) -> None:
    """Create the records behind the 1 MB query answer, through the partner ``create`` call."""
    sobject = client.get_type(f"{{{SOBJECT_NS}}}sObject")
    records = []
    for number in range(BULK_RECORDS):
        fields = []
        for name, value in (
            ("LastName", BULK_NAME),
            ("Description", f"{number:05d}" + "x" * (BULK_DESCRIPTION - 5)),
        ):
            element = etree.Element(f"{{{SOBJECT_NS}}}{name}")
            element.text = value
            fields.append(element)
        records.append(sobject(type="Contact", _value_1=fields))
    results = client.service.create(records).body.result
    assert all(result.success for result in results), "bulk create failed"


def time_interleaved(
    calls: dict[str, Callable[[], object]], rounds: int, block: int
) -> dict[str, list[list[float]]]:
    """Per-call seconds of each callable, in blocks of ``block``, order flipped every round."""
    names = list(calls)
    blocks: dict[str, list[list[float]]] = {name: [] for name in names}
    clock = time.perf_counter
    for number in range(rounds):
        order = names if number % 2 == 0 else names[::-1]
        for name in order:
            call = calls[name]
            times = []
            for _ in range(block):
                started = clock()
                call()
                times.append(clock() - started)
            blocks[name].append(times)
    return blocks


def happy_path(counts: Counts) -> dict[str, Any]:
    """Figure 1: SalesforceTransport against a plain zeep.Transport, same org and operation."""
    with StandInOrg() as org:
        token = org.issue_token()
        session_header = {"SessionHeader": {"sessionId": token["access_token"]}}
        sf_client = zeep.Client(PARTNER_WSDL, transport=SalesforceTransport(make_oauth(org, token)))
        plain_client = zeep.Client(PARTNER_WSDL, transport=zeep.Transport())
        sf = sf_client.service
        plain = plain_client.create_service(BINDING, org.url + org.soap_path())
        # A third client uploads the 1 MB of records: on loopback, a keep-alive connection that
        # has uploaded 1 MB downloads the next 1 MB answers ~20% faster, which favoured whichever
        # timed client made the upload (a ratio of 0.80 when it was SalesforceTransport's).
        create_bulk_contacts(
            zeep.Client(PARTNER_WSDL, transport=SalesforceTransport(make_oauth(org, token)))
        )
        with sf_client.settings(raw_response=True):
            bulk_bytes = len(sf.query(BULK_QUERY).content)
            small_bytes = len(sf.query(SMALL_QUERY).content)
            stamp_bytes = len(sf.getServerTimestamp().content)
        operations: list[tuple[str, int, dict[str, Callable[[], object]], int, int]] = [
            (
                "query (10 records)",
                small_bytes,
                {
                    "plain": lambda: plain.query(SMALL_QUERY, _soapheaders=session_header),
                    "sf": lambda: sf.query(SMALL_QUERY),
                },
                counts.happy_rounds,
                counts.happy_block,
            ),
            (
                "getServerTimestamp",
                stamp_bytes,
                {
                    "plain": lambda: plain.getServerTimestamp(_soapheaders=session_header),
                    "sf": lambda: sf.getServerTimestamp(),
                },
                counts.happy_rounds,
                counts.happy_block,
            ),
            (
                "query (1 MB answer)",
                bulk_bytes,
                {
                    "plain": lambda: plain.query(BULK_QUERY, _soapheaders=session_header),
                    "sf": lambda: sf.query(BULK_QUERY),
                },
                counts.bulk_rounds,
                counts.bulk_block,
            ),
        ]
        rows = []
        for label, answer_bytes, calls, rounds, block in operations:
            for call in calls.values():  # warm up: connections, zeep's caches
                for _ in range(3):
                    call()
            posts_before = org.soap_posts
            blocks = time_interleaved(calls, rounds, block)
            assert org.soap_posts - posts_before == 2 * rounds * block, "unexpected extra posts"
            sf_times = [t for b in blocks["sf"] for t in b]
            plain_times = [t for b in blocks["plain"] for t in b]
            low, high = bootstrap_ratio(blocks["sf"], blocks["plain"])
            plain_summary, sf_summary = Summary.of(plain_times), Summary.of(sf_times)
            rows.append(
                {
                    "operation": label,
                    "answer_bytes": answer_bytes,
                    "rounds": rounds,
                    "block": block,
                    "plain": asdict(plain_summary),
                    "sf": asdict(sf_summary),
                    "ratio_median": sf_summary.median_us / plain_summary.median_us,
                    "ratio_median_ci95": [low, high],
                    "ratio_mean": sf_summary.mean_us / plain_summary.mean_us,
                }
            )
        overhead = transport_overhead(sf_client, plain, session_header, org, counts)
        assert not org.internal_errors, org.internal_errors
    return {"operations": rows, "overhead": overhead}


class _Ok:
    """The least a 2xx answer needs to be for the call policy."""

    status_code = 200
    content = b""


def transport_overhead(
    client: zeep.Client,
    plain: Any,
    session_header: dict[str, Any],
    org: StandInOrg,
    counts: Counts,
) -> dict[str, Any]:
    """The transport's non-I/O work per call, timed on real envelopes without any network.

    Also what the plain client pays instead: zeep serialising ``_soapheaders`` into each
    envelope (``create_message`` with the header minus without it).
    """
    transport: SalesforceTransport = client.transport
    token = transport.token
    current = Generation(token, 1)
    instance_url = token.instance_url or org.url
    address = client.service._binding_options["address"]
    routed = route_to_instance(address, instance_url)
    policy = DestinationPolicy(tuple(SALESFORCE_DOMAINS), allow_loopback=True)
    envelope = client.create_message(client.service, "query", SMALL_QUERY)
    with_header = copy.deepcopy(envelope)
    set_session_id(with_header, PARTNER_NS, token.access_token)

    def run_flow(fresh: etree._Element) -> None:
        flow: Generator[Step, Any, _Ok] = soap_call(
            fresh, address, current, route=True, policy=policy
        )
        next(flow)
        step = flow.send(_Ok())  # the verdict: the session worked
        if not isinstance(step, Verdict):
            raise AssertionError("the call policy did not judge a 200")
        try:
            flow.send(None)
        except StopIteration:
            return
        raise AssertionError("the call policy did not finish on a 200")

    def per_item(work: Callable[[etree._Element], object], base: etree._Element) -> float:
        """Best seconds per envelope over fresh deep copies (copying is not timed)."""
        best = float("inf")
        for _ in range(counts.overhead_repeats):
            copies = [copy.deepcopy(base) for _ in range(counts.overhead_items)]
            started = time.perf_counter()
            for item in copies:
                work(item)
            best = min(best, (time.perf_counter() - started) / len(copies))
        return best

    def per_call(work: Callable[[], object]) -> float:
        return best_seconds(work, counts.overhead_repeats)

    def tostring(item: etree._Element) -> bytes:
        return etree.tostring(item, xml_declaration=True, encoding="utf-8")

    timings = {
        "set_session_id, header added (zeep built no SessionHeader)": per_item(
            lambda item: set_session_id(item, PARTNER_NS, token.access_token), envelope
        ),
        "set_session_id, value replaced (resend)": per_call(
            lambda: set_session_id(with_header, PARTNER_NS, token.access_token)
        ),
        "api_for_address + route_to_instance": per_call(
            lambda: (api_for_address(address), route_to_instance(address, instance_url))
        ),
        "DestinationPolicy.check": per_call(lambda: policy.check(routed, instance_url)),
        "invalid_session_fault on the 200": per_call(lambda: invalid_session_fault(200, b"")),
        "whole call policy (flow.soap_call) to a 200, tostring included": per_item(
            run_flow, envelope
        ),
        "etree.tostring of the envelope (zeep's Transport does it too)": per_item(
            tostring, with_header
        ),
    }
    flow_seconds = timings["whole call policy (flow.soap_call) to a 200, tostring included"]
    tostring_seconds = timings["etree.tostring of the envelope (zeep's Transport does it too)"]
    plain_client = plain._client
    with_soapheaders = per_call(
        lambda: plain_client.create_message(
            plain, "query", SMALL_QUERY, _soapheaders=session_header
        )
    )
    without = per_call(lambda: plain_client.create_message(plain, "query", SMALL_QUERY))
    return {
        "envelope_bytes": len(tostring(with_header)),
        "seconds": timings,
        "overhead_seconds": flow_seconds - tostring_seconds,
        "plain_soapheaders_seconds": with_soapheaders - without,
    }


def print_happy_path(result: dict[str, Any]) -> None:
    section("1. Happy path: time per call through zeep.Client, loopback")
    rows = []
    for op in result["operations"]:
        low, high = op["ratio_median_ci95"]
        rows.append(
            [
                op["operation"],
                f"{op['answer_bytes']:,}",
                f"{op['plain']['calls']:,}",
                f"{op['plain']['median_us'] / 1000:.3f} / {op['plain']['mean_us'] / 1000:.3f}",
                f"{op['sf']['median_us'] / 1000:.3f} / {op['sf']['mean_us'] / 1000:.3f}",
                f"{op['ratio_median']:.3f} ({low:.3f}-{high:.3f})",
                f"{op['ratio_mean']:.3f}",
            ]
        )
    print(
        markdown_table(
            [
                "operation",
                "answer bytes",
                "calls each",
                "plain zeep median / mean ms",
                "SalesforceTransport median / mean ms",
                "ratio of medians (95% CI)",
                "ratio of means",
            ],
            rows,
        )
    )
    overhead = result["overhead"]
    print(
        f"\nThe transport's own work per call, no network "
        f"({overhead['envelope_bytes']:,}-byte query envelope):\n"
    )
    rows = [[name, human_time(seconds)] for name, seconds in overhead["seconds"].items()]
    rows.append(
        ["**overhead: call policy minus tostring**", human_time(overhead["overhead_seconds"])]
    )
    rows.append(
        [
            "plain client instead: zeep serialising `_soapheaders` (create_message with - without)",
            human_time(overhead["plain_soapheaders_seconds"]),
        ]
    )
    print(markdown_table(["step", "time per call"], rows))


# --- 2. one expiry ---------------------------------------------------------------------------


def one_expiry(counts: Counts) -> dict[str, Any]:
    """Figure 2: what the call that meets an expired session costs."""
    with StandInOrg() as org:
        token = org.issue_token()
        client = zeep.Client(PARTNER_WSDL, transport=SalesforceTransport(make_oauth(org, token)))
        service = client.service
        for _ in range(20):
            service.query(SMALL_QUERY)
        normal: list[float] = []
        expired: list[float] = []
        token_requests: list[int] = []
        soap_posts: list[int] = []
        clock = time.perf_counter
        for _ in range(counts.expiry_trials):
            for _ in range(3):
                started = clock()
                service.query(SMALL_QUERY)
                normal.append(clock() - started)
            org.expire_all_sessions()
            tokens_before, posts_before = org.token_requests, org.soap_posts
            started = clock()
            answer = service.query(SMALL_QUERY)
            expired.append(clock() - started)
            assert int(answer.body.result.size) == 10
            token_requests.append(org.token_requests - tokens_before)
            soap_posts.append(org.soap_posts - posts_before)
        assert not org.internal_errors, org.internal_errors
    normal_summary, expired_summary = Summary.of(normal), Summary.of(expired)
    return {
        "trials": counts.expiry_trials,
        "normal": asdict(normal_summary),
        "expired": asdict(expired_summary),
        "added_median_us": expired_summary.median_us - normal_summary.median_us,
        "token_requests_per_expired_call": statistics.fmean(token_requests),
        "token_requests_max": max(token_requests),
        "soap_posts_per_expired_call": statistics.fmean(soap_posts),
        "soap_posts_max": max(soap_posts),
    }


def print_one_expiry(result: dict[str, Any]) -> None:
    section("2. One expiry: the call that meets INVALID_SESSION_ID (query, 10 records)")
    normal, expired = result["normal"], result["expired"]
    print(
        markdown_table(
            [
                "trials",
                "normal call median ms",
                "expired call median ms",
                "added ms (median)",
                "token requests per expired call",
                "SOAP posts per expired call",
            ],
            [
                [
                    result["trials"],
                    f"{normal['median_us'] / 1000:.3f}",
                    f"{expired['median_us'] / 1000:.3f}",
                    f"{result['added_median_us'] / 1000:.3f}",
                    f"{result['token_requests_per_expired_call']:.2f} "
                    f"(max {result['token_requests_max']})",
                    f"{result['soap_posts_per_expired_call']:.2f} (max {result['soap_posts_max']})",
                ]
            ],
        )
    )


# --- 3. token requests per expiry ------------------------------------------------------------


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


# --- 4. detection ----------------------------------------------------------------------------


def success_body(size: int) -> bytes:
    """A partner query answer (HTTP 200) of about ``size`` bytes, made of real-looking records."""
    flavour = wire.FLAVOURS["u"]
    shell = len(wire.soap_response(flavour, wire.query_result_xml("query", [], **_done(0))))
    record_text = "y" * 200
    one = (
        '<records xsi:type="sf:sObject"><sf:type>Contact</sf:type>'
        "<sf:Id>003000000000001AAA</sf:Id><sf:Description>{}</sf:Description></records>"
    )
    per_record = len(one.format(record_text))
    count = max(1, (size - shell) // per_record)
    records = [one.format(record_text) for _ in range(count)]
    body = wire.soap_response(
        flavour, wire.query_result_xml("query", records, **_done(count)), sobjects=True
    )
    missing = size - len(body)
    if missing > 0:  # top up the last record's text to the exact size
        records[-1] = one.format(record_text + "y" * missing)
        body = wire.soap_response(
            flavour, wire.query_result_xml("query", records, **_done(count)), sobjects=True
        )
    return body


def _done(size: int) -> dict[str, Any]:
    return {"done": True, "locator": None, "size": size}


def padded_fault(size: int) -> bytes:
    """A real partner INVALID_SESSION_ID fault envelope, its faultstring padded to ``size``."""
    flavour = wire.FLAVOURS["u"]
    bare = wire.invalid_session_fault(flavour)
    padding = " " * max(0, size - len(bare))
    faultstring = f"INVALID_SESSION_ID: {wire.INVALID_SESSION_MESSAGE}{padding}"
    return wire.soap_fault(
        flavour, "INVALID_SESSION_ID", wire.INVALID_SESSION_MESSAGE, faultstring=faultstring
    )


def full_parse(body: bytes) -> etree._Element:
    """What parsing the answer would cost: lxml, the detector's hardened settings, no size cap."""
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True
    )
    return etree.fromstring(body, parser=parser)


def _nothing() -> None:
    """The empty call of figure 4's baseline (timed through ``functools.partial``, as the rest)."""


def detection(counts: Counts) -> dict[str, Any]:
    """Figure 4: the cost of fault detection on 2xx and error answers of several sizes."""
    repeats = counts.timeit_repeats

    def timed(call: Callable[[], object], repeats: int = repeats) -> float:
        return best_seconds(call, repeats, counts.timeit_target)

    sizes = [1024, MAX_FAULT_BYTES, MIB, 50 * MIB]
    empty = timed(functools.partial(_nothing))
    successes = []
    for size in sizes:
        body = success_body(size)
        parse_repeats = 1 if size > MIB and repeats < 3 else repeats
        successes.append(
            {
                "size": len(body),
                "invalid_session_fault_200_s": timed(
                    functools.partial(invalid_session_fault, 200, body),
                ),
                "parse_fault_s": timed(functools.partial(parse_fault, body)),
                "parse_fault_parsed": len(body) <= MAX_FAULT_BYTES,
                "full_lxml_parse_s": timed(functools.partial(full_parse, body), parse_repeats),
            }
        )
        del body
        gc.collect()
    faults = []
    fault_sizes = [
        len(wire.invalid_session_fault(wire.FLAVOURS["u"])),
        MAX_FAULT_BYTES,
        MAX_FAULT_BYTES + 1,
        MIB,
        50 * MIB,
    ]
    for size in fault_sizes:
        body = padded_fault(size)
        assert len(body) == size, (len(body), size)
        assert full_parse(body).find(".//faultcode") is not None  # it is a real fault
        found_500 = invalid_session_fault(500, body)
        found_200 = invalid_session_fault(200, body)
        faults.append(
            {
                "size": len(body),
                "invalid_session_fault_500_s": timed(
                    functools.partial(invalid_session_fault, 500, body),
                ),
                "refresh_on_500": found_500 is not None,
                "invalid_session_fault_200_s": timed(
                    functools.partial(invalid_session_fault, 200, body),
                ),
                "refresh_on_200": found_200 is not None,
            }
        )
        del body
        gc.collect()
    return {
        "max_fault_bytes": MAX_FAULT_BYTES,
        "empty_call_s": empty,
        "successes": successes,
        "faults": faults,
    }


def print_detection(result: dict[str, Any]) -> None:
    section("4. Cost of detection (the detector alone, no network, no zeep)")
    print(
        markdown_table(
            [
                "2xx answer",
                "invalid_session_fault(200, body)",
                "parse_fault(body)",
                "lxml parse of the body (the cost avoided)",
            ],
            [
                [
                    f"{human_size(row['size'])} ({row['size']:,} B)",
                    human_time(row["invalid_session_fault_200_s"]),
                    human_time(row["parse_fault_s"])
                    + ("" if row["parse_fault_parsed"] else " (over the cap: not parsed)"),
                    human_time(row["full_lxml_parse_s"]),
                ]
                for row in result["successes"]
            ],
        )
    )
    print(
        f"\nAnswers carrying a real INVALID_SESSION_ID fault (MAX_FAULT_BYTES = "
        f"{result['max_fault_bytes']:,}):\n"
    )
    print(
        markdown_table(
            ["fault body", "status 500: time", "refresh?", "status 200: time", "refresh?"],
            [
                [
                    f"{row['size']:,} B",
                    human_time(row["invalid_session_fault_500_s"]),
                    "yes (parsed)" if row["refresh_on_500"] else "no (not parsed)",
                    human_time(row["invalid_session_fault_200_s"]),
                    "yes" if row["refresh_on_200"] else "no (not parsed)",
                ]
                for row in result["faults"]
            ],
        )
    )
    print(
        "\nAn empty Python call (through `functools.partial`, as the timed calls) costs "
        f"{human_time(result['empty_call_s'])}."
    )


# --- 5. memory -------------------------------------------------------------------------------


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
    with StandInOrg() as org:
        process = context.Process(
            target=_memory_child,
            args=(child, org.url, org.client_id, org.client_secret, org.issue_token()),
            daemon=True,
        )
        process.start()
        try:
            checkpoints = []
            calls = failed = token_requests = soap_posts = 0
            seconds = 0.0

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
                seconds += chunk_seconds
                # The org keeps a list of every post; empty it so the parent stays small too.
                token_requests += org.token_requests
                soap_posts += org.soap_posts
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
        assert not org.internal_errors, org.internal_errors
    return {
        "calls": total,
        "expiries": 20,
        "failed_calls": failed,
        "token_requests": token_requests,
        "soap_posts": soap_posts,
        "calls_per_second": total / seconds,
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


def print_memory(result: dict[str, Any]) -> None:
    section(
        f"5. Memory over {result['calls']:,} calls of SalesforceTransport.post_xml "
        f"(getServerTimestamp, prebuilt envelope, {result['expiries']} expiries)"
    )
    base = next(row for row in result["checkpoints"] if row["calls"] == result["calls"] // 4)
    print(
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
        )
    )
    print(
        f"\n{result['calls']:,} calls, {result['failed_calls']} failed, "
        f"{result['token_requests']} token requests, {result['soap_posts']:,} SOAP posts, "
        f"{result['calls_per_second']:,.0f} calls/s (tracemalloc on)."
    )
    print("Largest traced growth between 25% and 100% of the calls:\n")
    print(
        markdown_table(
            ["where", "bytes", "blocks"],
            [
                [short_path(row["where"]), f"{row['size_diff']:+,}", f"{row['count_diff']:+,}"]
                for row in result["growth_25_to_100"]
            ],
        )
    )


# --- main ------------------------------------------------------------------------------------


Printer = Callable[[dict[str, Any]], None]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke check")
    parser.add_argument(
        "--json",
        type=Path,
        default=Path(__file__).resolve().parent / "results.json",
        help="where to write the figures (default: benchmarks/results.json)",
    )
    args = parser.parse_args(argv)
    counts = QUICK if args.quick else FULL
    # Warnings from a refused refresh or a full connection pool would land on stderr unasked.
    logging.getLogger("urllib3").setLevel(logging.ERROR)

    facts = machine_facts(args.quick)
    print(
        f"zeep-sfrefresh benchmarks{' (--quick)' if args.quick else ''}: "
        f"Python {facts['python']} ({facts['implementation']}), {facts['cpu_count']} CPUs, "
        f"{facts['platform']}; zeep {facts['zeep']}, lxml {facts['lxml']}, "
        f"requests {facts['requests']}"
    )
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": facts, "counts": asdict(counts)}
    sections: list[tuple[str, Callable[[Counts], dict[str, Any]], Printer]] = [
        ("happy_path", happy_path, print_happy_path),
        ("one_expiry", one_expiry, print_one_expiry),
        ("races", races, print_races),
        ("detection", detection, print_detection),
        ("memory", memory, print_memory),
    ]
    with allow_insecure_transport():
        for key, run, show in sections:
            section_started = time.perf_counter()
            results[key] = run(counts)
            results[key]["seconds"] = time.perf_counter() - section_started
            show(results[key])
            print(f"\n({results[key]['seconds']:.0f} s)", flush=True)
    results["seconds"] = time.perf_counter() - started
    print(f"\nTotal {results['seconds']:.0f} s. JSON: {args.json}")
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
