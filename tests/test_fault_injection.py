"""Fault injection: each failure the transport can meet, as one test with its expected outcome.

Read top to bottom: the token endpoint, the SOAP path, the token stores. Every case runs with
the sync and the async transport (the ``harness`` fixture), over real sockets, and must end
in bounded time (``timeout`` marker: a hang is a failure, not a slow pass). The rules they
check: no resend after anything but ``INVALID_SESSION_ID``; at most one refresh and one
resend per call; a failed refresh is one typed error and sends nothing; no token is lost.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any

import pytest
import requests
import zeep
from conftest import SOQL, Harness, InBackground, field_values, make_oauth, wait_for
from forking import Child, Report
from lxml import etree
from zeep.exceptions import Fault
from zeep.plugins import HistoryPlugin

from zeep_sfrefresh import (
    PARTNER_WSDL,
    AsyncSalesforceTransport,
    CircuitBreaker,
    FileTokenStore,
    MemoryTokenStore,
    ReauthorizationRequiredError,
    RedisTokenStore,
    RefreshEvent,
    SalesforceTransport,
    SessionNotRefreshableError,
    SfRefreshError,
    TokenRefreshError,
    TokenStore,
    TokenStoreError,
)
from zeep_sfrefresh._breaker import MAX_RETRY_AFTER
from zeep_sfrefresh._exchange import parse_retry_after
from zeep_sfrefresh._refresh import Refresher
from zeep_sfrefresh._tokens import Token, fingerprint
from zeep_sfrefresh.testing import StandInOrg
from zeep_sfrefresh.testing.fleet import wait_for_posts
from zeep_sfrefresh.testing.insecure import INSECURE_TRANSPORT_VARIABLE
from zeep_sfrefresh.testing.redis_server import RedisServer

Build = Callable[..., Harness]

STRESS_THREADS = 64
CALLS_PER_THREAD = 40

pytestmark = [
    pytest.mark.timeout(60),
    # The fork cases fork a process that runs the stand-in org in a thread (see below).
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]


# --- the token endpoint ---------------------------------------------------------------------


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
        h.client.service.create([h.contact("Alan")])
    exc = info.value
    assert isinstance(exc, zeep.exceptions.Error)
    assert exc.error == error
    if error == "invalid_grant":
        assert exc.description == "expired access/refresh token"
    assert exc.__cause__ is not None
    assert (h.org.soap_posts, h.org.token_requests) == (1, 1)
    assert h.org.operations["create"] == 0
    assert h.saved == []
    h.assert_no_secrets(str(exc) + repr(exc) + str(exc.__cause__) + repr(exc.__cause__))


@pytest.mark.parametrize(
    ("failure", "status", "retry_after"),
    [("rate_limited_429", 429, 30.0), ("unavailable_503", 503, 120.0)],
)
def test_429_and_503_with_retry_after_are_honoured(
    harness: Build, failure: str, status: int, retry_after: float
) -> None:
    h = harness()
    h.org.expire_all_sessions()
    h.org.token_failure = failure
    with pytest.raises(TokenRefreshError, match=f"HTTP {status}") as info:
        h.client.service.getServerTimestamp()
    assert (info.value.status_code, info.value.retry_after) == (status, retry_after)
    h.org.token_failure = None
    # Until Retry-After has passed, expiries fail at once, without a token request.
    with pytest.raises(TokenRefreshError, match="asked to wait"):
        h.client.service.getServerTimestamp()
    assert (h.org.token_requests, h.org.soap_posts) == (1, 2)


def test_refused_token_connection(harness: Build) -> None:
    with StandInOrg() as gone:
        dead_url = gone.token_url
    h = harness(token_url=dead_url)
    h.org.expire_all_sessions()
    with pytest.raises(TokenRefreshError, match="ConnectionError") as info:
        h.client.service.getServerTimestamp()
    assert isinstance(info.value.__cause__, requests.ConnectionError)
    assert h.org.soap_posts == 1


def test_token_request_timeout_is_bounded(harness: Build) -> None:
    h = harness(token_timeout=0.3)
    h.org.expire_all_sessions()
    h.org.token_delay = 2.0
    with pytest.raises(TokenRefreshError, match="timed out") as info:
        h.client.service.getServerTimestamp()
    assert info.value.unanswered  # it reached the server: the answer may have been a token
    assert h.org.soap_posts == 1


def test_a_refresh_token_refused_for_good_is_never_sent_again(harness: Build) -> None:
    h = harness()
    h.org.expire_all_sessions()
    h.org.token_failure = "invalid_grant"
    errors = []
    for _ in range(10):
        with pytest.raises(ReauthorizationRequiredError, match="authorise") as info:
            h.client.service.getServerTimestamp()
        errors.append(info.value)
    assert (h.org.token_requests, h.org.soap_posts) == (1, 10)  # one request, ten failed calls
    assert all(e.error == "invalid_grant" for e in errors)  # the same typed error each time
    assert all(isinstance(e, TokenRefreshError) for e in errors)
    h.assert_no_secrets("".join(str(e) + repr(e) for e in errors))


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


def test_a_token_without_refresh_token_is_refused_when_the_transport_is_built(
    harness: Build, sf_org: StandInOrg
) -> None:
    token = sf_org.issue_token()
    del token["refresh_token"]
    with pytest.raises(ValueError, match=r"refresh_token.*scope"):
        harness(token=token)
    assert (sf_org.token_requests, sf_org.soap_posts) == (0, 0)


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


# --- the SOAP path --------------------------------------------------------------------------


def test_a_session_dead_again_after_refresh_surfaces_as_fault(harness: Build) -> None:
    h = harness()
    h.org.fail_next_soap("INVALID_SESSION_ID", count=2)
    with pytest.raises(Fault, match="INVALID_SESSION_ID"):
        h.client.service.query(SOQL)
    assert (h.org.token_requests, h.org.soap_posts) == (1, 2)


def test_no_resend_when_the_resend_connection_drops(harness: Build) -> None:
    h = harness()
    h.org.expire_all_sessions()
    h.org.fail_next_soap("INVALID_SESSION_ID")
    h.org.drop_next_soap()  # queued after the fault: hits the resend
    with pytest.raises(h.connection_error):
        h.client.service.create([h.contact("Edsger")])
    assert (h.org.soap_posts, h.org.token_requests) == (2, 1)


def test_no_resend_after_a_dropped_connection(harness: Build) -> None:
    h = harness()
    h.org.drop_next_soap()
    with pytest.raises(h.connection_error):
        h.client.service.create([h.contact("Barbara")])
    assert (h.org.soap_posts, h.org.token_requests) == (1, 0)
    assert h.org.operations["create"] == 0


def test_no_resend_after_a_read_timeout(harness: Build) -> None:
    h = harness(operation_timeout=0.3)
    h.org.expire_all_sessions()
    h.org.soap_delay = 1.0
    with pytest.raises(h.timeout_error):
        h.client.service.create([h.contact("Linus")])
    assert (h.org.soap_posts, h.org.token_requests) == (1, 0)


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
        h.client.service.create([h.contact("Ada")])
    assert code in str(info.value.message)
    assert (h.org.soap_posts, h.org.token_requests) == (1, 0)
    assert h.org.operations["create"] == 0


def test_a_real_query_error_is_not_mistaken_for_expiry(harness: Build) -> None:
    h = harness()
    with pytest.raises(Fault, match="INVALID_FIELD"):
        h.client.service.query("SELECT INVALID_SESSION_ID FROM Contact")
    assert (h.org.soap_posts, h.org.token_requests) == (1, 0)


def test_a_success_that_mentions_invalid_session_id_is_not_a_fault(harness: Build) -> None:
    h = harness()
    result = h.client.service.query("SELECT Id, Description FROM Contact").body.result
    descriptions = [field_values(record).get("Description") or "" for record in result.records]
    assert any("INVALID_SESSION_ID" in text for text in descriptions)
    assert h.org.token_requests == 0
    assert h.org.soap_posts == 1


# --- the token stores -----------------------------------------------------------------------


class _BrokenWrites(FileTokenStore):
    """A file store whose disk stops taking writes after construction (a full disk, say)."""

    broken = False

    def save(
        self,
        token: Mapping[str, Any],
        *,
        replaces: int | None,
        settings: Mapping[str, str] | None = None,
    ) -> int:
        if self.broken:
            raise TokenStoreError(f"cannot write {self.path}: No space left on device")
        return super().save(token, replaces=replaces, settings=settings)


def test_a_failed_store_write_keeps_the_new_token(harness: Build, tmp_path: Path) -> None:
    store = _BrokenWrites(tmp_path / "token.json")
    h = harness(store=store)
    h.org.rotation = True
    store.broken = True
    h.org.expire_all_sessions()
    with pytest.raises(TokenStoreError, match="No space left"):
        h.client.service.getServerTimestamp()
    new = h.transport.token
    assert new.access_token != h.issued["access_token"]
    assert h.saved == [new.as_dict()]  # token_updater still got it: nothing lost
    assert h.org.refresh_token_state(new.refresh_token or "") == "active"
    h.client.service.getServerTimestamp()  # the next call uses it, no token request
    assert h.org.token_requests == 1


def test_an_unreadable_store_fails_closed(harness: Build, tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    h = harness(store=FileTokenStore(path))
    path.unlink()
    path.mkdir()  # a folder where the file should be
    h.org.expire_all_sessions()
    with pytest.raises(TokenStoreError, match="cannot read"):
        h.client.service.getServerTimestamp()
    assert h.org.token_requests == 0


def test_a_corrupt_token_file_is_a_clear_error_and_stays_as_it_was(
    harness: Build, tmp_path: Path
) -> None:
    path = tmp_path / "token.json"
    h = harness(store=FileTokenStore(path))
    path.write_text("{ not json")
    h.org.expire_all_sessions()
    with pytest.raises(TokenStoreError, match="left as is"):
        h.client.service.getServerTimestamp()
    assert path.read_text() == "{ not json"
    assert h.org.token_requests == 0


def test_redis_down_fails_closed_in_bounded_time(harness: Build, redis_server: RedisServer) -> None:
    h = harness(store=RedisTokenStore(redis_server.client(), "sf:token", lock_wait=1))
    redis_server.stop()
    h.org.expire_all_sessions()
    with pytest.raises(TokenStoreError, match="Redis could not"):
        h.client.service.getServerTimestamp()
    assert h.org.token_requests == 0


# --- refresh tokens that must not be sent again ---------------------------------------------


def test_after_refused_for_good_a_new_token_from_the_store_or_the_application_is_used(
    harness: Build, tmp_path: Path
) -> None:
    store = FileTokenStore(tmp_path / "token.json")
    h = harness(store=store)
    h.org.expire_all_sessions()
    h.org.token_failure = "invalid_grant"
    with pytest.raises(ReauthorizationRequiredError):
        h.client.service.getServerTimestamp()
    h.org.token_failure = None
    # An operator (or another worker) writes a token from a new authorisation to the store.
    with store.lock():
        current = store.load()
        assert current is not None
        assert current.intent is not None
        assert current.intent.state == "spent"
        store.save(h.org.issue_token(), replaces=current.version)
    assert h.client.service.getServerTimestamp() is not None
    # The application hands over a new token itself.
    h.org.expire_all_sessions()
    h.org.token_failure = "invalid_grant"
    with pytest.raises(ReauthorizationRequiredError):
        h.client.service.getServerTimestamp()
    h.transport.use_token(h.org.issue_token())
    assert h.client.service.getServerTimestamp() is not None
    assert h.org.token_requests == 2


def test_a_spent_refresh_token_is_not_sent_by_other_workers_either(
    harness: Build, tmp_path: Path
) -> None:
    path = tmp_path / "token.json"
    a = harness(store=FileTokenStore(path))
    b = harness(store=FileTokenStore(path))
    a.org.expire_all_sessions()
    a.org.token_failure = "invalid_grant"
    with pytest.raises(ReauthorizationRequiredError):
        a.client.service.getServerTimestamp()
    for _ in range(3):
        with pytest.raises(ReauthorizationRequiredError, match="invalid_grant"):
            b.client.service.getServerTimestamp()
    assert a.org.token_requests == 1
    # A worker started with a token from a new authorisation puts it in place of the spent one.
    a.org.token_failure = None
    c = harness(store=FileTokenStore(path))
    assert c.transport.token.access_token == c.issued["access_token"]
    assert c.client.service.getServerTimestamp() is not None
    b.client.service.getServerTimestamp()  # meets the expiry, adopts c's token
    assert b.transport.token.access_token == c.issued["access_token"]
    assert a.org.token_requests == 1


def test_an_unanswered_refresh_gets_one_more_attempt(harness: Build) -> None:
    h = harness()
    h.org.expire_all_sessions()
    h.org.token_failure = "drop_after_issue"  # issued server-side, never answered
    with pytest.raises(TokenRefreshError) as info:
        h.client.service.getServerTimestamp()
    assert info.value.unanswered
    assert not isinstance(info.value, ReauthorizationRequiredError)
    h.org.token_failure = None
    assert h.client.service.getServerTimestamp() is not None  # the one further attempt
    assert h.org.token_requests == 2


def test_a_refresh_token_unanswered_twice_is_never_sent_again(harness: Build) -> None:
    h = harness()
    h.org.expire_all_sessions()
    h.org.token_failure = "drop_after_issue"
    with pytest.raises(TokenRefreshError):
        h.client.service.getServerTimestamp()
    for _ in range(4):
        with pytest.raises(ReauthorizationRequiredError, match="no answer"):
            h.client.service.getServerTimestamp()
    assert (h.org.token_requests, h.org.soap_posts) == (2, 5)


def test_a_read_timeout_under_rotation_costs_at_most_one_more_request(harness: Build) -> None:
    # The server rotated during the request the client gave up on: the rotated token is lost
    # with the answer. The one further attempt then revokes a family that was lost anyway;
    # after it nothing more is sent.
    h = harness(token_timeout=0.5)
    h.org.rotation = True
    h.org.token_answer_delay = 2.0
    h.org.expire_all_sessions()
    with pytest.raises(TokenRefreshError, match="timed out") as info:
        h.client.service.getServerTimestamp()
    assert info.value.unanswered
    h.org.token_answer_delay = 0.0
    time.sleep(2.0)  # until the server has written its late answer to nobody
    for _ in range(4):
        with pytest.raises(ReauthorizationRequiredError):
            h.client.service.getServerTimestamp()
    assert h.org.token_requests == 2
    assert h.org.refresh_token_state(h.issued["refresh_token"]) == "revoked"


def test_transient_failures_keep_trying_on_later_calls(harness: Build) -> None:
    with StandInOrg() as gone:
        dead_url = gone.token_url
    h = harness(token_url=dead_url)  # connection refused: nothing was sent
    h.org.expire_all_sessions()
    for _ in range(3):
        with pytest.raises(TokenRefreshError) as info:
            h.client.service.getServerTimestamp()
        assert not info.value.unanswered
        assert not isinstance(info.value, ReauthorizationRequiredError)
    h.oauth.auto_refresh_url = h.org.token_url  # fixed on the session: takes effect
    assert h.client.service.getServerTimestamp() is not None
    assert h.org.token_requests == 1


# --- the token request's answer ----------------------------------------------------------------


def test_retry_after_as_an_http_date_is_honoured(harness: Build) -> None:
    h = harness()
    h.org.expire_all_sessions()
    h.org.token_failure = "rate_limited_429_date"
    with pytest.raises(TokenRefreshError, match="HTTP 429") as info:
        h.client.service.getServerTimestamp()
    assert info.value.retry_after is not None
    assert 28 <= info.value.retry_after <= 31
    h.org.token_failure = None
    with pytest.raises(TokenRefreshError, match="asked to wait") as waiting:
        h.client.service.getServerTimestamp()
    assert waiting.value.retry_after is not None
    assert waiting.value.retry_after > 25
    assert h.org.token_requests == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("Wed, 21 Oct 2026 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2026 07:27:00 GMT", 0.0),  # in the past: no wait
        ("soon", None),
        ("-5", None),
        ("", None),
    ],
)
def test_retry_after_forms(value: str, expected: float | None) -> None:
    date = "Wed, 21 Oct 2026 07:28:00 GMT"  # the answer's own Date header
    assert parse_retry_after(value, date=date, now=0.0) == expected


def test_token_timeout_bounds_the_whole_token_request(harness: Build) -> None:
    h = harness(token_timeout=0.5)
    h.org.expire_all_sessions()
    h.org.token_trickle = 0.01  # a byte every 10 ms: each read is quick, the answer is not
    started = time.monotonic()
    with pytest.raises(TokenRefreshError, match="timed out") as info:
        h.client.service.getServerTimestamp()
    elapsed = time.monotonic() - started
    assert elapsed < 0.5 + 1.0, elapsed
    assert info.value.unanswered
    assert h.org.soap_posts == 1


def test_a_token_url_that_is_not_the_token_endpoint(harness: Build) -> None:
    h = harness()
    wrong = h.org.url + "/services/oauth2/tokens"
    h.oauth.auto_refresh_url = wrong
    h.org.expire_all_sessions()
    with pytest.raises(TokenRefreshError) as info:
        h.client.service.getServerTimestamp()
    text = str(info.value)
    assert wrong in text
    assert "HTTP 404" in text
    assert "/services/oauth2/token" in text.replace(wrong, "")  # the hint
    assert info.value.status_code == 404
    assert not info.value.unanswered
    h.assert_no_secrets(text + repr(info.value))
    h.oauth.auto_refresh_url = h.org.token_url  # fixed on the session: takes effect
    assert h.client.service.getServerTimestamp() is not None


# --- the token stores, continued ----------------------------------------------------------------


def test_after_a_failed_store_write_the_newest_token_is_stored_first(
    harness: Build, tmp_path: Path
) -> None:
    store = _BrokenWrites(tmp_path / "token.json")
    h = harness(store=store)
    h.org.rotation = True
    store.broken = True
    h.org.expire_all_sessions()
    with pytest.raises(TokenStoreError):
        h.client.service.getServerTimestamp()
    store.broken = False
    for _ in range(3):
        h.org.expire_all_sessions()
        assert h.client.service.getServerTimestamp() is not None
    assert (h.org.token_requests, h.org.family_revocations, h.org.token_failures) == (4, 0, 0)
    stored = store.load()
    assert stored is not None
    assert stored.token["access_token"] == h.transport.token.access_token
    assert h.org.refresh_token_state(stored.token["refresh_token"]) == "active"


def test_after_a_failed_redis_write_the_newest_token_is_stored_first(
    harness: Build, redis_server: RedisServer
) -> None:
    client = redis_server.client()
    h = harness(store=RedisTokenStore(client, "{sf:token}", lock_timeout=1))
    h.org.rotation = True
    h.org.expire_all_sessions()
    release = h.org.hold_token_requests()
    caller = InBackground(h.client.service.getServerTimestamp)
    wait_for(lambda: h.org.token_requests == 1)  # the intent is written: now Redis stops writing
    client.config_set("min-replicas-to-write", 1)
    release.set()
    assert isinstance(caller.join().error, TokenStoreError), caller.error
    client.config_set("min-replicas-to-write", 0)
    for _ in range(3):
        h.org.expire_all_sessions()
        assert h.client.service.getServerTimestamp() is not None
    assert (h.org.token_requests, h.org.family_revocations, h.org.token_failures) == (4, 0, 0)


def test_a_worker_waits_for_the_token_another_could_not_store(
    harness: Build, tmp_path: Path
) -> None:
    path = tmp_path / "token.json"
    store = _BrokenWrites(path)
    a = harness(store=store)
    b = harness(store=FileTokenStore(path), overlap_wait=0.3)
    a.org.rotation = True
    store.broken = True
    a.org.expire_all_sessions()
    with pytest.raises(TokenStoreError):
        a.client.service.getServerTimestamp()  # a holds the rotated token; the store does not
    # b must not send the refresh token a has already used: it would revoke the family.
    with pytest.raises(ReauthorizationRequiredError, match="never stored its result"):
        b.client.service.getServerTimestamp()
    assert a.org.token_requests == 1
    store.broken = False
    a.org.expire_all_sessions()
    assert a.client.service.getServerTimestamp() is not None  # stores its token, then refreshes
    assert b.client.service.getServerTimestamp() is not None  # adopts
    assert b.transport.token.access_token == a.transport.token.access_token
    assert (a.org.token_requests, a.org.family_revocations) == (2, 0)


def test_a_symlinked_token_file_is_refused(harness: Build, tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    h = harness(store=FileTokenStore(other))
    link = tmp_path / "token.json"
    link.symlink_to(other)
    with pytest.raises(TokenStoreError, match="symbolic link"):
        harness(store=FileTokenStore(link))
    assert h.org.token_requests == 0


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_token_file_open_to_others_is_refused(harness: Build, tmp_path: Path, mode: int) -> None:
    path = tmp_path / "token.json"
    h = harness(store=FileTokenStore(path))
    path.chmod(mode)
    h.org.expire_all_sessions()
    with pytest.raises(TokenStoreError, match=f"chmod 600 {path}") as info:
        h.client.service.getServerTimestamp()
    assert f"{mode:04o}" in str(info.value)
    assert h.org.token_requests == 0
    path.chmod(0o600)
    assert h.client.service.getServerTimestamp() is not None


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown to another user needs root"
)
def test_a_token_file_owned_by_another_user_is_refused(harness: Build, tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    h = harness(store=FileTokenStore(path))
    os.chown(path, 65534, -1)
    h.org.expire_all_sessions()
    with pytest.raises(TokenStoreError, match="owned by uid 65534"):
        h.client.service.getServerTimestamp()
    assert h.org.token_requests == 0


class _SlowWrites(RedisTokenStore):
    """A Redis store whose holder stalls between the token answer and the store write."""

    pause = 0.0

    def save(self, token: Mapping[str, Any], *, replaces: int | None) -> int:
        time.sleep(self.pause)
        return super().save(token, replaces=replaces)


def test_a_redis_lease_is_kept_alive_while_its_holder_works(
    harness: Build, redis_server: RedisServer
) -> None:
    slow = _SlowWrites(redis_server.client(), "{sf:token}", lock_timeout=1)
    a = harness(store=slow)
    b = harness(store=RedisTokenStore(redis_server.client(), "{sf:token}", lock_timeout=1))
    a.org.rotation = True
    a.org.expire_all_sessions()
    slow.pause = 2.0  # twice the lease
    caller = InBackground(a.client.service.getServerTimestamp)
    wait_for(lambda: a.org.token_requests == 1)
    b.client.service.getServerTimestamp()  # waits for the lock, then adopts a's token
    assert caller.join().error is None, caller.error
    assert (a.org.token_requests, a.org.family_revocations) == (1, 0)
    assert b.transport.token.access_token == a.transport.token.access_token


_WORKER_SETUP = """
import json, sys
from requests_oauthlib import OAuth2Session
config = json.loads(sys.argv[1])
oauth = OAuth2Session(
    config["client_id"], token=config["token"], auto_refresh_url=config["token_url"],
    auto_refresh_kwargs={"client_id": config["client_id"], "client_secret": config["secret"]},
)
"""

_STOPPING_WORKER = """
import os, signal
import redis, zeep
from zeep_sfrefresh import PARTNER_WSDL, RedisTokenStore, SalesforceTransport

