"""Salesforce's wire format, as pure functions: SOAP envelopes and faults, token and REST JSON.

Everything here builds bytes or JSON-ready values from plain arguments and never touches a
socket, a clock or the org's state, so the shapes can be unit-tested against the reference
captures and reused by tests that need a canned answer without a server. The envelopes are
written as text, the way Salesforce serialises them (prefixes ``soapenv``, ``sf``, ``xsi``, the
API namespace as the default namespace), because clients and tests look at those bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from zeep_sfrefresh.testing.data import FieldSpec, SObjectSpec, Value, id15
from zeep_sfrefresh.testing.soql import Parents, Relationship

__all__ = [
    "DESCRIBE_GLOBAL_MAX_BATCH_SIZE",
    "FLAVOURS",
    "HTML_500_PAGE",
    "HTML_503_PAGE",
    "INVALID_SESSION_MESSAGE",
    "JSON_CONTENT_TYPE",
    "REST_INVALID_SESSION",
    "REST_NOT_FOUND",
    "REST_NOT_VALID_FOR_REST",
    "SOAPENV_NS",
    "SOBJECT_NS",
    "TRUNCATED_TOKEN_BODY",
    "XML_CONTENT_TYPE",
    "XSI_NS",
    "LimitInfo",
    "SoapFlavour",
    "UserInfo",
    "delete_result_xml",
    "describe_global_xml",
    "describe_sobject_xml",
    "describe_sobjects_xml",
    "fault_detail_type",
    "invalid_session_fault",
    "limit_info_xml",
    "login_result_xml",
    "oauth_error",
    "query_result_xml",
    "rest_describe",
    "rest_describe_global",
    "rest_error",
    "rest_external_id_not_found",
    "rest_limit_info",
    "rest_limits",
    "rest_method_not_allowed",
    "rest_not_found",
    "rest_query_body",
    "rest_record",
    "rest_record_errors",
    "rest_resources",
    "rest_save_result",
    "rest_sobject_info",
    "rest_sobject_url",
    "rest_versions",
    "save_result_xml",
    "search_record_xml",
    "search_result_xml",
    "server_timestamp_xml",
    "soap_answer",
    "soap_fault",
    "soap_response",
    "sobject_xml",
    "token_body",
    "token_signature",
    "undelete_result_xml",
    "upsert_result_xml",
    "user_info_xml",
    "userinfo_body",
]

SOAPENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
SOBJECT_NS = "urn:sobject.partner.soap.sforce.com"
XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>'
XML_CONTENT_TYPE = "text/xml;charset=UTF-8"
JSON_CONTENT_TYPE = "application/json;charset=UTF-8"

INVALID_SESSION_MESSAGE = "Invalid Session ID found in SessionHeader: Illegal Session"
"""Salesforce's exceptionMessage for a missing, expired or unknown session."""


@dataclass(frozen=True)
class SoapFlavour:
    """How one SOAP API spells its envelopes: namespaces and the shape of its faults."""

    code: str
    """Path code after ``/services/Soap/`` (``u``, ``c``, ``T``, ``m``, ``s``)."""
    name: str
    namespace: str
    """Namespace of the API's operations and of its SessionHeader."""
    fault_namespace: str
    """What the ``sf`` prefix is bound to in the API's faults."""
    fault_detail: bool
    """Whether faults carry ``<detail>`` (partner/enterprise/tooling) or not (metadata/apex)."""
    limit_info: bool
    """Whether successful answers carry a LimitInfoHeader (the API's WSDL declares one)."""


FLAVOURS: dict[str, SoapFlavour] = {
    flavour.code: flavour
    for flavour in (
        SoapFlavour(
            "u",
            "partner",
            "urn:partner.soap.sforce.com",
            "urn:fault.partner.soap.sforce.com",
            True,
            True,
        ),
        SoapFlavour(
            "c",
            "enterprise",
            "urn:enterprise.soap.sforce.com",
            "urn:fault.enterprise.soap.sforce.com",
            True,
            True,
        ),
        SoapFlavour(
            "T",
            "tooling",
            "urn:tooling.soap.sforce.com",
            "urn:fault.tooling.soap.sforce.com",
            True,
            False,
        ),
        # The metadata API binds sf to its own namespace and sends no <detail> (real capture).
        SoapFlavour(
            "m",
            "metadata",
            "http://soap.sforce.com/2006/04/metadata",
            "http://soap.sforce.com/2006/04/metadata",
            False,
            False,
        ),
        # The apex WSDL declares no fault messages at all: same shape as metadata.
        SoapFlavour(
            "s",
            "apex",
            "http://soap.sforce.com/2006/08/apex",
            "http://soap.sforce.com/2006/08/apex",
            False,
            False,
        ),
    )
}
"""The five SOAP APIs keyed by path code (case-sensitive: ``T`` is tooling)."""

