"""The demo: Salesforce's own expired-session scenario, then the same call through the transport.

It ports the example of Salesforce knowledge article 000381864 (a partner ``query`` of
``select id from contact limit 10`` whose session has expired) to zeep, against the
stand-in org on loopback, so it runs anywhere without credentials or network.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, TextIO

import zeep
from requests_oauthlib import OAuth2Session
from zeep.exceptions import Fault

from ._apis import PARTNER_WSDL
from ._tokens import fingerprint
from ._transport import SalesforceTransport
from .testing import StandInOrg, allow_insecure_transport

__all__ = ["SOQL", "run_demo"]

SOQL = "select id from contact limit 10"
_BINDING = "{urn:partner.soap.sforce.com}SoapBinding"


class _Narrator(logging.Handler):
    """Prints the transport's INFO records as they happen, indented under the step."""

    def __init__(self, say: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self._say = say

    def emit(self, record: logging.LogRecord) -> None:
        self._say(f"     [{record.name}] {record.getMessage()}")


def _ids(answer: Any) -> str:
    """Describe a partner ``query`` answer (zeep returns header and body: LimitInfoHeader)."""
    records = answer.body.result.records or []
    shown = ", ".join(str(record.Id) for record in records[:3])
    return f"{len(records)} records ({shown}, ...)"


def run_demo(out: TextIO = sys.stdout) -> int:
    """Run the demo, print what happens, and return the process exit code."""

    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    narrator = _Narrator(say)
    package_logger = logging.getLogger("zeep_sfrefresh")
    previous_level = package_logger.level
    with allow_insecure_transport(), StandInOrg() as org:
        package_logger.addHandler(narrator)
        package_logger.setLevel(logging.INFO)
        try:
            return _scenario(org, say)
        finally:
            package_logger.removeHandler(narrator)
            package_logger.setLevel(previous_level)


def _scenario(org: StandInOrg, say: Callable[[str], None]) -> int:
    token = org.issue_token()
    saved: list[dict[str, Any]] = []
    oauth = OAuth2Session(
        org.client_id,
        token=dict(token),
        auto_refresh_url=org.token_url,
        auto_refresh_kwargs={"client_id": org.client_id, "client_secret": org.client_secret},
        token_updater=saved.append,
    )
    settings = zeep.Settings(forbid_dtd=True)
    say(f"zeep-sfrefresh demo: a stand-in Salesforce org is listening on {org.url}")
    say(f"WSDL: {PARTNER_WSDL}")
    say(f"SOQL (knowledge article 000381864): {SOQL}")
    say("")

    say("1. Plain zeep.Transport, SessionHeader set by hand, as the article's Apex callout does:")
    plain = zeep.Client(PARTNER_WSDL, settings=settings)
    plain_service = plain.create_service(_BINDING, org.url + org.soap_path())
    header = {"SessionHeader": {"sessionId": token["access_token"]}}
    say(f"   query -> {_ids(plain_service.query(SOQL, _soapheaders=header))}")

    org.expire_all_sessions()
    say("")
    say("2. The org expires every session (a session timeout, a logout, a revoked token).")
    try:
        plain_service.query(SOQL, _soapheaders=header)
    except Fault as fault:
        say(f"   plain zeep: HTTP 500, zeep.exceptions.Fault: {fault.message}")
        say("   No HTTP 401, so a client that refreshes on 401 never refreshes. The call fails.")
    else:  # pragma: no cover - the stand-in org always faults here
        say("   unexpected: the expired session was accepted")
        return 1

    say("")
    say("3. The same query through SalesforceTransport(oauth), no SessionHeader passed:")
    client = zeep.Client(PARTNER_WSDL, transport=SalesforceTransport(oauth), settings=settings)
    org.reset_counters()
    result = client.service.query(SOQL)
    say(f"   query -> {_ids(result)}")

    say("")
    seen = ", ".join(fingerprint(session) for session in org.sessions_seen)
    say("What happened on the wire:")
    say(f"   SOAP posts:           {org.soap_posts} (the fault, then one resend)")
    say(f"   token requests:       {org.token_requests}")
    say(f"   token_updater calls:  {len(saved)}")
    say(f"   sessions sent:        {seen} (fingerprints; tokens are never printed)")
    counts = (org.token_requests, org.soap_posts, len(saved), result.body.result.size)
    ok = counts == (1, 2, 1, 10)
    say("")
    say("OK" if ok else "UNEXPECTED COUNTS")
    return 0 if ok else 1
