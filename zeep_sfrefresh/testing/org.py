"""The stand-in Salesforce org: a real HTTP server on loopback that speaks Salesforce's protocols.

It serves the OAuth token endpoint, the five SOAP APIs (the partner API for real, the others
for their session check and a few minimal calls) and the REST API's query, sObject and limits
resources (:mod:`zeep_sfrefresh.testing.rest`), against one in-memory dataset, over http or
https. Tests drive it through plain attributes (rotation, failure modes, delays) and read
counters afterwards. Every piece of shared state sits under one lock. The wire format lives in
:mod:`zeep_sfrefresh.testing.wire`, the data in :mod:`zeep_sfrefresh.testing.data`, SOQL in
:mod:`zeep_sfrefresh.testing.soql` and the sockets in :mod:`zeep_sfrefresh.testing.server`;
this module is the org's behaviour: who may do what, and what happens to its state.

Nothing is logged: the org handles access and refresh tokens, and the standard library's
request log would print paths and errors to stderr.
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import email.utils
import re
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, Literal, cast
from urllib.parse import parse_qs, unquote_plus

from lxml import etree

from zeep_sfrefresh.testing import authorize, grants, rest, soql, sosl, tls, wire
from zeep_sfrefresh.testing.data import (
    SCHEMA,
    Record,
    RecordStore,
    SObjectInput,
    SObjectSpec,
    Value,
    id15,
    random_id,
    to_18,
)
from zeep_sfrefresh.testing.server import Answer, LoopbackServer, Request

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

__all__ = ["OVERLAP_DESCRIPTION", "TOKEN_FAILURES", "RefreshTokenState", "StandInOrg"]

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
closes the connection without an answer. See ``StandInOrg.token_failure``.
"""

OVERLAP_DESCRIPTION = "Token request is already being processed"
"""The error_description Salesforce gives a refresh that overlaps one in flight (the default
of ``StandInOrg.overlap_description``; it also answers "expired authorization code")."""

RefreshTokenState = Literal["active", "retired", "revoked", "unknown"]
"""What :meth:`StandInOrg.refresh_token_state` reports."""

_EXPIRED_GRANT = "expired access/refresh token"

_SOAP_PATH = re.compile(r"^/services/Soap/(?P<code>[^/]+)/(?P<version>\d+\.\d+)(?:/.*)?$")
_REST_PATH = re.compile(r"^/services/data/v(?P<version>\d+\.\d+)(?P<rest>/.*)?$")
_DEFAULT_BATCH = 2000
_MAX_BATCH = 2000
_API_LIMIT = 15000
_SEARCH_LIMIT = 2000
"""The most records one search answers (SOSL's own cap when the search sets no LIMIT)."""

_Error = tuple[str, str, list[str]]
"""A per-record error: (statusCode, message, fields)."""

_ROLLED_BACK: _Error = (
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using AllOrNone "
    "header",
    [],
)


@dataclass
class _User:
    user_id: str
    username: str
    password: str = field(repr=False)
    full_name: str
    email: str


@dataclass(frozen=True)
class _Session:
    user_id: str
    soap: bool = True
    """False for a JWT-format access token: REST accepts it, the SOAP APIs refuse it."""
    rest: bool = True
    """False for a session the REST API refuses as "not valid for use with the REST API"
    (``StandInOrg.make_rest_invalid``); the SOAP APIs still take it."""


@dataclass(eq=False)
class _Family:
    """One authorisation's refresh tokens (the first and every rotation of it) and sessions.

    Salesforce revokes a family as a whole when a retired refresh token comes back: the reuse
    means a copy leaked or two holders raced, and it cannot tell which holder is legitimate.
    The tokens themselves live only as keys of ``StandInOrg._refresh_tokens`` and in the
    repr-less ``sessions`` set, so no repr shows one.
    """

    user_id: str
    sessions: set[str] = field(default_factory=set, repr=False)
    """Access tokens issued to this family (some may have expired since)."""
    revoked: bool = False


@dataclass(eq=False)
class _RefreshGrant:
    """What the org knows about one refresh token (the token is the dict key, not a field)."""

    family: _Family
    retired: bool = False
    """Used once with rotation on: presenting it again is a reuse."""

    @property
    def state(self) -> RefreshTokenState:
        if self.family.revoked:
            return "revoked"
        return "retired" if self.retired else "active"


@dataclass
class _SoapCall:
    """A parsed SOAP request on its way to an operation handler."""

    flavour: wire.SoapFlavour
    version: str
    operation: str
    payload: etree._Element
    header: etree._Element | None
    session: _Session | None = None


class _SoapFault(Exception):
    """Raised by operation handlers to answer with an API fault (HTTP 500)."""

    def __init__(
        self, code: str, message: str, *, row: int = -1, column: int = -1, prefix: str = "sf"
    ) -> None:
        super().__init__(code)
        self.code = code
        self.message = message
        self.row = row
        self.column = column
        self.prefix = prefix


@dataclass(frozen=True)
class _Injection:
    """A queued fail_next_soap / drop_next_soap order (``code`` None means drop)."""

    code: str | None
    message: str = ""
    prefix: str = "sf"


_SoapHandler = Callable[["StandInOrg", _SoapCall], Answer]


def _safe_parser() -> etree.XMLParser:
    """An lxml parser that never resolves entities, loads DTDs or touches the network."""
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname


def _children(parent: etree._Element | None, name: str) -> list[etree._Element]:
    """Children with the given local name (namespace-lenient, as a forgiving server is)."""
    if parent is None:
        return []
    return [child for child in parent if isinstance(child.tag, str) and _local(child) == name]


def _child_text(parent: etree._Element | None, name: str) -> str | None:
    found = _children(parent, name)
    return (found[0].text or "") if found else None


def _is_nil(element: etree._Element) -> bool:
    return element.get(f"{{{wire.XSI_NS}}}nil") in ("true", "1")


def _now_ms() -> str:
    return str(int(time.time() * 1000))


def _token(prefix: str) -> str:
    """A random token body shaped like Salesforce's (letters, digits, '.' and '_')."""
    return prefix + secrets.token_urlsafe(72).replace("-", ".")