_QUERY_FAULTS = frozenset(
    {"InvalidFieldFault", "InvalidSObjectFault", "MalformedQueryFault", "MalformedSearchFault"}
)
_DETAIL_TYPES = {
    "INVALID_LOGIN": "LoginFault",
    "INVALID_FIELD": "InvalidFieldFault",
    "INVALID_TYPE": "InvalidSObjectFault",
    "MALFORMED_QUERY": "MalformedQueryFault",
    "MALFORMED_SEARCH": "MalformedSearchFault",
    "INVALID_QUERY_LOCATOR": "InvalidQueryLocatorFault",
    "INVALID_ID_FIELD": "InvalidIdFault",
    "MALFORMED_ID": "InvalidIdFault",
}


def _text(value: object) -> str:
    return escape(str(value))


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _element(tag: str, value: Value | int) -> str:
    """``<tag>value</tag>``, or ``<tag xsi:nil="true"/>`` for None (booleans as true/false)."""
    if value is None:
        return f'<{tag} xsi:nil="true"/>'
    if isinstance(value, bool):
        return f"<{tag}>{_bool(value)}</{tag}>"
    return f"<{tag}>{_text(value)}</{tag}>"


def fault_detail_type(code: str) -> str:
    """The fault element Salesforce puts in ``<detail>`` for an exception code."""
    return _DETAIL_TYPES.get(code, "UnexpectedErrorFault")


