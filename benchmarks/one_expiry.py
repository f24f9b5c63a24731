"""Figure 2, one expiry: what the call that meets INVALID_SESSION_ID costs.

    python benchmarks/one_expiry.py [--quick]

A call that meets ``INVALID_SESSION_ID``: the org's counters give its token requests and SOAP
posts (goal: 1 token request, 2 posts = 1 resend), and its latency is compared with normal calls
interleaved with it. The stand-in token endpoint answers at once; against Salesforce, add the
real token endpoint's latency to the added time.
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
    Summary,
    make_oauth,
    markdown_table,
    run_alone,
    section,
)

from zeep_sfrefresh import PARTNER_WSDL, SalesforceTransport
from zeep_sfrefresh.testing import StandInOrg


def one_expiry(counts: Counts) -> dict[str, Any]:
    """Figure 2: what the call that meets an expired session costs."""
    with StandInOrg() as org:
        token = org.issue_token()
        client = zeep.Client(PARTNER_WSDL, transport=SalesforceTransport(make_oauth(org, token)))
        service = client.service
        for _ in range(20):
            service.query(SMALL_QUERY)
        normal: list[float] = []
        expired: list[float] = []
        token_requests: list[int] = []
        soap_posts: list[int] = []
        clock = time.perf_counter
        for _ in range(counts.expiry_trials):
            for _ in range(3):
                started = clock()
                service.query(SMALL_QUERY)
                normal.append(clock() - started)
            org.expire_all_sessions()
            tokens_before, posts_before = org.token_requests, org.soap_posts
            started = clock()
            answer = service.query(SMALL_QUERY)
            expired.append(clock() - started)
            assert int(answer.body.result.size) == 10
            token_requests.append(org.token_requests - tokens_before)
            soap_posts.append(org.soap_posts - posts_before)
        assert not org.internal_errors, org.internal_errors
    normal_summary, expired_summary = Summary.of(normal), Summary.of(expired)
    return {
        "trials": counts.expiry_trials,
        "normal": asdict(normal_summary),
        "expired": asdict(expired_summary),
        "added_median_us": expired_summary.median_us - normal_summary.median_us,
        "token_requests_per_expired_call": statistics.fmean(token_requests),
        "token_requests_max": max(token_requests),
        "soap_posts_per_expired_call": statistics.fmean(soap_posts),
        "soap_posts_max": max(soap_posts),
    }


def print_one_expiry(result: dict[str, Any]) -> None:
    section("2. One expiry: the call that meets INVALID_SESSION_ID (query, 10 records)")
    normal, expired = result["normal"], result["expired"]
    print(
        markdown_table(
            [
                "trials",
                "normal call median ms",
                "expired call median ms",
                "added ms (median)",
                "token requests per expired call",
                "SOAP posts per expired call",
            ],
            [
                [
                    result["trials"],
                    f"{normal['median_us'] / 1000:.3f}",
                    f"{expired['median_us'] / 1000:.3f}",
                    f"{result['added_median_us'] / 1000:.3f}",
                    f"{result['token_requests_per_expired_call']:.2f} "
                    f"(max {result['token_requests_max']})",
                    f"{result['soap_posts_per_expired_call']:.2f} (max {result['soap_posts_max']})",
                ]
            ],
        )
    )


FIGURE = Figure("one_expiry", one_expiry, print_one_expiry)

if __name__ == "__main__":
    sys.exit(run_alone(FIGURE, __doc__))
