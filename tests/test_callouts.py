"""Named Credential style callouts: Salesforce knowledge article 000381864, ported line by line.

The article's Apex sends a raw SOAP query through ``callout:sfa/...`` with the
``{!$Credential.OAuthToken}`` merge field, meets INVALID_SESSION_ID (HTTP 500, no refresh),
and works around it with a dummy REST call that 401s. Here the transport does the refresh for
both kinds of callout; the dummy REST call is no longer needed but works too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
from conftest import Harness
from lxml import etree
from reference import sample

from zeep_sfrefresh import (
    CircuitBreaker,
    RefreshEvent,
    SessionNotRefreshableError,
    TokenDestinationError,
)
from zeep_sfrefresh._callouts import MERGE_FIELD, rest_invalid_session
from zeep_sfrefresh.testing import StandInOrg

Build = Callable[..., Harness]

# The article's payload, verbatim but for the endpoint's merge field.
PAYLOAD = (
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:urn="urn:partner.soap.sforce.com">'
    "<soapenv:Header>"
    "<urn:SessionHeader>"
    "<urn:sessionId>{!$Credential.OAuthToken}</urn:sessionId>"
    "</urn:SessionHeader>"
    "</soapenv:Header>"
    "<soapenv:Body>"
    "<urn:query>"
    "<urn:queryString>select id from contact limit 10</urn:queryString>"
    "</urn:query>"
    "</soapenv:Body>"
    "</soapenv:Envelope>"
)


def _callout(h: Harness, method: str, url: str, **kwargs: Any) -> requests.Response:
    """transport.callout, or acallout on the loop thread for the async transport."""
    if h.mode == "sync":
        response: requests.Response = h.transport.callout(method, url, **kwargs)
        return response
    answer: requests.Response = h.client._loop.run(h.transport.acallout(method, url, **kwargs))
    return answer


def _soap_query(h: Harness, *, as_bytes: bool = False) -> requests.Response:
    # HttpRequest req = new HttpRequest();
    # req.setEndpoint('callout:sfa/services/Soap/u/37.0/00DA0000000Ah7w');
    # req.setMethod('POST');
    # req.setHeader('Content-Type','text/xml; charset=utf-8');
    # req.setHeader('SOAPAction','wewew');
    # req.setBody(payLoad);
    # HTTPResponse res = http.send(req);
    return _callout(
        h,
        "POST",
        "callout:sfa/services/Soap/u/37.0/00DA0000000Ah7w",
        data=PAYLOAD.encode() if as_bytes else PAYLOAD,
        headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": "wewew"},
    )


def _dummy_rest(h: Harness) -> requests.Response:
    # req.setEndpoint('callout:sfa/services/data/v22.0/query/?q=SELECT+id+from+contact');
    # req.setMethod('GET');
    return _callout(h, "GET", "callout:sfa/services/data/v22.0/query/?q=SELECT+id+from+contact")


def _record_count(response: requests.Response) -> int:
    root = etree.fromstring(response.content)
    return len(root.findall(".//{urn:partner.soap.sforce.com}records"))


@pytest.mark.parametrize("as_bytes", [False, True], ids=["str", "bytes"])
def test_the_articles_soap_callout_refreshes_instead_of_failing(
    harness: Build, as_bytes: bool
) -> None:
    h = harness(name="sfa")
    assert _soap_query(h, as_bytes=as_bytes).status_code == 200
    h.org.expire_all_sessions()
    res = _soap_query(h, as_bytes=as_bytes)  # the article: HTTP 500; here: refreshed, resent
    assert res.status_code == 200, res.text
    assert _record_count(res) == 10
    assert (h.org.token_requests, h.org.soap_posts) == (1, 3)
    assert h.org.sessions_seen[-1] == h.transport.token.access_token


def test_the_articles_dummy_rest_call_gets_a_bearer_header_and_refreshes_on_401(
    harness: Build,
) -> None:
    h = harness(name="sfa")
    assert _dummy_rest(h).json()["totalSize"] > 0
    h.org.expire_all_sessions()
    res = _dummy_rest(h)  # 401 INVALID_SESSION_ID, one refresh, one resend
    assert res.status_code == 200
    assert h.org.token_requests == 1
    assert h.org.rest_requests == 3
    # After the REST refresh, the SOAP callout runs with the new token at once.
    assert _soap_query(h).status_code == 200
    assert h.org.token_requests == 1


def test_the_merge_field_is_xml_escaped_and_never_left_in_the_body(harness: Build) -> None:
    h = harness(name="sfa")
    res = _soap_query(h)
    assert MERGE_FIELD not in res.text
    assert h.org.sessions_seen == [h.issued["access_token"]]


def test_a_callout_without_the_token_is_passed_through_and_never_refreshed(harness: Build) -> None:
    h = harness(name="sfa")
    h.org.expire_all_sessions()
    res = _callout(
        h, "POST", "callout:sfa/services/Soap/u/37.0", data=PAYLOAD.replace(MERGE_FIELD, "x")
    )
    assert res.status_code == 500  # the caller's own session id, untouched
    assert h.org.token_requests == 0


def test_a_callout_to_another_name_is_a_clear_error(harness: Build) -> None:
    h = harness(name="sfa")
    with pytest.raises(ValueError, match="not 'other'"):
        _callout(h, "GET", "callout:other/services/data/v22.0/")
    with pytest.raises(ValueError, match="callout:sfa/"):
        _callout(h, "GET", "https://evil.example/services/data/")
    unnamed = harness()
    with pytest.raises(ValueError, match="give the transport a name"):
        _callout(unnamed, "GET", "callout:sfa/services/data/")
    assert h.org.rest_requests == 0


def test_a_callout_never_carries_the_token_off_the_instance(harness: Build) -> None:
    h = harness(name="sfa", allowed_domains=("salesforce.com",))
    h.org.instance_url = "https://evil.example"
    h.org.expire_all_sessions()
    with pytest.raises(TokenDestinationError):
        _dummy_rest(h)
    assert h.org.rest_requests == 1  # the expired call only


def test_rest_expiry_detection_on_salesforce_captures() -> None:
    assert rest_invalid_session(401, sample("rest_401_invalid_session.json"))
    # The same code, but no new token helps: not treated as an expiry.
    assert not rest_invalid_session(401, sample("rest_401_not_valid_for_rest.json"))
    assert not rest_invalid_session(200, sample("rest_401_invalid_session.json"))
    assert not rest_invalid_session(401, b"<html>401</html>")


def test_a_userinfo_callout_gets_bearer_and_refreshes(harness: Build) -> None:
    h = harness(name="sfa")
    first = _callout(h, "GET", "callout:sfa/services/oauth2/userinfo")
    assert (first.status_code, first.json()["user_id"]) == (200, h.org.user_id)
    h.org.expire_all_sessions()
    again = _callout(h, "GET", "callout:sfa/services/oauth2/userinfo")
    assert (again.status_code, again.json()["user_id"]) == (200, h.org.user_id)
    assert (h.org.token_requests, h.org.rest_requests) == (1, 3)


def test_callouts_on_an_instance_url_with_a_trailing_slash(
    harness: Build, sf_org: StandInOrg
) -> None:
    token = sf_org.issue_token()
    h = harness(name="sfa", token={**token, "instance_url": token["instance_url"] + "/"})
    assert _dummy_rest(h).status_code == 200
    assert _soap_query(h).status_code == 200
    h.org.expire_all_sessions()
    assert _dummy_rest(h).status_code == 200
    assert _soap_query(h).status_code == 200
    assert h.org.token_requests == 1


def test_the_breaker_counts_callouts_whose_refreshed_session_is_rejected(harness: Build) -> None:
    events: list[RefreshEvent] = []
    h = harness(
        name="sfa",
        circuit_breaker=CircuitBreaker(threshold=2, cooldown=600),
        listener=events.append,
    )

    def rejected_after_refresh() -> None:
        h.org.fail_next_soap("INVALID_SESSION_ID", count=2)
        assert _soap_query(h).status_code == 500  # returned as is: a callout never raises on it

    rejected_after_refresh()
    h.org.expire_all_sessions()
    assert _soap_query(h).status_code == 200  # a refreshed session that works resets the count
    rejected_after_refresh()
    assert h.org.token_requests == 3
    assert [e.kind for e in events].count("circuit_open") == 0
    rejected_after_refresh()  # two rejected in a row: open
    assert [e.kind for e in events].count("not_refreshable") == 3
    assert [e.kind for e in events].count("circuit_open") == 1
    h.org.expire_all_sessions()
    with pytest.raises(SessionNotRefreshableError, match="circuit breaker open"):
        _soap_query(h)
    assert h.org.token_requests == 4  # none while it cools down


def test_the_wait_for_a_refresh_is_logged_without_the_session(
    harness: Build, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness(name="sfa")
    h.org.expire_all_sessions()
    caplog.set_level("DEBUG", logger="zeep_sfrefresh")
    assert _soap_query(h).status_code == 200
    host = h.org.url.removeprefix("http://")
    messages = [record.getMessage() for record in caplog.records]
    waits = [m for m in messages if "this call waits for a newer session" in m]
    assert waits == [f"INVALID_SESSION_ID from {host}; this call waits for a newer session"]
    h.assert_no_secrets(caplog.text)
