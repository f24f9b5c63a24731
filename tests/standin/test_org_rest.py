"""The stand-in org's REST API and its https mode, over real sockets.

REST: authentication (the two 401 bodies, checked against the real captures when the
reference folder is present), query and queryAll batches with ``nextRecordsUrl`` (the
org's knob and the ``Sforce-Query-Options`` header), sObject create, read, update and
delete with Salesforce's error bodies, describe and limits, and the records REST and SOAP
share (each sees what the other wrote, and both refuse a bad record alike).

https: ``StandInOrg(tls=True)`` with its own certificate, the server's connection machinery
(handshakes off the accept loop, drops, trickles, stop()) over TLS, a zeep call and a token
refresh over https, and the real simple-salesforce package as a REST client.
"""

from __future__ import annotations

import json
import re
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import requests
from conftest import make_oauth
from reference import requires_reference, sample
from simple_salesforce.api import Salesforce, SFType
from simple_salesforce.exceptions import SalesforceResourceNotFound

from zeep_sfrefresh import connect, fields, sobject
from zeep_sfrefresh.testing import StandInOrg, allow_insecure_transport, wire
from zeep_sfrefresh.testing.data import SCHEMA
from zeep_sfrefresh.testing.rest import query_options_batch_size

pytest_plugins = ["zeep_sfrefresh.testing.pytest_plugin"]

V = "/services/data/v66.0"
LOCATOR = re.compile(r"01g[A-Za-z0-9]{15}-(\d+)")
SESSION_EXPIRED = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
NOT_VALID_FOR_REST = [
    {
        "message": "This session is not valid for use with the REST API",
        "errorCode": "INVALID_SESSION_ID",
    }
]
NOT_FOUND = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def token(sf_org: StandInOrg) -> dict[str, str]:
    return sf_org.issue_token()


class Rest:
    """``requests`` calls on one org with one bearer token."""

    def __init__(self, org: StandInOrg, access_token: str) -> None:
        self.org = org
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {access_token}"

    def __enter__(self) -> Rest:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.session.close()

    def __call__(
        self, method: str, path: str, *, json_body: Any = None, **options: Any
    ) -> requests.Response:
        url = path if path.startswith("http") else self.org.url + path
        return self.session.request(method, url, json=json_body, timeout=10, **options)

    def query(self, text: str, resource: str = "query", **options: Any) -> requests.Response:
        return self("GET", f"{V}/{resource}", params={"q": text}, **options)

    def count(self, sobject_name: str) -> int:
        body = self.query(f"SELECT COUNT() FROM {sobject_name}").json()
        return int(body["totalSize"])

    def create(self, sobject_name: str, **values: Any) -> str:
        response = self("POST", f"{V}/sobjects/{sobject_name}", json_body=values)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


@pytest.fixture
def api(sf_org: StandInOrg, token: dict[str, str]) -> Iterator[Rest]:
    client = Rest(sf_org, token["access_token"])
    yield client
    client.session.close()


@pytest.fixture
def partner(sf_org: StandInOrg, token: dict[str, str]) -> Iterator[Any]:
    """A zeep partner client on the same org and token (SOAP's view of the same records)."""
    client = connect(make_oauth(sf_org, dict(token), []))
    yield client
    client.transport.session.close()


def page_through(api: Rest, first: requests.Response) -> list[dict[str, Any]]:
    """Every batch of a query, following nextRecordsUrl; checks each batch's shape."""
    batches = [first.json()]
    while not batches[-1]["done"]:
        body = batches[-1]
        assert list(body) == ["totalSize", "done", "nextRecordsUrl", "records"]
        response = api("GET", body["nextRecordsUrl"])
        assert response.status_code == 200, response.text
        batches.append(response.json())
    assert "nextRecordsUrl" not in batches[-1]
    return batches


def soap_save_errors(partner: Any, record: Any) -> list[tuple[str, str, list[str]]]:
    (result,) = partner.service.create([record]).body.result
    assert result.success is False
    return [(e.statusCode, e.message, list(e.fields or [])) for e in result.errors]


