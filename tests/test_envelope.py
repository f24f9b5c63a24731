"""Envelope editing: SessionHeader added or replaced in the API's namespace; masked log text."""

from __future__ import annotations

import pytest
from lxml import etree

from zeep_sfrefresh._envelope import serialize_with_session_id, set_session_id
from zeep_sfrefresh._redaction import redact

ENV = "http://schemas.xmlsoap.org/soap/envelope/"
PARTNER = "urn:partner.soap.sforce.com"
METADATA = "http://soap.sforce.com/2006/04/metadata"


def envelope(header: str = "") -> etree._Element:
    return etree.fromstring(
        f'<soap-env:Envelope xmlns:soap-env="{ENV}">{header}'
        f'<soap-env:Body><ns0:query xmlns:ns0="{PARTNER}"><ns0:queryString>SELECT Id FROM Contact'
        "</ns0:queryString></ns0:query></soap-env:Body></soap-env:Envelope>"
    )


def session_ids(env: etree._Element, namespace: str) -> list[str | None]:
    return [node.text for node in env.iter(f"{{{namespace}}}sessionId")]


def test_header_is_added_first_when_the_envelope_has_none() -> None:
    env = envelope()
    assert set_session_id(env, PARTNER, "TOKEN-1")
    assert etree.QName(env[0]).localname == "Header"
    assert etree.QName(env[1]).localname == "Body"
    assert session_ids(env, PARTNER) == ["TOKEN-1"]
    header = env[0][0]
    assert header.tag == f"{{{PARTNER}}}SessionHeader"


def test_session_header_is_added_to_an_existing_header() -> None:
    env = envelope(f'<soap-env:Header><x:CallOptions xmlns:x="{PARTNER}"/></soap-env:Header>')
    assert set_session_id(env, PARTNER, "TOKEN-1")
    assert [etree.QName(child).localname for child in env[0]] == ["CallOptions", "SessionHeader"]


def test_an_old_session_id_is_replaced_not_duplicated() -> None:
    env = envelope(
        f'<soap-env:Header><p:SessionHeader xmlns:p="{PARTNER}"><p:sessionId>OLD</p:sessionId>'
        "</p:SessionHeader></soap-env:Header>"
    )
    assert set_session_id(env, PARTNER, "NEW")
    assert session_ids(env, PARTNER) == ["NEW"]
    assert set_session_id(env, PARTNER, "NEWER")  # a resend edits the same node again
    assert session_ids(env, PARTNER) == ["NEWER"]
    assert len(env.findall(f"{{{ENV}}}Header")) == 1


def test_an_empty_session_header_gets_a_session_id() -> None:
    env = envelope(f'<soap-env:Header><p:SessionHeader xmlns:p="{PARTNER}"/></soap-env:Header>')
    assert set_session_id(env, PARTNER, "T")
    assert session_ids(env, PARTNER) == ["T"]


def test_namespace_follows_the_api() -> None:
    env = envelope()
    set_session_id(env, METADATA, "T")
    assert session_ids(env, METADATA) == ["T"]
    assert session_ids(env, PARTNER) == []


def test_unknown_api_only_updates_a_header_the_caller_wrote() -> None:
    custom = "http://soap.sforce.com/schemas/class/MyService"
    bare = envelope()
    assert not set_session_id(bare, None, "T")
    assert etree.QName(bare[0]).localname == "Body"  # untouched

    env = envelope(
        f'<soap-env:Header><c:SessionHeader xmlns:c="{custom}"><c:sessionId>OLD</c:sessionId>'
        "</c:SessionHeader></soap-env:Header>"
    )
    assert set_session_id(env, None, "NEW")
    assert session_ids(env, custom) == ["NEW"]


def test_result_is_valid_xml_that_round_trips() -> None:
    env = envelope()
    set_session_id(env, PARTNER, "00Dxx!AQ<&>")
    again = etree.fromstring(etree.tostring(env))
    assert session_ids(again, PARTNER) == ["00Dxx!AQ<&>"]


def test_session_ids_in_log_text_are_masked() -> None:
    text = (
        '<a><p:sessionId xmlns:p="urn:x">00Dxx!SECRET</p:sessionId><sessionId>SECRET2</sessionId>'
        "<sessionIdentifier>keep</sessionIdentifier><queryString>sessionId</queryString></a>"
    )
    masked = redact(text)
    assert "SECRET" not in masked
    assert masked.count("***") == 2
    assert "<sessionIdentifier>keep</sessionIdentifier>" in masked
    assert "<queryString>sessionId</queryString>" in masked


def _by_editing_the_tree(env: etree._Element, namespace: str, session_id: str) -> bytes:
    copy = etree.fromstring(etree.tostring(env))
    assert set_session_id(copy, namespace, session_id)
    return etree.tostring(copy, xml_declaration=True, encoding="utf-8")


