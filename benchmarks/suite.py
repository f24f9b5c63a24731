"""Figures for zeep-sfrefresh, side by side in one run, against the stand-in org on loopback.

    python benchmarks/suite.py [--quick] [--json PATH]

Prints Markdown tables and writes every figure as JSON (default ``benchmarks/results.json``).
``--quick`` shrinks every count (a smoke check, under a minute); the full run takes about ten
minutes on a 2-core machine, nine of them figure 5 (tracemalloc slows the client 3x). These
are figures, not tests: nothing here fails on a bad number. The org (:class:`StandInOrg`) is a
Python HTTP server in this process (a child process holds the client for figure 5), so
absolute times are loopback-and-Python times, not Salesforce's.

Each figure is a script of its own, runnable alone (``python benchmarks/<script> [--quick]``
prints its section and writes nothing), whose docstring says what the figure means and what it
does not:

1. ``happy_path.py``: time per call of ``SalesforceTransport`` against a plain
   ``zeep.Transport``, and the transport's own work per call without any network.
2. ``one_expiry.py``: the token requests, SOAP posts and added latency of the call that meets
   ``INVALID_SESSION_ID``.
3. ``races.py``: token requests per expiry for N threads, N asyncio tasks and N processes.
4. ``detection.py``: the cost of fault detection on answers of 1 KB to 50 MB.
5. ``memory.py``: resident and traced memory over 100,000 calls of one transport.

``_common.py`` holds what they share (counts, machine facts, statistics, formatting, running).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import detection
import happy_path
import memory
import one_expiry
import races
from _common import Figure, arguments, run_figures

FIGURES: list[Figure] = [
    happy_path.FIGURE,
    one_expiry.FIGURE,
    races.FIGURE,
    detection.FIGURE,
    memory.FIGURE,
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument(
        "--json",
        type=Path,
        default=Path(__file__).resolve().parent / "results.json",
        help="where to write the figures (default: benchmarks/results.json)",
    )
    args = parser.parse_args(argv)
    results = run_figures(FIGURES, args.quick)
    print(f"\nTotal {results['seconds']:.0f} s. JSON: {args.json}")
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
