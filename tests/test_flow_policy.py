"""The call policy as a user or an attacker meets it, driven by hand (no I/O, no refresher):
which requests carry the session id, where it may go, which answers count as an expired
session, and what a step shows when it is logged or printed."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
from lxml import etree
from test_flow import ADDRESS, ENV, FAULT, INSTANCE, PARTNER, POLICY, REST_401, Answer, finish

from zeep_sfrefresh import JwtAccessTokenError, SessionNotRefreshableError, TokenDestinationError
from zeep_sfrefresh._callouts import (
    MERGE_FIELD,
    TokenRequest,
    rest_invalid_session,
    token_request_flow,
)
from zeep_sfrefresh._faults import MAX_FAULT_BYTES
from zeep_sfrefresh._flow import Refresh, Send, Step, Verdict, soap_call
from zeep_sfrefresh._tokens import Generation, Token

OLD, NEW = "00Dx!OLD", "00Dx!NEW"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
EVIL = "https://evil.example.com"
MOVED = "https://acme2.my.salesforce.com"
APEX_CLASS_NS = "http://soap.sforce.com/schemas/class/Widgets"
APEX_CLASS_ADDRESS = "https://login.salesforce.com/services/Soap/class/Widgets"
"""An Apex web service: a SOAP path whose API (and SessionHeader namespace) is not known."""


def gen(access_token: str, epoch: int = 1, instance: str | None = INSTANCE) -> Generation:
    return Generation(
        Token({"access_token": access_token, "refresh_token": "r", "instance_url": instance}),
        epoch,
    )


def envelope(session_header: tuple[str, str] | None = None) -> etree._Element:
    """A partner query; ``session_header``: (namespace, sessionId) of a header the caller wrote."""
    header = ""
    if session_header is not None:
        namespace, session_id = session_header
        header = (
            f'<soap-env:Header><h:SessionHeader xmlns:h="{namespace}">'
            f"<h:sessionId>{session_id}</h:sessionId></h:SessionHeader></soap-env:Header>"
        )
    return etree.fromstring(
        f'<soap-env:Envelope xmlns:soap-env="{ENV}">{header}<soap-env:Body>'
        f'<ns0:query xmlns:ns0="{PARTNER}"><ns0:queryString>SELECT Id FROM Contact'
        "</ns0:queryString></ns0:query></soap-env:Body></soap-env:Envelope>"
    )


def soap(
    env: etree._Element, address: str, current: Generation, *, route: bool = True
) -> Generator[Step, Any, Any]:
    return soap_call(env, address, current, route=route, policy=POLICY)


def zeep_would_post(env: etree._Element) -> bytes:
    """The bytes zeep itself posts for an envelope (its Transport serialises it so)."""
    return etree.tostring(env, xml_declaration=True, encoding="utf-8")


def session_ids(message: bytes | None) -> list[str | None]:
    assert message is not None
    return [node.text for node in etree.fromstring(message).iter("{*}sessionId")]


def run(
    flow: Generator[Step, Any, Any], answers: list[Answer], fresh: Generation | None = None
) -> tuple[list[Step], Any]:
    """Drive ``flow`` to its end: each Send gets the next answer, a Refresh ``fresh``."""
    steps: list[Step] = []
    pending = list(answers)
    try:
        step = next(flow)
        while True:
            steps.append(step)
            reply: object = None
            if isinstance(step, Send):
                reply = pending.pop(0)
            elif isinstance(step, Refresh):
                reply = fresh
            step = flow.send(reply)
    except StopIteration as done:
        return steps, done.value


def sends(steps: list[Step]) -> list[Send]:
    return [step for step in steps if isinstance(step, Send)]


def callout(
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    instance: str = INSTANCE,
) -> TokenRequest:
    """A Named Credential style callout on the token's instance, as the transports build it."""
    return TokenRequest(
        "POST" if body is not None else "GET",
        instance + path,
        body,
        headers or {},
        merge_fields=True,
        bearer_paths_only=True,
    )


def rest(url: str, headers: dict[str, str] | None = None) -> TokenRequest:
    """A request through the REST auth."""
    return TokenRequest("GET", url, headers=headers or {})


