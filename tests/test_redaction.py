"""Log redaction, shape by shape: each secret field, token shape and covered logger on its own.

test_secrets.py shows no secret reaches a log in a real refresh cycle; there, several shapes
cover the same secret (a session id is both ``00D...!`` and a ``sessionId`` field). These
tests give each shape a secret that only it can catch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from zeep_sfrefresh import RedactingFilter, install_log_redaction, remove_log_redaction
from zeep_sfrefresh._redaction import redact

SECRET = "Zq9-secret_Value.42"
"""Shaped like no token: only a field name or a label can get it masked."""

SECRET_FIELDS = [
    "access_token",
    "refresh_token",
    "id_token",
    "client_secret",
    "assertion",
    "password",
    "code_verifier",
    "sessionId",
    "session_id",
    "private_key",
]

COVERED_LOGGERS = [
    "requests_oauthlib",
    "oauthlib",
    "zeep",
    "urllib3",
    "httpx",
    "httpcore",
    "zeep_sfrefresh",
]


def assert_masked(text: str, kept: str) -> None:
    assert SECRET not in text
    assert "***" in text
    assert kept in text


@pytest.mark.parametrize("name", SECRET_FIELDS)
@pytest.mark.parametrize(
    ("template", "kept"),
    [
        ("client_id=KEEP&grant_type=x&{name}={secret}", "client_id=KEEP"),
        ("grant_type=x&{name}={secret}&client_id=KEEP", "&client_id=KEEP"),
        ('Response content {{"{name}": "{secret}", "instance_url": "KEEP"}}', '"KEEP"'),
        ("Adding token {{'{name}': '{secret}', 'token_type': 'KEEP'}}", "'KEEP'"),
    ],
    ids=["form", "form-followed", "json", "repr"],
)
def test_each_secret_field_is_masked_on_its_own(name: str, template: str, kept: str) -> None:
    assert_masked(redact(template.format(name=name, secret=SECRET)), kept)


@pytest.mark.parametrize(
    "name", ["client_id", "grant_type", "token_type", "my_password", "sessionIdentifier"]
)
def test_other_fields_are_left_alone(name: str) -> None:
    text = f"{{'{name}': '{SECRET}'}} {name}={SECRET}"
    assert redact(text) == text


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        # The shapes that need no field name around them.
        ("used 00D5g000004XyZ1!AQ4AQFhQfNm.Zq9_x-y for the call", "for the call"),
        ("used 00D5g000004XyZ1EAA!Zq9 for the call", "for the call"),
        ("issued eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.Zq9-sig_x as id", "as id"),
        ("issued eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0. as id", "as id"),  # unsigned
        ("headers {'Authorization': 'Bearer Zq9abcdefgh'}", "'Authorization'"),
        ("headers {'Authorization': 'Basic Zq9abcdefgh='}", "'Authorization'"),
        ("headers {'Authorization': 'OAuth Zq9abcdefgh'}", "'Authorization'"),
        ("missing session key: Zq9abcdefgh in the header", "in the header"),
        ("bad session hash=Zq9abcdefgh; try again", "try again"),
        ("-----BEGIN RSA PRIVATE KEY-----\nZq9abc\n-----END RSA PRIVATE KEY-----", "END RSA"),
        ('<ns1:sessionId xsi:type="xsd:string">Zq9abcdefgh</ns1:sessionId>', "</ns1:sessionId>"),
    ],
)
def test_each_token_shape_is_masked_on_its_own(text: str, kept: str) -> None:
    cleaned = redact(text)
    assert "Zq9" not in cleaned
    assert "***" in cleaned
    assert kept in cleaned


@pytest.mark.parametrize(
    "text",
    [
        "org 00D5g000004XyZ1 has no session here",  # an org id alone is not a secret
        "eyJ is how every JWT starts",
        "Bearer tokens are described in RFC 6750",
        "sessions: 3, keys: 4",
    ],
)
def test_text_that_only_resembles_a_secret_is_kept(text: str) -> None:
    assert redact(text) == text


# --- the filter on the loggers ----------------------------------------------------------------


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog
    install_log_redaction()  # as the other tests expect it


def _fresh_logger(name: str, request: pytest.FixtureRequest) -> logging.Logger:
    """A logger that exists before install_log_redaction runs (filters do not reach later
    children), named after the test so no other test has touched it."""
    suffix = request.node.name.replace("[", "_").replace("]", "").replace(".", "_")
    logger = logging.getLogger(f"{name}.{suffix}")
    logger.setLevel(logging.DEBUG)
    return logger


@pytest.mark.parametrize("prefix", COVERED_LOGGERS)
def test_each_covered_logger_and_its_existing_children_are_masked(
    prefix: str, debug_logs: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> None:
    child = _fresh_logger(prefix, request)
    install_log_redaction()
    for logger in (logging.getLogger(prefix), child):
        debug_logs.clear()
        logger.debug("Prepared request body refresh_token=%s&client_id=KEEP", SECRET)
        assert [record.name for record in debug_logs.records] == [logger.name]
        assert_masked(debug_logs.text, "client_id=KEEP")


@pytest.mark.parametrize("name", ["zeepish", "oauthlibx.child", "my_app.zeep", "root_child"])
def test_other_loggers_are_left_alone(
    name: str, debug_logs: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> None:
    """Other applications' records are theirs: add RedactingFilter to a handler to cover them."""
    logger = _fresh_logger(name, request)
    install_log_redaction()
    logger.debug("refresh_token=%s", SECRET)
    assert SECRET in debug_logs.text
    assert not any(isinstance(f, RedactingFilter) for f in logger.filters)


def test_installing_twice_adds_one_filter_and_removing_takes_it_off(
    debug_logs: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> None:
    logger = _fresh_logger("zeep", request)
    install_log_redaction()
    install_log_redaction()
    assert sum(isinstance(f, RedactingFilter) for f in logger.filters) == 1
    remove_log_redaction()
    assert not any(isinstance(f, RedactingFilter) for f in logger.filters)
    assert not any(isinstance(f, RedactingFilter) for f in logging.getLogger("zeep").filters)
    logger.debug("refresh_token=%s", SECRET)
    assert SECRET in debug_logs.text  # no longer masked


def test_the_filter_never_drops_a_record_and_keeps_clean_ones_as_they_are() -> None:
    clean = logging.LogRecord("zeep", logging.DEBUG, __file__, 1, "sent %d bytes", (42,), None)
    assert RedactingFilter().filter(clean)
    assert (clean.msg, clean.args) == ("sent %d bytes", (42,))
    secret = logging.LogRecord("zeep", logging.DEBUG, __file__, 1, "password=%s", (SECRET,), None)
    assert RedactingFilter().filter(secret)
    assert secret.getMessage() == "password=***"
