"""Figure 1, happy path: time per call of SalesforceTransport against plain zeep, loopback.

    python benchmarks/happy_path.py [--quick]

Wall time per call of ``SalesforceTransport`` against a plain ``zeep.Transport`` whose
``SessionHeader`` is set by hand (``_soapheaders``) on a service made with ``create_service``:
same compact partner WSDL, same org, same operation. The org is a stand-in org in a process of
its own (the client has its process and GIL to itself). In each round every client makes the
same number of calls, taking turns call by call in an order that reverses every turn and every
round; a client's time is the median of its calls in a round, and each figure is the median
(and min-max) over rounds of those medians. A ratio is taken within each round (both clients
measured over the same stretch of time), then summarised the same way. Goal for
SalesforceTransport / plain: <= 1.02. Each ratio comes twice: of wall times, and of the CPU
time the client's process spent in its calls (``time.process_time``: the client's own work,
the org's being in its process; other programs' load on the machine, which stretches wall
times and widens their ranges, barely moves it).

The rows: ``query`` of 10 records and ``getServerTimestamp`` through ``zeep.Client``, each also
with ``requests.Session.trust_env = False`` on both clients' sessions (no proxy, netrc or
CA-bundle lookup in the environment on each request), whose effect is the trust_env table: the
time per call with it off over the time with it on, per client and per round; ``query (1 MB
answer)`` (32 contacts of 32,000-character descriptions, uploaded through the API by another
client before timing); and ``post_xml`` alone, each transport sending a prebuilt
``getServerTimestamp`` envelope (no zeep envelope building or answer parsing, so the
transport's share of a call is least diluted). Most of a call through zeep is zeep (building and
parsing XML) and the stand-in org, so the ratio says what a user pays per call on loopback, not
how much slower the transport's own code is.

The overhead table times the transport's non-I/O work without any network: the pure functions
on a real envelope, and the whole I/O-free call policy (:func:`zeep_sfrefresh._flow.soap_call`)
fed a 200 answer, minus the ``etree.tostring`` that zeep's own transport performs too, plus
``Refresher.begin`` (which asks the store's ``peek`` for a newer token and its ``peek_intent``
for a refresh under way before every call: looks at memory for the default store, a ``stat``
each for a file store); and what the plain
client pays instead, zeep serialising ``_soapheaders`` into each envelope. Each is the median
(min-max) over repeats of a timed loop.
"""

from __future__ import annotations

import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests
import zeep
from _common import (
    SMALL_QUERY,
    Counts,
    Figure,
    RemoteOrg,
    Spread,
    human_time,
    make_oauth,
    markdown_table,
    ms,
    paired_rounds,
    ratios,
    repeat_seconds,
    run_alone,
)
from lxml import etree

from zeep_sfrefresh import (
    PARTNER_WSDL,
    SALESFORCE_DOMAINS,
    SOAP_APIS,
    FileTokenStore,
    SalesforceTransport,
)
from zeep_sfrefresh._apis import api_for_address
from zeep_sfrefresh._envelope import serialize_with_session_id, set_session_id
from zeep_sfrefresh._faults import invalid_session_fault
from zeep_sfrefresh._flow import Step, Verdict, soap_call
from zeep_sfrefresh._routing import DestinationPolicy, route_to_instance
from zeep_sfrefresh._tokens import Generation
from zeep_sfrefresh.testing import wire

PARTNER_NS = SOAP_APIS["u"].namespace
SOBJECT_NS = wire.SOBJECT_NS
BINDING = f"{{{PARTNER_NS}}}SoapBinding"
BULK_NAME = "Bulk"
BULK_QUERY = "SELECT Id, Description FROM Contact WHERE LastName = 'Bulk'"
BULK_RECORDS = 32
BULK_DESCRIPTION = 32_000
SOAP_HEADERS = {"SOAPAction": '""', "Content-Type": "text/xml; charset=utf-8"}

CLIENTS = {
    "plain": "plain zeep",
    "sf": "SalesforceTransport",
    "plain_no_env": "plain zeep, trust_env=False",
    "sf_no_env": "SalesforceTransport, trust_env=False",
}
"""The clients of a row, by key: a plain zeep.Transport and a SalesforceTransport, each with
requests' default session and with one whose ``trust_env`` is False."""
RATIOS = {
    "sf_vs_plain": ("sf", "plain"),
    "sf_vs_plain_no_env": ("sf_no_env", "plain_no_env"),
    "plain_no_env_vs_env": ("plain_no_env", "plain"),
    "sf_no_env_vs_env": ("sf_no_env", "sf"),
}
"""Ratios taken round by round: key -> (numerator client, denominator client)."""


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