# --- authentication --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{V}/query?q=SELECT+Id+FROM+Account"),
        ("GET", f"{V}/limits"),
        ("POST", f"{V}/sobjects/Contact"),
        ("PATCH", f"{V}/sobjects/Contact/003000000000001"),
        ("DELETE", f"{V}/sobjects/Contact/003000000000001"),
    ],
)
def test_every_resource_needs_a_live_session(
    sf_org: StandInOrg, token: dict[str, str], method: str, path: str
) -> None:
    with Rest(sf_org, token["access_token"]) as api:
        contacts = api.count("Contact")
    sf_org.expire_session(token["access_token"])
    for headers in ({}, {"Authorization": f"Bearer {token['access_token']}"}):
        response = requests.request(
            method, sf_org.url + path, headers=headers, json={"LastName": "X"}, timeout=5
        )
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Token"
        assert response.json() == SESSION_EXPIRED
    with Rest(sf_org, sf_org.issue_token()["access_token"]) as fresh:
        assert fresh.count("Contact") == contacts


def test_a_session_not_valid_for_rest(sf_org: StandInOrg, token: dict[str, str], api: Rest) -> None:
    assert api.query("SELECT Id FROM Account").status_code == 200
    sf_org.make_rest_invalid(token["access_token"])
    refused = api.query("SELECT Id FROM Account")
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == "Token"
    assert refused.json() == NOT_VALID_FOR_REST
    assert api("POST", f"{V}/sobjects/Contact", json_body={"LastName": "X"}).status_code == 401
    # The SOAP APIs and the identity side still take it; another session is not affected.
    assert sf_org.is_valid_session(token["access_token"])
    assert api("GET", "/services/oauth2/userinfo").status_code == 200
    with Rest(sf_org, sf_org.issue_token()["access_token"]) as other:
        assert other.count("Contact") == 25
    # Once expired it is the ordinary 401 again.
    sf_org.expire_session(token["access_token"])
    assert api.query("SELECT Id FROM Account").json() == SESSION_EXPIRED


def test_make_rest_invalid_needs_a_live_session(sf_org: StandInOrg, token: dict[str, str]) -> None:
    sf_org.expire_session(token["access_token"])
    with pytest.raises(KeyError) as caught:
        sf_org.make_rest_invalid(token["access_token"])
    assert token["access_token"] not in str(caught.value)


@requires_reference
def test_401_bodies_match_the_captures(
    sf_org: StandInOrg, token: dict[str, str], api: Rest
) -> None:
    sf_org.make_rest_invalid(token["access_token"])
    invalid = api.query("SELECT Id FROM Account")
    assert invalid.json() == json.loads(sample("rest_401_not_valid_for_rest.json"))
    sf_org.expire_all_sessions()
    expired = api.query("SELECT Id FROM Account")
    assert expired.json() == json.loads(sample("rest_401_invalid_session.json"))


def test_every_rest_request_is_counted(sf_org: StandInOrg, api: Rest) -> None:
    api("GET", "/services/data/")
    contact = api.create("Contact", LastName="Counted")
    api("PATCH", f"{V}/sobjects/Contact/{contact}", json_body={"FirstName": "Is"})
    api("DELETE", f"{V}/sobjects/Contact/{contact}")
    api("GET", f"{V}/sobjects/Nope")
    requests.get(sf_org.url + f"{V}/limits", timeout=5)  # refused: no token
    assert sf_org.rest_requests == 6
    assert sf_org.soap_posts == 0
    sf_org.reset_counters()
    assert sf_org.rest_requests == 0


# --- query -----------------------------------------------------------------------------------


def test_batches_follow_the_knob(sf_org: StandInOrg, api: Rest) -> None:
    everything = api.query("SELECT Id FROM Contact").json()
    assert (everything["totalSize"], everything["done"]) == (25, True)
    assert "nextRecordsUrl" not in everything

    sf_org.rest_batch_size = 10
    first = api.query("SELECT Id FROM Contact")
    assert first.headers["Content-Type"] == "application/json;charset=UTF-8"
    body = first.json()
    assert list(body) == ["totalSize", "done", "nextRecordsUrl", "records"]
    assert (body["totalSize"], body["done"], len(body["records"])) == (25, False, 10)
    assert body["nextRecordsUrl"].startswith(f"{V}/query/")
    locator = LOCATOR.fullmatch(body["nextRecordsUrl"].rsplit("/", 1)[1])
    assert locator is not None
    assert locator.group(1) == "10"
    batches = page_through(api, first)
    assert [len(batch["records"]) for batch in batches] == [10, 10, 5]
    assert {batch["totalSize"] for batch in batches} == {25}
    ids = [record["Id"] for batch in batches for record in batch["records"]]
    assert ids == [record["Id"] for record in everything["records"]]


