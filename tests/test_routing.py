"""Routing, API lookup and where a session id may go: pure functions over URLs."""

from __future__ import annotations

import re

import pytest

from zeep_sfrefresh._apis import SOAP_APIS, api_for_address
from zeep_sfrefresh._errors import TokenDestinationError
from zeep_sfrefresh._routing import DestinationPolicy, route_to_instance

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


# --- where a session id may go: DestinationPolicy ----------------------------------------------


@pytest.mark.parametrize(
    "instance",
    [
        "https://acme.my.salesforce.com",
        "https://acme.lightning.force.com",
        "https://acme.my.salesforce.mil",
        "https://acme.cloudforce.com",
        "https://cloudforce.com",
        "https://ACME.My.SalesForce.com",
    ],
)
def test_each_salesforce_domain_may_receive_the_session(instance: str) -> None:
    DestinationPolicy().check(instance.lower() + "/services/Soap/u/66.0", instance)


@pytest.mark.parametrize(
    "host",
    ["evilsalesforce.com", "notforce.com", "xcloudforce.com", "salesforce.com.evil.example"],
)
def test_a_host_merely_ending_in_a_domains_name_is_refused(host: str) -> None:
    with pytest.raises(
        TokenDestinationError, match=re.escape(f"{host} is not on an allowed Salesforce")
    ):
        DestinationPolicy().check(f"https://{host}/services/Soap/u/66.0", f"https://{host}")


def test_an_instance_over_plain_http_is_refused_and_told_why() -> None:
    with pytest.raises(TokenDestinationError, match=r"acme\.my\.salesforce\.com is not https"):
        DestinationPolicy().check(
            "http://acme.my.salesforce.com/services/Soap/u/66.0", "http://acme.my.salesforce.com"
        )


def test_another_host_than_the_instance_is_refused_and_named() -> None:
    with pytest.raises(
        TokenDestinationError,
        match=r"refusing to send the session id to other\.my\.salesforce\.com: only the "
        r"token's instance acme\.my\.salesforce\.com may receive it",
    ):
        DestinationPolicy().check("https://other.my.salesforce.com/services/Soap/u/66.0", INSTANCE)


@pytest.mark.parametrize(
    "instance",
    [
        "http://localhost:8080",
        "http://127.0.0.1:8080",
        "http://127.0.0.2:8080",
        "http://127.255.0.9:8080",
        "http://[::1]:8080",
        "https://[::1]:8443",
    ],
)
def test_loopback_instances_need_the_insecure_transport_switch(instance: str) -> None:
    address = instance + "/services/Soap/u/66.0"
    with pytest.raises(TokenDestinationError, match="loopback host"):
        DestinationPolicy().check(address, instance)
    DestinationPolicy(allow_loopback=True).check(address, instance)


def test_a_non_loopback_address_is_not_treated_as_loopback() -> None:
    instance = "http://128.0.0.1:8080"
    with pytest.raises(TokenDestinationError, match="is not https"):
        DestinationPolicy(allow_loopback=True).check(instance + "/services/Soap/u/1", instance)


@pytest.mark.parametrize("instance", ["http://127.evil.example", "http://127.0.0.1.evil.example"])
def test_a_dns_name_starting_with_127_is_not_loopback(instance: str) -> None:
    with pytest.raises(TokenDestinationError, match="is not https"):
        DestinationPolicy(allow_loopback=True).check(instance + "/services/Soap/u/1", instance)