def session(trust_env: bool) -> requests.Session:
    """A requests session; ``trust_env=False`` skips requests' environment lookups."""
    made = requests.Session()
    made.trust_env = trust_env
    return made


@dataclass
class Client:
    """One timed client: its zeep client, its service proxy and its transport."""

    client: zeep.Client
    service: Any
    transport: zeep.Transport


def clients(org: RemoteOrg, token: dict[str, Any]) -> dict[str, Client]:
    """The four clients of :data:`CLIENTS`, on one token and one org."""
    made = {}
    for key in CLIENTS:
        trust_env = not key.endswith("_no_env")
        transport: zeep.Transport
        if key.startswith("sf"):
            oauth = make_oauth(org, token)
            oauth.trust_env = trust_env
            transport = SalesforceTransport(oauth, session=session(trust_env))
            client = zeep.Client(PARTNER_WSDL, transport=transport)
            service = client.service
        else:
            transport = zeep.Transport(session=session(trust_env))
            client = zeep.Client(PARTNER_WSDL, transport=transport)
            service = client.create_service(BINDING, org.url + org.soap_path())
        made[key] = Client(client, service, transport)
    return made


@dataclass(frozen=True)
class Operation:
    """One row of the figure: what each client calls, and how many times."""

    label: str
    answer_bytes: int
    calls: dict[str, Callable[[], object]]
    rounds: int
    block: int


def operations(org: RemoteOrg, token: dict[str, str], counts: Counts) -> list[Operation]:
    """The figure's rows, on four fresh clients (the bulk records made by a fifth)."""
    made = clients(org, token)
    header = {"SessionHeader": {"sessionId": token["access_token"]}}

    def zeep_calls(
        call: Callable[[Any, dict[str, Any]], object], keys: Sequence[str] = tuple(CLIENTS)
    ) -> dict[str, Callable[[], object]]:
        """``call(service, soapheaders)`` for each client; only the plain ones get a header."""

        def bound(service: Any, extra: dict[str, Any]) -> Callable[[], object]:
            return lambda: call(service, extra)

        return {
            key: bound(made[key].service, {} if key.startswith("sf") else header) for key in keys
        }

    def post_xml_calls() -> dict[str, Callable[[], object]]:
        """``transport.post_xml`` of a prebuilt envelope (a fresh copy each call)."""
        calls: dict[str, Callable[[], object]] = {}
        for key, one in made.items():
            plain = not key.startswith("sf")
            envelope = one.client.create_message(
                one.service, "getServerTimestamp", **({"_soapheaders": header} if plain else {})
            )
            address = one.service._binding_options["address"]

            def call(
                transport: zeep.Transport = one.transport,
                address: str = address,
                envelope: etree._Element = envelope,
            ) -> None:
                answer = transport.post_xml(address, copy.deepcopy(envelope), SOAP_HEADERS)
                if answer.status_code != 200:
                    raise AssertionError(f"post_xml answered {answer.status_code}")

            calls[key] = call
        return calls

    # A fifth client uploads the 1 MB of records: on loopback, a keep-alive connection that has
    # uploaded 1 MB downloads the next 1 MB answers ~20% faster, which favoured whichever timed
    # client made the upload (a ratio of 0.80 when it was SalesforceTransport's).
    create_bulk_contacts(
        zeep.Client(PARTNER_WSDL, transport=SalesforceTransport(make_oauth(org, token)))
    )
    sf = made["sf"].client
    with sf.settings(raw_response=True):
        bulk_bytes = len(sf.service.query(BULK_QUERY).content)
        small_bytes = len(sf.service.query(SMALL_QUERY).content)
        stamp_bytes = len(sf.service.getServerTimestamp().content)
    rounds, block = counts.happy_rounds, counts.happy_block
    return [
        Operation(
            "query (10 records)",
            small_bytes,
            zeep_calls(lambda service, extra: service.query(SMALL_QUERY, _soapheaders=extra)),
            rounds,
            block,
        ),
        Operation(
            "getServerTimestamp",
            stamp_bytes,
            zeep_calls(lambda service, extra: service.getServerTimestamp(_soapheaders=extra)),
            rounds,
            block,
        ),
        Operation(
            "query (1 MB answer)",
            bulk_bytes,
            zeep_calls(
                lambda service, extra: service.query(BULK_QUERY, _soapheaders=extra),
                ("plain", "sf"),
            ),
            counts.bulk_rounds,
            counts.bulk_block,
        ),
        Operation(
            "post_xml alone (getServerTimestamp envelope)",
            stamp_bytes,
            post_xml_calls(),
            rounds,
            block,
        ),
    ]