def test_the_query_options_header_beats_the_knob(sf_org: StandInOrg, api: Rest) -> None:
    sf_org.rest_batch_size = 10
    options = {"Sforce-Query-Options": "batchSize=7"}
    first = api.query("SELECT Id FROM Contact", headers=options)
    assert len(first.json()["records"]) == 7
    # The continuation keeps the batch size the query was opened with...
    second = api("GET", first.json()["nextRecordsUrl"]).json()
    assert len(second["records"]) == 7
    assert second["nextRecordsUrl"].endswith("-14")
    # ...unless it names one itself.
    third = api("GET", second["nextRecordsUrl"], headers={"Sforce-Query-Options": "batchSize=3"})
    assert len(third.json()["records"]) == 3
    assert third.json()["nextRecordsUrl"].endswith("-17")


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("batchSize=200", 200),
        ("batchSize = 5", 5),
        ("foo=1, batchSize=9", 9),
        ("batchSize=0", 1),
        ("batchSize=99999", 2000),
        ("batchSize=many", None),
        ("", None),
        (None, None),
    ],
)
def test_query_options_batch_size(header: str | None, size: int | None) -> None:
    assert query_options_batch_size(header) == size


def test_batches_show_the_query_moment(sf_org: StandInOrg, api: Rest) -> None:
    sf_org.rest_batch_size = 20
    first = api.query("SELECT Id, LastName FROM Contact")
    api.create("Contact", LastName="Latecomer")
    rest = api("GET", first.json()["nextRecordsUrl"]).json()
    assert (rest["totalSize"], len(rest["records"])) == (25, 5)
    assert "Latecomer" not in {record["LastName"] for record in rest["records"]}
    assert api.count("Contact") == 26


def test_relationship_fields_and_count_in_batches(sf_org: StandInOrg, api: Rest) -> None:
    sf_org.rest_batch_size = 5
    first = api.query("SELECT LastName, Account.Name FROM Contact")
    batches = page_through(api, first)
    assert len(batches) == 5
    last = batches[-1]["records"][-1]
    assert list(last) == ["attributes", "LastName", "Account"]
    assert last["LastName"] == "Stroustrup"
    assert last["Account"]["attributes"]["type"] == "Account"
    assert last["Account"]["Name"] == "Acme Corporation"  # the 25th seeded contact's
    count = api.query("SELECT COUNT() FROM Contact").json()
    assert count == {"totalSize": 25, "done": True, "records": []}


def test_query_all_sees_deleted_records_and_pages_through_query(
    sf_org: StandInOrg, api: Rest
) -> None:
    contact = api.create("Contact", LastName="Binned")
    assert api("DELETE", f"{V}/sobjects/Contact/{contact}").status_code == 204
    text = f"SELECT Id, IsDeleted FROM Contact WHERE Id = '{contact}'"
    assert api.query(text).json()["totalSize"] == 0
    found = api.query(text, "queryAll").json()
    assert found["records"][0]["IsDeleted"] is True

    sf_org.rest_batch_size = 20
    first = api.query("SELECT Id FROM Contact", "queryAll").json()
    assert first["totalSize"] == 26
    # Salesforce's nextRecordsUrl says "query" for queryAll too; queryAll/<locator> works.
    assert first["nextRecordsUrl"].startswith(f"{V}/query/")
    locator = first["nextRecordsUrl"].rsplit("/", 1)[1]
    for resource in ("query", "queryAll"):
        rest = api("GET", f"{V}/{resource}/{locator}").json()
        assert [record["Id"] for record in rest["records"]][-1] == contact


@pytest.mark.parametrize("locator", ["01gNOPE-2000", "garbage", "-", "01g-x"])
def test_an_unknown_locator(api: Rest, locator: str) -> None:
    response = api("GET", f"{V}/query/{locator}")
    assert response.status_code == 400
    assert response.json() == [
        {"message": "invalid query locator", "errorCode": "INVALID_QUERY_LOCATOR"}
    ]


def test_a_locator_past_the_end(sf_org: StandInOrg, api: Rest) -> None:
    sf_org.rest_batch_size = 20
    locator = api.query("SELECT Id FROM Contact").json()["nextRecordsUrl"]
    assert api("GET", locator.replace("-20", "-26")).status_code == 400
    assert api("GET", locator.replace("-20", "-25")).json()["records"] == []


