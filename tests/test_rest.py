"""REST on the transport's refresher: ``rest_auth()``, ``rest_session()``, ``rest_client()``.

Everything runs over real sockets against the stand-in org: one expiry met by SOAP and REST
callers at once must cost exactly one token request.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import requests
import zeep
from requests_oauthlib import OAuth2Session
from simple_salesforce.api import Salesforce, SFType

from zeep_sfrefresh import (
    PARTNER_WSDL,
    AsyncSalesforceTransport,
    FileTokenStore,
    SalesforceTransport,
)
from zeep_sfrefresh._rest import rest_outcome
from zeep_sfrefresh._tokenfile import TokenFileSettings
from zeep_sfrefresh.testing import StandInOrg, allow_insecure_transport
from zeep_sfrefresh.testing.insecure import INSECURE_TRANSPORT_VARIABLE

SOQL = "SELECT Id FROM Account"


def _oauth(org: StandInOrg, token: dict[str, str] | None = None) -> OAuth2Session:
    return OAuth2Session(
        org.client_id,
        token=token or org.issue_token(),
        auto_refresh_url=org.token_url,
        auto_refresh_kwargs={"client_id": org.client_id, "client_secret": org.client_secret},
    )


def _query(session: requests.Session) -> requests.Response:
    return session.get("query", params={"q": SOQL}, timeout=30)


class _Elsewhere(ThreadingHTTPServer):
    """Another host (a second loopback server) that counts the Authorization headers it got."""

    daemon_threads = True

    def __init__(self) -> None:
        self.authorizations: list[str] = []
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(handler) -> None:
                self.requests += 1
                if "Authorization" in handler.headers:
                    self.authorizations.append(handler.headers["Authorization"])
                body = b'{"ok": true}'
                handler.send_response(200)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def elsewhere() -> Iterator[_Elsewhere]:
    server = _Elsewhere()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


# --- one caller ----------------------------------------------------------------------------


def test_rest_session_refreshes_once_and_resends(sf_org: StandInOrg) -> None:
    transport = SalesforceTransport(_oauth(sf_org))
    session = transport.rest_session()
    first = _query(session)
    assert first.status_code == 200
    assert first.json()["totalSize"] == 3
    assert rest_outcome(first) == "sent"
    assert sf_org.token_requests == 0
    sf_org.expire_all_sessions()
    again = _query(session)
    assert again.status_code == 200
    assert again.json()["totalSize"] == 3
    assert rest_outcome(again) == "refreshed"
    assert [r.status_code for r in again.history] == [401]
    assert sf_org.token_requests == 1
    assert again.request.headers["Authorization"] == f"Bearer {transport.token.access_token}"


def test_rest_auth_on_a_plain_session_and_url_helpers(sf_org: StandInOrg) -> None:
    transport = SalesforceTransport(_oauth(sf_org))
    sf_org.expire_all_sessions()
    url = f"{sf_org.url}/services/data/v66.0/query"
    answer = requests.get(url, params={"q": SOQL}, auth=transport.rest_auth(), timeout=30)
    assert answer.status_code == 200
    assert sf_org.token_requests == 1
    session = transport.rest_session(api_version="61.0")
    assert session.url("limits") == f"{sf_org.url}/services/data/v61.0/limits"
    assert session.url("/services/apexrest/x") == f"{sf_org.url}/services/apexrest/x"
    assert session.url("https://other.example.com/x") == "https://other.example.com/x"


def test_no_bearer_reaches_another_host(sf_org: StandInOrg, elsewhere: _Elsewhere) -> None:
    transport = SalesforceTransport(_oauth(sf_org))
    session = transport.rest_session()
    session.headers["Authorization"] = "Bearer stale-session-id"  # as simple-salesforce does
    for _ in range(3):
        assert session.get(elsewhere.url + "/services/data/v66.0/query", timeout=30).ok
    assert requests.get(elsewhere.url, auth=transport.rest_auth(), timeout=30).ok
    assert elsewhere.requests == 4
    assert elsewhere.authorizations == []  # not even the header the session was given
    answer = _query(session)  # on the instance, the current token replaces the stale one
    assert answer.status_code == 200
    assert rest_outcome(answer) == "sent"


def test_a_second_401_is_returned_as_is(sf_org: StandInOrg) -> None:
    transport = SalesforceTransport(_oauth(sf_org))
    session = transport.rest_session()
    sf_org.expire_all_sessions()
    sf_org.reject_new_sessions = True  # the refreshed session is refused too
    answer = _query(session)
    assert answer.status_code == 401
    assert answer.json()[0]["errorCode"] == "INVALID_SESSION_ID"
    assert rest_outcome(answer) == "expired_again"
    assert sf_org.token_requests == 1


def test_a_stream_body_is_not_resent_but_the_token_is_refreshed(sf_org: StandInOrg) -> None:
    transport = SalesforceTransport(_oauth(sf_org))
    session = transport.rest_session()
    sf_org.expire_all_sessions()
    answer = session.get("query", params={"q": SOQL}, data=iter([b"x"]), timeout=30)
    assert answer.status_code == 401
    assert rest_outcome(answer) == "refreshed_not_resent"
    assert sf_org.token_requests == 1
    assert _query(session).status_code == 200
    assert sf_org.token_requests == 1


def test_relative_urls_follow_an_instance_move(sf_org: StandInOrg) -> None:
    transport = SalesforceTransport(_oauth(sf_org))
    session = transport.rest_session()
    moved = sf_org.url.replace("127.0.0.1", "localhost")
    sf_org.instance_url = moved
    sf_org.expire_all_sessions()
    answer = _query(session)
    assert answer.status_code == 200
    assert answer.url.startswith(moved + "/services/data/v66.0/query")
    assert _query(session).url.startswith(moved)


def test_callouts_share_the_rest_flow(sf_org: StandInOrg) -> None:
    transport = SalesforceTransport(_oauth(sf_org), name="sfa")
    sf_org.expire_all_sessions()
    answer = transport.callout(
        "GET", "callout:sfa/services/data/v66.0/query?q=SELECT+Id+FROM+Account"
    )
    assert answer.status_code == 200
    assert sf_org.token_requests == 1
    assert _query(transport.rest_session()).status_code == 200
    assert sf_org.token_requests == 1


def test_httpx_auth_with_a_sync_client(sf_org: StandInOrg) -> None:
    transport = AsyncSalesforceTransport(_oauth(sf_org))
    sf_org.expire_all_sessions()
    with httpx.Client(auth=transport.rest_auth()) as client:
        answer = client.get(f"{sf_org.url}/services/data/v66.0/query", params={"q": SOQL})
    assert answer.status_code == 200
    assert rest_outcome(answer) == "refreshed"
    assert sf_org.token_requests == 1


def test_rest_client_refreshes_and_keeps_bearer_home(
    sf_org: StandInOrg, elsewhere: _Elsewhere
) -> None:
    transport = AsyncSalesforceTransport(_oauth(sf_org))

    async def run() -> tuple[httpx.Response, httpx.Response]:
        async with transport.rest_client() as client:
            sf_org.expire_all_sessions()
            home = await client.get("query", params={"q": SOQL})
            away = await client.get(elsewhere.url + "/x")
            return home, away

    home, away = asyncio.run(run())
    assert home.status_code == 200
    assert home.json()["totalSize"] == 3
    assert rest_outcome(home) == "refreshed"
    assert away.status_code == 200
    assert rest_outcome(away) is None
    assert elsewhere.authorizations == []
    assert sf_org.token_requests == 1


# --- one expiry, many callers --------------------------------------------------------------


def _tls_transport(org: StandInOrg) -> SalesforceTransport:
    """A transport on an https org: its SOAP session and its token requests trust the org's
    certificate, as an application's would trust its CA bundle."""
    oauth = _oauth(org)
    oauth.verify = org.ca_file
    soap = requests.Session()
    soap.verify = org.ca_file
    with allow_insecure_transport():  # a loopback instance, even over https
        return SalesforceTransport(oauth, session=soap)


