"""The stand-in org's enterprise, tooling, metadata and apex APIs, over real sockets.

Each API's answers are parsed by zeep with the project's compact WSDL and, when the reference
folder is present, with Salesforce's real WSDLs (parsed once per session, see reference_wsdls),
the SessionHeader set by hand: no transport is involved here. Fault shapes are checked in each
API's flavour (the metadata and apex faults have no detail), and a few answers are checked on
the wire, where zeep would hide the difference (typed records, namespaces, headers).

The last section covers the partner calls the compact partner WSDL gained with upsert
(upsert, undelete, search, describeGlobal, describeSObjects): those go through the transport
(the ``harness`` fixture, sync and async), each over a session expiry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import pytest
import requests
import zeep
import zeep.exceptions
from conftest import Harness, field_values, sobject
from lxml import etree
from reference_wsdls import SETTINGS, load, wsdl_params

from zeep_sfrefresh import PARTNER_WSDL
from zeep_sfrefresh.testing import StandInOrg, sosl, wire
from zeep_sfrefresh.testing.apis import APEX_CLASSES, ENTERPRISE_SOBJECT_NS, TOOLING_SOBJECT_NS
from zeep_sfrefresh.testing.data import SCHEMA
from zeep_sfrefresh.testing.soql import SoqlError

pytest_plugins = ["zeep_sfrefresh.testing.pytest_plugin"]

SOAPENV = "http://schemas.xmlsoap.org/soap/envelope/"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
FAULT_NS = {code: flavour.fault_namespace for code, flavour in wire.FLAVOURS.items()}
SAFE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
CLASS_NAMES = [str(record["Name"]) for record in APEX_CLASSES]

new_client = cast(Callable[..., Any], zeep.Client)
"""zeep.Client, typed loosely: zeep ships py.typed but leaves its API unannotated."""


@dataclass
class Api:
    """A zeep client on one WSDL and its service bound to the org's address for the API."""

    client: Any
    service: Any
    headers: dict[str, Any]
    """``_soapheaders`` carrying the test's session."""


@pytest.fixture
def token(sf_org: StandInOrg) -> dict[str, str]:
    return sf_org.issue_token()


@pytest.fixture
def connect(sf_org: StandInOrg, token: dict[str, str]) -> Iterator[Callable[[str, str], Api]]:
    """``connect(code, source)``: an :class:`Api` on the compact or a reference WSDL."""
    clients: list[Any] = []

    def make(code: str, source: str) -> Api:
        client = new_client(load(code, source), settings=SETTINGS)
        clients.append(client)
        (binding,) = client.wsdl.bindings
        service = client.create_service(binding, sf_org.url + sf_org.soap_path(code))
        return Api(client, service, session_header(token["access_token"]))

    yield make
    for client in clients:
        client.transport.session.close()


def session_header(session_id: str) -> dict[str, Any]:
    return {"SessionHeader": {"sessionId": session_id}}


def post(org: StandInOrg, code: str, operation: str, session_id: str, children: str = "") -> Any:
    """Post a hand-written envelope and return the parsed answer (for wire-level checks)."""
    namespace = wire.FLAVOURS[code].namespace
    envelope = (
        f'<soapenv:Envelope xmlns:soapenv="{SOAPENV}"><soapenv:Header>'
        f'<SessionHeader xmlns="{namespace}"><sessionId>{session_id}</sessionId></SessionHeader>'
        f'</soapenv:Header><soapenv:Body><{operation} xmlns="{namespace}">{children}'
        f"</{operation}></soapenv:Body></soapenv:Envelope>"
    )
    response = requests.post(
        org.url + org.soap_path(code),
        data=envelope.encode(),
        headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'},
        timeout=10,
    )
    return response.status_code, etree.fromstring(response.content, SAFE_PARSER)


def fault_of(raised: pytest.ExceptionInfo[zeep.exceptions.Fault]) -> tuple[str, etree._Element]:
    """The faultcode and the single element inside ``<detail>`` of a zeep Fault."""
    fault = raised.value
    assert fault.detail is not None
    (inner,) = list(fault.detail)
    return fault.code, inner


def local_names(element: etree._Element) -> list[str]:
    return [etree.QName(child).localname for child in element if isinstance(child.tag, str)]


# --- enterprise ------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "source"), wsdl_params("c"))
def test_enterprise_query_answers_typed_records(
    sf_org: StandInOrg, connect: Callable[[str, str], Api], code: str, source: str
) -> None:
    api = connect(code, source)
    answer = api.service.query(
        "SELECT Email, LastName, Id FROM Contact WHERE LastName = 'Hopper'",
        _soapheaders=api.headers,
    )
    result = answer.body.result
    assert (result.done, result.queryLocator, result.size) == (True, None, 1)
    (record,) = result.records
    assert record._xsd_type.qname == etree.QName(ENTERPRISE_SOBJECT_NS, "Contact")
    assert (record.LastName, record.Email) == ("Hopper", "grace.hopper@example.com")
    assert record.FirstName is None  # not selected
    assert record.Id.startswith("003")
    assert len(record.Id) == 18
    (limit,) = answer.header.LimitInfoHeader.limitInfo
    assert (limit.type, limit.limit) == ("API REQUESTS", 15000)
    assert limit.current >= 1

    accounts = api.service.query("SELECT Name, Industry FROM Account", _soapheaders=api.headers)
    names = {(r._xsd_type.name, r.Name, r.Industry) for r in accounts.body.result.records}
    assert ("Account", "Initech", "Technology") in names
    assert sf_org.operations == {"query": 2}


