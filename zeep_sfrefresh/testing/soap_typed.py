"""The enterprise, tooling, metadata and apex APIs' own operations.

Each is a handler of :mod:`zeep_sfrefresh.testing.soap`'s dispatch table; the shapes they
answer and the data they know (Apex classes, metadata types) are
:mod:`zeep_sfrefresh.testing.apis`'. Enterprise queries page through the same cursors as the
partner API and REST (:mod:`zeep_sfrefresh.testing.paging`), so a locator works with either
API's queryMore, each writing the records its own way; enterprise ``create`` applies the
partner API's rules to its typed records. Like every handler, these run with the org's lock
held.
"""

from __future__ import annotations

import copy
import re
from datetime import datetime, timezone

from lxml import etree

from zeep_sfrefresh.testing import apis, paging, soql, wire
from zeep_sfrefresh.testing.apis import (
    APEX_CLASSES,
    METADATA_TYPES,
    AnonymousResult,
    FileProperties,
)
from zeep_sfrefresh.testing.data import SCHEMA, Record
from zeep_sfrefresh.testing.knobs import DEFAULT_BATCH_SIZE
from zeep_sfrefresh.testing.paging import Page
from zeep_sfrefresh.testing.server import Answer
from zeep_sfrefresh.testing.soap_call import (
    SoapCall,
    SoapFault,
    batch_size,
    child_text,
    children,
    page_answer,
    resolve_soql,
    respond,
    resume_query,
    sobject_spec,
)
from zeep_sfrefresh.testing.soap_partner import create_records
from zeep_sfrefresh.testing.state import OrgState

__all__ = [
    "describe_metadata",
    "enterprise_create",
    "enterprise_query",
    "enterprise_query_more",
    "execute_anonymous",
    "list_metadata",
    "tooling_query",
]


# --- enterprise ------------------------------------------------------------------------------


def enterprise_query(org: OrgState, call: SoapCall) -> Answer:
    """A query of flat typed records (no relationship fields, no COUNT()).

    Without a QueryOptions header its batches are Salesforce's default size, whatever
    ``query_batch_size`` says (that knob is the partner API's).
    """
    resolved = resolve_soql(call, SCHEMA)
    cursor = paging.run_query(
        resolved, org.records, org.parent_record, batch_size=batch_size(call, DEFAULT_BATCH_SIZE)
    )
    return page_answer(org, call, org.cursors.first(cursor), _typed_record)


def enterprise_query_more(org: OrgState, call: SoapCall) -> Answer:
    return page_answer(org, call, resume_query(org, call), _typed_record)


def _typed_record(page: Page, record: Record) -> str:
    """A record of a batch as a typed record (its fields, alphabetically)."""
    return apis.typed_sobject_xml("records", page.cursor.sobject, record, page.cursor.fields)


def _concrete_type(element: etree._Element) -> str:
    """The object an enterprise ``<sObjects>`` names in its xsi:type (prefix resolved).

    Salesforce refuses the abstract sObject (or no type at all) and any type outside the
    enterprise sObject namespace, as it cannot create such a record.
    """
    written = element.get(f"{{{wire.XSI_NS}}}type") or ""
    prefix, _, name = written.rpartition(":")
    namespace = element.nsmap.get(prefix or None)
    if not name or name == "sObject" or namespace != apis.ENTERPRISE_SOBJECT_NS:
        raise SoapFault("INVALID_TYPE", "Must send a concrete entity type.")
    return sobject_spec(name).name


def enterprise_create(org: OrgState, call: SoapCall) -> Answer:
    # A typed record reads like a partner one once its type is a <type> child, so the
    # partner create (unknown fields, read-only fields, nils) is reused on copies.
    untyped = []
    for element in children(call.payload, "sObjects"):
        copied = copy.deepcopy(element)
        type_element = etree.Element("type")
        type_element.text = _concrete_type(element)
        copied.insert(0, type_element)
        untyped.append(copied)
    results = create_records(org, untyped)
    return respond(org, call, f"<createResponse>{results}</createResponse>")


# --- tooling ---------------------------------------------------------------------------------


def tooling_query(org: OrgState, call: SoapCall) -> Answer:
    """A query of the org's Apex classes, answered in one batch."""
    resolved = resolve_soql(call, apis.TOOLING_SCHEMA)
    found = [record for record in APEX_CLASSES if soql.matches(resolved, record)]
    if resolved.limit is not None:
        found = found[: resolved.limit]
    records = [
        apis.typed_sobject_xml("records", resolved.sobject.name, record, resolved.fields)
        for record in found
    ]
    body = apis.tooling_query_result_xml(resolved.sobject.name, records, size=len(found))
    return respond(org, call, body, sobjects=True)


# --- metadata --------------------------------------------------------------------------------


def describe_metadata(org: OrgState, call: SoapCall) -> Answer:
    return respond(org, call, apis.describe_metadata_xml(METADATA_TYPES))


