"""The transport with Salesforce's real, full partner WSDLs (from ../shared/reference)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import SOQL, Harness, sobject
from reference import REFERENCE_DIR, requires_reference

Build = Callable[..., Harness]

pytestmark = requires_reference


@pytest.mark.parametrize(
    ("name", "named_host"),
    [("partner-v66.0.wsdl", "localhost:8080"), ("partner-v58.0.wsdl", "login.salesforce.com")],
)
def test_real_partner_wsdl_refreshes_and_resends(
    harness: Build, name: str, named_host: str
) -> None:
    h = harness(wsdl=str(REFERENCE_DIR / "wsdl" / name))
    assert named_host in h.client.service._binding_options["address"]

    answer = h.client.service.query(SOQL)
    assert answer.body.result.size == 10

    h.org.expire_all_sessions()
    answer = h.client.service.query(SOQL)
    assert answer.body.result.size == 10
    assert (h.org.token_requests, h.org.soap_posts) == (1, 3)
    assert h.org.sessions_seen[1] == h.issued["access_token"]
    assert h.org.sessions_seen[2] == h.saved[0]["access_token"]
    assert set(h.org.soap_hosts) == {h.org.url.removeprefix("http://")}

    h.org.expire_all_sessions()
    created = h.client.service.create([sobject(h.client, "Contact", LastName="Hopper")])
    assert created.body.result[0].success
    assert h.org.operations["create"] == 1