@pytest.mark.parametrize(("code", "source"), wsdl_params("c"))
def test_enterprise_query_more_walks_the_cursor(
    sf_org: StandInOrg, connect: Callable[[str, str], Api], code: str, source: str
) -> None:
    api = connect(code, source)
    batches = {**api.headers, "QueryOptions": {"batchSize": 10}}
    first = api.service.query("SELECT Id, Name FROM Contact", _soapheaders=batches).body.result
    assert (first.done, first.size, len(first.records)) == (False, 25, 10)
    second = api.service.queryMore(first.queryLocator, _soapheaders=batches).body.result
    assert (second.done, second.size, len(second.records)) == (False, 25, 10)
    # Without QueryOptions the cursor keeps the batch size it was opened with.
    third = api.service.queryMore(second.queryLocator, _soapheaders=api.headers).body.result
    assert (third.done, third.queryLocator, len(third.records)) == (True, None, 5)
    ids = {r.Id for r in [*first.records, *second.records, *third.records]}
    assert len(ids) == 25
    assert sf_org.operations == {"query": 1, "queryMore": 2}


@pytest.mark.parametrize(("code", "source"), wsdl_params("c"))
def test_enterprise_create_takes_typed_records(
    sf_org: StandInOrg, connect: Callable[[str, str], Api], code: str, source: str
) -> None:
    api = connect(code, source)
    contact = api.client.get_type(f"{{{ENTERPRISE_SOBJECT_NS}}}Contact")
    answer = api.service.create(
        [
            contact(FirstName="Katherine", LastName="Coleman", Email="kc@example.com"),
            contact(FirstName="Nobody"),
            contact(LastName="Writes", Name="Read Only"),
        ],
        _soapheaders=api.headers,
    )
    created, missing, read_only = answer.body.result
    assert created.success
    assert created.id.startswith("003")
    assert (missing.success, missing.id) == (False, None)
    assert [(e.statusCode, e.fields) for e in missing.errors] == [
        ("REQUIRED_FIELD_MISSING", ["LastName"])
    ]
    assert [(e.statusCode, e.fields) for e in read_only.errors] == [
        ("INVALID_FIELD_FOR_INSERT_UPDATE", ["Name"])
    ]
    found = api.service.query(
        f"SELECT Name, Email FROM Contact WHERE Id = '{created.id}'", _soapheaders=api.headers
    )
    (record,) = found.body.result.records
    assert (record.Name, record.Email) == ("Katherine Coleman", "kc@example.com")
    assert sf_org.operations == {"create": 1, "query": 1}


@pytest.mark.parametrize(("code", "source"), wsdl_params("c"))
def test_enterprise_user_info_and_server_timestamp(
    sf_org: StandInOrg, connect: Callable[[str, str], Api], code: str, source: str
) -> None:
    api = connect(code, source)
    info = api.service.getUserInfo(_soapheaders=api.headers)
    assert info.header.LimitInfoHeader.limitInfo[0].current >= 1
    assert (info.body.result.userId, info.body.result.organizationId) == (
        sf_org.user_id,
        sf_org.org_id,
    )
    assert info.body.result.userFullName == "Stan Din"
    stamp = api.service.getServerTimestamp(_soapheaders=api.headers).body.result.timestamp
    assert abs(datetime.now(timezone.utc) - stamp) < timedelta(minutes=1)
    assert sf_org.operations == {"getUserInfo": 1, "getServerTimestamp": 1}


@pytest.mark.parametrize(("code", "source"), wsdl_params("c"))
def test_enterprise_faults_have_enterprise_details(
    sf_org: StandInOrg, connect: Callable[[str, str], Api], code: str, source: str
) -> None:
    api = connect(code, source)
    ns = FAULT_NS["c"]
    with pytest.raises(zeep.exceptions.Fault) as raised:
        api.service.query("SELECT FROM Contact", _soapheaders=api.headers)
    faultcode, detail = fault_of(raised)
    assert faultcode == "sf:MALFORMED_QUERY"
    assert detail.tag == f"{{{ns}}}MalformedQueryFault"
    assert detail.get(f"{{{XSI}}}type") == "sf:MalformedQueryFault"
    assert local_names(detail) == ["exceptionCode", "exceptionMessage", "row", "column"]
    assert detail.findtext(f"{{{ns}}}row") == "1"

    with pytest.raises(zeep.exceptions.Fault) as raised:
        api.service.queryMore("01gNOPE-10", _soapheaders=api.headers)
    faultcode, detail = fault_of(raised)
    assert (faultcode, detail.tag) == (
        "sf:INVALID_QUERY_LOCATOR",
        f"{{{ns}}}InvalidQueryLocatorFault",
    )

    sobject = api.client.get_type(f"{{{ENTERPRISE_SOBJECT_NS}}}sObject")
    with pytest.raises(zeep.exceptions.Fault) as raised:
        api.service.create([sobject(Id=None)], _soapheaders=api.headers)
    faultcode, detail = fault_of(raised)
    assert (faultcode, detail.tag) == ("sf:INVALID_TYPE", f"{{{ns}}}InvalidSObjectFault")
    assert raised.value.message == "INVALID_TYPE: Must send a concrete entity type."
    assert sf_org.internal_errors == []


