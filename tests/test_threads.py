"""One transport, many threads, one expiry: exactly one token request."""

from __future__ import annotations

import threading
from collections.abc import Callable

from conftest import SOQL, Harness

from zeep_sfrefresh import TokenRefreshError
from zeep_sfrefresh.testing.fleet import wait_for_posts

Build = Callable[..., Harness]
THREADS = 32


def _run_all(h: Harness) -> tuple[list[object], list[BaseException]]:
    """Run THREADS queries at once while the token endpoint is held, then release it.

    Holding the token endpoint until every thread has met the expired session, or waits
    for the refresh under way (a thread whose call starts once the refresh began joins it
    instead of posting), makes the race as wide as it can be: no call sends the new token
    before every thread is in.
    """
    results: list[object] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS)

    def worker() -> None:
        barrier.wait()
        try:
            outcome: object = h.client.service.query(SOQL).body.result.size
        except Exception as exc:  # noqa: BLE001 - collected and asserted on below
            with lock:
                errors.append(exc)
        else:
            with lock:
                results.append(outcome)

    release = h.org.hold_token_requests()
    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    wait_for_posts(lambda: h.org.soap_posts, THREADS)
    release.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    return results, errors


def test_threads_meeting_one_expiry_make_one_token_request(harness: Build) -> None:
    h = harness()
    h.org.rotation = True
    old = h.issued["access_token"]
    h.org.expire_all_sessions()
    results, errors = _run_all(h)
    assert errors == []
    assert results == [10] * THREADS
    assert h.org.token_requests == 1
    assert len(h.saved) == 1
    new = h.saved[0]["access_token"]
    met = h.org.sessions_seen.count(old)  # the others joined the refresh before posting
    assert 1 <= met <= THREADS
    assert h.org.sessions_seen.count(new) == THREADS  # every call sent it once, none twice
    assert h.org.soap_posts == met + THREADS


def test_threads_waiting_on_a_failed_refresh_share_its_failure(harness: Build) -> None:
    h = harness()
    h.org.expire_all_sessions()
    h.org.token_failure = "invalid_grant"
    results, errors = _run_all(h)
    assert results == []
    assert len(errors) == THREADS
    assert all(isinstance(exc, TokenRefreshError) for exc in errors)
    assert all(exc.error == "invalid_grant" for exc in errors if isinstance(exc, TokenRefreshError))
    assert len({id(exc) for exc in errors}) == THREADS  # each thread its own exception object
    assert h.org.token_requests == 1
    assert 1 <= h.org.soap_posts <= THREADS  # nobody resent; those that joined never sent
