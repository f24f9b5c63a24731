"""The README and the documentation site are real code: no page can drift from the package.

* Every ```python block of README.md and docs/**/*.md runs, page by page in one namespace,
  against a stand-in org: the names a page's examples assume (``oauth``, ``client_id``,
  ``token``...) are set up by :func:`world`, pointed at the stand-in org. A block preceded by
  ``<!-- docs: not run — reason -->`` is only compiled; ``<!-- docs: pytest -->`` marks a
  user's test suite (``# conftest.py`` ... ``# test_mine.py`` ...), run with pytest as such.
  Each page with python blocks must run at least one, so skipping cannot be silent.
* Every ``zeep-sfrefresh ...`` line of a ```sh block parses with the command's own parser.
* README.md stays short: the problem, the two commands CI runs, a quick start of at most 15
  lines and links into the site.
* The reference covers every public name with a docstring (the check the site build runs;
  it needs griffe, from the ``docs`` extra).
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import inspect
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from requests_oauthlib import OAuth2Session

from zeep_sfrefresh import ENTERPRISE_WSDL, FileTokenStore, TokenFileSettings
from zeep_sfrefresh._cli import _parser
from zeep_sfrefresh.testing import StandInOrg, allow_insecure_transport
from zeep_sfrefresh.testing.redis_server import REDIS_SERVER, RedisServer

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[ \t]*$")
_MARKER = re.compile(
    r"^\s*<!-- docs: (?P<kind>not run|pytest)(?:\s+[—-]+\s+(?P<reason>.+?))?\s*-->\s*$"
)


@dataclass
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int
    """1-based line of the opening fence."""
    lang: str
    code: str
    marker: str | None = None
    """``not run``, ``pytest`` or None (run)."""
    reason: str | None = None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page``, dedented, with the marker on the line before each."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None or not opening["lang"]:
            index += 1
            continue
        indent = opening["indent"]
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        body = [line.removeprefix(indent) for line in lines[index + 1 : end]]
        previous = next((line for line in reversed(lines[:index]) if line.strip()), "")
        marker = _MARKER.match(previous)
        found.append(
            Block(
                page=page,
                line=index + 1,
                lang=opening["lang"],
                code="\n".join(body) + "\n",
                marker=marker["kind"] if marker else None,
                reason=marker["reason"] if marker else None,
            )
        )
        index = end + 1
    return found


def python_blocks(page: Path) -> list[Block]:
    return [block for block in blocks(page) if block.lang == "python"]


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


RUN_PAGES = [page for page in PAGES if python_blocks(page)]


# --- the world the examples assume ----------------------------------------------------------


@dataclass
class World:
    org: StandInOrg
    namespace: dict[str, Any]


def _private_key(org: StandInOrg, path: Path) -> None:
    """``server.key``: a key whose certificate the org's connected app holds (JWT bearer)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    org.register_jwt_certificate(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _token_file(org: StandInOrg, path: Path) -> None:
    """What ``zeep-sfrefresh login`` leaves: a token and the settings a refresh needs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    store = FileTokenStore(path)
    settings = TokenFileSettings(
        grant="refresh_token", client_id=org.client_id, token_url=org.token_url, login_url=org.url
    )
    with store.lock():
        store.save(org.issue_token(), replaces=None, settings=settings.to_json())


def _enterprise_stub(workdir: Path) -> None:
    """``enterprise.wsdl`` and ``sf_enterprise.py``, as the typed-calls guide has them made."""
    shutil.copy(ENTERPRISE_WSDL, workdir / "enterprise.wsdl")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "zeep_sfrefresh",
            "stubs",
            "enterprise.wsdl",
            "-o",
            "sf_enterprise.py",
        ],
        cwd=workdir,
        check=True,
        capture_output=True,
        timeout=120,
    )


def _page_code(page: Path) -> str:
    return "".join(block.code for block in python_blocks(page) if block.marker is None)


@pytest.fixture
def world(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """A stand-in org and the names the examples of ``page`` assume, bound to it.

    The examples run in a fresh folder that is also ``$HOME`` (``~/.config/app/sf.json`` is a
    token file there). The REST guide's org serves https (simple-salesforce wants it), its
    certificate trusted through ``REQUESTS_CA_BUNDLE``; every other page's serves http. A
    page that uses ``redis_url`` gets a throwaway redis-server.
    """
    code = _page_code(page)
    tls = page.name == "rest.md"
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("HOME", str(workdir))
    monkeypatch.syspath_prepend(str(workdir))
    redis = _redis_server(tmp_path) if "redis_url" in code else None
    monkeypatch.setattr(logging.root, "handlers", list(logging.root.handlers))
    levels = {  # the levels the examples set, put back afterwards
        name: logging.getLogger(name).level for name in ("", "zeep_sfrefresh", "zeep.transports")
    }
    try:
        with allow_insecure_transport(), StandInOrg(tls=tls) as org:
            if tls:
                monkeypatch.setenv("REQUESTS_CA_BUNDLE", org.ca_file)
                monkeypatch.setenv("SSL_CERT_FILE", org.ca_file)
            org.jwt_audience = org.url
            org.add_user("integration@acme.com", "unused")
            org.add_user("user@acme.com", "hunter2" + "SECURITYTOKEN")
            _private_key(org, workdir / "server.key")
            _token_file(org, workdir / ".config" / "app" / "sf.json")
            if "sf_enterprise" in code:
                _enterprise_stub(workdir)
            saved: list[dict[str, Any]] = []
            token = org.issue_token()
            oauth = OAuth2Session(
                org.client_id,
                token=token,
                auto_refresh_url=org.token_url,
                auto_refresh_kwargs={
                    "client_id": org.client_id,
                    "client_secret": org.client_secret,
                },
                token_updater=saved.append,
            )
            namespace: dict[str, Any] = {
                "__name__": "__docs__",
                "client_id": org.client_id,
                "client_secret": org.client_secret,
                "token": token,
                "save_token": saved.append,
                "oauth": oauth,
                "login_url": org.url,
                "domain_url": org.url,
                "password": "hunter2",
                "security_token": "SECURITYTOKEN",
                "new_token": org.issue_token(),
                "redis_url": None if redis is None else redis.url,
            }
            try:
                yield World(org, namespace)
            finally:
                for item in list(namespace.values()):
                    _close(item)
            assert org.internal_errors == []
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if redis is not None:
            redis.stop()


def _redis_server(tmp_path: Path) -> RedisServer:
    """A throwaway redis-server; skipped without one, except in CI (as tests/conftest.py)."""
    if REDIS_SERVER is None:
        reason = "redis-server is not installed (Debian package redis-server)"
        if os.environ.get("ZEEP_SFREFRESH_REQUIRE_REDIS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return RedisServer(tmp_path).start()


def _close(item: Any) -> None:
    """Close what an example left open: requests sessions (the OAuth2Session included)."""
    if isinstance(item, requests.Session):
        item.close()


def _run(block: Block, namespace: dict[str, Any]) -> None:
    code = compile(block.code, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)  # noqa: S307 - the documentation's own examples
    if inspect.iscoroutine(result):
        asyncio.run(result)


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("page", RUN_PAGES, ids=_page_id)
def test_page_examples_run(page: Path, world: World) -> None:
    ran = 0
    for block in python_blocks(page):
        if block.marker is None:
            _run(block, world.namespace)
            ran += 1
    assert ran > 0, f"{_page_id(page)}: every python block is marked; run at least one"


@pytest.mark.parametrize("page", RUN_PAGES, ids=_page_id)
def test_marked_blocks_compile_and_say_why(page: Path) -> None:
    for block in python_blocks(page):
        if block.marker == "not run":
            assert block.reason, f"{block.where}: say why the block is not run"
        compile(block.code, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def _pytest_examples() -> list[Block]:
    return [block for page in PAGES for block in python_blocks(page) if block.marker == "pytest"]


@pytest.mark.parametrize("block", _pytest_examples(), ids=lambda block: block.where)
def test_test_suite_examples_pass(block: Block, tmp_path: Path) -> None:
    """A user's own test suite (``# conftest.py`` then ``# test_*.py`` parts), run by pytest."""
    parts = re.split(r"^# (\w+\.py)\n", block.code, flags=re.M)
    assert parts[0].strip() == "", f"{block.where}: start with a '# conftest.py' line"
    files = dict(zip(parts[1::2], parts[2::2], strict=True))
    assert any(name.startswith("test_") for name in files), files
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "OAUTHLIB_INSECURE_TRANSPORT"}
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert re.search(r"\b\d+ passed\b", completed.stdout), completed.stdout
    assert " failed" not in completed.stdout
    assert " skipped" not in completed.stdout


