"""Tests of the stand-in Salesforce org itself, over real sockets.

The transport's tests trust the org to behave like Salesforce; these tests are what earns that
trust: token endpoint answers and failures, fault shapes per SOAP API (checked against the real
captures when the reference folder is present), partner operations through zeep with both the
compact and the real partner WSDL, REST, counters, and the server's own hygiene (keep-alive,
quiet logs, stop() never hanging, no DTDs).
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import hashlib
import hmac
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

import pytest
import requests
import zeep
import zeep.exceptions
from conftest import field_values, wait_for
from lxml import etree
from oauthlib.oauth2.rfc6749.errors import InsecureTransportError
from reference import REAL_PARTNER_WSDL, requires_reference, sample
from requests_oauthlib import OAuth2Session

from zeep_sfrefresh import PARTNER_WSDL, SOAP_APIS
from zeep_sfrefresh.testing import StandInOrg, allow_insecure_transport, soql, wire
from zeep_sfrefresh.testing.data import TRAP_DESCRIPTION, to_18

pytest_plugins = ["zeep_sfrefresh.testing.pytest_plugin"]

SOAPENV = "http://schemas.xmlsoap.org/soap/envelope/"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
PARTNER = "urn:partner.soap.sforce.com"
SOBJECT = "urn:sobject.partner.soap.sforce.com"
BINDING = "{urn:partner.soap.sforce.com}SoapBinding"
FAULT_NS = {
    "u": "urn:fault.partner.soap.sforce.com",
    "c": "urn:fault.enterprise.soap.sforce.com",
    "T": "urn:fault.tooling.soap.sforce.com",
    "m": "http://soap.sforce.com/2006/04/metadata",
    "s": "http://soap.sforce.com/2006/08/apex",
}
SAFE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)

new_client = cast(Callable[..., Any], zeep.Client)
"""zeep.Client, typed loosely: zeep ships py.typed but leaves its API unannotated."""


# --- helpers ---------------------------------------------------------------------------------


def soap_envelope(
    namespace: str, operation: str, session_id: str | None, children: str = ""
) -> bytes:
    header = ""
    if session_id is not None:
        header = (
            f'<soapenv:Header><SessionHeader xmlns="{namespace}">'
            f"<sessionId>{session_id}</sessionId></SessionHeader></soapenv:Header>"
        )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{SOAPENV}">'
        f'{header}<soapenv:Body><{operation} xmlns="{namespace}">{children}</{operation}>'
        "</soapenv:Body></soapenv:Envelope>"
    ).encode()


def post_soap(
    org: StandInOrg,
    code: str,
    operation: str,
    session_id: str | None,
    children: str = "",
    timeout: float = 10,
) -> requests.Response:
    namespace = wire.FLAVOURS[code].namespace
    return requests.post(
        org.url + org.soap_path(code),
        data=soap_envelope(namespace, operation, session_id, children),
        headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'},
        timeout=timeout,
    )


def parse(body: bytes) -> etree._Element:
    return etree.fromstring(body, SAFE_PARSER)


def fault_parts(response: requests.Response) -> dict[str, Any]:
    root = parse(response.content)
    fault = root.find(f"{{{SOAPENV}}}Body/{{{SOAPENV}}}Fault")
    assert fault is not None, response.text
    detail = fault.find("detail")
    return {
        "faultcode": fault.findtext("faultcode"),
        "faultstring": fault.findtext("faultstring"),
        "sf": root.nsmap.get("sf"),
        "detail": detail,
    }


def refresh(org: StandInOrg, refresh_token: str, /, **overrides: str) -> requests.Response:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": org.client_id,
        "client_secret": org.client_secret,
        **overrides,
    }
    return requests.post(org.token_url, data=form, timeout=10)


def shape(element: etree._Element) -> tuple[Any, ...]:
    """An element tree without formatting whitespace: (tag, attributes, text, children)."""
    text = (element.text or "").strip()
    return (
        element.tag,
        dict(element.attrib),
        text,
        tuple(shape(child) for child in element if isinstance(child.tag, str)),
    )


def sobject_field(name: str, value: str) -> etree._Element:
    element = etree.Element(f"{{{SOBJECT}}}{name}")
    element.text = value
    return element


@pytest.fixture(scope="module")
def compact_client() -> Any:
    return new_client(PARTNER_WSDL, settings=zeep.Settings(forbid_dtd=True))


@pytest.fixture
def token(sf_org: StandInOrg) -> dict[str, str]:
    return sf_org.issue_token()


@pytest.fixture
def partner(sf_org: StandInOrg, compact_client: Any) -> Any:
    return compact_client.create_service(BINDING, sf_org.url + sf_org.soap_path())


def session_header(token: dict[str, str]) -> dict[str, Any]:
    return {"SessionHeader": {"sessionId": token["access_token"]}}


# --- lifecycle, addresses, hygiene -----------------------------------------------------------


def test_addresses_and_ids(sf_org: StandInOrg) -> None:
    assert sf_org.url.startswith("http://127.0.0.1:")
    assert sf_org.token_url == sf_org.url + "/services/oauth2/token"
    assert sf_org.api_version == "66.0"
    assert sf_org.soap_path() == f"/services/Soap/u/66.0/{sf_org.org_id}"
    assert sf_org.soap_path("T") == f"/services/Soap/T/66.0/{sf_org.org_id}"
    assert len(sf_org.org_id) == 18
    assert sf_org.org_id.startswith("00D")
    assert sf_org.org_id == to_18(sf_org.org_id[:15])
    assert sf_org.user_id.startswith("005")


def test_to_18_matches_salesforce() -> None:
    assert to_18("001A0000006Vm9r") == "001A0000006Vm9rIAC"
    assert to_18("003000000000001") == "003000000000001AAA"


def test_start_stop_and_context_manager() -> None:
    org = StandInOrg()
    with pytest.raises(RuntimeError):
        _ = org.url
    assert "not started" in repr(org)
    org.start()
    url = org.url
    assert requests.get(url + "/services/data/", timeout=5).status_code == 200
    org.stop()
    org.stop()  # idempotent
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/services/data/", timeout=5)
    with pytest.raises(RuntimeError):
        org.start()


def test_repr_shows_no_secrets(sf_org: StandInOrg, token: dict[str, str]) -> None:
    refresh(sf_org, token["refresh_token"])
    text = repr(sf_org)
    assert sf_org.url in text
    assert "token_requests=1" in text
    for secret in (token["access_token"], token["refresh_token"], sf_org.client_secret):
        assert secret not in text


def test_keep_alive_serves_several_requests_on_one_connection(sf_org: StandInOrg) -> None:
    host, port = sf_org.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        for _ in range(3):
            connection.request("GET", "/services/data/")
            response = connection.getresponse()
            assert response.status == 200
            assert response.getheader("Content-Length") is not None
            assert json.loads(response.read())
        assert connection.sock is not None  # still the same open socket
    finally:
        connection.close()


def test_stop_does_not_hang_on_delays_or_idle_connections() -> None:
    org = StandInOrg().start()
    org.token_delay = 30
    org.soap_delay = 30
    session = requests.Session()
    session.get(org.url + "/services/data/", timeout=5)  # leaves an idle keep-alive connection
    errors: list[BaseException] = []

    def slow_call() -> None:
        try:
            requests.post(org.token_url, data={"grant_type": "refresh_token"}, timeout=60)
        except requests.RequestException as error:
            errors.append(error)

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.2)
    started = time.monotonic()
    org.stop()
    assert time.monotonic() - started < 5
    caller.join(10)
    assert not caller.is_alive()
    assert errors  # the waiting request was cut, not answered
    session.close()


def test_org_is_quiet_on_stderr(
    sf_org: StandInOrg, token: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    refresh(sf_org, token["refresh_token"])
    post_soap(sf_org, "u", "getServerTimestamp", "bogus")
    sf_org.drop_next_soap()
    with pytest.raises(requests.ConnectionError):
        post_soap(sf_org, "u", "getServerTimestamp", token["access_token"])
    requests.get(sf_org.url + "/nowhere", timeout=5)
    out, err = capfd.readouterr()
    assert out == ""
    assert err == ""
    assert sf_org.internal_errors == []


def test_testing_package_does_not_import_pytest() -> None:
    code = (
        "import sys, zeep_sfrefresh.testing as t; "
        "assert 'pytest' not in sys.modules, 'pytest imported'; print(t.__all__)"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "['StandInOrg', 'allow_insecure_transport']" in result.stdout


def test_wire_flavours_agree_with_the_library_table() -> None:
    assert set(wire.FLAVOURS) == set(SOAP_APIS)
    for code, api in SOAP_APIS.items():
        assert wire.FLAVOURS[code].namespace == api.namespace
        assert wire.FLAVOURS[code].fault_namespace == FAULT_NS[code]


# --- allow_insecure_transport and the pytest plugin ------------------------------------------


def test_allow_insecure_transport_restores_previous_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OAUTHLIB_INSECURE_TRANSPORT", raising=False)
    with allow_insecure_transport():
        assert os.environ["OAUTHLIB_INSECURE_TRANSPORT"] == "1"
    assert "OAUTHLIB_INSECURE_TRANSPORT" not in os.environ
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "keep-me")
    with allow_insecure_transport():
        assert os.environ["OAUTHLIB_INSECURE_TRANSPORT"] == "1"
    assert os.environ["OAUTHLIB_INSECURE_TRANSPORT"] == "keep-me"


def test_sf_org_fixture_is_started_and_allows_http(sf_org: StandInOrg) -> None:
    assert os.environ.get("OAUTHLIB_INSECURE_TRANSPORT") == "1"
    assert requests.get(sf_org.url + "/services/data/", timeout=5).ok


# --- token endpoint --------------------------------------------------------------------------


def test_issue_token_looks_like_the_authorization_code_answer(sf_org: StandInOrg) -> None:
    token = sf_org.issue_token()
    assert set(token) == {
        "access_token",
        "refresh_token",
        "signature",
        "scope",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
    }
    assert token["instance_url"] == sf_org.url
    assert token["token_type"] == "Bearer"
    assert sf_org.is_valid_session(token["access_token"])
    assert sf_org.token_requests == 0  # issuing is not a request to the endpoint


def test_refresh_success(sf_org: StandInOrg, token: dict[str, str]) -> None:
    before_ms = int(time.time() * 1000)
    response = refresh(sf_org, token["refresh_token"])
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert response.headers["Cache-Control"] == "no-cache,no-store"
    body = response.json()
    assert set(body) == {
        "access_token",
        "signature",
        "scope",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
    }
    assert "expires_in" not in body
    assert "refresh_token" not in body
    assert body["access_token"].startswith(sf_org.org_id[:15] + "!")
    assert body["access_token"] != token["access_token"]
    assert body["instance_url"] == sf_org.url
    assert body["id"] == f"{sf_org.url}/id/{sf_org.org_id}/{sf_org.user_id}"
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "api refresh_token"
    assert body["issued_at"].isdigit()
    assert before_ms - 1000 <= int(body["issued_at"]) <= int(time.time() * 1000) + 1000
    expected = hmac.new(
        sf_org.client_secret.encode(), (body["id"] + body["issued_at"]).encode(), hashlib.sha256
    ).digest()
    assert base64.b64decode(body["signature"]) == expected
    assert sf_org.is_valid_session(body["access_token"])
    assert sf_org.is_valid_session(token["access_token"])  # refreshing does not revoke
    assert (sf_org.token_requests, sf_org.token_failures) == (1, 0)


@requires_reference
def test_refresh_answer_has_the_documented_fields(
    sf_org: StandInOrg, token: dict[str, str]
) -> None:
    documented = json.loads(sample("oauth_refresh_success_docs.json"))
    body = refresh(sf_org, token["refresh_token"]).json()
    assert set(body) == set(documented)


def test_token_failure_rejects_unknown_modes(sf_org: StandInOrg) -> None:
    with pytest.raises(ValueError, match="token_failure"):
        sf_org.token_failure = "timeout"
    assert sf_org.token_failure is None


def test_instance_url_can_move(sf_org: StandInOrg, token: dict[str, str]) -> None:
    moved = sf_org.url.replace("127.0.0.1", "localhost")
    assert token["instance_url"] == sf_org.instance_url == sf_org.url
    sf_org.instance_url = moved
    assert refresh(sf_org, token["refresh_token"]).json()["instance_url"] == moved
    fresh = sf_org.issue_token()
    assert fresh["instance_url"] == moved
    response = requests.post(
        moved + sf_org.soap_path(),
        data=soap_envelope(PARTNER, "getServerTimestamp", fresh["access_token"]),
        timeout=5,
    )
    assert response.status_code == 200
    assert sf_org.soap_hosts == [moved.removeprefix("http://")]
    sf_org.instance_url = None
    assert sf_org.instance_url == sf_org.url


def test_hold_token_requests(sf_org: StandInOrg, token: dict[str, str]) -> None:
    release = sf_org.hold_token_requests()
    answers: list[int] = []
    caller = threading.Thread(
        target=lambda: answers.append(refresh(sf_org, token["refresh_token"]).status_code)
    )
    caller.start()
    deadline = time.monotonic() + 5
    while sf_org.token_requests < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert sf_org.token_requests == 1
    assert answers == []  # counted, but held
    release.set()
    caller.join(5)
    assert answers == [200]
    assert refresh(sf_org, token["refresh_token"]).status_code == 200  # released for good


def test_scope_knob(sf_org: StandInOrg, token: dict[str, str]) -> None:
    sf_org.scope = "id api refresh_token"
    assert refresh(sf_org, token["refresh_token"]).json()["scope"] == "id api refresh_token"


def test_refresh_without_rotation_keeps_the_refresh_token_usable(
    sf_org: StandInOrg, token: dict[str, str]
) -> None:
    for _ in range(2):
        assert refresh(sf_org, token["refresh_token"]).status_code == 200


def test_rotation_issues_a_new_refresh_token_and_retires_the_old(
    sf_org: StandInOrg, token: dict[str, str]
) -> None:
    sf_org.rotation = True
    rt0 = token["refresh_token"]
    assert sf_org.refresh_token_state(rt0) == "active"
    first = refresh(sf_org, rt0).json()
    rt1 = first["refresh_token"]
    assert rt1 != rt0
    assert (sf_org.refresh_token_state(rt0), sf_org.refresh_token_state(rt1)) == (
        "retired",
        "active",
    )
    second = refresh(sf_org, rt1)
    assert second.status_code == 200
    rt2 = second.json()["refresh_token"]
    assert rt2 not in (rt0, rt1)
    assert [sf_org.refresh_token_state(rt) for rt in (rt0, rt1, rt2)] == [
        "retired",
        "retired",
        "active",
    ]
    # Rotation alone revokes no session.
    for access_token in (token["access_token"], first["access_token"]):
        assert sf_org.is_valid_session(access_token)
    assert sf_org.refresh_token_state("5Aep861unknown") == "unknown"
    assert (sf_org.token_requests, sf_org.token_failures, sf_org.family_revocations) == (2, 0, 0)


def test_reusing_a_retired_refresh_token_revokes_its_family(sf_org: StandInOrg) -> None:
    sf_org.rotation = True
    issued, other = sf_org.issue_token(), sf_org.issue_token()
    rt0 = issued["refresh_token"]
    first = refresh(sf_org, rt0).json()
    second = refresh(sf_org, first["refresh_token"]).json()
    rt2 = second["refresh_token"]
    assert sf_org.is_valid_session(second["access_token"])

    reused = refresh(sf_org, rt0)
    assert reused.status_code == 400
    assert reused.json() == {
        "error": "invalid_grant",
        "error_description": "expired access/refresh token",
    }
    assert sf_org.family_revocations == 1
    for rt in (rt0, first["refresh_token"], rt2):
        assert sf_org.refresh_token_state(rt) == "revoked"
    latest = refresh(sf_org, rt2)
    assert latest.status_code == 400
    assert latest.json()["error"] == "invalid_grant"
    for access_token in (issued["access_token"], first["access_token"], second["access_token"]):
        assert not sf_org.is_valid_session(access_token)
        response = post_soap(sf_org, "u", "getServerTimestamp", access_token)
        assert response.status_code == 500
        assert fault_parts(response)["faultcode"] == "sf:INVALID_SESSION_ID"
    # Presenting a revoked token again is refused without a second revocation.
    assert refresh(sf_org, rt0).status_code == 400
    assert sf_org.family_revocations == 1

    # The other family is untouched.
    assert sf_org.refresh_token_state(other["refresh_token"]) == "active"
    assert post_soap(sf_org, "u", "getServerTimestamp", other["access_token"]).status_code == 200
    renewed = refresh(sf_org, other["refresh_token"])
    assert renewed.status_code == 200
    assert sf_org.refresh_token_state(renewed.json()["refresh_token"]) == "active"
    assert (sf_org.token_requests, sf_org.token_failures) == (6, 3)
    text = repr(sf_org)
    assert "family_revocations=1" in text
    for secret in (rt0, rt2, first["refresh_token"], second["access_token"]):
        assert secret not in text


def _refresh_in_threads(
    org: StandInOrg, refresh_tokens: list[str]
) -> tuple[list[threading.Thread], list[requests.Response]]:
    """Start one refresh per refresh token, all at once; answers are appended as they come."""
    answers: list[requests.Response] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(refresh_tokens))

    def caller(refresh_token: str) -> None:
        barrier.wait()
        response = refresh(org, refresh_token)
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=caller, args=(rt,)) for rt in refresh_tokens]
    for thread in threads:
        thread.start()
    return threads, answers


def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)


@pytest.mark.parametrize("rotation", [False, True])
def test_overlapping_refreshes_are_rejected(
    sf_org: StandInOrg, token: dict[str, str], rotation: bool
) -> None:
    sf_org.rotation = rotation
    rt0 = token["refresh_token"]
    release = sf_org.hold_token_requests()
    threads, answers = _refresh_in_threads(sf_org, [rt0, rt0])
    wait_for(lambda: sf_org.token_requests == 2)
    # The overlapping one is refused at once; the first is still held.
    wait_for(lambda: len(answers) == 1)
    (rejected,) = answers
    assert rejected.status_code == 400
    assert rejected.json() == {
        "error": "invalid_grant",
        "error_description": "Token request is already being processed",
    }
    assert sf_org.overlap_rejections == 1
    assert sf_org.refresh_token_state(rt0) == "active"  # the refusal touched nothing
    release.set()
    _join(threads)
    assert [answer.status_code for answer in answers] == [400, 200]
    body = answers[1].json()
    assert sf_org.is_valid_session(body["access_token"])
    assert (sf_org.token_requests, sf_org.token_failures) == (2, 1)
    assert (sf_org.overlap_rejections, sf_org.family_revocations) == (1, 0)
    if rotation:
        # The first request's rotation happened; the old token is retired, not revoked.
        assert sf_org.refresh_token_state(rt0) == "retired"
        assert sf_org.refresh_token_state(body["refresh_token"]) == "active"
        assert refresh(sf_org, body["refresh_token"]).status_code == 200
    else:
        assert "refresh_token" not in body
        assert sf_org.refresh_token_state(rt0) == "active"
        assert refresh(sf_org, rt0).status_code == 200  # the in-flight mark is gone


def test_overlap_processed_in_turn_when_allowed_makes_rotation_revoke(
    sf_org: StandInOrg, token: dict[str, str]
) -> None:
    # Why overlap matters: two holders of one rotating refresh token both refreshing means
    # the later one presents a retired token, and the whole family is revoked.
    sf_org.rotation = True
    sf_org.reject_overlapping_refreshes = False
    rt0 = token["refresh_token"]
    release = sf_org.hold_token_requests()
    threads, answers = _refresh_in_threads(sf_org, [rt0, rt0])
    wait_for(lambda: sf_org.token_requests == 2)
    time.sleep(0.1)
    assert answers == []  # both held
    release.set()
    _join(threads)
    assert sorted(answer.status_code for answer in answers) == [200, 400]
    won = next(answer for answer in answers if answer.status_code == 200).json()
    lost = next(answer for answer in answers if answer.status_code == 400).json()
    assert lost == {"error": "invalid_grant", "error_description": "expired access/refresh token"}
    assert (sf_org.overlap_rejections, sf_org.family_revocations) == (0, 1)
    assert sf_org.refresh_token_state(won["refresh_token"]) == "revoked"
    assert not sf_org.is_valid_session(won["access_token"])
    assert not sf_org.is_valid_session(token["access_token"])


def test_overlap_description_knob_and_counter_reset(sf_org: StandInOrg) -> None:
    sf_org.overlap_description = "expired authorization code"
    sf_org.rotation = True
    mine, theirs = sf_org.issue_token(), sf_org.issue_token()
    release = sf_org.hold_token_requests()
    threads, answers = _refresh_in_threads(sf_org, [mine["refresh_token"], theirs["refresh_token"]])
    wait_for(lambda: sf_org.token_requests == 2)
    overlapping = refresh(sf_org, mine["refresh_token"])
    assert overlapping.status_code == 400
    assert overlapping.json() == {
        "error": "invalid_grant",
        "error_description": "expired authorization code",
    }
    assert answers == []  # different refresh tokens do not overlap each other: both held
    release.set()
    _join(threads)
    assert [answer.status_code for answer in answers] == [200, 200]
    refresh(sf_org, mine["refresh_token"])  # now a reuse: revokes that family
    assert (sf_org.overlap_rejections, sf_org.family_revocations) == (1, 1)
    assert "overlap_rejections=1" in repr(sf_org)
    sf_org.reset_counters()
    assert (sf_org.overlap_rejections, sf_org.family_revocations) == (0, 0)
    assert (sf_org.token_requests, sf_org.token_failures) == (0, 0)
    assert sf_org.refresh_token_state(mine["refresh_token"]) == "revoked"  # state stays


@pytest.mark.parametrize("ending", ["drop", "html_500", "delay_timeout"])
def test_in_flight_mark_is_cleared_however_the_request_ends(
    sf_org: StandInOrg, token: dict[str, str], ending: str
) -> None:
    rt0 = token["refresh_token"]
    if ending == "delay_timeout":
        sf_org.token_delay = 0.5
        with pytest.raises(requests.Timeout):
            requests.post(
                sf_org.token_url,
                data={"grant_type": "refresh_token", "refresh_token": rt0},
                timeout=0.1,
            )
        # Still being processed although the client gave up: a retry overlaps it.
        assert refresh(sf_org, rt0).json()["error_description"] == (
            "Token request is already being processed"
        )
        time.sleep(0.6)
        sf_org.token_delay = 0
    else:
        sf_org.token_failure = ending
        with contextlib.suppress(requests.ConnectionError):
            refresh(sf_org, rt0)
        sf_org.token_failure = None
    assert refresh(sf_org, rt0).status_code == 200


def test_stop_drops_a_held_refresh_and_clears_its_mark() -> None:
    org = StandInOrg().start()
    token = org.issue_token()
    org.hold_token_requests()
    outcomes: list[object] = []

    def held() -> None:
        try:
            outcomes.append(refresh(org, token["refresh_token"]))
        except requests.ConnectionError as error:
            outcomes.append(error)

    caller = threading.Thread(target=held)
    caller.start()
    wait_for(lambda: org.token_requests == 1)
    org.stop()
    _join([caller])
    assert len(outcomes) == 1
    assert isinstance(outcomes[0], requests.ConnectionError)  # dropped, not answered
    assert org.refresh_token_state(token["refresh_token"]) == "active"
    # The dropped request no longer counts as in flight: the same token is not refused as
    # overlapping (the stopped org drops it instead).
    body = f"grant_type=refresh_token&refresh_token={token['refresh_token']}".encode()
    assert org.handle_token_request(body, None).drop
    assert org.overlap_rejections == 0


def test_client_credentials_by_basic_auth(sf_org: StandInOrg, token: dict[str, str]) -> None:
    form = {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}
    good = requests.post(
        sf_org.token_url, data=form, auth=(sf_org.client_id, sf_org.client_secret), timeout=10
    )
    assert good.status_code == 200, good.text
    bad = requests.post(sf_org.token_url, data=form, auth=(sf_org.client_id, "nope"), timeout=10)
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    ("overrides", "error", "description"),
    [
        ({"client_id": "someone-else"}, "invalid_client_id", "client identifier invalid"),
        ({"client_secret": "wrong"}, "invalid_client", "invalid client credentials"),
        ({"refresh_token": "5Aep861unknown"}, "invalid_grant", "expired access/refresh token"),
        ({"grant_type": "implicit"}, "unsupported_grant_type", "grant type not supported"),
        ({"grant_type": ""}, "unsupported_grant_type", "grant type not supported"),
    ],
)
def test_token_errors(
    sf_org: StandInOrg,
    token: dict[str, str],
    overrides: dict[str, str],
    error: str,
    description: str,
) -> None:
    response = refresh(sf_org, token["refresh_token"], **overrides)
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert response.json() == {"error": error, "error_description": description}
    assert (sf_org.token_requests, sf_org.token_failures) == (1, 1)


@requires_reference
def test_invalid_grant_body_matches_the_capture(sf_org: StandInOrg) -> None:
    response = refresh(sf_org, "unknown")
    assert response.json() == json.loads(sample("oauth_invalid_grant.json"))


def test_failure_mode_invalid_grant(sf_org: StandInOrg, token: dict[str, str]) -> None:
    sf_org.token_failure = "invalid_grant"
    response = refresh(sf_org, token["refresh_token"])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    sf_org.token_failure = None
    assert refresh(sf_org, token["refresh_token"]).status_code == 200
    assert (sf_org.token_requests, sf_org.token_failures) == (2, 1)


def test_failure_mode_html_500(sf_org: StandInOrg, token: dict[str, str]) -> None:
    sf_org.token_failure = "html_500"
    response = refresh(sf_org, token["refresh_token"])
    assert response.status_code == 500
    assert response.headers["Content-Type"].startswith("text/html")
    assert "<html>" in response.text
    assert sf_org.token_failures == 1


def test_failure_mode_garbage_200(sf_org: StandInOrg, token: dict[str, str]) -> None:
    sf_org.token_failure = "garbage_200"
    response = refresh(sf_org, token["refresh_token"])
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    with pytest.raises(ValueError, match=r"."):
        response.json()
    assert token["access_token"][:20] not in response.text
    assert sf_org.token_failures == 1


def test_failure_mode_drop(sf_org: StandInOrg, token: dict[str, str]) -> None:
    sf_org.token_failure = "drop"
    with pytest.raises(requests.ConnectionError):
        refresh(sf_org, token["refresh_token"])
    assert (sf_org.token_requests, sf_org.token_failures) == (1, 1)


def test_token_delay_makes_clients_time_out(sf_org: StandInOrg, token: dict[str, str]) -> None:
    sf_org.token_delay = 1.0
    with pytest.raises(requests.Timeout):
        requests.post(
            sf_org.token_url,
            data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
            timeout=0.2,
        )
    assert sf_org.token_requests == 1


# --- slow and late token answers: token_trickle, token_answer_delay, drop_after_issue ---------


def _post_token_raw(org: StandInOrg, refresh_token: str, timeout: float = 5) -> socket.socket:
    """POST a refresh to the token endpoint on a bare socket (to see every byte of the answer)."""
    body = urlencode(
        {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": org.client_id,
            "client_secret": org.client_secret,
        }
    ).encode()
    host, port = org.url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=timeout)
    connection.sendall(
        f"POST /services/oauth2/token HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return connection


def _read_to_eof(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset ends it too)."""
    chunks: list[bytes] = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _read_answer(
    connection: socket.socket, received: bytes = b""
) -> tuple[str, dict[str, str], bytes]:
    """One HTTP answer read off a socket by its Content-Length: (status line, headers, body)."""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(65536)
        assert chunk, "connection closed before the end of the headers"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        assert name.lower() not in headers, f"{name} sent twice"
        headers[name.lower()] = value.strip()
    while len(body) < int(headers["content-length"]):
        chunk = connection.recv(65536)
        assert chunk, "connection closed before the end of the body"
        body += chunk
    return status, headers, body


