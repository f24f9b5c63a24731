"""The stand-in Salesforce org: a real HTTP server on loopback that speaks Salesforce's protocols.

:class:`StandInOrg` is the facade tests use: its lifecycle (start, stop, the context
manager), its addresses, its knobs and counters, and the few things a test does to it
(issue a token, expire sessions, queue failures). Behind it, one module per part:

* :mod:`~zeep_sfrefresh.testing.state`: what the org remembers (users, sessions, refresh-token
  families, records, query cursors, counters) under one lock;
* :mod:`~zeep_sfrefresh.testing.knobs`: what a test sets (:class:`Knobs`);
* :mod:`~zeep_sfrefresh.testing.oauth`: the token endpoint and the login flows' pages;
* :mod:`~zeep_sfrefresh.testing.soap` (with ``soap_call``, ``soap_partner``, ``soap_typed``
  and ``apis``): the five SOAP APIs, one dispatch table;
* :mod:`~zeep_sfrefresh.testing.rest`: the REST API; :mod:`~zeep_sfrefresh.testing.paging`:
  query batches and locators, shared by SOAP and REST;
* :mod:`~zeep_sfrefresh.testing.wire`: Salesforce's wire format, pure functions;
* :mod:`~zeep_sfrefresh.testing.server`: the sockets.

Nothing is logged: the org handles access and refresh tokens, and the standard library's
request log would print paths and errors to stderr.
"""

from __future__ import annotations

import collections
import dataclasses
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Generic, TypeVar, cast, overload

from zeep_sfrefresh.testing import authorize, grants, oauth, rest, soap, tls, wire
from zeep_sfrefresh.testing.data import random_id
from zeep_sfrefresh.testing.knobs import OVERLAP_DESCRIPTION, TOKEN_FAILURES, Knobs
from zeep_sfrefresh.testing.server import Answer, LoopbackServer, Request
from zeep_sfrefresh.testing.state import (
    API_VERSION,
    Injection,
    OrgState,
    RefreshTokenState,
    User,
)

__all__ = ["OVERLAP_DESCRIPTION", "TOKEN_FAILURES", "RefreshTokenState", "StandInOrg"]

T = TypeVar("T")


class _OrgAttribute(Generic[T]):
    """An attribute of :class:`StandInOrg` whose value lives in one of the org's parts."""

    def __init__(self) -> None:
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, org: None, owner: type | None = None) -> _OrgAttribute[T]: ...

    @overload
    def __get__(self, org: StandInOrg, owner: type | None = None) -> T: ...

    def __get__(self, org: StandInOrg | None, owner: type | None = None) -> T | _OrgAttribute[T]:
        return self if org is None else self.read(org)

    def read(self, org: StandInOrg) -> T:
        raise NotImplementedError

    def __set__(self, org: StandInOrg, value: T) -> None:
        raise AttributeError(f"{self.name} cannot be set")


class _Forwarded(_OrgAttribute[T]):
    """Read and written in one of the org's parts.

    ``rotation = _Forwarded[bool](_knobs)`` makes ``org.rotation`` read, and
    ``org.rotation = True`` write, ``org.knobs.rotation``: a test sets a knob on the org as on
    a plain attribute, and the endpoints read the same value from the part they hold.
    """

    def __init__(self, part: Callable[[StandInOrg], object]) -> None:
        super().__init__()
        self._part = part

    def read(self, org: StandInOrg) -> T:
        return cast(T, getattr(self._part(org), self.name))

    def __set__(self, org: StandInOrg, value: T) -> None:
        setattr(self._part(org), self.name, value)


class _Counted(_OrgAttribute[T]):
    """A counter, read-only: a copy of ``org.state.counters.<name>`` taken under the lock
    (see :class:`~zeep_sfrefresh.testing.state.Counters` for what each counts)."""

    def read(self, org: StandInOrg) -> T:
        with org.state.lock:
            return cast(T, org.state.counters.copy_of(self.name))


def _knobs(org: StandInOrg) -> Knobs:
    return org.knobs


