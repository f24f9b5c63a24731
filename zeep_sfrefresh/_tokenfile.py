"""What a token file remembers besides the token, and the credential it makes again.

``zeep-sfrefresh login`` (and ``token``) write, next to the token, the settings a refresh
needs that are not secret: the grant, the client id, the token URL, the login URL, and for
the JWT bearer grant the username and the *path* of the key. So ``zeep-sfrefresh query
--token-file t.json`` needs no other flag and Python code needs one line,
``SalesforceTransport.from_token_file("t.json")``. A client secret, when the connected app
wants one, is never written: it comes from the caller (``client_secret=``), or from the file
named by ``client_secret_file`` in the settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal, get_args

from requests_oauthlib import OAuth2Session

from ._errors import TokenStoreError
from ._grants import ClientCredentials, Grant, JwtBearer
from ._stores import FileTokenStore

__all__ = ["GrantKind", "TokenFileSettings", "credential_from_file", "read_secret_file"]

GrantKind = Literal["refresh_token", "jwt", "client_credentials"]
"""``refresh_token``: a person logged in (browser, device, Salesforce CLI); ``jwt`` and
``client_credentials``: the server-to-server grants, which mint a new token on expiry."""

_IMPORT_HINT = (
    "log in with `zeep-sfrefresh login --token-file {path}`, or bring a Salesforce CLI "
    "login over with `zeep-sfrefresh login --sfdx-auth-url-file FILE --token-file {path}`"
)


@dataclass(frozen=True)
class TokenFileSettings:
    """The non-secret settings of a token file."""

    grant: GrantKind
    """``refresh_token`` (a person logged in), ``jwt`` or ``client_credentials``."""
    client_id: str
    """The connected app's consumer key."""
    token_url: str
    """The OAuth token endpoint refreshes go to."""
    login_url: str
    """The login host or My Domain URL the token came from."""
    username: str | None = None
    """The JWT bearer grant's Salesforce user."""
    key_file: str | None = None
    """The JWT bearer grant's PEM private key: its path, never its content."""
    client_secret_file: str | None = None
    """A file holding the client secret, for apps that require one to refresh."""

    def to_json(self) -> dict[str, str]:
        """The settings as the token file stores them (unset ones left out)."""
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_json(cls, value: Mapping[str, str], *, path: object) -> TokenFileSettings:
        """Read stored settings; a TokenStoreError names the file and how to redo them."""
        known = {f.name for f in fields(cls)}
        try:
            settings = cls(**{k: v for k, v in value.items() if k in known})  # type: ignore[arg-type]
        except TypeError as exc:
            raise TokenStoreError(
                f"{path} has incomplete settings ({exc}); " + _IMPORT_HINT.format(path=path)
            ) from None
        if settings.grant not in get_args(GrantKind):
            raise TokenStoreError(f"{path} names an unknown grant {settings.grant!r}")
        return settings


def read_secret_file(path: str | os.PathLike[str]) -> str:
    """The client secret in ``path`` (surrounding whitespace dropped); TokenStoreError if it
    cannot be read (the message names the file, never its content)."""
    try:
        return Path(path).expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenStoreError(f"cannot read the client secret file {path}: {exc}") from None


def credential_from_file(
    store: FileTokenStore, *, client_secret: str | None = None
) -> OAuth2Session | Grant:
    """The credential a transport refreshes with, from the token file's settings.

    ``client_secret`` wins over the settings' ``client_secret_file``. The refresh_token grant
    needs the token already in the file; the JWT bearer grant reads its key file now.
    """
    stored_settings = store.load_settings()
    stored = store.load()
    if stored_settings is None:
        if stored is None:
            raise TokenStoreError(
                f"no token in {store.path}: " + _IMPORT_HINT.format(path=store.path)
            )
        raise TokenStoreError(
            f"{store.path} holds a token but not the settings to refresh it (grant, client "
            "id, token URL); " + _IMPORT_HINT.format(path=store.path)
        )
    settings = TokenFileSettings.from_json(stored_settings, path=store.path)
    if client_secret is None and settings.client_secret_file:
        client_secret = read_secret_file(settings.client_secret_file)
    if settings.grant == "jwt":
        if not settings.username or not settings.key_file:
            raise TokenStoreError(f"{store.path}: the jwt grant needs username and key_file")
        try:
            key = Path(settings.key_file).expanduser().read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenStoreError(f"cannot read the key file {settings.key_file}: {exc}") from None
        return JwtBearer(
            settings.client_id,
            settings.username,
            key,
            login_url=settings.login_url,
            token_url=settings.token_url,
        )
    if settings.grant == "client_credentials":
        if not client_secret:
            raise TokenStoreError(
                "the client-credentials grant needs the client secret (client_secret=, or "
                "client_secret_file in the settings)"
            )
        return ClientCredentials(
            settings.client_id,
            client_secret,
            domain_url=settings.login_url,
            token_url=settings.token_url,
        )
    if stored is None:
        raise TokenStoreError(f"no token in {store.path}: " + _IMPORT_HINT.format(path=store.path))
    refresh_kwargs = {"client_id": settings.client_id}
    if client_secret:
        refresh_kwargs["client_secret"] = client_secret
    return OAuth2Session(
        settings.client_id,
        token=dict(stored.token),
        auto_refresh_url=settings.token_url,
        auto_refresh_kwargs=refresh_kwargs,
    )