# --- what a step shows --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["soap", "rest", "callout"])
def test_no_step_and_no_request_template_shows_the_session_id(kind: str) -> None:
    current, fresh = gen(OLD), gen(NEW, 2)
    shown: list[object] = []
    if kind == "soap":
        flow = soap(envelope(), ADDRESS, current)
        expired = Answer(500, FAULT)
    else:
        template = (
            TokenRequest(  # a caller's own body may hold a session id too
                "POST",
                f"{INSTANCE}/services/apexrest/Sessions",
                f'{{"sessionId": "{OLD}"}}'.encode(),
                {"Authorization": f"Bearer {OLD}"},
            )
            if kind == "rest"
            else callout(
                "/services/Soap/u/66.0",
                body=f"<sessionId>{MERGE_FIELD}</sessionId>".encode(),
                headers={"X-Session": MERGE_FIELD},
            )
        )
        shown.append(template)
        flow = token_request_flow(template, current, POLICY)
        expired = Answer(500, FAULT) if kind == "callout" else Answer(401, REST_401)
    steps, _ = run(flow, [expired, Answer(200)], fresh)
    first, again = sends(steps)
    carried = [(s.message or b"").decode() + str(dict(s.headers or {})) for s in (first, again)]
    assert OLD in carried[0]  # the steps do carry the session ids...
    assert NEW in carried[1]
    assert any(isinstance(step, Refresh) for step in steps)
    for item in [*steps, *shown]:  # ...but a log line or a traceback showing them does not
        text = repr(item) + str(item)
        assert OLD not in text
        assert NEW not in text


# --- SOAP: what carries the session id, and where it may go --------------------------------------


@pytest.mark.parametrize("access_token", [OLD, JWT])
@pytest.mark.parametrize("instance", [INSTANCE, EVIL])
def test_a_path_outside_soap_is_sent_untouched_and_never_refreshed(
    access_token: str, instance: str
) -> None:
    address = "https://acme.my.salesforce.com/services/custom/Widgets"
    flow = soap(envelope((PARTNER, "placeholder")), address, gen(access_token, instance=instance))
    send = next(flow)
    assert isinstance(send, Send)
    assert (send.method, send.address) == ("POST", address)
    assert session_ids(send.message) == ["placeholder"]  # the caller's header, as it wrote it
    assert send.message == zeep_would_post(envelope((PARTNER, "placeholder")))
    expired = Answer(500, FAULT)
    assert finish(flow, expired) is expired  # no refresh, no verdict: it was not our session


@pytest.mark.parametrize(
    ("route", "current", "expected"),
    [
        (True, gen(OLD), f"{INSTANCE}/services/Soap/class/Widgets"),
        (False, gen(OLD), APEX_CLASS_ADDRESS),
        (True, gen(OLD, instance=None), APEX_CLASS_ADDRESS),
        (True, gen(JWT, instance=EVIL), f"{EVIL}/services/Soap/class/Widgets"),
    ],
    ids=["routed", "not-routed", "no-instance", "jwt-elsewhere"],
)
def test_an_envelope_with_no_session_header_for_an_unknown_api_goes_as_is(
    route: bool, current: Generation, expected: str
) -> None:
    # Nothing in it is ours, so nothing is checked and nothing is refreshed: a login call, or
    # an Apex web service called without a SessionHeader.
    flow = soap(envelope(), APEX_CLASS_ADDRESS, current, route=route)
    send = next(flow)
    assert isinstance(send, Send)
    assert (send.method, send.address) == ("POST", expected)
    assert send.message == zeep_would_post(envelope())
    expired = Answer(500, FAULT)
    assert finish(flow, expired) is expired


def test_a_session_header_the_caller_wrote_for_an_unknown_api_carries_the_session() -> None:
    current, fresh = gen(OLD), gen(NEW, 2)
    flow = soap(envelope((APEX_CLASS_NS, "placeholder")), APEX_CLASS_ADDRESS, current)
    steps, answer = run(flow, [Answer(500, FAULT), Answer(200)], fresh)
    first, again = sends(steps)
    assert first.address == again.address == f"{INSTANCE}/services/Soap/class/Widgets"
    assert (session_ids(first.message), session_ids(again.message)) == ([OLD], [NEW])
    assert answer.status_code == 200
    with pytest.raises(TokenDestinationError):  # so it goes nowhere but the token's instance
        next(
            soap(
                envelope((APEX_CLASS_NS, "placeholder")),
                APEX_CLASS_ADDRESS,
                gen(OLD, instance=EVIL),
            )
        )