def test_sixteen_threads_mix_soap_rest_and_simple_salesforce_over_one_expiry(
    tls_org: StandInOrg,
) -> None:
    tls_org.rotation = True
    with allow_insecure_transport():
        transport = _tls_transport(tls_org)
        client = zeep.Client(
            PARTNER_WSDL, transport=transport, settings=zeep.Settings(forbid_dtd=True)
        )
        session = transport.rest_session()
        sf = Salesforce(
            instance_url=tls_org.url,
            session_id=transport.token.access_token,
            session=transport.rest_session(),
        )
        barrier = threading.Barrier(17)
        failures: list[str] = []

        def soap() -> None:
            assert client.service.query(SOQL).body.result.size == 3

        def rest() -> None:
            answer = _query(session)
            assert answer.status_code == 200, answer.text
            assert answer.json()["totalSize"] == 3

        def simple() -> None:
            assert sf.query(SOQL)["totalSize"] == 3

        def worker(index: int) -> None:
            call = (soap, rest, simple)[index % 3]
            try:
                call()
                barrier.wait(timeout=30)
                barrier.wait(timeout=30)  # the expiry happens between the two
                call()
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                failures.append(f"{call.__name__}: {exc!r}")

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        barrier.wait(timeout=30)
        tls_org.expire_all_sessions()
        tls_org.reset_counters()
        barrier.wait(timeout=30)
        for thread in threads:
            thread.join(timeout=60)
    assert failures == []
    assert tls_org.token_requests == 1
    assert tls_org.family_revocations == 0


