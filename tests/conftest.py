"""Shared fixtures: a stand-in org over real sockets and a zeep client wired to it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zeep
from lxml import etree
from requests_oauthlib import OAuth2Session

from zeep_sfrefresh import PARTNER_WSDL, SalesforceTransport
from zeep_sfrefresh.testing import StandInOrg
from zeep_sfrefresh.testing.redis_server import REDIS_SERVER, RedisServer

pytest_plugins = ["zeep_sfrefresh.testing.pytest_plugin"]

SOQL = "select id from contact limit 10"
SOBJECT_NS = "urn:sobject.partner.soap.sforce.com"


def sobject(client: zeep.Client, type_name: str, **fields: str) -> Any:
    """A partner sObject: its fields travel as xsd:any elements in the sobject namespace."""
    elements = []
    for name, value in fields.items():
        element = etree.Element(f"{{{SOBJECT_NS}}}{name}")
        element.text = value
        elements.append(element)
    return client.get_type(f"{{{SOBJECT_NS}}}sObject")(type=type_name, _value_1=elements)


def field_values(record: Any) -> dict[str, str | None]:
    """The xsd:any fields of a zeep sObject as {local name: text}."""
    return {etree.QName(element).localname: element.text for element in record["_value_1"] or []}


@dataclass
class Harness:
    """One user's setup: an OAuth2Session on the org, the transport, a zeep client."""

    org: StandInOrg
    oauth: OAuth2Session
    transport: SalesforceTransport
    client: zeep.Client
    saved: list[dict[str, Any]]
    """Every token dict ``token_updater`` received, in order."""
    issued: dict[str, Any]
    """The token the session started with."""


def make_oauth(
    org: StandInOrg,
    token: dict[str, Any],
    saved: list[dict[str, Any]],
    *,
    scope: list[str] | None = None,
    auto_refresh_kwargs: dict[str, Any] | None = None,
    token_url: str | None = None,
) -> OAuth2Session:
    return OAuth2Session(
        org.client_id,
        token=token,
        scope=scope,
        auto_refresh_url=token_url or org.token_url,
        auto_refresh_kwargs=(
            {"client_id": org.client_id, "client_secret": org.client_secret}
            if auto_refresh_kwargs is None
            else auto_refresh_kwargs
        ),
        token_updater=saved.append,
    )


@pytest.fixture
def harness(sf_org: StandInOrg) -> Callable[..., Harness]:
    """Build a Harness; keyword arguments go to make_oauth and SalesforceTransport."""

    def build(
        *,
        scope: list[str] | None = None,
        auto_refresh_kwargs: dict[str, Any] | None = None,
        token_url: str | None = None,
        token: dict[str, Any] | None = None,
        wsdl: str = PARTNER_WSDL,
        **transport_kwargs: Any,
    ) -> Harness:
        issued = token if token is not None else sf_org.issue_token()
        saved: list[dict[str, Any]] = []
        oauth = make_oauth(
            sf_org,
            dict(issued),
            saved,
            scope=scope,
            auto_refresh_kwargs=auto_refresh_kwargs,
            token_url=token_url,
        )
        transport = SalesforceTransport(oauth, **transport_kwargs)
        client = zeep.Client(wsdl, transport=transport, settings=zeep.Settings(forbid_dtd=True))
        return Harness(sf_org, oauth, transport, client, saved, dict(issued))

    return build


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server on a free loopback port, killed after the test.

    Skipped when redis-server is not installed, except in CI (.ci/run installs it and sets
    ZEEP_SFREFRESH_REQUIRE_REDIS=1), where its absence is a failure.
    """
    if REDIS_SERVER is None:
        reason = "redis-server is not installed (Debian package redis-server)"
        if os.environ.get("ZEEP_SFREFRESH_REQUIRE_REDIS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    server = RedisServer(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def another_org() -> Iterator[StandInOrg]:
    with StandInOrg() as org:
        yield org


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until ``condition`` holds; fail the test (not hang) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.005)