def test_a_rest_locator_continues_in_soap(sf_org: StandInOrg, api: Rest, partner: Any) -> None:
    everything = [
        r["LastName"] for r in api.query("SELECT LastName FROM Contact").json()["records"]
    ]
    sf_org.rest_batch_size = 20
    first = api.query("SELECT LastName FROM Contact").json()
    locator = first["nextRecordsUrl"].rsplit("/", 1)[1]
    more = partner.service.queryMore(locator).body.result
    assert more.done is True
    assert [fields(record)["LastName"] for record in more.records] == everything[20:]


def test_query_refusals(api: Rest) -> None:
    for response in (api("GET", f"{V}/query"), api("GET", f"{V}/query", params={"q": " "})):
        assert response.status_code == 400
        assert response.json() == [
            {"message": "A query string has to be specified", "errorCode": "MALFORMED_QUERY"}
        ]
    bad = api.query("SELECT Nope FROM Contact")
    assert bad.status_code == 400
    assert bad.json()[0]["errorCode"] == "INVALID_FIELD"
    posted = api("POST", f"{V}/query", json_body={})
    assert posted.status_code == 405
    assert posted.json() == [
        {
            "errorCode": "METHOD_NOT_ALLOWED",
            "message": "HTTP Method 'POST' not allowed. Allowed are GET,HEAD",
        }
    ]


# --- sObjects --------------------------------------------------------------------------------


def test_create_read_update_delete(api: Rest) -> None:
    acme = api.query("SELECT Id FROM Account WHERE Name = 'Acme Corporation'").json()
    acme_id = acme["records"][0]["Id"]
    created = api(
        "POST",
        f"{V}/sobjects/Contact/",  # the trailing slash simple-salesforce sends
        json_body={"FirstName": "Rosalind", "LastName": "Franklin", "AccountId": acme_id},
    )
    assert created.status_code == 201
    body = created.json()
    assert list(body) == ["id", "success", "errors"]
    assert (body["success"], body["errors"]) == (True, [])
    contact = body["id"]
    assert re.fullmatch(r"003[A-Za-z0-9]{15}", contact)

    read = api("GET", f"{V}/sobjects/Contact/{contact}")
    assert read.status_code == 200
    record = read.json()
    assert list(record) == ["attributes"] + [f.name for f in SCHEMA["contact"].fields]
    assert record["attributes"] == {"type": "Contact", "url": f"{V}/sobjects/Contact/{contact}"}
    assert (record["Id"], record["Name"], record["IsDeleted"]) == (
        contact,
        "Rosalind Franklin",
        False,
    )
    assert (record["Email"], record["AccountId"]) == (None, acme_id)

    chosen = api(
        "GET", f"{V}/sobjects/Contact/{contact}", params={"fields": "LastName,Account.Name"}
    )
    assert chosen.json() == {
        "attributes": {"type": "Contact", "url": f"{V}/sobjects/Contact/{contact}"},
        "LastName": "Franklin",
        "Account": {
            "attributes": {"type": "Account", "url": f"{V}/sobjects/Account/{acme_id}"},
            "Name": "Acme Corporation",
        },
    }

    updated = api(
        "PATCH", f"{V}/sobjects/Contact/{contact}", json_body={"FirstName": "R.", "Email": None}
    )
    assert updated.status_code == 204
    assert updated.content == b""
    assert "Content-Length" not in updated.headers
    assert "Content-Type" not in updated.headers
    assert api("GET", f"{V}/sobjects/Contact/{contact}").json()["Name"] == "R. Franklin"

    deleted = api("DELETE", f"{V}/sobjects/Contact/{contact}")
    assert deleted.status_code == 204
    assert deleted.content == b""
    gone = [{"message": "entity is deleted", "errorCode": "ENTITY_IS_DELETED", "fields": []}]
    for method in ("GET", "PATCH", "DELETE"):
        again = api(method, f"{V}/sobjects/Contact/{contact}", json_body={"FirstName": "X"})
        assert again.status_code == 404
        assert again.json() == gone


def test_keep_alive_survives_a_204(sf_org: StandInOrg, api: Rest) -> None:
    contact = api.create("Contact", LastName="Alive")
    for _ in range(3):
        assert api("PATCH", f"{V}/sobjects/Contact/{contact}", json_body={}).status_code == 204
        assert api("GET", f"{V}/sobjects/Contact/{contact}").status_code == 200
    assert sf_org.internal_errors == []