def test_there_is_a_user_test_suite_example() -> None:
    assert [block.page.name for block in _pytest_examples()] == ["testing.md"]


# --- command lines ------------------------------------------------------------------------


def _command_lines(block: Block) -> Iterator[list[str]]:
    """Each ``zeep-sfrefresh`` command of a shell block, continuation lines joined, as argv."""
    text = block.code.replace("\\\n", " ")
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if not words or words[0] != "zeep-sfrefresh":
            continue
        for stop in (">", "|", "&&", ";"):
            if stop in words:
                words = words[: words.index(stop)]
        yield words[1:]


def test_shell_examples_parse_with_the_command_parser(capsys: pytest.CaptureFixture[str]) -> None:
    parsed = 0
    for page in PAGES:
        for block in blocks(page):
            if block.lang not in ("sh", "bash", "console"):
                continue
            for argv in _command_lines(block):
                try:
                    _parser().parse_args(argv)
                except SystemExit as exc:
                    output = capsys.readouterr()
                    pytest.fail(
                        f"{block.where}: zeep-sfrefresh {shlex.join(argv)}: {exc} {output.err}"
                    )
                parsed += 1
    assert parsed >= 10


# --- the README -----------------------------------------------------------------------------


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def test_readme_keeps_the_two_ci_commands() -> None:
    lines = _readme().splitlines()
    for marker in ("<!-- ci:demo-command -->", "<!-- ci:test-command -->"):
        at = lines.index(marker)
        assert lines[at + 1] == "```sh", marker
        assert lines[at + 2].startswith("python3 -m venv .venv && "), marker
        assert lines[at + 3] == "```", marker


def test_readme_is_short_and_points_into_the_site() -> None:
    text = _readme()
    assert len(text.splitlines()) <= 120
    (quick_start,) = [block for block in python_blocks(README) if block.marker is None]
    assert len(quick_start.code.strip().splitlines()) <= 15
    links = re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", text)
    assert len(links) >= 8
    for link in links:
        assert (ROOT / link).is_file(), link
    assert "mkdocs serve" in text


# --- the reference ------------------------------------------------------------------------


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_reference_covers_every_public_name_with_a_docstring() -> None:
    pytest.importorskip(
        "griffe", reason="the docs extra is not installed: pip install -e '.[docs]'"
    )
    assert _hooks().reference_problems() == []


def test_cli_reference_is_the_parser_help() -> None:
    text = _hooks().cli_help_markdown()
    for command in ("login", "query", "org", "token", "stubs", "demo"):
        assert f"### `zeep-sfrefresh {command}`" in text
    assert "--token-file" in text
