"""``import zeep_sfrefresh`` loads what a ``SalesforceTransport`` on an ``OAuth2Session`` needs,
and leaves the rest (login flows, token files, records, ``connect()``, REST) to first use.

Each check runs in a fresh interpreter: this one has imported everything long ago. The
benchmark ``benchmarks/import_time.py`` prints what it saves; nothing here is timed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from zeep_sfrefresh.testing import StandInOrg

NOT_ON_THE_HAPPY_PATH = {
    "http.server": "web_login",
    "zeep_sfrefresh._login": "web_login",
    "zeep_sfrefresh._tokenfile": "TokenFileSettings",
    "zeep_sfrefresh._records": "sobject",
    "zeep_sfrefresh._clients": "connect",
    "zeep_sfrefresh._rest": "RestAuth",
    "zeep_sfrefresh._callouts": "RestAuth",  # also a transport's first callout()
}
"""Modules neither ``import zeep_sfrefresh`` nor a transport's calls (a refresh included)
load, each with a public name whose first use loads it."""

LEFT_TO_THE_APPLICATION = ["oauthlib", "requests_oauthlib"]
"""Not loaded by ``import zeep_sfrefresh``: the application imports them for its
``OAuth2Session`` (a credential object's first token request does too)."""

HAPPY_PATH = """\
import json, sys

def loaded(names):
    return sorted(name for name in names if name in sys.modules)

lazy, settings = json.loads(sys.argv[1]), json.loads(sys.argv[2])
import zeep_sfrefresh

at_import = loaded(lazy + settings["application"])
listed = set(dir(zeep_sfrefresh))
after_dir = loaded(lazy)

import zeep
from requests_oauthlib import OAuth2Session

saved = []
oauth = OAuth2Session(
    settings["client_id"],
    token=settings["token"],
    auto_refresh_url=settings["token_url"],
    auto_refresh_kwargs={
        "client_id": settings["client_id"], "client_secret": settings["client_secret"]
    },
    token_updater=saved.append,
)
transport = zeep_sfrefresh.SalesforceTransport(oauth)
client = zeep.Client(zeep_sfrefresh.PARTNER_WSDL, transport=transport)
answers = [str(client.service.getServerTimestamp()) for _ in range(2)]  # expired: refreshed
after_calls = loaded(lazy)
application = loaded(settings["application"])

from zeep_sfrefresh import RestAuth, TokenFileSettings, connect, sobject, web_login

print(json.dumps({
    "at_import": at_import,
    "unlisted": sorted(set(zeep_sfrefresh.__all__) - listed),
    "after_dir": after_dir,
    "answers": answers,
    "refreshed": len(saved),
    "after_calls": after_calls,
    "application": application,
    "after_first_use": loaded(lazy),
    "first_use": [x.__name__ for x in (RestAuth, TokenFileSettings, connect, sobject, web_login)],
}))
"""


def _run(script: str, *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_import_and_the_happy_path_leave_the_rest_unloaded(sf_org: StandInOrg) -> None:
    token = sf_org.issue_token()
    sf_org.expire_all_sessions()  # the child's first call refreshes: that path is covered too
    lazy = sorted(NOT_ON_THE_HAPPY_PATH)
    settings = {
        "client_id": sf_org.client_id,
        "client_secret": sf_org.client_secret,
        "token_url": sf_org.token_url,
        "token": token,
        "application": LEFT_TO_THE_APPLICATION,
    }
    seen = _run(HAPPY_PATH, json.dumps(lazy), json.dumps(settings))

    assert seen["at_import"] == []
    assert seen["unlisted"] == []  # dir() lists every public name...
    assert seen["after_dir"] == []  # ...without loading any
    assert len(seen["answers"]) == 2
    assert seen["refreshed"] == 1
    assert sf_org.token_requests == 1
    assert seen["after_calls"] == []
    # The checks can see these modules: the application's import and first use load them.
    assert seen["application"] == LEFT_TO_THE_APPLICATION
    assert seen["after_first_use"] == lazy
    assert sorted(seen["first_use"]) == sorted(set(NOT_ON_THE_HAPPY_PATH.values()))


def test_import_leaves_asyncio_filelock_and_secrets_unloaded() -> None:
    # Only async callers need asyncio and only file stores need filelock; neither is on a
    # plain transport's path, and neither is cheap to import.
    script = (
        "import json, sys, zeep_sfrefresh\n"
        "print(json.dumps([m for m in ('asyncio', 'filelock', 'secrets') if m in sys.modules]))\n"
    )
    assert _run(script) == []