def test_read_with_a_bad_field_list(api: Rest) -> None:
    contact = api.create("Contact", LastName="Fields")
    response = api("GET", f"{V}/sobjects/Contact/{contact}", params={"fields": "LastName,Bogus"})
    assert response.status_code == 400
    (error,) = response.json()
    assert error["errorCode"] == "INVALID_FIELD"
    assert "No such column 'Bogus' on entity 'Contact'" in error["message"]
    assert "ERROR at Row:1:Column:" in error["message"]


@pytest.mark.parametrize("method", ["GET", "POST", "PATCH", "DELETE"])
def test_unknown_object_type(api: Rest, method: str) -> None:
    path = f"{V}/sobjects/Spaceship__c" + ("" if method == "POST" else "/a00000000000001")
    response = api(method, path, json_body={"Name": "Falcon"})
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_unknown_and_malformed_ids(api: Rest, method: str) -> None:
    account = api.query("SELECT Id FROM Account").json()["records"][0]["Id"]
    for record_id in ("003000000000001AAA", "003000000000001", account):  # unknown, other type
        response = api(method, f"{V}/sobjects/Contact/{record_id}", json_body={"Email": None})
        assert response.status_code == 404
        assert response.json() == NOT_FOUND
    malformed = api(method, f"{V}/sobjects/Contact/foo", json_body={"Email": None})
    assert malformed.status_code == 404
    assert malformed.json() == [
        {
            "errorCode": "NOT_FOUND",
            "message": "Provided external ID field does not exist or is not accessible: foo",
        }
    ]


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (
            {"LastName": "X", "Nope": 1},
            "INVALID_FIELD",
            "No such column 'Nope' on sobject of type Contact",
        ),
        (
            {"Id": "003000000000001AAA", "LastName": "X"},
            "INVALID_FIELD",
            "The Id field should not be specified in the sobject data.",
        ),
        ({"LastName": {"nested": 1}}, "JSON_PARSER_ERROR", "from START_OBJECT value"),
        ([{"LastName": "X"}], "JSON_PARSER_ERROR", "Cannot deserialize instance of Contact"),
    ],
)
def test_request_level_refusals(api: Rest, body: Any, code: str, message: str) -> None:
    response = api("POST", f"{V}/sobjects/Contact", json_body=body)
    assert response.status_code == 400
    (error,) = response.json()
    assert error["errorCode"] == code
    assert message in error["message"]
    assert "fields" not in error
    assert api.count("Contact") == 25


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The HTTP entity body is required, but this request has no entity body."),
        (b'{"LastName": x}', "Unexpected character ('x' (code 120))"),
        (b'{"LastName": ', "Unexpected end-of-input at [line:1, column:14]"),
    ],
)
def test_unreadable_bodies(api: Rest, data: bytes, message: str) -> None:
    for method, path in (
        ("POST", f"{V}/sobjects/Contact"),
        ("PATCH", f"{V}/sobjects/Contact/{api.create('Contact', LastName='Target')}"),
    ):
        response = api(method, path, data=data, headers={"Content-Type": "application/json"})
        assert response.status_code == 400
        (error,) = response.json()
        assert error["errorCode"] == "JSON_PARSER_ERROR"
        assert message in error["message"]


@pytest.mark.parametrize(
    ("values", "code", "fields_named"),
    [
        ({"FirstName": "Nameless"}, "REQUIRED_FIELD_MISSING", ["LastName"]),
        ({"LastName": ""}, "REQUIRED_FIELD_MISSING", ["LastName"]),
        ({"LastName": "Computed", "Name": "Set"}, "INVALID_FIELD_FOR_INSERT_UPDATE", ["Name"]),
    ],
)
def test_record_errors_agree_with_soap(
    api: Rest, partner: Any, values: dict[str, str], code: str, fields_named: list[str]
) -> None:
    response = api("POST", f"{V}/sobjects/Contact", json_body=values)
    assert response.status_code == 400
    soap = soap_save_errors(partner, sobject("Contact", **values))
    assert response.json() == wire.rest_record_errors(soap)
    assert response.json()[0]["errorCode"] == code
    assert response.json()[0]["fields"] == fields_named
    assert api.count("Contact") == 25