def test_serialising_without_a_header_matches_editing_the_tree_byte_for_byte() -> None:
    session_id = "00Dx!AQ.a&b<c>'\""
    for namespace in (PARTNER, METADATA, "urn:odd&'"):
        env = envelope()
        before = etree.tostring(env)
        sent = serialize_with_session_id(env, namespace, session_id)
        assert sent == _by_editing_the_tree(env, namespace, session_id)
        assert etree.tostring(env) == before  # the element is left as it was
    header = envelope(f'<soap-env:Header><x:CallOptions xmlns:x="{PARTNER}"/></soap-env:Header>')
    assert serialize_with_session_id(header, PARTNER, "T") == _by_editing_the_tree(
        header, PARTNER, "T"
    )
    bare = etree.fromstring(
        f'<Envelope xmlns="{ENV}"><Body><q xmlns="{PARTNER}"/></Body></Envelope>'
    )  # no prefix: the tree is edited instead
    assert serialize_with_session_id(bare, PARTNER, "T") == _by_editing_the_tree(bare, PARTNER, "T")


def test_comments_and_unqualified_elements_in_the_header_are_skipped() -> None:
    env = envelope(
        "<soap-env:Header><!-- a note --><?pi x?><CallOptions/>"
        f'<p:SessionHeader xmlns:p="{PARTNER}"><p:sessionId>OLD</p:sessionId></p:SessionHeader>'
        "</soap-env:Header>"
    )
    assert set_session_id(env, PARTNER, "NEW")
    assert session_ids(env, PARTNER) == ["NEW"]
    assert len(env[0]) == 4  # nothing added


def test_the_header_goes_first_even_with_elements_after_the_body() -> None:
    # SOAP 1.1 lets namespace-qualified elements follow the Body.
    env = etree.fromstring(
        f'<soap-env:Envelope xmlns:soap-env="{ENV}"><soap-env:Body/><x:Trailer xmlns:x="urn:x"/>'
        "</soap-env:Envelope>"
    )
    assert set_session_id(env, PARTNER, "T")
    assert [etree.QName(child).localname for child in env] == ["Header", "Body", "Trailer"]


_CUSTOM = "http://soap.sforce.com/schemas/class/MyService"


@pytest.mark.parametrize(
    ("header", "namespace"),
    [
        ("", PARTNER),  # no Header: one is written
        (f'<soap-env:Header><x:CallOptions xmlns:x="{PARTNER}"/></soap-env:Header>', PARTNER),
        (f'<soap-env:Header><p:SessionHeader xmlns:p="{PARTNER}"/></soap-env:Header>', PARTNER),
        (
            f'<soap-env:Header><p:SessionHeader xmlns:p="{PARTNER}"><p:sessionId>OLD</p:sessionId>'
            "</p:SessionHeader></soap-env:Header>",
            PARTNER,
        ),
        (
            f'<soap-env:Header><c:SessionHeader xmlns:c="{_CUSTOM}"><c:sessionId/>'
            "</c:SessionHeader></soap-env:Header>",
            None,  # an API the transport does not know: the caller's header is used
        ),
    ],
    ids=["no-header", "other-header", "empty-session-header", "old-session-id", "unknown-api"],
)
@pytest.mark.parametrize("prefixed", [True, False])
def test_serialising_sends_the_session_id_and_leaves_no_trace_in_the_envelope(
    header: str, namespace: str | None, prefixed: bool
) -> None:
    """zeep's HistoryPlugin and users keep the envelope element: it must not keep the id."""
    env = envelope(header)
    if not prefixed:  # the same envelope with ENV as the default namespace
        env = etree.fromstring(
            etree.tostring(env).replace(b"soap-env:", b"").replace(b"xmlns:soap-env", b"xmlns")
        )
    before = etree.tostring(env)
    sent = serialize_with_session_id(env, namespace, "00Dx!SECRET")
    assert sent is not None
    assert [node.text for node in etree.fromstring(sent).iter("{*}sessionId")] == ["00Dx!SECRET"]
    assert etree.tostring(env) == before
    assert b"SECRET" not in etree.tostring(env)


def test_an_unknown_api_without_a_session_header_is_not_sent_a_session_id() -> None:
    env = envelope()
    before = etree.tostring(env)
    assert serialize_with_session_id(env, None, "00Dx!SECRET") is None
    assert etree.tostring(env) == before


def test_a_body_with_another_prefix_than_the_envelope_is_still_found() -> None:
    env = etree.fromstring(
        f'<soap-env:Envelope xmlns:soap-env="{ENV}" xmlns:s="{ENV}"><s:Body>'
        f'<q xmlns="{PARTNER}"/></s:Body></soap-env:Envelope>'
    )
    sent = serialize_with_session_id(env, PARTNER, "T")
    assert sent == _by_editing_the_tree(env, PARTNER, "T")
    assert session_ids(etree.fromstring(sent), PARTNER) == ["T"]


def test_an_unqualified_session_header_the_caller_wrote_is_updated() -> None:
    env = envelope(
        "<soap-env:Header><SessionHeader><sessionId>OLD</sessionId></SessionHeader>"
        "</soap-env:Header>"
    )
    assert set_session_id(env, None, "NEW")
    assert [node.text for node in env.iter("{*}sessionId")] == ["NEW"]
