"""The command line: ``zeep-sfrefresh demo | token | query | stubs`` (``python -m zeep_sfrefresh``).

Secrets never travel on the command line, where ``ps`` and shell history would show them:
the client secret comes from ``SF_CLIENT_SECRET`` or ``--client-secret-file``, the private key
from ``--key PATH``. Tokens live in a :class:`FileTokenStore` (``--token-file``, mode 0600) and
are never printed; output names them by ``sha256:`` fingerprint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import requests
from lxml import etree
from zeep.exceptions import Error as ZeepError

from .apis import PARTNER_WSDL
from .errors import SfRefreshError
from .grants import DEFAULT_LOGIN_URL, ClientCredentials, Grant, JwtBearer
from .stores import FileTokenStore
from .tokens import Token, fingerprint

if TYPE_CHECKING:
    from .stubgen import Stub

__all__ = ["main", "stub_for", "write_stub"]

_BINDING = "{urn:partner.soap.sforce.com}SoapBinding"


class CliError(Exception):
    """A problem to report in one line, with exit code 1 (bad input, missing token...)."""


def _add_credentials(parser: argparse.ArgumentParser, *, required: bool) -> None:
    kind = parser.add_mutually_exclusive_group(required=required)
    kind.add_argument(
        "--jwt", action="store_true", help="JWT bearer grant (needs --username, --key)"
    )
    kind.add_argument(
        "--client-credentials",
        action="store_true",
        help="client-credentials grant (needs --domain-url and the client secret)",
    )
    parser.add_argument(
        "--client-id",
        default=os.environ.get("SF_CLIENT_ID"),
        help="connected app id (env SF_CLIENT_ID)",
    )
    parser.add_argument(
        "--client-secret-file",
        type=Path,
        help="file holding the client secret (else env SF_CLIENT_SECRET; never a flag value)",
    )
    parser.add_argument("--username", help="Salesforce username (JWT: the token's user)")
    parser.add_argument("--key", type=Path, help="PEM private key file (JWT)")
    parser.add_argument(
        "--login-url", default=DEFAULT_LOGIN_URL, help=f"login host (default {DEFAULT_LOGIN_URL})"
    )
    parser.add_argument("--domain-url", help="My Domain URL (client credentials)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zeep-sfrefresh",
        description="Keep Salesforce SOAP calls made with zeep alive when the session expires.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "demo", help="expire a session on a local stand-in org and watch one refresh and one resend"
    )
    token = commands.add_parser(
        "token", help="obtain a first token (JWT bearer or client credentials) into a token file"
    )
    token.add_argument("--token-file", type=Path, required=True, help="where to keep the token")
    _add_credentials(token, required=True)
    query = commands.add_parser("query", help="run a SOQL query with the token in a token file")
    query.add_argument("soql", help="the SOQL query")
    query.add_argument("--token-file", type=Path, required=True, help="the token file")
    query.add_argument("--wsdl", default=PARTNER_WSDL, help="a partner WSDL (default: bundled)")
    query.add_argument("--api-version", help="SOAP API version to call, e.g. 66.0")
    query.add_argument("--json", action="store_true", help="print the rows as JSON")
    _add_credentials(query, required=False)
    stubs = commands.add_parser(
        "stubs", help="write typed calls for a WSDL: NAME.pyi for type checkers, NAME.py to run"
    )
    stubs.add_argument("wsdl", help="the WSDL: a path or an http(s) URL")
    stubs.add_argument(
        "-o", "--output", type=Path, required=True, help="NAME.py to write (NAME.pyi beside it)"
    )
    return parser


def _client_secret(args: argparse.Namespace) -> str | None:
    if args.client_secret_file is not None:
        try:
            return str(args.client_secret_file.read_text(encoding="utf-8")).strip()
        except OSError as exc:
            raise CliError(f"cannot read {args.client_secret_file}: {exc.strerror}") from exc
    return os.environ.get("SF_CLIENT_SECRET")


def _require(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{name.replace('_', '-')}" for name in names if not getattr(args, name)]
    if missing:
        raise CliError(f"missing {', '.join(missing)}")


def _grant(args: argparse.Namespace) -> Grant | None:
    """The credential grant the flags describe, or None for the refresh-token grant."""
    if args.jwt:
        _require(args, "client_id", "username", "key")
        try:
            key = args.key.read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot read {args.key}: {exc.strerror}") from exc
        return JwtBearer(args.client_id, args.username, key, login_url=args.login_url)
    if args.client_credentials:
        _require(args, "client_id", "domain_url")
        secret = _client_secret(args)
        if not secret:
            raise CliError(
                "the client secret is missing (SF_CLIENT_SECRET or --client-secret-file)"
            )
        return ClientCredentials(args.client_id, secret, domain_url=args.domain_url)
    return None


def _describe(token: Token) -> str:
    return f"instance {token.instance_url}, access token {fingerprint(token.access_token)}"


def _token(args: argparse.Namespace, out: TextIO) -> int:
    grant = _grant(args)
    assert grant is not None  # the parser requires --jwt or --client-credentials
    store = FileTokenStore(args.token_file)
    token = grant.fetch(None)
    with store.lock():
        stored = store.load()
        store.save(token.data, replaces=None if stored is None else stored.version)
    print(f"saved a token to {store.path} ({_describe(token)})", file=out)
    return 0


def _transport(args: argparse.Namespace) -> Any:
    from requests_oauthlib import OAuth2Session

    from .transport import SalesforceTransport

    store = FileTokenStore(args.token_file)
    grant = _grant(args)
    if grant is not None:
        return SalesforceTransport(grant, store=store)
    stored = store.load()
    if stored is None:
        raise CliError(f"no token in {store.path}: run `zeep-sfrefresh token ...` first")
    client_id = args.client_id
    if not client_id:
        raise CliError("missing --client-id (or SF_CLIENT_ID), needed to refresh the session")
    refresh_kwargs = {"client_id": client_id}
    secret = _client_secret(args)
    if secret:
        refresh_kwargs["client_secret"] = secret
    oauth = OAuth2Session(
        client_id,
        token=dict(stored.token),
        auto_refresh_url=args.login_url.rstrip("/") + "/services/oauth2/token",
        auto_refresh_kwargs=refresh_kwargs,
    )
    return SalesforceTransport(oauth, store=store)


def _rows(answer: Any) -> tuple[list[dict[str, str | None]], Any]:
    result = answer.body.result
    rows = [
        {etree.QName(e).localname: e.text for e in (record["_value_1"] or [])}
        for record in (result.records or [])
    ]
    return rows, result


def _query(args: argparse.Namespace, out: TextIO) -> int:
    import zeep

    transport = _transport(args)
    client = zeep.Client(args.wsdl, transport=transport, settings=zeep.Settings(forbid_dtd=True))
    service = client.service
    if args.api_version:
        # Any host will do: the transport routes to the token's instance.
        service = client.create_service(
            _BINDING, f"https://login.salesforce.com/services/Soap/u/{args.api_version}"
        )
    rows, result = _rows(service.query(args.soql))
    while not result.done:
        more, result = _rows(service.queryMore(result.queryLocator))
        rows += more
    if args.json:
        json.dump(rows, out, indent=1)
        print(file=out)
    else:
        _print_table(rows, out)
        print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})", file=out)
    return 0


def _print_table(rows: list[dict[str, str | None]], out: TextIO) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [name for name in row if name not in columns]
    if not columns:
        return
    cells = [[row.get(name) or "" for name in columns] for row in rows]
    widths = [max(len(name), *(len(line[i]) for line in cells)) for i, name in enumerate(columns)]
    print(
        "  ".join(name.ljust(width) for name, width in zip(columns, widths, strict=True)), file=out
    )
    print("  ".join("-" * width for width in widths), file=out)
    for line in cells:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)), file=out
        )


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
    from zeep.exceptions import Error as ZeepError
    from zeep.wsdl import Document

    from . import __version__
    from .stubgen import generate

    transport = zeep.Transport()
    try:
        raw = transport.load(wsdl)
        document = Document(
            wsdl,
            transport,  # type: ignore[arg-type]  # zeep annotates the class, wants an instance
            settings=zeep.Settings(forbid_dtd=True),
        )
    except (OSError, ZeepError, requests.RequestException, ValueError) as exc:
        raise CliError(f"cannot read the WSDL {wsdl}: {exc}") from exc
    return generate(document, raw, source=wsdl, version=__version__)


def write_stub(stub: Stub, target: Path) -> list[Path]:
    """Write ``stub`` as ``target`` (``NAME.py``) and ``NAME.pyi``, or as the package
    ``NAME/`` when it comes in parts; remove the other layout's files if this command wrote
    them, and replace nothing it did not write. Returns the files written."""
    import shutil

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


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line; return the exit code. Errors are one line on stderr, code 1."""
    args = _parser().parse_args(argv)
    out = out or sys.stdout
    try:
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(out)
        if args.command == "token":
            return _token(args, out)
        if args.command == "stubs":
            return _stubs(args, out)
        return _query(args, out)
    except (CliError, SfRefreshError) as exc:
        print(f"zeep-sfrefresh {args.command}: {exc}", file=sys.stderr)
        return 1
    except (ZeepError, requests.RequestException) as exc:  # a SOAP fault, the network
        message = getattr(exc, "message", None) or str(exc)
        print(f"zeep-sfrefresh {args.command}: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1
