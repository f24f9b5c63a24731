"""Editing outgoing SOAP envelopes: the ``SessionHeader``.

zeep hands the transport the envelope as an lxml element; the session id is written into
it just before it is serialised, so users never pass ``_soapheaders`` and a resend only has
to change one text node. The element is then put back as it was: zeep's plugins (e.g.
``HistoryPlugin.last_sent``) keep a reference to it, and users print it when debugging, so
no session id may stay behind in it.
"""

from __future__ import annotations

from lxml import etree

__all__ = ["serialize_with_session_id", "set_session_id"]


def _escape(text: str) -> str:
    """XML-escape element text as lxml does (``xml.sax.saxutils`` costs an import)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _split(tag: object) -> tuple[str | None, str]:
    """``(namespace, local name)`` of a Clark-notation tag, by string slicing: a QName object
    per element costs more than the rest of the edit (this runs on every call)."""
    if not isinstance(tag, str):  # a comment or processing instruction
        return None, ""
    if tag[:1] == "{":
        namespace, _, local = tag[1:].partition("}")
        return namespace, local
    return None, tag


def _find_session_header(header: etree._Element, namespace: str | None) -> etree._Element | None:
    for child in header:
        child_ns, local = _split(child.tag)
        if local == "SessionHeader" and (namespace is None or child_ns == namespace):
            return child
    return None


def set_session_id(envelope: etree._Element, namespace: str | None, session_id: str) -> bool:
    """Write ``session_id`` into the envelope's ``SessionHeader/sessionId``, in place.

    With a ``namespace`` (the API's, from :data:`zeep_sfrefresh._apis.SOAP_APIS`) the
    header is added when missing and its old value replaced when present. With None
    (an endpoint whose API is unknown) only a ``SessionHeader`` the caller already put
    in the envelope, in any namespace, is updated. Returns whether the envelope now
    carries ``session_id``: a resend is only worth making when it does.
    """
    return _inject(envelope, namespace, session_id) is not None


def _inject(envelope: etree._Element, namespace: str | None, session_id: str) -> _Undo | None:
    """Write the session id; return how to undo it (None: no SessionHeader to write to)."""
    env_ns = _split(envelope.tag)[0]
    header = envelope.find(f"{{{env_ns}}}Header")
    session_header = None if header is None else _find_session_header(header, namespace)
    undo = _Undo()
    if session_header is None:
        if namespace is None:
            return None
        if header is None:
            header = etree.Element(f"{{{env_ns}}}Header")
            envelope.insert(0, header)
            undo.added = (envelope, header)
        session_header = etree.SubElement(
            header,
            f"{{{namespace}}}SessionHeader",
            nsmap={None: namespace},  # type: ignore[dict-item]  # lxml-stubs omit the default ns
        )
        undo.added = undo.added or (header, session_header)
    header_ns = _split(session_header.tag)[0]
    tag = "sessionId" if header_ns is None else f"{{{header_ns}}}sessionId"  # as the header's
    session_id_node = session_header.find(tag)
    if session_id_node is None:
        session_id_node = etree.SubElement(session_header, tag)
        undo.added = undo.added or (session_header, session_id_node)
    else:
        undo.text = (session_id_node, session_id_node.text)
    session_id_node.text = session_id
    return undo


class _Undo:
    """What :func:`_inject` changed: one element added, or one text replaced."""

    __slots__ = ("added", "text")

    def __init__(self) -> None:
        self.added: tuple[etree._Element, etree._Element] | None = None
        self.text: tuple[etree._Element, str | None] | None = None

    def __call__(self) -> None:
        if self.added is not None:
            parent, child = self.added
            parent.remove(child)
        elif self.text is not None:
            node, text = self.text
            node.text = text


def serialize_with_session_id(
    envelope: etree._Element, namespace: str | None, session_id: str
) -> bytes | None:
    """Return the envelope serialised with ``session_id`` in its ``SessionHeader``, and leave
    the element itself as it was. None when it has no ``SessionHeader`` to write to (see
    :func:`set_session_id`)."""
    fast = _serialize_with_new_header(envelope, namespace, session_id)
    if fast is not None:
        return fast
    undo = _inject(envelope, namespace, session_id)
    if undo is None:
        return None
    try:
        return etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
    finally:
        undo()


def _serialize_with_new_header(
    envelope: etree._Element, namespace: str | None, session_id: str
) -> bytes | None:
    """The common case without touching the tree: an envelope with no ``Header`` (zeep
    writes none unless the call has header values) is serialised as is and the header
    written in front of its ``Body``, byte for byte what :func:`_inject` would produce.

    Building, inserting and removing three lxml elements cost more than the rest of the
    transport's work per call; this costs a serialisation and a search. None when the case
    does not apply (a Header already there, no prefix on the envelope): the caller edits
    the tree instead.
    """
    prefix = envelope.prefix
    tag = envelope.tag
    if namespace is None or not prefix or not isinstance(tag, str) or tag[:1] != "{":
        return None
    header_tag = tag[: tag.index("}") + 1] + "Header"
    for child in envelope:
        if child.tag == header_tag:
            return None
    data = etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
    opening = f"<{prefix}:".encode()
    body = data.find(opening + b"Body")
    if body < 0:
        return None
    attribute = _escape(namespace).replace('"', "&quot;")
    header = (
        f'<{prefix}:Header><SessionHeader xmlns="{attribute}">'
        f"<sessionId>{_escape(session_id)}</sessionId></SessionHeader></{prefix}:Header>"
    ).encode()
    return data[:body] + header + data[body:]
