"""Fault injection: each failure the transport can meet, as one test with its expected outcome.

Read top to bottom: the token endpoint, the SOAP path, the token stores. Every case runs with
the sync and the async transport (the ``harness`` fixture), over real sockets, and must end
in bounded time (``timeout`` marker: a hang is a failure, not a slow pass). The rules they
check: no resend after anything but ``INVALID_SESSION_ID``; at most one refresh and one
resend per call; a failed refresh is one typed error and sends nothing; no token is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
import zeep
from conftest import SOQL, Harness, field_values
from zeep.exceptions import Fault

from zeep_sfrefresh import (
    FileTokenStore,
    ReauthorizationRequiredError,
    RedisTokenStore,
    TokenRefreshError,
    TokenStoreError,
)
from zeep_sfrefresh.testing import StandInOrg
from zeep_sfrefresh.testing.redis_server import RedisServer

Build = Callable[..., Harness]

pytestmark = pytest.mark.timeout(60)


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
    with pytest.raises(ValueError, match="refresh_token.*scope"):
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

    def save(self, token: Mapping[str, Any], *, replaces: int | None) -> int:
        if self.broken:
            raise TokenStoreError(f"cannot write {self.path}: No space left on device")
        return super().save(token, replaces=replaces)


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
