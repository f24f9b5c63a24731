"""Immutable token snapshots and generations, and fingerprints that name a secret without it."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

__all__ = ["Generation", "Token", "fingerprint"]


def fingerprint(secret: str | None) -> str:
    """Return a short, stable label for a secret: the first 8 hex digits of its SHA-256.

    Two fingerprints tell whether two tokens are the same without revealing either.
    """
    if not secret:
        return "none"
    return "sha256:" + hashlib.sha256(secret.encode("utf-8")).hexdigest()[:8]


class Token:
    """A read-only snapshot of a Salesforce token dict.

    Threads read ``transport.token`` without a lock, so a token is never edited in place:
    a refresh builds a new one. ``repr`` shows fingerprints only. ``access_token``,
    ``refresh_token`` and ``instance_url`` are plain attributes, read on every call.
    """

    __slots__ = ("_data", "access_token", "instance_url", "refresh_token")

    _data: Mapping[str, Any]
    access_token: str
    """The session id sent in ``SessionHeader``."""
    refresh_token: str | None
    """The refresh token, or None when the grant gave none."""
    instance_url: str | None
    """Base URL of the org the token belongs to, e.g. ``https://acme.my.salesforce.com``."""

    def __init__(self, data: Mapping[str, Any], *, previous: Token | None = None) -> None:
        """Validate ``data`` and keep what a refresh answer may leave out.

        Salesforce returns a ``refresh_token`` on refresh only when rotation is on, and a
        token response without ``instance_url`` would otherwise lose the org's address, so
        both are carried over from ``previous`` when missing.
        """
        merged = dict(data)
        if previous is not None:
            for key in ("refresh_token", "instance_url"):
                if not merged.get(key) and previous.data.get(key):
                    merged[key] = previous.data[key]
        access = merged.get("access_token")
        if not isinstance(access, str) or not access:
            raise ValueError("the token has no access_token")
        instance_url = merged.get("instance_url")
        if instance_url is not None:
            parts = urlsplit(instance_url) if isinstance(instance_url, str) else None
            if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("the token's instance_url is not an http(s) URL with a host")
        refresh = merged.get("refresh_token")
        setter = object.__setattr__
        setter(self, "_data", MappingProxyType(merged))
        setter(self, "access_token", access)
        setter(self, "refresh_token", str(refresh) if refresh else None)
        setter(self, "instance_url", str(instance_url) if instance_url else None)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a Token is read-only (cannot set {name!r}); build a new one")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"a Token is read-only (cannot delete {name!r})")

    def __reduce__(self) -> tuple[type[Token], tuple[dict[str, Any]]]:
        # copy and pickle rebuild it from its data (slots and __setattr__ stand in the way).
        return (Token, (dict(self._data),))

    @property
    def data(self) -> Mapping[str, Any]:
        """The whole token as the token endpoint returned it (merged with what was kept)."""
        return self._data

    def as_dict(self) -> dict[str, Any]:
        """Return a plain, mutable copy, e.g. for ``token_updater`` or ``OAuth2Session.token``."""
        return dict(self._data)

    def __repr__(self) -> str:
        return (
            f"Token(access_token={fingerprint(self.access_token)}, "
            f"refresh_token={fingerprint(self.refresh_token)}, "
            f"instance_url={self.instance_url!r})"
        )


class Generation:
    """One state of a refresher: the token calls send, and how that state came to be.

    A refresher replaces its generation whole, never edits it: a refresh or an adoption
    brings a new token, a failed refresh a new generation of the same token carrying the
    failure. A call remembers the generation it sent; when its session expires, the
    refresher compares that object with its current one to tell "refresh now" from "someone
    already did" and from "the refresh of this token just failed: share that failure".
    Compared by identity; ``epoch`` numbers them for people. A plain class with slots rather
    than a dataclass, which would cost about 0.5 ms to define at ``import zeep_sfrefresh``.
    """

    __slots__ = ("epoch", "failure", "token")

    def __init__(self, token: Token, epoch: int, failure: BaseException | None = None) -> None:
        self.token: Final = token
        self.epoch: Final = epoch
        self.failure: Final = failure
        """Why the refresh of ``token`` failed, for a generation made by a failure."""

    def __repr__(self) -> str:
        return f"Generation(token={self.token!r}, epoch={self.epoch}, failure={self.failure!r})"