class StopsBeforeWriting(RedisTokenStore):
    def save(self, token, *, replaces):
        if replaces is not None:  # the refresh's write: stop the whole process, watchdog too
            print("stopping", flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)
        return super().save(token, replaces=replaces)

store = StopsBeforeWriting(
    redis.Redis.from_url(config["redis"], socket_timeout=5), "{sf:token}", lock_timeout=1
)
client = zeep.Client(PARTNER_WSDL, transport=SalesforceTransport(oauth, store=store))
print("ready", flush=True)
sys.stdin.readline()
client.service.getServerTimestamp()
print("done", flush=True)
"""


def _worker_process(
    script: str, org: StandInOrg, token: dict[str, str], **config: object
) -> tuple[subprocess.Popen[str], IO[str], IO[str]]:
    """Run ``_WORKER_SETUP`` + ``script`` in a new interpreter (stdin, stdout as text pipes):
    a worker of its own with an ``OAuth2Session`` named ``oauth`` on ``token``."""
    settings = {
        "client_id": org.client_id,
        "secret": org.client_secret,
        "token_url": org.token_url,
        "token": token,
        **config,
    }
    process = subprocess.Popen(
        [sys.executable, "-c", _WORKER_SETUP + script, json.dumps(settings)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, INSECURE_TRANSPORT_VARIABLE: "1"},
    )
    assert process.stdin is not None
    assert process.stdout is not None
    return process, process.stdin, process.stdout


def test_a_redis_lock_taken_from_a_stopped_holder_causes_no_revocation(
    harness: Build, redis_server: RedisServer, sf_org: StandInOrg
) -> None:
    sf_org.rotation = True
    token = sf_org.issue_token()
    holder, to_holder, from_holder = _worker_process(
        _STOPPING_WORKER, sf_org, token, redis=redis_server.url
    )
    try:
        assert from_holder.readline().strip() == "ready"
        b = harness(
            token=token,
            store=RedisTokenStore(redis_server.client(), "{sf:token}", lock_timeout=1),
            overlap_wait=10,
        )
        sf_org.expire_all_sessions()
        to_holder.write("go\n")
        to_holder.flush()
        assert from_holder.readline().strip() == "stopping"  # answered, not yet stored
        # b takes the expired lock, finds the holder's intent, and waits.
        caller = InBackground(b.client.service.getServerTimestamp)
        time.sleep(2.0)
        assert caller.running
        os.kill(holder.pid, signal.SIGCONT)
        assert from_holder.readline().strip() == "done"
        assert caller.join().error is None, caller.error
        assert (sf_org.token_requests, sf_org.family_revocations) == (1, 0)
    finally:
        holder.kill()
        holder.wait(10)


# --- what errors, logs and plugins show ----------------------------------------------------------


def test_a_fault_that_echoes_the_session_id_leaks_it_nowhere(harness: Build) -> None:
    h = harness()
    h.org.expire_all_sessions()
    h.client.service.getServerTimestamp()
    fresh = h.transport.token.access_token
    h.org.fail_next_soap(
        "INVALID_SESSION_ID",
        f"INVALID_SESSION_ID: Session not found, missing session key: {fresh}",
        count=3,
    )
    with pytest.raises(SessionNotRefreshableError) as info:
        h.client.service.getServerTimestamp()
    error = info.value
    shown = "".join(
        [
            str(error),
            repr(error),
            repr(error.args),
            str(error.message),
            *traceback.format_exception(error),
        ]
    )
    assert fresh not in shown
    assert "missing session key: ***" in str(error)
    # zeep's own Fault for an answer the transport passes through is masked the same way.
    h.org.fail_next_soap("INVALID_FIELD", f"No such column near session key: {fresh}")
    with pytest.raises(Fault) as other:
        h.client.service.getServerTimestamp()
    assert fresh not in str(other.value) + repr(other.value.args)
    h.assert_no_secrets(shown + str(other.value))


def test_no_session_id_stays_in_the_envelope_plugins_keep(sf_org: StandInOrg) -> None:
    history, async_history = HistoryPlugin(), HistoryPlugin()
    issued = sf_org.issue_token()
    transport = SalesforceTransport(make_oauth(sf_org, dict(issued), []))
    client = zeep.Client(PARTNER_WSDL, transport=transport, plugins=[history])
    sf_org.expire_all_sessions()
    client.service.getServerTimestamp()  # sent twice: before and after the refresh

    async_transport = AsyncSalesforceTransport(make_oauth(sf_org, dict(issued), []))

    async def main() -> None:
        async with zeep.AsyncClient(
            PARTNER_WSDL, transport=async_transport, plugins=[async_history]
        ) as async_client:
            await async_client.service.getServerTimestamp()

    asyncio.run(main())
    for plugin, used in ((history, transport), (async_history, async_transport)):
        sent = etree.tostring(plugin.last_sent["envelope"]).decode()
        assert issued["access_token"] not in sent
        assert used.token.access_token not in sent
        assert "sessionId" not in sent  # the header the transport added is gone again
        assert used.token.access_token in sf_org.sessions_seen  # it was sent, though


def test_a_session_header_the_caller_passes_is_left_as_given(sf_org: StandInOrg) -> None:
    history = HistoryPlugin()
    issued = sf_org.issue_token()
    transport = SalesforceTransport(make_oauth(sf_org, issued, []))
    client = zeep.Client(PARTNER_WSDL, transport=transport, plugins=[history])
    header = client.get_element("{urn:partner.soap.sforce.com}SessionHeader")
    client.service.getServerTimestamp(_soapheaders=[header(sessionId="placeholder")])
    sent = etree.tostring(history.last_sent["envelope"]).decode()
    assert "placeholder" in sent
    assert issued["access_token"] not in sent
    assert sf_org.sessions_seen == [issued["access_token"]]


# --- misconfiguration -----------------------------------------------------------------------------


def test_anything_but_a_credential_is_a_type_error_saying_what_is_accepted(
    sf_org: StandInOrg,
) -> None:
    token = sf_org.issue_token()
    for wrong in (token, requests.Session(), "3MVG9", None):
        with pytest.raises(TypeError, match="OAuth2Session") as info:
            SalesforceTransport(wrong)  # type: ignore[arg-type]
        assert token["access_token"] not in str(info.value)
    oauth = make_oauth(sf_org, token, [])
    other = make_oauth(sf_org, sf_org.issue_token(), [])
    with pytest.raises(TypeError, match=r"session= takes a plain requests\.Session"):
        SalesforceTransport(oauth, session=other)


class _NoIntents:
    """A store missing one of the four methods the refresher calls."""

    def lock(self) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    def load(self) -> None:
        return None

    def save(self, token: Mapping[str, Any], *, replaces: int | None) -> int:
        return 1


_BAD_OPTIONS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"store": "token.json"}, TypeError, r"store must be a token store.*FileTokenStore\(path\)"),
    ({"store": Path("token.json")}, TypeError, r"not PosixPath \(a file: FileTokenStore"),
    ({"store": _NoIntents()}, TypeError, r"write_intent\(\), not _NoIntents$"),
    ({"overlap_wait": "30"}, TypeError, "overlap_wait must be a number of seconds, not str"),
    ({"overlap_wait": True}, TypeError, "overlap_wait must be a number of seconds, not bool"),
    ({"overlap_wait": -1}, ValueError, "overlap_wait must be zero or more seconds, not -1"),
    ({"overlap_wait": float("inf")}, ValueError, "overlap_wait must be zero or more seconds"),
    ({"token_timeout": 0}, ValueError, "token_timeout must be a positive number of seconds"),
    ({"token_timeout": float("nan")}, ValueError, "token_timeout must be a positive number"),
    ({"route_to_instance": "false"}, TypeError, "route_to_instance must be a bool, not str"),
    ({"redact_logs": 1}, TypeError, "redact_logs must be a bool, not int"),
    ({"name": 5}, TypeError, "name must be a str, not int"),
    ({"listener": 5}, TypeError, "listener must be callable .*, not int"),
    ({"circuit_breaker": "off"}, TypeError, "circuit_breaker must be a CircuitBreaker or None"),
    ({"allowed_domains": "a.com"}, TypeError, r"a list of domains, like \['a.com'\], not one"),
    ({"allowed_domains": ["a.com", ""]}, TypeError, "allowed_domains must hold domain names"),
    ({"allowed_domains": [" . "]}, TypeError, "allowed_domains must hold domain names"),
    ({"allowed_domains": [b"a.com"]}, TypeError, "allowed_domains must hold domain names"),
]


@pytest.mark.parametrize(("options", "error", "message"), _BAD_OPTIONS)
@pytest.mark.parametrize("kind", [SalesforceTransport, AsyncSalesforceTransport])
def test_an_option_of_the_wrong_kind_is_refused_when_the_transport_is_built(
    sf_org: StandInOrg,
    kind: type[SalesforceTransport | AsyncSalesforceTransport],
    options: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    # Not at the first expiry, in production, where most of them are first used.
    oauth = make_oauth(sf_org, sf_org.issue_token(), [])
    with pytest.raises(error, match=message):
        kind(oauth, **options)
    assert sf_org.token_requests == 0


def test_the_options_that_are_right_are_taken_as_given(sf_org: StandInOrg) -> None:
    oauth = make_oauth(sf_org, sf_org.issue_token(), [])
    transport = SalesforceTransport(
        oauth,
        overlap_wait=0,
        token_timeout=5,
        circuit_breaker=None,
        listener=print,
        name="Sf",
        route_to_instance=False,
        # Iterated once (a generator), compared as hosts are: lower case, no dot at the ends.
        allowed_domains=(domain for domain in ["Example.COM", ".my.salesforce.com."]),
    )
    assert transport._core.policy.allowed_domains == ("example.com", "my.salesforce.com")
    assert (transport._core.name, transport._core.route_to_instance) == ("Sf", False)


@pytest.mark.parametrize(
    ("blocked", "statement", "extra"),
    [
        ("httpx", "from zeep_sfrefresh import AsyncSalesforceTransport", "async"),
        ("packaging", "from zeep_sfrefresh import AsyncSalesforceTransport", "async"),
        ("redis", "from zeep_sfrefresh import RedisTokenStore", "redis"),
    ],
)
def test_a_missing_extra_names_the_extra(blocked: str, statement: str, extra: str) -> None:
    code = f"import sys\nsys.modules[{blocked!r}] = None\n{statement}\n"
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode != 0
    assert f"pip install 'zeep-sfrefresh[{extra}]'" in run.stderr


def test_one_log_line_per_token_request_however_many_callers(
    sf_org: StandInOrg, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="zeep_sfrefresh")
    transport = AsyncSalesforceTransport(make_oauth(sf_org, sf_org.issue_token(), []))

    async def main() -> None:
        async with zeep.AsyncClient(PARTNER_WSDL, transport=transport) as client:
            sf_org.expire_all_sessions()
            release = sf_org.hold_token_requests()
            tasks = [asyncio.create_task(client.service.getServerTimestamp()) for _ in range(50)]
            while sf_org.soap_posts < 50:
                await asyncio.sleep(0.005)
            release.set()
            await asyncio.gather(*tasks)

    asyncio.run(main())
    assert sf_org.token_requests == 1
    infos = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert sum("refreshing the session" in m for m in infos) == 1, infos
    assert sum("refreshed the Salesforce session" in m for m in infos) == 1, infos


# --- many callers, sessions dying all the time ----------------------------------------------------


_STRESSED_WORKER = """
import collections, threading
import zeep
from zeep_sfrefresh import PARTNER_WSDL, SalesforceTransport, SessionNotRefreshableError

