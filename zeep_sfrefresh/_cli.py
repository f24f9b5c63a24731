"""The command line: ``zeep-sfrefresh login | query | org | token | stubs | demo``.

Also ``python -m zeep_sfrefresh``. Secrets never travel on the command line, where ``ps``
and shell history would show them: the client secret comes from ``SF_CLIENT_SECRET`` or
``--client-secret-file``, a private key from ``--key PATH``, a Salesforce CLI auth URL from
``--sfdx-auth-url-file``. Tokens live in a :class:`FileTokenStore` (``--token-file``, mode
0600) with the settings a refresh needs, and are never printed: output names them by
``sha256:`` fingerprint.

Every error is one line on stderr and exit status 1 (``--debug`` shows the traceback);
usage errors exit 2, as argparse's do. Plain http is spoken only to an org on this machine
(the stand-in org), never to another host.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO
from urllib.parse import urlsplit

import requests
from zeep.exceptions import Error as ZeepError
from zeep.exceptions import Fault, TransportError

from ._apis import PARTNER_WSDL
from ._errors import SfRefreshError
from ._grants import DEFAULT_LOGIN_URL, ClientCredentials, Grant, JwtBearer
from ._redaction import redact
from ._routing import is_loopback
from ._stores import FileTokenStore
from ._tokenfile import TokenFileSettings, credential_from_file, read_secret_file
from ._tokens import Token, fingerprint

if TYPE_CHECKING:
    from requests_oauthlib import OAuth2Session

    from ._events import RefreshEvent
    from ._stubgen import Stub
    from ._transport import SalesforceTransport

__all__ = ["DEFAULT_ORG_PORT", "main", "stub_for", "write_stub"]

DEFAULT_ORG_PORT = 8765
"""Where ``zeep-sfrefresh org`` listens unless told otherwise (``--port``)."""

_BINDING = "{urn:partner.soap.sforce.com}SoapBinding"
_COUNT_QUERY = re.compile(r"^\s*select\s+count\(\s*\)\s+from\b", re.IGNORECASE)
_API_VERSION = re.compile(r"^\d{2,3}\.\d$")
_EXAMPLE_SOQL = "SELECT Id, Name, Account.Name FROM Contact LIMIT 5"
_MAX_ERROR = 400
"""Characters of an error line; longer texts (an HTML page, an envelope) are cut."""


class CliError(Exception):
    """A problem to report in one line, with exit code 1 (bad input, missing token...)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line instead of the usage block; exit status 2 as argparse's convention."""
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


# --- arguments -----------------------------------------------------------------------------


