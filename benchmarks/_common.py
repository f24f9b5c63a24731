"""What the figure scripts share: counts, machine facts, statistics, formatting and running.

Not a script. Each figure (``happy_path.py``, ``one_expiry.py``, ``races.py``, ``detection.py``,
``memory.py``) imports it as ``_common``: run as ``python benchmarks/<name>.py``, a script's own
directory is on ``sys.path``. ``suite.py`` runs the five figures and writes their JSON.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import statistics
import time
import timeit
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import lxml
import requests
import zeep
from requests_oauthlib import OAuth2Session

from zeep_sfrefresh.testing import StandInOrg, allow_insecure_transport

SMALL_QUERY = "SELECT Id, Name FROM Contact LIMIT 10"
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


# --- the org ---------------------------------------------------------------------------------


def make_oauth(org: StandInOrg, token: dict[str, Any]) -> OAuth2Session:
    """An OAuth2Session on ``token`` that refreshes at the org's token endpoint."""
    return OAuth2Session(
        org.client_id,
        token=token,
        auto_refresh_url=org.token_url,
        auto_refresh_kwargs={"client_id": org.client_id, "client_secret": org.client_secret},
    )


# --- statistics ------------------------------------------------------------------------------


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


# --- formatting ------------------------------------------------------------------------------


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


# --- running ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """One figure: its key in the JSON, how to measure it and how to print what it measured."""

    key: str
    run: Callable[[Counts], dict[str, Any]]
    show: Callable[[dict[str, Any]], None]


def arguments(doc: str | None) -> argparse.ArgumentParser:
    """The command line every script takes, ``--quick``, described by ``doc``'s first line."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke check")
    return parser


def run_figures(figures: Sequence[Figure], quick: bool) -> dict[str, Any]:
    """Measure and print ``figures`` in order, each followed by its seconds; return the results.

    The results hold the machine facts, the counts, each figure's result under its key (with
    its ``seconds``) and the total ``seconds``, in that order.
    """
    counts = QUICK if quick else FULL
    # Warnings from a refused refresh or a full connection pool would land on stderr unasked.
    logging.getLogger("urllib3").setLevel(logging.ERROR)

    facts = machine_facts(quick)
    print(
        f"zeep-sfrefresh benchmarks{' (--quick)' if quick else ''}: "
        f"Python {facts['python']} ({facts['implementation']}), {facts['cpu_count']} CPUs, "
        f"{facts['platform']}; zeep {facts['zeep']}, lxml {facts['lxml']}, "
        f"requests {facts['requests']}"
    )
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": facts, "counts": asdict(counts)}
    with allow_insecure_transport():
        for figure in figures:
            figure_started = time.perf_counter()
            results[figure.key] = figure.run(counts)
            results[figure.key]["seconds"] = time.perf_counter() - figure_started
            figure.show(results[figure.key])
            print(f"\n({results[figure.key]['seconds']:.0f} s)", flush=True)
    results["seconds"] = time.perf_counter() - started
    return results


def run_alone(figure: Figure, doc: str | None, argv: Sequence[str] | None = None) -> int:
    """The ``__main__`` of a figure script: measure and print that figure alone."""
    args = arguments(doc).parse_args(argv)
    run_figures([figure], args.quick)
    return 0
