"""Fault detection: exact QName matching, never a substring, and a guarded parser."""

from __future__ import annotations

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