def _components(org: OrgState, call: SoapCall, kind: str) -> list[FileProperties]:
    """The components of one metadata type; INVALID_TYPE (no detail) for an unknown type."""
    known = {item.xml_name: item for item in METADATA_TYPES}
    if kind not in known:
        raise SoapFault("INVALID_TYPE", f"Unknown type:{kind}")
    assert call.session is not None
    user = org.users[call.session.user_id]
    owner = {
        "created_by_id": user.user_id,
        "created_by_name": user.full_name,
        "created_date": apis.SEEDED_AT,
        "last_modified_date": apis.SEEDED_AT,
    }
    if kind == "ApexClass":
        return [
            FileProperties(kind, str(r["Name"]), f"classes/{r['Name']}.cls", str(r["Id"]), **owner)
            for r in APEX_CLASSES
        ]
    if kind == "CustomObject":
        # Standard objects have no component id and are not "unmanaged" customisations.
        return [
            FileProperties(
                kind, spec.name, f"objects/{spec.name}.object", "", **owner, manageable_state=None
            )
            for spec in SCHEMA.values()
        ]
    return []


def list_metadata(org: OrgState, call: SoapCall) -> Answer:
    files: list[FileProperties] = []
    for query in children(call.payload, "queries"):
        files.extend(_components(org, call, (child_text(query, "type") or "").strip()))
    return respond(org, call, apis.list_metadata_xml(files))


# --- apex (and tooling) ----------------------------------------------------------------------

_DEBUG_CALL = re.compile(r"System\.debug\(\s*(?:'((?:[^'\\]|\\.)*)'|([^;]*?))\s*\)\s*;", re.I)
_ASSERT_FALSE = re.compile(r"System\.assert\(\s*false\s*[,)]", re.I)


def _compile(code: str) -> AnonymousResult | None:
    """A compile problem, or None. The stand-in only notices a missing final ';' or '}'."""
    lines = code.rstrip().splitlines()
    if not lines or lines[-1].rstrip()[-1:] in (";", "}"):
        return None
    return AnonymousResult(
        compiled=False,
        success=False,
        line=len(lines),
        column=len(lines[-1].rstrip()) + 1,
        compile_problem="Missing ';' at '<EOF>'",
    )


def _run(code: str) -> tuple[AnonymousResult, list[tuple[int, str]]]:
    """Run anonymous Apex the stand-in's way: System.debug calls print, assert(false) fails.

    Returns the result and the (line, message) of each USER_DEBUG line the log shows.
    """
    debug: list[tuple[int, str]] = []
    for number, line in enumerate(code.splitlines(), start=1):
        if _ASSERT_FALSE.search(line):
            return (
                AnonymousResult(
                    success=False,
                    line=number,
                    column=1,
                    exception_message="System.AssertException: Assertion Failed",
                    exception_stack_trace=f"AnonymousBlock: line {number}, column 1",
                ),
                debug,
            )
        for match in _DEBUG_CALL.finditer(line):
            literal, expression = match.groups()
            message = literal if literal is not None else expression
            debug.append((number, message.replace("\\'", "'").replace("\\\\", "\\")))
    return AnonymousResult(), debug


def _debug_log(org: OrgState, call: SoapCall, code: str, debug: list[tuple[int, str]]) -> str:
    """A debug log shaped like Salesforce's, at the levels DebuggingHeader asks for."""
    header = children(call.header, "DebuggingHeader")
    levels = {"APEX_CODE": "DEBUG", "APEX_PROFILING": "INFO"}
    if header:
        for category in children(header[0], "categories"):
            name = (child_text(category, "category") or "").upper()
            levels[name] = (child_text(category, "level") or "").upper()
    quiet = bool(header) and (child_text(header[0], "debugLevel") or "") == "None"
    now = datetime.now(timezone.utc).strftime("%H:%M:%S.%f")[:10]
    assert call.session is not None
    user = org.users[call.session.user_id]
    lines = [f"{call.version} " + ";".join(f"{k},{v}" for k, v in sorted(levels.items()))]
    lines += [f"Execute Anonymous: {line}" for line in code.splitlines()]
    lines.append(f"{now} (1000000)|USER_INFO|[EXTERNAL]|{user.user_id}|{user.username}")
    lines.append(f"{now} (1100000)|EXECUTION_STARTED")
    lines.append(f"{now} (1200000)|CODE_UNIT_STARTED|[EXTERNAL]|execute_anonymous_apex")
    if not quiet and levels.get("APEX_CODE") not in ("NONE", "ERROR", "WARN", "INFO"):
        lines += [f"{now} (1300000)|USER_DEBUG|[{n}]|DEBUG|{text}" for n, text in debug]
    lines.append(f"{now} (1400000)|CODE_UNIT_FINISHED|execute_anonymous_apex")
    lines.append(f"{now} (1500000)|EXECUTION_FINISHED")
    return "\n".join(lines) + "\n"


def execute_anonymous(org: OrgState, call: SoapCall) -> Answer:
    """Compile and "run" the code; problems are reported in the result, never as faults."""
    code = child_text(call.payload, "String") or ""
    failed = _compile(code)
    result, debug = (failed, []) if failed is not None else _run(code)
    log = _debug_log(org, call, code, debug if result.compiled else [])
    headers = apis.debugging_info_xml(log)
    return respond(org, call, apis.execute_anonymous_xml(result), headers=headers)