@pytest.mark.parametrize(
    ("failure", "status"),
    [(None, "HTTP/1.1 200 OK"), ("invalid_grant", "HTTP/1.1 400 Bad Request")],
)
def test_token_trickle_writes_the_whole_answer_byte_by_byte(
    sf_org: StandInOrg, token: dict[str, str], failure: str | None, status: str
) -> None:
    sf_org.token_trickle = 0.002
    sf_org.token_failure = failure
    # A 0.3 s timeout per recv: a trickle never lets one fire, however long the whole takes.
    connection = _post_token_raw(sf_org, token["refresh_token"], timeout=0.3)
    started = time.monotonic()
    with connection:
        raw = _read_to_eof(connection)  # the server closes the connection after a trickle
    elapsed = time.monotonic() - started
    assert elapsed >= (len(raw) - 1) * 0.002  # status line and headers were trickled too
    assert len(raw) * 0.002 > 0.3
    status_line, headers, body = _read_answer(connection, raw)
    assert status_line == status
    assert headers["server"] == "StandInOrg"
    assert headers["date"].endswith(" GMT")
    assert headers["content-type"] == "application/json;charset=UTF-8"
    assert int(headers["content-length"]) == len(body)
    assert headers["connection"] == "close"
    answer = json.loads(body)
    if failure is None:
        assert sf_org.is_valid_session(answer["access_token"])
        assert (sf_org.token_requests, sf_org.token_failures) == (1, 0)
    else:
        assert answer["error"] == "invalid_grant"
        assert (sf_org.token_requests, sf_org.token_failures) == (1, 1)
    assert sf_org.internal_errors == []