def test_enterprise_records_on_the_wire(sf_org: StandInOrg, token: dict[str, str]) -> None:
    status, root = post(
        sf_org,
        "c",
        "query",
        token["access_token"],
        "<queryString>SELECT LastName, Email, Id FROM Contact LIMIT 1</queryString>",
    )
    assert status == 200
    assert root.nsmap["sf"] == ENTERPRISE_SOBJECT_NS
    assert root.nsmap[None] == "urn:enterprise.soap.sforce.com"
    header = root.find(f"{{{SOAPENV}}}Header")
    assert header is not None
    assert local_names(header) == ["LimitInfoHeader"]
    (record,) = root.iter("{urn:enterprise.soap.sforce.com}records")
    assert record.get(f"{{{XSI}}}type") == "sf:Contact"
    # Id first (the base sObject's), then the fields alphabetically as the WSDL declares them.
    assert [str(child.tag) for child in record] == [
        f"{{{ENTERPRISE_SOBJECT_NS}}}{name}" for name in ("Id", "Email", "LastName")
    ]


# --- tooling ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "source"), wsdl_params("T"))
def test_tooling_query_answers_apex_classes(
    sf_org: StandInOrg, connect: Callable[[str, str], Api], code: str, source: str
) -> None:
    api = connect(code, source)
    result = api.service.query("SELECT Id, Name FROM ApexClass", _soapheaders=api.headers)
    result = result.body.result
    assert (result.done, result.entityTypeName, result.queryLocator) == (True, "ApexClass", None)
    assert (result.size, result.totalSize) == (3, 3)
    assert [r.Name for r in result.records] == CLASS_NAMES
    assert all(
        r._xsd_type.qname == etree.QName(TOOLING_SOBJECT_NS, "ApexClass") for r in result.records
    )
    assert [r.Id for r in result.records] == [record["Id"] for record in APEX_CLASSES]
    assert all(r.Body is None for r in result.records)

    one = api.service.query(
        "SELECT Name, Body, ApiVersion, Status, IsValid FROM ApexClass WHERE Name = 'HelloWorld'",
        _soapheaders=api.headers,
    ).body.result
    (record,) = one.records
    assert record.Id is None  # not selected
    assert (record.ApiVersion, record.Status, record.IsValid) == (66.0, "Active", True)
    assert record.Body.startswith("public with sharing class HelloWorld")
    assert sf_org.operations == {"query": 2}


@pytest.mark.parametrize(("code", "source"), wsdl_params("T"))
def test_tooling_timestamp_and_execute_anonymous(
    sf_org: StandInOrg, connect: Callable[[str, str], Api], code: str, source: str
) -> None:
    api = connect(code, source)
    # No response header declared: zeep unwraps the answer down to the timestamp itself.
    stamp = api.service.getServerTimestamp(_soapheaders=api.headers)
    assert abs(datetime.now(timezone.utc) - stamp) < timedelta(minutes=1)
    answer = api.service.executeAnonymous("System.debug('tooling');", _soapheaders=api.headers)
    assert (answer.body.result.compiled, answer.body.result.success) == (True, True)
    assert "|USER_DEBUG|[1]|DEBUG|tooling" in answer.header.DebuggingInfo.debugLog
    assert sf_org.operations == {"getServerTimestamp": 1, "executeAnonymous": 1}


@pytest.mark.parametrize(("code", "source"), wsdl_params("T"))
def test_tooling_faults_have_tooling_details(
    sf_org: StandInOrg, connect: Callable[[str, str], Api], code: str, source: str
) -> None:
    api = connect(code, source)
    ns = FAULT_NS["T"]
    with pytest.raises(zeep.exceptions.Fault) as raised:
        api.service.query("SELECT Id, Colour FROM ApexClass", _soapheaders=api.headers)
    faultcode, detail = fault_of(raised)
    assert (faultcode, detail.tag) == ("sf:INVALID_FIELD", f"{{{ns}}}InvalidFieldFault")
    assert (detail.findtext(f"{{{ns}}}row"), detail.findtext(f"{{{ns}}}column")) == ("1", "12")
    # The tooling API has its own objects: the data objects are not among them.
    with pytest.raises(zeep.exceptions.Fault) as raised:
        api.service.query("SELECT Id FROM Contact", _soapheaders=api.headers)
    faultcode, detail = fault_of(raised)
    assert (faultcode, detail.tag) == ("sf:INVALID_TYPE", f"{{{ns}}}InvalidSObjectFault")


