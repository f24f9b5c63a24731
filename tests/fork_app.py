"""A WSGI app for ``gunicorn --preload``: one zeep client built in the master, used by workers.

Importing this module (which ``--preload`` does in the gunicorn master, before it forks the
workers) reads its configuration from the environment, builds an ``OAuth2Session``, a
``SalesforceTransport`` sharing a ``FileTokenStore`` and a ``zeep.Client``, and makes one call,
so the master has used the transport (pooled connection, locks) before any worker exists.
Every worker then inherits that one client, as a preloaded production app would.

Environment (set by the gunicorn case in ``tests/test_fault_injection.py``):

* ``FORK_APP_TOKEN_URL``: the org's token endpoint.
* ``FORK_APP_CLIENT_ID``, ``FORK_APP_CLIENT_SECRET``: the connected app's credentials.
* ``FORK_APP_TOKEN``: the token dict, as JSON.
* ``FORK_APP_TOKEN_FILE``: the path of the shared token file.
* ``FORK_APP_DELAY``: seconds each request sleeps after its call (optional, default 0).
* ``OAUTHLIB_INSECURE_TRANSPORT=1``: the stand-in org serves plain http on loopback.

Nothing here ever prints or logs a token: answers carry the worker's pid or the error's
type and (library-redacted) message only.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import zeep
from requests_oauthlib import OAuth2Session

from zeep_sfrefresh import PARTNER_WSDL, FileTokenStore, SalesforceTransport

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def _build() -> zeep.Client:
    client_id = os.environ["FORK_APP_CLIENT_ID"]
    oauth = OAuth2Session(
        client_id,
        token=json.loads(os.environ["FORK_APP_TOKEN"]),
        auto_refresh_url=os.environ["FORK_APP_TOKEN_URL"],
        auto_refresh_kwargs={
            "client_id": client_id,
            "client_secret": os.environ["FORK_APP_CLIENT_SECRET"],
        },
    )
    transport = SalesforceTransport(
        oauth, store=FileTokenStore(os.environ["FORK_APP_TOKEN_FILE"]), token_timeout=20
    )
    return zeep.Client(PARTNER_WSDL, transport=transport, settings=zeep.Settings(forbid_dtd=True))


client = _build()
client.service.getServerTimestamp()  # the master uses the transport before forking workers
DELAY = float(os.environ.get("FORK_APP_DELAY", "0"))


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Make one SOAP call; answer 200 ``<pid> ok`` or 500 ``<pid> <error type>: <message>``."""
    pid = os.getpid()
    try:
        client.service.getServerTimestamp()
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
        status, body = "500 Internal Server Error", f"{pid} {type(exc).__name__}: {exc}"
    else:
        status, body = "200 OK", f"{pid} ok"
    if DELAY > 0:
        time.sleep(DELAY)  # spreads concurrent requests over the workers
    payload = body.encode("utf-8")
    start_response(
        status,
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(payload)))],
    )
    return [payload]
