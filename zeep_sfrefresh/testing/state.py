"""What the stand-in org remembers, and the one lock that guards it.

:class:`OrgState` is shared by the org's endpoints (:mod:`~zeep_sfrefresh.testing.oauth`,
:mod:`~zeep_sfrefresh.testing.soap`, :mod:`~zeep_sfrefresh.testing.rest`) and its facade
(:class:`~zeep_sfrefresh.testing.org.StandInOrg`): who the org is (its ids, its client, its
address), its users, sessions and refresh-token families, the authorisations in progress,
its records and open query cursors, queued SOAP failures, and the counters tests read
(:class:`Counters`). Everything here is read and written with :attr:`OrgState.lock` held;
the few operations that change several tables at once (a new session, a family's
revocation) are methods, so every endpoint does them the same way.

The knobs (:class:`~zeep_sfrefresh.testing.knobs.Knobs`) hang off the state because some
of its transitions follow them (``reject_new_sessions``, ``jwt_access_tokens``).

Nothing here holds a socket or writes an answer; no repr shows a token.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from zeep_sfrefresh.testing import authorize, grants, wire
from zeep_sfrefresh.testing.data import Record, RecordStore, SObjectSpec, random_id, to_18
from zeep_sfrefresh.testing.knobs import DEMO_USERNAME, Knobs
from zeep_sfrefresh.testing.paging import QueryCursors

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

__all__ = [
    "API_LIMIT",
    "API_VERSION",
    "Counters",
    "Family",
    "Injection",
    "OrgState",
    "RefreshGrant",
    "RefreshTokenState",
    "Session",
    "User",
    "new_token",
]

API_VERSION = "66.0"
"""The API version the org's addresses name by default."""

API_LIMIT = 15000
"""The org's daily API request limit (what LimitInfo headers and ``limits`` report)."""

RefreshTokenState = Literal["active", "retired", "revoked", "unknown"]
"""What ``StandInOrg.refresh_token_state`` reports."""


@dataclass
class User:
    user_id: str
    username: str
    password: str = field(repr=False)
    full_name: str
    email: str

    def password_is(self, given: str) -> bool:
        """Whether ``given`` is this user's password (compared in constant time)."""
        return secrets.compare_digest(self.password.encode("utf-8"), given.encode("utf-8"))


@dataclass(frozen=True)
class Session:
    user_id: str
    soap: bool = True
    """False for a JWT-format access token: REST accepts it, the SOAP APIs refuse it."""
    rest: bool = True
    """False for a session the REST API refuses as "not valid for use with the REST API"
    (``StandInOrg.make_rest_invalid``); the SOAP APIs still take it."""
    issued: float = field(default_factory=time.monotonic)
    """When it was issued (``time.monotonic``), for a timeout by age
    (``StandInOrg.expire_sessions_older_than``)."""


@dataclass(eq=False)
class Family:
    """One authorisation's refresh tokens (the first and every rotation of it) and sessions.

    Salesforce revokes a family as a whole when a retired refresh token comes back: the reuse
    means a copy leaked or two holders raced, and it cannot tell which holder is legitimate.
    The tokens themselves live only as keys of :attr:`OrgState.refresh_tokens` and in the
    repr-less ``sessions`` set, so no repr shows one.
    """

    user_id: str
    sessions: set[str] = field(default_factory=set, repr=False)
    """Access tokens issued to this family (some may have expired since)."""
    revoked: bool = False


@dataclass(eq=False)
class RefreshGrant:
    """What the org knows about one refresh token (the token is the dict key, not a field)."""

    family: Family
    retired: bool = False
    """Used once with rotation on: presenting it again is a reuse."""

    @property
    def state(self) -> RefreshTokenState:
        if self.family.revoked:
            return "revoked"
        return "retired" if self.retired else "active"


@dataclass(frozen=True)
class Injection:
    """A queued fail_next_soap / drop_next_soap order (``code`` None means drop)."""

    code: str | None
    message: str = ""
    prefix: str = "sf"


