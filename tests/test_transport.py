"""The transports against the stand-in org, over real sockets: the seven behaviours.

The failure cases (other faults, dead-again sessions, timeouts, token endpoint errors,
store failures) are collected in test_fault_injection.py; concurrency in test_threads.py.
"""

from __future__ import annotations

import gc
import types
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SOQL, Harness, make_oauth

import zeep_sfrefresh
from zeep_sfrefresh import SalesforceTransport, TokenDestinationError
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


# 3. detection, 5. no resend after other failures, 7. errors: see test_fault_injection.py


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


def test_client_id_comes_from_the_session_when_refresh_kwargs_lack_it(
    harness: Build, sf_org: StandInOrg
) -> None:
    h = harness(auto_refresh_kwargs={"client_secret": sf_org.client_secret})
    h.org.expire_all_sessions()
    h.client.service.getServerTimestamp()
    assert (h.org.token_requests, h.org.token_failures) == (1, 0)


def _ours(thing: object) -> bool:
    """Whether ``thing`` is the transport's: a frame, generator or coroutine of its code, an
    instance of one of its classes, or one of its functions (bound or not); the stand-in
    org, serving in this process, is not."""
    package = Path(zeep_sfrefresh.__file__).parent
    code = getattr(thing, "f_code", None) or getattr(thing, "gi_code", None)
    code = code or getattr(thing, "cr_code", None)
    if isinstance(code, types.CodeType):
        where = Path(code.co_filename)
        return where.is_relative_to(package) and not where.is_relative_to(package / "testing")
    function = getattr(thing, "__func__", thing)
    module = function.__module__ if isinstance(function, types.FunctionType) else None
    module = module or type(thing).__module__
    return module.startswith("zeep_sfrefresh") and not module.startswith("zeep_sfrefresh.testing")


def test_calls_and_expiries_leave_no_reference_cycle_of_the_transports(harness: Build) -> None:
    # Cyclic garbage waits for the collector, whose full passes take tens of milliseconds
    # under a loaded WSDL: what the expiry path builds must be freed by reference counts.
    h = harness()
    h.client.service.query(SOQL)
    h.org.expire_all_sessions()
    h.client.service.query(SOQL)  # the first expiry builds what later ones reuse
    gc.collect()
    gc.disable()
    try:
        gc.set_debug(gc.DEBUG_SAVEALL)  # found garbage is kept in gc.garbage, to look at
        for _ in range(3):
            assert h.client.service.query(SOQL).body.result.size == 10
            h.org.expire_all_sessions()
            assert h.client.service.query(SOQL).body.result.size == 10
        gc.collect()
        found = [thing for thing in gc.garbage if _ours(thing)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert h.org.token_requests == 4
    assert found == []


# 5. resend once -----------------------------------------------------------------------------


def test_a_create_after_expiry_runs_exactly_once(harness: Build) -> None:
    h = harness()
    h.org.expire_all_sessions()
    results = h.client.service.create([h.contact("Grace")]).body.result
    assert results[0].success
    assert h.org.operations["create"] == 1
    assert h.org.soap_posts == 2


# construction ---------------------------------------------------------------------------------


def test_construction_errors_are_clear(sf_org: StandInOrg) -> None:
    saved: list[dict[str, object]] = []
    oauth = make_oauth(sf_org, sf_org.issue_token(), saved)
    with pytest.raises(TypeError, match="session="):
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
    h.assert_no_secrets(repr(h.transport) + repr(h.transport.token))


def test_debug_logs_of_the_transport_hold_no_session(
    harness: Build, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness()
    caplog.set_level("DEBUG", logger="zeep_sfrefresh")
    caplog.set_level("DEBUG", logger="zeep.transports")  # zeep's own debugging recipe
    h.org.rotation = True
    h.org.expire_all_sessions()
    h.client.service.query(SOQL)
    posts = [r for r in caplog.records if "HTTP Post to" in r.getMessage()]
    assert posts
    assert {r.name for r in posts} == {"zeep.transports"}
    h.assert_no_secrets("\n".join(record.getMessage() for record in caplog.records))