events = []
client = zeep.Client(
    PARTNER_WSDL, transport=SalesforceTransport(oauth, listener=events.append)
)
warm = threading.Barrier(config["threads"] + 1)
go = threading.Event()
ok, errors, lock = [0], [], threading.Lock()

def caller():
    client.service.getServerTimestamp()
    warm.wait()
    go.wait()
    for _ in range(config["calls"]):
        try:
            client.service.getServerTimestamp()
        except SessionNotRefreshableError as exc:
            with lock:
                errors.append(str(exc))
        else:
            with lock:
                ok[0] += 1

threads = [threading.Thread(target=caller) for _ in range(config["threads"])]
for thread in threads:
    thread.start()
warm.wait()
print("ready", flush=True)
sys.stdin.readline()
go.set()
for thread in threads:
    thread.join()
kinds = collections.Counter(event.kind for event in events)
print(json.dumps({"kinds": kinds, "ok": ok[0], "errors": errors}), flush=True)
"""


@pytest.mark.timeout(180)
def test_the_breaker_never_opens_on_tokens_that_are_no_longer_current(sf_org: StandInOrg) -> None:
    # 64 threads of one process calling while every session dies every 150-400 ms, as in the
    # field report. The callers run in a process of their own, as they would against a real
    # org: sharing the stand-in's GIL would delay every first use of a refreshed session
    # past the next expiry, which is what a broken org looks like.
    callers, to_callers, from_callers = _worker_process(
        _STRESSED_WORKER,
        sf_org,
        sf_org.issue_token(),
        threads=STRESS_THREADS,
        calls=CALLS_PER_THREAD,
    )
    stop = threading.Event()

    def expire() -> None:
        rng = random.Random(7)
        while not stop.wait(rng.uniform(0.15, 0.4)):
            sf_org.expire_all_sessions()

    expirer = threading.Thread(target=expire)
    try:
        assert from_callers.readline().strip() == "ready"  # every thread has made a call
        expirer.start()
        to_callers.write("go\n")
        to_callers.flush()
        report = json.loads(from_callers.readline())
    finally:
        stop.set()
        if expirer.is_alive():
            expirer.join()
        callers.kill()
        callers.wait(10)
    kinds = collections.Counter(report["kinds"])
    errors: list[str] = report["errors"]
    assert kinds["circuit_open"] == 0, kinds
    assert report["ok"] + len(errors) == STRESS_THREADS * CALLS_PER_THREAD
    # Every failure is the documented limit: the session died again before the resend.
    assert all("rejected the refreshed session too" in e for e in errors)
    assert kinds["refreshed"] >= 5, kinds  # the sessions really kept dying
    assert kinds["not_refreshable"] <= kinds["refreshed"] // 4, kinds


class _Grant:
    """Mints tokens without I/O: the refresher's bookkeeping, on its own."""

    def __init__(self) -> None:
        self.count = 0

    def fetch(self, current: Token | None) -> Token:
        self.count += 1
        return Token(
            {
                "access_token": f"00D000000000001!AQ{self.count}",
                "refresh_token": "5Aep861same",
                "instance_url": "https://a.my.salesforce.com",
            }
        )


