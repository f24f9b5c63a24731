"""Import cost: ``import zeep_sfrefresh`` against ``import zeep``, each in a fresh interpreter.

    python benchmarks/import_time.py [--quick]

Each statement runs in its own new interpreter (``python -c``), 30 times (5 with ``--quick``),
the statements interleaved in a shuffled order each round, after one warm-up run of each (files
in the page cache). Bytecode is cached, as for installed packages, in a temporary
``PYTHONPYCACHEPREFIX`` (``PYTHONDONTWRITEBYTECODE`` lifted for the children): without it a
source checkout would be compiled at every import while zeep's cached bytecode is not.

Per statement, each as median (min-max): the wall time of the whole process (interpreter start,
the import, exit); the import alone, timed inside the child, in wall time and in CPU time
(``process_time``, steadier on a busy machine); and the child's peak resident memory (``VmHWM``
on Linux, where after ``exec`` ``ru_maxrss`` still holds the forking parent's peak;
``ru_maxrss`` elsewhere).

The ratio is of the medians, zeep-sfrefresh over zeep: ``import zeep_sfrefresh`` imports zeep,
so it is what this library adds to an application that uses zeep. An application on the happy
path (``SalesforceTransport`` on an ``OAuth2Session``) imports requests-oauthlib itself, which
``import zeep_sfrefresh`` leaves to the first transport: the second ratio compares the two with
requests-oauthlib imported alongside. A bare interpreter (``pass``) is shown for scale. The
modules ``import zeep_sfrefresh`` adds to ``import zeep`` are counted, and those of them the
happy path does not need at import are named.

Times on a shared machine are noisy: compare the medians of one run, not milliseconds across
machines or runs. Imports only: the cost of calls is ``happy_path.py``'s.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from typing import Any

from _common import MIB, QUICK, Counts, Figure, Spread, human_time, markdown_table, run_alone

STATEMENTS = {
    "bare": "pass",
    "zeep": "import zeep",
    "ours": "import zeep_sfrefresh",
    "zeep+oauth": "import zeep, requests_oauthlib",
    "ours+oauth": "import zeep_sfrefresh, requests_oauthlib",
}
FULL_RUNS = 30
QUICK_RUNS = 5
MEASURES = ("wall_s", "import_s", "import_cpu_s", "max_rss_bytes")

OFF_THE_HAPPY_PATH = (
    "asyncio",
    "filelock",
    "http.server",
    "requests_oauthlib",
    "zeep_sfrefresh._callouts",
    "zeep_sfrefresh._clients",
    "zeep_sfrefresh._login",
    "zeep_sfrefresh._records",
    "zeep_sfrefresh._rest",
    "zeep_sfrefresh._tokenfile",
)
"""Modules an application on ``SalesforceTransport`` + ``zeep.Client`` does not need at
``import zeep_sfrefresh`` (requests-oauthlib: not before it builds its ``OAuth2Session``)."""

CHILD = """\
import time
started, cpu = time.perf_counter(), time.process_time()
{statement}
imported, cpu = time.perf_counter() - started, time.process_time() - cpu
import json, resource, sys
try:  # Linux: this program's own peak (ru_maxrss keeps the forking parent's)
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
except OSError:  # ru_maxrss: bytes on macOS, KiB elsewhere
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak *= 1 if sys.platform == "darwin" else 1024
print(json.dumps([imported, cpu, peak, sorted(sys.modules)]))
"""


def child_environment(cache: str) -> dict[str, str]:
    """This environment, with bytecode cached under ``cache`` (written, whatever
    ``PYTHONDONTWRITEBYTECODE`` says; nothing goes into the source tree): as installed
    packages run, compiled once, not compiled again at each import."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    environment["PYTHONPYCACHEPREFIX"] = cache
    return environment


def run_child(statement: str, environment: dict[str, str]) -> tuple[dict[str, float], list[str]]:
    """One fresh interpreter running ``statement``: its measures and the modules it ended with."""
    started = time.perf_counter()
    done = subprocess.run(  # noqa: S603 - this interpreter, on a fixed program
        [sys.executable, "-c", CHILD.format(statement=statement)],
        capture_output=True,
        text=True,
        check=True,
        env=environment,
    )
    wall = time.perf_counter() - started
    imported, cpu, peak, modules = json.loads(done.stdout)
    return {
        "wall_s": wall,
        "import_s": imported,
        "import_cpu_s": cpu,
        "max_rss_bytes": peak,
    }, modules


