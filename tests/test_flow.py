"""The call policies driven by hand, as httpx's tests drive ``auth_flow``: ``next()`` for the
first step, ``send()`` for each result. No I/O, no refresher: every step is checked."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import pytest
from lxml import etree

from zeep_sfrefresh import JwtAccessTokenError, SessionNotRefreshableError, TokenDestinationError
from zeep_sfrefresh._callouts import TokenRequest, token_request_flow
from zeep_sfrefresh._flow import Join, Refresh, Send, Step, Verdict, soap_call
from zeep_sfrefresh._routing import DestinationPolicy
from zeep_sfrefresh._tokens import Generation, Token
from zeep_sfrefresh.testing import wire

ENV = "http://schemas.xmlsoap.org/soap/envelope/"
PARTNER = "urn:partner.soap.sforce.com"
INSTANCE = "https://acme.my.salesforce.com"
ADDRESS = "https://login.salesforce.com/services/Soap/u/66.0"
POLICY = DestinationPolicy()
FAULT = wire.invalid_session_fault(wire.FLAVOURS["u"])
REST_401 = b'[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]'


@dataclass(frozen=True)
class Answer:
    status_code: int
    content: bytes = b""


def generation(access_token: str, epoch: int = 1, instance: str = INSTANCE) -> Generation:
    return Generation(
        Token({"access_token": access_token, "refresh_token": "r", "instance_url": instance}),
        epoch,
    )


def envelope() -> etree._Element:
    return etree.fromstring(
        f'<soap-env:Envelope xmlns:soap-env="{ENV}"><soap-env:Body>'
        f'<ns0:query xmlns:ns0="{PARTNER}"><ns0:queryString>SELECT Id FROM Contact'
        "</ns0:queryString></ns0:query></soap-env:Body></soap-env:Envelope>"
    )


def call(current: Generation, address: str = ADDRESS) -> Generator[Step, Any, Any]:
    return soap_call(envelope(), address, current, route=True, policy=POLICY)


def finish(flow: Generator[Step, Any, Any], value: object) -> Any:
    with pytest.raises(StopIteration) as done:
        flow.send(value)
    return done.value.value


def _message(step: object) -> bytes:
    """The envelope a step sends, asserting that it is a ``Send`` with one."""
    assert isinstance(step, Send)
    assert step.message is not None
    return step.message


def test_a_good_session_is_sent_once_and_judged_usable() -> None:
    current = generation("00Dx!OLD")
    flow = call(current)
    send = next(flow)
    assert isinstance(send, Send)
    assert send.address == f"{INSTANCE}/services/Soap/u/66.0"  # routed to the instance
    assert send.message is not None
    sent = etree.fromstring(send.message)
    assert [node.text for node in sent.iter(f"{{{PARTNER}}}sessionId")] == ["00Dx!OLD"]
    ok = Answer(200, b"<ok/>")
    verdict = flow.send(ok)
    assert verdict == Verdict(current, True, "the session worked")
    assert finish(flow, None) is ok


def test_an_expired_session_is_refreshed_and_resent_once() -> None:
    current, fresh = generation("00Dx!OLD"), generation("00Dx!NEW", 2)
    flow = call(current)
    first = next(flow)
    assert isinstance(first, Send)
    refresh = flow.send(Answer(500, FAULT))
    assert isinstance(refresh, Refresh)
    assert refresh.sent is current
    assert refresh.reason == "INVALID_SESSION_ID from acme.my.salesforce.com"
    again = flow.send(fresh)
    sent = _message(again)
    assert b"00Dx!NEW" in sent
    assert b"00Dx!OLD" not in sent
    ok = Answer(200)
    assert flow.send(ok) == Verdict(fresh, True, refresh.reason)
    assert finish(flow, None) is ok


def test_a_call_whose_refresh_is_announced_joins_it_and_goes_out_with_its_token() -> None:
    current, fresh = generation("00Dx!OLD"), generation("00Dx!NEW", 2)
    flow: Generator[Step, Any, Any] = soap_call(
        envelope(), ADDRESS, current, route=True, policy=POLICY, announced=True
    )
    assert next(flow) == Join(current)
    send = flow.send(fresh)
    sent = _message(send)
    assert b"00Dx!NEW" in sent
    assert b"00Dx!OLD" not in sent
    ok = Answer(200)
    assert flow.send(ok) == Verdict(fresh, True, "the session worked")
    assert finish(flow, None) is ok


def test_a_join_that_brings_no_token_sends_the_one_in_hand_and_recovers_as_usual() -> None:
    current, fresh = generation("00Dx!OLD"), generation("00Dx!NEW", 2)
    flow: Generator[Step, Any, Any] = soap_call(
        envelope(), ADDRESS, current, route=True, policy=POLICY, announced=True
    )
    assert next(flow) == Join(current)
    send = flow.send(current)  # the refresh under way stored nothing in time
    sent = _message(send)
    assert b"00Dx!OLD" in sent
    assert flow.send(Answer(500, FAULT)) == Refresh(
        current, "INVALID_SESSION_ID from acme.my.salesforce.com"
    )
    again = flow.send(fresh)
    sent = _message(again)
    assert b"00Dx!NEW" in sent


def test_only_a_request_that_carries_the_token_joins() -> None:
    current = generation("00Dx!OLD")
    unknown_api = "https://login.salesforce.com/services/Soap/unknown/66.0"
    flow: Generator[Step, Any, Any] = soap_call(
        envelope(), unknown_api, current, route=True, policy=POLICY, announced=True
    )
    assert isinstance(next(flow), Send)  # no SessionHeader to carry the token: no wait
    outside: Generator[Step, Any, Any] = soap_call(
        envelope(), "https://example.com/wsdl", current, route=True, policy=POLICY, announced=True
    )
    assert isinstance(next(outside), Send)
    rest = token_request_flow(
        TokenRequest("GET", f"{INSTANCE}/services/data/v66.0/query?q=x"),
        current,
        POLICY,
        announced=True,
    )
    assert next(rest) == Join(current)
    send = rest.send(generation("00Dx!NEW", 2))
    assert isinstance(send, Send)
    assert send.headers == {"Authorization": "Bearer 00Dx!NEW"}


def test_a_second_expiry_is_judged_and_raises() -> None:
    flow = call(generation("00Dx!OLD"))
    next(flow)
    flow.send(Answer(500, FAULT))
    fresh = generation("00Dx!NEW", 2)
    flow.send(fresh)
    verdict = flow.send(Answer(500, FAULT))
    assert isinstance(verdict, Verdict)
    assert verdict.usable is False
    with pytest.raises(SessionNotRefreshableError, match="rejected the refreshed session too"):
        flow.send(None)


def test_another_fault_is_returned_as_is() -> None:
    current = generation("00Dx!OLD")
    flow = call(current)
    next(flow)
    other = Answer(500, wire.soap_fault(wire.FLAVOURS["u"], "INVALID_FIELD", "No such column"))
    assert flow.send(other) == Verdict(current, True, "the session worked")
    assert finish(flow, None) is other


def test_a_path_outside_soap_carries_no_session_and_ends_at_once() -> None:
    flow = call(generation("00Dx!OLD"), "https://example.com/wsdl")
    send = next(flow)
    assert isinstance(send, Send)
    assert send.address == "https://example.com/wsdl"
    assert send.message is not None
    assert b"00Dx!OLD" not in send.message
    answer = Answer(500, FAULT)
    assert finish(flow, answer) is answer  # no refresh, whatever it answers


def test_guards_refuse_before_anything_is_sent() -> None:
    jwt = generation("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")
    with pytest.raises(JwtAccessTokenError):
        next(call(jwt))
    elsewhere = generation("00Dx!OLD", instance="https://evil.example.com")
    with pytest.raises(TokenDestinationError):
        next(call(elsewhere))


def test_token_request_flow_outcomes() -> None:
    current, fresh = generation("00Dx!OLD"), generation("00Dx!NEW", 2)
    request = TokenRequest("GET", f"{INSTANCE}/services/data/v66.0/query?q=x")
    flow = token_request_flow(request, current, POLICY)
    send = next(flow)
    assert isinstance(send, Send)
    assert send.headers == {"Authorization": "Bearer 00Dx!OLD"}
    assert isinstance(flow.send(Answer(401, REST_401)), Refresh)
    again = flow.send(fresh)
    assert isinstance(again, Send)
    assert again.headers == {"Authorization": "Bearer 00Dx!NEW"}
    assert flow.send(Answer(401, REST_401)) == Verdict(
        fresh, False, "INVALID_SESSION_ID from acme.my.salesforce.com"
    )
    answer, outcome = finish(flow, None)
    assert (answer.status_code, outcome) == (401, "expired_again")

    stream = token_request_flow(request, current, POLICY, resendable=False)
    next(stream)
    assert isinstance(stream.send(Answer(401, REST_401)), Refresh)
    assert finish(stream, fresh)[1] == "refreshed_not_resent"

    away = token_request_flow(
        TokenRequest("GET", "https://example.com/x", headers={"Authorization": "Bearer stale"}),
        current,
        POLICY,
    )
    send = next(away)
    assert isinstance(send, Send)
    assert send.headers == {}  # not even the header the caller gave
    assert finish(away, Answer(401, REST_401))[1] is None


def test_a_send_step_shows_neither_its_message_nor_its_headers() -> None:
    current = generation("00Dx!SESSION")
    send = next(call(current))
    assert isinstance(send, Send)
    assert b"00Dx!SESSION" in _message(send)  # what the repr must not show
    bearer = Send(f"{INSTANCE}/x", None, "GET", {"Authorization": "Bearer 00Dx!SESSION"})
    for step in (send, bearer):
        text = repr(step)
        assert "00Dx!SESSION" not in text
        assert text == f"Send(address={step.address!r}, method={step.method!r})"