@pytest.mark.parametrize(
    ("access_token", "refused"),
    [
        (JWT, True),
        ("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0", False),  # two parts: not a JWT
        (JWT + ".ZXh0cmE", False),  # four parts: not a JWT either
        ("00Dx!AQ.yJzdWIi.c2ln", False),  # three parts, but no JWT header
    ],
)
def test_only_a_jwt_access_token_is_refused_before_a_soap_call(
    access_token: str, refused: bool
) -> None:
    flow = soap(envelope(), ADDRESS, gen(access_token))
    if refused:
        with pytest.raises(JwtAccessTokenError, match=r"JWT.*turn off .*on the connected app"):
            next(flow)
        return
    send = next(flow)
    assert isinstance(send, Send)
    assert send.method == "POST"
    assert session_ids(send.message) == [access_token]


def test_a_second_expiry_says_what_was_tried() -> None:
    flow = soap(envelope(), ADDRESS, gen(OLD))
    with pytest.raises(SessionNotRefreshableError) as info:
        run(flow, [Answer(500, FAULT), Answer(500, FAULT)], gen(NEW, 2))
    error = info.value
    assert error.code == "INVALID_SESSION_ID"
    assert "one token refresh, then one resend with the new session" in str(error)


def test_a_token_without_an_instance_is_never_sent() -> None:
    with pytest.raises(TokenDestinationError, match="no instance_url"):
        next(soap(envelope(), ADDRESS, gen(OLD, instance=None)))


def test_an_instance_url_with_a_trailing_slash_routes_and_carries_as_without() -> None:
    current = gen(OLD, instance=INSTANCE + "/")
    first_soap = next(soap(envelope(), ADDRESS, current))
    assert isinstance(first_soap, Send)
    assert first_soap.address == f"{INSTANCE}/services/Soap/u/66.0"
    url = f"{INSTANCE}/services/data/v66.0/query?q=SELECT+Id+FROM+Contact"
    steps, _ = run(
        token_request_flow(rest(url), current, POLICY),
        [Answer(401, REST_401), Answer(200)],
        gen(NEW, 2),
    )
    first, again = sends(steps)
    assert first.headers == {"Authorization": f"Bearer {OLD}"}
    assert (again.address, again.headers) == (url, {"Authorization": f"Bearer {NEW}"})


# --- REST and callouts: which requests carry the token -------------------------------------------


@pytest.mark.parametrize(
    ("path", "bearer"),
    [
        ("/services/data/v66.0/query?q=SELECT+Id+FROM+Contact", True),
        ("/services/apexrest/Widgets/7", True),
        ("/services/oauth2/userinfo", True),
        ("/services/Soap/u/66.0", False),  # a SOAP callout carries the session in its body
        ("/services/async/66.0/job", False),
        ("/home/home.jsp", False),
    ],
)
def test_a_callout_gets_bearer_on_rest_paths_only(path: str, bearer: bool) -> None:
    flow = token_request_flow(callout(path), gen(OLD), POLICY)
    send = next(flow)
    assert isinstance(send, Send)
    assert send.address == INSTANCE + path
    expired = Answer(401, REST_401)
    if not bearer:
        assert send.headers == {}
        assert finish(flow, expired) == (expired, None)  # carried nothing: not refreshed
        return
    assert send.headers == {"Authorization": f"Bearer {OLD}"}
    assert isinstance(flow.send(expired), Refresh)
    fine = Answer(200)
    steps, (answer, outcome) = run(token_request_flow(callout(path), gen(OLD), POLICY), [fine])
    assert (answer, outcome) == (fine, "sent")
    verdict = steps[-1]
    assert isinstance(verdict, Verdict)
    assert verdict.usable


