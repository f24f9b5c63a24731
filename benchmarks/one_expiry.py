"""Figure 2, one expiry: what the call that meets INVALID_SESSION_ID costs.

    python benchmarks/one_expiry.py [--quick]

A call that meets ``INVALID_SESSION_ID``, through ``zeep.Client`` and ``SalesforceTransport``,
against a stand-in org in a process of its own. Each round (trial) makes three normal calls, has
the org expire every session, then makes the call that meets the expiry; the org's counters give
that call's token requests and SOAP posts (goal: 1 token request, 2 posts = 1 resend), and its
added latency is its time minus the median of the round's three normal calls. Its floor is
what the same work costs done by hand in that round: a normal call (the resend), a plain
``requests`` post of the same query with the expired session id (the org answers the fault),
and a token request straight through ``OAuth2Session.refresh_token`` (another token of the same
org); the ratio to the floor (goal <= 1.1) is what the transport adds around them: detecting
the fault, the refresh bookkeeping, handing the token request to its worker thread. Every
figure is the median (and min-max) over rounds. The stand-in token endpoint answers at once;
against Salesforce, add the real token endpoint's latency to the added time.

The cyclic garbage collector is paused while a round is timed and run between rounds, as
``timeit`` does. zeep leaves about 600 objects in reference cycles per call of this query
(the transport leaves none: tests/test_transport.py pins it), so a collection comes every
call or two and lands wherever its count runs out; the floor takes the median of three
normal calls, which drops one, while the lone expired call carries every one that lands in
it (and, now and then, a full collection of the loaded WSDL's objects: 20-40 ms). With the
collector running, the ratio came out 0.05-0.1 higher and the slowest rounds 20-40 ms
longer.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import asdict
from typing import Any

import requests
import zeep
from _common import (
    SMALL_QUERY,
    Counts,
    Figure,
    RemoteOrg,
    Spread,
    collector_paused,
    make_oauth,
    markdown_table,
    ms,
    run_alone,
)

from zeep_sfrefresh import PARTNER_WSDL, SalesforceTransport

QUERY_ENVELOPE = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<soap-env:Envelope xmlns:soap-env="http://schemas.xmlsoap.org/soap/envelope/">'
    '<soap-env:Header><ns0:SessionHeader xmlns:ns0="urn:partner.soap.sforce.com">'
    "<ns0:sessionId>{session_id}</ns0:sessionId></ns0:SessionHeader></soap-env:Header>"
    '<soap-env:Body><ns0:query xmlns:ns0="urn:partner.soap.sforce.com">'
    f"<ns0:queryString>{SMALL_QUERY}</ns0:queryString></ns0:query></soap-env:Body>"
    "</soap-env:Envelope>"
)
"""The query the timed calls make, as zeep sends it (the floor's faulted post)."""


def one_expiry(counts: Counts) -> dict[str, Any]:
    """Figure 2: what the call that meets an expired session costs."""
    with RemoteOrg() as org:
        token = org.issue_token()
        client = zeep.Client(PARTNER_WSDL, transport=SalesforceTransport(make_oauth(org, token)))
        service = client.service
        by_hand = make_oauth(org, org.issue_token())  # the floor's token requests
        plain = requests.Session()  # the floor's faulted posts
        soap_url = org.url + org.soap_path()
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
        for _ in range(20):
            service.query(SMALL_QUERY)
        normal: list[float] = []
        expired: list[float] = []
        added: list[float] = []
        floor: list[float] = []
        to_floor: list[float] = []
        token_requests: list[float] = []
        soap_posts: list[float] = []
        clock = time.perf_counter
        for _ in range(counts.expiry_trials):
            with collector_paused():
                round_normal = []
                for _ in range(3):
                    started = clock()
                    service.query(SMALL_QUERY)
                    round_normal.append(clock() - started)
                org.expire_all_sessions()
                dead = QUERY_ENVELOPE.format(session_id=by_hand.token["access_token"]).encode()
                started = clock()
                faulted = plain.post(soap_url, data=dead, headers=headers)
                fault_seconds = clock() - started
                assert faulted.status_code == 500, faulted.status_code
                started = clock()
                by_hand.token = by_hand.refresh_token(
                    org.token_url,
                    refresh_token=by_hand.token["refresh_token"],
                    client_id=org.client_id,
                    client_secret=org.client_secret,
                )
                token_seconds = clock() - started
                before = org.counters()
                started = clock()
                answer = service.query(SMALL_QUERY)
                seconds = clock() - started
            after = org.counters()
            assert int(answer.body.result.size) == 10
            normal.append(statistics.median(round_normal))
            expired.append(seconds)
            added.append(seconds - normal[-1])
            floor.append(normal[-1] + fault_seconds + token_seconds)
            to_floor.append(seconds / floor[-1])
            token_requests.append(after.token_requests - before.token_requests)
            soap_posts.append(after.soap_posts - before.soap_posts)
        org.check()
    return {
        "trials": counts.expiry_trials,
        "normal_seconds": asdict(Spread.of(normal)),
        "expired_seconds": asdict(Spread.of(expired)),
        "added_seconds": asdict(Spread.of(added)),
        "floor_seconds": asdict(Spread.of(floor)),
        "ratio_to_floor": asdict(Spread.of(to_floor)),
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
            "floor ms (by hand)",
            "ratio to the floor (goal <= 1.1)",
            "token requests per expired call",
            "SOAP posts per expired call",
        ],
        [
            [
                result["trials"],
                Spread.load(result["normal_seconds"]).show(ms),
                Spread.load(result["expired_seconds"]).show(ms),
                Spread.load(result["added_seconds"]).show(ms),
                Spread.load(result["floor_seconds"]).show(ms),
                Spread.load(result["ratio_to_floor"]).show(),
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
