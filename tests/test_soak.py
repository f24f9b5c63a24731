"""Soak: 200 threads x 50 calls on one transport while sessions expire at random moments.

Marked ``soak`` (CI runs it: ``pytest -m soak``). It asserts correctness only; the memory
figures it prints are for reading, not thresholds.
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest
import zeep
from conftest import make_oauth

from zeep_sfrefresh import PARTNER_WSDL, RefreshEvent, SalesforceTransport
from zeep_sfrefresh.testing import StandInOrg

THREADS = 200
CALLS = 50

pytestmark = pytest.mark.soak


def _rss_mb() -> float:
    """Resident memory of this process in MB (Linux), or 0 where /proc is missing."""
    statm = Path("/proc/self/statm")
    if not statm.exists():
        return 0.0
    pages = int(statm.read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def test_soak_random_expiries(sf_org: StandInOrg, capsys: pytest.CaptureFixture[str]) -> None:
    sf_org.rotation = True
    refreshed_at = [0.0]
    refreshes = [0]

    def on_event(event: RefreshEvent) -> None:
        if event.kind == "refreshed":  # sent after the new token is in place
            refreshed_at[0] = time.monotonic()
            refreshes[0] += 1

    oauth = make_oauth(sf_org, sf_org.issue_token(), [])
    transport = SalesforceTransport(oauth, listener=on_event)
    client = zeep.Client(PARTNER_WSDL, transport=transport)
    failures: list[str] = []
    started: dict[int, float] = {}  # thread id -> start of its call in flight
    lock = threading.Lock()
    done = threading.Event()
    expiries = 0
    rng = random.Random(20261128)

    def worker() -> None:
        me = threading.get_ident()
        for _ in range(CALLS):
            with lock:
                started[me] = time.monotonic()
            try:
                client.service.getServerTimestamp()
            except Exception as exc:  # noqa: BLE001 - every failure is collected and asserted
                failures.append(f"{type(exc).__name__}: {exc}")
            finally:
                with lock:
                    del started[me]

    def settled() -> bool:
        """The last expiry was refreshed, and every call begun before that has ended.

        A session lives long enough to serve the calls that adopted it: expiring it again
        while a call is between its refresh and its one resend would fail that call by
        design (one refresh and one resend per call), which is not what this soak measures.
        """
        with lock:
            oldest = min(started.values(), default=float("inf"))
        return refreshes[0] == expiries and oldest > refreshed_at[0]

    def expirer() -> None:
        nonlocal expiries
        while not done.wait(rng.uniform(0.02, 0.15)):
            if settled():
                sf_org.expire_all_sessions()
                expiries += 1

    before = _rss_mb()
    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    chaos = threading.Thread(target=expirer)
    chaos.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    done.set()
    chaos.join()
    if sf_org.token_requests < expiries:  # the last expiry came after the last call
        client.service.getServerTimestamp()
    after = _rss_mb()

    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    assert expiries > 5
    assert sf_org.token_requests == expiries
    assert sf_org.family_revocations == 0
    with capsys.disabled():
        print(
            f"\nsoak: {THREADS * CALLS} calls, {expiries} expiries, {sf_org.token_requests} token "
            f"requests, {sf_org.soap_posts} SOAP posts, resident memory {before:.0f} MB -> "
            f"{after:.0f} MB"
        )
