"""The transport with each of the five SOAP APIs, their compact WSDLs and Salesforce's real ones.

Every case runs with the sync and the async transport (the ``harness`` fixture). Nothing here
passes a SessionHeader: the transport must inject it in the API's own namespace (the org only
reads it there) and move the WSDL's address, whatever host it names, onto the session's
instance. The real WSDLs are parsed once per session (reference_wsdls), and every client is
built from the parsed document, so the real-WSDL cases cost no more than the compact ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import zeep.exceptions
from conftest import SOQL, Harness
from reference_wsdls import load, wsdl_params

from zeep_sfrefresh._apis import SOAP_APIS, api_for_address
from zeep_sfrefresh.testing.apis import ENTERPRISE_SOBJECT_NS

Build = Callable[..., Harness]


@dataclass(frozen=True)
class Case:
    """One representative call of an API and what its answer must show."""

    operation: str
    call: Callable[[Any], Any]
    """Makes the call on ``h.client.service`` and returns zeep's answer."""
    check: Callable[[Any], bool]


def _listed_classes(answer: Any) -> bool:
    return [item.fullName for item in answer] == [
        "HelloWorld",
        "ContactService",
        "SessionRefreshCallout",
    ]


def _ran_anonymous(answer: Any) -> bool:
    log = answer.header.DebuggingInfo.debugLog
    return bool(answer.body.result.success) and "|USER_DEBUG|[1]|DEBUG|resent" in log


CASES: dict[str, Case] = {
    "u": Case("query", lambda s: s.query(SOQL), lambda a: a.body.result.size == 10),
    "c": Case(
        "query",
        lambda s: s.query("SELECT Id, LastName FROM Contact LIMIT 5"),
        lambda a: a.body.result.size == 5 and a.body.result.records[0].LastName == "Lovelace",
    ),
    "T": Case(
        "query",
        lambda s: s.query("SELECT Id, Name FROM ApexClass"),
        lambda a: a.body.result.totalSize == 3 and a.body.result.entityTypeName == "ApexClass",
    ),
    "m": Case(
        "listMetadata", lambda s: s.listMetadata([{"type": "ApexClass"}], 66.0), _listed_classes
    ),
    "s": Case(
        "executeAnonymous", lambda s: s.executeAnonymous("System.debug('resent');"), _ran_anonymous
    ),
}

ALL_APIS = [param for code in ("u", "c", "T", "m", "s") for param in wsdl_params(code)]


@pytest.mark.parametrize(("code", "source"), ALL_APIS)
def test_calls_need_no_soapheaders(harness: Build, code: str, source: str) -> None:
    h = harness(wsdl=load(code, source))
    # The WSDL names login.salesforce.com, an org's host or localhost:8080, never the org.
    address = h.client.service._binding_options["address"]
    assert api_for_address(address) is SOAP_APIS[code]
    assert h.org.url not in address

    case = CASES[code]
    assert case.check(case.call(h.client.service))
    assert h.org.sessions_seen == [h.issued["access_token"]]
    assert h.org.soap_hosts == [h.org.url.removeprefix("http://")]
    assert h.org.operations == {case.operation: 1}
    assert h.org.token_requests == 0


@pytest.mark.parametrize(("code", "source"), ALL_APIS)
def test_expired_session_is_refreshed_once_and_resent(
    harness: Build, code: str, source: str
) -> None:
    h = harness(wsdl=load(code, source))
    case = CASES[code]
    h.org.expire_all_sessions()

    assert case.check(case.call(h.client.service))
    assert h.org.token_requests == 1
    (fresh,) = h.saved
    assert h.org.sessions_seen == [h.issued["access_token"], fresh["access_token"]]
    assert h.org.operations == {case.operation: 1}
    assert h.org.internal_errors == []


def test_enterprise_create_is_resent_once(harness: Build) -> None:
    h = harness(wsdl=SOAP_APIS["c"].wsdl)
    contact = h.client.get_type(f"{{{ENTERPRISE_SOBJECT_NS}}}Contact")
    h.org.expire_all_sessions()
    created = h.client.service.create([contact(LastName="Resent", FirstName="Only")])
    (result,) = created.body.result
    assert result.success
    assert (h.org.token_requests, h.org.soap_posts, h.org.operations["create"]) == (1, 2, 1)
    found = h.client.service.query("SELECT Id FROM Contact WHERE LastName = 'Resent'")
    assert found.body.result.size == 1


def test_user_headers_travel_with_the_injected_session(harness: Build) -> None:
    h = harness(wsdl=SOAP_APIS["s"].wsdl)
    quiet = {"DebuggingHeader": {"debugLevel": "None"}}
    h.org.expire_all_sessions()
    answer = h.client.service.executeAnonymous("System.debug('hidden');", _soapheaders=quiet)
    assert answer.body.result.success
    assert "USER_DEBUG" not in answer.header.DebuggingInfo.debugLog
    assert h.org.token_requests == 1
    assert h.org.sessions_seen[-1] == h.saved[0]["access_token"]


@pytest.mark.parametrize(
    ("code", "call", "faultcode"),
    [
        ("c", lambda s: s.query("SELECT FROM Contact"), "sf:MALFORMED_QUERY"),
        ("T", lambda s: s.query("SELECT Id FROM Contact"), "sf:INVALID_TYPE"),
        ("m", lambda s: s.listMetadata([{"type": "Widget"}], 66.0), "sf:INVALID_TYPE"),
    ],
    ids=["enterprise", "tooling", "metadata"],
)
def test_other_faults_are_not_refreshed(
    harness: Build, code: str, call: Callable[[Any], Any], faultcode: str
) -> None:
    h = harness(wsdl=SOAP_APIS[code].wsdl)
    with pytest.raises(zeep.exceptions.Fault) as raised:
        call(h.client.service)
    assert raised.value.code == faultcode
    assert (h.org.token_requests, h.org.soap_posts) == (0, 1)