def test_only_the_current_token_is_judged_once_and_one_that_worked_is_usable() -> None:
    events: list[RefreshEvent] = []
    grant = _Grant()
    refresher = Refresher(
        grant, MemoryTokenStore(), None, listener=events.append, breaker=CircuitBreaker(2, 600)
    )
    first = refresher.current
    second = refresher.refresh_after(first)
    refresher.judge(first, usable=False)  # a stale token's rejection: says nothing
    refresher.judge(second, usable=False)
    refresher.judge(second, usable=False)  # judged once
    assert [e.kind for e in events].count("not_refreshable") == 1
    third = refresher.refresh_after(second)
    refresher.judge(third, usable=True)
    refresher.judge(third, usable=False)  # it worked once: usable, its expiry is normal
    fourth = refresher.refresh_after(third)
    refresher.judge(fourth, usable=False)  # one rejection since the last success
    kinds = [e.kind for e in events]
    assert (kinds.count("not_refreshable"), kinds.count("circuit_open")) == (2, 0)
    fifth = refresher.refresh_after(fourth)
    refresher.judge(fifth, usable=False)  # two in a row: open
    assert [e.kind for e in events].count("circuit_open") == 1
    with pytest.raises(SessionNotRefreshableError, match="circuit breaker open"):
        refresher.refresh_after(fifth)
    assert grant.count == 5  # the first token and four refreshes; none while open