@dataclass
class Counters:
    """What the org counted since it started or since ``reset_counters()``.

    ``StandInOrg`` shows each public field under its own name (a copy, read under the lock).
    """

    token_requests: int = 0
    """Every POST to the token endpoint, successful or not."""
    token_requests_by_grant: collections.Counter[str] = field(default_factory=collections.Counter)
    """Token endpoint posts by their grant_type as sent ("" when none).

    A device flow start (``response_type=device_code``, no grant_type) counts as
    ``"device_code"``. Counted on arrival like ``token_requests``, whatever the answer.
    """
    token_failures: int = 0
    """Token endpoint posts that were not answered with a token.

    A ``"drop_after_issue"`` post whose grant succeeded is not counted: a token was
    issued, only the answer was lost.
    """
    family_revocations: int = 0
    """Refresh-token families revoked because a retired refresh token was presented again."""
    overlap_rejections: int = 0
    """Refreshes refused because another request with the same refresh token was in flight.

    Also counted in ``token_requests`` and ``token_failures``.
    """
    soap_posts: int = 0
    """Every POST to ``/services/Soap/...`` (refused, failed and dropped ones included)."""
    sessions_seen: list[str] = field(default_factory=list)
    """The sessionId each SOAP post carried, in order ("" when none)."""
    soap_hosts: list[str] = field(default_factory=list)
    """The Host header of each SOAP post, in order (shows which address a client used)."""
    operations: collections.Counter[str] = field(default_factory=collections.Counter)
    """Operations actually executed, by local name.

    Counted when a handler ran: after the session check passed (or for ``login``, which
    needs none). Refused, injected-fault and dropped posts are not counted.
    """
    rest_requests: int = 0
    """Requests to the REST side: ``/services/data``, userinfo and the identity URL."""
    api_requests: int = 0
    """SOAP operations executed and authenticated REST requests: the LimitInfo count."""
    internal_errors: list[str] = field(default_factory=list, metadata={"reset": False})
    """Exceptions raised by the org while answering (should stay empty; a non-empty list
    means a bug in the stand-in, not in the client). Kept by :meth:`reset`."""

    def reset(self) -> None:
        """Zero every counter but ``internal_errors``."""
        fresh = Counters()
        for item in dataclasses.fields(self):
            if item.metadata.get("reset", True):
                setattr(self, item.name, getattr(fresh, item.name))

    def copy_of(self, name: str) -> object:
        """A copy of one counter (a list or Counter the caller may keep and change)."""
        return copy.copy(getattr(self, name))


def new_token(prefix: str) -> str:
    """A random token body shaped like Salesforce's (letters, digits, '.' and '_')."""
    return prefix + secrets.token_urlsafe(72).replace("-", ".")


