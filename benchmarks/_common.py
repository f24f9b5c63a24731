"""What the figure scripts share: counts, machine facts, the org, statistics, formatting, running.

Not a script. Each figure (``happy_path.py``, ``one_expiry.py``, ``races.py``, ``detection.py``,
``memory.py``) imports it as ``_common``: run as ``python benchmarks/<name>.py``, a script's own
directory is on ``sys.path``. ``suite.py`` runs the five figures and writes their JSON (and,
with ``--write``, ``RESULTS.md``).

The figures that time calls talk to a :class:`RemoteOrg`: a stand-in org in a process of its
own, so the client being timed has this process and its GIL to itself, as it would against
Salesforce. Every timed figure is a :class:`Spread`: the median and the min-max over rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import multiprocessing
import os
import platform
import re
import statistics
import subprocess
import threading
import time
import timeit
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import lxml
import requests
import zeep
from requests_oauthlib import OAuth2Session

from zeep_sfrefresh.testing import StandInOrg, allow_insecure_transport
from zeep_sfrefresh.testing.fleet import wait_for_posts
from zeep_sfrefresh.testing.knobs import Knobs

SMALL_QUERY = "SELECT Id, Name FROM Contact LIMIT 10"
MIB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent


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
    recovery_workers: tuple[int, ...]
    recovery_rounds: int


FULL = Counts(
    happy_rounds=100,
    happy_block=20,
    bulk_rounds=25,
    bulk_block=2,
    overhead_items=10_000,
    overhead_repeats=5,
    expiry_trials=300,
    race_expiries=3,
    threads=(1, 8, 32, 128),
    tasks=(1, 8, 32, 128),
    processes=(1, 4, 8),
    timeit_repeats=5,
    timeit_target=0.05,
    memory_calls=50_000,
    recovery_workers=(8, 32),
    recovery_rounds=45,
)
QUICK = Counts(
    happy_rounds=10,
    happy_block=10,
    bulk_rounds=3,
    bulk_block=2,
    overhead_items=2_000,
    overhead_repeats=3,
    expiry_trials=30,
    race_expiries=2,
    threads=(1, 8, 32),
    tasks=(1, 8, 32),
    processes=(1, 4),
    timeit_repeats=3,
    timeit_target=0.01,
    memory_calls=2_000,
    recovery_workers=(8,),
    recovery_rounds=15,  # a median of fewer rounds says little: a round is ms long and noisy
)


def git_commit() -> str:
    """``git rev-parse --short HEAD``, plus ``+dirty`` when the tree has changes; or ``unknown``."""

    def git(*args: str) -> str:
        return subprocess.run(  # noqa: S603 - a fixed git command
            ["git", *args],  # noqa: S607 - git from PATH, as a developer runs it
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = bool(git("status", "--porcelain"))
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts(quick: bool) -> dict[str, Any]:
    """What the figures were measured on, and at which commit."""
    return {
        "commit": git_commit(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "zeep": zeep.__version__,
        "lxml": ".".join(str(part) for part in lxml.etree.LXML_VERSION),
        "requests": requests.__version__,
        "quick": quick,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "load_average": load_average(),
    }


def cpu_seconds(pids: Sequence[int]) -> float | None:
    """CPU time the processes ``pids`` (other than this one: see ``time.process_time``)
    have used so far, every thread of each, from Linux's ``/proc/<pid>/task/*/schedstat``
    (nanoseconds); None where that is not available. A thread that ended is not counted,
    so ``pids`` should be processes whose threads last, like the fleet's workers."""
    total = 0
    try:
        for pid in pids:
            for task in os.listdir(f"/proc/{pid}/task"):
                try:
                    with open(f"/proc/{pid}/task/{task}/schedstat") as stats:
                        total += int(stats.read().split()[0])
                except FileNotFoundError:
                    continue  # the thread ended meanwhile
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


def load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages (other work on the machine widens the ranges)."""
    try:
        return [round(load, 2) for load in os.getloadavg()]
    except OSError:
        return []


def describe_machine(facts: Mapping[str, Any]) -> str:
    """One line: Python, CPUs, platform and the libraries' versions."""
    return (
        f"Python {facts['python']} ({facts['implementation']}), "
        f"{facts['cpu_count']} CPUs ({facts['cpu']}), {facts['platform']}; "
        f"zeep {facts['zeep']}, lxml {facts['lxml']}, requests {facts['requests']}"
    )