def test_tooling_records_on_the_wire(sf_org: StandInOrg, token: dict[str, str]) -> None:
    status, root = post(
        sf_org,
        "T",
        "query",
        token["access_token"],
        "<queryString>SELECT Name, Id FROM ApexClass LIMIT 1</queryString>",
    )
    assert status == 200
    assert root.find(f"{{{SOAPENV}}}Header") is None  # no LimitInfoHeader in tooling
    assert root.nsmap["sf"] == TOOLING_SOBJECT_NS
    (result,) = root.iter("{urn:tooling.soap.sforce.com}result")
    assert local_names(result) == [
        "done",
        "entityTypeName",
        "queryLocator",
        "records",
        "size",
        "totalSize",
    ]
    (record,) = result.iter("{urn:tooling.soap.sforce.com}records")
    assert record.get(f"{{{XSI}}}type") == "sf:ApexClass"
    assert local_names(record) == ["Id", "Name"]


# --- metadata --------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "source"), wsdl_params("m"))
def test_metadata_describe_and_list(
    sf_org: StandInOrg, connect: Callable[[str, str], Api], code: str, source: str
) -> None:
    api = connect(code, source)
    described = api.service.describeMetadata(66.0, _soapheaders=api.headers)
    types = {item.xmlName: item for item in described.metadataObjects}
    assert {"ApexClass", "ApexTrigger", "CustomObject"} <= set(types)
    apex_class = types["ApexClass"]
    assert (apex_class.directoryName, apex_class.suffix) == ("classes", "cls")
    assert (apex_class.inFolder, apex_class.metaFile) == (False, True)
    assert types["Report"].inFolder
    assert "CustomField" in types["CustomObject"].childXmlNames
    assert (described.partialSaveAllowed, described.testRequired) == (True, False)

    listed = api.service.listMetadata(
        [{"type": "ApexClass"}, {"type": "CustomObject"}], 66.0, _soapheaders=api.headers
    )
    classes = [item for item in listed if item.type == "ApexClass"]
    assert [item.fullName for item in classes] == CLASS_NAMES
    # The same classes the tooling API answers, by the same ids.
    assert [item.id for item in classes] == [record["Id"] for record in APEX_CLASSES]
    assert classes[0].fileName == "classes/HelloWorld.cls"
    assert (classes[0].createdById, classes[0].createdByName) == (sf_org.user_id, "Stan Din")
    assert classes[0].manageableState == "unmanaged"
    assert isinstance(classes[0].lastModifiedDate, datetime)
    objects = {item.fullName: item for item in listed if item.type == "CustomObject"}
    assert set(objects) == {"Account", "Contact"}
    assert objects["Contact"].fileName == "objects/Contact.object"

    assert not api.service.listMetadata([{"type": "ApexTrigger"}], 66.0, _soapheaders=api.headers)
    assert sf_org.operations == {"describeMetadata": 1, "listMetadata": 2}


@pytest.mark.parametrize(("code", "source"), wsdl_params("m"))
def test_metadata_fault_has_no_detail(
    sf_org: StandInOrg, connect: Callable[[str, str], Api], code: str, source: str
) -> None:
    api = connect(code, source)
    with pytest.raises(zeep.exceptions.Fault) as raised:
        api.service.listMetadata([{"type": "Widget"}], 66.0, _soapheaders=api.headers)
    assert raised.value.code == "sf:INVALID_TYPE"
    assert raised.value.message == "INVALID_TYPE: Unknown type:Widget"
    assert raised.value.detail is None


def test_metadata_fault_on_the_wire(sf_org: StandInOrg, token: dict[str, str]) -> None:
    status, root = post(
        sf_org,
        "m",
        "listMetadata",
        token["access_token"],
        "<queries><type>Widget</type></queries><asOfVersion>66.0</asOfVersion>",
    )
    assert status == 500
    assert root.nsmap["sf"] == FAULT_NS["m"]
    fault = root.find(f"{{{SOAPENV}}}Body/{{{SOAPENV}}}Fault")
    assert fault is not None
    assert local_names(fault) == ["faultcode", "faultstring"]
    assert fault.findtext("faultcode") == "sf:INVALID_TYPE"


# --- apex ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "source"), wsdl_params("s"))
def test_apex_execute_anonymous_answers_a_debug_log(
    sf_org: StandInOrg, connect: Callable[[str, str], Api], code: str, source: str
) -> None:
    api = connect(code, source)
    answer = api.service.executeAnonymous(
        "Integer seats = 2;\nSystem.debug('Hello from the stand-in');", _soapheaders=api.headers
    )
    result = answer.body.result
    assert (result.compiled, result.success, result.line, result.column) == (True, True, -1, -1)
    assert (result.compileProblem, result.exceptionMessage, result.exceptionStackTrace) == (
        None,
        None,
        None,
    )
    log = answer.header.DebuggingInfo.debugLog
    assert log.startswith("66.0 APEX_CODE,DEBUG;")
    assert "Execute Anonymous: Integer seats = 2;" in log
    assert "|USER_DEBUG|[2]|DEBUG|Hello from the stand-in" in log
    assert log.rstrip().endswith("|EXECUTION_FINISHED")
    assert sf_org.operations == {"executeAnonymous": 1}