def test_the_breaker_is_a_value() -> None:
    breaker = CircuitBreaker(threshold=2, cooldown=10)
    once = breaker.record(usable=False, now=100.0)
    assert (breaker.rejected, once.rejected) == (0, 1)
    assert not once.is_open(100.0)
    twice = once.record(usable=False, now=101.0)
    assert twice.is_open(110.9)
    assert not twice.is_open(111.0)
    assert twice.opened_by(once)
    assert not twice.record(usable=True, now=102.0).is_open(102.0)
    waiting = breaker.retry_after(10_000, now=0.0)
    assert waiting.not_before == MAX_RETRY_AFTER  # capped
    assert waiting.retry_after(5, now=0.0).not_before == MAX_RETRY_AFTER  # never shortened


# --- forks (gunicorn --preload, Celery prefork, multiprocessing fork) ------------------------
#
# A forked child inherits every lock in the state the parent's threads left it and every
# pooled connection, whose socket it then shares with the parent. These tests fork for real:
# a child that deadlocks never reports and is killed at a deadline, a child that fails reports
# the exception's type and text through a pipe, and every child leaves through os._exit so
# pytest never runs on in it. The stand-in org runs in a thread of the test process, so these
# forks copy a multi-threaded process; the child only talks to it over sockets.

_FORKS = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")