# --- the org, in a process of its own -------------------------------------------------------

KNOBS = frozenset(field.name for field in dataclasses.fields(Knobs))
Command = Literal[
    "issue_token",
    "expire_all_sessions",
    "reset_counters",
    "counters",
    "hold",
    "release",
    "set",
    "wait_for_soap_posts",
    "stop",
]
"""What :class:`RemoteOrg` asks of its org's process."""


@dataclass(frozen=True)
class OrgCounters:
    """A copy of the remote org's counters (see ``StandInOrg``)."""

    token_requests: int
    token_failures: int
    soap_posts: int
    family_revocations: int
    overlap_rejections: int
    internal_errors: tuple[str, ...]


def counters_of(org: StandInOrg) -> OrgCounters:
    """An org's counters, read in the org's process."""
    return OrgCounters(
        org.token_requests,
        org.token_failures,
        org.soap_posts,
        org.family_revocations,
        org.overlap_rejections,
        tuple(org.internal_errors),
    )


@dataclass(frozen=True)
class OrgAddress:
    """Where the remote org listens and who its connected app is."""

    url: str
    client_id: str
    client_secret: str
    soap_path: str


def _serve_org(conn: Connection, rotation: bool) -> None:
    """The org's process: serve a :class:`StandInOrg` and obey ``(command, argument)`` pairs.

    Every command is answered ``("ok", value)`` or ``("error", text)``; ``stop`` ends it.
    """
    org = StandInOrg(rotation=rotation).start()
    hold: threading.Event | None = None
    try:
        conn.send(("ok", OrgAddress(org.url, org.client_id, org.client_secret, org.soap_path())))
        while True:
            command, argument = conn.recv()
            try:
                value: object = None
                if command == "issue_token":
                    value = org.issue_token()
                elif command == "expire_all_sessions":
                    org.expire_all_sessions()
                elif command == "reset_counters":
                    org.reset_counters()
                elif command == "counters":
                    value = counters_of(org)
                elif command == "hold":
                    hold = org.hold_token_requests()
                elif command == "release":
                    if hold is not None:
                        hold.set()
                        hold = None
                elif command == "set":
                    name, knob = argument
                    if name not in KNOBS:
                        raise ValueError(f"no knob {name!r}")
                    setattr(org.knobs, name, knob)
                elif command == "wait_for_soap_posts":
                    target, timeout = argument
                    wait_for_posts(lambda: org.soap_posts, target, timeout=timeout)
                elif command == "stop":
                    conn.send(("ok", None))
                    return
                else:
                    raise ValueError(f"unknown command {command!r}")
            except Exception as exc:  # noqa: BLE001 - reported to the benchmark, which raises
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
            else:
                conn.send(("ok", value))
    finally:
        if hold is not None:
            hold.set()
        org.stop()