@pytest.mark.parametrize(("code", "source"), wsdl_params("s"))
def test_apex_problems_are_results_not_faults(
    connect: Callable[[str, str], Api], code: str, source: str
) -> None:
    api = connect(code, source)
    uncompiled = api.service.executeAnonymous("System.debug('x')", _soapheaders=api.headers)
    result = uncompiled.body.result
    assert (result.compiled, result.success) == (False, False)
    assert (result.line, result.column, result.compileProblem) == (1, 18, "Missing ';' at '<EOF>'")
    assert "USER_DEBUG" not in uncompiled.header.DebuggingInfo.debugLog

    failed = api.service.executeAnonymous(
        "System.debug('before');\nSystem.assert(false, 'nope');", _soapheaders=api.headers
    ).body.result
    assert (failed.compiled, failed.success, failed.line) == (True, False, 2)
    assert failed.exceptionMessage == "System.AssertException: Assertion Failed"
    assert failed.exceptionStackTrace == "AnonymousBlock: line 2, column 1"


@pytest.mark.parametrize(("code", "source"), wsdl_params("s"))
def test_apex_debugging_header_sets_the_log_levels(
    connect: Callable[[str, str], Api], code: str, source: str
) -> None:
    api = connect(code, source)
    quiet = {**api.headers, "DebuggingHeader": {"debugLevel": "None"}}
    log = api.service.executeAnonymous("System.debug('x');", _soapheaders=quiet)
    assert "USER_DEBUG" not in log.header.DebuggingInfo.debugLog
    finest = {
        **api.headers,
        "DebuggingHeader": {
            "categories": [{"category": "Apex_code", "level": "Finest"}],
            "debugLevel": "Detail",
        },
    }
    log = api.service.executeAnonymous("System.debug('x');", _soapheaders=finest)
    first_line = log.header.DebuggingInfo.debugLog.splitlines()[0]
    assert first_line == "66.0 APEX_CODE,FINEST;APEX_PROFILING,INFO"


# --- every API -------------------------------------------------------------------------------

ALL_APIS = [param for code in ("c", "T", "m", "s") for param in wsdl_params(code)]


def call_any(api: Api, code: str, headers: dict[str, Any]) -> Any:
    """One representative call of each API."""
    if code in ("c", "T"):
        return api.service.getServerTimestamp(_soapheaders=headers)
    if code == "m":
        return api.service.describeMetadata(66.0, _soapheaders=headers)
    return api.service.executeAnonymous("Integer i = 0;", _soapheaders=headers)


@pytest.mark.parametrize(("code", "source"), ALL_APIS)
def test_expired_session_fault_per_api(
    sf_org: StandInOrg,
    token: dict[str, str],
    connect: Callable[[str, str], Api],
    code: str,
    source: str,
) -> None:
    api = connect(code, source)
    call_any(api, code, api.headers)
    sf_org.expire_all_sessions()
    with pytest.raises(zeep.exceptions.Fault) as raised:
        call_any(api, code, api.headers)
    assert raised.value.code == "sf:INVALID_SESSION_ID"
    if code in ("m", "s"):
        assert raised.value.detail is None
    else:
        _, detail = fault_of(raised)
        assert detail.tag == f"{{{FAULT_NS[code]}}}UnexpectedErrorFault"
    assert sum(sf_org.operations.values()) == 1  # the refused call did not run
    assert sf_org.sessions_seen == [token["access_token"]] * 2


def test_other_operations_still_answer_invalid_operation(
    sf_org: StandInOrg, token: dict[str, str]
) -> None:
    for code, operation in (("c", "login"), ("T", "queryMore"), ("m", "readMetadata")):
        status, root = post(sf_org, code, operation, token["access_token"])
        assert status == 500
        assert root.findtext(f".//{{{SOAPENV}}}Fault/faultcode") == "sf:INVALID_OPERATION"
    assert sf_org.operations == {}


# --- partner: upsert, undelete, search, describeGlobal, describeSObjects ---------------------

Build = Callable[..., Harness]
PARTNER_BINDING = "{urn:partner.soap.sforce.com}SoapBinding"
PARTNER_FAULT_NS = FAULT_NS["u"]

NEW_PARTNER_HEADERS: dict[str, tuple[list[str], list[str]]] = {
    "upsert": (
        [
            "SessionHeader",
            "CallOptions",
            "AssignmentRuleHeader",
            "MruHeader",
            "AllowFieldTruncationHeader",
            "DisableFeedTrackingHeader",
            "StreamingEnabledHeader",
            "AllOrNoneHeader",
            "DuplicateRuleHeader",
            "LocaleOptions",
            "DebuggingHeader",
            "MetadataVersionCheck",
            "PackageVersionHeader",
            "ConditionalRequestHeader",
            "EmailHeader",
            "OwnerChangeOptions",
            "PatchHeader",
        ],
        ["DebuggingInfo", "LimitInfoHeader", "APIPerformanceInfo"],
    ),
    "undelete": (
        [
            "SessionHeader",
            "CallOptions",
            "AllowFieldTruncationHeader",
            "DisableFeedTrackingHeader",
            "StreamingEnabledHeader",
            "AllOrNoneHeader",
            "DuplicateRuleHeader",
            "LocaleOptions",
            "DebuggingHeader",
            "PackageVersionHeader",
        ],
        ["DebuggingInfo", "LimitInfoHeader", "APIPerformanceInfo"],
    ),
    "search": (
        ["SessionHeader", "CallOptions", "PackageVersionHeader", "PatchHeader"],
        ["LimitInfoHeader", "APIPerformanceInfo"],
    ),
    "describeGlobal": (
        [
            "SessionHeader",
            "CallOptions",
            "PackageVersionHeader",
            "ConditionalRequestHeader",
            "PatchHeader",
        ],
        ["LimitInfoHeader", "APIPerformanceInfo"],
    ),
    "describeSObjects": (
        [
            "SessionHeader",
            "CallOptions",
            "PackageVersionHeader",
            "ConditionalRequestHeader",
            "LocaleOptions",
            "PatchHeader",
        ],
        ["LimitInfoHeader", "APIPerformanceInfo"],
    ),
}
"""The SOAP headers the real partner binding declares for each new call (input, output)."""