def _add_common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``--debug`` and ``-v``, accepted before or after the command."""
    default: Any = False if top else argparse.SUPPRESS
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="on error, show the traceback; log DEBUG (tokens masked) to stderr",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="say what happened to the session (refreshed / adopted, fingerprints, time)",
    )


def _add_client(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--client-id",
        default=os.environ.get("SF_CLIENT_ID"),
        help="connected app consumer key (env SF_CLIENT_ID)",
    )
    parser.add_argument(
        "--client-secret-file",
        type=Path,
        help="file holding the client secret, if the app needs one (else env SF_CLIENT_SECRET; "
        "never a flag value)",
    )
    parser.add_argument(
        "--login-url",
        help=f"login host or My Domain URL (default {DEFAULT_LOGIN_URL}; "
        "https://test.salesforce.com for a sandbox)",
    )


def _add_grant(parser: argparse.ArgumentParser, *, required: bool) -> None:
    kind = parser.add_mutually_exclusive_group(required=required)
    kind.add_argument(
        "--jwt", action="store_true", help="JWT bearer grant (needs --username, --key)"
    )
    kind.add_argument(
        "--client-credentials",
        action="store_true",
        help="client-credentials grant (needs --domain-url and the client secret)",
    )
    parser.add_argument("--username", help="Salesforce username (JWT: the token's user)")
    parser.add_argument("--key", type=Path, help="PEM private key file (JWT)")
    parser.add_argument("--domain-url", help="My Domain URL (client credentials)")


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog="zeep-sfrefresh",
        description="Keep Salesforce SOAP calls made with zeep alive when the session expires.",
    )
    parser.add_argument("--version", action="version", version=f"zeep-sfrefresh {__version__}")
    _add_common(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        _add_common(sub, top=False)
        return sub

    login = command("login", "log in (browser, device code or Salesforce CLI) to a token file")
    login.add_argument("--token-file", type=Path, required=True, help="where to keep the token")
    how = login.add_mutually_exclusive_group()
    how.add_argument(
        "--device", action="store_true", help="device flow: enter a code on another device"
    )
    how.add_argument(
        "--sfdx-auth-url-file",
        type=Path,
        help="import a Salesforce CLI auth URL (force://...) or `sf org display --verbose "
        "--json` output from this file",
    )
    _add_client(login)
    where = login.add_mutually_exclusive_group()
    where.add_argument("--port", type=int, help="loopback port of the redirect (default 1717)")
    where.add_argument(
        "--redirect-uri", help="the callback URL (default http://localhost:1717/OauthRedirect)"
    )
    login.add_argument(
        "--no-browser", action="store_true", help="print the login URL instead of opening it"
    )
    login.add_argument("--scope", default="api refresh_token", help="OAuth scopes to ask for")
    login.add_argument(
        "--wait", type=float, default=300.0, help="seconds to wait for the login (default 300)"
    )

    query = command("query", "run a SOQL query with the token in a token file")
    query.add_argument("soql", help="the SOQL query")
    query.add_argument("--token-file", type=Path, required=True, help="the token file")
    query.add_argument(
        "--format",
        choices=("table", "csv", "json", "jsonl"),
        default="table",
        help="output format (default table)",
    )
    query.add_argument("--json", action="store_true", help="the same as --format json")
    query.add_argument("--wsdl", default=PARTNER_WSDL, help="a partner WSDL (default: bundled)")
    query.add_argument("--api-version", help="SOAP API version to call, e.g. 66.0")
    _add_client(query)
    _add_grant(query, required=False)

    org = command("org", "run the stand-in org on this machine, to try the commands without one")
    org.add_argument(
        "--port",
        type=int,
        default=DEFAULT_ORG_PORT,
        help=f"port on 127.0.0.1 (default {DEFAULT_ORG_PORT}; 0 takes a free one)",
    )
    org.add_argument(
        "--expire-every",
        type=float,
        metavar="SECONDS",
        help="expire each session once it has lived this long, to watch refreshes",
    )
    org.add_argument(
        "--no-rotation", action="store_true", help="keep refresh tokens (rotation is on)"
    )
    org.add_argument(
        "--callback",
        action="append",
        default=[],
        metavar="URL",
        help="another callback URL to accept (http://localhost:1717/OauthRedirect always is)",
    )

    token = command("token", "get a token with the JWT bearer or client-credentials grant")
    token.add_argument("--token-file", type=Path, required=True, help="where to keep the token")
    _add_client(token)
    _add_grant(token, required=True)

    stubs = command("stubs", "write typed calls for a WSDL: NAME.pyi for type checkers")
    stubs.add_argument("wsdl", help="the WSDL: a path or an http(s) URL")
    stubs.add_argument(
        "-o", "--output", type=Path, required=True, help="NAME.py to write (NAME.pyi beside it)"
    )

    command("demo", "expire a session on a local stand-in org and watch one refresh")
    return parser


# --- shared pieces -------------------------------------------------------------------------


def _client_secret(args: argparse.Namespace) -> str | None:
    if args.client_secret_file is not None:
        try:
            return read_secret_file(args.client_secret_file)
        except SfRefreshError as exc:
            raise CliError(str(exc)) from exc
    return os.environ.get("SF_CLIENT_SECRET") or None


def _require(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{name.replace('_', '-')}" for name in names if not getattr(args, name)]
    if missing:
        raise CliError(f"missing {', '.join(missing)}")


def _allow_plain_http(args: argparse.Namespace, *urls: str | None) -> None:
    """Let oauthlib and the transport use http for an org on this machine, and only there.

    oauthlib refuses http token URLs unless ``OAUTHLIB_INSECURE_TRANSPORT`` is set; the
    stand-in org serves plain http on loopback. For a loopback org the variable is set for
    the rest of this command only (:func:`allow_insecure_transport`, left when the command
    ends), sparing the user doing it by hand; an http URL elsewhere is refused.
    """
    loopback = False
    for url in filter(None, urls):
        parts = urlsplit(url)
        if parts.scheme != "http":
            continue
        host = (parts.hostname or "").lower()
        if not is_loopback(host):
            raise CliError(f"{url} is plain http: only https, or http to this machine, is used")
        loopback = True
    if loopback and not args.plain_http_allowed:
        from .testing.insecure import allow_insecure_transport

        args.command_scope.enter_context(allow_insecure_transport())
        args.plain_http_allowed = True


def _describe(token: Token) -> str:
    return f"instance {token.instance_url}, access token {fingerprint(token.access_token)}"


def _save(store: FileTokenStore, token: Token, settings: TokenFileSettings) -> None:
    with store.lock():
        _save_locked(store, token, settings)


def _save_locked(store: FileTokenStore, token: Token, settings: TokenFileSettings) -> None:
    """Write ``token`` as the file's next version (a new login replaces what was there)."""
    stored = store.load()
    store.save(
        token.data, replaces=None if stored is None else stored.version, settings=settings.to_json()
    )