def test_simple_salesforce_crud_across_an_expiry(tls_org: StandInOrg) -> None:
    with allow_insecure_transport():
        transport = _tls_transport(tls_org)
        sf = Salesforce(
            instance_url=tls_org.url,
            session_id=transport.token.access_token,
            session=transport.rest_session(),
        )
        contacts = cast(SFType, sf.Contact)  # simple-salesforce types its __getattr__ loosely
        tls_org.expire_all_sessions()
        created = contacts.create({"LastName": "Ng"})
        assert created["success"] is True
        tls_org.expire_all_sessions()
        contacts.update(created["id"], {"FirstName": "Ada"})
        assert contacts.get(created["id"])["FirstName"] == "Ada"
        found = sf.query("SELECT Id, FirstName FROM Contact WHERE LastName = 'Ng'")
        assert [r["Id"] for r in found["records"]] == [created["id"]]
        contacts.delete(created["id"])
    assert tls_org.token_requests == 2  # one per expiry, none more


def test_a_session_not_valid_for_rest_is_not_an_expiry(sf_org: StandInOrg) -> None:
    transport = SalesforceTransport(_oauth(sf_org))
    sf_org.make_rest_invalid(transport.token.access_token)
    answer = _query(transport.rest_session())
    assert answer.status_code == 401
    assert "not valid for use with the REST API" in answer.text
    assert rest_outcome(answer) == "sent"
    assert sf_org.token_requests == 0


def test_rest_writes_across_an_expiry(sf_org: StandInOrg) -> None:
    transport = SalesforceTransport(_oauth(sf_org))
    session = transport.rest_session()
    sf_org.expire_all_sessions()
    created = session.post("sobjects/Contact", json={"LastName": "Ng"}, timeout=30)
    assert created.status_code == 201, created.text
    assert rest_outcome(created) == "refreshed"
    record_id = created.json()["id"]
    sf_org.expire_all_sessions()
    updated = session.patch(f"sobjects/Contact/{record_id}", json={"FirstName": "Ada"}, timeout=30)
    assert updated.status_code == 204
    assert rest_outcome(updated) == "refreshed"
    client = zeep.Client(PARTNER_WSDL, transport=transport, settings=zeep.Settings(forbid_dtd=True))
    found = client.service.query(
        "SELECT Id FROM Contact WHERE FirstName = 'Ada' AND LastName = 'Ng'"
    )
    assert found.body.result.size == 1
    assert sf_org.token_requests == 2
    limits = session.get("limits", timeout=30)
    assert limits.json()["DailyApiRequests"]["Max"] == 15000