def _client(org: StandInOrg, store: Path | TokenStore) -> tuple[zeep.Client, SalesforceTransport]:
    """A sync client on a fresh token, sharing ``store`` (a path: a FileTokenStore there), as
    the harness builds one."""
    oauth = make_oauth(org, org.issue_token(), [])
    if isinstance(store, Path):
        store = FileTokenStore(store)
    transport = SalesforceTransport(oauth, store=store, token_timeout=20)
    client = zeep.Client(PARTNER_WSDL, transport=transport, settings=zeep.Settings(forbid_dtd=True))
    return client, transport


def _call(client: zeep.Client, transport: SalesforceTransport) -> Report:
    """Make one call; say how it went, naming tokens by fingerprint only."""
    try:
        client.service.getServerTimestamp()
    except Exception as exc:  # noqa: BLE001 - the outcome is the report
        return {
            "ok": False,
            "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "library_error": isinstance(exc, SfRefreshError),
            "message": str(exc),
        }
    return {"ok": True, "access_token": fingerprint(transport.token.access_token)}


def _stored_access_token(path: Path) -> str:
    return fingerprint(json.loads(path.read_text())["token"]["access_token"])


def _assert_child_ok(report: Report | None, code: int | None) -> None:
    assert report is not None, (
        f"the child never reported; exit code {code} (None: still running at the deadline, "
        "deadlocked)"
    )
    if not report["ok"]:
        assert report["library_error"], f"the child failed with a non-library error: {report}"
    assert report["ok"], f"the child's call failed: {report}"
    assert code == 0