def header_names(message: Any) -> list[str]:
    """The header parts a zeep binding message declares, in order."""
    return [name for name, _ in message.header.type.elements] if message.header else []


def expired(build: Build) -> Harness:
    """A harness whose every session has expired: its next call must refresh once."""
    h = build()
    h.org.expire_all_sessions()
    return h


def one_contact(h: Harness, last_name: str) -> Any:
    """The single live Contact with this last name (a partner sObject)."""
    result = h.client.service.query(
        f"SELECT Id, Name, Email, Description FROM Contact WHERE LastName = '{last_name}'"
    ).body.result
    (record,) = result.records
    return record


def test_compact_partner_wsdl_has_the_sixteen_operations() -> None:
    client = new_client(PARTNER_WSDL, settings=SETTINGS)
    try:
        operations = client.wsdl.bindings[PARTNER_BINDING]._operations
        assert set(operations) == {
            "login",
            "query",
            "queryAll",
            "queryMore",
            "retrieve",
            "search",
            "create",
            "update",
            "upsert",
            "delete",
            "undelete",
            "getUserInfo",
            "getServerTimestamp",
            "describeSObject",
            "describeSObjects",
            "describeGlobal",
        }
        for name, (inputs, outputs) in NEW_PARTNER_HEADERS.items():
            operation = operations[name]
            assert header_names(operation.input) == inputs, name
            assert header_names(operation.output) == outputs, name
        assert set(operations["search"].faults) == {
            "InvalidSObjectFault",
            "InvalidFieldFault",
            "MalformedSearchFault",
            "UnexpectedErrorFault",
        }
    finally:
        client.transport.session.close()


def test_upsert_creates_and_updates_over_an_expiry(harness: Build) -> None:
    h = harness()
    hopper = one_contact(h, "Hopper")
    h.org.expire_all_sessions()
    answer = h.client.service.upsert(
        "Email",
        [
            # Matched ignoring case: the seeded grace.hopper@example.com is updated.
            sobject(
                h.client,
                "Contact",
                LastName="Hopper",
                Email="Grace.Hopper@example.com",
                Description="Updated by upsert",
            ),
            sobject(h.client, "Contact", LastName="Coleman", Email="kc@example.com"),
        ],
    )
    assert h.org.token_requests == 1
    updated, created = answer.body.result
    assert (updated.success, updated.created, updated.id, updated.errors) == (
        True,
        False,
        hopper.Id,
        [],
    )
    assert (created.success, created.created) == (True, True)
    assert created.id.startswith("003")
    assert answer.header.LimitInfoHeader.limitInfo[0].type == "API REQUESTS"
    assert field_values(one_contact(h, "Hopper"))["Description"] == "Updated by upsert"
    assert field_values(one_contact(h, "Coleman"))["Email"] == "kc@example.com"

    # By Id: a record with an Id is updated, one without is created.
    by_id = sobject(h.client, "Contact", FirstName="Katherine")
    by_id.Id = created.id
    again = h.client.service.upsert(
        "Id", [by_id, sobject(h.client, "Account", Name="Upserted Ltd")]
    ).body.result
    assert [(r.success, r.created, r.id) for r in again] == [
        (True, False, created.id),
        (True, True, again[1].id),
    ]
    assert again[1].id.startswith("001")
    assert field_values(one_contact(h, "Coleman"))["Name"] == "Katherine Coleman"
    assert h.org.token_requests == 1
    assert h.org.operations["upsert"] == 2