def spreads(medians: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """Each client's round medians as a spread (for the JSON)."""
    return {key: asdict(Spread.of(times)) for key, times in medians.items()}


def paired_ratios(medians: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """The ratios of :data:`RATIOS` whose clients were measured, round by round, as spreads."""
    return {
        key: asdict(Spread.of(ratios(medians[top], medians[bottom])))
        for key, (top, bottom) in RATIOS.items()
        if top in medians and bottom in medians
    }


def happy_path(counts: Counts) -> dict[str, Any]:
    """Figure 1: SalesforceTransport against a plain zeep.Transport, same org and operation."""
    rows = []
    overhead: dict[str, Any] = {}
    with RemoteOrg() as org:
        token = org.issue_token()
        for operation in operations(org, token, counts):
            for call in operation.calls.values():  # warm up: connections, zeep's caches
                for _ in range(3):
                    call()
            posts_before = org.soap_posts
            paired = paired_rounds(operation.calls, operation.rounds, operation.block)
            posts = org.soap_posts - posts_before
            expected = len(operation.calls) * operation.rounds * operation.block
            assert posts == expected, f"{posts} SOAP posts where {expected} were made"
            rows.append(
                {
                    "operation": operation.label,
                    "answer_bytes": operation.answer_bytes,
                    "rounds": operation.rounds,
                    "block": operation.block,
                    "seconds": spreads(paired.wall),
                    "cpu_seconds": spreads(paired.cpu),
                    "ratios": paired_ratios(paired.wall),
                    "cpu_ratios": paired_ratios(paired.cpu),
                }
            )
        overhead = transport_overhead(org, token, counts)
        org.check()
    return {"operations": rows, "overhead": overhead}


class _Ok:
    """The least a 2xx answer needs to be for the call policy."""

    status_code = 200
    content = b""


def transport_overhead(org: RemoteOrg, token: dict[str, str], counts: Counts) -> dict[str, Any]:
    """The transport's non-I/O work per call, timed on real envelopes without any network.

    Also what the plain client pays instead: zeep serialising ``_soapheaders`` into each
    envelope (``create_message`` with the header minus without it). Each step is timed in
    ``overhead_repeats`` loops; the figures are seconds per call, median and min-max.
    """
    client = zeep.Client(PARTNER_WSDL, transport=SalesforceTransport(make_oauth(org, token)))
    plain_client = zeep.Client(PARTNER_WSDL, transport=zeep.Transport())
    plain = plain_client.create_service(BINDING, org.url + org.soap_path())
    session_header = {"SessionHeader": {"sessionId": token["access_token"]}}
    sf_token = client.transport.token
    access_token = sf_token.access_token
    current = Generation(sf_token, 1)
    instance_url = sf_token.instance_url or org.url
    address = client.service._binding_options["address"]
    routed = route_to_instance(address, instance_url)
    policy = DestinationPolicy(tuple(SALESFORCE_DOMAINS), allow_loopback=True)
    envelope = client.create_message(client.service, "query", SMALL_QUERY)
    with_header = copy.deepcopy(envelope)
    set_session_id(with_header, PARTNER_NS, access_token)

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

    def per_item(work: Callable[[etree._Element], object], base: etree._Element) -> list[float]:
        """Seconds per envelope over fresh deep copies (copying is not timed), per repeat."""
        times = []
        for _ in range(counts.overhead_repeats):
            copies = [copy.deepcopy(base) for _ in range(counts.overhead_items)]
            started = time.perf_counter()
            for item in copies:
                work(item)
            times.append((time.perf_counter() - started) / len(copies))
        return times

    def per_call(work: Callable[[], object]) -> list[float]:
        return repeat_seconds(work, counts.overhead_repeats)

    def tostring(item: etree._Element) -> bytes:
        return etree.tostring(item, xml_declaration=True, encoding="utf-8")

    flow_label = "whole call policy (flow.soap_call) to a 200, tostring included"
    tostring_label = "etree.tostring of the envelope (zeep's Transport does it too)"
    current_label = "Refresher.begin, default store (peek and peek_intent: looks at memory)"
    workdir = tempfile.TemporaryDirectory()
    file_store = FileTokenStore(Path(workdir.name) / "token.json")
    on_file = SalesforceTransport(make_oauth(org, token), store=file_store)
    timings = {
        "serialize_with_session_id, no Header yet (the usual call; tostring included)": per_item(
            lambda item: serialize_with_session_id(item, PARTNER_NS, access_token), envelope
        ),
        "serialize_with_session_id, a Header already there (written into the tree)": per_call(
            lambda: serialize_with_session_id(with_header, PARTNER_NS, access_token)
        ),
        "api_for_address + route_to_instance": per_call(
            lambda: (api_for_address(address), route_to_instance(address, instance_url))
        ),
        "DestinationPolicy.check": per_call(lambda: policy.check(routed, instance_url)),
        "invalid_session_fault on the 200": per_call(lambda: invalid_session_fault(200, b"")),
        current_label: per_call(lambda: client.transport._core.refresher.begin()),
        "Refresher.begin, FileTokenStore (peek and peek_intent: a stat of each file)": per_call(
            lambda: on_file._core.refresher.begin()
        ),
        flow_label: per_item(run_flow, envelope),
        tostring_label: per_item(tostring, with_header),
    }
    workdir.cleanup()
    with_soapheaders = per_call(
        lambda: plain_client.create_message(
            plain, "query", SMALL_QUERY, _soapheaders=session_header
        )
    )
    without = per_call(lambda: plain_client.create_message(plain, "query", SMALL_QUERY))
    return {
        "envelope_bytes": len(tostring(with_header)),
        "seconds": {label: asdict(Spread.of(times)) for label, times in timings.items()},
        "overhead_seconds": statistics.median(timings[flow_label])
        - statistics.median(timings[tostring_label])
        + statistics.median(timings[current_label]),
        "plain_soapheaders_seconds": statistics.median(with_soapheaders)
        - statistics.median(without),
    }


def render_happy_path(result: dict[str, Any]) -> str:
    """The figure's tables: time per call and ratios, trust_env's effect, the overhead."""
    rows = []
    for op in result["operations"]:
        seconds, wall, cpu = op["seconds"], op["ratios"], op["cpu_ratios"]
        for suffix, trust_env in (("", "default"), ("_no_env", "False")):
            if "sf" + suffix not in seconds:
                continue
            rows.append(
                [
                    op["operation"],
                    f"{op['answer_bytes']:,}",
                    f"{op['rounds']} x {op['block']}",
                    trust_env,
                    Spread.load(seconds["plain" + suffix]).show(ms),
                    Spread.load(seconds["sf" + suffix]).show(ms),
                    Spread.load(wall["sf_vs_plain" + suffix]).show(),
                    Spread.load(cpu["sf_vs_plain" + suffix]).show(),
                ]
            )
    lines = [
        markdown_table(
            [
                "operation",
                "answer bytes",
                "rounds x calls",
                "trust_env",
                "plain zeep ms",
                "SalesforceTransport ms",
                "SalesforceTransport / plain",
                "same, client CPU",
            ],
            rows,
        ),
        "",
        "`requests.Session.trust_env = False` on both sides: time per call with it, over the "
        "time without it (same round), wall and client CPU:",
        "",
        markdown_table(
            [
                "operation",
                "plain zeep",
                "plain zeep, CPU",
                "SalesforceTransport",
                "SalesforceTransport, CPU",
            ],
            [
                [
                    op["operation"],
                    Spread.load(op["ratios"]["plain_no_env_vs_env"]).show(),
                    Spread.load(op["cpu_ratios"]["plain_no_env_vs_env"]).show(),
                    Spread.load(op["ratios"]["sf_no_env_vs_env"]).show(),
                    Spread.load(op["cpu_ratios"]["sf_no_env_vs_env"]).show(),
                ]
                for op in result["operations"]
                if "sf_no_env_vs_env" in op["ratios"]
            ],
        ),
    ]
    overhead = result["overhead"]
    rows = [
        [name, Spread.load(spread).show(human_time)] for name, spread in overhead["seconds"].items()
    ]
    rows.append(
        [
            "**overhead: call policy minus tostring, plus Refresher.begin (default store)**",
            human_time(overhead["overhead_seconds"]),
        ]
    )
    rows.append(
        [
            "plain client instead: zeep serialising `_soapheaders` (create_message with - without)",
            human_time(overhead["plain_soapheaders_seconds"]),
        ]
    )
    lines += [
        "",
        f"The transport's own work per call, no network ({overhead['envelope_bytes']:,}-byte "
        "query envelope; median (min-max) over repeats):",
        "",
        markdown_table(["step", "time per call"], rows),
    ]
    return "\n".join(lines)


FIGURE = Figure(
    "happy_path",
    "1. Happy path: time per call, SalesforceTransport against plain zeep (loopback)",
    happy_path,
    render_happy_path,
    __doc__,
)

if __name__ == "__main__":
    sys.exit(run_alone(FIGURE))
