"""Figure 4, detection: the cost of fault detection on answers of 1 KB to 50 MB, no network.

    python benchmarks/detection.py [--quick]

``invalid_session_fault(status, body)`` timed directly on bytes of 1 KB, 64 KiB, 1 MB and 50 MB
(``timeit``-style loops, each figure the median (min-max) over repeats of the loop, Python call
overhead included: see the empty call). No network and no org: nothing here is a call. A
2xx is never parsed, so its time is constant; ``parse_fault`` and a plain lxml parse of the same
bytes show what a parse would cost. Error (500) bodies carrying a real ``INVALID_SESSION_ID``
fault are parsed up to ``MAX_FAULT_BYTES``; a bigger one is not parsed (no refresh, constant
time). This is the detector alone: a 50 MB answer through zeep is mostly zeep's own parsing (the
lxml parse column is its floor), which no transport changes.
"""

from __future__ import annotations

import functools
import gc
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from _common import (
    MIB,
    Counts,
    Figure,
    Spread,
    human_size,
    human_time,
    markdown_table,
    repeat_seconds,
    run_alone,
)
from lxml import etree

from zeep_sfrefresh._faults import MAX_FAULT_BYTES, invalid_session_fault, parse_fault
from zeep_sfrefresh.testing import wire


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

    def timed(call: Callable[[], object]) -> dict[str, Any]:
        return asdict(Spread.of(repeat_seconds(call, repeats, counts.timeit_target)))

    sizes = [1024, MAX_FAULT_BYTES, MIB, 50 * MIB]
    empty = timed(functools.partial(_nothing))
    successes = []
    for size in sizes:
        body = success_body(size)
        successes.append(
            {
                "size": len(body),
                "invalid_session_fault_200_s": timed(
                    functools.partial(invalid_session_fault, 200, body),
                ),
                "parse_fault_s": timed(functools.partial(parse_fault, body)),
                "parse_fault_parsed": len(body) <= MAX_FAULT_BYTES,
                "full_lxml_parse_s": timed(functools.partial(full_parse, body)),
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


def render_detection(result: dict[str, Any]) -> str:
    """The 2xx table, the fault table and the empty call's time."""

    def show(spread: dict[str, Any]) -> str:
        return Spread.load(spread).show(human_time)

    return "\n".join(
        [
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
                        show(row["invalid_session_fault_200_s"]),
                        show(row["parse_fault_s"])
                        + ("" if row["parse_fault_parsed"] else " (over the cap: not parsed)"),
                        show(row["full_lxml_parse_s"]),
                    ]
                    for row in result["successes"]
                ],
            ),
            "",
            "Answers carrying a real INVALID_SESSION_ID fault (MAX_FAULT_BYTES = "
            f"{result['max_fault_bytes']:,}):",
            "",
            markdown_table(
                ["fault body", "status 500: time", "refresh?", "status 200: time", "refresh?"],
                [
                    [
                        f"{row['size']:,} B",
                        show(row["invalid_session_fault_500_s"]),
                        "yes (parsed)" if row["refresh_on_500"] else "no (not parsed)",
                        show(row["invalid_session_fault_200_s"]),
                        "yes" if row["refresh_on_200"] else "no (not parsed)",
                    ]
                    for row in result["faults"]
                ],
            ),
            "",
            "An empty Python call (through `functools.partial`, as the timed calls) costs "
            f"{show(result['empty_call_s'])}.",
        ]
    )


FIGURE = Figure(
    "detection",
    "4. Cost of detection (the detector alone, no network, no zeep)",
    detection,
    render_detection,
    __doc__,
)

if __name__ == "__main__":
    sys.exit(run_alone(FIGURE))
