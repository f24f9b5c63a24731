"""The transport with Salesforce's real, full partner WSDLs (from ../shared/reference), and the
compact partner WSDL's operations compared with the real ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest
import zeep
from conftest import SOQL, Harness, field_values, sobject
from reference import REFERENCE_DIR, requires_reference
from reference_wsdls import SETTINGS, document

from zeep_sfrefresh import PARTNER_WSDL

Build = Callable[..., Harness]

new_client = cast(Callable[..., Any], zeep.Client)
"""zeep.Client, typed loosely: zeep ships py.typed but leaves its API unannotated."""

FULL_HEADERS = {"upsert", "undelete", "search", "describeGlobal", "describeSObjects"}
"""Compact partner operations that declare every header the real binding declares for them."""

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


def _shape(operation: Any) -> tuple[list[str], list[str], set[str], Any, Any]:
    """(input headers, output headers, faults, input element, output element) of an operation."""

    def headers(message: Any) -> list[str]:
        return [name for name, _ in message.header.type.elements] if message.header else []

    return (
        headers(operation.input),
        headers(operation.output),
        set(operation.faults),
        operation.input.body.qname,
        operation.output.body.qname,
    )


def test_compact_partner_operations_have_the_real_shapes() -> None:
    """Each compact partner operation takes and answers the real one's elements and faults.

    upsert, undelete, search, describeGlobal and describeSObjects declare exactly the real
    binding's headers; the older operations a subset of them (see the compact WSDL's notes).
    """
    compact = new_client(PARTNER_WSDL, settings=SETTINGS)
    real = new_client(document("partner-v66.0.wsdl"), settings=SETTINGS)
    try:
        (compact_binding,) = compact.wsdl.bindings.values()
        (real_binding,) = real.wsdl.bindings.values()
        for name, operation in compact_binding._operations.items():
            inputs, outputs, faults, request, response = _shape(operation)
            real_inputs, real_outputs, *real_rest = _shape(real_binding._operations[name])
            assert [faults, request, response] == real_rest, name
            if name in FULL_HEADERS:
                assert (inputs, outputs) == (real_inputs, real_outputs), name
            else:
                assert set(inputs) <= set(real_inputs), name
                assert set(outputs) <= set(real_outputs), name
        assert set(compact_binding._operations) >= FULL_HEADERS
    finally:
        compact.transport.session.close()
        real.transport.session.close()


def test_new_partner_calls_with_the_real_wsdl(harness: Build) -> None:
    """The stand-in's answers to the calls added with upsert parse with the real WSDL too."""
    h = harness(wsdl=document("partner-v66.0.wsdl"))
    h.org.expire_all_sessions()
    upserted = h.client.service.upsert(
        "Email", [sobject(h.client, "Contact", LastName="Hopper", Email="grace.hopper@example.com")]
    )
    assert h.org.token_requests == 1
    (result,) = upserted.body.result
    assert (result.success, result.created) == (True, False)
    assert upserted.header.LimitInfoHeader.limitInfo[0].type == "API REQUESTS"
    assert h.client.service.delete([result.id]).body.result[0].success
    assert h.client.service.undelete([result.id]).body.result[0].id == result.id
    found = h.client.service.search("FIND {hopper} RETURNING Contact(Name)").body.result
    assert [field_values(r.record) for r in found.searchRecords] == [{"Name": "Grace Hopper"}]
    described = h.client.service.describeGlobal().body.result
    assert [o.name for o in described.sobjects] == ["Account", "Contact"]
    both = h.client.service.describeSObjects(["Account", "Contact"]).body.result
    assert [d.name for d in both] == ["Account", "Contact"]
    assert h.org.token_requests == 1
    assert h.org.internal_errors == []
