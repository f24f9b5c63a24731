"""SalesforceTransport against the stand-in org, over real sockets: the seven behaviours."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests
import zeep
from conftest import SOQL, Harness, field_values, make_oauth, sobject
from zeep.exceptions import Fault

from zeep_sfrefresh import SalesforceTransport, TokenDestinationError, TokenRefreshError
from zeep_sfrefresh.testing import StandInOrg

Build = Callable[..., Harness]
BINDING = "{urn:partner.soap.sforce.com}SoapBinding"


# 1. sessionId injection ------------------------------------------------------------------


def test_session_id_is_injected_without_soapheaders(harness: Build) -> None:
    h = harness()
    result = h.client.service.query(SOQL).body.result
    assert result.size == 10
    assert len(result.records) == 10
    assert h.org.sessions_seen == [h.issued["access_token"]]
    assert h.org.token_requests == 0


def test_a_stale_session_id_from_soapheaders_is_replaced(harness: Build) -> None:
    h = harness()
    result = h.client.service.query(
        SOQL, _soapheaders={"SessionHeader": {"sessionId": "STALE"}}
    ).body.result
    assert result.size == 10
    assert h.org.sessions_seen == [h.issued["access_token"]]
    assert h.org.token_requests == 0


# 2. routing -------------------------------------------------------------------------------


def test_wsdl_address_is_rerouted_to_instance_url(harness: Build) -> None:
    h = harness()
    service_address = h.client.service._binding_options["address"]
    assert service_address.startswith("https://login.salesforce.com/services/Soap/u/")
    h.client.service.getServerTimestamp()
    assert h.org.soap_posts == 1


def test_routing_can_be_turned_off(harness: Build, another_org: StandInOrg) -> None:
    elsewhere = another_org.url + another_org.soap_path()
    routed = harness()
    routed.client.create_service(BINDING, elsewhere).getServerTimestamp()
    assert (routed.org.soap_posts, another_org.soap_posts) == (1, 0)

    direct = harness(route_to_instance=False)
    direct.org.reset_counters()
    # Unrouted, the WSDL's address is used as is: here the token's own instance...
    direct.client.create_service(
        BINDING, direct.org.url + "/services/Soap/u/66.0"
    ).getServerTimestamp()
    assert direct.org.soap_posts == 1
    # ...but the session id never goes to any other host.
    with pytest.raises(TokenDestinationError, match="only the token's instance"):
        direct.client.create_service(BINDING, elsewhere).getServerTimestamp()
    assert (direct.org.soap_posts, another_org.soap_posts) == (1, 0)


def test_calls_follow_a_new_instance_url_after_refresh(harness: Build) -> None:
    h = harness()
    moved = h.org.url.replace("127.0.0.1", "localhost")
    h.org.instance_url = moved
    h.org.expire_all_sessions()
    h.client.service.getServerTimestamp()
    assert h.transport.token.instance_url == moved
    assert h.saved[-1]["instance_url"] == moved
    assert h.org.soap_hosts[-1] == moved.removeprefix("http://")


# 3. detection -------------------------------------------------------------------------------


def test_a_success_that_mentions_invalid_session_id_is_not_a_fault(harness: Build) -> None:
    h = harness()
    result = h.client.service.query("SELECT Id, Description FROM Contact").body.result
    descriptions = [field_values(record).get("Description") or "" for record in result.records]
    assert any("INVALID_SESSION_ID" in text for text in descriptions)
    assert h.org.token_requests == 0
    assert h.org.soap_posts == 1


@pytest.mark.parametrize(
    ("code", "prefix"),
    [
        ("INVALID_FIELD", "sf"),
        ("INVALID_LOGIN", ""),
        ("UNKNOWN_EXCEPTION", "sf"),
        ("REQUEST_LIMIT_EXCEEDED", "sf"),
    ],
)
def test_other_faults_neither_refresh_nor_resend(harness: Build, code: str, prefix: str) -> None:
    h = harness()
    h.org.fail_next_soap(code, prefix=prefix)
    with pytest.raises(Fault) as info:
        h.client.service.create([_contact(h, "Ada")])
    assert code in str(info.value.message)
    assert (h.org.soap_posts, h.org.token_requests) == (1, 0)
    assert h.org.operations["create"] == 0


def test_a_real_query_error_is_not_mistaken_for_expiry(harness: Build) -> None:
    h = harness()
    with pytest.raises(Fault, match="INVALID_FIELD"):
        h.client.service.query("SELECT INVALID_SESSION_ID FROM Contact")
    assert (h.org.soap_posts, h.org.token_requests) == (1, 0)


# 4. refresh through the OAuth2Session ------------------------------------------------------


def test_expired_session_is_refreshed_and_the_call_resent(harness: Build) -> None:
    h = harness()
    old = h.issued["access_token"]
    h.org.expire_all_sessions()
    result = h.client.service.query(SOQL).body.result
    assert result.size == 10
    new = h.transport.token.access_token
    assert new != old
    assert h.org.sessions_seen == [old, new]
    assert h.org.token_requests == 1
    assert h.oauth.token["access_token"] == new
    assert [saved["access_token"] for saved in h.saved] == [new]
    # No rotation: Salesforce returns no refresh_token, the old one is kept.
    assert h.saved[0]["refresh_token"] == h.issued["refresh_token"]
    assert h.saved[0]["instance_url"] == h.org.url
    assert "expires_in" not in h.saved[0]


def test_a_rotated_refresh_token_is_kept_and_used_next_time(harness: Build) -> None:
    h = harness()
    h.org.rotation = True
    for _ in range(3):
        h.org.expire_all_sessions()
        h.client.service.getServerTimestamp()
    assert h.org.token_requests == 3
    assert h.org.token_failures == 0
    refresh_tokens = [saved["refresh_token"] for saved in h.saved]
    assert len({*refresh_tokens, h.issued["refresh_token"]}) == 4
    assert h.oauth.token["refresh_token"] == refresh_tokens[-1]


def test_scope_change_warning_does_not_lose_the_issued_token(harness: Build) -> None:
    # oauthlib raises Warning("Scope has changed") when the answer's scope differs from the
    # session's; the token (rotated refresh token included) must survive it.
    h = harness(scope=["api"])
    h.org.rotation = True
    h.org.scope = "api refresh_token web"
    for _ in range(2):
        h.org.expire_all_sessions()
        assert h.client.service.getServerTimestamp() is not None
    assert (h.org.token_requests, h.org.token_failures) == (2, 0)
    assert len(h.saved) == 2
    assert h.saved[1]["refresh_token"] != h.saved[0]["refresh_token"]
    assert h.oauth.token["access_token"] == h.transport.token.access_token


def test_client_id_comes_from_the_session_when_refresh_kwargs_lack_it(
    harness: Build, sf_org: StandInOrg
) -> None:
    h = harness(auto_refresh_kwargs={"client_secret": sf_org.client_secret})
    h.org.expire_all_sessions()
    h.client.service.getServerTimestamp()
    assert (h.org.token_requests, h.org.token_failures) == (1, 0)


# 5. resend once -----------------------------------------------------------------------------


def test_a_session_dead_again_after_refresh_surfaces_as_fault(harness: Build) -> None:
    h = harness()
    h.org.fail_next_soap("INVALID_SESSION_ID", count=2)
    with pytest.raises(Fault, match="INVALID_SESSION_ID"):
        h.client.service.query(SOQL)
    assert (h.org.token_requests, h.org.soap_posts) == (1, 2)


def test_a_create_after_expiry_runs_exactly_once(harness: Build) -> None:
    h = harness()
    h.org.expire_all_sessions()
    results = h.client.service.create([_contact(h, "Grace")]).body.result
    assert results[0].success
    assert h.org.operations["create"] == 1
    assert h.org.soap_posts == 2


def test_no_resend_after_a_read_timeout(harness: Build) -> None:
    h = harness(operation_timeout=0.3)
    h.org.expire_all_sessions()
    h.org.soap_delay = 1.0
    with pytest.raises(h.timeout_error):
        h.client.service.create([_contact(h, "Linus")])
    assert (h.org.soap_posts, h.org.token_requests) == (1, 0)


def test_no_resend_after_a_dropped_connection(harness: Build) -> None:
    h = harness()
    h.org.drop_next_soap()
    with pytest.raises(h.connection_error):
        h.client.service.create([_contact(h, "Barbara")])
    assert (h.org.soap_posts, h.org.token_requests) == (1, 0)
    assert h.org.operations["create"] == 0


def test_no_resend_when_the_resend_connection_drops(harness: Build) -> None:
    h = harness()
    h.org.expire_all_sessions()
    h.org.fail_next_soap("INVALID_SESSION_ID")
    h.org.drop_next_soap()  # queued after the fault: hits the resend
    with pytest.raises(h.connection_error):
        h.client.service.create([_contact(h, "Edsger")])
    assert (h.org.soap_posts, h.org.token_requests) == (2, 1)


# 7. errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "error"),
    [("invalid_grant", "invalid_grant"), ("html_500", None), ("garbage_200", None), ("drop", None)],
)
def test_failed_refresh_raises_token_refresh_error_without_resend(
    harness: Build, failure: str, error: str | None
) -> None:
    h = harness()
    h.org.expire_all_sessions()
    h.org.token_failure = failure
    with pytest.raises(TokenRefreshError) as info:
        h.client.service.create([_contact(h, "Alan")])
    exc = info.value
    assert isinstance(exc, zeep.exceptions.Error)
    assert exc.error == error
    if error == "invalid_grant":
        assert exc.description == "expired access/refresh token"
    assert exc.__cause__ is not None
    assert (h.org.soap_posts, h.org.token_requests) == (1, 1)
    assert h.org.operations["create"] == 0
    assert h.saved == []
    _assert_no_secrets(h, str(exc) + repr(exc) + str(exc.__cause__) + repr(exc.__cause__))


def test_token_request_timeout_is_bounded(harness: Build) -> None:
    h = harness(token_timeout=0.3)
    h.org.expire_all_sessions()
    h.org.token_delay = 2.0
    with pytest.raises(TokenRefreshError, match="timed out") as info:
        h.client.service.getServerTimestamp()
    assert isinstance(info.value.__cause__, requests.Timeout)
    assert h.org.soap_posts == 1


def test_refused_token_connection(harness: Build) -> None:
    with StandInOrg() as gone:
        dead_url = gone.token_url
    h = harness(token_url=dead_url)
    h.org.expire_all_sessions()
    with pytest.raises(TokenRefreshError, match="ConnectionError") as info:
        h.client.service.getServerTimestamp()
    assert isinstance(info.value.__cause__, requests.ConnectionError)
    assert h.org.soap_posts == 1


def test_a_token_without_refresh_token_fails_without_a_request(
    harness: Build, sf_org: StandInOrg
) -> None:
    token = sf_org.issue_token()
    del token["refresh_token"]
    h = harness(token=token)
    h.org.expire_all_sessions()
    with pytest.raises(TokenRefreshError, match="no refresh_token"):
        h.client.service.getServerTimestamp()
    assert (h.org.token_requests, h.org.soap_posts) == (0, 1)


def test_after_a_failed_refresh_a_later_call_tries_again(harness: Build) -> None:
    h = harness()
    h.org.expire_all_sessions()
    h.org.token_failure = "html_500"
    with pytest.raises(TokenRefreshError):
        h.client.service.getServerTimestamp()
    h.org.token_failure = None
    assert h.client.service.getServerTimestamp() is not None
    assert h.org.token_requests == 2
    assert len(h.saved) == 1


# construction ---------------------------------------------------------------------------------


def test_construction_errors_are_clear(sf_org: StandInOrg) -> None:
    saved: list[dict[str, object]] = []
    oauth = make_oauth(sf_org, sf_org.issue_token(), saved)
    with pytest.raises(ValueError, match="session="):
        SalesforceTransport(oauth, session=oauth)
    no_url = make_oauth(sf_org, sf_org.issue_token(), saved)
    no_url.auto_refresh_url = None
    with pytest.raises(ValueError, match="auto_refresh_url"):
        SalesforceTransport(no_url)
    empty = make_oauth(sf_org, {}, saved)
    with pytest.raises(ValueError, match="no token"):
        SalesforceTransport(empty)
    token = sf_org.issue_token()
    del token["instance_url"]
    for route in (True, False):
        with pytest.raises(ValueError, match="instance_url"):
            SalesforceTransport(make_oauth(sf_org, token, saved), route_to_instance=route)


def test_repr_holds_no_secret(harness: Build) -> None:
    h = harness()
    h.org.rotation = True
    h.org.expire_all_sessions()
    h.client.service.getServerTimestamp()
    _assert_no_secrets(h, repr(h.transport) + repr(h.transport.token))


def test_debug_logs_of_the_transport_hold_no_session(
    harness: Build, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness()
    caplog.set_level("DEBUG", logger="zeep_sfrefresh")
    h.org.rotation = True
    h.org.expire_all_sessions()
    h.client.service.query(SOQL)
    assert any("HTTP Post to" in record.getMessage() for record in caplog.records)
    _assert_no_secrets(h, "\n".join(record.getMessage() for record in caplog.records))


def _contact(h: Harness, last_name: str) -> object:
    return sobject(h.client, "Contact", LastName=last_name)


def _assert_no_secrets(h: Harness, text: str) -> None:
    secrets = [h.issued["access_token"], h.issued["refresh_token"], h.org.client_secret]
    secrets += [t["access_token"] for t in h.saved] + [t.get("refresh_token", "") for t in h.saved]
    for secret in filter(None, secrets):
        assert secret not in text
