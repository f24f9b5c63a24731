"""Command line: ``python -m zeep_sfrefresh demo`` (also installed as ``zeep-sfrefresh``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="zeep-sfrefresh",
        description="Keep Salesforce SOAP calls made with zeep alive when the session expires.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "demo",
        help="expire a session on a local stand-in org and watch one refresh and one resend",
    )
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo()
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse rejects it
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
