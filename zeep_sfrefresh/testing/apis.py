"""The stand-in org's enterprise, tooling, metadata and apex operations, and their wire format.

:mod:`zeep_sfrefresh.testing.org` serves the partner API and checks the session of every SOAP
call; the operations of the four other APIs live here and are registered in the org's dispatch
table by :data:`SOAP_HANDLERS`. What each API answers:

* enterprise (``c``): ``query``, ``queryMore``, ``create``, ``getUserInfo`` and
  ``getServerTimestamp``, over the org's records (the same ones the partner API sees), with
  typed records (``<records xsi:type="sf:Contact">`` in the enterprise sObject namespace).
* tooling (``T``): ``query`` over a few ApexClass records, ``getServerTimestamp`` and
  ``executeAnonymous``. No LimitInfoHeader, and its QueryResult is the tooling one
  (``entityTypeName``, ``totalSize``).
* metadata (``m``): ``describeMetadata`` and ``listMetadata`` (ApexClass lists the tooling
  classes, CustomObject the org's objects). Its faults carry no ``<detail>``.
* apex (``s``): ``executeAnonymous``, with a ``DebuggingInfo`` response header.

Every answer is valid for the project's compact WSDLs and for Salesforce's published ones. The
first half of the module builds the envelopes from plain arguments (like
:mod:`zeep_sfrefresh.testing.wire`); the second half is the org-side behaviour. Handlers are
called with the org's lock held and raise the org's API fault for errors, which the org renders
in the flavour of the API posted to.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from types import MappingProxyType
from xml.sax.saxutils import escape

from lxml import etree

from zeep_sfrefresh.testing import soql, wire
from zeep_sfrefresh.testing.data import (
    SCHEMA,
    FieldSpec,
    SObjectSpec,
    Value,
    random_id,
    sequential_id,
)
from zeep_sfrefresh.testing.org import (
    _API_LIMIT,
    StandInOrg,
    _child_text,
    _children,
    _SoapCall,
    _SoapFault,
    _sobject_spec,
)
from zeep_sfrefresh.testing.server import Answer

__all__ = [
    "APEX_CLASSES",
    "ENTERPRISE_SOBJECT_NS",
    "METADATA_TYPES",
    "SOAP_HANDLERS",
    "TOOLING_SCHEMA",
    "TOOLING_SOBJECT_NS",
    "AnonymousResult",
    "FileProperties",
    "MetadataType",
    "debugging_info_xml",
    "describe_metadata_xml",
    "execute_anonymous_xml",
    "limit_info_xml",
    "list_metadata_xml",
    "soap_answer",
    "tooling_query_result_xml",
    "typed_sobject_xml",
]

ENTERPRISE_SOBJECT_NS = "urn:sobject.enterprise.soap.sforce.com"
TOOLING_SOBJECT_NS = "urn:sobject.tooling.soap.sforce.com"

_SOBJECT_NS = {"c": ENTERPRISE_SOBJECT_NS, "T": TOOLING_SOBJECT_NS}
"""Where each typed-record API puts its sObjects (the ``sf`` prefix of its answers)."""


# --- wire: pure builders ---------------------------------------------------------------------


def _element(tag: str, value: Value | int) -> str:
    """``<tag>value</tag>``, or ``<tag xsi:nil="true"/>`` for None (booleans as true/false)."""
    if value is None:
        return f'<{tag} xsi:nil="true"/>'
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"<{tag}>{escape(str(value))}</{tag}>"


def soap_answer(
    flavour: wire.SoapFlavour, body: str, *, headers: str = "", sobject_ns: str | None = None
) -> bytes:
    """A successful envelope around ``body`` (XML text in the API's default namespace).

    ``headers`` is the inside of ``soapenv:Header`` (none when empty); ``sobject_ns`` binds
    the ``sf`` prefix that typed records use, on the envelope as Salesforce does.
    """
    namespaces = f' xmlns="{flavour.namespace}" xmlns:xsi="{wire.XSI_NS}"'
    if sobject_ns is not None:
        namespaces += f' xmlns:sf="{sobject_ns}"'
    header = f"<soapenv:Header>{headers}</soapenv:Header>" if headers else ""
    text = (
        f'<?xml version="1.0" encoding="UTF-8"?>'
        f'<soapenv:Envelope xmlns:soapenv="{wire.SOAPENV_NS}"{namespaces}>'
        f"{header}<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
    )
    return text.encode("utf-8")


def limit_info_xml(limit: wire.LimitInfo) -> str:
    """The LimitInfoHeader of enterprise answers (no appName: the enterprise WSDL has none)."""
    return (
        "<LimitInfoHeader><limitInfo>"
        f"<current>{limit.current}</current><limit>{limit.limit}</limit>"
        f"{_element('type', limit.type)}</limitInfo></LimitInfoHeader>"
    )


def debugging_info_xml(debug_log: str) -> str:
    """The DebuggingInfo response header of executeAnonymous (apex and tooling)."""
    return f"<DebuggingInfo>{_element('debugLog', debug_log)}</DebuggingInfo>"


def typed_sobject_xml(
    tag: str, sobject: str, record: Mapping[str, Value], fields: Sequence[FieldSpec]
) -> str:
    """One typed record: ``<tag xsi:type="sf:Contact"><sf:Id>..</sf:Id><sf:Email>..``.

    The enterprise and tooling WSDLs declare each object's fields as a sequence in
    alphabetical order after the base sObject's ``Id``, and zeep parses a sequence in order,
    so the selected fields are written in that order, not in SELECT order. ``Id`` is always
    written (nil when it was not selected), as the base type requires it.
    """
    selected = {spec.name: spec for spec in fields}
    parts = [f'<{tag} xsi:type="sf:{sobject}">']
    parts.append(_element("sf:Id", record.get("Id") if "Id" in selected else None))
    for name in sorted(selected):
        if name != "Id":
            parts.append(_element(f"sf:{name}", record.get(name)))
    parts.append(f"</{tag}>")
    return "".join(parts)


def tooling_query_result_xml(entity: str, records: Sequence[str], *, size: int) -> str:
    """``<queryResponse>`` of the tooling API: every record in one batch, no query locator.

    The tooling QueryResult has ``entityTypeName`` and ``totalSize`` besides the partner
    fields. Its ``queryLocator`` is not declared nillable, but a finished query has none and
    Salesforce writes nil there as in the other APIs.
    """
    return (
        "<queryResponse><result>"
        f"{_element('done', True)}{_element('entityTypeName', entity)}"
        f"{_element('queryLocator', None)}{''.join(records)}"
        f"<size>{size}</size><totalSize>{size}</totalSize></result></queryResponse>"
    )


@dataclass(frozen=True)
class AnonymousResult:
    """What executeAnonymous reports (Salesforce sends -1 for line and column on success)."""

    compiled: bool = True
    success: bool = True
    line: int = -1
    column: int = -1
    compile_problem: str | None = None
    exception_message: str | None = None
    exception_stack_trace: str | None = None


def execute_anonymous_xml(result: AnonymousResult) -> str:
    """``<executeAnonymousResponse>``; the same in the apex and the tooling API."""
    values: list[tuple[str, Value | int]] = [
        ("column", result.column),
        ("compileProblem", result.compile_problem),
        ("compiled", result.compiled),
        ("exceptionMessage", result.exception_message),
        ("exceptionStackTrace", result.exception_stack_trace),
        ("line", result.line),
        ("success", result.success),
    ]
    inner = "".join(_element(name, value) for name, value in values)
    return f"<executeAnonymousResponse><result>{inner}</result></executeAnonymousResponse>"


@dataclass(frozen=True)
class MetadataType:
    """One entry of describeMetadata's ``metadataObjects``."""

    xml_name: str
    directory_name: str
    suffix: str | None
    in_folder: bool = False
    meta_file: bool = False
    child_xml_names: tuple[str, ...] = ()


def describe_metadata_xml(
    types: Sequence[MetadataType],
    *,
    organization_namespace: str = "",
    partial_save_allowed: bool = True,
    test_required: bool = False,
) -> str:
    """``<describeMetadataResponse>``: the metadata types the org offers."""
    objects = []
    for kind in types:
        parts = [_element("childXmlNames", child) for child in kind.child_xml_names]
        parts += [
            _element("directoryName", kind.directory_name),
            _element("inFolder", kind.in_folder),
            _element("metaFile", kind.meta_file),
        ]
        if kind.suffix is not None:
            parts.append(_element("suffix", kind.suffix))
        parts.append(_element("xmlName", kind.xml_name))
        objects.append(f"<metadataObjects>{''.join(parts)}</metadataObjects>")
    return (
        "<describeMetadataResponse><result>"
        + "".join(objects)
        + _element("organizationNamespace", organization_namespace)
        + _element("partialSaveAllowed", partial_save_allowed)
        + _element("testRequired", test_required)
        + "</result></describeMetadataResponse>"
    )


@dataclass(frozen=True)
class FileProperties:
    """One component of a listMetadata answer."""

    type: str
    full_name: str
    file_name: str
    id: str
    created_by_id: str
    created_by_name: str
    created_date: str
    last_modified_date: str
    manageable_state: str | None = "unmanaged"
    namespace_prefix: str | None = None


def list_metadata_xml(files: Sequence[FileProperties]) -> str:
    """``<listMetadataResponse>`` with one ``<result>`` per component, fields in WSDL order."""
    results = []
    for item in files:
        values: list[tuple[str, Value]] = [
            ("createdById", item.created_by_id),
            ("createdByName", item.created_by_name),
            ("createdDate", item.created_date),
            ("fileName", item.file_name),
            ("fullName", item.full_name),
            ("id", item.id),
            ("lastModifiedById", item.created_by_id),
            ("lastModifiedByName", item.created_by_name),
            ("lastModifiedDate", item.last_modified_date),
        ]
        parts = [_element(name, value) for name, value in values]
        # Optional elements are left out when empty rather than sent as nil (not nillable).
        if item.manageable_state is not None:
            parts.append(_element("manageableState", item.manageable_state))
        if item.namespace_prefix is not None:
            parts.append(_element("namespacePrefix", item.namespace_prefix))
        parts.append(_element("type", item.type))
        results.append(f"<result>{''.join(parts)}</result>")
    return f"<listMetadataResponse>{''.join(results)}</listMetadataResponse>"


# --- data ------------------------------------------------------------------------------------

TOOLING_SCHEMA: Mapping[str, SObjectSpec] = MappingProxyType(
    {
        "apexclass": SObjectSpec(
            "ApexClass",
            "Apex Class",
            "Apex Classes",
            "01p",
            (
                FieldSpec("Id", "Class ID", "id", "tns:ID", 18, createable=False, nillable=False),
                FieldSpec("ApiVersion", "Api Version", "double", "xsd:double", 0),
                FieldSpec("Body", "Body", "textarea", "xsd:string", 1000000),
                FieldSpec("IsValid", "Is Valid", "boolean", "xsd:boolean", 0, nillable=False),
                FieldSpec("LengthWithoutComments", "Size Without Comments", "int", "xsd:int", 0),
                FieldSpec("Name", "Name", "string", "xsd:string", 255, nillable=False),
                FieldSpec("NamespacePrefix", "Namespace Prefix", "string", "xsd:string", 15),
                FieldSpec("Status", "Status", "picklist", "tns:ApexCodeUnitStatus", 40),
            ),
        )
    }
)
"""The tooling objects the stand-in knows (queried with the same SOQL subset as the data)."""

_CLASS_BODIES = {
    "HelloWorld": (
        "public with sharing class HelloWorld {\n"
        "    public static String greet(String name) {\n"
        "        return 'Hello, ' + name;\n"
        "    }\n"
        "}"
    ),
    "ContactService": (
        "public with sharing class ContactService {\n"
        "    public static List<Contact> byAccount(Id accountId) {\n"
        "        return [SELECT Id, Name FROM Contact WHERE AccountId = :accountId];\n"
        "    }\n"
        "}"
    ),
    "SessionRefreshCallout": (
        "public with sharing class SessionRefreshCallout {\n"
        "    // Calls the partner SOAP API through a Named Credential (see KB 000381864).\n"
        "    public static HttpResponse send(String envelope) {\n"
        "        HttpRequest request = new HttpRequest();\n"
        "        request.setEndpoint('callout:Partner/services/Soap/u/66.0');\n"
        "        request.setMethod('POST');\n"
        "        request.setBody(envelope);\n"
        "        return new Http().send(request);\n"
        "    }\n"
        "}"
    ),
}

APEX_CLASSES: tuple[Mapping[str, Value], ...] = tuple(
    MappingProxyType(
        {
            "Id": sequential_id("01p", number),
            "ApiVersion": "66.0",
            "Body": body,
            "IsValid": True,
            "LengthWithoutComments": str(len(re.sub(r"//[^\n]*", "", body))),
            "Name": name,
            "NamespacePrefix": None,
            "Status": "Active",
        }
    )
    for number, (name, body) in enumerate(_CLASS_BODIES.items(), start=1)
)
"""The org's Apex classes: what a tooling query on ApexClass and listMetadata see."""

_SEEDED_AT = "2025-01-15T09:30:00.000Z"
"""createdDate and lastModifiedDate of every seeded component."""

METADATA_TYPES: tuple[MetadataType, ...] = (
    MetadataType("ApexClass", "classes", "cls", meta_file=True),
    MetadataType("ApexTrigger", "triggers", "trigger", meta_file=True),
    MetadataType(
        "CustomObject",
        "objects",
        "object",
        child_xml_names=("CustomField", "ListView", "RecordType", "ValidationRule"),
    ),
    MetadataType("Layout", "layouts", "layout"),
    MetadataType("Report", "reports", "report", in_folder=True),
)
"""What describeMetadata lists (Salesforce lists several hundred types)."""


# --- org-side behaviour ----------------------------------------------------------------------


def _respond(
    org: StandInOrg,
    call: _SoapCall,
    body: str,
    *,
    headers: str = "",
    sobjects: bool = False,
) -> Answer:
    """HTTP 200 with ``body``; the LimitInfoHeader is added for APIs whose WSDL declares it."""
    if call.flavour.limit_info:
        headers = limit_info_xml(wire.LimitInfo(org._api_requests, _API_LIMIT)) + headers
    sobject_ns = _SOBJECT_NS.get(call.flavour.code) if sobjects else None
    return Answer(200, soap_answer(call.flavour, body, headers=headers, sobject_ns=sobject_ns))


def _resolve(text: str, schema: Mapping[str, SObjectSpec]) -> soql.ResolvedQuery:
    try:
        return soql.resolve(soql.parse(text), schema)
    except soql.SoqlError as error:
        raise _SoapFault(
            error.code, error.exception_message, row=error.row, column=error.column
        ) from None


# Enterprise


def _enterprise_query(org: StandInOrg, call: _SoapCall) -> Answer:
    query = _resolve(_child_text(call.payload, "queryString") or "", SCHEMA)
    found = [dict(r) for r in org._store.scan(query.sobject.name) if soql.matches(query, r)]
    if query.limit is not None:
        found = found[: query.limit]
    cursor = soql.Cursor(query.sobject.name, query.fields, found, org._batch_size(call))
    return _enterprise_batch(org, call, cursor, random_id("01g"), 0)


def _enterprise_query_more(org: StandInOrg, call: _SoapCall) -> Answer:
    locator = _child_text(call.payload, "queryLocator") or ""
    cursor_id, _, offset = locator.rpartition("-")
    cursor = org._cursors.get(cursor_id)
    if cursor is None or not offset.isdigit() or int(offset) > len(cursor.records):
        raise _SoapFault("INVALID_QUERY_LOCATOR", "invalid query locator")
    return _enterprise_batch(org, call, cursor, cursor_id, int(offset))


def _enterprise_batch(
    org: StandInOrg, call: _SoapCall, cursor: soql.Cursor, cursor_id: str, start: int
) -> Answer:
    """One batch of a cursor, like the partner API's but with typed records.

    Cursors are the org's, so a locator works with either API's queryMore (each renders the
    records its own way).
    """
    end = start + org._batch_size(call, cursor.batch_size)
    done = end >= len(cursor.records)
    if not done:
        org._cursors[cursor_id] = cursor
    records = [
        typed_sobject_xml("records", cursor.sobject, record, cursor.fields)
        for record in cursor.records[start:end]
    ]
    body = wire.query_result_xml(
        call.operation,
        records,
        done=done,
        locator=None if done else f"{cursor_id}-{end}",
        size=len(cursor.records),
    )
    return _respond(org, call, body, sobjects=True)


def _concrete_type(element: etree._Element) -> str:
    """The object an enterprise ``<sObjects>`` names in its xsi:type (prefix resolved).

    Salesforce refuses the abstract sObject (or no type at all) and any type outside the
    enterprise sObject namespace, as it cannot create such a record.
    """
    written = element.get(f"{{{wire.XSI_NS}}}type") or ""
    prefix, _, name = written.rpartition(":")
    namespace = element.nsmap.get(prefix or None)
    if not name or name == "sObject" or namespace != ENTERPRISE_SOBJECT_NS:
        raise _SoapFault("INVALID_TYPE", "Must send a concrete entity type.")
    return _sobject_spec(name).name


def _enterprise_create(org: StandInOrg, call: _SoapCall) -> Answer:
    # A typed record reads like a partner one once its type is a <type> child, so the
    # partner create (unknown fields, read-only fields, nils) is reused on copies.
    untyped = []
    for element in _children(call.payload, "sObjects"):
        copied = copy.deepcopy(element)
        type_element = etree.Element("type")
        type_element.text = _concrete_type(element)
        copied.insert(0, type_element)
        untyped.append(copied)
    results = org._create_records(untyped)
    return _respond(org, call, f"<createResponse>{results}</createResponse>")


# Tooling


def _tooling_query(org: StandInOrg, call: _SoapCall) -> Answer:
    query = _resolve(_child_text(call.payload, "queryString") or "", TOOLING_SCHEMA)
    found = [record for record in APEX_CLASSES if soql.matches(query, record)]
    if query.limit is not None:
        found = found[: query.limit]
    records = [
        typed_sobject_xml("records", query.sobject.name, record, query.fields) for record in found
    ]
    body = tooling_query_result_xml(query.sobject.name, records, size=len(found))
    return _respond(org, call, body, sobjects=True)


# Metadata


def _describe_metadata(org: StandInOrg, call: _SoapCall) -> Answer:
    return _respond(org, call, describe_metadata_xml(METADATA_TYPES))


def _components(org: StandInOrg, call: _SoapCall, kind: str) -> list[FileProperties]:
    """The components of one metadata type; INVALID_TYPE (no detail) for an unknown type."""
    known = {item.xml_name: item for item in METADATA_TYPES}
    if kind not in known:
        raise _SoapFault("INVALID_TYPE", f"Unknown type:{kind}")
    assert call.session is not None
    user = org._users[call.session.user_id]
    owner = {
        "created_by_id": user.user_id,
        "created_by_name": user.full_name,
        "created_date": _SEEDED_AT,
        "last_modified_date": _SEEDED_AT,
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


def _list_metadata(org: StandInOrg, call: _SoapCall) -> Answer:
    files: list[FileProperties] = []
    for query in _children(call.payload, "queries"):
        files.extend(_components(org, call, (_child_text(query, "type") or "").strip()))
    return _respond(org, call, list_metadata_xml(files))


# Apex (and tooling)

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


def _debug_log(org: StandInOrg, call: _SoapCall, code: str, debug: list[tuple[int, str]]) -> str:
    """A debug log shaped like Salesforce's, at the levels DebuggingHeader asks for."""
    header = _children(call.header, "DebuggingHeader")
    levels = {"APEX_CODE": "DEBUG", "APEX_PROFILING": "INFO"}
    if header:
        for category in _children(header[0], "categories"):
            name = (_child_text(category, "category") or "").upper()
            levels[name] = (_child_text(category, "level") or "").upper()
    quiet = bool(header) and (_child_text(header[0], "debugLevel") or "") == "None"
    now = datetime.now(timezone.utc).strftime("%H:%M:%S.%f")[:10]
    assert call.session is not None
    user = org._users[call.session.user_id]
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


def _execute_anonymous(org: StandInOrg, call: _SoapCall) -> Answer:
    """Compile and "run" the code; problems are reported in the result, never as faults."""
    code = _child_text(call.payload, "String") or ""
    failed = _compile(code)
    result, debug = (failed, []) if failed is not None else _run(code)
    log = _debug_log(org, call, code, debug if result.compiled else [])
    return _respond(org, call, execute_anonymous_xml(result), headers=debugging_info_xml(log))


_Handler = Callable[[StandInOrg, _SoapCall], Answer]

SOAP_HANDLERS: Mapping[tuple[str, str], _Handler] = MappingProxyType(
    {
        ("c", "query"): _enterprise_query,
        ("c", "queryMore"): _enterprise_query_more,
        ("c", "create"): _enterprise_create,
        ("c", "getUserInfo"): StandInOrg._soap_user_info,
        ("c", "getServerTimestamp"): StandInOrg._soap_server_timestamp,
        ("T", "query"): _tooling_query,
        ("T", "getServerTimestamp"): StandInOrg._soap_server_timestamp,
        ("T", "executeAnonymous"): _execute_anonymous,
        ("m", "describeMetadata"): _describe_metadata,
        ("m", "listMetadata"): _list_metadata,
        ("s", "executeAnonymous"): _execute_anonymous,
    }
)
"""(API path code, operation) -> handler, merged into the org's dispatch table."""
