"""No token or secret in any log record, repr or error; session ids only to the instance."""

from __future__ import annotations

import http.server
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
from conftest import SOQL, Harness

from zeep_sfrefresh import install_log_redaction, remove_log_redaction
from zeep_sfrefresh._errors import TokenDestinationError
from zeep_sfrefresh._faults import parse_fault
from zeep_sfrefresh._redaction import redact
from zeep_sfrefresh._routing import DestinationPolicy

Build = Callable[..., Harness]
NOISY = [
    "",
    "zeep",
    "zeep.transports",
    "requests_oauthlib",
    "oauthlib",
    "urllib3",
    "httpx",
    "httpcore",
]


@pytest.fixture
def everything_at_debug(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    for name in NOISY:
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def _full_cycle(h: Harness) -> None:
    h.org.rotation = True
    for _ in range(2):
        h.org.expire_all_sessions()
        h.client.service.query(SOQL)


def test_no_secret_in_any_log_record_at_debug(
    harness: Build, everything_at_debug: pytest.LogCaptureFixture
) -> None:
    h = harness()
    _full_cycle(h)
    records = everything_at_debug.records
    loggers = {record.name for record in records}
    assert "requests_oauthlib.oauth2_session" in loggers  # it did log the refresh bodies...
    text = "\n".join(record.getMessage() for record in records)
    assert "refresh_token=***" in text or "'refresh_token': '***'" in text  # ...masked
    for secret in h.secrets:
        assert secret not in text


def test_without_redaction_the_third_party_logs_do_leak(
    harness: Build, everything_at_debug: pytest.LogCaptureFixture
) -> None:
    """Shows what the filter is for (and that the test above can fail)."""
    h = harness(redact_logs=False)
    remove_log_redaction()
    try:
        _full_cycle(h)
    finally:
        install_log_redaction()
    text = "\n".join(record.getMessage() for record in everything_at_debug.records)
    assert any(secret in text for secret in h.secrets)


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        (
            "Prepared refresh token request body grant_type=refresh_token"
            "&refresh_token=5Aep861abc&client_id=3MVG&client_secret=shh",
            "client_id=3MVG",
        ),
        (
            "Adding auto refresh key word arguments "
            "{'client_id': 'x', 'client_secret': 'hunter2'}.",
            "'client_id': 'x'",
        ),
        (
            'Response content {"access_token":"00D000000000001!AQ0.AbCdEf","instance_url":"https://a.my.salesforce.com"}',
            "instance_url",
        ),
        ("Request headers were {'Authorization': 'Basic M01WRzpzZWNyZXQ='}", "Authorization"),
        (
            "Adding token {'access_token': '00D000000000001!AQ0x', "
            "'token_type': 'Bearer'} to request.",
            "token_type",
        ),
        (
            "body assertion=eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiIzTVZHIn0.c2lnbmF0dXJl&grant_type=jwt",
            "grant_type=jwt",
        ),
        (
            "<soapenv:Header><SessionHeader><sessionId>00D000000000001!AQ0x</sessionId>",
            "<sessionId>",
        ),
        (
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----",
            "END PRIVATE KEY",
        ),
        ("grant_type=password&username=u%40x.com&password=p%40ss", "username=u%40x.com"),
    ],
)
def test_redact_masks_secret_shapes(raw: str, kept: str) -> None:
    cleaned = redact(raw)
    assert "***" in cleaned
    assert kept in cleaned
    for secret in (
        "5Aep861abc",
        "shh",
        "hunter2",
        "AbCdEf",
        "M01WRzpzZWNyZXQ=",
        "AQ0x",
        "c2lnbmF0dXJl",
        "MIIEvQIBADANBg",
        "p%40ss",
    ):
        assert secret not in cleaned


def test_redact_leaves_ordinary_text_alone() -> None:
    text = "POST /services/Soap/u/66.0 HTTP/1.1 200; query select id from contact limit 10"
    assert redact(text) == text


@pytest.mark.parametrize(
    ("address", "instance", "ok"),
    [
        (
            "https://acme.my.salesforce.com/services/Soap/u/66.0",
            "https://acme.my.salesforce.com",
            True,
        ),
        (
            "https://acme.lightning.force.com/services/Soap/u/66.0",
            "https://acme.lightning.force.com",
            True,
        ),
        ("https://x.salesforce.mil/services/Soap/u/66.0", "https://x.salesforce.mil", True),
        (
            "https://login.salesforce.com/services/Soap/u/66.0",
            "https://acme.my.salesforce.com",
            False,
        ),
        (
            "http://acme.my.salesforce.com/services/Soap/u/66.0",
            "http://acme.my.salesforce.com",
            False,
        ),
        ("https://evil.example/services/Soap/u/66.0", "https://evil.example", False),
        (
            "https://salesforce.com.evil.example/services/Soap/u/66.0",
            "https://salesforce.com.evil.example",
            False,
        ),
        (
            "https://acme.my.salesforce.com:8443/services/Soap/u/66.0",
            "https://acme.my.salesforce.com",
            False,
        ),
        ("http://127.0.0.1:8080/services/Soap/u/66.0", "http://127.0.0.1:8080", False),
    ],
)
def test_destination_policy(address: str, instance: str, ok: bool) -> None:
    policy = DestinationPolicy()
    if ok:
        policy.check(address, instance)
    else:
        with pytest.raises(TokenDestinationError):
            policy.check(address, instance)


def test_loopback_only_with_the_insecure_transport_switch() -> None:
    DestinationPolicy(allow_loopback=True).check(
        "http://127.0.0.1:8080/services/Soap/u/1", "http://127.0.0.1:8080"
    )
    with pytest.raises(TokenDestinationError, match="OAUTHLIB_INSECURE_TRANSPORT"):
        DestinationPolicy().check(
            "http://localhost:8080/services/Soap/u/1", "http://localhost:8080"
        )


def test_a_refreshed_instance_off_salesforce_is_never_sent_the_session(harness: Build) -> None:
    h = harness(allowed_domains=("salesforce.com",))
    h.org.instance_url = "https://evil.example"
    h.org.expire_all_sessions()
    with pytest.raises(TokenDestinationError, match=r"evil\.example"):
        h.client.service.getServerTimestamp()
    assert h.org.soap_posts == 1  # the expired call only; no resend anywhere
    assert h.saved[0]["instance_url"] == "https://evil.example"  # kept, not dropped


class _Canary(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_external_entities_in_a_fault_are_never_fetched() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Canary)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/canary"
        env = "http://schemas.xmlsoap.org/soap/envelope/"
        for doctype in (
            f'<!DOCTYPE e [<!ENTITY x SYSTEM "{url}">]>',
            f'<!DOCTYPE e SYSTEM "{url}">',
            f'<!DOCTYPE e [<!ENTITY % p SYSTEM "{url}"> %p;]>',
        ):
            body = (
                f'<?xml version="1.0"?>{doctype}<soapenv:Envelope xmlns:soapenv="{env}">'
                "<soapenv:Body><soapenv:Fault><faultcode>&x;</faultcode>"
                "<faultstring>x</faultstring></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
            ).encode()
            assert parse_fault(body) is None
            assert parse_fault(body.decode().encode("utf-16")) is None
        assert _Canary.hits == 0
    finally:
        server.shutdown()
        server.server_close()