def _secret_file(args: argparse.Namespace) -> str | None:
    path: Path | None = args.client_secret_file
    return None if path is None else str(path.expanduser().resolve())


# --- login ---------------------------------------------------------------------------------


def _login(args: argparse.Namespace, out: TextIO) -> int:
    from . import _login as login

    store = FileTokenStore(args.token_file)
    if args.sfdx_auth_url_file is not None:
        return _import_sfdx(args, store, out)
    _require(args, "client_id")
    login_url = (args.login_url or DEFAULT_LOGIN_URL).rstrip("/")
    token_url = login.token_url(login_url)
    _allow_plain_http(args, login_url)
    secret = _client_secret(args)
    if args.device:
        device = login.start_device_login(token_url, client_id=args.client_id, scope=args.scope)
        print(
            f"Open {device.verification_uri} and enter the code {device.user_code}\n"
            f"(waiting up to {args.wait:g} s; Ctrl-C stops)",
            file=out,
            flush=True,
        )
        token = login.finish_device_login(
            token_url, device, client_id=args.client_id, client_secret=secret, wait=args.wait
        )
    else:
        redirect_uri = args.redirect_uri or login.DEFAULT_REDIRECT_URI
        if args.port is not None:
            redirect_uri = f"http://localhost:{args.port}/OauthRedirect"

        def show(url: str) -> None:
            opened = False
            if not args.no_browser:
                import webbrowser

                opened = webbrowser.open(url)
            verb = "Opened in your browser" if opened else "Open this URL in a browser"
            print(
                f"{verb} (waiting up to {args.wait:g} s; Ctrl-C stops):\n{url}",
                file=out,
                flush=True,
            )

        token = login.web_login(
            login_url,
            client_id=args.client_id,
            redirect_uri=redirect_uri,
            client_secret=secret,
            scope=args.scope,
            show=show,
            wait=args.wait,
        )
    _allow_plain_http(args, token.instance_url)
    settings = TokenFileSettings(
        "refresh_token",
        args.client_id,
        token_url,
        login_url,
        client_secret_file=_secret_file(args),
    )
    _save(store, token, settings)
    print(f"logged in: saved a token to {store.path} ({_describe(token)})", file=out)
    return 0


def _sfdx_auth_url(path: Path) -> str:
    """The auth URL in ``path``: the URL itself, or ``sf org display --verbose --json``."""
    import json

    try:
        text = path.expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError:
            raise CliError(f"{path} is neither an auth URL nor JSON") from None
        result = document.get("result", document) if isinstance(document, dict) else None
        url = result.get("sfdxAuthUrl") if isinstance(result, dict) else None
        if not isinstance(url, str):
            raise CliError(
                f"{path} holds JSON without sfdxAuthUrl: use `sf org display --verbose --json`"
            )
        return url
    return text


def _import_sfdx(args: argparse.Namespace, store: FileTokenStore, out: TextIO) -> int:
    from . import _login as login

    try:
        auth = login.parse_sfdx_auth_url(_sfdx_auth_url(args.sfdx_auth_url_file))
    except ValueError as exc:
        raise CliError(f"{args.sfdx_auth_url_file}: {exc}") from None
    _allow_plain_http(args, auth.instance_url)
    token_url = login.token_url(auth.instance_url)
    # Locked from before the token request until the answer is saved: a rotated refresh
    # token is never held only in memory while another process could write the file.
    with store.lock():
        token = login.redeem_refresh_token(
            token_url,
            client_id=auth.client_id,
            refresh_token=auth.refresh_token,
            instance_url=auth.instance_url,
            client_secret=auth.client_secret or _client_secret(args),
        )
        settings = TokenFileSettings(
            "refresh_token",
            auth.client_id,
            token_url,
            auth.instance_url,
            client_secret_file=_secret_file(args),
        )
        _save_locked(store, token, settings)
    print(f"imported the Salesforce CLI login to {store.path} ({_describe(token)})", file=out)
    return 0