@_FORKS
@pytest.mark.timeout(60)
def test_child_forked_after_use_refreshes_through_the_store(
    sf_org: StandInOrg, tmp_path: Path
) -> None:
    path = tmp_path / "token.json"
    client, transport = _client(sf_org, path)
    assert _call(client, transport)["ok"]  # pooled connection, store lock: all used
    sf_org.expire_all_sessions()

    child = Child(lambda: _call(client, transport))  # meets the expiry: refreshes
    try:
        report, code = child.result()
    finally:
        child.kill()
    _assert_child_ok(report, code)
    assert report is not None
    assert sf_org.token_requests == 1
    assert report["access_token"] == _stored_access_token(path)

    # The parent meets the expiry too, and adopts the child's token from the store.
    assert _call(client, transport) == {"ok": True, "access_token": report["access_token"]}
    assert sf_org.token_requests == 1
    assert sf_org.internal_errors == []


@_FORKS
@pytest.mark.timeout(60)
def test_child_forked_after_a_refresh_makes_its_own_token_request(sf_org: StandInOrg) -> None:
    # The parent's refresh leaves a thread waiting for the next token request; that thread
    # does not exist in a child, which must not hand its request to it.
    client, transport = _client(sf_org, MemoryTokenStore())
    sf_org.expire_all_sessions()
    assert _call(client, transport)["ok"]
    assert sf_org.token_requests == 1
    sf_org.expire_all_sessions()

    child = Child(lambda: _call(client, transport))
    try:
        report, code = child.result()
    finally:
        child.kill()
    _assert_child_ok(report, code)
    assert sf_org.token_requests == 2


