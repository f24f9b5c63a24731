"""The command line: ``zeep-sfrefresh demo | token | query`` (also ``python -m zeep_sfrefresh``).

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
from typing import Any, TextIO

import requests
from lxml import etree
from zeep.exceptions import Error as ZeepError

from .apis import PARTNER_WSDL
from .errors import SfRefreshError
from .grants import DEFAULT_LOGIN_URL, ClientCredentials, Grant, JwtBearer
from .stores import FileTokenStore
from .tokens import Token, fingerprint

__all__ = ["main"]

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
        return _query(args, out)
    except (CliError, SfRefreshError) as exc:
        print(f"zeep-sfrefresh {args.command}: {exc}", file=sys.stderr)
        return 1
    except (ZeepError, requests.RequestException) as exc:  # a SOAP fault, the network
        message = getattr(exc, "message", None) or str(exc)
        print(f"zeep-sfrefresh {args.command}: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1
