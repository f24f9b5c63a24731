"""Figure 2, one expiry: what the call that meets INVALID_SESSION_ID costs.

    python benchmarks/one_expiry.py [--quick]

A call that meets ``INVALID_SESSION_ID``, through ``zeep.Client`` and ``SalesforceTransport``,
against a stand-in org in a process of its own. Each round (trial) makes three normal calls, has
the org expire every session, then makes the call that meets the expiry; the org's counters give
that call's token requests and SOAP posts (goal: 1 token request, 2 posts = 1 resend), and its
added latency is its time minus the median of the round's three normal calls. Every figure is
the median (and min-max) over rounds. The stand-in token endpoint answers at once; against
Salesforce, add the real token endpoint's latency to the added time.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import asdict
from typing import Any

import zeep
from _common import (
    SMALL_QUERY,
    Counts,
    Figure,
    RemoteOrg,
    Spread,
    make_oauth,
    markdown_table,
    ms,
    run_alone,
)

from zeep_sfrefresh import PARTNER_WSDL, SalesforceTransport


def one_expiry(counts: Counts) -> dict[str, Any]:
    """Figure 2: what the call that meets an expired session costs."""
    with RemoteOrg() as org:
        token = org.issue_token()
        client = zeep.Client(PARTNER_WSDL, transport=SalesforceTransport(make_oauth(org, token)))
        service = client.service
        for _ in range(20):
            service.query(SMALL_QUERY)
        normal: list[float] = []
        expired: list[float] = []
        added: list[float] = []
        token_requests: list[float] = []
        soap_posts: list[float] = []
        clock = time.perf_counter
        for _ in range(counts.expiry_trials):
            round_normal = []
            for _ in range(3):
                started = clock()
                service.query(SMALL_QUERY)
                round_normal.append(clock() - started)
            org.expire_all_sessions()
            before = org.counters()
            started = clock()
            answer = service.query(SMALL_QUERY)
            seconds = clock() - started
            after = org.counters()
            assert int(answer.body.result.size) == 10
            normal.append(statistics.median(round_normal))
            expired.append(seconds)
            added.append(seconds - normal[-1])
            token_requests.append(after.token_requests - before.token_requests)
            soap_posts.append(after.soap_posts - before.soap_posts)
        org.check()
    return {
        "trials": counts.expiry_trials,
        "normal_seconds": asdict(Spread.of(normal)),
        "expired_seconds": asdict(Spread.of(expired)),
        "added_seconds": asdict(Spread.of(added)),
        "token_requests_per_expired_call": asdict(Spread.of(token_requests)),
        "soap_posts_per_expired_call": asdict(Spread.of(soap_posts)),
    }


def render_one_expiry(result: dict[str, Any]) -> str:
    """One row: the normal call, the expired call, the difference, the org's counts."""
    return markdown_table(
        [
            "rounds",
            "normal call ms",
            "expired call ms",
            "added ms",
            "token requests per expired call",
            "SOAP posts per expired call",
        ],
        [
            [
                result["trials"],
                Spread.load(result["normal_seconds"]).show(ms),
                Spread.load(result["expired_seconds"]).show(ms),
                Spread.load(result["added_seconds"]).show(ms),
                Spread.load(result["token_requests_per_expired_call"]).show(lambda n: f"{n:g}"),
                Spread.load(result["soap_posts_per_expired_call"]).show(lambda n: f"{n:g}"),
            ]
        ],
    )


FIGURE = Figure(
    "one_expiry",
    "2. One expiry: the call that meets INVALID_SESSION_ID (query, 10 records)",
    one_expiry,
    render_one_expiry,
    __doc__,
)

if __name__ == "__main__":
    sys.exit(run_alone(FIGURE))