def _state(org: StandInOrg) -> OrgState:
    return org.state


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
    refusals live in :mod:`zeep_sfrefresh.testing.grants`, their handling in
    :mod:`zeep_sfrefresh.testing.oauth`.

    The two interactive flows a login command uses are served too, consent given at once by
    the demo user (``user_id``): the web server flow (``GET /services/oauth2/authorize``, then
    ``grant_type=authorization_code``, PKCE optional) and Salesforce's device flow
    (``response_type=device_code`` at the token endpoint, approval at ``/setup/connect`` or
    with :meth:`approve_device`, polls with ``grant_type=device``). Both answer a refresh
    token that starts a new family, as :meth:`issue_token` does; their rules live in
    :mod:`zeep_sfrefresh.testing.authorize`.

    Knobs (plain attributes, settable at any time; kept in ``org.knobs``, a
    :class:`~zeep_sfrefresh.testing.knobs.Knobs` that documents each): ``rotation``,
    ``scope``, ``token_failure``, ``token_delay`` (before the grant is processed),
    ``token_answer_delay`` (after it is processed, before the answer), ``token_trickle``
    (token answers written byte by byte), ``soap_delay``, ``reject_overlapping_refreshes``,
    ``overlap_description``, ``jwt_audience``, ``client_credentials_user``,
    ``password_grant_enabled``, ``reject_new_sessions``, ``jwt_access_tokens``,
    ``callback_urls``, ``authorization_code_lifetime``,
    ``require_secret_for_web_server_flow``, ``require_secret_for_refresh``,
    ``query_batch_size``, ``rest_batch_size``, ``deny_authorization``, ``device_interval``,
    ``device_code_lifetime``; and ``instance_url``.

    The REST API (query and queryAll with ``nextRecordsUrl`` batches, sObject create, read,
    update and delete, describe, limits) is :mod:`zeep_sfrefresh.testing.rest`'s, over the
    same records as SOAP; :meth:`make_rest_invalid` makes REST refuse one session.
    ``StandInOrg(tls=True)`` serves https with a certificate made at start (``ca_file``).

    Counters (read-only copies, taken under the lock; :meth:`reset_counters` zeroes them):
    ``token_requests``, ``token_requests_by_grant``, ``token_failures``, ``soap_posts``,
    ``sessions_seen``, ``soap_hosts``, ``operations``, ``rest_requests``,
    ``family_revocations``, ``overlap_rejections``. ``internal_errors`` lists any exception
    the org itself raised while answering (it should stay empty; a non-empty list means a bug
    in the stand-in, not in the client). What the org remembers is ``org.state``
    (:class:`~zeep_sfrefresh.testing.state.OrgState`), under ``org.state.lock``.
    """

    api_version: ClassVar[str] = API_VERSION
    """The API version of the SOAP paths and WSDLs the org serves."""

    # Knobs: see zeep_sfrefresh.testing.knobs.Knobs for what each does.
    rotation = _Forwarded[bool](_knobs)
    reject_overlapping_refreshes = _Forwarded[bool](_knobs)
    overlap_description = _Forwarded[str](_knobs)
    scope = _Forwarded[str](_knobs)
    token_failure = _Forwarded[str | None](_knobs)
    token_delay = _Forwarded[float](_knobs)
    token_answer_delay = _Forwarded[float](_knobs)
    token_trickle = _Forwarded[float](_knobs)
    soap_delay = _Forwarded[float](_knobs)
    jwt_audience = _Forwarded[str](_knobs)
    client_credentials_user = _Forwarded[str | None](_knobs)
    password_grant_enabled = _Forwarded[bool](_knobs)
    reject_new_sessions = _Forwarded[bool](_knobs)
    jwt_access_tokens = _Forwarded[bool](_knobs)
    require_secret_for_refresh = _Forwarded[bool](_knobs)
    callback_urls = _Forwarded[set[str]](_knobs)
    authorization_code_lifetime = _Forwarded[float](_knobs)
    require_secret_for_web_server_flow = _Forwarded[bool](_knobs)
    deny_authorization = _Forwarded[bool](_knobs)
    device_interval = _Forwarded[int](_knobs)
    device_code_lifetime = _Forwarded[float](_knobs)
    query_batch_size = _Forwarded[int](_knobs)
    rest_batch_size = _Forwarded[int](_knobs)

    # Who the org is (fixed when it is made).
    client_id = _Forwarded[str](_state)
    client_secret = _Forwarded[str](_state)
    org_id = _Forwarded[str](_state)
    user_id = _Forwarded[str](_state)
    organization_name = _Forwarded[str](_state)

    # Counters: see zeep_sfrefresh.testing.state.Counters for what each counts.
    token_requests = _Counted[int]()
    token_requests_by_grant = _Counted[collections.Counter[str]]()
    token_failures = _Counted[int]()
    soap_posts = _Counted[int]()
    sessions_seen = _Counted[list[str]]()
    soap_hosts = _Counted[list[str]]()
    operations = _Counted[collections.Counter[str]]()
    rest_requests = _Counted[int]()
    internal_errors = _Counted[list[str]]()
    family_revocations = _Counted[int]()
    overlap_rejections = _Counted[int]()

    def __init__(
        self,
        rotation: bool = False,
        client_id: str = "3MVG9standin",
        client_secret: str = "standin-secret",  # noqa: S107 - a test fixture
        port: int = 0,
        tls: bool = False,
    ) -> None:
        self.port = port
        """The port to listen on (127.0.0.1 only); 0 takes a free one. Read at start."""
        self.tls = tls
        """Serve https with a self-signed certificate made at start (see ``ca_file``), for
        clients that only speak https to an instance (simple-salesforce). Needs the
        ``cryptography`` package, imported only then. Read at start."""
        self.knobs = Knobs(rotation=rotation)
        """What the test set (each knob is also an attribute of the org)."""
        self.state = OrgState(self.knobs, client_id, client_secret)
        """What the org remembers, shared with its endpoints."""
        self._server: LoopbackServer | None = None
        self._thread: threading.Thread | None = None
        self._tls_dir: Path | None = None
        self._started = False
        self._stopped = False

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> StandInOrg:
        """Bind a free port on 127.0.0.1 and serve in a background thread. Returns self.

        An org serves once: after :meth:`stop` make a new one (tokens and records die with it).
        """
        with self.state.lock:
            if self._started or self._stopped:
                raise RuntimeError("a StandInOrg can only be started once")
            self._started = True
            context = None
            try:
                if self.tls:
                    self._tls_dir = Path(tempfile.mkdtemp(prefix="standin-org-tls-"))
                    context = tls.server_context(tls.make_identity(self._tls_dir))
                server = LoopbackServer(self, self.state.stopping, self.port, context)
            except BaseException:
                self._remove_tls_dir()  # stop() would not: nothing is serving
                raise
            self._server = server
            host, port = server.server_address[:2]
            scheme = "https" if context is not None else "http"
            self.state.base_url = f"{scheme}://{host!s}:{port}"
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"StandInOrg:{port}",
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
        with self.state.lock:
            self._stopped = True
            self.state.stopping.set()
            server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join()
        with self.state.lock:
            self._server = None
            self._thread = None
            self.state.base_url = None
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
        with self.state.lock:
            where = self.state.base_url or ("stopped" if self._stopped else "not started")
            counters = self.state.counters
            return (
                f"<StandInOrg {where} token_requests={counters.token_requests} "
                f"token_failures={counters.token_failures} soap_posts={counters.soap_posts} "
                f"rest_requests={counters.rest_requests} "
                f"family_revocations={counters.family_revocations} "
                f"overlap_rejections={counters.overlap_rejections}>"
            )

    # --- addresses ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with ``tls``), where the org listens (and
        its default instance_url)."""
        return self.state.url

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
        with self.state.lock:
            if self._tls_dir is None:
                raise RuntimeError("the StandInOrg serves no https: start it with tls=True")
            return str(self._tls_dir / "standin-org.pem")

    @property
    def instance_url(self) -> str:
        """The instance_url the token endpoint answers; ``url`` unless a test moved it.

        Set it to another address of the same server (``http://localhost:PORT``) to play an
        org that moved to a new instance: clients must follow the new instance_url.
        """
        return self.state.instance_url

    @instance_url.setter
    def instance_url(self, value: str | None) -> None:
        with self.state.lock:
            self.state.moved_instance_url = value.rstrip("/") if value else None

    @property
    def token_url(self) -> str:
        """The OAuth token endpoint."""
        return self.url + "/services/oauth2/token"

    def soap_path(self, code: str = "u", version: str | None = None) -> str:
        """``/services/Soap/<code>/<version>/<org_id>``, the path of one SOAP API."""
        return self.state.soap_path(code, version or self.api_version)

    def identity_url(self, user_id: str | None = None) -> str:
        """The token's ``id``: ``<url>/id/<org_id>/<user_id>``."""
        return self.state.identity_url(user_id or self.user_id)

    # --- users, sessions and tokens ----------------------------------------------------------

    def add_user(self, username: str, password: str, full_name: str = "Test User") -> str:
        """Register a user that SOAP ``login`` accepts; returns the new user's ID.

        The token endpoint knows the user too: as a JWT bearer ``sub``, for the password grant
        and as ``client_credentials_user``.
        """
        with self.state.lock:
            user_id = random_id("005")
            self.state.users[user_id] = User(user_id, username, password, full_name, username)
            return user_id

    def register_jwt_certificate(self, public_key_pem: bytes | str) -> None:
        """Register a connected-app certificate for the JWT bearer grant (several may be).

        Takes a PEM X.509 certificate (what Salesforce stores) or a PEM public key; it must be
        RSA. An assertion is accepted when any registered key verifies its RS256 signature, so
        a test can play a certificate rotation by registering the new one first. Needs
        pyjwt[crypto]; raises ValueError for anything but an RSA certificate or public key.
        """
        key = grants.load_public_key(public_key_pem)
        with self.state.lock:
            self.state.jwt_keys.append(key)

    def issue_token(self) -> dict[str, str]:
        """A token as the authorization-code flow returns it, with a refresh_token.

        The access token becomes a valid session and the refresh token is registered, so the
        pair can be handed to a client as if a user had just authorised the app. Each call
        starts a new refresh-token family: revoking one family leaves the others alone.
        """
        return oauth.issue_token(self.state)

    def refresh_token_state(self, refresh_token: str) -> RefreshTokenState:
        """``"active"``, ``"retired"`` (rotated away), ``"revoked"`` or ``"unknown"``.

        Lets a test prove that a client kept the rotated refresh token (the new one is still
        active) or lost it (only a retired or revoked one is left).
        """
        with self.state.lock:
            grant = self.state.refresh_tokens.get(refresh_token)
            return "unknown" if grant is None else grant.state

    def expire_all_sessions(self) -> None:
        """Invalidate every access token and SOAP session issued so far (refresh tokens stay)."""
        with self.state.lock:
            self.state.sessions.clear()

    def expire_sessions_older_than(self, age: float) -> int:
        """Invalidate the sessions issued ``age`` seconds ago or more, as a session timeout
        does (a session just issued lives on); return how many."""
        cutoff = time.monotonic() - age
        with self.state.lock:
            old = [key for key, session in self.state.sessions.items() if session.issued <= cutoff]
            for key in old:
                del self.state.sessions[key]
        return len(old)

    def expire_session(self, access_token: str) -> None:
        """Invalidate one access token or session ID."""
        with self.state.lock:
            self.state.sessions.pop(access_token, None)

    def make_rest_invalid(self, access_token: str) -> None:
        """Make the REST API refuse a live session as one it may not use; SOAP still takes it.

        Salesforce answers such a session (one it issued for something else, a UI session
        say) with HTTP 401 ``INVALID_SESSION_ID`` "This session is not valid for use with the
        REST API": the same code as an expired session's, a different message, and a refresh
        that issues another session of the same kind does not help. Raises KeyError when no
        live session has this token (the message does not repeat it).
        """
        with self.state.lock:
            session = self.state.sessions.get(access_token)
            if session is None:
                raise KeyError("no live session has this access token")
            self.state.sessions[access_token] = dataclasses.replace(session, rest=False)

    def is_valid_session(self, access_token: str) -> bool:
        """Whether the token would be accepted by the SOAP and REST APIs right now.

        False for a JWT-format access token (``jwt_access_tokens``), which only REST accepts;
        True for a session made REST-invalid (:meth:`make_rest_invalid`), which SOAP accepts.
        """
        with self.state.lock:
            session = self.state.sessions.get(access_token)
            return session is not None and session.soap

    # --- device flow approval ----------------------------------------------------------------

    def approve_device(self, user_code: str) -> None:
        """Approve a device flow for the demo user, as if they entered the code and allowed.

        The code is read as a user types it (any case, dashes ignored). Raises KeyError for a
        code no device authorization has and ValueError for one that expired or was already
        approved or denied. The client's next poll at the right pace gets the token.
        """
        oauth.approve_device(self.state, user_code)

    def deny_device(self, user_code: str) -> None:
        """Deny a device flow, as a user clicking Deny: its next poll answers access_denied.

        Raises KeyError and ValueError like :meth:`approve_device`.
        """
        oauth.deny_device(self.state, user_code)

    @property
    def pending_user_codes(self) -> list[str]:
        """User codes of the device flows waiting for the user (not expired), oldest first.

        Lets a test play the user of a login command that only prints its code.
        """
        return oauth.pending_user_codes(self.state)

    # --- injected trouble --------------------------------------------------------------------

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
        with self.state.lock:
            self.state.injected.extend([Injection(code, message, prefix)] * count)

    def drop_next_soap(self, count: int = 1) -> None:
        """Make the next ``count`` SOAP posts close the connection after reading the request.

        The operation is not executed; the client sees a connection error.
        """
        with self.state.lock:
            self.state.injected.extend([Injection(None)] * count)

    def hold_token_requests(self) -> threading.Event:
        """Hold every token request (counted, then parked) until the returned event is set.

        Makes refresh races deterministic: a test can let many callers reach the token
        endpoint before any of them gets an answer. ``stop()`` also releases held requests
        (they are then dropped, not answered). A refresh refused as overlapping a held one
        (``reject_overlapping_refreshes``) is answered at once, not held.
        """
        release = threading.Event()
        with self.state.lock:
            self.state.token_hold = release
        return release

    # --- counters ----------------------------------------------------------------------------

    def reset_counters(self) -> None:
        """Zero every counter (sessions, tokens, records, injected failures and
        ``internal_errors`` stay)."""
        with self.state.lock:
            self.state.counters.reset()

    def record_internal_error(self, error: BaseException) -> None:
        """Keep an exception the org raised while answering (see ``internal_errors``)."""
        self.state.record_internal_error(error)

    # --- routing -----------------------------------------------------------------------------

    def handle(self, request: Request) -> Answer:
        """Route one HTTP request (called by the server on the connection's thread)."""
        path = request.path
        authorization = request.headers.get("authorization")
        if request.method == "POST" and path == "/services/oauth2/token":
            return self.handle_token_request(request.body, authorization)
        if request.method == "POST" and path.startswith("/services/Soap/"):
            host = request.headers.get("host", "")
            return soap.handle_soap_request(self.state, path, request.body, host)
        if path.startswith("/services/data/") or (
            request.method == "GET"
            and (
                path == "/services/data"
                or path == "/services/oauth2/userinfo"
                or path.startswith("/id/")
            )
        ):
            return rest.handle_rest_request(
                self.state,
                path,
                request.query,
                authorization,
                method=request.method,
                body=request.body,
                headers=request.headers,
            )
        if request.method == "GET" and path == authorize.AUTHORIZE_PATH:
            return oauth.handle_authorize_request(self.state, request.query)
        if request.method == "GET" and path == authorize.VERIFICATION_PATH:
            return oauth.handle_device_verification(self.state, request.query)
        return Answer.json(404, wire.REST_NOT_FOUND)

    def handle_token_request(self, body: bytes, authorization: str | None) -> Answer:
        """Answer ``POST /services/oauth2/token``: see :func:`oauth.handle_token_request`."""
        return oauth.handle_token_request(self.state, body, authorization)