class RemoteOrg:
    """A :class:`StandInOrg` in a spawned process of its own, driven over a pipe.

    The client under test then has the benchmark's process (and its GIL) to itself, and the
    org's Python (parsing requests, building answers) runs beside it, as a server would. It
    does what the figures need of an org: tokens, expiries, counters, holding the token
    endpoint, knobs. Use it as a context manager; it serves until :meth:`stop`.
    """

    def __init__(self, *, rotation: bool = False) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve_org, args=(child, rotation), name="stand-in org", daemon=True
        )
        self._lock = threading.Lock()
        self._address: OrgAddress | None = None

    def start(self) -> RemoteOrg:
        self._process.start()
        answer = self._answer(timeout=120)
        assert isinstance(answer, OrgAddress)
        self._address = answer
        return self

    def stop(self) -> None:
        """Stop the org and its process (killed if it does not end within 30 s)."""
        if self._process.is_alive():
            with suppress(OSError, EOFError, RuntimeError):
                self._call("stop")
            self._process.join(timeout=30)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        self._conn.close()

    def __enter__(self) -> RemoteOrg:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _answer(self, timeout: float) -> object:
        if not self._conn.poll(timeout):
            raise RuntimeError(f"the remote org did not answer within {timeout:.0f} s")
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"the remote org refused: {value}")
        return value

    def _call(self, command: Command, argument: object = None) -> object:
        with self._lock:
            self._conn.send((command, argument))
            return self._answer(timeout=180)

    @property
    def address(self) -> OrgAddress:
        if self._address is None:
            raise RuntimeError("the remote org is not started")
        return self._address

    @property
    def url(self) -> str:
        return self.address.url

    @property
    def client_id(self) -> str:
        return self.address.client_id

    @property
    def client_secret(self) -> str:
        return self.address.client_secret

    @property
    def token_url(self) -> str:
        return self.url + "/services/oauth2/token"

    def soap_path(self) -> str:
        """The partner API's path at the org's default version."""
        return self.address.soap_path

    def issue_token(self) -> dict[str, str]:
        token = self._call("issue_token")
        assert isinstance(token, dict)
        return token

    def expire_all_sessions(self) -> None:
        self._call("expire_all_sessions")

    def reset_counters(self) -> None:
        self._call("reset_counters")

    def counters(self) -> OrgCounters:
        counters = self._call("counters")
        assert isinstance(counters, OrgCounters)
        return counters

    @property
    def token_requests(self) -> int:
        return self.counters().token_requests

    @property
    def soap_posts(self) -> int:
        return self.counters().soap_posts

    def set_knob(self, name: str, value: object) -> None:
        """Set one of the org's knobs (``Knobs`` field) by name."""
        self._call("set", (name, value))

    def wait_for_soap_posts(self, target: int, timeout: float = 60.0) -> None:
        """Return once the org has received ``target`` SOAP posts in all, or no more for a
        moment (callers that joined the refresh under way do not post): the org polls,
        :func:`zeep_sfrefresh.testing.fleet.wait_for_posts`."""
        self._call("wait_for_soap_posts", (target, timeout))

    @contextmanager
    def holding_token_requests(self, hold: bool = True) -> Iterator[None]:
        """Hold every token request inside the block (nothing when ``hold`` is false)."""
        if not hold:
            yield
            return
        self._call("hold")
        try:
            yield
        finally:
            self._call("release")

    def check(self) -> None:
        """Raise if the org itself failed while answering (a bug in the stand-in)."""
        errors = self.counters().internal_errors
        assert not errors, errors


def make_oauth(org: RemoteOrg, token: dict[str, Any]) -> OAuth2Session:
    """An OAuth2Session on ``token`` that refreshes at the org's token endpoint."""
    return OAuth2Session(
        org.client_id,
        token=token,
        auto_refresh_url=org.token_url,
        auto_refresh_kwargs={"client_id": org.client_id, "client_secret": org.client_secret},
    )


# --- statistics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """One quantity over rounds: its median and its range (min-max)."""

    rounds: int
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("a spread of no values")
        return cls(len(values), statistics.median(values), min(values), max(values))

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> Spread:
        """The spread ``asdict`` wrote into the JSON."""
        return cls(data["rounds"], data["median"], data["low"], data["high"])

    def show(self, unit: Callable[[float], str] = lambda value: f"{value:.3f}") -> str:
        """``median (low-high)`` in ``unit``; just the median when every round agreed."""
        if self.low == self.high:
            return unit(self.median)
        return f"{unit(self.median)} ({unit(self.low)}-{unit(self.high)})"


@dataclass(frozen=True)
class Paired:
    """What :func:`paired_rounds` measured: per callable, its median per round, in seconds.

    ``wall`` is the call's wall time; ``cpu`` the CPU time this process spent in it (the
    client's own work: the org runs in another process, and other programs' load on the
    machine barely moves it).
    """

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]