# --- token (server-to-server grants) -------------------------------------------------------


def _grant(args: argparse.Namespace) -> tuple[Grant, TokenFileSettings] | None:
    """The credential grant the flags describe and its settings, or None for none."""
    if args.jwt:
        _require(args, "client_id", "username", "key")
        login_url = (args.login_url or DEFAULT_LOGIN_URL).rstrip("/")
        try:
            key = args.key.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read {args.key}: {exc}") from None
        try:
            grant = JwtBearer(args.client_id, args.username, key, login_url=login_url)
        except ValueError as exc:
            raise CliError(f"--key {args.key}: {exc}") from None
        settings = TokenFileSettings(
            "jwt",
            args.client_id,
            grant.token_url,
            login_url,
            username=args.username,
            key_file=str(args.key.expanduser().resolve()),
        )
        return grant, settings
    if args.client_credentials:
        _require(args, "client_id", "domain_url")
        secret = _client_secret(args)
        if not secret:
            raise CliError(
                "the client secret is missing (SF_CLIENT_SECRET or --client-secret-file)"
            )
        domain = args.domain_url.rstrip("/")
        credentials = ClientCredentials(args.client_id, secret, domain_url=domain)
        settings = TokenFileSettings(
            "client_credentials",
            args.client_id,
            credentials.token_url,
            domain,
            client_secret_file=_secret_file(args),
        )
        return credentials, settings
    return None


def _token(args: argparse.Namespace, out: TextIO) -> int:
    described = _grant(args)
    assert described is not None  # the parser requires --jwt or --client-credentials
    grant, settings = described
    _allow_plain_http(args, settings.token_url)
    store = FileTokenStore(args.token_file)
    token = grant.fetch(None)
    _save(store, token, settings)
    print(f"saved a token to {store.path} ({_describe(token)})", file=out)
    return 0


# --- query ---------------------------------------------------------------------------------


def _credential(args: argparse.Namespace, store: FileTokenStore) -> OAuth2Session | Grant:
    """What the transport refreshes with: the grant flags if given, else the token file's
    settings, else (a token file without settings) ``--client-id`` and ``--login-url``."""
    described = _grant(args)
    if described is not None:
        _allow_plain_http(args, described[1].token_url)
        return described[0]
    settings = store.load_settings()
    stored = store.load()
    if settings is None and stored is not None and args.client_id:
        from requests_oauthlib import OAuth2Session

        from . import _login as login

        token_url = login.token_url(args.login_url or DEFAULT_LOGIN_URL)
        _allow_plain_http(args, token_url, stored.token.get("instance_url"))
        refresh_kwargs = {"client_id": args.client_id}
        secret = _client_secret(args)
        if secret:
            refresh_kwargs["client_secret"] = secret
        return OAuth2Session(
            args.client_id,
            token=dict(stored.token),
            auto_refresh_url=token_url,
            auto_refresh_kwargs=refresh_kwargs,
        )
    if settings is not None:
        _allow_plain_http(
            args,
            settings.get("token_url"),
            settings.get("login_url"),
            None if stored is None else stored.token.get("instance_url"),
        )
    return credential_from_file(store, client_secret=_client_secret(args))


def _say_events(transport_box: list[SalesforceTransport]) -> Any:
    def listener(event: RefreshEvent) -> None:
        now = fingerprint(transport_box[0].token.access_token) if transport_box else "?"
        line = f"zeep-sfrefresh: {event.kind.replace('_', ' ')} in {event.duration:.2f} s"
        line += f" ({event.reason}); access token now {now}"
        if event.error:
            line += f": {event.error}"
        print(line, file=sys.stderr, flush=True)

    return listener