def _ratio(rows: dict[str, Any], measure: str, over: str, under: str) -> float:
    return float(rows[over][measure]["median"] / rows[under][measure]["median"])


def import_time(counts: Counts) -> dict[str, Any]:
    runs = QUICK_RUNS if counts == QUICK else FULL_RUNS
    samples: dict[str, dict[str, list[float]]] = {
        name: {measure: [] for measure in MEASURES} for name in STATEMENTS
    }
    with tempfile.TemporaryDirectory(prefix="zeep-sfrefresh-pycache-") as cache:
        environment = child_environment(cache)
        modules = {  # the warm-up, which also writes the bytecode
            name: run_child(statement, environment)[1] for name, statement in STATEMENTS.items()
        }
        order = list(STATEMENTS)
        rng = random.Random(0)  # noqa: S311 - an order, not a secret
        for _ in range(runs):
            rng.shuffle(order)
            for name in order:
                measured, _ = run_child(STATEMENTS[name], environment)
                for measure, value in measured.items():
                    samples[name][measure].append(value)
    rows = {
        name: {measure: asdict(Spread.of(values)) for measure, values in measures.items()}
        for name, measures in samples.items()
    }
    added = set(modules["ours"]) - set(modules["zeep"])
    return {
        "runs": runs,
        "rows": rows,
        "wall_ratio": _ratio(rows, "wall_s", "ours", "zeep"),
        "import_ratio": _ratio(rows, "import_s", "ours", "zeep"),
        "import_cpu_ratio": _ratio(rows, "import_cpu_s", "ours", "zeep"),
        "added_wall_s": rows["ours"]["wall_s"]["median"] - rows["zeep"]["wall_s"]["median"],
        "added_rss_bytes": (
            rows["ours"]["max_rss_bytes"]["median"] - rows["zeep"]["max_rss_bytes"]["median"]
        ),
        "with_oauth_wall_ratio": _ratio(rows, "wall_s", "ours+oauth", "zeep+oauth"),
        "modules": {name: len(names) for name, names in modules.items()},
        "added_modules": len(added),
        "still_imported": [name for name in OFF_THE_HAPPY_PATH if name in added],
    }


def _mib(value: float) -> str:
    return f"{value / MIB:.1f}"


def render_import_time(result: dict[str, Any]) -> str:
    rows = []
    for name, row in result["rows"].items():
        wall, imported, cpu, rss = (Spread.load(row[measure]) for measure in MEASURES)
        rows.append(
            [
                f"`{STATEMENTS[name]}`",
                wall.show(human_time),
                imported.show(human_time) if name != "bare" else "-",
                cpu.show(human_time) if name != "bare" else "-",
                rss.show(_mib),
                result["modules"][name],
            ]
        )
    table = markdown_table(
        ["python -c", "process wall time", "the import", "its CPU time", "max RSS, MiB", "modules"],
        rows,
    )
    still = ", ".join(f"`{name}`" for name in result["still_imported"]) or "none of them"
    return "\n".join(
        [
            f"{result['runs']} fresh interpreters per statement, interleaved; median (min-max).",
            "",
            table,
            "",
            f"`import zeep_sfrefresh` / `import zeep`: **{result['wall_ratio']:.2f}x** process "
            f"wall time ({result['added_wall_s'] * 1e3:+.0f} ms; goal <= 1.15x), "
            f"{result['import_ratio']:.2f}x the import alone ({result['import_cpu_ratio']:.2f}x "
            "its CPU time), "
            f"{result['added_rss_bytes'] / MIB:+.1f} MiB max RSS, {result['added_modules']} more "
            f"modules; with requests_oauthlib imported alongside (as a happy-path application "
            f"does): {result['with_oauth_wall_ratio']:.2f}x process wall time.",
            f"Off the happy path yet imported by `import zeep_sfrefresh`: {still}.",
        ]
    )


FIGURE = Figure(
    "import_time",
    "6. Import time: `import zeep_sfrefresh` against `import zeep` (fresh interpreters)",
    import_time,
    render_import_time,
    __doc__,
)

if __name__ == "__main__":
    sys.exit(run_alone(FIGURE))