def test_a_token_request_past_its_deadline_does_not_hold_up_the_next(sf_org: StandInOrg) -> None:
    # The first transport's request is abandoned while its answer's headers still trickle
    # in; another transport's request, made meanwhile, must neither wait behind it (it would
    # time out too) nor be reported as unanswered.
    first, second = (
        SalesforceTransport(make_oauth(sf_org, sf_org.issue_token(), []), token_timeout=0.5)
        for _ in range(2)
    )
    clients = [zeep.Client(PARTNER_WSDL, transport=t) for t in (first, second)]
    sf_org.expire_all_sessions()
    sf_org.token_trickle = 0.05  # the headers alone take seconds
    with pytest.raises(TokenRefreshError, match="timed out") as info:
        clients[0].service.getServerTimestamp()
    assert info.value.unanswered
    sf_org.token_trickle = 0.0
    assert clients[1].service.getServerTimestamp() is not None
    assert sf_org.token_requests == 2


@_FORKS
@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["file", "redis"])
def test_child_forked_during_a_refresh_neither_deadlocks_nor_refreshes_again(
    sf_org: StandInOrg, tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    path = tmp_path / "token.json"
    store: TokenStore = FileTokenStore(path)
    if kind == "redis":  # the child waits on the change stream with connections of its own
        server: RedisServer = request.getfixturevalue("redis_server")
        store = RedisTokenStore(server.client(), "{sf:token}")
    client, transport = _client(sf_org, store)
    assert _call(client, transport)["ok"]
    sf_org.expire_all_sessions()
    release = sf_org.hold_token_requests()
    outcome: list[Report] = []
    # This thread enters the refresh and stays in the token request, holding the
    # refresher's lock, the store's thread lock and its file lock, when the fork happens.
    refreshing = threading.Thread(target=lambda: outcome.append(_call(client, transport)))
    child: Child | None = None
    report: Report | None = None
    code: int | None = None
    try:
        refreshing.start()
        wait_for(lambda: sf_org.token_requests == 1)
        posts = sf_org.soap_posts
        child = Child(lambda: _call(client, transport))
        # Let the child meet the expiry, or join the refresh it finds announced in the store
        # (no post then), and wait for the store to change; then end the refresh.
        wait_for_posts(lambda: sf_org.soap_posts, posts + 1, timeout=10)
        time.sleep(0.3)
    finally:
        release.set()
        refreshing.join(timeout=30)
        if child is not None:
            report, code = child.result()
            child.kill()
    assert not refreshing.is_alive()
    assert outcome[0]["ok"], outcome
    _assert_child_ok(report, code)
    assert report is not None
    stored = store.load()
    assert stored is not None
    assert report["access_token"] == outcome[0]["access_token"]
    assert report["access_token"] == fingerprint(stored.token["access_token"])
    assert sf_org.token_requests == 1
    assert sf_org.internal_errors == []


# gunicorn --preload --------------------------------------------------------------------

WORKERS = 4
REQUESTS = 24
APP_DELAY = 0.05
"""Seconds each request sleeps after its call. A sync worker serves one request at a time,
but a fast one can accept the next connection before its siblings wake; the sleep keeps each
worker busy long enough that the 24 concurrent requests reach more than one worker."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _gunicorn_version() -> tuple[int, ...]:
    return tuple(int(part) for part in version("gunicorn").split(".")[:2] if part.isdigit())


@contextlib.contextmanager
def _gunicorn(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", *args],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield server
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _get(url: str) -> tuple[int, str]:
    with requests.Session() as session:
        answer = session.get(url, headers={"Connection": "close"}, timeout=30)
        return answer.status_code, answer.text


@_FORKS
@pytest.mark.timeout(120)
def test_gunicorn_preload_workers_share_one_refresh(sf_org: StandInOrg, tmp_path: Path) -> None:
    token = sf_org.issue_token()
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {
        **os.environ,
        INSECURE_TRANSPORT_VARIABLE: "1",
        "FORK_APP_TOKEN_URL": sf_org.token_url,
        "FORK_APP_CLIENT_ID": sf_org.client_id,
        "FORK_APP_CLIENT_SECRET": sf_org.client_secret,
        "FORK_APP_TOKEN": json.dumps(token),
        "FORK_APP_TOKEN_FILE": str(tmp_path / "token.json"),
        "FORK_APP_DELAY": str(APP_DELAY),
    }
    args = [
        "--preload",
        f"--workers={WORKERS}",
        "--worker-class=sync",
        f"--bind=127.0.0.1:{port}",
        f"--chdir={Path(__file__).parent}",
        "--timeout=30",
        "--graceful-timeout=5",
        f"--worker-tmp-dir={tmp_path}",
    ]
    if _gunicorn_version() >= (25, 1):
        args.append("--no-control-socket")  # else it binds one under $HOME, shared by runs
    log = tmp_path / "gunicorn.log"
    answers: list[tuple[int, str]] = []
    with _gunicorn([*args, "fork_app:app"], env, log) as server:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"gunicorn exited:\n{log.read_text()}"
            with contextlib.suppress(requests.RequestException):
                status, text = _get(url)
                assert status == 200, f"{status} {text}\n{log.read_text()}"
                break
            assert time.monotonic() < deadline, f"gunicorn never answered:\n{log.read_text()}"
            time.sleep(0.1)
        sf_org.expire_all_sessions()
        sf_org.reset_counters()
        with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
            answers = list(pool.map(lambda _: _get(url), range(REQUESTS)))
    output = log.read_text()
    stored = json.loads((tmp_path / "token.json").read_text())["token"]
    secrets = [token["access_token"], token["refresh_token"], sf_org.client_secret]
    secrets += [stored["access_token"], stored.get("refresh_token") or ""]
    texts = [output, *(text for _, text in answers)]
    leaked = [fingerprint(s) for s in secrets if s and any(s in text for text in texts)]
    assert leaked == [], "a token or secret reached gunicorn's log or an answer"
    assert [status for status, _ in answers] == [200] * REQUESTS, f"{answers}\n{output}"
    assert sf_org.token_requests == 1, output
    assert sf_org.internal_errors == [], output
    pids = {text.split()[0] for _, text in answers}
    assert len(pids) > 1, f"only worker {pids} answered:\n{output}"