def test_token_trickle_outlasts_a_per_read_timeout(
    sf_org: StandInOrg, token: dict[str, str]
) -> None:
    sf_org.token_trickle = 0.001
    started = time.monotonic()
    response = requests.post(
        sf_org.token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": token["refresh_token"],
            "client_id": sf_org.client_id,
            "client_secret": sf_org.client_secret,
        },
        timeout=(1, 0.3),
    )
    assert time.monotonic() - started > 0.3  # longer than the read timeout, yet no Timeout
    assert response.status_code == 200
    assert response.headers["Connection"] == "close"
    assert sf_org.is_valid_session(response.json()["access_token"])
    # The knob covers every token answer: an overlap refusal or a failure mode too.
    sf_org.token_failure = "rate_limited_429"
    refused = requests.post(sf_org.token_url, data={"grant_type": "password"}, timeout=(1, 0.3))
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "30"
    assert refused.text == "Too Many Requests"


def test_token_trickle_rotates_first_and_keeps_the_refresh_token_in_flight(
    sf_org: StandInOrg, token: dict[str, str]
) -> None:
    sf_org.rotation = True
    sf_org.token_trickle = 0.002
    rt0 = token["refresh_token"]
    with _post_token_raw(sf_org, rt0) as connection:
        first_byte = connection.recv(1)
        assert first_byte == b"H"
        # Already rotated while the client has not read the answer yet...
        assert sf_org.refresh_token_state(rt0) == "retired"
        # ...and the refresh token is still being processed until the last byte is out.
        overlapping = refresh(sf_org, rt0)
        assert overlapping.status_code == 400
        assert overlapping.json() == {
            "error": "invalid_grant",
            "error_description": "Token request is already being processed",
        }
        assert (sf_org.overlap_rejections, sf_org.family_revocations) == (1, 0)
        status_line, _, body = _read_answer(connection, first_byte + _read_to_eof(connection))
    assert status_line == "HTTP/1.1 200 OK"
    rt1 = json.loads(body)["refresh_token"]
    assert sf_org.refresh_token_state(rt1) == "active"
    # Once written, the mark is gone: presenting rt0 again is a reuse, no longer an overlap.
    sf_org.token_trickle = 0
    reused = refresh(sf_org, rt0)
    assert reused.json()["error_description"] == "expired access/refresh token"
    assert (sf_org.overlap_rejections, sf_org.family_revocations) == (1, 1)
    assert sf_org.internal_errors == []