def paired_rounds(calls: Mapping[str, Callable[[], object]], rounds: int, block: int) -> Paired:
    """Each callable's median time per call in each round; calls alternate within a round.

    A round makes ``block`` calls of each callable, one of each in turn, the order reversed
    from one turn to the next (ABBA...) and from one round to the next, so that drift and
    position hit every callable alike. Ratios of two callables' round medians are paired:
    both were measured over the same stretch of time.
    """
    names = list(calls)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    clock, cpu_clock = time.perf_counter, time.process_time
    for number in range(rounds):
        walls: dict[str, list[float]] = {name: [] for name in names}
        cpus: dict[str, list[float]] = {name: [] for name in names}
        for turn in range(block):
            for name in names if (number + turn) % 2 == 0 else reversed(names):
                call = calls[name]
                started, cpu_started = clock(), cpu_clock()
                call()
                cpu_ended, ended = cpu_clock(), clock()
                walls[name].append(ended - started)
                cpus[name].append(cpu_ended - cpu_started)
        for name in names:
            wall[name].append(statistics.median(walls[name]))
            cpu[name].append(statistics.median(cpus[name]))
    return Paired(wall, cpu)


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Round by round ``numerators[i] / denominators[i]``."""
    return [a / b for a, b in zip(numerators, denominators, strict=True)]


def repeat_seconds(call: Callable[[], object], repeats: int, target: float = 0.05) -> list[float]:
    """Seconds per call of ``call`` in each of ``repeats`` runs of at least ``target`` seconds.

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
    return [seconds / number for seconds in times]


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run a collection, then keep the cyclic garbage collector off inside the block (and
    as it was after it).

    As ``timeit`` does: a collection lands wherever the allocation count runs out, so a
    lone timed call may carry one that was counted up by calls before it.
    """
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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


def ms(seconds: float) -> str:
    """Seconds as milliseconds, three decimals (``5.111``)."""
    return f"{seconds * 1e3:.3f}"


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


def described(doc: str | None) -> str:
    """A figure script's docstring without its title line and its indented usage line, its
    reST literals (````x````, ``:func:`x```) turned into Markdown's (```x```)."""
    paragraphs = (doc or "").strip().split("\n\n")
    kept = "\n\n".join(p for p in paragraphs[1:] if not p.startswith("    "))
    return re.sub(r":[a-z]+:`([^`]+)`", r"`\1`", kept).replace("``", "`")


# --- running ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """One figure: its key in the JSON, its title, how to measure it and how to show it.

    ``render`` turns what ``run`` measured into Markdown (tables and a line or two); ``doc``
    (the script's docstring) says what the figure means and what it does not.
    """

    key: str
    title: str
    run: Callable[[Counts], dict[str, Any]]
    render: Callable[[dict[str, Any]], str]
    doc: str | None


def arguments(doc: str | None) -> argparse.ArgumentParser:
    """The command line every script takes, ``--quick``, described by ``doc``'s first line."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, under two minutes")
    return parser


def run_figures(figures: Sequence[Figure], quick: bool) -> dict[str, Any]:
    """Measure and print ``figures`` in order, each followed by its seconds; return the results.

    The results hold the machine facts (the commit among them), the counts, each figure's
    result under its key (with its ``seconds``) and the total ``seconds``, in that order.
    """
    counts = QUICK if quick else FULL
    # Warnings from a refused refresh or a full connection pool would land on stderr unasked.
    logging.getLogger("urllib3").setLevel(logging.ERROR)

    facts = machine_facts(quick)
    loads = "/".join(f"{load:.1f}" for load in facts["load_average"]) or "unknown"
    print(
        f"zeep-sfrefresh benchmarks{' (--quick)' if quick else ''} at commit {facts['commit']}: "
        f"{describe_machine(facts)}; load average {loads}",
        flush=True,
    )
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": facts, "counts": asdict(counts)}
    with allow_insecure_transport():
        for figure in figures:
            figure_started = time.perf_counter()
            results[figure.key] = figure.run(counts)
            results[figure.key]["seconds"] = time.perf_counter() - figure_started
            print(f"\n### {figure.title}\n\n{figure.render(results[figure.key])}", flush=True)
            print(f"\n({results[figure.key]['seconds']:.0f} s)", flush=True)
    results["seconds"] = time.perf_counter() - started
    results["machine"]["load_average_at_end"] = load_average()
    return results


def run_alone(figure: Figure, argv: Sequence[str] | None = None) -> int:
    """The ``__main__`` of a figure script: measure and print that figure alone."""
    args = arguments(figure.doc).parse_args(argv)
    run_figures([figure], args.quick)
    return 0
