"""Property tests for the pure parts: fault detection and envelope editing (hypothesis)."""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from zeep_sfrefresh._envelope import set_session_id
from zeep_sfrefresh._faults import INVALID_SESSION_ID, invalid_session_fault, parse_fault
from zeep_sfrefresh._redaction import redact

ENV = "http://schemas.xmlsoap.org/soap/envelope/"
PARTNER = "urn:partner.soap.sforce.com"

# XML-safe text: no control characters lxml refuses.
TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="<>&"),
    max_size=40,
)
NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
CODES = st.one_of(st.just(INVALID_SESSION_ID), NAMES, TEXT)
PREFIXES = st.sampled_from(["", "sf:", "soapenv:", "ns1:", "x:"])


def _fault(code: str, prefix: str, detail_code: str | None, text: str) -> bytes:
    detail = (
        ""
        if detail_code is None
        else f"<detail><sf:F><sf:exceptionCode>{detail_code}</sf:exceptionCode></sf:F></detail>"
    )
    return (
        f'<soapenv:Envelope xmlns:soapenv="{ENV}" xmlns:sf="urn:fault.partner.soap.sforce.com">'
        f"<soapenv:Body><soapenv:Fault><faultcode>{prefix}{code}</faultcode>"
        f"<faultstring>{text}</faultstring>{detail}</soapenv:Fault></soapenv:Body>"
        "</soapenv:Envelope>"
    ).encode()


@given(st.binary(max_size=2048), st.integers(min_value=100, max_value=599))
def test_arbitrary_bytes_never_raise(body: bytes, status: int) -> None:
    fault = parse_fault(body)
    assert fault is None or isinstance(fault.code, str)
    assert invalid_session_fault(status, body) is None or status >= 300


@given(CODES, PREFIXES, st.one_of(st.none(), CODES), TEXT)
def test_only_a_real_invalid_session_code_is_detected(
    code: str, prefix: str, detail_code: str | None, text: str
) -> None:
    body = _fault(code, prefix, detail_code, text)
    expected = code.strip() == INVALID_SESSION_ID or (
        detail_code is not None and detail_code.strip() == INVALID_SESSION_ID
    )
    assert (invalid_session_fault(500, body) is not None) == expected
    assert invalid_session_fault(200, body) is None  # a success is never parsed


@given(TEXT)
def test_the_text_anywhere_but_the_codes_is_never_a_fault(text: str) -> None:
    body = _fault("INVALID_FIELD", "sf:", "INVALID_FIELD", f"{text} INVALID_SESSION_ID {text}")
    assert invalid_session_fault(500, body) is None


# Envelopes: random headers and bodies, SOAP-shaped.
HEADER_CHILDREN = st.lists(
    st.tuples(st.sampled_from([PARTNER, "urn:other", ENV]), NAMES, TEXT), max_size=4
)


def _envelope(
    headers: list[tuple[str, str, str]], body_text: str, with_header: bool
) -> etree._Element:
    root = etree.Element(f"{{{ENV}}}Envelope", nsmap={"soapenv": ENV})
    if with_header:
        header = etree.SubElement(root, f"{{{ENV}}}Header")
        for namespace, name, text in headers:
            etree.SubElement(header, f"{{{namespace}}}{name}").text = text
    body = etree.SubElement(root, f"{{{ENV}}}Body")
    operation = etree.SubElement(body, f"{{{PARTNER}}}query")
    etree.SubElement(operation, f"{{{PARTNER}}}queryString").text = body_text
    return root


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(HEADER_CHILDREN, TEXT, st.booleans(), st.lists(TEXT.filter(bool), min_size=1, max_size=3))
def test_editing_the_header_never_changes_the_body(
    headers: list[tuple[str, str, str]], body_text: str, with_header: bool, tokens: list[str]
) -> None:
    envelope = _envelope(headers, body_text, with_header)
    body_before = etree.tostring(envelope[-1])
    original_header = envelope.find(f"{{{ENV}}}Header")
    others_before = [
        etree.tostring(child)
        for child in (original_header if original_header is not None else [])
        if etree.QName(child).localname != "SessionHeader"
    ]
    for token in tokens:
        assert set_session_id(envelope, PARTNER, token)
    assert etree.tostring(envelope[-1]) == body_before
    header = envelope.find(f"{{{ENV}}}Header")
    assert header is not None
    ids = [node.text for node in envelope.iter(f"{{{PARTNER}}}sessionId")]
    assert ids == [tokens[-1]]
    others_after = [
        etree.tostring(child) for child in header if etree.QName(child).localname != "SessionHeader"
    ]
    assert others_after == others_before
    # The serialised envelope parses back and the masked form hides the token.
    again = etree.fromstring(etree.tostring(copy.deepcopy(envelope)))
    assert [n.text for n in again.iter(f"{{{PARTNER}}}sessionId")] == [tokens[-1]]
    assert "<sessionId>***</sessionId>" in redact(etree.tostring(envelope).decode())
