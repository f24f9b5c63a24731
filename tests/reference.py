"""Where the read-only Salesforce reference material lives, for tests that compare against it.

The material (real WSDLs, wire captures) sits beside the project at ``../shared/reference`` and
is not shipped with it. Tests that need it use :data:`requires_reference` and are skipped, with
the reason saying where the folder was looked for, when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

__all__ = [
    "REAL_PARTNER_WSDL",
    "REFERENCE_DIR",
    "SAMPLES_DIR",
    "requires_reference",
    "sample",
]

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
"""``<project>/../shared/reference``."""

SAMPLES_DIR = REFERENCE_DIR / "samples"
REAL_PARTNER_WSDL = REFERENCE_DIR / "wsdl" / "partner-v66.0.wsdl"

requires_reference = pytest.mark.skipif(
    not REFERENCE_DIR.is_dir(),
    reason=f"Salesforce reference material not found at {REFERENCE_DIR} "
    "(expected beside the project at ../shared/reference)",
)
"""Skip marker for tests that read the reference folder."""


def sample(name: str) -> bytes:
    """The bytes of one wire sample (``samples/<name>``); skips the test when it is missing."""
    path = SAMPLES_DIR / name
    if not path.is_file():
        pytest.skip(f"reference sample {path} not found")
    return path.read_bytes()