def _query(args: argparse.Namespace, out: TextIO) -> int:
    import zeep

    from . import _rows as render
    from ._records import fields, keep_field_names
    from ._transport import SalesforceTransport

    if args.api_version and not _API_VERSION.match(args.api_version):
        raise CliError(f"--api-version wants a version such as 66.0, not {args.api_version!r}")
    store = FileTokenStore(args.token_file)
    box: list[SalesforceTransport] = []
    listener = _say_events(box) if args.verbose else None
    transport = SalesforceTransport(_credential(args, store), store=store, listener=listener)
    box.append(transport)
    try:
        client = zeep.Client(
            args.wsdl, transport=transport, settings=zeep.Settings(forbid_dtd=True)
        )
    except (OSError, ZeepError, requests.RequestException, ValueError) as exc:
        raise CliError(f"cannot read the WSDL {args.wsdl}: {_one_line(exc)}") from exc
    if _BINDING not in client.wsdl.bindings:
        raise CliError(
            f"query needs a partner WSDL (urn:partner.soap.sforce.com); {args.wsdl} is not one "
            "(leave --wsdl out to use the bundled partner WSDL)"
        )
    keep_field_names(client)
    service = client.service
    if args.api_version:
        # Any host will do: the transport routes to the token's instance.
        service = client.create_service(
            _BINDING, f"https://login.salesforce.com/services/Soap/u/{args.api_version}"
        )
    started = time.monotonic()
    result = service.query(args.soql).body.result
    records = list(result.records or [])
    progress = sys.stderr.isatty() and not result.done
    while not result.done:
        if progress:
            line = render.progress_text(len(records), result.size)
            print(f"\r{line}", end="", file=sys.stderr, flush=True)
        result = service.queryMore(result.queryLocator).body.result
        records += result.records or []
    if progress:
        print("\r\x1b[K", end="", file=sys.stderr, flush=True)  # the line is done with
    fmt = "json" if args.json else args.format
    counted = bool(_COUNT_QUERY.match(args.soql))
    if counted and fmt == "table":
        print(render.summary(0, result.size), file=out)  # "count: N"
    else:
        table: list[dict[str, object]] = (
            [{"count": result.size}]
            if counted
            else [render.flatten(fields(record)) for record in records]
        )
        width = None
        if out.isatty() or "COLUMNS" in os.environ:
            width = shutil.get_terminal_size().columns
        render.render(fmt, table, out, width=width)
        if fmt == "table":
            print(render.summary(len(table), result.size), file=out)
    if args.verbose:
        print(
            f"zeep-sfrefresh: {len(records)} records in {time.monotonic() - started:.2f} s",
            file=sys.stderr,
        )
    return 0


# --- org -----------------------------------------------------------------------------------


def _org(args: argparse.Namespace, out: TextIO) -> int:
    from .testing import StandInOrg

    org = StandInOrg(rotation=not args.no_rotation, port=args.port)
    org.require_secret_for_refresh = False  # an app for a CLI, as Salesforce CLI's own
    org.callback_urls.update(args.callback)
    try:
        org.start()
    except OSError as exc:
        raise CliError(
            f"cannot listen on 127.0.0.1:{args.port} ({exc.strerror}); choose another --port"
        ) from None
    try:
        example = "standin.json"
        print(
            f"Stand-in org listening on {org.url} (Ctrl-C stops it)\n"
            f"  login URL:  {org.url}\n"
            f"  client id:  {org.client_id}\n"
            f"  user:       standin@example.com (consent is given automatically)\n"
            f"  rotation:   {'on' if org.rotation else 'off'}\n"
            "Try, in another terminal:\n"
            f"  zeep-sfrefresh login --login-url {org.url} --client-id {org.client_id} "
            f"--token-file {example}\n"
            f'  zeep-sfrefresh query -v --token-file {example} "{_EXAMPLE_SOQL}"',
            file=out,
            flush=True,
        )
        if args.expire_every:
            lifetime = f"Each session expires {args.expire_every:g} s after it is issued."
            print(lifetime, file=out, flush=True)
        stop = threading.Event()
        # By age, as a session timeout: a session issued just before a tick lives on (one
        # expired on a fixed tick could die between a refresh and its resend).
        lifetime_s = args.expire_every
        while not stop.wait(lifetime_s / 4 if lifetime_s else 3600):
            if lifetime_s and (expired := org.expire_sessions_older_than(lifetime_s)):
                noun = "session" if expired == 1 else "sessions"
                print(f"{time.strftime('%H:%M:%S')} expired {expired} {noun}", file=out, flush=True)
    except KeyboardInterrupt:
        print("stopped", file=out)
    finally:
        org.stop()
    return 0


