"""Fault detection: exact QName matching, never a substring, and a guarded parser."""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

import pytest
from reference import sample

from zeep_sfrefresh._faults import MAX_FAULT_BYTES, is_invalid_session, parse_fault

ENV = "http://schemas.xmlsoap.org/soap/envelope/"


def fault(
    code: str, *, detail_code: str | None = None, sf_ns: str = "urn:fault.partner.soap.sforce.com"
) -> bytes:
    detail = ""
    if detail_code is not None:
        detail = (
            '<detail><sf:UnexpectedErrorFault xsi:type="sf:UnexpectedErrorFault">'
            f"<sf:exceptionCode>{detail_code}</sf:exceptionCode>"
            "<sf:exceptionMessage>something</sf:exceptionMessage>"
            "</sf:UnexpectedErrorFault></detail>"
        )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{ENV}" '
        f'xmlns:sf="{sf_ns}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f"<soapenv:Body><soapenv:Fault><faultcode>{code}</faultcode>"
        f"<faultstring>{code.rpartition(':')[2]}: message</faultstring>{detail}"
        "</soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    ).encode()


@pytest.mark.parametrize(
    "body",
    [
        fault("sf:INVALID_SESSION_ID", detail_code="INVALID_SESSION_ID"),
        fault("sf:INVALID_SESSION_ID", sf_ns="http://soap.sforce.com/2006/04/metadata"),
        fault("INVALID_SESSION_ID"),
        fault("ns7:INVALID_SESSION_ID"),
        fault(" sf:INVALID_SESSION_ID\n"),
        fault("soapenv:Server", detail_code="INVALID_SESSION_ID"),
    ],
    ids=["partner", "metadata-no-detail", "no-prefix", "other-prefix", "whitespace", "detail-only"],
)
def test_invalid_session_faults_are_recognised(body: bytes) -> None:
    assert is_invalid_session(500, body)
    assert is_invalid_session(400, body)


@pytest.mark.parametrize(
    "code", ["sf:INVALID_FIELD", "INVALID_LOGIN", "sf:UNKNOWN_EXCEPTION", "sf:INVALID_SESSION_ID_X"]
)
def test_other_faults_do_not_trigger(code: str) -> None:
    body = fault(code, detail_code=code.rpartition(":")[2])
    parsed = parse_fault(body)
    assert parsed is not None
    assert parsed.code == code.rpartition(":")[2]
    assert not is_invalid_session(500, body)


def test_fault_fields_are_read() -> None:
    parsed = parse_fault(fault("sf:INVALID_SESSION_ID", detail_code="INVALID_SESSION_ID"))
    assert parsed is not None
    assert (parsed.code, parsed.exception_code) == ("INVALID_SESSION_ID", "INVALID_SESSION_ID")
    assert parsed.message == "INVALID_SESSION_ID: message"
    assert parse_fault(fault("sf:INVALID_FIELD")) == type(parsed)(
        "INVALID_FIELD", "INVALID_FIELD: message", None
    )


def test_a_success_is_never_parsed_even_when_it_looks_like_a_fault() -> None:
    # A 200 whose data holds the text, and even a whole fault envelope: not an expiry.
    body = fault("sf:INVALID_SESSION_ID", detail_code="INVALID_SESSION_ID")
    assert not is_invalid_session(200, body)
    assert not is_invalid_session(204, body)


def test_text_in_data_of_an_error_answer_is_not_a_fault_code() -> None:
    body = (
        f'<soapenv:Envelope xmlns:soapenv="{ENV}"><soapenv:Body><soapenv:Fault>'
        "<faultcode>sf:INVALID_FIELD</faultcode>"
        "<faultstring>No such column INVALID_SESSION_ID on entity Contact</faultstring>"
        "</soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    ).encode()
    assert not is_invalid_session(500, body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html><body>500 Internal Server Error INVALID_SESSION_ID</body></html>",
        b"INVALID_SESSION_ID",
        b'[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]',
        b"<soapenv:Envelope xmlns:soapenv='" + ENV.encode() + b"'><soapenv:Body>",
        # Right local names, wrong envelope namespace (SOAP 1.2): not Salesforce's SOAP API.
        fault("sf:INVALID_SESSION_ID").replace(
            ENV.encode(), b"http://www.w3.org/2003/05/soap-envelope"
        ),
    ],
    ids=["empty", "html", "plain-text", "rest-json", "truncated", "soap12"],
)
def test_bodies_that_are_not_soap11_faults(body: bytes) -> None:
    assert parse_fault(body) is None
    assert not is_invalid_session(500, body)


