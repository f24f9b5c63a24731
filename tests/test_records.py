"""Partner records (sobject, fields, keep_field_names) and the one-line clients (connect)."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any

import pytest
import requests
import zeep
from conftest import SOQL, Harness, make_oauth
from lxml import etree

from zeep_sfrefresh import (
    ENTERPRISE_WSDL,
    PARTNER_WSDL,
    RefreshEvent,
    SalesforceTransport,
    connect,
    connect_async,
    fields,
    keep_field_names,
    sobject,
)
from zeep_sfrefresh.testing import StandInOrg

Build = Callable[..., Harness]

SF = "urn:sobject.partner.soap.sforce.com"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
CONTACT_ID = "003000000000001AAA"

# A query answer shaped like Salesforce's for
# SELECT Id, LastName, Email, Account.Name, Account.Owner.Alias, ReportsTo.Name, MailingAddress,
#        (SELECT LastName FROM Cases__r) FROM Contact
REPLY = f"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
    xmlns="urn:partner.soap.sforce.com" xmlns:sf="{SF}" xmlns:xsi="{XSI}">
 <soapenv:Header><LimitInfoHeader><limitInfo><current>5</current><limit>15000</limit>
  <type>API REQUESTS</type></limitInfo></LimitInfoHeader></soapenv:Header>
 <soapenv:Body><queryResponse><result xsi:type="QueryResult">
  <done>true</done><queryLocator xsi:nil="true"/>
  <records xsi:type="sf:sObject">
   <sf:type>Contact</sf:type>
   <sf:Id>{CONTACT_ID}</sf:Id>
   <sf:Id>{CONTACT_ID}</sf:Id>
   <sf:LastName>Lovelace</sf:LastName>
   <sf:Email xsi:nil="true"/>
   <sf:Account xsi:type="sf:sObject">
    <sf:type>Account</sf:type>
    <sf:Id xsi:nil="true"/>
    <sf:Name>Acme</sf:Name>
    <sf:AnnualRevenue>1.5E7</sf:AnnualRevenue>
    <sf:Owner xsi:type="sf:sObject">
     <sf:type>User</sf:type><sf:Id xsi:nil="true"/><sf:Alias>ada</sf:Alias>
    </sf:Owner>
   </sf:Account>
   <sf:ReportsTo xsi:nil="true"/>
   <sf:MailingAddress xsi:type="address">
    <latitude xsi:nil="true"/><longitude xsi:nil="true"/><city>London</city>
    <country>UK</country><countryCode xsi:nil="true"/><geocodeAccuracy xsi:nil="true"/>
    <postalCode>N1</postalCode><state xsi:nil="true"/><stateCode xsi:nil="true"/>
    <street>12 St James's Square</street>
   </sf:MailingAddress>
   <sf:Cases__r xsi:type="QueryResult">
    <done>true</done><queryLocator xsi:nil="true"/>
    <records xsi:type="sf:sObject">
     <sf:type>Case__c</sf:type><sf:Id xsi:nil="true"/><sf:Subject__c>Engine</sf:Subject__c>
    </records>
    <size>1</size>
   </sf:Cases__r>
  </records>
  <size>1</size>
 </result></queryResponse></soapenv:Body>
</soapenv:Envelope>""".encode()

EXPECTED = {
    "type": "Contact",
    "Id": CONTACT_ID,
    "LastName": "Lovelace",
    "Email": None,
    "Account": {
        "type": "Account",
        "Id": None,
        "Name": "Acme",
        "AnnualRevenue": "1.5E7",
        "Owner": {"type": "User", "Id": None, "Alias": "ada"},
    },
    "ReportsTo": None,
    "MailingAddress": {
        "latitude": None,
        "longitude": None,
        "city": "London",
        "country": "UK",
        "countryCode": None,
        "geocodeAccuracy": None,
        "postalCode": "N1",
        "state": None,
        "stateCode": None,
        "street": "12 St James's Square",
    },
    "Cases__r": {
        "done": True,
        "queryLocator": None,
        "records": [{"type": "Case__c", "Id": None, "Subject__c": "Engine"}],
        "size": 1,
    },
}


def canned_answer() -> requests.Response:
    response = requests.Response()
    response.status_code = 200
    response._content = REPLY
    response.headers["Content-Type"] = "text/xml; charset=utf-8"
    return response