def test_twenty_tasks_mix_async_client_and_rest_client(sf_org: StandInOrg) -> None:
    sf_org.rotation = True
    transport = AsyncSalesforceTransport(_oauth(sf_org))

    async def run() -> list[int]:
        async with (
            zeep.AsyncClient(PARTNER_WSDL, transport=transport) as client,
            transport.rest_client() as rest,
        ):

            async def soap() -> int:
                answer = await client.service.query(SOQL)
                return int(answer.body.result.size)

            async def query() -> int:
                answer = await rest.get("query", params={"q": SOQL})
                answer.raise_for_status()
                return int(answer.json()["totalSize"])

            await asyncio.gather(soap(), query())
            sf_org.expire_all_sessions()
            sf_org.reset_counters()
            return list(await asyncio.gather(*(soap() if i % 2 else query() for i in range(20))))

    assert asyncio.run(run()) == [3] * 20
    assert sf_org.token_requests == 1
    assert sf_org.family_revocations == 0


_PROCESS = """
import json, sys, threading
import zeep
from simple_salesforce.api import Salesforce
from zeep_sfrefresh import PARTNER_WSDL, SalesforceTransport

transport = SalesforceTransport.from_token_file(sys.argv[1])
client = zeep.Client(PARTNER_WSDL, transport=transport, settings=zeep.Settings(forbid_dtd=True))
session = transport.rest_session()
sf = Salesforce(
    instance_url=transport.token.instance_url,
    session_id=transport.token.access_token,
    session=transport.rest_session(),
)
soql = "SELECT Id FROM Account"

def soap():
    return client.service.query(soql).body.result.size

def rest():
    answer = session.get("query", params={"q": soql}, timeout=30)
    return answer.json()["totalSize"] if answer.status_code == 200 else answer.status_code

def simple():
    return sf.query(soql)["totalSize"]

calls = (soap, rest, simple)
for call in calls:
    call()
print("ready", flush=True)
sys.stdin.readline()
results = [None] * 9
def run(i):
    try:
        results[i] = calls[i % 3]()
    except Exception as exc:
        results[i] = repr(exc)
threads = [threading.Thread(target=run, args=(i,)) for i in range(9)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(results), flush=True)
"""


def test_two_processes_share_a_token_file_over_one_expiry(
    tls_org: StandInOrg, tmp_path: Path
) -> None:
    tls_org.rotation = True
    store = FileTokenStore(tmp_path / "sf.json")
    settings = TokenFileSettings("refresh_token", tls_org.client_id, tls_org.token_url, tls_org.url)
    secret = tmp_path / "secret"
    secret.write_text(tls_org.client_secret)
    with store.lock():
        store.save(
            tls_org.issue_token(),
            replaces=None,
            settings={**settings.to_json(), "client_secret_file": str(secret)},
        )
    # Each worker trusts the org's certificate as a deployment trusts its CA bundle.
    env = {**os.environ, INSECURE_TRANSPORT_VARIABLE: "1", "REQUESTS_CA_BUNDLE": tls_org.ca_file}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _PROCESS, str(store.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
        tls_org.expire_all_sessions()
        tls_org.reset_counters()
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        results = []
        for process in processes:
            out, _ = process.communicate(timeout=120)
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for process in processes:
            process.kill()
    assert results == [[3] * 9, [3] * 9]
    assert tls_org.token_requests == 1
    assert tls_org.family_revocations == 0


def test_a_forked_child_opens_its_own_rest_connections(sf_org: StandInOrg) -> None:
    transport = SalesforceTransport(_oauth(sf_org))
    session = transport.rest_session()
    assert _query(session).status_code == 200
    adapter = session.get_adapter(sf_org.url)
    assert len(adapter.poolmanager.pools) == 1  # type: ignore[attr-defined]
    pid = os.fork()
    if pid == 0:  # the child: no inherited pool, and a request of its own works
        code = 1
        try:
            child_adapter = session.get_adapter(sf_org.url)
            inherited = len(child_adapter.poolmanager.pools)  # type: ignore[attr-defined]
            code = 0 if inherited == 0 and _query(session).status_code == 200 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _query(session).status_code == 200  # the parent's connection still serves