@pytest.mark.parametrize("name", ["Authorization", "authorization"])
def test_a_callouts_own_authorization_is_left_as_given(name: str) -> None:
    basic = "Basic d2lkZ2V0czpzM2NyM3Q="
    flow = token_request_flow(
        callout("/services/apexrest/Widgets", headers={name: basic}), gen(OLD), POLICY
    )
    send = next(flow)
    assert isinstance(send, Send)
    assert send.headers == {name: basic}
    expired = Answer(401, REST_401)
    assert finish(flow, expired) == (expired, None)  # its own credential: not ours to refresh

    merged = callout("/services/apexrest/Widgets", headers={name: f"Bearer {MERGE_FIELD}"})
    steps, (answer, outcome) = run(
        token_request_flow(merged, gen(OLD), POLICY), [expired, Answer(200)], gen(NEW, 2)
    )
    first, again = sends(steps)
    assert (first.headers, again.headers) == ({name: f"Bearer {OLD}"}, {name: f"Bearer {NEW}"})
    assert (answer.status_code, outcome) == (200, "refreshed")


def test_the_rest_auth_replaces_a_stale_authorization_whatever_its_case() -> None:
    url = f"{INSTANCE}/services/data/v66.0/limits"
    send = next(
        token_request_flow(
            rest(url, {"authorization": "Bearer 00Dx!STALE", "Accept": "application/json"}),
            gen(OLD),
            POLICY,
        )
    )
    assert isinstance(send, Send)
    assert send.headers == {"Accept": "application/json", "Authorization": f"Bearer {OLD}"}


@pytest.mark.parametrize("body", [None, b"<ping/>"])
def test_a_merge_field_in_a_header_only_carries_the_token(body: bytes | None) -> None:
    request = callout("/services/Soap/u/66.0", body=body, headers={"X-Session": MERGE_FIELD})
    steps, (answer, outcome) = run(
        token_request_flow(request, gen(OLD), POLICY), [Answer(500, FAULT), Answer(200)], gen(NEW)
    )
    first, again = sends(steps)
    assert (first.headers, again.headers) == ({"X-Session": OLD}, {"X-Session": NEW})
    assert first.message == again.message == body
    assert (answer.status_code, outcome) == (200, "refreshed")


def test_the_rest_auth_sends_a_body_as_is_merge_field_or_not() -> None:
    # Apex source posted through the Tooling API may well mention the merge field; a file
    # upload is not even text. Only callouts fill it in.
    body = b"\xff\xfe<apex>String t = '" + MERGE_FIELD.encode() + b"';</apex>"
    request = TokenRequest("POST", f"{INSTANCE}/services/data/v66.0/tooling/sobjects/X", body)
    send = next(token_request_flow(request, gen(OLD), POLICY))
    assert isinstance(send, Send)
    assert send.message == body
    assert send.headers == {"Authorization": f"Bearer {OLD}"}


def test_a_callout_body_that_is_not_text_is_sent_as_is() -> None:
    jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF"  # a ContentVersion upload, say
    send = next(
        token_request_flow(
            callout("/services/data/v66.0/sobjects/ContentVersion", body=jpeg), gen(OLD), POLICY
        )
    )
    assert isinstance(send, Send)
    assert (send.message, send.headers) == (jpeg, {"Authorization": f"Bearer {OLD}"})


def test_the_merge_field_is_xml_escaped_in_the_body_and_not_in_headers() -> None:
    token = "00Dx!A&B<C>"
    request = callout(
        "/services/Soap/u/66.0",
        body=f"<sessionId>{MERGE_FIELD}</sessionId>".encode(),
        headers={"X-Session": MERGE_FIELD},
    )
    send = next(token_request_flow(request, gen(token), POLICY))
    assert isinstance(send, Send)
    assert send.message == b"<sessionId>00Dx!A&amp;B&lt;C&gt;</sessionId>"
    assert send.headers == {"X-Session": token}


@pytest.mark.parametrize(
    ("path", "body", "refused"),
    [
        ("/services/Soap/u/66.0", f"<sessionId>{MERGE_FIELD}</sessionId>".encode(), True),
        ("/services/data/v66.0/limits", None, False),  # REST takes JWT access tokens
    ],
)
def test_a_jwt_is_refused_only_where_it_would_reach_a_soap_api(
    path: str, body: bytes | None, refused: bool
) -> None:
    flow = token_request_flow(callout(path, body=body), gen(JWT), POLICY)
    if refused:
        with pytest.raises(JwtAccessTokenError):
            next(flow)
        return
    send = next(flow)
    assert isinstance(send, Send)
    assert send.headers == {"Authorization": f"Bearer {JWT}"}