class CannedTransport(zeep.Transport):
    """Answers every SOAP call with REPLY (the WSDL still loads from disk)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # zeep is unannotated

    def post_xml(self, address: str, envelope: Any, headers: Any) -> requests.Response:
        return canned_answer()


def partner_client(transport: zeep.Transport | None = None) -> zeep.Client:
    settings = zeep.Settings(forbid_dtd=True)
    return zeep.Client(PARTNER_WSDL, transport=transport or zeep.Transport(), settings=settings)


@pytest.fixture(scope="module")
def partner() -> Iterator[zeep.Client]:
    client = partner_client()
    yield client
    client.transport.session.close()


def texts(record: Mapping[str, Any]) -> dict[str, str | None]:
    return {etree.QName(e).localname: e.text for e in record["_value_1"]}


# --- sobject ----------------------------------------------------------------------------------


def test_sobject_puts_id_nulls_and_fields_where_the_partner_wsdl_wants_them() -> None:
    record = sobject(
        "Contact", Id=CONTACT_ID, LastName="Lovelace", fieldsToNull=["Phone"], Email=None
    )
    assert set(record) == {"type", "fieldsToNull", "Id", "_value_1"}
    assert (record["type"], record["Id"]) == ("Contact", CONTACT_ID)
    assert record["fieldsToNull"] == ["Phone", "Email"]
    (element,) = record["_value_1"]
    assert element.tag == f"{{{SF}}}LastName"
    assert element.text == "Lovelace"
    assert sobject("Contact", Id=None)["Id"] is None  # no Id: left out, not nulled


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("O'Brien & <Co>", "O'Brien & <Co>"),
        ("", ""),
        (True, "true"),
        (False, "false"),
        (42, "42"),
        (-7, "-7"),
        (1.5, "1.5"),
        (Decimal("1234.50"), "1234.50"),
        (dt.datetime(2024, 1, 31, 10, 0, 5, tzinfo=dt.timezone.utc), "2024-01-31T10:00:05Z"),
        (
            dt.datetime(2024, 1, 31, 12, 0, 0, 250000, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "2024-01-31T12:00:00.250000+02:00",
        ),
        (dt.date(1815, 12, 10), "1815-12-10"),
        (b"\x00hi", "AGhp"),
    ],
)
def test_sobject_sends_values_as_salesforce_text(value: object, text: str) -> None:
    assert texts(sobject("Thing__c", Value__c=value))["Value__c"] == text


@pytest.mark.parametrize("name", ["Last Name", "1stName", "ns:Name", "", "Name>"])
def test_a_field_name_that_is_not_an_xml_name_is_a_value_error_naming_it(name: str) -> None:
    message = re.escape(f"{name!r} is not a valid field name")
    with pytest.raises(ValueError, match=message):
        sobject("Contact", **{name: "x"})
    with pytest.raises(ValueError, match=message):
        sobject("Contact", fieldsToNull=[name])


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (dt.datetime(2024, 1, 31, 10, 0), ValueError, "field When: a naive datetime"),
        (float("nan"), ValueError, "field When: Salesforce has no nan"),
        (Decimal("Infinity"), ValueError, "field When: Salesforce has no Infinity"),
        ("bell\x07", ValueError, "field When: the value holds characters XML cannot carry"),
        (["a", "b"], TypeError, "field When: cannot send a list"),
        ({"type": "Account", "Name": "Acme"}, TypeError, r"sobject\('Account', \.\.\.\)"),
        (object(), TypeError, "field When: cannot send a object"),
    ],
)
def test_a_value_salesforce_cannot_take_is_refused(
    value: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        sobject("Event", When=value)


def test_misused_sobject_parts_are_refused() -> None:
    with pytest.raises(TypeError, match="fieldsToNull takes a list of field names, not a str"):
        sobject("Contact", fieldsToNull="Email")
    with pytest.raises(TypeError, match="Id must be a str"):
        sobject("Contact", Id=3)
    with pytest.raises(ValueError, match="'type' is not a field"):
        sobject("Contact", type="Account")
    with pytest.raises(TypeError, match="non-empty str"):
        sobject("")


def test_a_relationship_is_a_nested_sobject_that_can_be_used_again() -> None:
    account = sobject("Account", External_Id__c="A-1")
    first = sobject("Contact", LastName="One", Account=account)
    second = sobject("Contact", LastName="Two", Account=account)
    for record in (first, second):
        nested = record["_value_1"][1]
        assert nested.tag == f"{{{SF}}}Account"
        assert nested.get(f"{{{XSI}}}type") == "sf:sObject"
        assert nested.nsmap["sf"] == SF
        assert [(etree.QName(e).localname, e.text) for e in nested] == [
            ("type", "Account"),
            ("External_Id__c", "A-1"),
        ]
    assert len(account["_value_1"]) == 1  # nesting copied it, took nothing away
    assert fields(first)["Account"] == {"type": "Account", "Id": None, "External_Id__c": "A-1"}


def test_zeep_sends_what_sobject_builds_and_drops_a_plain_dicts_fields(
    partner: zeep.Client,
) -> None:
    def body(record: object) -> bytes:
        message = partner.create_message(partner.service, "create", [record])
        return etree.tostring(message.find(".//{urn:partner.soap.sforce.com}sObjects"))

    assert b"Lovelace" in body(sobject("Contact", LastName="Lovelace"))
    assert b"Lovelace" not in body({"type": "Contact", "LastName": "Lovelace"})


def test_the_wsdls_own_sobject_type_takes_what_sobject_builds(partner: zeep.Client) -> None:
    sobject_type = partner.get_type(f"{{{SF}}}sObject")
    typed = sobject_type(**sobject("Contact", LastName="Lovelace", Email=None))
    assert fields(typed) == fields(sobject("Contact", LastName="Lovelace", Email=None))
    nested = sobject("Contact", Account=sobject_type(**sobject("Account", Name="Acme")))
    assert fields(nested)["Account"] == {"type": "Account", "Id": None, "Name": "Acme"}
    row: dict[str, object] = {"LastName": "Lovelace", "Email": "ada@example.com"}
    assert texts(sobject("Contact", **row)) == row  # a row's dict spreads straight in


def test_keep_field_names_wants_a_partner_wsdl() -> None:
    enterprise = zeep.Client(ENTERPRISE_WSDL, settings=zeep.Settings(forbid_dtd=True))
    with pytest.raises(ValueError, match=r"no .*sObject type"):
        keep_field_names(enterprise)
    enterprise.transport.session.close()


# --- fields ----------------------------------------------------------------------------------


def test_fields_reads_relationships_sub_queries_and_compound_fields() -> None:
    client = partner_client(CannedTransport())
    keep_field_names(client)
    (record,) = client.service.query("SELECT ...").body.result.records
    result = fields(record)
    assert result == EXPECTED
    assert list(result) == list(EXPECTED)  # Salesforce's order
    # The record's element reads the same (a retrieve or search record too).
    assert fields(etree.fromstring(REPLY).find(".//{*}records")) == EXPECTED
    client.transport.session.close()


def test_without_keep_field_names_zeep_loses_relationship_names_and_fields_says_so() -> None:
    client = partner_client(CannedTransport())
    (record,) = client.service.query("SELECT ...").body.result.records
    with pytest.raises(ValueError, match=r"without its name .* keep_field_names\(client\)"):
        fields(record)
    client.transport.session.close()


@pytest.mark.parametrize(
    ("kind", "text", "value"),
    [
        ("boolean", "true", True),
        ("boolean", "false", False),
        ("xsd:boolean", "1", True),
        ("int", "42", 42),
        ("long", "-9007199254740993", -9007199254740993),
        ("double", "1.5E7", Decimal("1.5E7")),
        ("currency", "1234.50", Decimal("1234.50")),
        ("percent", "12.5", Decimal("12.5")),
        ("xsd:double", "0.1", Decimal("0.1")),
        ("date", "1815-12-10", dt.date(1815, 12, 10)),
        (
            "datetime",
            "2024-01-31T10:00:05.000Z",
            dt.datetime(2024, 1, 31, 10, 0, 5, tzinfo=dt.timezone.utc),
        ),
        (
            "xsd:dateTime",
            "2024-01-31T12:00:00+02:00",
            dt.datetime(2024, 1, 31, 10, 0, tzinfo=dt.timezone.utc),
        ),
        ("base64", "AGhp", b"\x00hi"),
        ("int", "", None),
        ("string", "00042", "00042"),
        ("picklist", "A;B", "A;B"),
        ("time", "10:00:00.000Z", "10:00:00.000Z"),
        ("no-such-type", "x", "x"),
    ],
)
def test_describe_types_convert_values(kind: str, text: str, value: object) -> None:
    got = fields(sobject("Thing__c", Value__c=text), {"value__C": kind})["Value__c"]
    assert got == value
    assert type(got) is type(value)
    if isinstance(got, dt.datetime):
        assert got.tzinfo is dt.timezone.utc


def test_describe_paths_reach_nested_records_and_bad_values_name_the_field() -> None:
    element = etree.fromstring(REPLY).find(".//{*}records")
    converted = fields(element, {"Account.AnnualRevenue": "currency", "cases__r.Id": "id"})
    assert converted["Account"]["AnnualRevenue"] == Decimal("1.5E7")  # type: ignore[index]
    assert fields(element, {"AnnualRevenue": "currency"}) == EXPECTED  # top level only
    with pytest.raises(ValueError, match="field LastName: 'Lovelace' is not a int value"):
        fields(element, {"LastName": "int"})


@pytest.mark.parametrize(
    "record", [None, "Contact", {"LastName": "Lovelace"}, {"type": "Contact", "Name": "X"}, 3]
)
def test_fields_refuses_what_is_not_a_partner_record(record: object) -> None:
    with pytest.raises(TypeError, match="fields\\(\\) reads a partner sObject"):
        fields(record)


def test_fields_of_an_sobject_round_trips_as_text() -> None:
    built = sobject("Contact", Id=CONTACT_ID, LastName="Lovelace", DoNotCall=True, Phone=None)
    assert fields(built) == {
        "type": "Contact",
        "Id": CONTACT_ID,
        "Phone": None,
        "LastName": "Lovelace",
        "DoNotCall": "true",
    }
    assert fields(built, {"DoNotCall": "boolean"})["DoNotCall"] is True


# --- over the stand-in org, sync and async ---------------------------------------------------


def test_create_after_an_expiry_sends_every_field(harness: Build) -> None:
    h = harness()
    h.org.expire_all_sessions()
    created = h.client.service.create(
        [sobject("Contact", FirstName="Ada", LastName="Byron", Email="ada@example.com")]
    )
    (result,) = created.body.result
    assert result.success, result.errors
    assert (h.org.token_requests, h.org.soap_posts, h.org.operations["create"]) == (1, 2, 1)

    query = f"SELECT Id, FirstName, LastName, Email FROM Contact WHERE Id = '{result.id}'"
    (record,) = h.client.service.query(query).body.result.records
    assert fields(record) == {
        "type": "Contact",
        "Id": result.id,
        "FirstName": "Ada",
        "LastName": "Byron",
        "Email": "ada@example.com",
    }
    assert h.org.token_requests == 1


def test_a_plain_dict_loses_its_fields_on_the_way(harness: Build) -> None:
    h = harness()
    created = h.client.service.create([{"type": "Contact", "LastName": "Byron"}])
    (result,) = created.body.result
    assert not result.success
    assert [e.statusCode for e in result.errors] == ["REQUIRED_FIELD_MISSING"]


def test_update_clears_none_fields_through_fields_to_null(harness: Build) -> None:
    h = harness()
    # zeep's own sObject object works as well as the dict.
    record = sobject(
        "Contact", LastName="Byron", Email="ada@example.com", Description="Analyst", FirstName="Ada"
    )
    contact = h.client.get_type(f"{{{SF}}}sObject")(**record)
    (created,) = h.client.service.create([contact]).body.result
    assert created.success, created.errors
    h.org.expire_all_sessions()

    change = sobject(
        "Contact", Id=created.id, Email=None, fieldsToNull=["Description"], FirstName="Augusta"
    )
    (updated,) = h.client.service.update([change]).body.result
    assert updated.success, updated.errors
    assert h.org.token_requests == 1

    fetched = h.client.service.retrieve(
        "Id, FirstName, LastName, Email, Description", "Contact", [created.id]
    )
    (record,) = fetched.body.result
    assert fields(record) == {
        "type": "Contact",
        "Id": created.id,
        "FirstName": "Augusta",
        "LastName": "Byron",
        "Email": None,
        "Description": None,
    }

    # A required field cannot be cleared: proof that fieldsToNull reaches the org.
    cleared = sobject("Contact", Id=created.id, LastName=None)
    (refused,) = h.client.service.update([cleared]).body.result
    assert not refused.success
    assert [e.statusCode for e in refused.errors] == ["REQUIRED_FIELD_MISSING"]


def test_describe_types_convert_query_and_search_records(harness: Build) -> None:
    h = harness()
    described = h.client.service.describeSObject("Contact").body.result
    describe = {field.name: field.type for field in described.fields}
    assert describe["IsDeleted"] == "boolean"

    query = "SELECT Id, IsDeleted, LastName FROM Contact WHERE LastName = 'Hopper'"
    (row,) = h.client.service.query(query).body.result.records
    record = fields(row, describe)
    assert record["IsDeleted"] is False
    assert record["LastName"] == "Hopper"

    found = h.client.service.search("FIND {hopp} IN NAME FIELDS RETURNING Contact(Id, Email)")
    (hit,) = found.body.result.searchRecords
    assert fields(hit.record) == {
        "type": "Contact",
        "Id": record["Id"],
        "Email": "grace.hopper@example.com",
    }


# --- connect -----------------------------------------------------------------------------------


def test_connect_returns_a_client_that_refreshes(sf_org: StandInOrg) -> None:
    saved: list[dict[str, Any]] = []
    events: list[RefreshEvent] = []
    client = connect(make_oauth(sf_org, sf_org.issue_token(), saved), listener=events.append)
    assert isinstance(client, zeep.Client)
    assert isinstance(client.transport, SalesforceTransport)
    assert client.settings.forbid_dtd

    sf_org.expire_all_sessions()
    answer = client.service.query(SOQL)
    assert answer.body.result.size == 10
    assert [fields(r)["type"] for r in answer.body.result.records] == ["Contact"] * 10
    assert sf_org.token_requests == 1
    assert len(saved) == 1
    assert [event.kind for event in events] == ["refreshed"]  # the options reached the transport
    (created,) = client.service.create([sobject("Contact", LastName="Connected")]).body.result
    assert created.success, created.errors  # keep_field_names leaves sending alone
    client.transport.session.close()


def test_connect_async_returns_a_client_that_refreshes(sf_org: StandInOrg) -> None:
    saved: list[dict[str, Any]] = []

    async def main() -> None:
        client = connect_async(make_oauth(sf_org, sf_org.issue_token(), saved), token_timeout=5)
        assert isinstance(client, zeep.AsyncClient)
        assert client.settings.forbid_dtd
        async with client:
            sf_org.expire_all_sessions()
            answer = await client.service.query(SOQL)
            assert answer.body.result.size == 10
        client.transport.wsdl_client.close()

    asyncio.run(main())
    assert sf_org.token_requests == 1
    assert len(saved) == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_connect_keeps_relationship_field_names(
    sf_org: StandInOrg, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    oauth = make_oauth(sf_org, sf_org.issue_token(), [])
    if mode == "sync":
        client: Any = connect(oauth)
        monkeypatch.setattr(client.transport, "post_xml", lambda *args: canned_answer())
        answer = client.service.query("SELECT ...")
        client.transport.session.close()
    else:

        async def post_xml(*args: object) -> requests.Response:
            return canned_answer()

        async def main() -> Any:
            async with connect_async(oauth) as client:
                monkeypatch.setattr(client.transport, "post_xml", post_xml)
                result = await client.service.query("SELECT ...")
            client.transport.wsdl_client.close()
            return result

        answer = asyncio.run(main())
    (record,) = answer.body.result.records
    assert fields(record) == EXPECTED


def test_connect_takes_other_wsdls_and_passes_on_the_transports_errors(
    sf_org: StandInOrg,
) -> None:
    token = sf_org.issue_token()
    enterprise = connect(make_oauth(sf_org, token, []), ENTERPRISE_WSDL)
    assert enterprise.service.getServerTimestamp().body.result.timestamp
    enterprise.transport.session.close()

    with pytest.raises(TypeError, match="OAuth2Session"):
        connect(token)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no_such_option"):
        connect(make_oauth(sf_org, token, []), no_such_option=1)


def test_importing_the_package_does_not_need_the_async_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['httpx'] = None\n"
        "from zeep_sfrefresh import connect, connect_async, fields, sobject\n"
        "assert 'zeep_sfrefresh._async_transport' not in sys.modules\n"
        "connect_async(None)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode != 0
    assert "ImportError" in run.stderr
    assert "pip install 'zeep-sfrefresh[async]'" in run.stderr