class StandInOrg:
    """A fake Salesforce org on ``127.0.0.1`` for tests, in a background thread.

    Use it as a context manager (or call :meth:`start` / :meth:`stop`). Tokens come from
    :meth:`issue_token`; sessions expire when a test says so (:meth:`expire_all_sessions`), which
    is the whole point: the SOAP APIs then answer HTTP 500 ``INVALID_SESSION_ID`` like the real
    thing and the token endpoint can hand out a new access token.

    Refresh tokens come in families (one per :meth:`issue_token`). With ``rotation`` on, a
    refresh retires the refresh token it used and answers a new one of the same family;
    presenting a retired one again revokes the whole family (its refresh tokens and the
    sessions issued from it), as Salesforce does. A refresh that presents a refresh token
    another request is still being answered for is refused (``reject_overlapping_refreshes``).

    The token endpoint also serves the JWT bearer (:meth:`register_jwt_certificate`), client
    credentials and username-password grants, which answer no refresh token; their rules and
    refusals live in :mod:`zeep_sfrefresh.testing.grants`.

    The two interactive flows a login command uses are served too, consent given at once by
    the demo user (``user_id``): the web server flow (``GET /services/oauth2/authorize``, then
    ``grant_type=authorization_code``, PKCE optional) and Salesforce's device flow
    (``response_type=device_code`` at the token endpoint, approval at ``/setup/connect`` or
    with :meth:`approve_device`, polls with ``grant_type=device``). Both answer a refresh
    token that starts a new family, as :meth:`issue_token` does; their rules live in
    :mod:`zeep_sfrefresh.testing.authorize`.

    Knobs (plain attributes, settable at any time): ``rotation``, ``scope``, ``token_failure``,
    ``token_delay`` (before the grant is processed), ``token_answer_delay`` (after it is
    processed, before the answer), ``token_trickle`` (token answers written byte by byte),
    ``soap_delay``, ``reject_overlapping_refreshes``, ``overlap_description``,
    ``jwt_audience``, ``client_credentials_user``, ``password_grant_enabled``,
    ``reject_new_sessions``, ``jwt_access_tokens``, ``callback_urls``,
    ``authorization_code_lifetime``, ``require_secret_for_web_server_flow``,
    ``require_secret_for_refresh``, ``query_batch_size``, ``rest_batch_size``,
    ``deny_authorization``, ``device_interval``, ``device_code_lifetime``.

    The REST API (query and queryAll with ``nextRecordsUrl`` batches, sObject create, read,
    update and delete, describe, limits) is :mod:`zeep_sfrefresh.testing.rest`'s, over the
    same records as SOAP; :meth:`make_rest_invalid` makes REST refuse one session.
    ``StandInOrg(tls=True)`` serves https with a certificate made at start (``ca_file``).
    Counters (read under the lock): ``token_requests``, ``token_requests_by_grant``,
    ``token_failures``, ``soap_posts``, ``sessions_seen``, ``operations``, ``rest_requests``,
    ``family_revocations``, ``overlap_rejections``.
    ``internal_errors`` lists any exception the org itself raised while answering (it should
    stay empty; a non-empty list means a bug in the stand-in, not in the client).
    """

    api_version: ClassVar[str] = "66.0"

    def __init__(
        self,
        rotation: bool = False,
        client_id: str = "3MVG9standin",
        client_secret: str = "standin-secret",  # noqa: S107 - a test fixture
        port: int = 0,
        tls: bool = False,
    ) -> None:
        self.port = port
        """The port to listen on (127.0.0.1 only); 0 takes a free one."""
        self.tls = tls
        """Serve https with a self-signed certificate made at start (see ``ca_file``), for
        clients that only speak https to an instance (simple-salesforce). Needs the
        ``cryptography`` package, imported only then. Read at start."""
        self._tls_dir: Path | None = None
        self.rotation = rotation
        """Refresh answers carry a new refresh_token and retire the old one.

        Off by default, as in a connected app without refresh token rotation: the refresh
        token then stays usable and answers carry none.
        """
        self.reject_overlapping_refreshes = True
        """Refuse a refresh whose refresh token is already in a request being answered.

        Salesforce does, and a fleet of workers sharing one refresh token meets it when two of
        them refresh at once. When False, overlapping requests are answered one after the
        other (with rotation the later one is then a reuse and revokes the family).
        """
        self.overlap_description = OVERLAP_DESCRIPTION
        """The error_description of an overlap refusal (Salesforce has been seen answering
        "expired authorization code" too)."""
        self.scope = "api refresh_token"
        """The scope string the token endpoint answers."""
        self._token_failure: str | None = None
        self.token_delay = 0.0
        """Seconds the token endpoint waits before answering (before processing the grant:
        nothing is issued or rotated while it waits)."""
        self.token_answer_delay = 0.0
        """Seconds the token endpoint waits after processing the grant (tokens issued, the
        refresh token rotated) and before writing the answer: plays "the server rotated, but
        the client timed out before it heard". The refresh token stays in flight meanwhile;
        when the org stops during the wait the answer is dropped. Failure modes
        (``token_failure``) wait it too, a drop included; overlap refusals are answered at
        once, without it."""
        self.token_trickle = 0.0
        """Seconds between two bytes of every token endpoint answer (successes, failures and
        overlap refusals; drops send nothing): when above 0 the whole answer, status line
        and headers included, goes out one byte at a time and the connection is closed
        afterwards, so a client's per-read timeout never fires but the answer takes
        ``bytes * token_trickle`` seconds. The grant is processed before the first byte and
        the refresh token stays in flight until the last one is written (or the client hung
        up, or the org stopped)."""
        self.soap_delay = 0.0
        """Seconds every SOAP post waits before answering."""
        self.client_id = client_id
        self.client_secret = client_secret
        self.org_id = random_id("00D")
        self.user_id = random_id("005")
        self.organization_name = "Stand-in Org"

        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: LoopbackServer | None = None
        self._thread: threading.Thread | None = None
        self._started = False
        self._stopped = False

        self._users: dict[str, _User] = {
            self.user_id: _User(
                self.user_id,
                "standin@example.com",
                secrets.token_hex(16),
                "Stan Din",
                "standin@example.com",
            )
        }
        self._sessions: dict[str, _Session] = {}
        self._refresh_tokens: dict[str, _RefreshGrant] = {}
        self._refreshing: collections.Counter[str] = collections.Counter()
        """Refresh tokens presented by requests not answered yet (how many of each)."""
        self._store = RecordStore.seeded()
        self._cursors: dict[str, soql.Cursor] = {}
        self._injected: collections.deque[_Injection] = collections.deque()

        self._token_requests = 0
        self._token_failures = 0
        self._soap_posts = 0
        self._rest_requests = 0
        self._api_requests = 0
        self._family_revocations = 0
        self._overlap_rejections = 0
        self._sessions_seen: list[str] = []
        self._soap_hosts: list[str] = []
        self._instance_url: str | None = None
        self._token_hold: threading.Event | None = None
        self._operations: collections.Counter[str] = collections.Counter()
        self._internal_errors: list[str] = []

        # Grants besides refresh_token (see zeep_sfrefresh.testing.grants).
        self.jwt_audience = grants.DEFAULT_JWT_AUDIENCE
        """The ``aud`` a JWT bearer assertion must carry. The org's own ``url`` and
        ``instance_url`` are accepted too, as a My Domain login URL would be, so a client that
        derives the audience from the address it posts to works against the stand-in."""
        self.client_credentials_user: str | None = self._users[self.user_id].username
        """Username of the connected app's "Run As" user for the client_credentials grant;
        None plays an app without one ("no client credentials user enabled")."""
        self.password_grant_enabled = True
        """False plays an org that blocks the username-password flow (the default since
        Summer '23): every password grant then fails as "authentication failure"."""
        self.reject_new_sessions = False
        """Access tokens and sessions made from now on (any grant, issue_token, SOAP login)
        are refused by every API at once, as for an IP-locked session or a user without API
        access: a refresh cannot save them. Tokens issued before stay valid."""
        self.jwt_access_tokens = False
        """OAuth answers (token endpoint, issue_token) carry JWT-format access tokens, which
        REST accepts and the SOAP APIs always refuse, as with Salesforce's JWT-based tokens."""
        self._jwt_keys: list[RSAPublicKey] = []
        self._token_requests_by_grant: collections.Counter[str] = collections.Counter()

        # The interactive flows (see zeep_sfrefresh.testing.authorize).
        self.callback_urls: set[str] = {authorize.DEFAULT_CALLBACK_URL}
        """The connected app's callback URLs. Salesforce redirects only to a redirect_uri
        that equals one of them exactly (scheme, host, port, path, trailing slash); any other
        gets an error page, never a redirect. Add the address of a test's own callback
        server here."""
        self.authorization_code_lifetime = 600.0
        """Seconds an authorization code can be exchanged; it is good for one exchange."""
        self.require_secret_for_web_server_flow = False
        """True plays a connected app with "Require Secret for Web Server Flow" on: the
        authorization_code grant then needs the client_secret. Off by default, as for a
        public client that proves itself with PKCE (a secret that is sent must be right
        either way)."""
        self.query_batch_size = _DEFAULT_BATCH
        """Records per SOAP query batch when the call sends no QueryOptions header (2000, as
        Salesforce's default); lower it to make clients that set no batch size (the command
        line's ``query``) go through queryMore."""
        self.rest_batch_size = _DEFAULT_BATCH
        """Records per REST query batch when the request has no ``Sforce-Query-Options:
        batchSize=N`` header (2000, Salesforce's default; clamped to 1..2000). Lower it to
        make REST clients follow ``nextRecordsUrl``."""
        self.require_secret_for_refresh = True
        """False plays a connected app with "Require Secret for Refresh Token Flow" off (as
        the Salesforce CLI's own app): a refresh_token grant then needs only the client_id,
        though a secret that is sent must be right."""
        self.deny_authorization = False
        """Plays the user clicking Deny on the consent page: the authorize endpoint then
        redirects with ``error=access_denied`` instead of a code."""
        self.device_interval = 5
        """The polling interval (whole seconds) a device flow start answers; a poll sooner
        than that after the previous one is ``slow_down``. Tests set 1, or 0 to poll freely."""
        self.device_code_lifetime = 600.0
        """Seconds a device code can be approved and polled; later polls answer
        ``expired_token``."""
        self._authorization_codes: dict[str, authorize.AuthorizationCode] = {}
        self._device_authorizations: dict[str, authorize.DeviceAuthorization] = {}
        """By device code."""

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> StandInOrg:
        """Bind a free port on 127.0.0.1 and serve in a background thread. Returns self.

        An org serves once: after :meth:`stop` make a new one (tokens and records die with it).
        """
        with self._lock:
            if self._started or self._stopped:
                raise RuntimeError("a StandInOrg can only be started once")
            self._started = True
            context = None
            try:
                if self.tls:
                    self._tls_dir = Path(tempfile.mkdtemp(prefix="standin-org-tls-"))
                    context = tls.server_context(tls.make_identity(self._tls_dir))
                server = LoopbackServer(self, self._stopping, self.port, context)
            except BaseException:
                self._remove_tls_dir()  # stop() would not: nothing is serving
                raise
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"StandInOrg:{server.server_address[1]}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections and join every thread. Safe to call twice.

        Pending delays end at once (they wait on an event), so this never hangs on a test
        that set a long ``token_delay``, ``token_answer_delay`` or ``soap_delay``; a trickling
        answer (``token_trickle``) stops at its next byte. With ``tls`` the certificate's
        directory is removed.
        """
        with self._lock:
            self._stopped = True
            self._stopping.set()
            server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join()
        with self._lock:
            self._server = None
            self._thread = None
            self._remove_tls_dir()

    def _remove_tls_dir(self) -> None:
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
            self._tls_dir = None

    def __enter__(self) -> StandInOrg:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        # Only the address and counters: never tokens, secrets or sessions.
        with self._lock:
            where = self._url_or_none() or ("stopped" if self._stopped else "not started")
            return (
                f"<StandInOrg {where} token_requests={self._token_requests} "
                f"token_failures={self._token_failures} soap_posts={self._soap_posts} "
                f"rest_requests={self._rest_requests} "
                f"family_revocations={self._family_revocations} "
                f"overlap_rejections={self._overlap_rejections}>"
            )

    @property
    def token_failure(self) -> str | None:
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
        return self._token_failure

    @token_failure.setter
    def token_failure(self, value: str | None) -> None:
        if value is not None and value not in TOKEN_FAILURES:
            raise ValueError(f"token_failure must be None or one of {sorted(TOKEN_FAILURES)}")
        self._token_failure = value

    # --- addresses ---------------------------------------------------------------------------

    def _url_or_none(self) -> str | None:
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        scheme = "https" if self._server.ssl_context is not None else "http"
        return f"{scheme}://{host!s}:{port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with ``tls``), where the org listens (and
        its default instance_url)."""
        url = self._url_or_none()
        if url is None:
            raise RuntimeError("the StandInOrg is not running; call start() first")
        return url

    @property
    def ca_file(self) -> str:
        """Path of the PEM certificate a ``tls`` org presents, for clients' ``verify=``.

        Self-signed and made at start for ``127.0.0.1`` and ``localhost``; it is its own
        trust anchor, so ``requests.get(org.url, verify=org.ca_file)`` verifies. A
        ``requests.Session`` takes it as ``session.verify``, but requests lets the
        ``REQUESTS_CA_BUNDLE`` and ``CURL_CA_BUNDLE`` environment variables override that
        (not a per-request ``verify=``). Deleted by :meth:`stop`. RuntimeError when the org
        does not serve https or is not running.
        """
        with self._lock:
            if self._tls_dir is None:
                raise RuntimeError("the StandInOrg serves no https: start it with tls=True")
            return str(self._tls_dir / "standin-org.pem")

    @property
    def instance_url(self) -> str:
        """The instance_url the token endpoint answers; ``url`` unless a test moved it.

        Set it to another address of the same server (``http://localhost:PORT``) to play an
        org that moved to a new instance: clients must follow the new instance_url.
        """
        with self._lock:
            return self._instance_url or self.url

    @instance_url.setter
    def instance_url(self, value: str | None) -> None:
        with self._lock:
            self._instance_url = value.rstrip("/") if value else None

    @property
    def token_url(self) -> str:
        """The OAuth token endpoint."""
        return self.url + "/services/oauth2/token"

    def soap_path(self, code: str = "u", version: str | None = None) -> str:
        """``/services/Soap/<code>/<version>/<org_id>``, the path of one SOAP API."""
        return f"/services/Soap/{code}/{version or self.api_version}/{self.org_id}"

    def identity_url(self, user_id: str | None = None) -> str:
        """The token's ``id``: ``<url>/id/<org_id>/<user_id>``."""
        return f"{self.url}/id/{self.org_id}/{user_id or self.user_id}"

    # --- sessions and tokens -----------------------------------------------------------------

    def add_user(self, username: str, password: str, full_name: str = "Test User") -> str:
        """Register a user that SOAP ``login`` accepts; returns the new user's ID.

        The token endpoint knows the user too: as a JWT bearer ``sub``, for the password grant
        and as ``client_credentials_user``.
        """
        with self._lock:
            user_id = random_id("005")
            self._users[user_id] = _User(user_id, username, password, full_name, username)
            return user_id

    def _new_session(
        self, user_id: str, family: _Family | None = None, *, oauth: bool = False
    ) -> str:
        """A new access token or session ID (called with the lock held).

        ``oauth`` marks a token endpoint answer (or issue_token): only those become JWT-format
        with ``jwt_access_tokens`` on, a SOAP login's sessionId never does. With
        ``reject_new_sessions`` on the token is made but never registered, so every API
        refuses it as unknown.
        """
        session = _Session(user_id)
        if oauth and self.jwt_access_tokens:
            access_token = grants.jwt_access_token(
                org_id=self.org_id,
                user_id=user_id,
                issuer=self.instance_url,
                client_id=self.client_id,
                scope=self.scope,
                now=time.time(),
            )
            session = _Session(user_id, soap=False)
        else:
            access_token = f"{self.org_id[:15]}!{_token('AQ')}"
        if self.reject_new_sessions:
            return access_token
        self._sessions[access_token] = session
        if family is not None:
            family.sessions.add(access_token)
        return access_token

    def _user_named(self, username: str | None) -> _User | None:
        """The user with this username (called with the lock held)."""
        return next((u for u in self._users.values() if u.username == username), None)

    def register_jwt_certificate(self, public_key_pem: bytes | str) -> None:
        """Register a connected-app certificate for the JWT bearer grant (several may be).

        Takes a PEM X.509 certificate (what Salesforce stores) or a PEM public key; it must be
        RSA. An assertion is accepted when any registered key verifies its RS256 signature, so
        a test can play a certificate rotation by registering the new one first. Needs
        pyjwt[crypto]; raises ValueError for anything but an RSA certificate or public key.
        """
        key = grants.load_public_key(public_key_pem)
        with self._lock:
            self._jwt_keys.append(key)

    def _new_refresh_token(self, family: _Family) -> str:
        refresh_token = _token("5Aep861")
        self._refresh_tokens[refresh_token] = _RefreshGrant(family)
        return refresh_token

    def issue_token(self) -> dict[str, str]:
        """A token as the authorization-code flow returns it, with a refresh_token.

        The access token becomes a valid session and the refresh token is registered, so the
        pair can be handed to a client as if a user had just authorised the app. Each call
        starts a new refresh-token family: revoking one family leaves the others alone.
        """
        with self._lock:
            family = _Family(self.user_id)
            access_token = self._new_session(self.user_id, family, oauth=True)
            refresh_token = self._new_refresh_token(family)
            return self._token_body(access_token, refresh_token, self.user_id)

    def refresh_token_state(self, refresh_token: str) -> RefreshTokenState:
        """``"active"``, ``"retired"`` (rotated away), ``"revoked"`` or ``"unknown"``.

        Lets a test prove that a client kept the rotated refresh token (the new one is still
        active) or lost it (only a retired or revoked one is left).
        """
        with self._lock:
            grant = self._refresh_tokens.get(refresh_token)
            return "unknown" if grant is None else grant.state

    def _token_body(
        self, access_token: str, refresh_token: str | None, user_id: str
    ) -> dict[str, str]:
        return wire.token_body(
            access_token=access_token,
            refresh_token=refresh_token,
            instance_url=self.instance_url,
            identity_url=self.identity_url(user_id),
            issued_at=_now_ms(),
            scope=self.scope,
            client_secret=self.client_secret,
        )

    def expire_all_sessions(self) -> None:
        """Invalidate every access token and SOAP session issued so far (refresh tokens stay)."""
        with self._lock:
            self._sessions.clear()

    def expire_session(self, access_token: str) -> None:
        """Invalidate one access token or session ID."""
        with self._lock:
            self._sessions.pop(access_token, None)

    def make_rest_invalid(self, access_token: str) -> None:
        """Make the REST API refuse a live session as one it may not use; SOAP still takes it.

        Salesforce answers such a session (one it issued for something else, a UI session
        say) with HTTP 401 ``INVALID_SESSION_ID`` "This session is not valid for use with the
        REST API": the same code as an expired session's, a different message, and a refresh
        that issues another session of the same kind does not help. Raises KeyError when no
        live session has this token (the message does not repeat it).
        """
        with self._lock:
            session = self._sessions.get(access_token)
            if session is None:
                raise KeyError("no live session has this access token")
            self._sessions[access_token] = dataclasses.replace(session, rest=False)

    def is_valid_session(self, access_token: str) -> bool:
        """Whether the token would be accepted by the SOAP and REST APIs right now.

        False for a JWT-format access token (``jwt_access_tokens``), which only REST accepts;
        True for a session made REST-invalid (:meth:`make_rest_invalid`), which SOAP accepts.
        """
        with self._lock:
            session = self._sessions.get(access_token)
            return session is not None and session.soap

    # --- device flow approval ----------------------------------------------------------------

    def approve_device(self, user_code: str) -> None:
        """Approve a device flow for the demo user, as if they entered the code and allowed.

        The code is read as a user types it (any case, dashes ignored). Raises KeyError for a
        code no device authorization has and ValueError for one that expired or was already
        approved or denied. The client's next poll at the right pace gets the token.
        """
        with self._lock:
            self._device_by_user_code(user_code).approve(self.user_id, time.monotonic())

    def deny_device(self, user_code: str) -> None:
        """Deny a device flow, as a user clicking Deny: its next poll answers access_denied.

        Raises KeyError and ValueError like :meth:`approve_device`.
        """
        with self._lock:
            self._device_by_user_code(user_code).deny(time.monotonic())

    @property
    def pending_user_codes(self) -> list[str]:
        """User codes of the device flows waiting for the user (not expired), oldest first.

        Lets a test play the user of a login command that only prints its code.
        """
        now = time.monotonic()
        with self._lock:
            return [
                pending.user_code
                for pending in self._device_authorizations.values()
                if pending.state == "pending" and now < pending.expires_at
            ]

    def _device_by_user_code(self, user_code: str) -> authorize.DeviceAuthorization:
        """The device authorization of a user code (called with the lock held); KeyError."""
        wanted = authorize.normalize_user_code(user_code)
        for pending in self._device_authorizations.values():
            if pending.user_code == wanted:
                return pending
        raise KeyError("no device authorization has this user code")

    # --- injected failures -------------------------------------------------------------------

    def fail_next_soap(
        self,
        code: str,
        message: str = "Injected by the stand-in org",
        *,
        count: int = 1,
        prefix: str = "sf",
    ) -> None:
        """Make the next ``count`` SOAP posts answer HTTP 500 with this fault, whatever the session.

        The faultcode is ``prefix:code`` (bare ``code`` when prefix is ""), the detail type
        follows the code (LoginFault for INVALID_LOGIN, InvalidFieldFault for INVALID_FIELD, else
        UnexpectedErrorFault) and the fault has the flavour of the API posted to. The operation
        is not executed.
        """
        with self._lock:
            self._injected.extend([_Injection(code, message, prefix)] * count)

    def drop_next_soap(self, count: int = 1) -> None:
        """Make the next ``count`` SOAP posts close the connection after reading the request.

        The operation is not executed; the client sees a connection error.
        """
        with self._lock:
            self._injected.extend([_Injection(None)] * count)

    # --- counters ----------------------------------------------------------------------------

    @property
    def token_requests(self) -> int:
        """Every POST to the token endpoint, successful or not."""
        with self._lock:
            return self._token_requests

    @property
    def token_requests_by_grant(self) -> collections.Counter[str]:
        """Token endpoint posts by their grant_type as sent ("" when none), a copy.

        A device flow start (``response_type=device_code``, no grant_type) counts as
        ``"device_code"``. Counted on arrival like ``token_requests``, whatever the answer.
        """
        with self._lock:
            return collections.Counter(self._token_requests_by_grant)

    @property
    def token_failures(self) -> int:
        """Token endpoint posts that were not answered with a token.

        A ``"drop_after_issue"`` post whose grant succeeded is not counted: a token was
        issued, only the answer was lost.
        """
        with self._lock:
            return self._token_failures

    @property
    def soap_posts(self) -> int:
        """Every POST to ``/services/Soap/...`` (refused, failed and dropped ones included)."""
        with self._lock:
            return self._soap_posts

    @property
    def sessions_seen(self) -> list[str]:
        """The sessionId each SOAP post carried, in order ("" when none). A copy."""
        with self._lock:
            return list(self._sessions_seen)

    @property
    def soap_hosts(self) -> list[str]:
        """The Host header of each SOAP post, in order (shows which address a client used)."""
        with self._lock:
            return list(self._soap_hosts)

    @property
    def operations(self) -> collections.Counter[str]:
        """Operations actually executed, by local name (a copy).

        Counted when a handler ran: after the session check passed (or for ``login``, which
        needs none). Refused, injected-fault and dropped posts are not counted.
        """
        with self._lock:
            return collections.Counter(self._operations)

    @property
    def rest_requests(self) -> int:
        """Requests to the REST side: ``/services/data``, userinfo and the identity URL."""
        with self._lock:
            return self._rest_requests

    @property
    def internal_errors(self) -> list[str]:
        """Exceptions raised by the org while answering (a copy; should stay empty)."""
        with self._lock:
            return list(self._internal_errors)

    @property
    def family_revocations(self) -> int:
        """Refresh-token families revoked because a retired refresh token was presented again."""
        with self._lock:
            return self._family_revocations

    @property
    def overlap_rejections(self) -> int:
        """Refreshes refused because another request with the same refresh token was in flight.

        Also counted in ``token_requests`` and ``token_failures``.
        """
        with self._lock:
            return self._overlap_rejections

    def reset_counters(self) -> None:
        """Zero every counter (sessions, tokens, records and injected failures stay)."""
        with self._lock:
            self._token_requests = 0
            self._token_requests_by_grant.clear()
            self._token_failures = 0
            self._family_revocations = 0
            self._overlap_rejections = 0
            self._soap_posts = 0
            self._rest_requests = 0
            self._api_requests = 0
            self._sessions_seen.clear()
            self._soap_hosts.clear()
            self._operations.clear()

    def record_internal_error(self, error: BaseException) -> None:
        """Keep an exception the org raised while answering (see ``internal_errors``)."""
        with self._lock:
            self._internal_errors.append(f"{type(error).__name__}: {error}")

    def hold_token_requests(self) -> threading.Event:
        """Hold every token request (counted, then parked) until the returned event is set.

        Makes refresh races deterministic: a test can let many callers reach the token
        endpoint before any of them gets an answer. ``stop()`` also releases held requests
        (they are then dropped, not answered). A refresh refused as overlapping a held one
        (``reject_overlapping_refreshes``) is answered at once, not held.
        """
        release = threading.Event()
        with self._lock:
            self._token_hold = release
        return release

    def _wait_for_release(self) -> bool:
        with self._lock:
            hold = self._token_hold
        while hold is not None and not hold.wait(0.05):
            if self._stopping.is_set():
                return False
        return not self._stopping.is_set()

    def _wait(self, seconds: float) -> bool:
        """Sleep unless the org is stopping; False means "stop, do not answer"."""
        if seconds > 0:
            return not self._stopping.wait(seconds)
        return not self._stopping.is_set()

    # --- routing -----------------------------------------------------------------------------

    def handle(self, request: Request) -> Answer:
        """Route one HTTP request (called by the server on the connection's thread)."""
        path = request.path
        authorization = request.headers.get("authorization")
        if request.method == "POST" and path == "/services/oauth2/token":
            return self.handle_token_request(request.body, authorization)
        if request.method == "POST" and path.startswith("/services/Soap/"):
            return self.handle_soap_request(path, request.body, request.headers.get("host", ""))
        if path.startswith("/services/data/") or (
            request.method == "GET"
            and (
                path == "/services/data"
                or path == "/services/oauth2/userinfo"
                or path.startswith("/id/")
            )
        ):
            return self.handle_rest_request(
                path,
                request.query,
                authorization,
                method=request.method,
                body=request.body,
                headers=request.headers,
            )
        if request.method == "GET" and path == authorize.AUTHORIZE_PATH:
            return self.handle_authorize_request(request.query)
        if request.method == "GET" and path == authorize.VERIFICATION_PATH:
            return self.handle_device_verification(request.query)
        return Answer.json(404, wire.REST_NOT_FOUND)

    # --- the browser's side of the interactive flows -----------------------------------------

    def handle_authorize_request(self, query: str) -> Answer:
        """Answer ``GET /services/oauth2/authorize`` (the web server flow's first step).

        The demo user is taken as logged in and consenting, so a valid request is answered
        at once with a 302 to the redirect_uri carrying ``code`` (and ``state`` when sent);
        ``deny_authorization`` makes it carry ``error=access_denied`` instead. Refusals are
        :func:`zeep_sfrefresh.testing.authorize.authorize_refusal`'s.
        """
        params = authorize.query_params(query)
        with self._lock:
            refused = authorize.authorize_refusal(
                params, client_id=self.client_id, callback_urls=set(self.callback_urls)
            )
            if refused is not None:
                return refused
            redirect_uri, state = params["redirect_uri"], params.get("state")
            if self.deny_authorization:
                return authorize.redirect_error(redirect_uri, authorize.ACCESS_DENIED, state)
            now = time.monotonic()
            for stale in [c for c, p in self._authorization_codes.items() if now >= p.expires_at]:
                del self._authorization_codes[stale]  # would be refused as unknown anyway
            code = authorize.new_authorization_code()
            self._authorization_codes[code] = authorize.AuthorizationCode(
                client_id=self.client_id,
                redirect_uri=redirect_uri,
                user_id=self.user_id,
                expires_at=now + self.authorization_code_lifetime,
                code_challenge=params.get("code_challenge") or None,
            )
        location = authorize.redirect_location(redirect_uri, {"code": code, "state": state})
        return authorize.redirect(location)

    def handle_device_verification(self, query: str) -> Answer:
        """Answer ``GET /setup/connect``: the form, or the user's answer to a device flow.

        With ``user_code`` (what submitting the form sends) the demo user approves that
        device flow, or denies it with ``action=deny``; an unknown code, or one that expired
        or was already answered, gets a 400 page.
        """
        params = authorize.query_params(query)
        user_code = params.get("user_code")
        if user_code is None:
            return authorize.verification_form_page()
        approve = params.get("action", "approve") != "deny"
        try:
            if approve:
                self.approve_device(user_code)
            else:
                self.deny_device(user_code)
        except KeyError:
            return authorize.error_page(authorize.UNKNOWN_USER_CODE)
        except ValueError:
            return authorize.error_page(authorize.USER_CODE_NOT_PENDING)
        return authorize.verification_done_page(approve)

    # --- token endpoint ----------------------------------------------------------------------

    _GRANTS: ClassVar[dict[str, tuple[str, bool]]] = {
        "refresh_token": ("_grant_refresh_token", True),
        grants.CLIENT_CREDENTIALS: ("_grant_client_credentials", True),
        grants.PASSWORD: ("_grant_password", True),
        grants.JWT_BEARER: ("_grant_jwt_bearer", False),
        authorize.AUTHORIZATION_CODE: ("_grant_authorization_code", False),
        authorize.DEVICE: ("_grant_device", False),
    }
    """grant_type -> (method name, whether the client_id and client_secret are checked first).

    Adding a grant is one entry and one method. The JWT bearer grant sends no secret: the
    assertion's ``iss`` names the client and its signature proves it, so its method checks both.
    The authorization_code and device grants check the client themselves, since the secret is
    optional there (:func:`zeep_sfrefresh.testing.authorize.check_client`).
    """

    def handle_token_request(self, body: bytes, authorization: str | None) -> Answer:
        """Answer ``POST /services/oauth2/token`` (called by the HTTP handler).

        The overlap check happens on arrival, before any hold or delay, since that window is
        exactly when another request is "being processed"; the in-flight mark is taken then
        and released however the request ends (answered, failed, dropped or cut by stop()).
        A trickled answer (``token_trickle``) keeps the mark until the server has written it
        or given up: the mark's release is then the answer's ``on_done``, which whoever
        writes the answer must call (the HTTP handler does).
        """
        form = {
            key: values[0]
            for key, values in parse_qs(body.decode("utf-8", "replace")).items()
            if values
        }
        presented = ""
        if form.get("grant_type") == "refresh_token":
            presented = form.get("refresh_token", "")
        with self._lock:
            self._token_requests += 1
            self._token_requests_by_grant[authorize.token_request_kind(form)] += 1
            delay = self.token_delay
            if presented and self.reject_overlapping_refreshes and self._refreshing[presented]:
                # Refused without touching the family: no rotation, no revocation.
                self._token_failures += 1
                self._overlap_rejections += 1
                refusal = Answer.json(
                    400, wire.oauth_error("invalid_grant", self.overlap_description)
                )
                refusal.trickle = self.token_trickle
                return refusal
            if presented:
                self._refreshing[presented] += 1
        release = self._in_flight_release(presented)
        try:
            answer = self._answer_token_request(form, authorization, delay)
        except BaseException:
            release()
            raise
        if answer.trickle > 0 and not answer.drop:
            answer.on_done = release  # in flight until the last byte is written
        else:
            release()
        return answer

    def _in_flight_release(self, presented: str) -> Callable[[], None]:
        """A function that clears one in-flight mark of ``presented``; later calls do nothing."""
        released = False

        def release() -> None:
            nonlocal released
            if not presented:
                return
            with self._lock:
                if released:
                    return
                released = True
                self._refreshing[presented] -= 1
                if self._refreshing[presented] <= 0:
                    del self._refreshing[presented]

        return release

    def _answer_token_request(
        self, form: Mapping[str, str], authorization: str | None, delay: float
    ) -> Answer:
        if not self._wait_for_release() or not self._wait(delay):
            return Answer(drop=True)
        # Knobs are read when the answer is made, so a test may change them while a request
        # is held or delayed.
        failure = self.token_failure
        if failure is not None and failure != "drop_after_issue":
            with self._lock:
                self._token_failures += 1
            if not self._wait(self.token_answer_delay):
                return Answer(drop=True)
            answer = self._token_failure_answer(failure)  # made (and dated) when it is sent
        else:
            answer = self._token_grant(form, authorization)
            if answer.status != 200:
                with self._lock:
                    self._token_failures += 1
            if failure == "drop_after_issue":
                answer = Answer(drop=True)  # issued and rotated, but never told
            # The grant is processed: whatever happens from here, the server has moved on.
            if not self._wait(self.token_answer_delay):
                return Answer(drop=True)
        if not answer.drop:
            answer.trickle = self.token_trickle
        return answer

    @staticmethod
    def _token_failure_answer(failure: str) -> Answer:
        if failure == "rate_limited_429_date":
            now = time.time()
            return Answer(
                429,
                b"Too Many Requests",
                "text/plain;charset=UTF-8",
                {
                    "Date": email.utils.formatdate(now, usegmt=True),
                    "Retry-After": email.utils.formatdate(now + 30, usegmt=True),
                },
            )
        if failure == "invalid_grant":
            return Answer.json(400, wire.oauth_error("invalid_grant", _EXPIRED_GRANT))
        if failure == "html_500":
            return Answer(500, wire.HTML_500_PAGE.encode("utf-8"), "text/html;charset=UTF-8")
        if failure == "garbage_200":
            return Answer(200, wire.TRUNCATED_TOKEN_BODY.encode("utf-8"), wire.JSON_CONTENT_TYPE)
        if failure == "drop":
            return Answer(drop=True)
        if failure == "rate_limited_429":
            return Answer(
                429, b"Too Many Requests", "text/plain;charset=UTF-8", {"Retry-After": "30"}
            )
        if failure == "unavailable_503":
            return Answer(
                503,
                wire.HTML_503_PAGE.encode("utf-8"),
                "text/html;charset=UTF-8",
                {"Retry-After": "120"},
            )
        raise ValueError(f"unknown token_failure {failure!r}; use one of {sorted(TOKEN_FAILURES)}")

    def _token_grant(self, form: Mapping[str, str], authorization: str | None) -> Answer:
        basic = _basic_credentials(authorization)
        if basic is not None:
            # HTTP Basic client credentials (requests-oauthlib's default) replace form fields.
            form = {**form, "client_id": basic[0], "client_secret": basic[1]}
        if authorize.token_request_kind(form) == authorize.DEVICE_CODE:
            # Salesforce starts the device flow at the token endpoint, with no grant_type;
            # answered here so holds, delays and failure modes apply to it as to any grant.
            return self._start_device_flow(form)
        grant = self._GRANTS.get(form.get("grant_type", ""))
        if grant is None:
            return Answer.json(
                400, wire.oauth_error("unsupported_grant_type", "grant type not supported")
            )
        method, authenticate_client = grant
        handler = cast(Callable[[Mapping[str, str]], Answer], getattr(self, method))
        if not authenticate_client:
            return handler(form)
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if client_id != self.client_id:
            return Answer.json(
                400, wire.oauth_error("invalid_client_id", "client identifier invalid")
            )
        if (
            form.get("grant_type") == "refresh_token"
            and not self.require_secret_for_refresh
            and not client_secret  # requests-oauthlib sends "" over Basic when it has none
        ):
            return handler(form)
        if client_secret is None or not secrets.compare_digest(
            client_secret.encode("utf-8"), self.client_secret.encode("utf-8")
        ):
            return Answer.json(
                400, wire.oauth_error("invalid_client", "invalid client credentials")
            )
        return handler(form)

    def _grant_refresh_token(self, form: Mapping[str, str]) -> Answer:
        refresh_token = form.get("refresh_token", "")
        refused = Answer.json(400, wire.oauth_error("invalid_grant", _EXPIRED_GRANT))
        with self._lock:
            grant = self._refresh_tokens.get(refresh_token)
            if grant is None or grant.state == "revoked":
                return refused
            family = grant.family
            if grant.retired:
                self._revoke(family)
                return refused
            new_refresh: str | None = None
            if self.rotation:
                # The previous refresh token is invalidated as soon as a new one is issued;
                # it is kept (retired) so that presenting it again is seen as a reuse.
                grant.retired = True
                new_refresh = self._new_refresh_token(family)
            access_token = self._new_session(family.user_id, family, oauth=True)
            body = self._token_body(access_token, new_refresh, family.user_id)
        return Answer.json(200, body, {"Cache-Control": "no-cache,no-store"})

    def _revoke(self, family: _Family) -> None:
        """Invalidate every refresh token and session of a family (called with the lock held)."""
        family.revoked = True
        for access_token in family.sessions:
            self._sessions.pop(access_token, None)
        family.sessions.clear()
        self._family_revocations += 1

    def _grant_jwt_bearer(self, form: Mapping[str, str]) -> Answer:
        """JWT bearer: an assertion signed with a registered certificate's key names the user.

        Verified outside the lock (RSA is slow); the user is looked up again afterwards.
        """
        with self._lock:
            keys = list(self._jwt_keys)
            audiences = {self.jwt_audience, self.url, self.instance_url}
            usernames = {user.username for user in self._users.values()}
        verdict = grants.verify_assertion(
            form.get("assertion", ""),
            keys=keys,
            client_id=self.client_id,
            audiences=audiences,
            usernames=usernames,
            now=time.time(),
        )
        if isinstance(verdict, grants.Refusal):
            return verdict.answer()
        return self._token_without_refresh(verdict, grants.USER_NOT_APPROVED)

    def _grant_client_credentials(self, form: Mapping[str, str]) -> Answer:
        """Client credentials: the token is the connected app's "Run As" user's."""
        return self._token_without_refresh(
            self.client_credentials_user, grants.NO_CLIENT_CREDENTIALS_USER
        )

    def _grant_password(self, form: Mapping[str, str]) -> Answer:
        """Username-password; blocked or wrong, Salesforce answers "authentication failure"."""
        with self._lock:
            user = self._user_named(form.get("username"))
            if (
                not self.password_grant_enabled
                or user is None
                or not secrets.compare_digest(
                    user.password.encode("utf-8"), form.get("password", "").encode("utf-8")
                )
            ):
                return grants.AUTHENTICATION_FAILURE.answer()
        return self._token_without_refresh(user.username, grants.AUTHENTICATION_FAILURE)

    def _token_without_refresh(self, username: str | None, unknown: grants.Refusal) -> Answer:
        """A token answer without refresh_token for a user, or ``unknown`` when there is none."""
        with self._lock:
            user = self._user_named(username)
            if user is None:
                return unknown.answer()
            access_token = self._new_session(user.user_id, oauth=True)
            body = self._token_body(access_token, None, user.user_id)
        return Answer.json(200, body, {"Cache-Control": "no-cache,no-store"})

    def _grant_authorization_code(self, form: Mapping[str, str]) -> Answer:
        """The web server flow's exchange: a code from the authorize endpoint buys a token.

        The code is used up by any exchange that names the right client, successful or not.
        A code presented twice is refused; the tokens the first exchange issued stay valid
        (RFC 6749 10.5 lets a server revoke them, which Salesforce is not known to do).
        """
        refused = authorize.check_client(
            form,
            client_id=self.client_id,
            client_secret=self.client_secret,
            require_secret=self.require_secret_for_web_server_flow,
        )
        if refused is not None:
            return refused.answer()
        with self._lock:
            pending = self._authorization_codes.pop(form.get("code", ""), None)
            if pending is None:
                return authorize.INVALID_AUTHORIZATION_CODE.answer()
            refused = pending.redeem(
                client_id=form.get("client_id", ""),
                redirect_uri=form.get("redirect_uri"),
                code_verifier=form.get("code_verifier"),
                now=time.monotonic(),
            )
            if refused is not None:
                return refused.answer()
            return self._token_with_refresh(pending.user_id)

    def _start_device_flow(self, form: Mapping[str, str]) -> Answer:
        """``response_type=device_code``: a device code for the client, a user code for the user.

        No secret is needed (Salesforce CLI's connected app has none); a wrong one that is
        sent is refused. The ``scope`` asked for is accepted and the token gets ``scope``.
        """
        refused = authorize.check_client(
            form, client_id=self.client_id, client_secret=self.client_secret, require_secret=False
        )
        if refused is not None:
            return refused.answer()
        with self._lock:
            interval = self.device_interval
            device_code = authorize.new_device_code()
            user_code = authorize.new_user_code(
                {pending.user_code for pending in self._device_authorizations.values()}
            )
            self._device_authorizations[device_code] = authorize.DeviceAuthorization(
                client_id=self.client_id,
                user_code=user_code,
                expires_at=time.monotonic() + self.device_code_lifetime,
                interval=float(interval),
            )
            body = authorize.device_code_body(
                device_code=device_code,
                user_code=user_code,
                verification_uri=self.url + authorize.VERIFICATION_PATH,
                interval=interval,
            )
        return Answer.json(200, body, {"Cache-Control": "no-cache,no-store"})

    def _grant_device(self, form: Mapping[str, str]) -> Answer:
        """A device flow poll (the device code comes as ``code``); see ``DeviceAuthorization.poll``.

        Once approved, the first poll at the right pace gets the token and spends the code.
        """
        refused = authorize.check_client(
            form, client_id=self.client_id, client_secret=self.client_secret, require_secret=False
        )
        if refused is not None:
            return refused.answer()
        with self._lock:
            pending = self._device_authorizations.get(form.get("code", ""))
            if pending is None or pending.client_id != form.get("client_id"):
                return authorize.INVALID_AUTHORIZATION_CODE.answer()
            refused = pending.poll(time.monotonic())
            if refused is not None:
                return refused.answer()
            pending.state = "spent"
            return self._token_with_refresh(pending.user_id or self.user_id)

    def _token_with_refresh(self, user_id: str) -> Answer:
        """A token answer with a refresh token of a new family, as :meth:`issue_token` makes
        (called with the lock held): rotation and family revocation apply to it."""
        family = _Family(user_id)
        access_token = self._new_session(user_id, family, oauth=True)
        refresh_token = self._new_refresh_token(family)
        body = self._token_body(access_token, refresh_token, user_id)
        return Answer.json(200, body, {"Cache-Control": "no-cache,no-store"})

    # --- SOAP --------------------------------------------------------------------------------

    def handle_soap_request(self, path: str, body: bytes, host: str = "") -> Answer:
        """Answer ``POST /services/Soap/...`` (called by the HTTP handler)."""
        match = _SOAP_PATH.match(path)
        flavour = wire.FLAVOURS.get(match.group("code")) if match else None
        parsed = _parse_envelope(body)
        session_id = ""
        if flavour is not None and parsed is not None:
            session_id = _session_id(parsed[0], flavour.namespace)
        with self._lock:
            self._soap_posts += 1
            self._sessions_seen.append(session_id)
            self._soap_hosts.append(host)
            injected = self._injected.popleft() if self._injected and flavour else None
            delay = self.soap_delay
        if not self._wait(delay):
            return Answer(drop=True)
        if match is None or flavour is None:
            return Answer.json(404, wire.REST_NOT_FOUND)
        if injected is not None:
            if injected.code is None:
                return Answer(drop=True)
            fault = wire.soap_fault(
                flavour, injected.code, injected.message, prefix=injected.prefix
            )
            return Answer(500, fault)
        if parsed is None:
            return Answer(
                500,
                wire.soap_fault(
                    flavour,
                    "Client",
                    "",
                    prefix="soapenv",
                    faultstring="Unable to parse the request: not a SOAP 1.1 envelope",
                    detail=False,
                ),
            )
        header, payload = parsed
        call = _SoapCall(flavour, match.group("version"), _local(payload), payload, header)
        if call.operation not in _SESSIONLESS:
            with self._lock:
                session = self._sessions.get(session_id)
            if session is None or not session.soap:  # JWT-format tokens are REST-only
                return Answer(500, wire.invalid_session_fault(flavour))
            call.session = session
        handler = _SOAP_HANDLERS.get((flavour.code, call.operation))
        if etree.QName(payload).namespace != flavour.namespace:
            handler = None
        if handler is None:
            return self._unsupported(call)
        with self._lock:
            self._operations[call.operation] += 1
            self._api_requests += 1
            try:
                return handler(self, call)
            except _SoapFault as fault:
                return Answer(
                    500,
                    wire.soap_fault(
                        flavour,
                        fault.code,
                        fault.message,
                        prefix=fault.prefix,
                        row=fault.row,
                        column=fault.column,
                    ),
                )

    def _unsupported(self, call: _SoapCall) -> Answer:
        message = (
            f"The stand-in org does not implement {call.operation} on the {call.flavour.name} API"
        )
        return Answer(500, wire.soap_fault(call.flavour, "INVALID_OPERATION", message))

    def _respond(self, call: _SoapCall, body: str, *, sobjects: bool = False) -> Answer:
        limit = wire.LimitInfo(self._api_requests, _API_LIMIT)
        return Answer(
            200, wire.soap_response(call.flavour, body, limit_info=limit, sobjects=sobjects)
        )

    def _user_info(self, user_id: str) -> wire.UserInfo:
        user = self._users[user_id]
        return wire.UserInfo(
            organization_id=self.org_id,
            organization_name=self.organization_name,
            user_id=user.user_id,
            user_name=user.username,
            user_full_name=user.full_name,
            user_email=user.email,
            profile_id=to_18("00e" + self.org_id[3:15]),
        )

    # Operation handlers: called with the lock held; raise _SoapFault for API faults.

    def _soap_login(self, call: _SoapCall) -> Answer:
        username = _child_text(call.payload, "username") or ""
        password = _child_text(call.payload, "password") or ""
        user = next((u for u in self._users.values() if u.username == username), None)
        if user is None or not secrets.compare_digest(
            user.password.encode("utf-8"), password.encode("utf-8")
        ):
            # Real capture: INVALID_LOGIN comes without the sf: prefix, with a LoginFault.
            raise _SoapFault(
                "INVALID_LOGIN",
                "Invalid username, password, security token; or user locked out.",
                prefix="",
            )
        session_id = self._new_session(user.user_id)
        body = wire.login_result_xml(
            server_url=self.instance_url + self.soap_path("u", call.version),
            metadata_server_url=self.instance_url + self.soap_path("m", call.version),
            session_id=session_id,
            info=self._user_info(user.user_id),
        )
        return Answer(200, wire.soap_response(call.flavour, body))

    def _soap_server_timestamp(self, call: _SoapCall) -> Answer:
        now = datetime.now(timezone.utc)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        return self._respond(call, wire.server_timestamp_xml(stamp))

    def _soap_user_info(self, call: _SoapCall) -> Answer:
        assert call.session is not None
        info = wire.user_info_xml(self._user_info(call.session.user_id))
        return self._respond(
            call, f"<getUserInfoResponse><result>{info}</result></getUserInfoResponse>"
        )

    def _soap_describe(self, call: _SoapCall) -> Answer:
        spec = _sobject_spec(_child_text(call.payload, "sObjectType") or "")
        return self._respond(call, wire.describe_sobject_xml(spec, self.url))

    def _soap_describe_sobjects(self, call: _SoapCall) -> Answer:
        """Each named object's describe, in the order asked; an unknown one faults the call."""
        specs = [
            _sobject_spec((element.text or "").strip())
            for element in _children(call.payload, "sObjectType")
        ]
        return self._respond(call, wire.describe_sobjects_xml(specs, self.url))

    def _soap_describe_global(self, call: _SoapCall) -> Answer:
        return self._respond(call, wire.describe_global_xml(SCHEMA.values(), self.url))

    @staticmethod
    def _batch_size(call: _SoapCall, default: int = _DEFAULT_BATCH) -> int:
        """QueryOptions/batchSize, clamped to 1..2000.

        Salesforce treats values under 200 as 200; the stand-in honours small values so tests
        can exercise queryMore with a handful of records.
        """
        options = _children(call.header, "QueryOptions")
        text = _child_text(options[0], "batchSize") if options else None
        if text is None or not text.strip().lstrip("-").isdigit():
            return default
        return max(1, min(int(text), _MAX_BATCH))

    def _parent_record(self, spec: SObjectSpec, record_id: str) -> Record | None:
        """The live record of ``spec`` with that Id: what a relationship path reads.

        None for an Id of another object or of a deleted record, so such a lookup reads as
        empty (Salesforce clears or cascades a lookup when its parent is deleted).
        """
        hit = self._store.get(record_id)
        return hit[1] if hit is not None and hit[0].name == spec.name else None

    def _parents_of(
        self, query: soql.ResolvedQuery, records: list[Record]
    ) -> dict[tuple[str, str], Record]:
        """Copies of every parent the query's relationships read for ``records``.

        Copies, like the cursor's records, so batches served later show the query's moment.
        """
        snapshot: dict[tuple[str, str], Record] = {}
        for record in records:
            found = soql.parent_records(query.select, record, self._parent_record)
            snapshot.update((key, dict(parent)) for key, parent in found.items())
        return snapshot

    def _soap_query(self, call: _SoapCall) -> Answer:
        text = _child_text(call.payload, "queryString") or ""
        try:
            query = soql.resolve(soql.parse(text), SCHEMA, relationships=True, count=True)
        except soql.SoqlError as error:
            raise _SoapFault(
                error.code, error.exception_message, row=error.row, column=error.column
            ) from None
        include_deleted = call.operation == "queryAll"
        found = [
            record
            for record in self._store.scan(query.sobject.name, include_deleted=include_deleted)
            if soql.matches(query, record, self._parent_record)
        ]
        if query.limit is not None:
            found = found[: query.limit]
        if query.count:
            # SELECT COUNT(): no records and no cursor, the count as the size.
            body = wire.query_result_xml(
                call.operation, [], done=True, locator=None, size=len(found)
            )
            return self._respond(call, body, sobjects=True)
        cursor = soql.Cursor(
            query.sobject.name,
            query.fields,
            [dict(r) for r in found],
            self._batch_size(call, self.query_batch_size),
            query.select,
            self._parents_of(query, found),
        )
        return self._query_batch(call, cursor, random_id("01g"), 0)

    def _soap_query_more(self, call: _SoapCall) -> Answer:
        locator = _child_text(call.payload, "queryLocator") or ""
        cursor_id, _, offset = locator.rpartition("-")
        cursor = self._cursors.get(cursor_id)
        if cursor is None or not offset.isdigit() or int(offset) > len(cursor.records):
            raise _SoapFault("INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._query_batch(call, cursor, cursor_id, int(offset))

    def _query_batch(
        self, call: _SoapCall, cursor: soql.Cursor, cursor_id: str, start: int
    ) -> Answer:
        end = start + self._batch_size(call, cursor.batch_size)
        batch = cursor.records[start:end]
        done = end >= len(cursor.records)
        if not done:
            self._cursors[cursor_id] = cursor
        select = cursor.fields if cursor.select is None else cursor.select
        records = [
            wire.sobject_xml("records", cursor.sobject, record, select, cursor.parents)
            for record in batch
        ]
        body = wire.query_result_xml(
            call.operation,
            records,
            done=done,
            locator=None if done else f"{cursor_id}-{end}",
            size=len(cursor.records),
        )
        return self._respond(call, body, sobjects=True)

    def _soap_retrieve(self, call: _SoapCall) -> Answer:
        spec = _sobject_spec(_child_text(call.payload, "sObjectType") or "")
        field_list = _child_text(call.payload, "fieldList") or ""
        fields = []
        for name in (part.strip() for part in field_list.split(",")):
            found = spec.field(name) if name else None
            if found is None:
                raise _SoapFault(
                    "INVALID_FIELD", f"No such column '{name}' on entity '{spec.name}'."
                )
            fields.append(found)
        results = []
        for element in _children(call.payload, "ids"):
            hit = self._store.get((element.text or "").strip())
            if hit is None or hit[0] is not spec:
                results.append('<result xsi:nil="true"/>')
            else:
                results.append(wire.sobject_xml("result", spec.name, hit[1], fields))
        return self._respond(
            call, f"<retrieveResponse>{''.join(results)}</retrieveResponse>", sobjects=True
        )

    def _soap_search(self, call: _SoapCall) -> Answer:
        """The SOSL subset of :mod:`zeep_sfrefresh.testing.sosl` over the live records."""
        text = _child_text(call.payload, "searchString") or ""
        try:
            search = sosl.resolve(sosl.parse(text), SCHEMA)
        except soql.SoqlError as error:
            raise _SoapFault(
                error.code, error.exception_message, row=error.row, column=error.column
            ) from None
        limit = _SEARCH_LIMIT if search.limit is None else min(search.limit, _SEARCH_LIMIT)
        found: list[str] = []
        for target in search.targets:
            for record in self._store.scan(target.sobject.name):
                if len(found) >= limit:
                    break
                if sosl.matches(search, target.sobject, record):
                    found.append(wire.search_record_xml(target.sobject.name, record, target.fields))
        body = wire.search_result_xml(str(uuid.uuid4()), found)
        return self._respond(call, body, sobjects=True)

    def _soap_create(self, call: _SoapCall) -> Answer:
        results = self._create_records(_children(call.payload, "sObjects"))
        return self._respond(call, f"<createResponse>{results}</createResponse>")

    def _create_records(self, elements: list[etree._Element]) -> str:
        """Insert partner-style sObject elements; their SaveResults, joined (any API's create)."""
        results = []
        for element in elements:
            given = _read_sobject(element, writable="createable")
            errors = given.errors(creating=True)
            if errors:
                results.append(wire.save_result_xml(None, errors))
                continue
            record = self._store.insert(given.spec.name, given.values)
            results.append(wire.save_result_xml(str(record["Id"]), []))
        return "".join(results)

    def _soap_update(self, call: _SoapCall) -> Answer:
        results = []
        for element in _children(call.payload, "sObjects"):
            given = _read_sobject(element, writable="updateable")
            error = self._missing_record(given.record_id, "Id not specified in an update call")
            hit = self._store.get(given.record_id) if error is None and given.record_id else None
            if error is None and (hit is None or hit[0] is not given.spec):
                error = ("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])
            errors = [error] if error is not None else given.errors(creating=False)
            if errors or hit is None:
                results.append(wire.save_result_xml(None, errors))
                continue
            self._store.update(given.spec, hit[1], given.values)
            results.append(wire.save_result_xml(str(hit[1]["Id"]), []))
        return self._respond(call, f"<updateResponse>{''.join(results)}</updateResponse>")

    def _soap_upsert(self, call: _SoapCall) -> Answer:
        """Update the record each sObject's external id matches, or create one.

        Every sObject is checked before anything is written (a fault leaves the data as it
        was). The rules are in :meth:`_plan_upsert`; with ``AllOrNoneHeader`` on, one failed
        record fails them all (the others with ALL_OR_NONE_OPERATION_ROLLED_BACK).
        """
        field_name = (_child_text(call.payload, "externalIDFieldName") or "").strip()
        plans = [
            self._plan_upsert(element, field_name)
            for element in _children(call.payload, "sObjects")
        ]
        keys = collections.Counter(plan.key for plan in plans if plan.key is not None)
        for plan in plans:
            if plan.key is not None and keys[plan.key] > 1:
                message = f"Duplicate external id specified: {plan.key_text}"
                plan.errors = [("DUPLICATE_EXTERNAL_ID", message, [])]
        roll_back = _all_or_none(call) and any(plan.errors for plan in plans)
        results = []
        for plan in plans:
            if plan.errors or roll_back:
                errors = plan.errors or [_ROLLED_BACK]
                results.append(wire.upsert_result_xml(None, errors, created=False))
            elif plan.target is None:
                record = self._store.insert(plan.given.spec.name, plan.given.values)
                results.append(wire.upsert_result_xml(str(record["Id"]), [], created=True))
            else:
                self._store.update(plan.given.spec, plan.target, plan.given.values)
                results.append(wire.upsert_result_xml(str(plan.target["Id"]), [], created=False))
        return self._respond(call, f"<upsertResponse>{''.join(results)}</upsertResponse>")

    def _plan_upsert(self, element: etree._Element, field_name: str) -> _UpsertPlan:
        """What upsert will do with one sObject (nothing written yet).

        The external id field must be one describe marks ``idLookup`` (the Id, Contact.Email),
        else the call faults INVALID_FIELD, as Salesforce's does for a field that is neither an
        external id nor an idLookup field. With ``Id``: no Id creates, a live record's Id
        updates it (a deleted one is ENTITY_IS_DELETED, an unknown one
        INVALID_CROSS_REFERENCE_KEY). With another field: no value is MISSING_ARGUMENT, no live
        record with that value (compared ignoring case) creates, one updates it, several are
        DUPLICATE_EXTERNAL_ID, and so is a value two sObjects of the call share.
        """
        given = _read_sobject(element, writable="createable")
        spec = given.spec
        key_field = spec.field(field_name) if field_name else None
        if key_field is None or not key_field.id_lookup:
            raise _SoapFault(
                "INVALID_FIELD",
                f"Field name provided, {field_name} is not an External ID or indexed field for "
                f"{spec.name}",
            )
        if key_field.name == "Id":
            if given.record_id is None:
                return _UpsertPlan(given, given.errors(creating=True))
            error = self._missing_record(given.record_id, "Id not specified")
            hit = self._store.get(given.record_id) if error is None else None
            if error is None and (hit is None or hit[0] is not spec):
                error = ("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])
            if error is not None or hit is None:
                return _UpsertPlan(given, [error] if error else [])
            return self._upsert_update(element, hit[1])
        value = given.values.get(key_field.name)
        if not isinstance(value, str) or not value.strip():
            return _UpsertPlan(given, [("MISSING_ARGUMENT", f"{key_field.name} not specified", [])])
        matched = [
            record
            for record in self._store.scan(spec.name)
            if str(record.get(key_field.name) or "").lower() == value.lower()
        ]
        if len(matched) > 1:
            ids = ", ".join(str(record["Id"]) for record in matched)
            message = f"more than one record found for external id field: [{ids}]"
            plan = _UpsertPlan(given, [("DUPLICATE_EXTERNAL_ID", message, [])])
        elif matched:
            plan = self._upsert_update(element, matched[0])
        else:
            plan = _UpsertPlan(given, given.errors(creating=True))
        plan.key = (spec.name, key_field.name, value.lower())
        plan.key_text = value
        return plan

    @staticmethod
    def _upsert_update(element: etree._Element, target: Record) -> _UpsertPlan:
        given = _read_sobject(element, writable="updateable")
        return _UpsertPlan(given, given.errors(creating=False), target=target)

    def _missing_record(
        self, record_id: str | None, absent_message: str
    ) -> tuple[str, str, list[str]] | None:
        if not record_id:
            return ("MISSING_ARGUMENT", absent_message, [])
        if len(record_id) not in (15, 18) or not record_id.isalnum():
            return ("MALFORMED_ID", f"Id in update/delete is not a valid ID: {record_id}", [])
        if self._store.is_deleted(record_id):
            return ("ENTITY_IS_DELETED", "entity is deleted", [])
        return None

    def _soap_delete(self, call: _SoapCall) -> Answer:
        results = []
        for element in _children(call.payload, "ids"):
            record_id = (element.text or "").strip()
            error = self._missing_record(record_id, "Id not specified in a delete call")
            deleted = self._store.delete(record_id) if error is None else None
            if error is None and deleted is None:
                error = ("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])
            if error is not None or deleted is None:
                results.append(wire.delete_result_xml(None, [error] if error else []))
            else:
                results.append(wire.delete_result_xml(str(deleted["Id"]), []))
        return self._respond(call, f"<deleteResponse>{''.join(results)}</deleteResponse>")

    def _soap_undelete(self, call: _SoapCall) -> Answer:
        """Bring records back from the recycle bin (the records ``delete`` moved there).

        A live record is UNDELETE_FAILED ("Entity is not in the recycle bin", as Salesforce
        answers), an Id no record ever had INVALID_CROSS_REFERENCE_KEY, a malformed one
        MALFORMED_ID. With ``AllOrNoneHeader`` on, one failure fails them all.
        """
        planned: list[tuple[str, _Error | None]] = []
        restoring: set[str] = set()
        for element in _children(call.payload, "ids"):
            record_id = (element.text or "").strip()
            error: _Error | None = None
            if not record_id:
                error = ("MISSING_ARGUMENT", "Id not specified in an undelete call", [])
            elif len(record_id) not in (15, 18) or not record_id.isalnum():
                error = ("MALFORMED_ID", f"Id in undelete is not a valid ID: {record_id}", [])
            elif self._store.get(record_id) is not None or id15(record_id) in restoring:
                error = ("UNDELETE_FAILED", "Entity is not in the recycle bin", [])
            elif not self._store.is_deleted(record_id):
                error = ("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])
            else:
                restoring.add(id15(record_id))
            planned.append((record_id, error))
        roll_back = _all_or_none(call) and any(error for _, error in planned)
        results = []
        for record_id, error in planned:
            restored = None if error or roll_back else self._store.undelete(record_id)
            if restored is None:
                errors = [error or _ROLLED_BACK]
                results.append(wire.undelete_result_xml(None, errors))
            else:
                results.append(wire.undelete_result_xml(str(restored["Id"]), []))
        return self._respond(call, f"<undeleteResponse>{''.join(results)}</undeleteResponse>")

    # --- REST --------------------------------------------------------------------------------

    def handle_rest_request(
        self,
        path: str,
        query: str,
        authorization: str | None,
        *,
        method: str = "GET",
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """Answer a request on the REST side (called by the HTTP handler).

        ``GET /services/data/`` (the versions) needs no token. Everything else needs a live
        session as a bearer token: none, an unknown or an expired one is HTTP 401
        ``INVALID_SESSION_ID`` "Session expired or invalid" with ``WWW-Authenticate: Token``;
        one made REST-invalid (:meth:`make_rest_invalid`) is the 401 "This session is not
        valid for use with the REST API" under ``/services/data`` (userinfo and the identity
        URL still take it). The resources under ``/services/data/vXX.X`` are
        :class:`zeep_sfrefresh.testing.rest.RestApi`'s, answered with the lock held so they
        see and write the records the SOAP APIs do; their answers carry
        ``Sforce-Limit-Info`` as Salesforce's do. Every request counts in ``rest_requests``.
        """
        with self._lock:
            self._rest_requests += 1
        if path.rstrip("/") == "/services/data":
            if method != "GET":
                allowed = wire.rest_method_not_allowed(method, ("GET", "HEAD"))
                return Answer.json(405, allowed, {"Allow": "GET, HEAD"})
            return Answer.json(200, wire.rest_versions())
        token = ""
        if authorization and authorization[:7].lower() == "bearer ":
            token = authorization[7:].strip()
        match = _REST_PATH.match(path)
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return Answer.json(401, wire.REST_INVALID_SESSION, {"WWW-Authenticate": "Token"})
            if match is not None and not session.rest:
                return Answer.json(401, wire.REST_NOT_VALID_FOR_REST, {"WWW-Authenticate": "Token"})
            self._api_requests += 1
            if match is not None:
                api = rest.RestApi(
                    self._store, self._cursors, self._parent_record, instance_url=self.url
                )
                request = rest.RestRequest(
                    method,
                    match.group("version"),
                    match.group("rest") or "",
                    query,
                    headers or {},
                    body,
                )
                answer = api.answer(
                    request,
                    batch_size=self.rest_batch_size,
                    api_requests=self._api_requests,
                    api_limit=_API_LIMIT,
                )
                answer.headers["Sforce-Limit-Info"] = wire.rest_limit_info(
                    self._api_requests, _API_LIMIT
                )
                return answer
            info = self._user_info(session.user_id)
        if method == "GET" and (
            path == "/services/oauth2/userinfo" or path == f"/id/{self.org_id}/{session.user_id}"
        ):
            return Answer.json(200, wire.userinfo_body(info, self.url))
        return Answer.json(404, wire.REST_NOT_FOUND)


_SESSIONLESS = frozenset({"login"})
"""Operations that run without a SessionHeader (they create the session)."""

_SOAP_HANDLERS: dict[tuple[str, str], _SoapHandler] = {
    ("u", "login"): StandInOrg._soap_login,
    ("u", "query"): StandInOrg._soap_query,
    ("u", "queryAll"): StandInOrg._soap_query,
    ("u", "queryMore"): StandInOrg._soap_query_more,
    ("u", "retrieve"): StandInOrg._soap_retrieve,
    ("u", "create"): StandInOrg._soap_create,
    ("u", "update"): StandInOrg._soap_update,
    ("u", "delete"): StandInOrg._soap_delete,
    ("u", "getUserInfo"): StandInOrg._soap_user_info,
    ("u", "getServerTimestamp"): StandInOrg._soap_server_timestamp,
    ("u", "describeSObject"): StandInOrg._soap_describe,
    ("u", "describeSObjects"): StandInOrg._soap_describe_sobjects,
    ("u", "describeGlobal"): StandInOrg._soap_describe_global,
    ("u", "upsert"): StandInOrg._soap_upsert,
    ("u", "undelete"): StandInOrg._soap_undelete,
    ("u", "search"): StandInOrg._soap_search,
    ("c", "getServerTimestamp"): StandInOrg._soap_server_timestamp,
    ("T", "getServerTimestamp"): StandInOrg._soap_server_timestamp,
}
"""(API path code, operation local name) -> handler. Adding an operation is one entry here."""


def _sobject_spec(name: str) -> SObjectSpec:
    spec = SCHEMA.get(name.lower())
    if spec is None:
        raise _SoapFault("INVALID_TYPE", f"sObject type '{name}' is not supported.")
    return spec


@dataclass
class _UpsertPlan:
    """What upsert does with one sObject: its errors, or the record to update (None: create)."""

    given: SObjectInput
    errors: list[_Error]
    target: Record | None = None
    key: tuple[str, str, str] | None = None
    """(object, field, lower-case value) of a non-Id external id, to find repeats in a call."""
    key_text: str = ""
    """The external id value as sent (for the DUPLICATE_EXTERNAL_ID message)."""


def _all_or_none(call: _SoapCall) -> bool:
    """Whether the call carries ``AllOrNoneHeader`` with ``allOrNone`` true."""
    headers = _children(call.header, "AllOrNoneHeader")
    value = _child_text(headers[0], "allOrNone") if headers else None
    return (value or "").strip() in ("true", "1")


def _read_sobject(element: etree._Element, *, writable: str) -> SObjectInput:
    """Decode one ``<sObjects>`` of a create (``writable="createable"``) or update call.

    An unknown object or field is a fault for the whole call, as in Salesforce; a field that
    exists but may not be written is an error of that record only.
    """
    spec = _sobject_spec(_child_text(element, "type") or "")
    values: dict[str, Value] = {}
    read_only: list[str] = []
    record_id: str | None = None
    for child in element:
        if not isinstance(child.tag, str):
            continue
        name = _local(child)
        if name == "type":
            continue
        if name == "fieldsToNull":
            target = spec.field((child.text or "").strip())
            if target is None:
                raise _SoapFault(
                    "INVALID_FIELD", f"No such column '{child.text}' on entity '{spec.name}'."
                )
            values[target.name] = None
            continue
        if name == "Id":
            record_id = None if _is_nil(child) else (child.text or "").strip() or None
            continue
        target = spec.field(name)
        if target is None:
            raise _SoapFault("INVALID_FIELD", f"No such column '{name}' on entity '{spec.name}'.")
        if not getattr(target, writable):
            read_only.append(target.name)
            continue
        values[target.name] = None if _is_nil(child) else (child.text or "")
    return SObjectInput(spec, values, record_id, read_only)


def _basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """client_id and client_secret from ``Authorization: Basic`` (RFC 6749 2.3.1 encoding)."""
    if not authorization or authorization[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, client_secret = decoded.partition(":")
    if not sep:
        return None
    return unquote_plus(client_id), unquote_plus(client_secret)


def _parse_envelope(body: bytes) -> tuple[etree._Element | None, etree._Element] | None:
    """(Header, first Body child) of a SOAP 1.1 envelope, or None when it is not one.

    Parsed with a parser that resolves no entities and loads no DTD; a DOCTYPE is refused
    outright, since no SOAP client sends one and it is the usual vehicle for XXE.
    """
    if b"<!DOCTYPE" in body.upper():
        return None
    try:
        root = etree.fromstring(body, _safe_parser())
    except etree.XMLSyntaxError:
        return None
    if (
        getattr(root.getroottree().docinfo, "doctype", "")
        or root.tag != f"{{{wire.SOAPENV_NS}}}Envelope"
    ):
        return None
    header = root.find(f"{{{wire.SOAPENV_NS}}}Header")
    soap_body = root.find(f"{{{wire.SOAPENV_NS}}}Body")
    if soap_body is None:
        return None
    payload = next((child for child in soap_body if isinstance(child.tag, str)), None)
    if payload is None:
        return None
    return header, payload


def _session_id(header: etree._Element | None, namespace: str) -> str:
    """``Header/SessionHeader/sessionId`` in the API's namespace ("" when absent)."""
    if header is None:
        return ""
    found = header.find(f"{{{namespace}}}SessionHeader/{{{namespace}}}sessionId")
    return (found.text or "").strip() if found is not None else ""


# The enterprise, tooling, metadata and apex operations live in their own module, which uses
# the names above: it is imported last, then its handlers join the dispatch table.
from zeep_sfrefresh.testing import apis as _apis  # noqa: E402

_SOAP_HANDLERS.update(_apis.SOAP_HANDLERS)
