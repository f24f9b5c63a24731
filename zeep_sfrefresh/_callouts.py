"""Requests that carry the token outside a SOAP envelope: REST and Named Credential callouts.

A :class:`TokenRequest` is such a request as a template: the REST auths
(:mod:`zeep_sfrefresh._rest`, :mod:`zeep_sfrefresh._async_rest`) make one from each request
they see, a transport's ``callout()`` from its ``callout:NAME/...`` URL. Built with a token,
it gets ``Authorization: Bearer`` on the token's instance (and, for callouts,
``{!$Credential.OAuthToken}`` filled in); :func:`token_request_flow` runs it on the one
resend skeleton, :func:`zeep_sfrefresh._flow.resend_once`, with the REST expiry test
:func:`rest_invalid_session` (a SOAP fault counts too: a callout may post an envelope).
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ._faults import INVALID_SESSION_ID, MAX_FAULT_BYTES, invalid_session_fault
from ._flow import HttpResponse, Outcome, Send, Step, check_sendable, resend_once
from ._routing import DestinationPolicy
from ._tokens import Generation, Token

__all__ = [
    "MERGE_FIELD",
    "TokenRequest",
    "callout_path",
    "rest_invalid_session",
    "route_any_path",
    "token_request_flow",
]

MERGE_FIELD = "{!$Credential.OAuthToken}"
"""Apex's merge field for a Named Credential's access token; callouts fill it in."""

_REST_PATHS = ("/services/data/", "/services/apexrest/", "/services/oauth2/userinfo")
"""Paths whose requests authenticate with ``Authorization: Bearer`` (REST, Apex REST, userinfo)."""


def callout_path(url: str, name: str) -> str:
    """Return the path (and query) of a ``callout:NAME/path`` URL; the name must be ``name``."""
    prefix, _, rest = url.partition(":")
    if prefix != "callout" or not rest:
        raise ValueError(f"a callout URL looks like callout:{name}/services/..., not {url!r}")
    called, slash, path = rest.partition("/")
    if called != name:
        raise ValueError(
            f"this transport is the named credential {name!r}, not {called!r}"
            if name
            else "give the transport a name (SalesforceTransport(..., name='sfa')) to make callouts"
        )
    return slash + path


_MERGE_FIELD_BYTES = MERGE_FIELD.encode("ascii")


def _fill(text: str, access_token: str, *, xml: bool) -> str:
    if not xml:
        return text.replace(MERGE_FIELD, access_token)
    from xml.sax.saxutils import escape  # callouts only: xml.sax stays out of the import

    return text.replace(MERGE_FIELD, escape(access_token))


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


@dataclass(frozen=True)
class TokenRequest:
    """A request made with whatever token is current: REST through the transport's auth, or
    a Named Credential style callout. A refresh builds it again from this template.

    ``url`` is absolute. A request to the token's instance gets ``Authorization: Bearer``
    (``bearer_paths_only``: only on REST paths, as a callout's SOAP envelope carries the
    session in its body); a request elsewhere is sent without any Authorization header, so
    no session id of the org leaves its instance. ``merge_fields`` fills
    :data:`MERGE_FIELD` in the body (XML-escaped) and header values. When a refresh moves
    the org to another instance, a request addressed to the old instance follows it.
    """

    method: str
    url: str
    body: bytes | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    merge_fields: bool = False
    bearer_paths_only: bool = False

    def build(self, token: Token, first: Token, policy: DestinationPolicy) -> tuple[Send, bool]:
        """The request with ``token`` (``first``: the token of the first attempt), and
        whether it carries the token."""
        address = self.url
        if (
            first.instance_url
            and token.instance_url
            and token.instance_url != first.instance_url
            and _origin(address) == _origin(first.instance_url)
        ):
            address = route_any_path(address, token.instance_url)
        headers = dict(self.headers)
        body = self.body
        carries = False
        if self.merge_fields:
            # Bytes, not text: a body need not be UTF-8 (a file upload), and the merge field
            # is ASCII, so it is found and filled in any ASCII-compatible encoding.
            carries = any(MERGE_FIELD in value for value in headers.values())
            headers = {k: _fill(v, token.access_token, xml=False) for k, v in headers.items()}
            if body is not None and _MERGE_FIELD_BYTES in body:
                carries = True
                filled = _fill(MERGE_FIELD, token.access_token, xml=True).encode("utf-8")
                body = body.replace(_MERGE_FIELD_BYTES, filled)
        at_instance = token.instance_url is not None and _origin(address) == _origin(
            token.instance_url
        )
        path = urlsplit(address).path
        rest = path.startswith(_REST_PATHS)
        if self.bearer_paths_only:
            # A callout: Bearer on REST paths unless the caller wrote its own Authorization.
            bearer = rest and not any(k.lower() == "authorization" for k in headers)
        else:
            # The REST auth: the current token always wins over a header a client library
            # set from a session id that may have gone stale.
            bearer = True
        if at_instance and bearer:
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            headers["Authorization"] = f"Bearer {token.access_token}"
            carries = True
        elif not at_instance and not self.bearer_paths_only:
            # Another host never gets an Authorization through the REST auth, not even one
            # a client library set itself: it may hold a session id of this org.
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        if carries:
            policy.check(address, check_sendable(token, soap=not rest))
        return Send(address, body, self.method.upper(), headers), carries


def route_any_path(address: str, instance_url: str) -> str:
    """``address`` with the scheme, host and port of ``instance_url`` (path kept)."""
    target, base = urlsplit(address), urlsplit(instance_url)
    return target._replace(scheme=base.scheme, netloc=base.netloc).geturl()


def rest_invalid_session(status_code: int, body: bytes) -> bool:
    """Decide whether a REST answer says the session expired (HTTP 401, ``INVALID_SESSION_ID``).

    "This session is not valid for use with the REST API" carries the same code but no new
    token cures it (a session from a SOAP login without API scope), so it is not an expiry.
    """
    if status_code != 401 or not body or len(body) > MAX_FAULT_BYTES:
        return False
    try:
        errors = json.loads(body)
    except ValueError:
        return False
    return isinstance(errors, list) and any(
        isinstance(error, dict)
        and error.get("errorCode") == INVALID_SESSION_ID
        and "not valid for use with the REST API" not in str(error.get("message", ""))
        for error in errors
    )


def _expired(response: HttpResponse) -> bool:
    """An expired session: a REST 401 saying so, or a SOAP ``INVALID_SESSION_ID`` fault."""
    status, content = response.status_code, response.content
    if 200 <= status < 300:
        return False
    return rest_invalid_session(status, content) or (
        invalid_session_fault(status, content) is not None
    )


def token_request_flow(
    request: TokenRequest,
    current: Generation,
    policy: DestinationPolicy,
    *,
    resendable: bool = True,
    announced: bool = False,
) -> Generator[Step, Any, tuple[Any, Outcome | None]]:
    """One request with the current token: :func:`~zeep_sfrefresh._flow.resend_once` with
    the request rebuilt for each token (a refresh's resend follows an instance move)."""
    first = current.token
    return resend_once(
        lambda token: request.build(token, first, policy),
        _expired,
        current,
        resendable=resendable,
        announced=announced,
    )