def test_client_hanging_up_mid_trickle_leaves_the_org_serving(
    sf_org: StandInOrg, token: dict[str, str]
) -> None:
    sf_org.token_trickle = 0.01  # the whole answer would take several seconds
    rt0 = token["refresh_token"]
    started = time.monotonic()
    connection = _post_token_raw(sf_org, rt0)
    assert connection.recv(1) == b"H"
    time.sleep(0.05)
    connection.close()  # unread bytes pending: the server's next write fails
    sf_org.token_trickle = 0  # read per answer: the cut one keeps its own pace
    # The in-flight mark goes as soon as the write fails: the refresh token works again.
    wait_for(lambda: refresh(sf_org, rt0).status_code == 200)
    assert time.monotonic() - started < 3
    assert sf_org.internal_errors == []
    assert post_soap(sf_org, "u", "getServerTimestamp", token["access_token"]).status_code == 200


def test_token_answer_delay_rotates_before_the_client_hears(
    sf_org: StandInOrg, token: dict[str, str]
) -> None:
    sf_org.rotation = True
    sf_org.token_answer_delay = 1.0
    rt0 = token["refresh_token"]
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        requests.post(
            sf_org.token_url,
            data={
                "grant_type": "refresh_token",
                "refresh_token": rt0,
                "client_id": sf_org.client_id,
                "client_secret": sf_org.client_secret,
            },
            timeout=(1, 0.2),
        )
    # The server rotated although the client saw nothing.
    assert sf_org.refresh_token_state(rt0) == "retired"
    assert (sf_org.token_requests, sf_org.token_failures) == (1, 0)
    # Until the late answer is written, a retry overlaps it...
    retry = refresh(sf_org, rt0)
    assert retry.json()["error_description"] == "Token request is already being processed"
    assert time.monotonic() - started < 1.0  # (the check above ran inside the delay)
    time.sleep(max(0.0, started + 1.3 - time.monotonic()))
    # ...and afterwards it is a reuse of a retired token: the whole family goes.
    sf_org.token_answer_delay = 0
    reused = refresh(sf_org, rt0)
    assert reused.json()["error_description"] == "expired access/refresh token"
    assert sf_org.family_revocations == 1
    assert not sf_org.is_valid_session(token["access_token"])
    assert sf_org.internal_errors == []


def test_token_answer_delay_late_answer_carries_the_rotated_token(
    sf_org: StandInOrg, token: dict[str, str]
) -> None:
    sf_org.rotation = True
    sf_org.token_answer_delay = 0.5
    rt0 = token["refresh_token"]
    started = time.monotonic()
    with _post_token_raw(sf_org, rt0, timeout=0.2) as connection:
        with pytest.raises(TimeoutError):
            connection.recv(1)
        assert sf_org.refresh_token_state(rt0) == "retired"
        connection.settimeout(5)
        status_line, _, body = _read_answer(connection)
    assert time.monotonic() - started >= 0.5
    assert status_line == "HTTP/1.1 200 OK"
    late = json.loads(body)
    assert sf_org.refresh_token_state(late["refresh_token"]) == "active"
    assert sf_org.is_valid_session(late["access_token"])


