"""Salesforce's SOAP APIs as data: URL path code, SessionHeader namespace, bundled WSDL.

Everything that differs between the five APIs lives in one table, so code that injects
headers or routes requests looks an API up instead of branching on its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "APEX_WSDL",
    "DEFAULT_API_VERSION",
    "ENTERPRISE_WSDL",
    "METADATA_WSDL",
    "PARTNER_WSDL",
    "SOAP_APIS",
    "SOAP_PATH_PREFIX",
    "TOOLING_WSDL",
    "SoapApi",
    "api_for_address",
]

DEFAULT_API_VERSION = "66.0"
"""The REST API version a REST session puts in front of a relative path."""

SOAP_PATH_PREFIX = "/services/Soap/"
"""Every Salesforce SOAP endpoint lives under this path on the instance host."""

_WSDL_DIR = Path(__file__).resolve().parent / "wsdl"

PARTNER_WSDL = str(_WSDL_DIR / "partner.wsdl")
"""Path of the compact partner WSDL shipped with the package (API version 66.0)."""
ENTERPRISE_WSDL = str(_WSDL_DIR / "enterprise.wsdl")
"""Compact enterprise WSDL (a few typed objects; a real org generates its own)."""
TOOLING_WSDL = str(_WSDL_DIR / "tooling.wsdl")
"""Compact tooling WSDL."""
METADATA_WSDL = str(_WSDL_DIR / "metadata.wsdl")
"""Compact metadata WSDL."""
APEX_WSDL = str(_WSDL_DIR / "apex.wsdl")
"""Compact apex WSDL."""


@dataclass(frozen=True)
class SoapApi:
    """One Salesforce SOAP API: where it is served and which namespace its SessionHeader uses."""

    name: str
    """``partner``, ``enterprise``, ``tooling``, ``metadata`` or ``apex``."""
    path_code: str
    """The segment after ``/services/Soap/``: ``u`` for partner, ``c`` for enterprise, ..."""
    namespace: str
    """Namespace of ``SessionHeader`` and ``sessionId`` in this API's envelopes."""
    wsdl: str
    """Path of the compact WSDL shipped for this API."""


SOAP_APIS: dict[str, SoapApi] = {
    api.path_code: api
    for api in (
        SoapApi("partner", "u", "urn:partner.soap.sforce.com", PARTNER_WSDL),
        SoapApi("enterprise", "c", "urn:enterprise.soap.sforce.com", ENTERPRISE_WSDL),
        SoapApi("tooling", "T", "urn:tooling.soap.sforce.com", TOOLING_WSDL),
        SoapApi("metadata", "m", "http://soap.sforce.com/2006/04/metadata", METADATA_WSDL),
        SoapApi("apex", "s", "http://soap.sforce.com/2006/08/apex", APEX_WSDL),
    )
}
"""Known APIs keyed by path code. Path codes are case-sensitive (``T`` is tooling)."""


@lru_cache(maxsize=256)
def api_for_address(address: str) -> SoapApi | None:
    """Return the API an endpoint address belongs to, or None when it is not a known one.

    Only the path is looked at: WSDLs name many hosts for the same API. Cached: it runs on
    every call, for the few addresses a client posts to.
    """
    path = urlsplit(address).path
    if not path.startswith(SOAP_PATH_PREFIX):
        return None
    code = path[len(SOAP_PATH_PREFIX) :].split("/", 1)[0]
    return SOAP_APIS.get(code)