@dataclass(eq=False, repr=False)
class OrgState:
    """The org's identity, users, sessions, authorisations, records, cursors and counters.

    Read and written with :attr:`lock` held (the methods that say so expect it held).
    """

    knobs: Knobs
    client_id: str
    """The connected app's consumer key, which the token endpoint accepts."""
    client_secret: str
    """The connected app's secret."""
    org_id: str = field(default_factory=lambda: random_id("00D"))
    """The organization ID (``00D...``), in SOAP paths and identity URLs."""
    user_id: str = field(default_factory=lambda: random_id("005"))
    """The demo user: :meth:`StandInOrg.issue_token`'s, and the one who consents."""
    organization_name: str = "Stand-in Org"
    """What ``getUserInfo`` answers as the organization's name."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    stopping: threading.Event = field(default_factory=threading.Event)
    """Set when the org stops: delays and held requests end at once, unanswered."""
    base_url: str | None = None
    """``http(s)://127.0.0.1:PORT`` while the org serves, else None."""
    moved_instance_url: str | None = None
    """The instance_url a test moved the org to (None: :attr:`url`)."""

    users: dict[str, User] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)
    """Live access tokens and SOAP session ids."""
    refresh_tokens: dict[str, RefreshGrant] = field(default_factory=dict)
    in_flight: collections.Counter[str] = field(default_factory=collections.Counter)
    """Refresh tokens presented by requests not answered yet (how many of each)."""
    jwt_keys: list[RSAPublicKey] = field(default_factory=list)
    authorization_codes: dict[str, authorize.AuthorizationCode] = field(default_factory=dict)
    device_authorizations: dict[str, authorize.DeviceAuthorization] = field(default_factory=dict)
    """By device code."""
    token_hold: threading.Event | None = None
    """Token requests wait for this event when set (``hold_token_requests``)."""

    records: RecordStore = field(default_factory=RecordStore.seeded)
    cursors: QueryCursors = field(default_factory=QueryCursors)
    injected: collections.deque[Injection] = field(default_factory=collections.deque)
    """Queued SOAP failures, oldest first."""
    counters: Counters = field(default_factory=Counters)

    def __post_init__(self) -> None:
        self.users[self.user_id] = User(
            self.user_id, DEMO_USERNAME, secrets.token_hex(16), "Stan Din", DEMO_USERNAME
        )

    # --- addresses ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Where the org listens; RuntimeError when it is not serving."""
        if self.base_url is None:
            raise RuntimeError("the StandInOrg is not running; call start() first")
        return self.base_url

    @property
    def instance_url(self) -> str:
        """The instance_url the org answers: :attr:`url` unless a test moved it."""
        with self.lock:
            return self.moved_instance_url or self.url

    def identity_url(self, user_id: str) -> str:
        """A token's ``id``: ``<url>/id/<org_id>/<user_id>``."""
        return f"{self.url}/id/{self.org_id}/{user_id}"

    def soap_path(self, code: str, version: str) -> str:
        """``/services/Soap/<code>/<version>/<org_id>``, the path of one SOAP API."""
        return f"/services/Soap/{code}/{version}/{self.org_id}"

    # --- users and sessions (called with the lock held) --------------------------------------

    def user_named(self, username: str | None) -> User | None:
        """The user with this username."""
        return next((u for u in self.users.values() if u.username == username), None)

    def user_info(self, user_id: str) -> wire.UserInfo:
        """What getUserInfo, login and userinfo say about a user and the org."""
        user = self.users[user_id]
        return wire.UserInfo(
            organization_id=self.org_id,
            organization_name=self.organization_name,
            user_id=user.user_id,
            user_name=user.username,
            user_full_name=user.full_name,
            user_email=user.email,
            profile_id=to_18("00e" + self.org_id[3:15]),
        )

    def new_session(
        self, user_id: str, family: Family | None = None, *, oauth: bool = False
    ) -> str:
        """A new access token or session ID.

        ``oauth`` marks a token endpoint answer (or issue_token): only those become JWT-format
        with ``jwt_access_tokens`` on, a SOAP login's sessionId never does. With
        ``reject_new_sessions`` on the token is made but never registered, so every API
        refuses it as unknown.
        """
        session = Session(user_id)
        if oauth and self.knobs.jwt_access_tokens:
            access_token = grants.jwt_access_token(
                org_id=self.org_id,
                user_id=user_id,
                issuer=self.instance_url,
                client_id=self.client_id,
                scope=self.knobs.scope,
                now=time.time(),
            )
            session = Session(user_id, soap=False)
        else:
            access_token = f"{self.org_id[:15]}!{new_token('AQ')}"
        if self.knobs.reject_new_sessions:
            return access_token
        self.sessions[access_token] = session
        if family is not None:
            family.sessions.add(access_token)
        return access_token

    def new_refresh_token(self, family: Family) -> str:
        """A new refresh token of ``family``, registered as active."""
        refresh_token = new_token("5Aep861")
        self.refresh_tokens[refresh_token] = RefreshGrant(family)
        return refresh_token

    def revoke(self, family: Family) -> None:
        """Invalidate every refresh token and session of a family."""
        family.revoked = True
        for access_token in family.sessions:
            self.sessions.pop(access_token, None)
        family.sessions.clear()
        self.counters.family_revocations += 1

    def device_by_user_code(self, user_code: str) -> authorize.DeviceAuthorization:
        """The device authorization of a user code as a user types it; KeyError."""
        wanted = authorize.normalize_user_code(user_code)
        for pending in self.device_authorizations.values():
            if pending.user_code == wanted:
                return pending
        raise KeyError("no device authorization has this user code")

    # --- records -----------------------------------------------------------------------------

    def parent_record(self, spec: SObjectSpec, record_id: str) -> Record | None:
        """The live record of ``spec`` with that Id: what a relationship path reads.

        None for an Id of another object or of a deleted record, so such a lookup reads as
        empty (Salesforce clears or cascades a lookup when its parent is deleted).
        """
        hit = self.records.get(record_id)
        return hit[1] if hit is not None and hit[0].name == spec.name else None

    # --- time and trouble --------------------------------------------------------------------

    def wait(self, seconds: float) -> bool:
        """Sleep unless the org is stopping; False means "stop, do not answer"."""
        if seconds > 0:
            return not self.stopping.wait(seconds)
        return not self.stopping.is_set()

    def record_internal_error(self, error: BaseException) -> None:
        """Keep an exception the org raised while answering (see ``internal_errors``)."""
        with self.lock:
            self.counters.internal_errors.append(f"{type(error).__name__}: {error}")
