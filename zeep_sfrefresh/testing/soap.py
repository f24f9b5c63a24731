"""The stand-in org's SOAP endpoint and its one dispatch table, for all five APIs.

``POST /services/Soap/{u,c,T,m,s}/VER[/ORGID]``: the post is counted, delayed
(``soap_delay``) or failed as a test queued (``fail_next_soap``, ``drop_next_soap``), parsed
(safely: no entities, no DTD), its session checked (an INVALID_SESSION_ID fault in the
flavour of the API posted to when it is missing, expired or REST-only) and handed to the
handler :data:`OPERATIONS` names for its API and operation. The handlers live in
:mod:`~zeep_sfrefresh.testing.soap_partner` (the partner API) and
:mod:`~zeep_sfrefresh.testing.soap_typed` (enterprise, tooling, metadata, apex); what they
share is :mod:`~zeep_sfrefresh.testing.soap_call`'s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

from lxml import etree

from zeep_sfrefresh.testing import soap_partner, soap_typed, wire
from zeep_sfrefresh.testing.server import Answer
from zeep_sfrefresh.testing.soap_call import Handler, SoapCall, SoapFault, local_name
from zeep_sfrefresh.testing.state import OrgState

__all__ = ["OPERATIONS", "SESSIONLESS", "handle_soap_request", "parse_envelope"]

_SOAP_PATH = re.compile(r"^/services/Soap/(?P<code>[^/]+)/(?P<version>\d+\.\d+)(?:/.*)?$")

OPERATIONS: Mapping[tuple[str, str], Handler] = MappingProxyType(
    {
        ("u", "login"): soap_partner.login,
        ("u", "query"): soap_partner.query,
        ("u", "queryAll"): soap_partner.query,
        ("u", "queryMore"): soap_partner.query_more,
        ("u", "retrieve"): soap_partner.retrieve,
        ("u", "create"): soap_partner.create,
        ("u", "update"): soap_partner.update,
        ("u", "delete"): soap_partner.delete,
        ("u", "getUserInfo"): soap_partner.get_user_info,
        ("u", "getServerTimestamp"): soap_partner.get_server_timestamp,
        ("u", "describeSObject"): soap_partner.describe_sobject,
        ("u", "describeSObjects"): soap_partner.describe_sobjects,
        ("u", "describeGlobal"): soap_partner.describe_global,
        ("u", "upsert"): soap_partner.upsert,
        ("u", "undelete"): soap_partner.undelete,
        ("u", "search"): soap_partner.search,
        ("c", "query"): soap_typed.enterprise_query,
        ("c", "queryMore"): soap_typed.enterprise_query_more,
        ("c", "create"): soap_typed.enterprise_create,
        ("c", "getUserInfo"): soap_partner.get_user_info,
        ("c", "getServerTimestamp"): soap_partner.get_server_timestamp,
        ("T", "query"): soap_typed.tooling_query,
        ("T", "getServerTimestamp"): soap_partner.get_server_timestamp,
        ("T", "executeAnonymous"): soap_typed.execute_anonymous,
        ("m", "describeMetadata"): soap_typed.describe_metadata,
        ("m", "listMetadata"): soap_typed.list_metadata,
        ("s", "executeAnonymous"): soap_typed.execute_anonymous,
    }
)
"""(API path code, operation local name) -> handler. Adding an operation is one entry here."""

SESSIONLESS = frozenset({"login"})
"""Operations that run without a SessionHeader (they create the session)."""


def handle_soap_request(org: OrgState, path: str, body: bytes, host: str = "") -> Answer:
    """Answer ``POST /services/Soap/...`` (called by the HTTP handler)."""
    match = _SOAP_PATH.match(path)
    flavour = wire.FLAVOURS.get(match.group("code")) if match else None
    parsed = parse_envelope(body)
    session_id = ""
    if flavour is not None and parsed is not None:
        session_id = _session_id(parsed[0], flavour.namespace)
    with org.lock:
        org.counters.soap_posts += 1
        org.counters.sessions_seen.append(session_id)
        org.counters.soap_hosts.append(host)
        injected = org.injected.popleft() if org.injected and flavour else None
        delay = org.knobs.soap_delay
    if not org.wait(delay):
        return Answer(drop=True)
    if match is None or flavour is None:
        return Answer.json(404, wire.REST_NOT_FOUND)
    if injected is not None:
        if injected.code is None:
            return Answer(drop=True)
        fault = wire.soap_fault(flavour, injected.code, injected.message, prefix=injected.prefix)
        return Answer(500, fault)
    if parsed is None:
        return Answer(
            500,
            wire.soap_fault(
                flavour,
                "Client",
                "",
                prefix="soapenv",
                faultstring="Unable to parse the request: not a SOAP 1.1 envelope",
                detail=False,
            ),
        )
    header, payload = parsed
    call = SoapCall(flavour, match.group("version"), local_name(payload), payload, header)
    if call.operation not in SESSIONLESS:
        with org.lock:
            session = org.sessions.get(session_id)
        if session is None or not session.soap:  # JWT-format tokens are REST-only
            return Answer(500, wire.invalid_session_fault(flavour))
        call.session = session
    handler = OPERATIONS.get((flavour.code, call.operation))
    if etree.QName(payload).namespace != flavour.namespace:
        handler = None
    if handler is None:
        message = f"The stand-in org does not implement {call.operation} on the {flavour.name} API"
        return Answer(500, wire.soap_fault(flavour, "INVALID_OPERATION", message))
    with org.lock:
        org.counters.operations[call.operation] += 1
        org.counters.api_requests += 1
        try:
            return handler(org, call)
        except SoapFault as fault:
            return Answer(
                500,
                wire.soap_fault(
                    flavour,
                    fault.code,
                    fault.message,
                    prefix=fault.prefix,
                    row=fault.row,
                    column=fault.column,
                ),
            )


def parse_envelope(body: bytes) -> tuple[etree._Element | None, etree._Element] | None:
    """(Header, first Body child) of a SOAP 1.1 envelope, or None when it is not one.

    Parsed with a parser that resolves no entities and loads no DTD; a DOCTYPE is refused
    outright, since no SOAP client sends one and it is the usual vehicle for XXE.
    """
    if b"<!DOCTYPE" in body.upper():
        return None
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        root = etree.fromstring(body, parser)
    except etree.XMLSyntaxError:
        return None
    if (
        getattr(root.getroottree().docinfo, "doctype", "")
        or root.tag != f"{{{wire.SOAPENV_NS}}}Envelope"
    ):
        return None
    header = root.find(f"{{{wire.SOAPENV_NS}}}Header")
    soap_body = root.find(f"{{{wire.SOAPENV_NS}}}Body")
    if soap_body is None:
        return None
    payload = next((child for child in soap_body if isinstance(child.tag, str)), None)
    if payload is None:
        return None
    return header, payload


def _session_id(header: etree._Element | None, namespace: str) -> str:
    """``Header/SessionHeader/sessionId`` in the API's namespace ("" when absent)."""
    if header is None:
        return ""
    found = header.find(f"{{{namespace}}}SessionHeader/{{{namespace}}}sessionId")
    return (found.text or "").strip() if found is not None else ""
