"""Keeping secrets out of logs, including the logs of the libraries we drive.

At DEBUG, requests-oauthlib logs refresh request bodies (refresh token, client secret),
fetch_token bodies (JWT assertions, passwords), request headers (Basic credentials) and
whole token answers; zeep logs whole envelopes (the session id). :class:`RedactingFilter`
rewrites such records before any handler sees them. It masks by shape, not by knowing the
secrets: values of secret-named fields in dicts, JSON, form bodies and query strings,
``Bearer``/``Basic`` credentials, Salesforce access tokens (``00D...!...``), JWTs, PEM
private keys and ``sessionId`` elements.

:func:`install_log_redaction` puts the filter on the loggers of requests-oauthlib, oauthlib,
zeep, urllib3, httpx and this package; the transports call it unless told not to. Logger
filters do not reach child loggers created later, so it runs again at each transport
construction; to cover every logger whatever its name, add :class:`RedactingFilter` to your
handlers instead.
"""

from __future__ import annotations

import functools
import logging
import re

__all__ = [
    "REDACTED_LOGGER_PREFIXES",
    "RedactingFilter",
    "install_log_redaction",
    "redact",
    "remove_log_redaction",
]

MASK = "***"

# Names of fields whose values are secrets (not secrets themselves).
_SECRET_FIELDS = "|".join(
    (
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
    )
)


@functools.cache
def _patterns() -> tuple[re.Pattern[str], ...]:
    # Compiled at the first redaction, not at import: the happy path (no DEBUG logging, no
    # error answer) never redacts.
    return (
        # 'refresh_token': '...', "access_token":"...", refresh_token=...&, sessionId: ...
        re.compile(
            rf"""(?P<keep>(?<![\w])['"]?(?:{_SECRET_FIELDS})['"]?\s*(?::|=)\s*['"]?)"""
            r"""(?P<secret>[^'"&\s,;}<>\]]+)""",
            re.IGNORECASE,
        ),
        # Authorization headers and their reprs.
        re.compile(r"(?P<keep>\b(?:Bearer|Basic|OAuth)\s+)(?P<secret>[A-Za-z0-9._~+/=!%-]{8,})"),
        # A Salesforce access token anywhere: an org id, "!", the session part.
        re.compile(r"(?P<keep>)(?P<secret>\b00D[A-Za-z0-9]{12,15}![A-Za-z0-9._-]+)"),
        # A JWT anywhere (assertions, JWT-based access tokens, id tokens).
        re.compile(r"(?P<keep>)(?P<secret>\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*)"),
        # A PEM private key block.
        re.compile(
            r"(?P<keep>-----BEGIN [A-Z ]*PRIVATE KEY-----)(?P<secret>.*?)(?=-----END)", re.DOTALL
        ),
        # <sessionId>...</sessionId> with any prefix, in envelopes and login answers.
        re.compile(r"(?P<keep><(?:[\w.-]+:)?sessionId\b[^>]*>)(?P<secret>[^<]+)"),
        # What fault texts echo after a label: "missing session key: ...", "session hash: ...".
        re.compile(
            r"(?P<keep>\bsession[ _-]?(?:key|hash|id|token)\s*[:=]\s*)(?P<secret>[^\s<>'\";,)&]+)",
            re.IGNORECASE,
        ),
    )


REDACTED_LOGGER_PREFIXES = (
    "requests_oauthlib",
    "oauthlib",
    "zeep",
    "urllib3",
    "httpx",
    "httpcore",
    "zeep_sfrefresh",
)
"""Loggers (and their existing children) that :func:`install_log_redaction` covers."""


def redact(text: str) -> str:
    """Return ``text`` with every secret-shaped part replaced by ``***``."""
    for pattern in _patterns():
        text = pattern.sub(lambda match: match.group("keep") + MASK, text)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in a record's message (it never drops records)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask the secrets in ``record``'s message and arguments; never drops a record."""
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_FILTER = RedactingFilter()


def _target_loggers() -> list[logging.Logger]:
    names = [
        name
        for name in list(logging.Logger.manager.loggerDict)
        if any(name == p or name.startswith(p + ".") for p in REDACTED_LOGGER_PREFIXES)
    ]
    return [logging.getLogger(name) for name in {*names, *REDACTED_LOGGER_PREFIXES}]


def install_log_redaction() -> None:
    """Add the redacting filter to the covered loggers that exist now (idempotent)."""
    for logger in _target_loggers():
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def remove_log_redaction() -> None:
    """Take the redacting filter off every logger it was added to."""
    for logger in _target_loggers():
        logger.removeFilter(_FILTER)
