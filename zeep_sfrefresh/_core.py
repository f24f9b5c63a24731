"""The core both transports share, and the one place it is built.

A transport is a thin shell: it performs the I/O its call policies ask for (requests for
:class:`~zeep_sfrefresh.SalesforceTransport`, httpx for the async one). What decides is the
:class:`Core`: the :class:`~zeep_sfrefresh._refresh.Refresher` (one refresh for every caller
sharing the credential or store), the destination policy, and the routing switch.
:func:`build_core` makes it from the credential and the Salesforce options, which are
spelled once, in :class:`SalesforceOptions`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, NamedTuple, TypedDict

import requests

from ._breaker import DEFAULT_BREAKER, CircuitBreaker
from ._checks import check_flag, check_seconds
from ._events import RefreshListener
from ._flow import check_sendable
from ._grants import DEFAULT_TOKEN_TIMEOUT, Grant, SessionGrant
from ._redaction import install_log_redaction
from ._refresh import DEFAULT_OVERLAP_WAIT, Refresher
from ._routing import SALESFORCE_DOMAINS, DestinationPolicy
from ._stores import MemoryTokenStore, TokenStore
from ._tokens import Token

if TYPE_CHECKING:
    # At run time imported where a transport is built: ``import zeep_sfrefresh`` leaves
    # requests-oauthlib to the application, which imports it to make its OAuth2Session.
    from requests_oauthlib import OAuth2Session

__all__ = ["Core", "SalesforceOptions", "build_core", "check_session"]


class SalesforceOptions(TypedDict, total=False):
    """The transports' Salesforce keyword arguments (each transport adds zeep's own).

    Both transports take them, all optional: ``SalesforceTransport(oauth, store=...)``.
    """

    store: TokenStore | None
    """Where the token is shared with other transports and processes (:class:`FileTokenStore`,
    :class:`RedisTokenStore`, your own :class:`TokenStore`). When it already holds a token,
    that token wins over the session's; when it is empty, the session's token seeds it.
    Default: an in-memory store shared by every transport built on the same ``oauth``."""
    route_to_instance: bool
    """Send ``/services/Soap/...`` requests to the token's ``instance_url`` whatever host the
    WSDL names (default True). Turn off to post to the WSDL's address as is."""
    token_timeout: float
    """Seconds a whole token request may take, connect to last byte (default 30; credential
    objects carry their own ``timeout``)."""
    overlap_wait: float
    """When another worker may be refreshing with the same refresh token, seconds to wait for
    its token to reach the store (default 30)."""
    listener: RefreshListener | None
    """Called with a :class:`RefreshEvent` for each refresh, adoption, failure, rejected
    session and instance move; never given a token."""
    circuit_breaker: CircuitBreaker | None
    """After ``threshold`` refreshed sessions in a row are rejected at once, no token request
    for ``cooldown`` seconds (default ``CircuitBreaker()``; None turns this off)."""
    allowed_domains: Iterable[str]
    """Domains whose hosts may be a token's instance (default ``SALESFORCE_DOMAINS``;
    compared in lower case, without a dot at either end): the session id is only ever sent
    to that instance, over https. Loopback http instances are
    allowed only when the application set ``OAUTHLIB_INSECURE_TRANSPORT``."""
    redact_logs: bool
    """Put :class:`RedactingFilter` on the loggers of requests-oauthlib, oauthlib, zeep,
    urllib3 and httpx, which log tokens and secrets at DEBUG (default True)."""
    name: str
    """The Named Credential name the transport's ``callout`` URLs use (``callout:NAME/...``)."""


class Core(NamedTuple):
    """What a transport's calls are decided by; built once, by :func:`build_core`."""

    refresher: Refresher
    policy: DestinationPolicy
    route_to_instance: bool
    name: str


def _check_credential(oauth: object) -> None:
    """Refuse, with a TypeError that says what is accepted, anything but a credential."""
    from requests_oauthlib import OAuth2Session

    if isinstance(oauth, OAuth2Session) or callable(getattr(oauth, "fetch", None)):
        return
    hint = ""
    if isinstance(oauth, Mapping):
        hint = " (a token dict goes in OAuth2Session(client_id, token=..., ...))"
    elif isinstance(oauth, requests.Session):
        hint = " (a plain requests.Session holds no token; pass it as session= if at all)"
    raise TypeError(
        "the first argument must be a requests_oauthlib.OAuth2Session holding the Salesforce "
        "token, or a credential object (JwtBearer, ClientCredentials, UsernamePassword, or "
        f"your own with a fetch() method), not {type(oauth).__name__}{hint}"
    )


def check_session(session: object) -> None:
    """Refuse an ``OAuth2Session`` where a transport wants a plain session for SOAP traffic."""
    from requests_oauthlib import OAuth2Session

    if isinstance(session, OAuth2Session):
        raise TypeError(
            "session= takes a plain requests.Session: an OAuth2Session would put its Bearer "
            "token on every request, WSDL downloads included; pass the OAuth2Session as the "
            "first argument"
        )


