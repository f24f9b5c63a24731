"""Figures for typed calls: generating stubs, importing one, type-checking one cold.

    python benchmarks/stubs.py [--rounds N]

Each figure is the median (and min-max) of N rounds, each round a fresh interpreter, so
nothing is cached between rounds: ``zeep-sfrefresh stubs`` on the partner v66 and enterprise
v64 WSDLs (from ``../shared/reference``), ``import`` of the generated module (its ``.py``,
the run-time half), and ``mypy --strict --no-incremental`` on the enterprise stub with a
small user script. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference" / "wsdl"

USER = """\
import zeep
import enterprise

client = zeep.Client("enterprise.wsdl")
service = enterprise.service(client)
contact = enterprise.Types(client).Contact(LastName="Hopper")
records = service.query("SELECT Id FROM Contact").body.result.records
"""


def _seconds(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)  # noqa: S603 - ours
    return time.perf_counter() - started


def _report(label: str, samples: list[float], goal: str) -> None:
    median = statistics.median(samples)
    scale, unit = (1000, "ms") if median < 1 else (1, "s")
    low, high = min(samples) * scale, max(samples) * scale
    print(
        f"| {label} | {median * scale:.1f} {unit} | {low:.1f}-{high:.1f} {unit} "
        f"| {len(samples)} | {goal} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not REFERENCE.is_dir():
        sys.exit(f"needs Salesforce's real WSDLs in {REFERENCE}")
    python = sys.executable
    print("| figure | median | min-max | rounds | goal |")
    print("|---|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for name, wsdl, goal in (
            ("partner", "partner-v66.0.wsdl", "< 2 s"),
            ("enterprise", "enterprise-v64.0.wsdl", "< 5 s"),
        ):
            command = [
                python, "-m", "zeep_sfrefresh", "stubs", str(REFERENCE / wsdl),
                "-o", f"{name}.py",
            ]  # fmt: skip
            samples = [_seconds(command, work) for _ in range(args.rounds)]
            _report(f"`zeep-sfrefresh stubs` {wsdl}", samples, goal)
        # Import: timed inside a fresh interpreter, after zeep_sfrefresh.typed (which the
        # generated module imports) is loaded, so only the module's own cost counts.
        for name in ("partner", "enterprise"):
            code = (
                "import time, zeep_sfrefresh.typed; t = time.perf_counter(); "
                f"import {name}; print(time.perf_counter() - t)"
            )
            samples = [
                float(
                    subprocess.run(  # noqa: S603 - our own interpreter and code
                        [python, "-c", code], cwd=work, check=True, capture_output=True, text=True
                    ).stdout
                )
                for _ in range(args.rounds)
            ]
            _report(f"`import {name}` (the generated module)", samples, "< 50 ms")
        (work / "use.py").write_text(USER)
        (work / "mypy.ini").write_text("[mypy]\nstrict = True\nuntyped_calls_exclude = zeep\n")
        command = [python, "-m", "mypy", "--no-incremental", "enterprise", "use.py"]
        samples = [_seconds(command, work) for _ in range(max(1, args.rounds // 2))]
        _report("cold `mypy --strict` on the enterprise stub", samples, "< 30 s")


if __name__ == "__main__":
    main()
