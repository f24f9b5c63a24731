"""Recognising Salesforce's expired-session fault, safely and exactly.

Salesforce answers a dead session with HTTP 500 and a SOAP fault whose ``faultcode`` is
``sf:INVALID_SESSION_ID`` (partner, enterprise, tooling: also a ``detail`` with an
``exceptionCode``; metadata: no ``detail`` at all). The prefix varies and may be absent,
so the code is compared by QName local name, never by searching the body for the text:
a successful answer whose data mentions ``INVALID_SESSION_ID`` must not cause a refresh.

Parsing is guarded because error bodies come from the network: no DTD, no entity
expansion, no network access, and nothing larger than :data:`MAX_FAULT_BYTES`.
Successful (2xx) answers are never parsed, so the happy path costs nothing here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from ._redaction import redact

__all__ = [
    "INVALID_SESSION_ID",
    "MAX_FAULT_BYTES",
    "SoapFault",
    "invalid_session_fault",
    "is_invalid_session",
    "parse_fault",
]

INVALID_SESSION_ID = "INVALID_SESSION_ID"

MAX_FAULT_BYTES = 64 * 1024
"""Error bodies larger than this are not parsed. Salesforce's session faults are ~1 KB."""

_SOAP11_ENV = "http://schemas.xmlsoap.org/soap/envelope/"


@dataclass(frozen=True)
class SoapFault:
    """The parts of a SOAP 1.1 fault that decide whether a refresh can help."""

    code: str
    """Local name of the ``faultcode`` QName (any prefix dropped)."""
    faultstring: str = field(repr=False)
    """The ``faultstring`` as sent, which may echo a session id: use :attr:`message`."""
    exception_code: str | None
    """``detail/*/exceptionCode`` when the fault has a detail (the metadata API's has none)."""

    @property
    def message(self) -> str:
        """The ``faultstring``, with anything shaped like a session id or hash masked (faults
        echo them: "missing session key: 00D...!AR...", "missing session hash: ...").

        Masked when read, not when parsed: deciding that a session expired never needs the
        text, and masking costs more than the parse.
        """
        return redact(self.faultstring)

    @property
    def is_invalid_session(self) -> bool:
        """True when Salesforce says the session id is expired or unknown."""
        return INVALID_SESSION_ID in (self.code, self.exception_code)


def _local_name(node: etree._Element) -> str:
    tag = node.tag
    return etree.QName(tag).localname if isinstance(tag, str) else ""


def _text(node: etree._Element | None) -> str:
    return (node.text or "").strip() if node is not None else ""


def parse_fault(body: bytes) -> SoapFault | None:
    """Return the SOAP fault in ``body``, or None when it is not a readable SOAP 1.1 fault.

    None also covers bodies over the size cap, bodies that declare a DTD, and XML that
    is not well formed: only a plain fault envelope can trigger a refresh.
    """
    if not body or len(body) > MAX_FAULT_BYTES or b"<!DOCTYPE" in body:
        return None
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    try:
        root = etree.fromstring(body, parser=parser)
    except etree.XMLSyntaxError:
        return None
    # A UTF-16 body hides "<!DOCTYPE" from the byte check above; the parsed tree does not.
    if (
        getattr(root.getroottree().docinfo, "doctype", "")
        or root.tag != f"{{{_SOAP11_ENV}}}Envelope"
    ):
        return None
    fault = root.find(f"{{{_SOAP11_ENV}}}Body/{{{_SOAP11_ENV}}}Fault")
    if fault is None:
        return None
    # SOAP 1.1 fault children are unqualified, but match by local name to be lenient.
    parts = {_local_name(child): child for child in fault}
    code = _text(parts.get("faultcode")).rpartition(":")[2]
    exception_code = None
    detail = parts.get("detail")
    if detail is not None:
        for node in detail.iter():
            if _local_name(node) == "exceptionCode":
                exception_code = _text(node) or None
                break
    if not code and exception_code is None:
        return None
    return SoapFault(code, _text(parts.get("faultstring")), exception_code)


def invalid_session_fault(status_code: int, body: bytes) -> SoapFault | None:
    """Return the fault when an HTTP answer says its session is invalid, else None.

    A success (2xx) is never parsed, so the happy path costs nothing here.
    """
    if 200 <= status_code < 300:
        return None
    fault = parse_fault(body)
    return fault if fault is not None and fault.is_invalid_session else None


def is_invalid_session(status_code: int, body: bytes) -> bool:
    """Decide from an HTTP answer whether its session expired, without parsing a success."""
    return invalid_session_fault(status_code, body) is not None
