"""Routing and API lookup: pure functions over URLs."""

from __future__ import annotations

import pytest

from zeep_sfrefresh._apis import SOAP_APIS, api_for_address
from zeep_sfrefresh._routing import route_to_instance

INSTANCE = "https://acme.my.salesforce.com"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (
            "https://login.salesforce.com/services/Soap/u/66.0",
            "https://acme.my.salesforce.com/services/Soap/u/66.0",
        ),
        (
            "http://localhost:8080/services/Soap/m/66.0",
            "https://acme.my.salesforce.com/services/Soap/m/66.0",
        ),
        (
            "https://na15.salesforce.com/services/Soap/c/64.0/00Di0000000icUB/0DFi00000008UYO",
            "https://acme.my.salesforce.com/services/Soap/c/64.0/00Di0000000icUB/0DFi00000008UYO",
        ),
        (
            "https://other.example/services/Soap/u/66.0?debug=1",
            "https://acme.my.salesforce.com/services/Soap/u/66.0?debug=1",
        ),
    ],
)
def test_soap_addresses_move_to_the_instance(address: str, expected: str) -> None:
    assert route_to_instance(address, INSTANCE) == expected


def test_scheme_host_and_port_come_from_the_instance_and_its_path_is_ignored() -> None:
    assert (
        route_to_instance(
            "https://login.salesforce.com/services/Soap/u/66.0", "http://127.0.0.1:8123/"
        )
        == "http://127.0.0.1:8123/services/Soap/u/66.0"
    )
    assert (
        route_to_instance(
            "https://login.salesforce.com/services/Soap/T/61.0", "https://x.force.com/community"
        )
        == "https://x.force.com/services/Soap/T/61.0"
    )


@pytest.mark.parametrize(
    "address",
    [
        "https://login.salesforce.com/services/data/v66.0/query",
        "https://example.com/soap/endpoint",
        "https://login.salesforce.com/services/SoapX/u/66.0",
        "https://login.salesforce.com/prefix/services/Soap/u/66.0",
    ],
)
def test_other_addresses_are_left_alone(address: str) -> None:
    assert route_to_instance(address, INSTANCE) == address


@pytest.mark.parametrize(
    ("address", "name"),
    [
        ("https://login.salesforce.com/services/Soap/u/66.0", "partner"),
        ("https://x/services/Soap/c/64.0/00D/0DF", "enterprise"),
        ("https://x/services/Soap/T/61.0", "tooling"),
        ("https://x/services/Soap/m/66.0/00D", "metadata"),
        ("https://x/services/Soap/s/66.0", "apex"),
    ],
)
def test_api_for_address(address: str, name: str) -> None:
    api = api_for_address(address)
    assert api is not None
    assert api.name == name
    assert SOAP_APIS[api.path_code] is api


@pytest.mark.parametrize(
    "address",
    [
        "https://x/services/Soap/t/61.0",  # path codes are case-sensitive
        "https://x/services/Soap/class/MyService",
        "https://x/services/data/v66.0",
        "https://x/",
    ],
)
def test_unknown_addresses_have_no_api(address: str) -> None:
    assert api_for_address(address) is None


def test_partner_namespace() -> None:
    assert SOAP_APIS["u"].namespace == "urn:partner.soap.sforce.com"