def test_upsert_answers_salesforce_errors(harness: Build) -> None:
    h = expired(harness)
    # Two Contacts share an Email, so upserting on it is ambiguous.
    h.client.service.create(
        [sobject(h.client, "Contact", LastName="Twin", Email="twin@example.com")]
    )
    h.client.service.create(
        [sobject(h.client, "Contact", LastName="Twin", Email="twin@example.com")]
    )
    results = h.client.service.upsert(
        "Email",
        [
            sobject(h.client, "Contact", LastName="NoEmail"),
            sobject(h.client, "Contact", LastName="Twin", Email="TWIN@example.com"),
            sobject(h.client, "Contact", LastName="Once", Email="same@example.com"),
            sobject(h.client, "Contact", LastName="Twice", Email="same@example.com"),
            sobject(h.client, "Contact", Email="nobody@example.com"),
        ],
    ).body.result
    assert [(r.success, r.created, r.id) for r in results] == [(False, False, None)] * 5
    statuses = [[(e.statusCode, e.message, e.fields) for e in r.errors] for r in results]
    assert statuses[0] == [("MISSING_ARGUMENT", "Email not specified", [])]
    assert statuses[1][0][0] == "DUPLICATE_EXTERNAL_ID"
    assert statuses[1][0][1].startswith("more than one record found for external id field: [003")
    assert (
        statuses[2]
        == statuses[3]
        == [("DUPLICATE_EXTERNAL_ID", "Duplicate external id specified: same@example.com", [])]
    )
    assert statuses[4] == [
        ("REQUIRED_FIELD_MISSING", "Required fields are missing: [LastName]", ["LastName"])
    ]

    # AllOrNoneHeader: one bad record rolls the good one back.
    rolled_back = h.client.service.upsert(
        "Email",
        [
            sobject(h.client, "Contact", LastName="Good", Email="good@example.com"),
            sobject(h.client, "Contact", LastName="Bad"),
        ],
        _soapheaders={"AllOrNoneHeader": {"allOrNone": True}},
    ).body.result
    assert [e.statusCode for r in rolled_back for e in r.errors] == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "MISSING_ARGUMENT",
    ]
    found = h.client.service.query("SELECT Id FROM Contact WHERE LastName = 'Good'")
    assert found.body.result.size == 0

    # A field that is neither an external id nor an idLookup field faults the whole call.
    with pytest.raises(zeep.exceptions.Fault) as raised:
        h.client.service.upsert("LastName", [sobject(h.client, "Contact", LastName="Any")])
    faultcode, detail = fault_of(raised)
    assert faultcode == "sf:INVALID_FIELD"
    assert detail.tag == f"{{{PARTNER_FAULT_NS}}}InvalidFieldFault"
    assert raised.value.message == (
        "INVALID_FIELD: Field name provided, LastName is not an External ID or indexed field "
        "for Contact"
    )
    assert h.org.token_requests == 1
    assert h.org.internal_errors == []