@pytest.mark.parametrize("rotation", [False, True])
def test_failure_mode_drop_after_issue(
    sf_org: StandInOrg, token: dict[str, str], rotation: bool
) -> None:
    sf_org.rotation = rotation
    sf_org.token_failure = "drop_after_issue"
    rt0 = token["refresh_token"]
    with pytest.raises(requests.ConnectionError):
        refresh(sf_org, rt0)
    # Issued, so not a failure; only the answer was lost.
    assert (sf_org.token_requests, sf_org.token_failures) == (1, 0)
    # A grant refused anyway is still a failure (and dropped as well).
    with pytest.raises(requests.ConnectionError):
        refresh(sf_org, "5Aep861unknown")
    assert (sf_org.token_requests, sf_org.token_failures) == (2, 1)
    sf_org.token_failure = None
    again = refresh(sf_org, rt0)  # no longer in flight: never refused as overlapping
    assert sf_org.overlap_rejections == 0
    if rotation:
        assert again.status_code == 400
        assert again.json()["error_description"] == "expired access/refresh token"
        assert sf_org.family_revocations == 1  # the dropped rotation retired rt0
    else:
        assert again.status_code == 200
        assert sf_org.refresh_token_state(rt0) == "active"


def test_failure_mode_rate_limited_429_date(sf_org: StandInOrg, token: dict[str, str]) -> None:
    sf_org.token_failure = "rate_limited_429_date"
    before = datetime.now(timezone.utc).replace(microsecond=0)
    response = refresh(sf_org, token["refresh_token"])
    after = datetime.now(timezone.utc)
    assert response.status_code == 429
    assert response.text == "Too Many Requests"
    date = email.utils.parsedate_to_datetime(response.headers["Date"])  # sent once, not twice
    retry_after = email.utils.parsedate_to_datetime(response.headers["Retry-After"])
    assert re.fullmatch(
        r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT",
        response.headers["Retry-After"],
    )
    assert before <= date <= after
    assert (retry_after - date).total_seconds() == pytest.approx(30, abs=1)
    assert sf_org.refresh_token_state(token["refresh_token"]) == "active"
    assert (sf_org.token_requests, sf_org.token_failures) == (1, 1)
    sf_org.token_failure = "rate_limited_429"  # the seconds form stays as it was
    assert refresh(sf_org, token["refresh_token"]).headers["Retry-After"] == "30"


@pytest.mark.parametrize("slow", ["token_trickle", "token_answer_delay"])
def test_stop_ends_a_trickle_or_a_late_answer_promptly(slow: str) -> None:
    org = StandInOrg().start()
    org.rotation = True
    token = org.issue_token()
    setattr(org, slow, 0.05 if slow == "token_trickle" else 30)  # either would take ~30 s
    with _post_token_raw(org, token["refresh_token"], timeout=10) as connection:
        wait_for(lambda: org.refresh_token_state(token["refresh_token"]) == "retired")
        if slow == "token_trickle":
            assert connection.recv(1) == b"H"
        started = time.monotonic()
        org.stop()
        assert time.monotonic() - started < 2
        rest = _read_to_eof(connection)  # cut: the connection ends without a whole answer
    assert b"access_token" not in rest
    assert org.internal_errors == []


def test_requests_oauthlib_refreshes_against_the_org(
    sf_org: StandInOrg, token: dict[str, str]
) -> None:
    session = OAuth2Session(client_id=sf_org.client_id, token=token)
    new = session.refresh_token(
        sf_org.token_url,
        refresh_token=token["refresh_token"],
        client_id=sf_org.client_id,
        client_secret=sf_org.client_secret,
    )
    assert new["access_token"] != token["access_token"]
    assert sf_org.is_valid_session(new["access_token"])
    assert new["refresh_token"] == token["refresh_token"]  # kept by requests-oauthlib


def test_oauthlib_refuses_the_org_without_allow_insecure_transport(
    token: dict[str, str], sf_org: StandInOrg, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OAUTHLIB_INSECURE_TRANSPORT")
    session = OAuth2Session(client_id=sf_org.client_id, token=token)
    with pytest.raises(InsecureTransportError):
        session.refresh_token(sf_org.token_url, refresh_token=token["refresh_token"])
    assert sf_org.token_requests == 0


# --- SOAP: sessions and fault shapes ---------------------------------------------------------


@pytest.mark.parametrize("code", ["u", "c", "T", "m", "s"])
@pytest.mark.parametrize("session", [None, "", "00Dbogus!nope"])
def test_invalid_session_fault_shape_per_api(
    sf_org: StandInOrg, code: str, session: str | None
) -> None:
    response = post_soap(sf_org, code, "getServerTimestamp", session)
    assert response.status_code == 500
    assert response.headers["Content-Type"] == "text/xml;charset=UTF-8"
    parts = fault_parts(response)
    assert parts["faultcode"] == "sf:INVALID_SESSION_ID"
    assert parts["faultstring"] == (
        "INVALID_SESSION_ID: Invalid Session ID found in SessionHeader: Illegal Session"
    )
    assert parts["sf"] == FAULT_NS[code]
    if code in ("m", "s"):
        assert parts["detail"] is None
    else:
        detail = parts["detail"]
        assert detail is not None
        (inner,) = list(detail)
        assert inner.tag == f"{{{FAULT_NS[code]}}}UnexpectedErrorFault"
        assert inner.get(f"{{{XSI}}}type") == "sf:UnexpectedErrorFault"
        assert inner.findtext(f"{{{FAULT_NS[code]}}}exceptionCode") == "INVALID_SESSION_ID"
    assert sf_org.operations == {}
    assert sf_org.sessions_seen == [session or ""]


@requires_reference
@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("u", "partner_invalid_session_fault.xml"),
        ("T", "tooling_invalid_session_fault.CONSTRUCTED.xml"),
        ("m", "metadata_invalid_session_fault.xml"),
    ],
)
def test_invalid_session_fault_matches_the_capture(
    sf_org: StandInOrg, code: str, name: str
) -> None:
    expected = parse(sample(name))
    actual = parse(post_soap(sf_org, code, "getServerTimestamp", "expired").content)
    assert shape(actual) == shape(expected)
    assert actual.nsmap.get("sf") == expected.nsmap.get("sf")


@requires_reference
def test_enterprise_fault_has_the_captured_structure(sf_org: StandInOrg) -> None:
    def tags(element: etree._Element) -> list[str]:
        return [str(item.tag) for item in element.iter() if isinstance(item.tag, str)]

    expected = parse(sample("enterprise_invalid_session_fault.xml"))
    actual = parse(post_soap(sf_org, "c", "logout", "expired").content)
    assert tags(actual) == tags(expected)
    assert actual.nsmap == expected.nsmap


def test_expire_session_and_expire_all(sf_org: StandInOrg) -> None:
    first, second = sf_org.issue_token(), sf_org.issue_token()
    sf_org.expire_session(first["access_token"])
    assert not sf_org.is_valid_session(first["access_token"])
    assert sf_org.is_valid_session(second["access_token"])
    assert post_soap(sf_org, "u", "getServerTimestamp", first["access_token"]).status_code == 500
    assert post_soap(sf_org, "u", "getServerTimestamp", second["access_token"]).status_code == 200
    sf_org.expire_all_sessions()
    assert not sf_org.is_valid_session(second["access_token"])
    assert post_soap(sf_org, "u", "getServerTimestamp", second["access_token"]).status_code == 500
    # Refresh tokens survive: a refresh brings a working session back.
    renewed = refresh(sf_org, second["refresh_token"]).json()["access_token"]
    assert post_soap(sf_org, "u", "getServerTimestamp", renewed).status_code == 200


def test_sessions_expire_by_age(sf_org: StandInOrg, token: dict[str, str]) -> None:
    """A session timeout: sessions issued ``age`` seconds ago go, a younger one lives on."""
    time.sleep(0.2)
    younger = refresh(sf_org, token["refresh_token"]).json()["access_token"]
    assert sf_org.expire_sessions_older_than(60) == 0
    assert sf_org.is_valid_session(token["access_token"])
    assert sf_org.expire_sessions_older_than(0.1) == 1
    assert not sf_org.is_valid_session(token["access_token"])
    assert sf_org.is_valid_session(younger)
    assert post_soap(sf_org, "u", "getServerTimestamp", younger).status_code == 200
    assert sf_org.expire_sessions_older_than(0) == 1
    assert not sf_org.is_valid_session(younger)


@pytest.mark.parametrize("code", ["c", "T"])
def test_other_apis_answer_get_server_timestamp(
    sf_org: StandInOrg, token: dict[str, str], code: str
) -> None:
    response = post_soap(sf_org, code, "getServerTimestamp", token["access_token"])
    assert response.status_code == 200
    root = parse(response.content)
    namespace = wire.FLAVOURS[code].namespace
    stamp = root.findtext(
        f".//{{{namespace}}}getServerTimestampResponse/{{{namespace}}}result/{{{namespace}}}timestamp"
    )
    assert stamp is not None
    assert stamp.endswith("Z")


