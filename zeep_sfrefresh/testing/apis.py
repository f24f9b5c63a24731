"""The enterprise, tooling, metadata and apex APIs' own wire format and data (pure).

The partner API's answers are :mod:`zeep_sfrefresh.testing.wire`'s; the four other SOAP APIs
answer some shapes of their own, built here from plain arguments, and know some data the
partner API does not (Apex classes, metadata types). Their operations are handled in
:mod:`zeep_sfrefresh.testing.soap_typed`. What each API answers:

* enterprise (``c``): ``query``, ``queryMore``, ``create``, ``getUserInfo`` and
  ``getServerTimestamp``, over the org's records (the same ones the partner API sees), with
  typed records (``<records xsi:type="sf:Contact">`` in the enterprise sObject namespace).
* tooling (``T``): ``query`` over a few ApexClass records, ``getServerTimestamp`` and
  ``executeAnonymous``. No LimitInfoHeader, and its QueryResult is the tooling one
  (``entityTypeName``, ``totalSize``).
* metadata (``m``): ``describeMetadata`` and ``listMetadata`` (ApexClass lists the tooling
  classes, CustomObject the org's objects). Its faults carry no ``<detail>``.
* apex (``s``): ``executeAnonymous``, with a ``DebuggingInfo`` response header.

Every answer is valid for the project's compact WSDLs and for Salesforce's published ones.
Nothing here touches a socket, a clock or the org's state.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from xml.sax.saxutils import escape

from zeep_sfrefresh.testing.data import FieldSpec, SObjectSpec, Value, sequential_id

__all__ = [
    "APEX_CLASSES",
    "ENTERPRISE_SOBJECT_NS",
    "METADATA_TYPES",
    "SEEDED_AT",
    "TOOLING_SCHEMA",
    "TOOLING_SOBJECT_NS",
    "AnonymousResult",
    "FileProperties",
    "MetadataType",
    "debugging_info_xml",
    "describe_metadata_xml",
    "execute_anonymous_xml",
    "list_metadata_xml",
    "tooling_query_result_xml",
    "typed_sobject_xml",
]

ENTERPRISE_SOBJECT_NS = "urn:sobject.enterprise.soap.sforce.com"
TOOLING_SOBJECT_NS = "urn:sobject.tooling.soap.sforce.com"


# --- wire: pure builders ---------------------------------------------------------------------


def _element(tag: str, value: Value | int) -> str:
    """``<tag>value</tag>``, or ``<tag xsi:nil="true"/>`` for None (booleans as true/false)."""
    if value is None:
        return f'<{tag} xsi:nil="true"/>'
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"<{tag}>{escape(str(value))}</{tag}>"


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

SEEDED_AT = "2025-01-15T09:30:00.000Z"
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
