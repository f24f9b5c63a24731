"""Sending SOAP requests to the org the token belongs to.

Real WSDLs name ``https://login.salesforce.com``, some org's host, or even
``http://localhost:8080`` (the generator's own). A session is only valid on its own
instance, which the token response names in ``instance_url``; so the path of a SOAP
address is kept and its scheme, host and port are taken from the token.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit, urlunsplit

from ._apis import SOAP_PATH_PREFIX
from ._errors import TokenDestinationError

__all__ = [
    "SALESFORCE_DOMAINS",
    "DestinationPolicy",
    "destination",
    "is_loopback",
    "route_to_instance",
]


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


SALESFORCE_DOMAINS = ("salesforce.com", "force.com", "salesforce.mil", "cloudforce.com")
"""Domains whose hosts may receive a session id (a host equal to one, or under one)."""


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address literal (127.0.0.0/8, ::1). A DNS name that only
    starts like one (``127.0.0.1.example.com``) is not: it may resolve anywhere."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class DestinationPolicy:
    """Where a session id may be sent: only to its token's instance, on a Salesforce domain.

    ``allow_loopback`` admits an ``http`` instance on this machine, for tests against a
    stand-in org; the transports set it only when the application set
    ``OAUTHLIB_INSECURE_TRANSPORT`` (the same switch that lets oauthlib use http).
    """

    allowed_domains: tuple[str, ...] = SALESFORCE_DOMAINS
    allow_loopback: bool = False

    def check(self, address: str, instance_url: str) -> None:
        """Raise :class:`TokenDestinationError` unless ``address`` may carry the session id."""
        instance = urlsplit(instance_url)
        host = (instance.hostname or "").lower()
        if is_loopback(host):
            if not self.allow_loopback:
                raise TokenDestinationError(
                    f"the token's instance is the loopback host {host}; allowed only when "
                    "OAUTHLIB_INSECURE_TRANSPORT is set (tests against a stand-in org)"
                )
        elif instance.scheme != "https":
            raise TokenDestinationError(f"the token's instance {host} is not https")
        elif not any(host == d or host.endswith("." + d) for d in self.allowed_domains):
            raise TokenDestinationError(
                f"the token's instance {host} is not on an allowed Salesforce domain "
                f"({', '.join(self.allowed_domains)})"
            )
        target = urlsplit(address)
        if (target.scheme, target.hostname, target.port) != (
            instance.scheme,
            instance.hostname,
            instance.port,
        ):
            raise TokenDestinationError(
                f"refusing to send the session id to {target.netloc}: only the token's "
                f"instance {instance.netloc} may receive it"
            )


@lru_cache(maxsize=256)
def destination(address: str, instance_url: str, route: bool, policy: DestinationPolicy) -> str:
    """Where a request carrying the session id goes: ``address`` routed to ``instance_url``
    when ``route``, then checked by ``policy`` (raising :class:`TokenDestinationError`).

    Both steps are pure functions of the arguments, and a process talks to a handful of
    (address, instance) pairs, so the answer is cached: URL parsing was a good part of the
    transport's own cost per call. Refusals are not cached (they raise).
    """
    target = route_to_instance(address, instance_url) if route else address
    policy.check(target, instance_url)
    return target