@pytest.mark.parametrize(
    ("code", "operation"),
    [
        ("c", "upsert"),
        ("T", "describeGlobal"),
        ("m", "deploy"),
        ("s", "compileClasses"),
        ("u", "merge"),
    ],
)
def test_unimplemented_operations_answer_invalid_operation(
    sf_org: StandInOrg, token: dict[str, str], code: str, operation: str
) -> None:
    response = post_soap(sf_org, code, operation, token["access_token"])
    assert response.status_code == 500
    parts = fault_parts(response)
    assert parts["faultcode"] == "sf:INVALID_OPERATION"
    assert "does not implement" in parts["faultstring"]
    assert parts["sf"] == FAULT_NS[code]
    assert (parts["detail"] is None) == (code in ("m", "s"))
    assert sf_org.operations == {}


def test_malformed_envelopes_and_doctype_are_refused(
    sf_org: StandInOrg, token: dict[str, str]
) -> None:
    evil = (
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
        f'<soapenv:Envelope xmlns:soapenv="{SOAPENV}"><soapenv:Header>'
        f'<SessionHeader xmlns="{PARTNER}"><sessionId>{token["access_token"]}</sessionId>'
        f'</SessionHeader></soapenv:Header><soapenv:Body><query xmlns="{PARTNER}">'
        "<queryString>&secret;</queryString></query></soapenv:Body></soapenv:Envelope>"
    )
    for body in (evil.encode(), b"not xml at all", b"<a/>"):
        response = requests.post(sf_org.url + sf_org.soap_path(), data=body, timeout=5)
        assert response.status_code == 500
        parts = fault_parts(response)
        assert parts["faultcode"] == "soapenv:Client"
        assert parts["detail"] is None
        assert "root:" not in response.text
    assert sf_org.operations == {}
    assert sf_org.soap_posts == 3


def test_unknown_soap_api_code_is_not_found(sf_org: StandInOrg, token: dict[str, str]) -> None:
    response = requests.post(
        sf_org.url + "/services/Soap/x/66.0", data=soap_envelope(PARTNER, "query", "x"), timeout=5
    )
    assert response.status_code == 404


def test_chunked_request_bodies_are_read(sf_org: StandInOrg, token: dict[str, str]) -> None:
    envelope = soap_envelope(PARTNER, "getServerTimestamp", token["access_token"])
    response = requests.post(
        sf_org.url + sf_org.soap_path(),
        data=iter([envelope[:40], envelope[40:]]),  # a generator body is sent chunked
        headers={"Content-Type": "text/xml"},
        timeout=5,
    )
    assert response.status_code == 200


def test_bad_content_length_is_a_bad_request(sf_org: StandInOrg) -> None:
    host, port = sf_org.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.putrequest("POST", "/services/oauth2/token")
        connection.putheader("Content-Length", "many")
        connection.endheaders()
        assert connection.getresponse().status == 400
    finally:
        connection.close()
    assert sf_org.internal_errors == []


# --- SOAP: injected failures -----------------------------------------------------------------


def test_fail_next_soap(sf_org: StandInOrg, token: dict[str, str]) -> None:
    sf_org.fail_next_soap("UNKNOWN_EXCEPTION", "An unexpected error occurred.", count=2)
    for _ in range(2):
        response = post_soap(sf_org, "u", "getServerTimestamp", token["access_token"])
        assert response.status_code == 500
        parts = fault_parts(response)
        assert parts["faultcode"] == "sf:UNKNOWN_EXCEPTION"
        assert parts["faultstring"] == "UNKNOWN_EXCEPTION: An unexpected error occurred."
    assert sf_org.operations == {}
    assert post_soap(sf_org, "u", "getServerTimestamp", token["access_token"]).status_code == 200
    assert sf_org.operations["getServerTimestamp"] == 1
    assert sf_org.soap_posts == 3
    assert sf_org.sessions_seen == [token["access_token"]] * 3


def test_fail_next_soap_without_prefix_and_with_detail_type(sf_org: StandInOrg) -> None:
    sf_org.fail_next_soap("INVALID_LOGIN", "Invalid username or password.", prefix="")
    parts = fault_parts(post_soap(sf_org, "u", "getServerTimestamp", None))
    assert parts["faultcode"] == "INVALID_LOGIN"
    assert parts["detail"][0].tag == "{urn:fault.partner.soap.sforce.com}LoginFault"


def test_fail_next_soap_ignores_the_session_and_follows_the_api_flavour(sf_org: StandInOrg) -> None:
    sf_org.fail_next_soap(
        "INVALID_SESSION_ID", "Invalid Session ID found in SessionHeader: Illegal Session"
    )
    parts = fault_parts(post_soap(sf_org, "m", "listMetadata", "whatever"))
    assert parts["faultcode"] == "sf:INVALID_SESSION_ID"
    assert parts["sf"] == FAULT_NS["m"]
    assert parts["detail"] is None


def test_drop_next_soap(sf_org: StandInOrg, token: dict[str, str]) -> None:
    sf_org.drop_next_soap()
    with pytest.raises(requests.ConnectionError):
        post_soap(sf_org, "u", "getServerTimestamp", token["access_token"])
    assert sf_org.operations == {}
    assert post_soap(sf_org, "u", "getServerTimestamp", token["access_token"]).status_code == 200
    assert sf_org.soap_posts == 2


def test_soap_delay(sf_org: StandInOrg, token: dict[str, str]) -> None:
    sf_org.soap_delay = 1.0
    with pytest.raises(requests.Timeout):
        post_soap(sf_org, "u", "getServerTimestamp", token["access_token"], timeout=0.2)
    assert sf_org.soap_posts == 1


def test_counters_and_reset(sf_org: StandInOrg, token: dict[str, str]) -> None:
    refresh(sf_org, token["refresh_token"])
    refresh(sf_org, "nope")
    post_soap(sf_org, "u", "getServerTimestamp", token["access_token"])
    post_soap(sf_org, "u", "getServerTimestamp", None)
    requests.get(sf_org.url + "/services/data/", timeout=5)
    assert sf_org.token_requests == 2
    assert sf_org.token_failures == 1
    assert sf_org.soap_posts == 2
    assert sf_org.sessions_seen == [token["access_token"], ""]
    assert sf_org.operations == {"getServerTimestamp": 1}
    assert sf_org.rest_requests == 1
    sf_org.reset_counters()
    assert (sf_org.token_requests, sf_org.token_failures, sf_org.soap_posts) == (0, 0, 0)
    assert (sf_org.sessions_seen, sf_org.operations, sf_org.rest_requests) == ([], {}, 0)
    assert sf_org.is_valid_session(token["access_token"])  # state other than counters stays


# --- SOAP: partner operations through zeep ---------------------------------------------------


def test_partner_query_through_zeep(
    sf_org: StandInOrg, token: dict[str, str], partner: Any
) -> None:
    answer = partner.query(
        "select Id, FirstName, LastName, Name, Email from Contact where LastName = 'Hopper'",
        _soapheaders=session_header(token),
    )
    limit = answer.header.LimitInfoHeader.limitInfo[0]
    assert (limit.type, limit.limit) == ("API REQUESTS", 15000)
    result = answer.body.result
    assert (result.done, result.size, result.queryLocator) == (True, 1, None)
    (record,) = result.records
    assert record.type == "Contact"
    assert record.Id.startswith("003")
    assert len(record.Id) == 18
    assert field_values(record) == {
        "Id": record.Id,
        "FirstName": "Grace",
        "LastName": "Hopper",
        "Name": "Grace Hopper",
        "Email": "grace.hopper@example.com",
    }
    assert sf_org.operations["query"] == 1
    assert sf_org.sessions_seen == [token["access_token"]]


