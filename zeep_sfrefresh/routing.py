"""Sending SOAP requests to the org the token belongs to.

Real WSDLs name ``https://login.salesforce.com``, some org's host, or even
``http://localhost:8080`` (the generator's own). A session is only valid on its own
instance, which the token response names in ``instance_url``; so the path of a SOAP
address is kept and its scheme, host and port are taken from the token.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from .apis import SOAP_PATH_PREFIX

__all__ = ["route_to_instance"]


def route_to_instance(address: str, instance_url: str) -> str:
    """Return ``address`` moved onto ``instance_url``'s scheme, host and port.

    Only addresses whose path starts with ``/services/Soap/`` move; anything else (a
    WSDL download, a custom endpoint) is returned unchanged. A path in ``instance_url``
    is ignored: Salesforce serves the SOAP APIs from the root of the instance.
    """
    target = urlsplit(address)
    if not target.path.startswith(SOAP_PATH_PREFIX):
        return address
    base = urlsplit(instance_url)
    return urlunsplit((base.scheme, base.netloc, target.path, target.query, target.fragment))
