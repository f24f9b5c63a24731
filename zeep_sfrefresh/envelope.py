"""Editing outgoing SOAP envelopes: the ``SessionHeader``.

zeep hands the transport the envelope as an lxml element; the session id is written
into it just before each send, so users never pass ``_soapheaders`` and a resend only
has to change one text node.
"""

from __future__ import annotations

from lxml import etree

__all__ = ["set_session_id"]


def _local_name(node: etree._Element) -> str:
    tag = node.tag
    return etree.QName(tag).localname if isinstance(tag, str) else ""


def _find_session_header(header: etree._Element, namespace: str | None) -> etree._Element | None:
    for child in header:
        if _local_name(child) != "SessionHeader":
            continue
        if namespace is None or etree.QName(child).namespace == namespace:
            return child
    return None


def set_session_id(envelope: etree._Element, namespace: str | None, session_id: str) -> bool:
    """Write ``session_id`` into the envelope's ``SessionHeader/sessionId``, in place.

    With a ``namespace`` (the API's, from :data:`zeep_sfrefresh.apis.SOAP_APIS`) the
    header is added when missing and its old value replaced when present. With None
    (an endpoint whose API is unknown) only a ``SessionHeader`` the caller already put
    in the envelope, in any namespace, is updated. Returns whether the envelope now
    carries ``session_id``: a resend is only worth making when it does.
    """
    env_ns = etree.QName(envelope).namespace
    header = envelope.find(f"{{{env_ns}}}Header")
    session_header = None if header is None else _find_session_header(header, namespace)
    if session_header is None:
        if namespace is None:
            return False
        if header is None:
            header = etree.Element(f"{{{env_ns}}}Header")
            envelope.insert(0, header)
        session_header = etree.SubElement(
            header,
            f"{{{namespace}}}SessionHeader",
            nsmap={None: namespace},  # type: ignore[dict-item]  # lxml-stubs omit the default ns
        )
    header_ns = etree.QName(session_header).namespace
    session_id_node = session_header.find(f"{{{header_ns}}}sessionId")
    if session_id_node is None:
        session_id_node = etree.SubElement(session_header, f"{{{header_ns}}}sessionId")
    session_id_node.text = session_id
    return True