@pytest.mark.parametrize(
    "request_",
    [
        callout("/services/data/v66.0/limits", instance=EVIL),
        callout("/services/Soap/u/66.0", body=MERGE_FIELD.encode(), instance=EVIL),
        callout("/services/Soap/u/66.0", headers={"X-Session": MERGE_FIELD}, instance=EVIL),
    ],
    ids=["bearer", "merge-body", "merge-header"],
)
def test_a_callout_never_carries_the_token_off_an_allowed_instance(request_: TokenRequest) -> None:
    with pytest.raises(TokenDestinationError):
        next(token_request_flow(request_, gen(OLD, instance=EVIL), POLICY))


@pytest.mark.parametrize(
    ("url", "current"),
    [
        ("http://acme.my.salesforce.com/services/data/v66.0/limits", gen(OLD)),  # not https
        ("https://acme.my.salesforce.com:8443/services/data/v66.0/limits", gen(OLD)),
        ("https://acme.my.salesforce.com.evil.example/services/data/v66.0/limits", gen(OLD)),
        (f"{INSTANCE}/services/data/v66.0/limits", gen(OLD, instance=None)),
    ],
    ids=["scheme", "port", "host", "no-instance"],
)
def test_only_the_instance_itself_gets_the_bearer(url: str, current: Generation) -> None:
    flow = token_request_flow(rest(url, {"Authorization": "Bearer 00Dx!STALE"}), current, POLICY)
    send = next(flow)
    assert isinstance(send, Send)
    assert (send.address, send.headers) == (url, {})
    expired = Answer(401, REST_401)
    assert finish(flow, expired) == (expired, None)


@pytest.mark.parametrize(
    "request_",
    [
        rest(f"{INSTANCE}/services/data/v66.0/query?q=SELECT+Id+FROM+Contact"),
        callout("/services/data/v66.0/query?q=SELECT+Id+FROM+Contact"),
        callout("/services/Soap/u/66.0?x=1", body=MERGE_FIELD.encode()),
    ],
    ids=["rest", "callout-rest", "callout-soap"],
)
def test_the_resend_follows_an_instance_move_keeping_path_and_query(
    request_: TokenRequest,
) -> None:
    expired = Answer(401, REST_401) if request_.body is None else Answer(500, FAULT)
    steps, (answer, outcome) = run(
        token_request_flow(request_, gen(OLD), POLICY),
        [expired, Answer(200)],
        gen(NEW, 2, instance=MOVED),
    )
    first, again = sends(steps)
    assert first.address == request_.url
    assert again.address == MOVED + request_.url.removeprefix(INSTANCE)
    assert NEW in (again.message or b"").decode() + str(dict(again.headers or {}))
    verdicts = [step for step in steps if isinstance(step, Verdict)]
    assert [verdict.usable for verdict in verdicts] == [True]
    assert (answer.status_code, outcome) == (200, "refreshed")


# --- what counts as an expired REST session -----------------------------------------------------

_EXPIRED = b'[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]'


@pytest.mark.parametrize(
    ("status", "body", "expired"),
    [
        (401, _EXPIRED, True),
        (401, b'[{"errorCode":"INVALID_SESSION_ID"}]', True),  # no message at all
        (401, b'[{"errorCode":"INVALID_AUTH_HEADER"},{"errorCode":"INVALID_SESSION_ID"}]', True),
        (401, b'[{"errorCode":"INVALID_AUTH_HEADER","message":"no header"}]', False),
        (403, _EXPIRED, False),
        (500, _EXPIRED, False),
        (401, b"", False),
        (401, b"[]", False),  # a list, but of no errors
        (401, b"<html>401 Unauthorized</html>", False),  # not JSON at all
        (401, b"5", False),
        (401, b'"INVALID_SESSION_ID"', False),
        (401, b'["INVALID_SESSION_ID"]', False),
        (401, b'{"errorCode":"INVALID_SESSION_ID"}', False),
        (401, _EXPIRED.ljust(MAX_FAULT_BYTES), True),  # as large as an answer gets parsed
        (401, _EXPIRED.ljust(MAX_FAULT_BYTES + 1), False),
    ],
)
def test_only_a_rest_401_saying_invalid_session_is_an_expiry(
    status: int, body: bytes, expired: bool
) -> None:
    assert rest_invalid_session(status, body) is expired