def test_undelete_restores_a_deleted_record_over_an_expiry(harness: Build) -> None:
    h = harness()
    hopper_id = one_contact(h, "Hopper").Id
    assert h.client.service.delete([hopper_id]).body.result[0].success
    query = f"SELECT Id, IsDeleted FROM Contact WHERE Id = '{hopper_id}'"
    assert h.client.service.query(query).body.result.size == 0
    (binned,) = h.client.service.queryAll(query).body.result.records
    assert field_values(binned)["IsDeleted"] == "true"

    h.org.expire_all_sessions()
    answer = h.client.service.undelete([hopper_id, "0035g00000zzzzzAAA", "not-an-id"])
    assert h.org.token_requests == 1
    restored, unknown, malformed = answer.body.result
    assert (restored.success, restored.id, restored.errors) == (True, hopper_id, [])
    assert answer.header.LimitInfoHeader.limitInfo[0].type == "API REQUESTS"
    assert [(e.statusCode, e.message) for e in unknown.errors] == [
        ("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
    ]
    assert [e.statusCode for e in malformed.errors] == ["MALFORMED_ID"]
    assert (unknown.success, unknown.id, malformed.success) == (False, None, False)

    # Back for query, no longer deleted; undeleting it again is not possible.
    (record,) = h.client.service.query(query).body.result.records
    assert field_values(record) == {"Id": hopper_id, "IsDeleted": "false"}
    assert one_contact(h, "Hopper").Id == hopper_id
    (again,) = h.client.service.undelete([hopper_id]).body.result
    assert [(e.statusCode, e.message) for e in again.errors] == [
        ("UNDELETE_FAILED", "Entity is not in the recycle bin")
    ]
    assert h.org.token_requests == 1


def test_search_finds_a_contact_by_a_name_fragment_over_an_expiry(harness: Build) -> None:
    h = expired(harness)
    answer = h.client.service.search(
        "FIND {hopp} IN NAME FIELDS RETURNING Contact(Id, Name, Email), Account(Name)"
    )
    assert h.org.token_requests == 1
    result = answer.body.result
    assert result.queryId
    assert answer.header.LimitInfoHeader.limitInfo[0].type == "API REQUESTS"
    (hit,) = result.searchRecords
    assert hit.record.type == "Contact"
    assert hit.record.Id.startswith("003")
    assert field_values(hit.record) == {
        "Id": hit.record.Id,
        "Name": "Grace Hopper",
        "Email": "grace.hopper@example.com",
    }

    # Every word must match (in any text field); without a field list only the Id comes back.
    both = h.client.service.search("FIND {GRACE example*} RETURNING Contact, Account")
    assert [field_values(r.record) for r in both.body.result.searchRecords] == [
        {"Id": hit.record.Id}
    ]
    accounts = h.client.service.search("FIND {init} RETURNING Account(Name, Industry)")
    assert [field_values(r.record) for r in accounts.body.result.searchRecords] == [
        {"Name": "Initech", "Industry": "Technology"}
    ]
    nothing = h.client.service.search("FIND {zzzz} RETURNING Contact(Name)").body.result
    assert nothing.searchRecords == []

    with pytest.raises(zeep.exceptions.Fault) as raised:
        h.client.service.search("FIND hopper RETURNING Contact(Name)")
    faultcode, detail = fault_of(raised)
    assert faultcode == "sf:MALFORMED_SEARCH"
    assert detail.tag == f"{{{PARTNER_FAULT_NS}}}MalformedSearchFault"
    assert local_names(detail) == ["exceptionCode", "exceptionMessage", "row", "column"]
    assert raised.value.message == (
        "MALFORMED_SEARCH: No search term found. The search term must be enclosed in braces."
    )
    with pytest.raises(zeep.exceptions.Fault) as raised:
        h.client.service.search("FIND {hopper} RETURNING Widget(Name)")
    assert fault_of(raised)[1].tag == f"{{{PARTNER_FAULT_NS}}}InvalidSObjectFault"
    assert h.org.token_requests == 1
    assert h.org.operations["search"] == 6


def test_describe_global_lists_the_schema_over_an_expiry(harness: Build) -> None:
    h = expired(harness)
    answer = h.client.service.describeGlobal()
    assert h.org.token_requests == 1
    result = answer.body.result
    assert (result.encoding, result.maxBatchSize) == ("UTF-8", 200)
    assert answer.header.LimitInfoHeader.limitInfo[0].type == "API REQUESTS"
    summary = [
        (o.name, o.label, o.labelPlural, o.keyPrefix, o.custom, o.queryable, o.searchable)
        for o in result.sobjects
    ]
    assert summary == [
        ("Account", "Account", "Accounts", "001", False, True, True),
        ("Contact", "Contact", "Contacts", "003", False, True, True),
    ]
    assert all(
        (o.createable, o.updateable, o.deletable, o.undeletable) == (True, True, True, True)
        for o in result.sobjects
    )


def test_describe_sobjects_describes_two_types_over_an_expiry(harness: Build) -> None:
    h = expired(harness)
    answer = h.client.service.describeSObjects(["Account", "contact"])
    assert h.org.token_requests == 1
    account, contact = answer.body.result
    assert (account.name, account.keyPrefix, contact.name, contact.keyPrefix) == (
        "Account",
        "001",
        "Contact",
        "003",
    )
    assert [f.name for f in account.fields] == [
        "Id",
        "IsDeleted",
        "Name",
        "Industry",
        "Description",
    ]
    single = h.client.service.describeSObject("Contact").body.result
    assert [(f.name, f.type, f.idLookup) for f in contact.fields] == [
        (f.name, f.type, f.idLookup) for f in single.fields
    ]
    assert {f.name for f in contact.fields if f.idLookup} == {"Id", "Email"}

    with pytest.raises(zeep.exceptions.Fault) as raised:
        h.client.service.describeSObjects(["Contact", "Widget"])
    faultcode, detail = fault_of(raised)
    assert (faultcode, detail.tag) == (
        "sf:INVALID_TYPE",
        f"{{{PARTNER_FAULT_NS}}}InvalidSObjectFault",
    )
    assert h.org.token_requests == 1


@pytest.mark.parametrize(
    ("search", "code", "row", "column", "message"),
    [
        ("FIND hopper", "MALFORMED_SEARCH", -1, -1, sosl.NO_TERM),
        ("SELECT Id FROM Contact", "MALFORMED_SEARCH", 1, 1, "unexpected token: SELECT"),
        ("FIND {hopper", "MALFORMED_SEARCH", 1, 13, "unexpected token: <EOF>"),
        ("FIND {h*}", "MALFORMED_SEARCH", -1, -1, "longer than one character: h*"),
        ("FIND {ada OR alan}", "MALFORMED_SEARCH", -1, -1, "no operators: OR"),
        ("FIND {ada} IN EVERY FIELDS", "MALFORMED_SEARCH", 1, 15, "unexpected token: EVERY"),
        ("FIND {ada}\nRETURNING Contact(Name) ORDER BY Name", "MALFORMED_SEARCH", 2, 25, "ORDER"),
        ("FIND {ada} RETURNING Widget", "INVALID_TYPE", 1, 22, "'Widget' is not supported"),
        ("FIND {ada} RETURNING Contact(Colour)", "INVALID_FIELD", 1, 30, "No such column"),
    ],
)
def test_sosl_subset_refuses_like_salesforce(
    search: str, code: str, row: int, column: int, message: str
) -> None:
    with pytest.raises(SoqlError) as raised:
        sosl.resolve(sosl.parse(search), SCHEMA)
    assert (raised.value.code, raised.value.row, raised.value.column) == (code, row, column)
    assert message in raised.value.exception_message


def test_sosl_subset_parses_scopes_words_and_wildcards() -> None:
    search = sosl.resolve(
        sosl.parse('find {"grace HOPPER" ex?mple* \\*} in name fields returning contact LIMIT 3'),
        SCHEMA,
    )
    assert (search.scope, search.limit) == ("NAME", 3)
    assert [w.pattern for w in search.words] == [r"grace\s+HOPPER", "ex.mple.*", r"\*"]
    (target,) = search.targets
    assert (target.sobject.name, [f.name for f in target.fields]) == ("Contact", ["Id"])
    assert [f.name for f in sosl.searched_fields(target.sobject, "NAME")] == [
        "LastName",
        "FirstName",
        "Name",
    ]
    everything = sosl.resolve(sosl.parse("FIND {acme}"), SCHEMA)
    assert [t.sobject.name for t in everything.targets] == ["Account", "Contact"]
