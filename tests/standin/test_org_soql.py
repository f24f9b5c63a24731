"""The stand-in org's SOQL beyond flat fields: parent relationship paths and ``SELECT COUNT()``.

The parser and resolver are tested as pure functions (positions, errors, the select tree, a
schema with relationships two deep); the answers go over real sockets, through a zeep client
from :func:`zeep_sfrefresh.connect` read back with :func:`zeep_sfrefresh.fields` and checked on
the wire where zeep would hide the shape (the nested ``sf:Account``, its nil Id, the nil of an
empty lookup), and through REST with ``requests``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import requests
import zeep.exceptions
from conftest import make_oauth
from lxml import etree
from reference import REAL_PARTNER_WSDL, requires_reference

from zeep_sfrefresh import ENTERPRISE_WSDL, PARTNER_WSDL, connect, fields, sobject
from zeep_sfrefresh.testing import StandInOrg, soql, wire
from zeep_sfrefresh.testing.data import SCHEMA, FieldSpec, SObjectSpec, Value, id15, sequential_id

pytest_plugins = ["zeep_sfrefresh.testing.pytest_plugin"]

SOAPENV = "http://schemas.xmlsoap.org/soap/envelope/"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
SF = "urn:sobject.partner.soap.sforce.com"
PARTNER_NS = "urn:partner.soap.sforce.com"
SAFE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)

ACCOUNT = SCHEMA["account"]
CONTACT = SCHEMA["contact"]


def spec_field(spec: SObjectSpec, name: str) -> FieldSpec:
    found = spec.field(name)
    assert found is not None
    return found


# --- parsing ---------------------------------------------------------------------------------


def test_count_parses_alone_with_where_and_limit() -> None:
    query = soql.parse("select count ( )\nfrom Account where Name = 'Acme' limit 2")
    assert query.count == (1, 8)
    assert query.fields == ()
    assert (query.sobject, query.limit) == ("Account", 2)
    assert [(c.field, c.value) for c in query.where] == [("Name", "Acme")]
    assert soql.parse("SELECT Id FROM Account").count is None


@pytest.mark.parametrize(
    ("text", "row", "column", "token"),
    [
        # Salesforce's parser knows COUNT() only as the whole select list: after a field,
        # COUNT( wants a field and fails at the ")", and after COUNT() it wants FROM.
        ("SELECT Id, COUNT() FROM Account", 1, 18, ")"),
        ("SELECT COUNT(), Id FROM Account", 1, 15, ","),
        ("SELECT Name,\n  count() FROM Account", 2, 9, ")"),
    ],
)
def test_count_mixed_with_fields_is_malformed(text: str, row: int, column: int, token: str) -> None:
    with pytest.raises(soql.SoqlError) as caught:
        soql.parse(text)
    error = caught.value
    assert (error.code, error.row, error.column) == ("MALFORMED_QUERY", row, column)
    assert error.message == f"unexpected token: {token}"


@pytest.mark.parametrize(
    ("text", "row", "column", "name"),
    [
        ("SELECT COUNT(Id) FROM Account", 1, 8, "COUNT"),
        ("SELECT Name, MAX(Name) FROM Account", 1, 14, "MAX"),
        ("SELECT Id,\n   count_distinct(Name) FROM Account", 2, 4, "count_distinct"),
        ("SELECT FIELDS(ALL) FROM Account", 1, 8, "FIELDS"),
    ],
)
def test_functions_other_than_count_are_refused_clearly(
    text: str, row: int, column: int, name: str
) -> None:
    with pytest.raises(soql.SoqlError) as caught:
        soql.parse(text)
    error = caught.value
    assert (error.code, error.row, error.column) == ("MALFORMED_QUERY", row, column)
    assert error.message == (
        f"The stand-in org's SOQL does not support {name}(...); its only function is COUNT(), "
        "alone in the select list"
    )


# --- resolving -------------------------------------------------------------------------------


def test_relationship_paths_resolve_in_any_case_grouped_at_first_mention() -> None:
    query = soql.resolve(
        soql.parse(
            "select account.NAME, lastname, ACCOUNT.industry, Id from contact "
            "where Account.name = 'Acme'"
        ),
        SCHEMA,
        relationships=True,
    )
    account = soql.Relationship(
        "Account",
        spec_field(CONTACT, "AccountId"),
        ACCOUNT,
        (spec_field(ACCOUNT, "Name"), spec_field(ACCOUNT, "Industry")),
    )
    assert query.select == (account, spec_field(CONTACT, "LastName"), spec_field(CONTACT, "Id"))
    assert query.fields == (spec_field(CONTACT, "LastName"), spec_field(CONTACT, "Id"))
    ((path, value),) = query.where
    assert [hop.name for hop in path.hops] == ["Account"]
    assert (path.field.name, value) == ("Name", "Acme")
    assert not query.count


def test_count_resolves_with_relationship_conditions() -> None:
    query = soql.resolve(
        soql.parse("SELECT COUNT() FROM Contact WHERE Account.Industry = 'Energy' LIMIT 3"),
        SCHEMA,
        relationships=True,
        count=True,
    )
    assert (query.count, query.select, query.limit) == (True, (), 3)
    assert [(p.field.name, v) for p, v in query.where] == [("Industry", "Energy")]


@pytest.mark.parametrize(
    ("text", "row", "column", "message"),
    [
        ("SELECT Owner.Name FROM Contact", 1, 8, "Didn't understand relationship 'Owner'"),
        ("SELECT AccountId.Name FROM Contact", 1, 8, "Didn't understand relationship 'AccountId'"),
        ("SELECT LastName.x FROM Contact", 1, 8, "Didn't understand relationship 'LastName'"),
        ("SELECT Account.Name FROM Account", 1, 8, "Didn't understand relationship 'Account'"),
        (
            "SELECT Id, Account.Nope FROM Contact",
            1,
            12,
            "No such column 'Nope' on entity 'Account'",
        ),
        ("SELECT Account FROM Contact", 1, 8, "No such column 'Account' on entity 'Contact'"),
        (
            "SELECT Id FROM Contact\nWHERE Id = null AND Account.Owner.Name = 'x'",
            2,
            21,
            "Didn't understand relationship 'Owner'",
        ),
    ],
)
def test_unknown_relationships_and_fields_are_invalid_field(
    text: str, row: int, column: int, message: str
) -> None:
    with pytest.raises(soql.SoqlError) as caught:
        soql.resolve(soql.parse(text), SCHEMA, relationships=True, count=True)
    error = caught.value
    assert (error.code, error.row, error.column) == ("INVALID_FIELD", row, column)
    assert error.message.startswith(message)
    assert f"ERROR at Row:{row}:Column:{column}\n{message}" in error.exception_message


def test_callers_that_render_flat_records_get_paths_and_count_refused() -> None:
    """The enterprise and tooling queries resolve without opting in (see the API tests)."""
    with pytest.raises(soql.SoqlError) as path:
        soql.resolve(soql.parse("SELECT Account.Name FROM Contact"), SCHEMA, count=True)
    assert (path.value.code, path.value.column) == ("INVALID_FIELD", 8)
    assert path.value.message.startswith("Didn't understand relationship 'Account' in field path.")
    with pytest.raises(soql.SoqlError) as where:
        soql.resolve(soql.parse("SELECT Id FROM Contact WHERE Account.Name = 'x'"), SCHEMA)
    assert (where.value.code, where.value.column) == ("INVALID_FIELD", 30)
    with pytest.raises(soql.SoqlError) as count:
        soql.resolve(soql.parse("SELECT COUNT() FROM Contact"), SCHEMA, relationships=True)
    assert (count.value.code, count.value.row, count.value.column) == ("MALFORMED_QUERY", 1, 8)
    assert "COUNT()" in count.value.message


# A third object, so relationships two deep can be checked: Case -> Contact -> Account.
CASE = SObjectSpec(
    "Case",
    "Case",
    "Cases",
    "500",
    (
        FieldSpec("Id", "Case ID", "id", "tns:ID", 18),
        FieldSpec("Subject", "Subject", "string", "xsd:string", 255),
        FieldSpec(
            "ContactId",
            "Contact ID",
            "reference",
            "tns:ID",
            18,
            reference_to="Contact",
            relationship_name="Contact",
        ),
    ),
)
DEEP_SCHEMA = {**SCHEMA, "case": CASE}
ACCOUNT_ID = sequential_id("001", 1)
CONTACT_ID = sequential_id("003", 2)
ORPHAN_ID = sequential_id("003", 3)
RECORDS: dict[tuple[str, str], Mapping[str, Value]] = {
    ("Account", id15(ACCOUNT_ID)): {"Id": ACCOUNT_ID, "Name": "Acme", "Industry": "Energy"},
    ("Contact", id15(CONTACT_ID)): {
        "Id": CONTACT_ID,
        "AccountId": ACCOUNT_ID,
        "LastName": "Hopper",
    },
    ("Contact", id15(ORPHAN_ID)): {"Id": ORPHAN_ID, "AccountId": None, "LastName": "Orphan"},
}
DEEP = (
    "SELECT Subject, contact.account.name, Contact.LastName FROM case "
    "WHERE Contact.Account.Name = 'acme'"
)


def lookup(spec: SObjectSpec, record_id: str) -> Mapping[str, Value] | None:
    return RECORDS.get((spec.name, id15(record_id)))


def test_relationships_two_deep_resolve_match_and_render() -> None:
    query = soql.resolve(soql.parse(DEEP), DEEP_SCHEMA, relationships=True)
    account = soql.Relationship(
        "Account", spec_field(CONTACT, "AccountId"), ACCOUNT, (spec_field(ACCOUNT, "Name"),)
    )
    contact = soql.Relationship(
        "Contact",
        spec_field(CASE, "ContactId"),
        CONTACT,
        (account, spec_field(CONTACT, "LastName")),
    )
    assert query.select == (spec_field(CASE, "Subject"), contact)

    case = {"Id": sequential_id("500", 4), "Subject": "Engine", "ContactId": CONTACT_ID}
    assert soql.matches(query, case, lookup)
    assert not soql.matches(query, {**case, "ContactId": ORPHAN_ID}, lookup)
    assert not soql.matches(query, {**case, "ContactId": None}, lookup)
    parents = soql.parent_records(query.select, case, lookup)
    assert parents == {
        ("Contact", id15(CONTACT_ID)): RECORDS[("Contact", id15(CONTACT_ID))],
        ("Account", id15(ACCOUNT_ID)): RECORDS[("Account", id15(ACCOUNT_ID))],
    }

    xml = wire.sobject_xml("records", "Case", case, query.select, parents)
    assert xml == (
        '<records xsi:type="sf:sObject"><sf:type>Case</sf:type><sf:Id xsi:nil="true"/>'
        "<sf:Subject>Engine</sf:Subject>"
        '<sf:Contact xsi:type="sf:sObject"><sf:type>Contact</sf:type><sf:Id xsi:nil="true"/>'
        '<sf:Account xsi:type="sf:sObject"><sf:type>Account</sf:type><sf:Id xsi:nil="true"/>'
        "<sf:Name>Acme</sf:Name></sf:Account>"
        "<sf:LastName>Hopper</sf:LastName></sf:Contact></records>"
    )
    document = etree.fromstring(f'<r xmlns:sf="{SF}" xmlns:xsi="{XSI}">{xml}</r>', SAFE_PARSER)
    assert fields(document[0]) == {
        "type": "Case",
        "Id": None,
        "Subject": "Engine",
        "Contact": {
            "type": "Contact",
            "Id": None,
            "Account": {"type": "Account", "Id": None, "Name": "Acme"},
            "LastName": "Hopper",
        },
    }
    assert wire.rest_record("Case", case, query.select, "66.0", parents) == {
        "attributes": {"type": "Case", "url": f"/services/data/v66.0/sobjects/Case/{case['Id']}"},
        "Subject": "Engine",
        "Contact": {
            "attributes": {
                "type": "Contact",
                "url": f"/services/data/v66.0/sobjects/Contact/{CONTACT_ID}",
            },
            "Account": {
                "attributes": {
                    "type": "Account",
                    "url": f"/services/data/v66.0/sobjects/Account/{ACCOUNT_ID}",
                },
                "Name": "Acme",
            },
            "LastName": "Hopper",
        },
    }


def test_an_empty_lookup_midway_reads_null() -> None:
    query = soql.resolve(
        soql.parse("SELECT Contact.Account.Name FROM Case WHERE Contact.Account.Name = null"),
        DEEP_SCHEMA,
        relationships=True,
    )
    case = {"Id": sequential_id("500", 5), "ContactId": ORPHAN_ID}
    assert soql.matches(query, case, lookup)
    assert not soql.matches(query, {**case, "ContactId": CONTACT_ID}, lookup)
    parents = soql.parent_records(query.select, case, lookup)
    assert list(parents) == [("Contact", id15(ORPHAN_ID))]
    assert wire.sobject_xml("records", "Case", case, query.select, parents) == (
        '<records xsi:type="sf:sObject"><sf:type>Case</sf:type><sf:Id xsi:nil="true"/>'
        '<sf:Contact xsi:type="sf:sObject"><sf:type>Contact</sf:type><sf:Id xsi:nil="true"/>'
        '<sf:Account xsi:nil="true"/></sf:Contact></records>'
    )
    rest = wire.rest_record("Case", case, query.select, "66.0", parents)
    assert rest["Contact"] == {
        "attributes": {
            "type": "Contact",
            "url": f"/services/data/v66.0/sobjects/Contact/{ORPHAN_ID}",
        },
        "Account": None,
    }
    # A lookup Id whose record is unknown (deleted, another object) reads as empty too.
    gone = {"Id": sequential_id("500", 6), "ContactId": sequential_id("003", 99)}
    assert soql.matches(query, gone, lookup)
    assert '<sf:Contact xsi:nil="true"/>' in wire.sobject_xml(
        "records", "Case", gone, query.select, soql.parent_records(query.select, gone, lookup)
    )


def test_matching_a_relationship_path_needs_a_lookup() -> None:
    query = soql.resolve(
        soql.parse("SELECT Id FROM Contact WHERE Account.Name = 'Acme'"),
        SCHEMA,
        relationships=True,
    )
    with pytest.raises(ValueError, match="parent lookup"):
        soql.matches(query, {"Id": CONTACT_ID, "AccountId": ACCOUNT_ID})
    # Without a parent to read there is nothing to look up: the path is null.
    assert not soql.matches(query, {"Id": ORPHAN_ID, "AccountId": None})


# --- over the wire: helpers -------------------------------------------------------------------


@pytest.fixture
def token(sf_org: StandInOrg) -> dict[str, str]:
    return sf_org.issue_token()


@pytest.fixture
def partner(sf_org: StandInOrg, token: dict[str, str]) -> Iterator[Any]:
    """A zeep client from connect(): relationship elements keep their names for fields()."""
    client = connect(make_oauth(sf_org, dict(token), []))
    yield client
    client.transport.session.close()


def soap_query(org: StandInOrg, token: dict[str, str], text: str, operation: str = "query") -> str:
    """Post a partner query by hand and return the answer's body as text (wire checks)."""
    envelope = (
        f'<soapenv:Envelope xmlns:soapenv="{SOAPENV}"><soapenv:Header>'
        f'<SessionHeader xmlns="{PARTNER_NS}"><sessionId>{token["access_token"]}</sessionId>'
        f'</SessionHeader></soapenv:Header><soapenv:Body><{operation} xmlns="{PARTNER_NS}">'
        f"<queryString>{text}</queryString></{operation}></soapenv:Body></soapenv:Envelope>"
    )
    response = requests.post(
        org.url + org.soap_path("u"),
        data=envelope.encode(),
        headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.text


def rest_query(org: StandInOrg, token: dict[str, str], text: str) -> requests.Response:
    return requests.get(
        org.url + "/services/data/v66.0/query",
        params={"q": text},
        headers={"Authorization": f"Bearer {token['access_token']}"},
        timeout=10,
    )


def account_ids(org: StandInOrg, token: dict[str, str]) -> dict[str, str]:
    response = rest_query(org, token, "SELECT Id, Name FROM Account")
    return {str(r["Name"]): str(r["Id"]) for r in response.json()["records"]}


def add_orphan(partner: Any) -> str:
    """A Contact without an Account (none is seeded: they all have one)."""
    (result,) = partner.service.create([sobject("Contact", LastName="Orphan")]).body.result
    assert result.success
    return str(result.id)


def records_of(answer: Any) -> list[dict[str, object]]:
    return [fields(record) for record in answer.body.result.records or []]


# --- partner API -----------------------------------------------------------------------------

LOVELACE = "SELECT Id, LastName, Account.Name, Account.Industry FROM Contact WHERE LastName = '%s'"


@pytest.mark.parametrize(
    "wsdl",
    [
        pytest.param(PARTNER_WSDL, id="compact"),
        pytest.param(str(REAL_PARTNER_WSDL), id="v66.0", marks=requires_reference),
    ],
)
def test_partner_relationship_fields_read_as_nested_records(
    sf_org: StandInOrg, token: dict[str, str], wsdl: str
) -> None:
    client = connect(make_oauth(sf_org, dict(token), []), wsdl)
    sf_org.expire_all_sessions()  # the relationship query goes through a refresh
    answer = client.service.query(LOVELACE % "Lovelace")
    client.transport.session.close()
    (record,) = records_of(answer)
    contact_id = record["Id"]
    assert isinstance(contact_id, str)
    assert contact_id.startswith("003")
    assert record == {
        "type": "Contact",
        "Id": contact_id,
        "LastName": "Lovelace",
        "Account": {
            "type": "Account",
            "Id": None,
            "Name": "Acme Corporation",
            "Industry": "Manufacturing",
        },
    }
    assert sf_org.token_requests == 1


def test_partner_relationship_wire_shape(
    sf_org: StandInOrg, token: dict[str, str], partner: Any
) -> None:
    body = soap_query(sf_org, token, "select lastname, ACCOUNT.name from contact limit 1")
    assert (
        '<records xsi:type="sf:sObject"><sf:type>Contact</sf:type><sf:Id xsi:nil="true"/>'
        "<sf:LastName>Lovelace</sf:LastName>"
        '<sf:Account xsi:type="sf:sObject"><sf:type>Account</sf:type><sf:Id xsi:nil="true"/>'
        "<sf:Name>Acme Corporation</sf:Name></sf:Account></records>"
    ) in body
    # The parent's Id, when selected, is written like a record's own: first, then in order.
    ids = account_ids(sf_org, token)
    with_id = soap_query(sf_org, token, "SELECT Account.Id FROM Contact LIMIT 1")
    acme = ids["Acme Corporation"]
    assert (
        f'<sf:Account xsi:type="sf:sObject"><sf:type>Account</sf:type><sf:Id>{acme}</sf:Id>'
        f"<sf:Id>{acme}</sf:Id></sf:Account>"
    ) in with_id

    orphan = add_orphan(partner)
    empty = soap_query(sf_org, token, f"SELECT Id, Account.Name FROM Contact WHERE Id = '{orphan}'")
    assert (
        f'<records xsi:type="sf:sObject"><sf:type>Contact</sf:type><sf:Id>{orphan}</sf:Id>'
        f'<sf:Id>{orphan}</sf:Id><sf:Account xsi:nil="true"/></records>'
    ) in empty


def test_partner_empty_lookup_reads_none(partner: Any) -> None:
    orphan = add_orphan(partner)
    answer = partner.service.query(
        "SELECT LastName, Account.Name FROM Contact WHERE AccountId = null"
    )
    assert records_of(answer) == [
        {"type": "Contact", "Id": None, "LastName": "Orphan", "Account": None}
    ]
    by_path = partner.service.query("SELECT Id FROM Contact WHERE Account.Name = null")
    assert [r["Id"] for r in records_of(by_path)] == [orphan]


def test_partner_where_on_a_relationship_path(
    sf_org: StandInOrg, token: dict[str, str], partner: Any
) -> None:
    initech = account_ids(sf_org, token)["Initech"]
    by_id = partner.service.query(f"SELECT LastName FROM Contact WHERE AccountId = '{initech}'")
    expected = [r["LastName"] for r in records_of(by_id)]
    assert len(expected) == 8
    by_path = partner.service.query(
        "select LastName, account.name from CONTACT where ACCOUNT.NAME = 'initech' "
        "and Account.Industry = 'Technology'"
    )
    got = records_of(by_path)
    assert [r["LastName"] for r in got] == expected
    assert {str(r["Account"]) for r in got} == {
        str({"type": "Account", "Id": None, "Name": "Initech"})
    }
    none = partner.service.query("SELECT Id FROM Contact WHERE Account.Name = 'Nobody'")
    assert (none.body.result.size, none.body.result.records) == (0, [])


def test_partner_relationships_in_query_more_batches_keep_the_query_moment(
    sf_org: StandInOrg, token: dict[str, str], partner: Any
) -> None:
    options = {"QueryOptions": {"batchSize": 10}}
    answer = partner.service.query("SELECT Id, Account.Name FROM Contact", _soapheaders=options)
    seen = records_of(answer)
    # Renaming a parent after the query does not change the batches still to come.
    acme = account_ids(sf_org, token)["Acme Corporation"]
    renamed = partner.service.update([sobject("Account", Id=acme, Name="Renamed")])
    assert renamed.body.result[0].success
    while not answer.body.result.done:
        answer = partner.service.queryMore(answer.body.result.queryLocator, _soapheaders=options)
        seen.extend(records_of(answer))
    assert len(seen) == len({r["Id"] for r in seen}) == 25
    names = [r["Account"]["Name"] for r in seen]  # type: ignore[index]
    assert names.count("Acme Corporation") == 9
    assert names.count("Renamed") == 0
    fresh = partner.service.query("SELECT Account.Name FROM Contact LIMIT 1")
    assert records_of(fresh)[0]["Account"] == {"type": "Account", "Id": None, "Name": "Renamed"}
    assert sf_org.operations["queryMore"] == 2


def test_partner_count(sf_org: StandInOrg, token: dict[str, str], partner: Any) -> None:
    answer = partner.service.query("SELECT COUNT() FROM Account").body.result
    assert (answer.done, answer.queryLocator, answer.size, answer.records) == (True, None, 3, [])
    assert (
        '<queryResponse><result xsi:type="QueryResult"><done>true</done>'
        '<queryLocator xsi:nil="true"/><size>3</size></result></queryResponse>'
    ) in soap_query(sf_org, token, "SELECT COUNT() FROM Account")

    def count(text: str, operation: str = "query") -> int:
        result = getattr(partner.service, operation)(text).body.result
        assert (result.done, result.records) == (True, [])
        return int(result.size)

    assert count("select count() from contact where account.name = 'Acme Corporation'") == 9
    assert count("SELECT COUNT() FROM Contact WHERE Account.Industry = 'Energy' LIMIT 5") == 5
    assert count("SELECT COUNT() FROM Contact LIMIT 100") == 25
    assert count("SELECT COUNT() FROM Contact WHERE LastName = 'Nobody'") == 0
    lovelace = partner.service.query("SELECT Id FROM Contact WHERE LastName = 'Lovelace'")
    deleted = partner.service.delete([lovelace.body.result.records[0].Id])
    assert deleted.body.result[0].success
    assert count("SELECT COUNT() FROM Contact") == 24
    assert count("SELECT COUNT() FROM Contact", "queryAll") == 25


@pytest.mark.parametrize(
    ("text", "code", "detail", "column", "message"),
    [
        ("SELECT Id, COUNT() FROM Account", "MALFORMED_QUERY", "MalformedQuery", 18, "unexpected"),
        (
            "SELECT COUNT(), Name FROM Account",
            "MALFORMED_QUERY",
            "MalformedQuery",
            15,
            "unexpected",
        ),
        ("SELECT COUNT(Id) FROM Account", "MALFORMED_QUERY", "MalformedQuery", 8, "only function"),
        ("SELECT Owner.Name FROM Contact", "INVALID_FIELD", "InvalidField", 8, "relationship"),
        ("SELECT Account.Nope FROM Contact", "INVALID_FIELD", "InvalidField", 8, "'Nope'"),
    ],
)
def test_partner_refusals_are_faults_with_positions(
    partner: Any, text: str, code: str, detail: str, column: int, message: str
) -> None:
    with pytest.raises(zeep.exceptions.Fault) as caught:
        partner.service.query(text)
    fault = caught.value
    assert fault.code == f"sf:{code}"
    assert message in fault.message
    assert f"ERROR at Row:1:Column:{column}\n" in fault.message
    assert fault.detail is not None
    (inner,) = list(fault.detail)
    ns = "{urn:fault.partner.soap.sforce.com}"
    assert inner.tag == f"{ns}{detail}Fault"
    assert (inner.findtext(f"{ns}row"), inner.findtext(f"{ns}column")) == ("1", str(column))


def test_enterprise_refuses_relationship_paths_and_count(
    sf_org: StandInOrg, token: dict[str, str]
) -> None:
    """The enterprise query renders flat typed records, so it does not take either."""
    client = connect(make_oauth(sf_org, dict(token), []), ENTERPRISE_WSDL)
    try:
        with pytest.raises(zeep.exceptions.Fault) as path:
            client.service.query("SELECT Id, Account.Name FROM Contact")
        assert path.value.code == "sf:INVALID_FIELD"
        assert "Didn't understand relationship 'Account'" in str(path.value.message)
        with pytest.raises(zeep.exceptions.Fault) as count:
            client.service.query("SELECT COUNT() FROM Contact")
        assert count.value.code == "sf:MALFORMED_QUERY"
        assert "ERROR at Row:1:Column:8\n" in str(count.value.message)
        flat = client.service.query("SELECT LastName FROM Contact WHERE LastName = 'Hopper'")
        assert flat.body.result.records[0].LastName == "Hopper"
    finally:
        client.transport.session.close()


# --- REST ------------------------------------------------------------------------------------


def test_rest_relationship_fields_are_nested_objects(
    sf_org: StandInOrg, token: dict[str, str]
) -> None:
    acme = account_ids(sf_org, token)["Acme Corporation"]
    response = rest_query(sf_org, token, LOVELACE % "lovelace")
    assert response.status_code == 200
    body = response.json()
    (record,) = body["records"]
    contact = record["Id"]
    assert body == {
        "totalSize": 1,
        "done": True,
        "records": [
            {
                "attributes": {
                    "type": "Contact",
                    "url": f"/services/data/v66.0/sobjects/Contact/{contact}",
                },
                "Id": contact,
                "LastName": "Lovelace",
                "Account": {
                    "attributes": {
                        "type": "Account",
                        "url": f"/services/data/v66.0/sobjects/Account/{acme}",
                    },
                    "Name": "Acme Corporation",
                    "Industry": "Manufacturing",
                },
            }
        ],
    }
    assert list(record) == ["attributes", "Id", "LastName", "Account"]


def test_rest_empty_lookup_is_null_and_where_reads_paths(
    sf_org: StandInOrg, token: dict[str, str], partner: Any
) -> None:
    orphan = add_orphan(partner)
    response = rest_query(
        sf_org, token, "SELECT LastName, account.name FROM Contact WHERE Account.Name = null"
    )
    assert response.json() == {
        "totalSize": 1,
        "done": True,
        "records": [
            {
                "attributes": {
                    "type": "Contact",
                    "url": f"/services/data/v66.0/sobjects/Contact/{orphan}",
                },
                "LastName": "Orphan",
                "Account": None,
            }
        ],
    }
    globex = rest_query(sf_org, token, "SELECT Id FROM Contact WHERE Account.Name = 'Globex Inc.'")
    assert globex.json()["totalSize"] == 8


def test_rest_count(sf_org: StandInOrg, token: dict[str, str]) -> None:
    for text, size in [
        ("SELECT COUNT() FROM Account", 3),
        ("SELECT COUNT() FROM Contact WHERE Account.Name = 'Initech'", 8),
        ("SELECT COUNT() FROM Contact LIMIT 7", 7),
    ]:
        response = rest_query(sf_org, token, text)
        assert response.status_code == 200
        assert response.json() == {"totalSize": size, "done": True, "records": []}


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        ("SELECT Id, COUNT() FROM Account", "MALFORMED_QUERY", "unexpected token: )"),
        ("SELECT MAX(Name) FROM Account", "MALFORMED_QUERY", "does not support MAX(...)"),
        ("SELECT Owner.Name FROM Contact", "INVALID_FIELD", "Didn't understand relationship"),
    ],
)
def test_rest_refusals(
    sf_org: StandInOrg, token: dict[str, str], text: str, code: str, message: str
) -> None:
    response = rest_query(sf_org, token, text)
    assert response.status_code == 400
    ((error),) = response.json()
    assert error["errorCode"] == code
    assert message in error["message"]