def test_a_dtd_is_refused_and_entities_are_not_expanded() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY a "INVALID_SESSION_ID">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b'<soapenv:Envelope xmlns:soapenv="' + ENV.encode() + b'"><soapenv:Body><soapenv:Fault>'
        b"<faultcode>&a;</faultcode><faultstring>&b;</faultstring>"
        b"</soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )
    assert parse_fault(bomb) is None

    # The same document in UTF-16 slips past a byte search; the parsed doctype still refuses it.
    def utf16(document: bytes) -> bytes:
        declared = document.replace(
            b'<?xml version="1.0"?>', b'<?xml version="1.0" encoding="UTF-16"?>'
        )
        return declared.decode().encode("utf-16")

    assert parse_fault(utf16(bomb)) is None
    plain = b'<?xml version="1.0"?>' + fault("sf:INVALID_SESSION_ID").split(b"?>", 1)[1]
    assert is_invalid_session(500, utf16(plain))  # so the refusal above is the doctype's doing


def test_bodies_over_the_size_cap_are_not_parsed() -> None:
    body = fault("sf:INVALID_SESSION_ID")
    padding = b"<!--" + b"x" * (MAX_FAULT_BYTES - len(body)) + b"-->"
    oversized = body.replace(b"<soapenv:Body>", b"<soapenv:Body>" + padding)
    assert len(oversized) > MAX_FAULT_BYTES
    assert is_invalid_session(500, body)
    assert not is_invalid_session(500, oversized)


@pytest.mark.parametrize(
    ("name", "expired"),
    [
        ("partner_invalid_session_fault.xml", True),
        ("enterprise_invalid_session_fault.xml", True),
        ("metadata_invalid_session_fault.xml", True),
        ("tooling_invalid_session_fault.CONSTRUCTED.xml", True),
        ("enterprise_invalid_login_fault.xml", False),
    ],
)
def test_real_salesforce_fault_captures(name: str, expired: bool) -> None:
    body = sample(name)
    assert parse_fault(body) is not None
    assert is_invalid_session(500, body) is expired


def test_real_success_capture_is_not_parsed() -> None:
    assert not is_invalid_session(200, sample("enterprise_logout_response.xml"))


# --- the edges, and what an attacker controls in an error body ---------------------------------

EXPIRED = fault("sf:INVALID_SESSION_ID", detail_code="INVALID_SESSION_ID")


def soap_fault(children: str) -> bytes:
    """An error envelope whose Fault holds ``children`` as written."""
    return (
        f'<soapenv:Envelope xmlns:soapenv="{ENV}" xmlns:sf="urn:fault.partner.soap.sforce.com">'
        f"<soapenv:Body><soapenv:Fault>{children}</soapenv:Fault></soapenv:Body>"
        "</soapenv:Envelope>"
    ).encode()


def detail(*codes: str) -> str:
    return (
        "<detail><sf:UnexpectedErrorFault>"
        + "".join(f"<sf:exceptionCode>{code}</sf:exceptionCode>" for code in codes)
        + "</sf:UnexpectedErrorFault></detail>"
    )


@pytest.mark.parametrize(
    ("status", "parsed"),
    [(199, True), (200, False), (299, False), (300, True), (401, True), (500, True)],
)
def test_only_2xx_answers_skip_the_fault_check(status: int, parsed: bool) -> None:
    assert is_invalid_session(status, EXPIRED) is parsed


def test_the_size_cap_admits_a_body_of_exactly_the_cap() -> None:
    def padded(size: int) -> bytes:
        padding = b"<!--" + b"x" * (size - len(EXPIRED) - len(b"<!---->")) + b"-->"
        body = EXPIRED.replace(b"<soapenv:Body>", b"<soapenv:Body>" + padding)
        assert len(body) == size
        return body

    assert is_invalid_session(500, padded(MAX_FAULT_BYTES))
    assert not is_invalid_session(500, padded(MAX_FAULT_BYTES + 1))


