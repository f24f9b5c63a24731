"""What a test sets on the stand-in org: the knobs, one dataclass.

:class:`Knobs` holds every setting a test may change while the org runs (rotation, failure
modes, delays, the connected app's options, batch sizes). The endpoints read them at the
moment they use them, so a test may change one while a request is held or delayed. A test
sets them on the org itself (``org.rotation = True``): :class:`~zeep_sfrefresh.testing.org.
StandInOrg` forwards each name here. Kept apart from the org's state
(:mod:`zeep_sfrefresh.testing.state`), which is what the org remembers, not what it is told.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zeep_sfrefresh.testing import authorize, grants

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEMO_USERNAME",
    "OVERLAP_DESCRIPTION",
    "TOKEN_FAILURES",
    "Knobs",
]

TOKEN_FAILURES = frozenset(
    {
        "invalid_grant",
        "html_500",
        "garbage_200",
        "drop",
        "drop_after_issue",
        "rate_limited_429",
        "rate_limited_429_date",
        "unavailable_503",
    }
)
"""Values ``StandInOrg.token_failure`` accepts (besides None).

``"invalid_grant"``, ``"html_500"``, ``"garbage_200"``, ``"drop"``, ``"rate_limited_429"``
(``Retry-After: 30``), ``"rate_limited_429_date"`` (``Retry-After`` as an HTTP date 30 s after
the answer's ``Date``) and ``"unavailable_503"`` answer without processing the grant;
``"drop_after_issue"`` processes it (a token is issued, the refresh token rotated) and then
closes the connection without an answer. See :attr:`Knobs.token_failure`.
"""

OVERLAP_DESCRIPTION = "Token request is already being processed"
"""The error_description Salesforce gives a refresh that overlaps one in flight (the default
of ``StandInOrg.overlap_description``; it also answers "expired authorization code")."""

DEFAULT_BATCH_SIZE = 2000
"""Records per query batch when a call asks for no size (Salesforce's default)."""

DEMO_USERNAME = "standin@example.com"
"""Username of the org's demo user (``StandInOrg.user_id``)."""


@dataclass
class Knobs:
    """Every knob of a stand-in org, with its default; assignments take effect at once.

    ``token_failure`` is checked when set (a ValueError for an unknown failure mode).
    """

    rotation: bool = False
    """Refresh answers carry a new refresh_token and retire the old one.

    Off by default, as in a connected app without refresh token rotation: the refresh
    token then stays usable and answers carry none.
    """
    reject_overlapping_refreshes: bool = True
    """Refuse a refresh whose refresh token is already in a request being answered.

    Salesforce does, and a fleet of workers sharing one refresh token meets it when two of
    them refresh at once. When False, overlapping requests are answered one after the
    other (with rotation the later one is then a reuse and revokes the family).
    """
    overlap_description: str = OVERLAP_DESCRIPTION
    """The error_description of an overlap refusal (Salesforce has been seen answering
    "expired authorization code" too)."""
    scope: str = "api refresh_token"
    """The scope string the token endpoint answers."""
    token_failure: str | None = None
    """None, or how the token endpoint fails every request until reset to None.

    ``"invalid_grant"``: HTTP 400 invalid_grant. ``"html_500"``: HTTP 500 with an HTML
    page. ``"garbage_200"``: HTTP 200 application/json with a cut-off body (no secret in
    it). ``"drop"``: the connection is closed without an answer. ``"rate_limited_429"``:
    HTTP 429 ``Too Many Requests`` with ``Retry-After: 30``. ``"rate_limited_429_date"``:
    the same with ``Retry-After`` as an HTTP date (IMF-fixdate) 30 seconds after the
    answer's ``Date`` header. ``"unavailable_503"``: HTTP 503 with a maintenance page and
    ``Retry-After: 120``. All of these leave the grant unprocessed and count in
    ``token_failures``.

    ``"drop_after_issue"``: the grant IS processed (a token issued, the refresh token
    rotated with ``rotation`` on), then the connection is closed without an answer: the
    request reached the server, the server rotated, the client never heard. It counts
    in ``token_failures`` only when the grant itself was refused.
    """
    token_delay: float = 0.0
    """Seconds the token endpoint waits before answering (before processing the grant:
    nothing is issued or rotated while it waits)."""
    token_answer_delay: float = 0.0
    """Seconds the token endpoint waits after processing the grant (tokens issued, the
    refresh token rotated) and before writing the answer: plays "the server rotated, but
    the client timed out before it heard". The refresh token stays in flight meanwhile;
    when the org stops during the wait the answer is dropped. Failure modes
    (``token_failure``) wait it too, a drop included; overlap refusals are answered at
    once, without it."""
    token_trickle: float = 0.0
    """Seconds between two bytes of every token endpoint answer (successes, failures and
    overlap refusals; drops send nothing): when above 0 the whole answer, status line
    and headers included, goes out one byte at a time and the connection is closed
    afterwards, so a client's per-read timeout never fires but the answer takes
    ``bytes * token_trickle`` seconds. The grant is processed before the first byte and
    the refresh token stays in flight until the last one is written (or the client hung
    up, or the org stopped)."""
    soap_delay: float = 0.0
    """Seconds every SOAP post waits before answering."""

    # Grants besides refresh_token (see zeep_sfrefresh.testing.grants).
    jwt_audience: str = grants.DEFAULT_JWT_AUDIENCE
    """The ``aud`` a JWT bearer assertion must carry. The org's own ``url`` and
    ``instance_url`` are accepted too, as a My Domain login URL would be, so a client that
    derives the audience from the address it posts to works against the stand-in."""
    client_credentials_user: str | None = DEMO_USERNAME
    """Username of the connected app's "Run As" user for the client_credentials grant;
    None plays an app without one ("no client credentials user enabled")."""
    password_grant_enabled: bool = True
    """False plays an org that blocks the username-password flow (the default since
    Summer '23): every password grant then fails as "authentication failure"."""
    reject_new_sessions: bool = False
    """Access tokens and sessions made from now on (any grant, issue_token, SOAP login)
    are refused by every API at once, as for an IP-locked session or a user without API
    access: a refresh cannot save them. Tokens issued before stay valid."""
    jwt_access_tokens: bool = False
    """OAuth answers (token endpoint, issue_token) carry JWT-format access tokens, which
    REST accepts and the SOAP APIs always refuse, as with Salesforce's JWT-based tokens."""
    require_secret_for_refresh: bool = True
    """False plays a connected app with "Require Secret for Refresh Token Flow" off (as
    the Salesforce CLI's own app): a refresh_token grant then needs only the client_id,
    though a secret that is sent must be right."""

    # The interactive flows (see zeep_sfrefresh.testing.authorize).
    callback_urls: set[str] = field(default_factory=lambda: {authorize.DEFAULT_CALLBACK_URL})
    """The connected app's callback URLs. Salesforce redirects only to a redirect_uri
    that equals one of them exactly (scheme, host, port, path, trailing slash); any other
    gets an error page, never a redirect. Add the address of a test's own callback
    server here."""
    authorization_code_lifetime: float = 600.0
    """Seconds an authorization code can be exchanged; it is good for one exchange."""
    require_secret_for_web_server_flow: bool = False
    """True plays a connected app with "Require Secret for Web Server Flow" on: the
    authorization_code grant then needs the client_secret. Off by default, as for a
    public client that proves itself with PKCE (a secret that is sent must be right
    either way)."""
    deny_authorization: bool = False
    """Plays the user clicking Deny on the consent page: the authorize endpoint then
    redirects with ``error=access_denied`` instead of a code."""
    device_interval: int = 5
    """The polling interval (whole seconds) a device flow start answers; a poll sooner
    than that after the previous one is ``slow_down``. Tests set 1, or 0 to poll freely."""
    device_code_lifetime: float = 600.0
    """Seconds a device code can be approved and polled; later polls answer
    ``expired_token``."""

    # Query batches.
    query_batch_size: int = DEFAULT_BATCH_SIZE
    """Records per SOAP query batch when the call sends no QueryOptions header (2000, as
    Salesforce's default); lower it to make clients that set no batch size (the command
    line's ``query``) go through queryMore."""
    rest_batch_size: int = DEFAULT_BATCH_SIZE
    """Records per REST query batch when the request has no ``Sforce-Query-Options:
    batchSize=N`` header (2000, Salesforce's default; clamped to 1..2000). Lower it to
    make REST clients follow ``nextRecordsUrl``."""

    def __setattr__(self, name: str, value: object) -> None:
        if name == "token_failure" and value is not None and value not in TOKEN_FAILURES:
            raise ValueError(f"token_failure must be None or one of {sorted(TOKEN_FAILURES)}")
        super().__setattr__(name, value)