def soap_fault(
    flavour: SoapFlavour,
    code: str,
    message: str,
    *,
    prefix: str = "sf",
    faultstring: str | None = None,
    detail: bool = True,
    detail_type: str | None = None,
    row: int = -1,
    column: int = -1,
) -> bytes:
    """A SOAP 1.1 fault envelope exactly as the given API sends it (sent with HTTP 500).

    ``faultcode`` is ``prefix:code`` (Salesforce omits the prefix for INVALID_LOGIN, so pass
    ``prefix=""`` there); ``faultstring`` defaults to ``"CODE: message"``. APIs with fault
    details get ``<detail><sf:X xsi:type="sf:X">`` with exceptionCode and exceptionMessage, plus
    row and column for the query faults (Salesforce sends -1 when no position applies).
    ``detail=False`` leaves it out whatever the API (SOAP-level ``soapenv:Client`` faults).
    """
    faultcode = f"{prefix}:{code}" if prefix else code
    if faultstring is None:
        faultstring = f"{code}: {message}"
    with_detail = detail and flavour.fault_detail
    namespaces = f' xmlns:sf="{flavour.fault_namespace}"'
    if with_detail:
        namespaces += f' xmlns:xsi="{XSI_NS}"'
    if prefix not in ("", "sf", "soapenv", "xsi"):
        namespaces += f" xmlns:{prefix}={quoteattr(flavour.fault_namespace)}"
    detail_xml = ""
    if with_detail:
        kind = detail_type or fault_detail_type(code)
        position = ""
        if kind in _QUERY_FAULTS:
            position = f"<sf:row>{row}</sf:row><sf:column>{column}</sf:column>"
        detail_xml = (
            f'<detail><sf:{kind} xsi:type="sf:{kind}">'
            f"<sf:exceptionCode>{_text(code)}</sf:exceptionCode>"
            f"<sf:exceptionMessage>{_text(message)}</sf:exceptionMessage>"
            f"{position}</sf:{kind}></detail>"
        )
    text = (
        f'{XML_DECL}<soapenv:Envelope xmlns:soapenv="{SOAPENV_NS}"{namespaces}>'
        "<soapenv:Body><soapenv:Fault>"
        f"<faultcode>{_text(faultcode)}</faultcode>"
        f"<faultstring>{_text(faultstring)}</faultstring>"
        f"{detail_xml}</soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )
    return text.encode("utf-8")


def invalid_session_fault(flavour: SoapFlavour) -> bytes:
    """The INVALID_SESSION_ID fault the API answers for a missing, expired or unknown session."""
    return soap_fault(flavour, "INVALID_SESSION_ID", INVALID_SESSION_MESSAGE)


@dataclass(frozen=True)
class LimitInfo:
    """One ``<limitInfo>`` of the LimitInfoHeader Salesforce adds to API answers."""

    current: int
    limit: int
    type: str = "API REQUESTS"


def limit_info_xml(limit: LimitInfo) -> str:
    """The LimitInfoHeader Salesforce adds to answers of APIs whose WSDL declares one."""
    return (
        "<LimitInfoHeader><limitInfo>"
        f"<current>{limit.current}</current><limit>{limit.limit}</limit>"
        f"<type>{_text(limit.type)}</type></limitInfo></LimitInfoHeader>"
    )


def soap_answer(
    flavour: SoapFlavour, body: str, *, headers: str = "", sobject_ns: str | None = None
) -> bytes:
    """A successful envelope around ``body`` (XML text in the API's default namespace).

    ``headers`` is the inside of ``soapenv:Header`` (none when empty); ``sobject_ns`` binds
    the ``sf`` prefix that records use, on the envelope as Salesforce does.
    """
    namespaces = f' xmlns="{flavour.namespace}" xmlns:xsi="{XSI_NS}"'
    if sobject_ns is not None:
        namespaces += f' xmlns:sf="{sobject_ns}"'
    header = f"<soapenv:Header>{headers}</soapenv:Header>" if headers else ""
    text = (
        f'{XML_DECL}<soapenv:Envelope xmlns:soapenv="{SOAPENV_NS}"{namespaces}>'
        f"{header}<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
    )
    return text.encode("utf-8")


def soap_response(
    flavour: SoapFlavour,
    body: str,
    *,
    limit_info: LimitInfo | None = None,
    sobjects: bool = False,
) -> bytes:
    """A successful partner-style envelope around ``body`` (see :func:`soap_answer`).

    ``sobjects`` declares the ``sf`` prefix for partner sObject fields, as Salesforce does on
    answers that carry records. The LimitInfoHeader is only written for APIs whose WSDL
    declares it.
    """
    headers = ""
    if limit_info is not None and flavour.limit_info:
        headers = limit_info_xml(limit_info)
    return soap_answer(flavour, body, headers=headers, sobject_ns=SOBJECT_NS if sobjects else None)


def _parent(
    relationship: Relationship, record: Mapping[str, Value], parents: Parents | None
) -> Mapping[str, Value] | None:
    """The parent record a relationship reads from ``record``; None for an empty lookup."""
    parent_id = record.get(relationship.field.name)
    if not isinstance(parent_id, str) or parents is None:
        return None
    return parents.get((relationship.sobject.name, id15(parent_id)))


def sobject_xml(
    tag: str,
    sobject: str,
    record: Mapping[str, Value],
    fields: Sequence[FieldSpec | Relationship],
    parents: Parents | None = None,
) -> str:
    """One partner-API record: ``<tag xsi:type="sf:sObject"><sf:type>..</sf:type><sf:Id>..``.

    Like Salesforce, the record's own ``Id`` element comes first (nil when Id was not
    selected) and the selected fields follow in SELECT order, so a selected Id appears twice.
    A parent relationship is a nested record of the same shape named after the relationship
    (``<sf:Account xsi:type="sf:sObject"><sf:type>Account</sf:type><sf:Id xsi:nil="true"/>
    <sf:Name>..``), its parent taken from ``parents``; ``<sf:Account xsi:nil="true"/>`` when
    the lookup is empty.
    """
    selects_id = any(isinstance(spec, FieldSpec) and spec.name == "Id" for spec in fields)
    record_id = record.get("Id") if selects_id else None
    parts = [f'<{tag} xsi:type="sf:sObject">', _element("sf:type", sobject)]
    parts.append(_element("sf:Id", record_id))
    for spec in fields:
        if isinstance(spec, FieldSpec):
            parts.append(_element(f"sf:{spec.name}", record.get(spec.name)))
            continue
        parent = _parent(spec, record, parents)
        if parent is None:
            parts.append(_element(f"sf:{spec.name}", None))
        else:
            parts.append(
                sobject_xml(f"sf:{spec.name}", spec.sobject.name, parent, spec.fields, parents)
            )
    parts.append(f"</{tag}>")
    return "".join(parts)


def query_result_xml(
    operation: str, records: Iterable[str], *, done: bool, locator: str | None, size: int
) -> str:
    """``<queryResponse>`` (or queryAll/queryMore) holding one batch of records.

    ``size`` is the total number of matching records, not the batch length, as in Salesforce.
    A ``SELECT COUNT()`` answer is this with no records, ``done`` true and the count as size.
    """
    return (
        f'<{operation}Response><result xsi:type="QueryResult">'
        f"<done>{_bool(done)}</done>{_element('queryLocator', locator)}"
        f"{''.join(records)}<size>{size}</size></result></{operation}Response>"
    )


def _errors_xml(errors: Sequence[tuple[str, str, Sequence[str]]]) -> str:
    return "".join(
        "<errors>"
        + "".join(_element("fields", name) for name in fields)
        + f"{_element('message', message)}{_element('statusCode', status)}</errors>"
        for status, message, fields in errors
    )


def save_result_xml(record_id: str | None, errors: Sequence[tuple[str, str, Sequence[str]]]) -> str:
    """One SaveResult (``<result>``) of create/update; errors are (statusCode, message, fields)."""
    return (
        f"<result>{_errors_xml(errors)}{_element('id', record_id)}"
        f"{_element('success', not errors)}</result>"
    )


def delete_result_xml(
    record_id: str | None, errors: Sequence[tuple[str, str, Sequence[str]]]
) -> str:
    """One DeleteResult (``<result>``); same element order as SaveResult."""
    return save_result_xml(record_id, errors)


def undelete_result_xml(
    record_id: str | None, errors: Sequence[tuple[str, str, Sequence[str]]]
) -> str:
    """One UndeleteResult (``<result>``); same element order as SaveResult."""
    return save_result_xml(record_id, errors)


def upsert_result_xml(
    record_id: str | None, errors: Sequence[tuple[str, str, Sequence[str]]], *, created: bool
) -> str:
    """One UpsertResult (``<result>``): ``created`` first, then as a SaveResult."""
    return (
        f"<result>{_element('created', created)}{_errors_xml(errors)}"
        f"{_element('id', record_id)}{_element('success', not errors)}</result>"
    )


def search_record_xml(
    sobject: str, record: Mapping[str, Value], fields: Sequence[FieldSpec]
) -> str:
    """One ``<searchRecords>``: its ``<record>`` is an sObject like a query's records."""
    return f"<searchRecords>{sobject_xml('record', sobject, record, fields)}</searchRecords>"


def search_result_xml(query_id: str, search_records: Iterable[str]) -> str:
    """``<searchResponse>``: the queryId and the records (no searchResultsMetadata)."""
    return (
        f"<searchResponse><result>{_element('queryId', query_id)}"
        f"{''.join(search_records)}</result></searchResponse>"
    )


@dataclass(frozen=True)
class UserInfo:
    """What getUserInfo and login report about the session's user."""

    organization_id: str
    organization_name: str
    user_id: str
    user_name: str
    user_full_name: str
    user_email: str
    profile_id: str
    session_seconds_valid: int = 7200


def user_info_xml(info: UserInfo) -> str:
    """The children of a GetUserInfoResult, every element in the WSDL's order."""
    values: list[tuple[str, Value | int]] = [
        ("accessibilityMode", False),
        ("chatterExternal", False),
        ("currencySymbol", "$"),
        ("orgAttachmentFileSizeLimit", 26214400),
        ("orgDefaultCurrencyIsoCode", "USD"),
        ("orgDefaultCurrencyLocale", "en_US"),
        ("orgDisallowHtmlAttachments", False),
        ("orgHasPersonAccounts", False),
        ("organizationId", info.organization_id),
        ("organizationMultiCurrency", False),
        ("organizationName", info.organization_name),
        ("profileId", info.profile_id),
        ("roleId", None),
        ("sessionSecondsValid", info.session_seconds_valid),
        ("userDefaultCurrencyIsoCode", None),
        ("userEmail", info.user_email),
        ("userFullName", info.user_full_name),
        ("userId", info.user_id),
        ("userLanguage", "en_US"),
        ("userLocale", "en_US"),
        ("userName", info.user_name),
        ("userTimeZone", "America/Los_Angeles"),
        ("userType", "Standard"),
        ("userUiSkin", "Theme3"),
    ]
    return "".join(_element(name, value) for name, value in values)


def login_result_xml(
    *, server_url: str, metadata_server_url: str, session_id: str, info: UserInfo
) -> str:
    """``<loginResponse>`` with a LoginResult (no sf prefix needed: it holds no records)."""
    return (
        "<loginResponse><result>"
        f"{_element('metadataServerUrl', metadata_server_url)}"
        f"{_element('passwordExpired', False)}{_element('sandbox', False)}"
        f"{_element('serverUrl', server_url)}{_element('sessionId', session_id)}"
        f"{_element('userId', info.user_id)}<userInfo>{user_info_xml(info)}</userInfo>"
        "</result></loginResponse>"
    )


def server_timestamp_xml(timestamp: str) -> str:
    """``<getServerTimestampResponse>``; the same in partner, enterprise and tooling."""
    return (
        "<getServerTimestampResponse><result>"
        f"{_element('timestamp', timestamp)}</result></getServerTimestampResponse>"
    )


def _describe_field_values(
    spec: FieldSpec,
) -> tuple[list[tuple[str, Value | int]], list[tuple[str, Value | int]]]:
    """A field's describe values before and after ``referenceTo``/``relationshipName``.

    Split there because the two APIs differ only in those: SOAP leaves them out when empty,
    REST always has them (``[]`` and null). The XML and JSON describes share the rest.
    """
    is_text = spec.soap_type == "xsd:string"
    values: list[tuple[str, Value | int]] = [
        ("aggregatable", spec.type != "textarea"),
        ("aiPredictionField", False),
        ("autoNumber", False),
        ("byteLength", spec.length * 3 if is_text else spec.length),
        ("calculated", False),
        ("caseSensitive", False),
        ("createable", spec.createable),
        ("custom", False),
        ("defaultedOnCreate", spec.defaulted_on_create),
        ("deprecatedAndHidden", False),
        ("digits", 0),
        ("filterable", spec.type != "textarea"),
        ("groupable", spec.type not in ("textarea", "boolean")),
        ("idLookup", spec.id_lookup),
        ("label", spec.label),
        ("length", spec.length),
        ("name", spec.name),
        ("nameField", spec.name_field),
        ("namePointing", False),
        ("nillable", spec.nillable),
        ("permissionable", spec.nillable and spec.createable),
        ("polymorphicForeignKey", False),
        ("precision", 0),
        ("queryByDistance", False),
    ]
    tail: list[tuple[str, Value | int]] = [
        ("restrictedPicklist", False),
        ("scale", 0),
        ("searchPrefilterable", False),
        ("soapType", spec.soap_type),
        ("sortable", spec.type != "textarea"),
        ("type", spec.type),
        ("unique", False),
        ("updateable", spec.updateable),
    ]
    return values, tail


def _describe_field_xml(spec: FieldSpec) -> str:
    head, tail = _describe_field_values(spec)
    parts = [_element(name, value) for name, value in head]
    if spec.reference_to:
        parts.append(_element("referenceTo", spec.reference_to))
    if spec.relationship_name:
        parts.append(_element("relationshipName", spec.relationship_name))
    parts.extend(_element(name, value) for name, value in tail)
    return f"<fields>{''.join(parts)}</fields>"


def _sobject_describe(spec: SObjectSpec, instance_url: str) -> dict[str, Value | int]:
    """Every object-level value of a DescribeSObjectResult, by element name.

    describeSObject(s) and describeGlobal take theirs from here, so they always agree.
    """
    return {
        "activateable": False,
        "associateEntityType": None,
        "associateParentEntity": None,
        "compactLayoutable": True,
        "createable": True,
        "custom": False,
        "customSetting": False,
        "deepCloneable": False,
        "defaultImplementation": None,
        "deletable": True,
        "deprecatedAndHidden": False,
        "feedEnabled": False,
        "hasSubtypes": False,
        "idEnabled": True,
        "implementedBy": None,
        "implementsInterfaces": None,
        "isInterface": False,
        "isSubtype": False,
        "keyPrefix": spec.key_prefix,
        "label": spec.label,
        "labelPlural": spec.label_plural,
        "layoutable": True,
        "mergeable": True,
        "mruEnabled": True,
        "name": spec.name,
        "networkScopeFieldName": None,
        "queryable": True,
        "replicateable": True,
        "retrieveable": True,
        "searchable": True,
        "triggerable": True,
        "undeletable": True,
        "updateable": True,
        "urlDetail": f"{instance_url}/{{ID}}",
        "urlEdit": f"{instance_url}/{{ID}}/e",
        "urlNew": f"{instance_url}/{spec.key_prefix}/e",
    }


_DESCRIBE_HEAD = (
    "activateable",
    "associateEntityType",
    "associateParentEntity",
    "compactLayoutable",
    "createable",
    "custom",
    "customSetting",
    "deepCloneable",
    "defaultImplementation",
    "deletable",
    "deprecatedAndHidden",
    "feedEnabled",
)
"""DescribeSObjectResult's elements before ``fields``, in the WSDL's order (those written)."""

_DESCRIBE_TAIL = (
    "hasSubtypes",
    "idEnabled",
    "implementedBy",
    "implementsInterfaces",
    "isInterface",
    "isSubtype",
    "keyPrefix",
    "label",
    "labelPlural",
    "layoutable",
    "mergeable",
    "mruEnabled",
    "name",
    "networkScopeFieldName",
    "queryable",
    "replicateable",
    "retrieveable",
    "searchable",
    "triggerable",
    "undeletable",
    "updateable",
    "urlDetail",
    "urlEdit",
    "urlNew",
)
"""DescribeSObjectResult's elements after ``fields``, in the WSDL's order (those written)."""

_DESCRIBE_GLOBAL = (
    "activateable",
    "associateEntityType",
    "associateParentEntity",
    "createable",
    "custom",
    "customSetting",
    "deepCloneable",
    "deletable",
    "deprecatedAndHidden",
    "feedEnabled",
    "hasSubtypes",
    "idEnabled",
    "isInterface",
    "isSubtype",
    "keyPrefix",
    "label",
    "labelPlural",
    "layoutable",
    "mergeable",
    "mruEnabled",
    "name",
    "queryable",
    "replicateable",
    "retrieveable",
    "searchable",
    "triggerable",
    "undeletable",
    "updateable",
)
"""Every required DescribeGlobalSObjectResult element, in the WSDL's order."""

DESCRIBE_GLOBAL_MAX_BATCH_SIZE = 200
"""describeGlobal's ``maxBatchSize``: the most records one create/update/upsert may carry."""


def _describe_sobject_result(spec: SObjectSpec, instance_url: str) -> str:
    values = _sobject_describe(spec, instance_url)
    return (
        "<result>"
        + "".join(_element(name, values[name]) for name in _DESCRIBE_HEAD)
        + "".join(_describe_field_xml(field) for field in spec.fields)
        + "".join(_element(name, values[name]) for name in _DESCRIBE_TAIL)
        + "</result>"
    )


def describe_sobject_xml(spec: SObjectSpec, instance_url: str) -> str:
    """``<describeSObjectResponse>`` with every required DescribeSObjectResult element."""
    result = _describe_sobject_result(spec, instance_url)
    return f"<describeSObjectResponse>{result}</describeSObjectResponse>"


def describe_sobjects_xml(specs: Iterable[SObjectSpec], instance_url: str) -> str:
    """``<describeSObjectsResponse>``: one DescribeSObjectResult per object, in the given order."""
    results = "".join(_describe_sobject_result(spec, instance_url) for spec in specs)
    return f"<describeSObjectsResponse>{results}</describeSObjectsResponse>"


def describe_global_xml(specs: Iterable[SObjectSpec], instance_url: str) -> str:
    """``<describeGlobalResponse>``: the encoding, the batch size and a summary per object."""
    sobjects = []
    for spec in specs:
        values = _sobject_describe(spec, instance_url)
        items = "".join(_element(name, values[name]) for name in _DESCRIBE_GLOBAL)
        sobjects.append(f"<sobjects>{items}</sobjects>")
    return (
        "<describeGlobalResponse><result>"
        f"{_element('encoding', 'UTF-8')}"
        f"{_element('maxBatchSize', DESCRIBE_GLOBAL_MAX_BATCH_SIZE)}"
        f"{''.join(sobjects)}</result></describeGlobalResponse>"
    )


# --- OAuth token endpoint -------------------------------------------------------------------


def token_signature(identity_url: str, issued_at: str, client_secret: str) -> str:
    """Salesforce's ``signature``: base64 HMAC-SHA256 of id + issued_at, keyed by the secret."""
    digest = hmac.new(
        client_secret.encode("utf-8"), (identity_url + issued_at).encode("utf-8"), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode("ascii")


def token_body(
    *,
    access_token: str,
    refresh_token: str | None,
    instance_url: str,
    identity_url: str,
    issued_at: str,
    scope: str,
    client_secret: str,
) -> dict[str, str]:
    """A token answer as Salesforce sends it: no ``expires_in``; refresh_token only if given."""
    body = {"access_token": access_token}
    if refresh_token is not None:
        body["refresh_token"] = refresh_token
    body.update(
        {
            "signature": token_signature(identity_url, issued_at, client_secret),
            "scope": scope,
            "instance_url": instance_url,
            "id": identity_url,
            "token_type": "Bearer",
            "issued_at": issued_at,
        }
    )
    return body


def oauth_error(error: str, description: str) -> dict[str, str]:
    """The token endpoint's error body (sent with HTTP 400)."""
    return {"error": error, "error_description": description}


HTML_500_PAGE = (
    "<!DOCTYPE html><html><head><title>Error</title></head><body>"
    "<h1>An internal server error has occurred</h1>"
    "<p>An error occurred while processing your request. Please try again later.</p>"
    "</body></html>"
)
"""What a proxy or an outage page answers instead of JSON (the "html_500" failure mode)."""

HTML_503_PAGE = (
    "<!DOCTYPE html><html><head><title>Service Unavailable</title></head><body>"
    "<h1>Service Unavailable</h1><p>This site is down for maintenance.</p></body></html>"
)
"""A maintenance page, sent with HTTP 503 and Retry-After (the "unavailable_503" failure mode)."""

TRUNCATED_TOKEN_BODY = '{"access_tok'
"""A cut-off JSON body that holds no secret (the "garbage_200" failure mode)."""


# --- REST -----------------------------------------------------------------------------------


def rest_error(code: str, message: str) -> list[dict[str, str]]:
    """The REST API's error body: a list with one message/errorCode object."""
    return [{"message": message, "errorCode": code}]


REST_INVALID_SESSION = rest_error("INVALID_SESSION_ID", "Session expired or invalid")
"""Body of the REST 401 for a missing, expired or unknown bearer token (real capture)."""

REST_NOT_VALID_FOR_REST = rest_error(
    "INVALID_SESSION_ID", "This session is not valid for use with the REST API"
)
"""Body of the REST 401 for a live session the REST API may not use (real capture): one
Salesforce made for something else, such as a UI session, which the SOAP API still takes."""

REST_NOT_FOUND = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]

_RELEASES = {"64.0": "Summer '25", "65.0": "Winter '26", "66.0": "Spring '26"}


def rest_versions() -> list[dict[str, str]]:
    """``GET /services/data/``: the API versions the org serves, oldest first."""
    return [
        {"label": label, "url": f"/services/data/v{version}", "version": version}
        for version, label in _RELEASES.items()
    ]


def rest_record(
    sobject: str,
    record: Mapping[str, Value],
    fields: Sequence[FieldSpec | Relationship],
    version: str,
    parents: Parents | None = None,
) -> dict[str, object]:
    """One REST query record: ``attributes`` (type, url) then the selected fields.

    A parent relationship is a nested record of the same shape under the relationship's name
    (``"Account": {"attributes": {...}, "Name": ...}``), its parent taken from ``parents``;
    ``"Account": null`` when the lookup is empty.
    """
    body: dict[str, object] = {
        "attributes": {
            "type": sobject,
            "url": f"/services/data/v{version}/sobjects/{sobject}/{record.get('Id')}",
        }
    }
    for spec in fields:
        if isinstance(spec, FieldSpec):
            body[spec.name] = record.get(spec.name)
            continue
        parent = _parent(spec, record, parents)
        body[spec.name] = (
            None
            if parent is None
            else rest_record(spec.sobject.name, parent, spec.fields, version, parents)
        )
    return body


def rest_query_body(
    records: Sequence[dict[str, object]],
    *,
    total_size: int | None = None,
    next_records_url: str | None = None,
) -> dict[str, object]:
    """``GET /services/data/vXX.X/query`` (or ``queryAll``, or a locator): one batch.

    ``total_size`` is the number of records the whole query matched (the batch length when
    None; for ``SELECT COUNT()`` the count, with no records). With ``next_records_url`` the
    answer is a batch with more to come: ``done`` false and the URL placed before the
    records, as Salesforce writes it.
    """
    size = len(records) if total_size is None else total_size
    body: dict[str, object] = {"totalSize": size, "done": next_records_url is None}
    if next_records_url is not None:
        body["nextRecordsUrl"] = next_records_url
    body["records"] = list(records)
    return body


def userinfo_body(info: UserInfo, instance_url: str) -> dict[str, object]:
    """``GET /services/oauth2/userinfo``: the OpenID Connect claims Salesforce returns (subset)."""
    return {
        "sub": f"{instance_url}/id/{info.organization_id}/{info.user_id}",
        "user_id": info.user_id,
        "organization_id": info.organization_id,
        "preferred_username": info.user_name,
        "nickname": info.user_name.split("@", 1)[0],
        "name": info.user_full_name,
        "email": info.user_email,
        "email_verified": True,
        "zoneinfo": "America/Los_Angeles",
        "locale": "en_US",
        "language": "en_US",
        "user_type": "STANDARD",
        "active": True,
    }


def rest_not_found(message: str) -> list[dict[str, str]]:
    """A REST 404 body. Salesforce writes ``errorCode`` before ``message`` in these (the
    routing layer answers them, not the data layer that writes ``message`` first)."""
    return [{"errorCode": "NOT_FOUND", "message": message}]


def rest_external_id_not_found(value: str) -> list[dict[str, str]]:
    """The 404 for ``/sobjects/<Type>/<value>`` when ``value`` is not a record Id at all.

    Salesforce then reads the segment as the name of an external id field (the
    ``/sobjects/<Type>/<field>/<value>`` form) and reports that no such field exists; a
    well-formed Id of no record gets :data:`REST_NOT_FOUND` instead.
    """
    return rest_not_found(
        f"Provided external ID field does not exist or is not accessible: {value}"
    )


def rest_method_not_allowed(method: str, allowed: Sequence[str]) -> list[dict[str, str]]:
    """The 405 body for a method a resource does not serve, worded as Salesforce's."""
    return [
        {
            "errorCode": "METHOD_NOT_ALLOWED",
            "message": f"HTTP Method '{method}' not allowed. Allowed are {','.join(allowed)}",
        }
    ]


def rest_record_errors(
    errors: Sequence[tuple[str, str, Sequence[str]]],
) -> list[dict[str, object]]:
    """The body of a refused REST write: per error ``message``, ``errorCode`` and ``fields``.

    The same (statusCode, message, fields) the SOAP API puts in a SaveResult, so one record
    is refused alike by both APIs; REST answers the first record error as the whole call's.
    """
    return [
        {"message": message, "errorCode": code, "fields": list(fields)}
        for code, message, fields in errors
    ]


def rest_save_result(record_id: str) -> dict[str, object]:
    """``POST /sobjects/<Type>``'s 201 body: the new record's Id, success, no errors."""
    return {"id": record_id, "success": True, "errors": []}


def rest_sobject_url(version: str, sobject: str, record_id: str) -> str:
    """A record's REST address, as ``attributes.url`` and ``Location`` give it."""
    return f"/services/data/v{version}/sobjects/{sobject}/{record_id}"


_LIMITS = (
    ("ConcurrentAsyncGetReportInstances", 200),
    ("ConcurrentSyncReportRuns", 20),
    ("DailyApiRequests", 15000),
    ("DailyAsyncApexExecutions", 250000),
    ("DailyBulkApiBatches", 15000),
    ("DailyBulkV2QueryJobs", 10000),
    ("DailyStreamingApiEvents", 10000),
    ("DataStorageMB", 5),
    ("FileStorageMB", 20),
    ("HourlyTimeBasedWorkflow", 50),
    ("MassEmail", 10),
    ("SingleEmail", 15),
)
"""A Developer Edition org's figures for a handful of the limits Salesforce lists."""


def rest_limits(api_used: int, api_max: int) -> dict[str, dict[str, int]]:
    """``GET /services/data/vXX.X/limits``: ``{"Name": {"Max": m, "Remaining": r}}`` by name.

    Only ``DailyApiRequests`` moves (``api_max`` less ``api_used``, never below 0), as it
    is the one a client's own calls consume; the others stay at their maximum.
    """
    body: dict[str, dict[str, int]] = {}
    for name, maximum in _LIMITS:
        if name == "DailyApiRequests":
            body[name] = {"Max": api_max, "Remaining": max(0, api_max - api_used)}
        else:
            body[name] = {"Max": maximum, "Remaining": maximum}
    return body


def rest_limit_info(current: int, limit: int) -> str:
    """The ``Sforce-Limit-Info`` header Salesforce adds to REST answers (``api-usage=N/M``)."""
    return f"api-usage={current}/{limit}"


def rest_resources(version: str) -> dict[str, str]:
    """``GET /services/data/vXX.X/``: the resources the stand-in serves in that version."""
    base = f"/services/data/v{version}"
    return {name: f"{base}/{name}" for name in ("limits", "query", "queryAll", "sobjects")}


def rest_describe(spec: SObjectSpec, instance_url: str, version: str) -> dict[str, object]:
    """``GET /sobjects/<Type>/describe``: the SOAP describe's values as JSON, plus ``urls``.

    REST has no ``urlDetail``/``urlEdit``/``urlNew`` (those are the SOAP result's); it lists
    its own resources for the object under ``urls`` instead.
    """
    values: dict[str, object] = {
        name: value
        for name, value in _sobject_describe(spec, instance_url).items()
        if not name.startswith("url")
    }
    fields = []
    for field_spec in spec.fields:
        head, tail = _describe_field_values(field_spec)
        described: dict[str, object] = dict(head)
        described["referenceTo"] = [field_spec.reference_to] if field_spec.reference_to else []
        described["relationshipName"] = field_spec.relationship_name
        described.update(tail)
        fields.append(described)
    values["fields"] = fields
    base = f"/services/data/v{version}/sobjects/{spec.name}"
    values["urls"] = {
        "sobject": base,
        "describe": f"{base}/describe",
        "rowTemplate": f"{base}/{{ID}}",
    }
    return dict(sorted(values.items()))


def _rest_sobject_summary(spec: SObjectSpec, instance_url: str, version: str) -> dict[str, object]:
    """One object as REST's describeGlobal lists it: the SOAP summary's values plus ``urls``."""
    values = _sobject_describe(spec, instance_url)
    summary: dict[str, object] = {name: values[name] for name in _DESCRIBE_GLOBAL}
    base = f"/services/data/v{version}/sobjects/{spec.name}"
    summary["urls"] = {
        "sobject": base,
        "describe": f"{base}/describe",
        "rowTemplate": f"{base}/{{ID}}",
    }
    return summary


def rest_describe_global(
    specs: Iterable[SObjectSpec], instance_url: str, version: str
) -> dict[str, object]:
    """``GET /services/data/vXX.X/sobjects``: encoding, batch size and every object's summary."""
    return {
        "encoding": "UTF-8",
        "maxBatchSize": DESCRIBE_GLOBAL_MAX_BATCH_SIZE,
        "sobjects": [_rest_sobject_summary(spec, instance_url, version) for spec in specs],
    }


def rest_sobject_info(spec: SObjectSpec, instance_url: str, version: str) -> dict[str, object]:
    """``GET /sobjects/<Type>``: the object's summary and its recently viewed records (none:
    nobody views records in the stand-in)."""
    return {
        "objectDescribe": _rest_sobject_summary(spec, instance_url, version),
        "recentItems": [],
    }