def test_partner_query_wire_format(sf_org: StandInOrg, token: dict[str, str]) -> None:
    response = post_soap(
        sf_org,
        "u",
        "query",
        token["access_token"],
        "<queryString>SELECT Name, Id FROM Account LIMIT 1</queryString>",
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/xml;charset=UTF-8"
    root = parse(response.content)
    assert root.nsmap == {
        "soapenv": SOAPENV,
        None: PARTNER,
        "xsi": XSI,
        "sf": SOBJECT,
    }
    record = root.find(f".//{{{PARTNER}}}records")
    assert record is not None
    assert record.get(f"{{{XSI}}}type") == "sf:sObject"
    # Salesforce order: type, the record Id, then the selected fields (so Id twice).
    assert [etree.QName(child).localname for child in record] == ["type", "Id", "Name", "Id"]
    no_id = post_soap(
        sf_org,
        "u",
        "query",
        token["access_token"],
        "<queryString>SELECT Name FROM Account</queryString>",
    )
    first = parse(no_id.content).find(f".//{{{PARTNER}}}records")
    assert first is not None
    assert first[1].get(f"{{{XSI}}}nil") == "true"


def test_batches_and_query_more(sf_org: StandInOrg, token: dict[str, str], partner: Any) -> None:
    headers = {**session_header(token), "QueryOptions": {"batchSize": 10}}
    answer = partner.query("SELECT Id FROM Contact", _soapheaders=headers).body.result
    seen = [record.Id for record in answer.records]
    assert (answer.done, answer.size, len(seen)) == (False, 25, 10)
    while not answer.done:
        answer = partner.queryMore(answer.queryLocator, _soapheaders=headers).body.result
        assert answer.size == 25
        seen.extend(record.Id for record in answer.records)
    assert len(seen) == len(set(seen)) == 25
    assert sf_org.operations == {"query": 1, "queryMore": 2}


def test_default_batch_and_limit(token: dict[str, str], partner: Any) -> None:
    answer = partner.query("SELECT Id FROM Contact", _soapheaders=session_header(token))
    assert (answer.body.result.done, answer.body.result.size) == (True, 25)
    limited = partner.query("SELECT Id FROM Contact LIMIT 3", _soapheaders=session_header(token))
    assert len(limited.body.result.records) == 3


def test_invalid_query_locator(token: dict[str, str], partner: Any) -> None:
    with pytest.raises(zeep.exceptions.Fault) as caught:
        partner.queryMore("01gxxxxxxxxxxxxxxx-2000", _soapheaders=session_header(token))
    assert caught.value.code == "sf:INVALID_QUERY_LOCATOR"
    assert caught.value.detail[0].tag.endswith("InvalidQueryLocatorFault")


@pytest.mark.parametrize(
    ("query", "code", "detail", "column"),
    [
        ("SELECT Foo FROM Contact", "INVALID_FIELD", "InvalidFieldFault", 8),
        ("SELECT Id FROM Foo", "INVALID_TYPE", "InvalidSObjectFault", 16),
        ("SELECT FROM Contact", "MALFORMED_QUERY", "MalformedQueryFault", 8),
        ("SELECT Id FROM Contact WHERE", "MALFORMED_QUERY", "MalformedQueryFault", 29),
        ("SELECT Id FROM Contact ORDER BY Name", "MALFORMED_QUERY", "MalformedQueryFault", 24),
        ("SELECT Owner.Name FROM Contact", "INVALID_FIELD", "InvalidFieldFault", 8),
    ],
)
def test_query_errors(
    token: dict[str, str], partner: Any, query: str, code: str, detail: str, column: int
) -> None:
    with pytest.raises(zeep.exceptions.Fault) as caught:
        partner.query(query, _soapheaders=session_header(token))
    fault = caught.value
    assert fault.code == f"sf:{code}"
    assert fault.message.startswith(f"{code}: \n{query}\n")
    assert f"ERROR at Row:1:Column:{column}" in fault.message
    (inner,) = list(fault.detail)
    assert inner.tag == f"{{urn:fault.partner.soap.sforce.com}}{detail}"
    ns = "{urn:fault.partner.soap.sforce.com}"
    assert inner.findtext(f"{ns}row") == "1"
    assert inner.findtext(f"{ns}column") == str(column)


def test_200_answer_can_contain_the_fault_code_text(
    sf_org: StandInOrg, token: dict[str, str]
) -> None:
    response = post_soap(
        sf_org,
        "u",
        "query",
        token["access_token"],
        "<queryString>SELECT Id, Description FROM Contact</queryString>",
    )
    assert response.status_code == 200
    assert "INVALID_SESSION_ID" in response.text
    assert TRAP_DESCRIPTION in response.text


def test_create_retrieve_update_delete_query_all(
    sf_org: StandInOrg, token: dict[str, str], partner: Any, compact_client: Any
) -> None:
    headers = session_header(token)
    sobject = compact_client.get_type(f"{{{SOBJECT}}}sObject")
    created = partner.create(
        [
            sobject(type="Contact", Id=None, _value_1=[sobject_field("LastName", "Newcomer")]),
            sobject(type="Contact", Id=None, _value_1=[sobject_field("FirstName", "NoLast")]),
        ],
        _soapheaders=headers,
    ).body.result
    assert created[0].success
    assert created[0].id.startswith("003")
    assert not created[1].success
    assert created[1].errors[0].statusCode == "REQUIRED_FIELD_MISSING"
    assert created[1].errors[0].fields == ["LastName"]
    new_id = created[0].id

    updated = partner.update(
        [sobject(type="Contact", Id=new_id, _value_1=[sobject_field("FirstName", "Nina")])],
        _soapheaders=headers,
    ).body.result
    assert updated[0].success

    fetched = partner.retrieve(
        "Id, Name", "Contact", [new_id[:15], "003000000000000AAA"], _soapheaders=headers
    )
    assert field_values(fetched.body.result[0]) == {"Id": new_id, "Name": "Nina Newcomer"}

    deleted = partner.delete([new_id, new_id], _soapheaders=headers).body.result
    assert deleted[0].success
    assert deleted[0].id == new_id
    assert deleted[1].errors[0].statusCode == "ENTITY_IS_DELETED"

    query = f"SELECT Id, IsDeleted FROM Contact WHERE Id = '{new_id}'"
    assert partner.query(query, _soapheaders=headers).body.result.size == 0
    everything = partner.queryAll(query, _soapheaders=headers).body.result
    assert field_values(everything.records[0])["IsDeleted"] == "true"
    assert sf_org.operations == {
        "create": 1,
        "update": 1,
        "retrieve": 1,
        "delete": 1,
        "query": 1,
        "queryAll": 1,
    }


def test_read_only_fields_are_a_per_record_error(
    token: dict[str, str], partner: Any, compact_client: Any
) -> None:
    sobject = compact_client.get_type(f"{{{SOBJECT}}}sObject")
    created = partner.create(
        [
            sobject(
                type="Contact",
                Id=None,
                _value_1=[sobject_field("LastName", "Doe"), sobject_field("Name", "Jane Doe")],
            ),
            sobject(type="Contact", Id=None, _value_1=[sobject_field("LastName", "Roe")]),
        ],
        _soapheaders=session_header(token),
    ).body.result
    assert not created[0].success
    assert created[0].errors[0].statusCode == "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert created[0].errors[0].fields == ["Name"]
    assert created[1].success


def test_update_errors(token: dict[str, str], partner: Any, compact_client: Any) -> None:
    sobject = compact_client.get_type(f"{{{SOBJECT}}}sObject")
    contact = partner.query(
        "SELECT Id FROM Contact LIMIT 1", _soapheaders=session_header(token)
    ).body.result.records[0]
    results = partner.update(
        [
            sobject(type="Contact", Id=None, _value_1=[sobject_field("Email", "a@b.c")]),
            sobject(type="Contact", Id="003000000000000AAA", _value_1=[]),
            sobject(type="Contact", Id=contact.Id, fieldsToNull=["LastName"]),
            sobject(type="Contact", Id=contact.Id, fieldsToNull=["Email"]),
        ],
        _soapheaders=session_header(token),
    ).body.result
    assert [r.errors[0].statusCode if r.errors else None for r in results] == [
        "MISSING_ARGUMENT",
        "INVALID_CROSS_REFERENCE_KEY",
        "REQUIRED_FIELD_MISSING",
        None,
    ]


def test_create_with_unknown_field_faults(
    token: dict[str, str], partner: Any, compact_client: Any
) -> None:
    sobject = compact_client.get_type(f"{{{SOBJECT}}}sObject")
    with pytest.raises(zeep.exceptions.Fault) as caught:
        partner.create(
            [sobject(type="Contact", Id=None, _value_1=[sobject_field("Shoe_Size__c", "42")])],
            _soapheaders=session_header(token),
        )
    assert caught.value.code == "sf:INVALID_FIELD"
    with pytest.raises(zeep.exceptions.Fault) as caught:
        partner.create([sobject(type="Widget__c", Id=None)], _soapheaders=session_header(token))
    assert caught.value.code == "sf:INVALID_TYPE"


def test_get_user_info_server_timestamp_and_describe(
    sf_org: StandInOrg, token: dict[str, str], partner: Any
) -> None:
    headers = session_header(token)
    info = partner.getUserInfo(_soapheaders=headers).body.result
    assert (info.organizationId, info.userId) == (sf_org.org_id, sf_org.user_id)
    stamp = partner.getServerTimestamp(_soapheaders=headers).body.result.timestamp
    assert abs(stamp.timestamp() - time.time()) < 60
    described = partner.describeSObject("contact", _soapheaders=headers).body.result
    assert (described.name, described.keyPrefix) == ("Contact", "003")
    names = [item.name for item in described.fields]
    assert {"Id", "FirstName", "LastName", "Name", "Email", "Description"} <= set(names)
    with pytest.raises(zeep.exceptions.Fault) as caught:
        partner.describeSObject("Nope", _soapheaders=headers)
    assert caught.value.code == "sf:INVALID_TYPE"


def test_login(sf_org: StandInOrg, partner: Any) -> None:
    sf_org.add_user("ada@example.com", "s3cret")
    result = partner.login("ada@example.com", "s3cret")
    assert result.serverUrl == sf_org.url + sf_org.soap_path("u")
    assert result.metadataServerUrl == sf_org.url + sf_org.soap_path("m")
    assert result.userInfo.userName == "ada@example.com"
    assert sf_org.is_valid_session(result.sessionId)
    info = partner.getUserInfo(_soapheaders={"SessionHeader": {"sessionId": result.sessionId}})
    assert info.body.result.userName == "ada@example.com"


def test_login_failure_matches_the_real_shape(sf_org: StandInOrg, partner: Any) -> None:
    sf_org.add_user("ada@example.com", "s3cret")
    with pytest.raises(zeep.exceptions.Fault) as caught:
        partner.login("ada@example.com", "wrong")
    assert caught.value.code == "INVALID_LOGIN"  # no sf: prefix, as in the real capture
    assert caught.value.message == (
        "INVALID_LOGIN: Invalid username, password, security token; or user locked out."
    )
    assert caught.value.detail[0].tag == "{urn:fault.partner.soap.sforce.com}LoginFault"


# --- the compact WSDL against the real one ---------------------------------------------------


def test_compact_wsdl_loads_without_dtds() -> None:
    client = new_client(PARTNER_WSDL, settings=zeep.Settings(forbid_dtd=True))
    operations = set(client.service._binding._operations)
    assert {
        "login",
        "query",
        "queryMore",
        "queryAll",
        "retrieve",
        "create",
        "update",
        "delete",
        "getUserInfo",
        "getServerTimestamp",
        "describeSObject",
    } <= operations
    assert client.service._binding_options["address"] == (
        "https://login.salesforce.com/services/Soap/u/66.0"
    )


def _declarations(path: Path) -> dict[tuple[str, str], list[str]]:
    """{(schema namespace, 'type:Name' or 'element:Name'): child element names in order}."""
    xsd = "{http://www.w3.org/2001/XMLSchema}"
    tree = etree.parse(str(path), SAFE_PARSER)
    found: dict[tuple[str, str], list[str]] = {}
    for schema in tree.iter(f"{xsd}schema"):
        namespace = schema.get("targetNamespace", "")
        for item in schema:
            if item.tag not in (f"{xsd}complexType", f"{xsd}element"):
                continue
            kind = "type" if item.tag == f"{xsd}complexType" else "element"
            children = [
                child.get("name") or child.get("ref") or "##any"
                for child in item.iter(f"{xsd}element", f"{xsd}any")
                if child is not item
            ]
            found[(namespace, f"{kind}:{item.get('name')}")] = [str(c) for c in children]
    return found


@requires_reference
def test_compact_wsdl_declares_what_the_real_one_does() -> None:
    if not REAL_PARTNER_WSDL.is_file():
        pytest.skip(f"{REAL_PARTNER_WSDL} not found")
    compact = _declarations(Path(PARTNER_WSDL))
    real = _declarations(REAL_PARTNER_WSDL)
    assert compact, "no declarations found in the compact WSDL"
    for key, children in compact.items():
        assert key in real, f"{key} is not in the real partner WSDL"
        assert children == real[key], f"{key}: element names or order differ"


@requires_reference
def test_org_answers_parse_with_the_real_partner_wsdl(
    sf_org: StandInOrg, token: dict[str, str]
) -> None:
    if not REAL_PARTNER_WSDL.is_file():
        pytest.skip(f"{REAL_PARTNER_WSDL} not found")
    real = new_client(str(REAL_PARTNER_WSDL), settings=zeep.Settings(forbid_dtd=True))
    service = real.create_service(BINDING, sf_org.url + sf_org.soap_path())
    headers = session_header(token)
    answer = service.query(
        "SELECT Id, Name, Email, Description FROM Contact",
        _soapheaders={**headers, "QueryOptions": {"batchSize": 5, "scope": zeep.xsd.SkipValue}},
    )
    assert answer.header.LimitInfoHeader.limitInfo[0].type == "API REQUESTS"
    result = answer.body.result
    assert (result.done, result.size, len(result.records)) == (False, 25, 5)
    more = service.queryMore(result.queryLocator, _soapheaders=headers).body.result
    assert len(more.records) == 5
    assert service.getUserInfo(_soapheaders=headers).body.result.userId == sf_org.user_id
    assert service.describeSObject("Account", _soapheaders=headers).body.result.name == "Account"
    assert service.getServerTimestamp(_soapheaders=headers).body.result.timestamp is not None
    sf_org.expire_all_sessions()
    with pytest.raises(zeep.exceptions.Fault) as caught:
        service.query("SELECT Id FROM Contact", _soapheaders=headers)
    assert caught.value.code == "sf:INVALID_SESSION_ID"
    assert caught.value.detail[0].tag == "{urn:fault.partner.soap.sforce.com}UnexpectedErrorFault"


# --- REST ------------------------------------------------------------------------------------


def bearer(token: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token['access_token']}"}


def test_rest_versions_need_no_auth(sf_org: StandInOrg) -> None:
    response = requests.get(sf_org.url + "/services/data/", timeout=5)
    assert response.status_code == 200
    versions = response.json()
    assert {"label", "url", "version"} == set(versions[-1])
    assert versions[-1]["version"] == "66.0"
    assert versions[-1]["url"] == "/services/data/v66.0"


@pytest.mark.parametrize("authorization", [None, "Bearer nope", "Basic Zm9vOmJhcg=="])
def test_rest_401(sf_org: StandInOrg, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    for path in (
        "/services/data/v66.0/query?q=SELECT+Id+FROM+Contact",
        "/services/oauth2/userinfo",
    ):
        response = requests.get(sf_org.url + path, headers=headers, timeout=5)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Token"
        assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
        assert response.json() == [
            {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
        ]


@requires_reference
def test_rest_401_body_matches_the_capture(sf_org: StandInOrg) -> None:
    response = requests.get(sf_org.url + "/services/oauth2/userinfo", timeout=5)
    assert response.json() == json.loads(sample("rest_401_invalid_session.json"))


def test_rest_query_userinfo_and_not_found(sf_org: StandInOrg, token: dict[str, str]) -> None:
    response = requests.get(
        sf_org.url + "/services/data/v66.0/query",
        params={"q": "SELECT Id, Name FROM Account WHERE Name = 'initech'"},
        headers=bearer(token),
        timeout=5,
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["totalSize"], body["done"]) == (1, True)
    (record,) = body["records"]
    assert record["attributes"]["type"] == "Account"
    assert record["attributes"]["url"] == f"/services/data/v66.0/sobjects/Account/{record['Id']}"
    assert record["Name"] == "Initech"

    bad = requests.get(
        sf_org.url + "/services/data/v66.0/query",
        params={"q": "SELECT Nope FROM Account"},
        headers=bearer(token),
        timeout=5,
    )
    assert bad.status_code == 400
    assert bad.json()[0]["errorCode"] == "INVALID_FIELD"

    info = requests.get(sf_org.url + "/services/oauth2/userinfo", headers=bearer(token), timeout=5)
    assert info.json()["user_id"] == sf_org.user_id
    assert info.json()["organization_id"] == sf_org.org_id

    missing = requests.get(
        sf_org.url + "/services/data/v66.0/analytics/reports", headers=bearer(token), timeout=5
    )
    assert missing.status_code == 404
    assert missing.json() == [
        {"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}
    ]
    assert sf_org.rest_requests == 4


def test_rest_401_after_expiry(sf_org: StandInOrg, token: dict[str, str]) -> None:
    url = sf_org.url + "/services/oauth2/userinfo"
    assert requests.get(url, headers=bearer(token), timeout=5).status_code == 200
    sf_org.expire_all_sessions()
    assert requests.get(url, headers=bearer(token), timeout=5).status_code == 401


# --- SOQL subset -----------------------------------------------------------------------------


def test_soql_parse() -> None:
    query = soql.parse(
        "select Id,  name\nFROM contact where Name = 'O\\'Brien' and IsDeleted = false limit 5"
    )
    assert [name for name, _, _ in query.fields] == ["Id", "name"]
    assert query.sobject == "contact"
    assert [(c.field, c.value) for c in query.where] == [("Name", "O'Brien"), ("IsDeleted", False)]
    assert query.limit == 5


def test_soql_error_positions_span_lines() -> None:
    with pytest.raises(soql.SoqlError) as caught:
        soql.parse("SELECT Id\nFROM Contact\nWHERE Name")
    assert (caught.value.code, caught.value.row, caught.value.column) == ("MALFORMED_QUERY", 3, 11)
    assert "unexpected token: <EOF>" in caught.value.exception_message


@pytest.fixture
def _no_stray_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    time.sleep(0.1)
    stray = [t for t in set(threading.enumerate()) - before if t.name.startswith("StandInOrg")]
    assert stray == []


@pytest.mark.usefixtures("_no_stray_threads")
def test_stop_joins_the_server_thread() -> None:
    with StandInOrg() as org:
        requests.get(org.url + "/services/data/", timeout=5)