_STORE_METHODS = ("lock", "load", "save", "write_intent")


def _check_options(options: SalesforceOptions) -> tuple[str, ...]:
    """Refuse option values of the wrong kind now, when the transport is built: most are
    first used when a session expires, in production, the worst moment to learn of a typo
    (a path for ``store``, ``"30"`` from a config file, ``route_to_instance="false"``).
    Returns ``allowed_domains`` as the destination policy takes them: lower case, without
    a dot at either end (iterated once: it may be a generator)."""
    store = options.get("store")
    if store is not None and not all(callable(getattr(store, m, None)) for m in _STORE_METHODS):
        hint = ""
        if isinstance(store, (str, os.PathLike)):
            hint = " (a file: FileTokenStore(path); Redis: RedisTokenStore(client, key))"
        raise TypeError(
            "store must be a token store, with lock(), load(), save() and write_intent(), "
            f"not {type(store).__name__}{hint}"
        )
    if "overlap_wait" in options:
        check_seconds("overlap_wait", options["overlap_wait"], zero=True)
    if "token_timeout" in options:
        check_seconds("token_timeout", options["token_timeout"])
    for flag in ("route_to_instance", "redact_logs"):
        if flag in options:
            check_flag(flag, options[flag])
    name = options.get("name")
    if "name" in options and not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    listener = options.get("listener")
    if listener is not None and not callable(listener):
        raise TypeError(
            "listener must be callable (it is given each RefreshEvent), "
            f"not {type(listener).__name__}"
        )
    breaker = options.get("circuit_breaker")
    if breaker is not None and not isinstance(breaker, CircuitBreaker):
        raise TypeError(
            f"circuit_breaker must be a CircuitBreaker or None, not {type(breaker).__name__}"
        )
    domains = options.get("allowed_domains", SALESFORCE_DOMAINS)
    if isinstance(domains, (str, bytes)):
        raise TypeError(
            f"allowed_domains must be a list of domains, like [{domains!r}], not one string"
        )
    checked = tuple(domains)
    if not all(isinstance(domain, str) and domain.strip(". ") for domain in checked):
        raise TypeError(f"allowed_domains must hold domain names, not {checked!r}")
    return tuple(domain.strip().strip(".").lower() for domain in checked)


def _refresher(oauth: OAuth2Session | Grant, options: SalesforceOptions) -> Refresher:
    from requests_oauthlib import OAuth2Session

    store = options.get("store")
    listener = options.get("listener")
    overlap_wait = options.get("overlap_wait", DEFAULT_OVERLAP_WAIT)
    breaker = options.get("circuit_breaker", DEFAULT_BREAKER)
    if not isinstance(oauth, OAuth2Session):  # a credential object: no token yet
        return Refresher(
            oauth,
            store if store is not None else MemoryTokenStore.for_session(oauth),
            None,
            listener=listener,
            overlap_wait=overlap_wait,
            breaker=breaker,
        )
    if not oauth.token:
        raise ValueError("the OAuth2Session has no token; create it with token=<token dict>")
    seed = Token(oauth.token)
    check_sendable(seed, soap=False)  # refuse before anything reaches a store
    if seed.refresh_token is None:
        raise ValueError(
            "the OAuth2Session's token has no refresh_token, so its session could never be "
            "refreshed; give the connected app the refresh_token (or offline_access) scope "
            "and authorise again"
        )
    session = oauth
    return Refresher(
        SessionGrant(session, timeout=options.get("token_timeout", DEFAULT_TOKEN_TIMEOUT)),
        store if store is not None else MemoryTokenStore.for_session(session),
        seed,
        on_refresh=session.token_updater,
        # requests-oauthlib users read oauth.token (their REST calls send it): keep it current.
        on_change=lambda token: setattr(session, "token", token.as_dict()),
        listener=listener,
        overlap_wait=overlap_wait,
        breaker=breaker,
    )


def build_core(oauth: OAuth2Session | Grant, options: SalesforceOptions) -> Core:
    """Check the credential, build the refresher (a credential object gets its first token
    now, unless the store holds one) and the destination policy."""
    unknown = sorted(set(options) - set(SalesforceOptions.__annotations__))
    if unknown:  # what an explicit keyword list would refuse
        raise TypeError(f"unexpected keyword argument {', '.join(map(repr, unknown))}")
    _check_credential(oauth)
    domains = _check_options(options)
    refresher = _refresher(oauth, options)
    check_sendable(refresher.token, soap=False)
    policy = DestinationPolicy(
        domains,
        # The application's own switch for plain-http OAuth (tests on loopback); read,
        # never set, here.
        allow_loopback=bool(os.environ.get("OAUTHLIB_INSECURE_TRANSPORT")),
    )
    if options.get("redact_logs", True):
        install_log_redaction()
    return Core(refresher, policy, options.get("route_to_instance", True), options.get("name", ""))