def _utf16(document: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-16"?>' + document).encode("utf-16")


@pytest.mark.parametrize(
    "doctype", ["<!DOCTYPE soapenv:Envelope>", "<!DOCTYPE e [<!ELEMENT e ANY>]>"]
)
def test_a_utf16_doctype_is_refused_even_when_the_code_is_literal(doctype: str) -> None:
    # No entity to expand: only the doctype itself can make the parser refuse this body.
    document = EXPIRED.decode().split("?>", 1)[1]
    assert is_invalid_session(500, _utf16(document))
    assert b"<!DOCTYPE" not in _utf16(doctype + document)  # the byte check cannot see it
    assert parse_fault(_utf16(doctype + document)) is None
    assert not is_invalid_session(500, _utf16(doctype + document))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a named pipe (POSIX)")
@pytest.mark.parametrize(
    ("doctype", "code"),
    [
        ('<!DOCTYPE e [<!ENTITY x SYSTEM "{url}">]>', "&x;INVALID_SESSION_ID"),
        ('<!DOCTYPE e [<!ENTITY % p SYSTEM "{url}"> %p;]>', "INVALID_SESSION_ID"),
        ('<!DOCTYPE e SYSTEM "{url}">', "INVALID_SESSION_ID"),
    ],
    ids=["external-entity", "parameter-entity", "external-dtd"],
)
def test_files_named_in_a_fault_are_never_opened(tmp_path: Path, doctype: str, code: str) -> None:
    """A local file named by a DTD (written in UTF-16, past the byte check) is not read.

    The file is a named pipe: opening it for reading releases the writer below, so the test
    sees whether the parser opened it (and a parser that did would not hang)."""
    canary = tmp_path / "canary"
    os.mkfifo(canary)
    opened = threading.Event()

    def writer() -> None:
        fd = os.open(canary, os.O_WRONLY)  # returns once a reader opens the pipe
        opened.set()
        os.close(fd)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    body = _utf16(
        doctype.format(url=canary.as_uri())
        + soap_fault(f"<faultcode>{code}</faultcode><faultstring>x</faultstring>").decode()
    )
    try:
        assert parse_fault(body) is None
        assert not opened.is_set()
    finally:
        reader = os.open(canary, os.O_RDONLY | os.O_NONBLOCK)  # releases the writer
        thread.join(5)
        os.close(reader)


def test_a_fault_nested_deeper_than_the_parser_allows_is_not_read() -> None:
    def nested(depth: int) -> bytes:
        return soap_fault(
            "<faultcode>soapenv:Server</faultcode>"
            f"<detail>{'<x>' * depth}{detail('INVALID_SESSION_ID')}{'</x>' * depth}</detail>"
        )

    assert is_invalid_session(500, nested(10))
    deep = nested(1000)  # a few KB, far under the size cap
    assert len(deep) < MAX_FAULT_BYTES
    assert parse_fault(deep) is None


@pytest.mark.parametrize(
    "code",
    [
        "sf:<!--x-->INVALID_SESSION_ID",
        "<!-- x -->sf:INVALID_SESSION_ID",
        "sf:INVALID<!---->_SESSION_ID",
        "sf:<?pi x?>INVALID_SESSION_ID",
    ],
)
def test_comments_and_processing_instructions_inside_the_code_are_not_text(code: str) -> None:
    body = soap_fault(f"<!--c--><faultcode>{code}</faultcode><?pi?><faultstring>m</faultstring>")
    parsed = parse_fault(body)
    assert parsed is not None
    assert (parsed.code, parsed.message) == ("INVALID_SESSION_ID", "m")
    assert is_invalid_session(500, body)


@pytest.mark.parametrize("faultcode", ["<faultcode/>", "<faultcode> </faultcode>", ""])
def test_an_empty_or_missing_faultcode_defers_to_the_exception_code(faultcode: str) -> None:
    body = soap_fault(f"{faultcode}<faultstring>gone</faultstring>{detail('INVALID_SESSION_ID')}")
    parsed = parse_fault(body)
    assert parsed is not None
    assert (parsed.code, parsed.exception_code) == ("", "INVALID_SESSION_ID")
    assert is_invalid_session(500, body)
    # With nothing in the detail either, there is no code at all: not a fault to act on.
    assert parse_fault(soap_fault(f"{faultcode}<faultstring>gone</faultstring>")) is None
    empty_detail = soap_fault(f"{faultcode}{detail('')}")
    assert parse_fault(empty_detail) is None


def test_a_fault_without_faultstring_has_an_empty_message() -> None:
    parsed = parse_fault(soap_fault("<faultcode>sf:INVALID_SESSION_ID</faultcode>"))
    assert parsed is not None
    assert parsed.message == ""


def test_the_first_exception_code_in_the_detail_decides() -> None:
    first_expired = soap_fault(
        "<faultcode>soapenv:Server</faultcode>" + detail("INVALID_SESSION_ID", "INVALID_FIELD")
    )
    first_other = soap_fault(
        "<faultcode>soapenv:Server</faultcode>" + detail("INVALID_FIELD", "INVALID_SESSION_ID")
    )
    assert is_invalid_session(500, first_expired)
    assert not is_invalid_session(500, first_other)


def test_a_fault_keeps_the_session_id_it_echoes_out_of_its_repr_and_message() -> None:
    body = soap_fault(
        "<faultcode>sf:INVALID_SESSION_ID</faultcode>"
        "<faultstring>Invalid Session ID found in SessionHeader: missing session key: "
        "00D000000000001!AQ0.SeCrEt</faultstring>"
    )
    parsed = parse_fault(body)
    assert parsed is not None
    assert "SeCrEt" in parsed.faultstring  # kept as sent...
    assert "SeCrEt" not in repr(parsed)  # ...but neither shown
    assert "SeCrEt" not in parsed.message
    assert parsed.message.startswith("Invalid Session ID found in SessionHeader")


def test_a_parsed_fault_is_an_immutable_value() -> None:
    parsed = parse_fault(EXPIRED)
    assert parsed is not None
    assert parsed == parse_fault(EXPIRED)
    assert len({parsed, parse_fault(EXPIRED)}) == 1  # hashable, equal by value
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.code = "INVALID_FIELD"  # type: ignore[misc]
