"""Salesforce's SOAP APIs as data: URL path code, SessionHeader namespace, bundled WSDL.

Everything that differs between the five APIs lives in one table, so code that injects
headers or routes requests looks an API up instead of branching on its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["PARTNER_WSDL", "SOAP_APIS", "SOAP_PATH_PREFIX", "SoapApi", "api_for_address"]

SOAP_PATH_PREFIX = "/services/Soap/"
"""Every Salesforce SOAP endpoint lives under this path on the instance host."""

_WSDL_DIR = Path(__file__).resolve().parent / "wsdl"

PARTNER_WSDL = str(_WSDL_DIR / "partner.wsdl")
"""Path of the compact partner WSDL shipped with the package (API version 66.0)."""


@dataclass(frozen=True)
class SoapApi:
    """One Salesforce SOAP API: where it is served and which namespace its SessionHeader uses."""

    name: str
    path_code: str
    """The segment after ``/services/Soap/``: ``u`` for partner, ``c`` for enterprise, ..."""
    namespace: str
    """Namespace of ``SessionHeader`` and ``sessionId`` in this API's envelopes."""


SOAP_APIS: dict[str, SoapApi] = {
    api.path_code: api
    for api in (
        SoapApi("partner", "u", "urn:partner.soap.sforce.com"),
        SoapApi("enterprise", "c", "urn:enterprise.soap.sforce.com"),
        SoapApi("tooling", "T", "urn:tooling.soap.sforce.com"),
        SoapApi("metadata", "m", "http://soap.sforce.com/2006/04/metadata"),
        SoapApi("apex", "s", "http://soap.sforce.com/2006/08/apex"),
    )
}
"""Known APIs keyed by path code. Path codes are case-sensitive (``T`` is tooling)."""


def api_for_address(address: str) -> SoapApi | None:
    """Return the API an endpoint address belongs to, or None when it is not a known one.

    Only the path is looked at: WSDLs name many hosts for the same API.
    """
    path = urlsplit(address).path
    if not path.startswith(SOAP_PATH_PREFIX):
        return None
    code = path[len(SOAP_PATH_PREFIX) :].split("/", 1)[0]
    return SOAP_APIS.get(code)