# --- stubs ---------------------------------------------------------------------------------


_GENERATED_MARK = "generated by zeep-sfrefresh stubs"


def _ours(path: Path) -> bool:
    """Whether ``path`` is missing or a file this command wrote (safe to replace)."""
    try:
        with path.open(encoding="utf-8") as file:
            return _GENERATED_MARK in file.readline()
    except FileNotFoundError:
        return True
    except (OSError, UnicodeDecodeError):
        return False


def stub_for(wsdl: str) -> Stub:
    """Read ``wsdl`` (a path or an http(s) URL) with zeep and generate its typed calls."""
    import zeep
    from zeep.wsdl import Document

    from . import __version__
    from ._stubgen import generate

    transport = zeep.Transport()
    try:
        raw = transport.load(wsdl)
        document = Document(
            wsdl,
            transport,  # type: ignore[arg-type]  # zeep annotates the class, wants an instance
            settings=zeep.Settings(forbid_dtd=True),
        )
    except (OSError, ZeepError, requests.RequestException, ValueError) as exc:
        raise CliError(f"cannot read the WSDL {wsdl}: {_one_line(exc)}") from exc
    return generate(document, raw, source=wsdl, version=__version__)


def write_stub(stub: Stub, target: Path) -> list[Path]:
    """Write ``stub`` as ``target`` (``NAME.py``) and ``NAME.pyi``, or as the package
    ``NAME/`` when it comes in parts; remove the other layout's files if this command wrote
    them, and replace nothing it did not write. Returns the files written."""
    if target.suffix != ".py" or not target.stem.isidentifier():
        raise CliError(f"-o wants NAME.py with NAME a Python identifier, not {target}")
    package = target.with_suffix("")
    single = {target: stub.py, target.with_suffix(".pyi"): stub.stubs.get("", "")}
    if "" in stub.stubs:
        files, stale = single, [package]
    else:
        files = {package / "__init__.py": stub.py}
        files.update({package / f"{name}.pyi": text for name, text in stub.stubs.items()})
        stale = list(single)
    for path in [*files, *stale]:
        if path.is_dir():
            mine = all(_ours(child) for child in path.iterdir() if child.is_file())
        else:
            mine = _ours(path)
        if not mine:
            raise CliError(
                f"{path} exists and was not written by zeep-sfrefresh stubs; not replacing it"
            )
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(files)


def _stubs(args: argparse.Namespace, out: TextIO) -> int:
    stub = stub_for(args.wsdl)
    written = write_stub(stub, args.output)
    layout = "" if "" in stub.stubs else f" (split in {len(stub.stubs) - 1} parts for pyright)"
    print(
        f"wrote {', '.join(str(p) for p in written)}: {len(stub.operations)} operations, "
        f"{stub.classes} types{layout}",
        file=out,
    )
    return 0


# --- main ----------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    """The error as one line of at most ``_MAX_ERROR`` characters, token shapes masked."""
    if isinstance(exc, CliError | SfRefreshError):
        text = str(exc)
    elif isinstance(exc, Fault):
        text = f"SOAP fault {exc.code}: {exc.message}"
    elif isinstance(exc, TransportError):
        text = f"the server answered HTTP {exc.status_code} where a SOAP answer was expected"
    elif isinstance(exc, ZeepError):
        text = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    elif isinstance(exc, ImportError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(redact(text).split())
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 1] + "…"


def _setup_logging(args: argparse.Namespace) -> None:
    from ._redaction import install_log_redaction

    if args.debug:
        install_log_redaction()
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.DEBUG)


_COMMANDS = {
    "login": _login,
    "query": _query,
    "org": _org,
    "token": _token,
    "stubs": _stubs,
}


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line; return the exit code. Errors are one line on stderr, code 1."""
    args = _parser().parse_args(argv)
    out = out or sys.stdout
    _setup_logging(args)
    try:
        if args.command == "demo":
            from ._demo import run_demo

            return run_demo(out)
        with contextlib.ExitStack() as scope:  # what the command sets up, undone at its end
            args.command_scope = scope
            args.plain_http_allowed = False
            return _COMMANDS[args.command](args, out)
    except KeyboardInterrupt:
        print(f"zeep-sfrefresh {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"zeep-sfrefresh {args.command}: {_one_line(exc)}", file=sys.stderr)
        return 1