def test_update_refusals(api: Rest) -> None:
    contact = api.create("Contact", LastName="Steady", Email="steady@example.com")
    path = f"{V}/sobjects/Contact/{contact}"
    blank = api("PATCH", path, json_body={"LastName": None, "Email": "changed@example.com"})
    assert blank.status_code == 400
    assert blank.json() == [
        {
            "message": "Required fields are missing: [LastName]",
            "errorCode": "REQUIRED_FIELD_MISSING",
            "fields": ["LastName"],
        }
    ]
    read_only = api("PATCH", path, json_body={"IsDeleted": True})
    assert read_only.json()[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    posted = api("POST", path, json_body={})
    assert posted.status_code == 405
    assert posted.json()[0]["message"] == (
        "HTTP Method 'POST' not allowed. Allowed are GET,HEAD,PATCH,DELETE"
    )
    record = api("GET", path).json()
    assert (record["LastName"], record["Email"]) == ("Steady", "steady@example.com")


def test_scalars_become_text_and_attributes_are_ignored(api: Rest) -> None:
    contact = api.create(
        "Contact", attributes={"type": "Contact"}, LastName=1906, FirstName=True, Email=None
    )
    record = api("GET", f"{V}/sobjects/Contact/{contact}").json()
    assert (record["LastName"], record["FirstName"], record["Email"]) == ("1906", "true", None)


# --- REST and SOAP share the records -----------------------------------------------------------


def test_soap_sees_what_rest_writes(api: Rest, partner: Any) -> None:
    contact = api.create("Contact", LastName="Restful", Email="rest@example.com")
    text = f"SELECT Id, LastName, Email FROM Contact WHERE Id = '{contact}'"
    (found,) = partner.service.query(text).body.result.records
    assert fields(found)["Email"] == "rest@example.com"

    api("PATCH", f"{V}/sobjects/Contact/{contact}", json_body={"Email": "patched@example.com"})
    (retrieved,) = partner.service.retrieve("Email", "Contact", [contact]).body.result
    assert fields(retrieved)["Email"] == "patched@example.com"

    api("DELETE", f"{V}/sobjects/Contact/{contact}")
    assert partner.service.query(text).body.result.size == 0
    (undone,) = partner.service.undelete([contact]).body.result
    assert undone.success is True
    assert api("GET", f"{V}/sobjects/Contact/{contact}").status_code == 200


def test_rest_sees_what_soap_writes(api: Rest, partner: Any) -> None:
    (created,) = partner.service.create([sobject("Contact", LastName="Soapy")]).body.result
    contact = created.id
    assert api("GET", f"{V}/sobjects/Contact/{contact}").json()["LastName"] == "Soapy"
    found = api.query("SELECT Id FROM Contact WHERE LastName = 'soapy'").json()
    assert [record["Id"] for record in found["records"]] == [contact]

    partner.service.update([sobject("Contact", Id=contact, FirstName="Very")])
    assert api("GET", f"{V}/sobjects/Contact/{contact}").json()["Name"] == "Very Soapy"

    partner.service.delete([contact])
    assert api("GET", f"{V}/sobjects/Contact/{contact}").json()[0]["errorCode"] == (
        "ENTITY_IS_DELETED"
    )


# --- describe, limits, resources ---------------------------------------------------------------


def test_describe_and_object_lists(sf_org: StandInOrg, api: Rest) -> None:
    described = api("GET", f"{V}/sobjects/Contact/describe").json()
    assert described["name"] == "Contact"
    assert list(described) == sorted(described)
    assert [f["name"] for f in described["fields"]] == [f.name for f in SCHEMA["contact"].fields]
    account_id = next(f for f in described["fields"] if f["name"] == "AccountId")
    assert (account_id["referenceTo"], account_id["relationshipName"]) == (["Account"], "Account")
    last_name = next(f for f in described["fields"] if f["name"] == "LastName")
    assert (last_name["referenceTo"], last_name["relationshipName"]) == ([], None)
    assert (last_name["nillable"], last_name["createable"]) == (False, True)
    assert described["urls"]["rowTemplate"] == f"{V}/sobjects/Contact/{{ID}}"
    assert "urlDetail" not in described

    listed = api("GET", f"{V}/sobjects").json()
    assert [item["name"] for item in listed["sobjects"]] == ["Account", "Contact"]
    assert listed["maxBatchSize"] == 200
    info = api("GET", f"{V}/sobjects/Account").json()
    assert (info["objectDescribe"]["keyPrefix"], info["recentItems"]) == ("001", [])

    resources = api("GET", f"{V}/").json()
    assert resources["query"] == f"{V}/query"
    assert resources["sobjects"] == f"{V}/sobjects"
    assert api("POST", "/services/data/", json_body={}).status_code == 405
    assert api("GET", f"{V}/analytics/reports").json() == NOT_FOUND


def test_limits_count_api_requests(sf_org: StandInOrg, api: Rest, partner: Any) -> None:
    first = api("GET", f"{V}/limits")
    assert first.status_code == 200
    limits = first.json()
    assert limits["DailyApiRequests"] == {"Max": 15000, "Remaining": 14999}
    assert all(set(value) == {"Max", "Remaining"} for value in limits.values())
    assert len(limits) >= 5
    assert first.headers["Sforce-Limit-Info"] == "api-usage=1/15000"
    api.query("SELECT Id FROM Account")
    partner.service.getServerTimestamp()
    second = api("GET", f"{V}/limits")
    assert second.json()["DailyApiRequests"]["Remaining"] == 14996
    assert second.headers["Sforce-Limit-Info"] == "api-usage=4/15000"


# --- https ------------------------------------------------------------------------------------


def test_tls_org_serves_https_with_its_own_certificate(tls_org: StandInOrg) -> None:
    port = tls_org.url.rsplit(":", 1)[1]
    assert tls_org.url == f"https://127.0.0.1:{port}"
    assert tls_org.instance_url == tls_org.url
    assert tls_org.token_url.startswith("https://")
    ca_file = Path(tls_org.ca_file)
    assert ca_file.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    for url in (tls_org.url, f"https://localhost:{port}"):  # subjectAltName IP and DNS
        response = requests.get(url + "/services/data/", verify=tls_org.ca_file, timeout=5)
        assert response.status_code == 200
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(tls_org.url + "/services/data/", timeout=5)
    with pytest.raises(requests.ConnectionError):  # plain http on the https port
        requests.get(f"http://127.0.0.1:{port}/services/data/", timeout=5)
    assert requests.get(tls_org.url + "/services/data/", verify=tls_org.ca_file, timeout=5).ok
    assert tls_org.internal_errors == []
    tls_org.stop()
    assert not ca_file.parent.exists()


def test_a_failed_start_leaves_no_certificate_behind(
    tls_org: StandInOrg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    taken = int(tls_org.url.rsplit(":", 1)[1])
    with pytest.raises(OSError, match="in use"):  # EADDRINUSE
        StandInOrg(tls=True, port=taken).start()
    assert list(tmp_path.iterdir()) == []
    with StandInOrg(tls=True) as other:
        assert Path(other.ca_file).parent.parent == tmp_path


def test_ca_file_needs_a_tls_org(sf_org: StandInOrg) -> None:
    assert sf_org.url.startswith("http://")
    with pytest.raises(RuntimeError):
        _ = sf_org.ca_file


def test_a_silent_client_does_not_block_the_server(tls_org: StandInOrg) -> None:
    port = int(tls_org.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as silent:
        time.sleep(0.1)  # accepted, its handshake pending on its own thread
        started = time.monotonic()
        response = requests.get(tls_org.url + "/services/data/", verify=tls_org.ca_file, timeout=5)
        assert response.status_code == 200
        assert time.monotonic() - started < 2
        started = time.monotonic()
        tls_org.stop()  # cuts the pending handshake too
        assert time.monotonic() - started < 5
        assert silent.recv(1) == b""


def test_stop_cuts_idle_tls_keep_alive_connections(tls_org: StandInOrg) -> None:
    session = requests.Session()
    session.verify = tls_org.ca_file
    assert session.get(tls_org.url + "/services/data/", timeout=5).ok
    started = time.monotonic()
    tls_org.stop()
    assert time.monotonic() - started < 5
    session.close()


def test_drops_and_trickles_over_tls(tls_org: StandInOrg) -> None:
    token = tls_org.issue_token()
    envelope = (
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
        '<soapenv:Header><SessionHeader xmlns="urn:partner.soap.sforce.com">'
        f"<sessionId>{token['access_token']}</sessionId></SessionHeader></soapenv:Header>"
        '<soapenv:Body><getServerTimestamp xmlns="urn:partner.soap.sforce.com"/>'
        "</soapenv:Body></soapenv:Envelope>"
    ).encode()
    soap_url = tls_org.url + tls_org.soap_path()
    tls_org.drop_next_soap()
    with pytest.raises(requests.ConnectionError):
        requests.post(soap_url, data=envelope, verify=tls_org.ca_file, timeout=5)
    assert requests.post(soap_url, data=envelope, verify=tls_org.ca_file, timeout=5).ok

    tls_org.token_trickle = 0.001
    form = {
        "grant_type": "refresh_token",
        "refresh_token": token["refresh_token"],
        "client_id": tls_org.client_id,
        "client_secret": tls_org.client_secret,
    }
    trickled = requests.post(tls_org.token_url, data=form, verify=tls_org.ca_file, timeout=10)
    assert trickled.status_code == 200
    assert trickled.headers["Connection"] == "close"
    assert trickled.json()["instance_url"] == tls_org.url

    tls_org.token_trickle = 0.5  # minutes of trickling: stop() must cut it
    caught: list[BaseException] = []

    def slow_refresh() -> None:
        try:
            requests.post(tls_org.token_url, data=form, verify=tls_org.ca_file, timeout=30)
        except requests.RequestException as error:
            caught.append(error)

    caller = threading.Thread(target=slow_refresh)
    caller.start()
    time.sleep(0.3)
    started = time.monotonic()
    tls_org.stop()
    assert time.monotonic() - started < 5
    caller.join(10)
    assert not caller.is_alive()
    assert caught
    assert tls_org.internal_errors == []


def test_zeep_call_and_token_refresh_over_https(tls_org: StandInOrg) -> None:
    token = tls_org.issue_token()
    saved: list[dict[str, Any]] = []
    oauth = make_oauth(tls_org, dict(token), saved)
    oauth.verify = tls_org.ca_file  # the refresh goes through the OAuth2Session itself
    session = requests.Session()
    session.verify = tls_org.ca_file
    # The transport admits a loopback instance only under the tests' switch, https or not.
    with allow_insecure_transport():
        client = connect(oauth, session=session)
        try:
            first = client.service.query("SELECT Id FROM Account").body.result
            tls_org.expire_all_sessions()
            second = client.service.query("SELECT Id FROM Account").body.result
        finally:
            session.close()
    assert first.size == second.size == 3
    assert tls_org.token_requests == 1
    assert saved[-1]["access_token"] != token["access_token"]
    assert tls_org.is_valid_session(saved[-1]["access_token"])
    assert all(host == tls_org.url.removeprefix("https://") for host in tls_org.soap_hosts)


def test_zeep_over_https_needs_the_certificate(tls_org: StandInOrg) -> None:
    oauth = make_oauth(tls_org, tls_org.issue_token(), [])
    with allow_insecure_transport():
        client = connect(oauth)
        try:
            with pytest.raises(requests.exceptions.SSLError):
                client.service.getServerTimestamp()
        finally:
            client.transport.session.close()
    assert tls_org.soap_posts == 0


# --- simple-salesforce ------------------------------------------------------------------------


def test_simple_salesforce_against_the_tls_org(tls_org: StandInOrg) -> None:
    token = tls_org.issue_token()
    session = requests.Session()
    session.verify = tls_org.ca_file
    sf = Salesforce(instance_url=tls_org.url, session_id=token["access_token"], session=session)
    try:
        accounts = sf.query("SELECT Id FROM Account")
        assert (accounts["totalSize"], accounts["done"]) == (3, True)
        assert all(record["attributes"]["type"] == "Account" for record in accounts["records"])

        contacts = cast(SFType, sf.Contact)
        created = contacts.create({"LastName": "Simple", "Email": "simple@example.com"})
        assert created["success"] is True
        contact = created["id"]
        record = contacts.get(contact)
        assert (record["Id"], record["LastName"], record["Name"]) == (contact, "Simple", "Simple")
        assert contacts.update(contact, {"FirstName": "Very"}) == 204
        assert contacts.get(contact)["Name"] == "Very Simple"
        assert contacts.delete(contact) == 204
        with pytest.raises(SalesforceResourceNotFound) as caught:
            contacts.get(contact)
        content: object = caught.value.content  # the decoded JSON error body
        assert content == [
            {"message": "entity is deleted", "errorCode": "ENTITY_IS_DELETED", "fields": []}
        ]

        tls_org.rest_batch_size = 10
        everything = sf.query_all("SELECT Id FROM Contact")
        assert (everything["totalSize"], len(everything["records"])) == (25, 25)
        assert sf.limits()["DailyApiRequests"]["Max"] == 15000
        # Sforce-Limit-Info, as simple-salesforce reads it: every request above was an API one.
        assert tuple(sf.api_usage["api-usage"]) == (tls_org.rest_requests, 15000)
    finally:
        session.close()
    assert tls_org.internal_errors == []
