"""MkDocs hooks: the reference pages cannot drift from the code.

* The command line page is written from the argparse parser the ``zeep-sfrefresh`` command
  runs: ``<!-- cli-help -->`` is replaced by the ``--help`` of the command and of each
  subcommand.
* Every public name (``zeep_sfrefresh.__all__`` and the ``__all__`` of the public modules in
  :data:`PUBLIC_MODULES`) must appear in a reference page as a ``::: identifier`` by its public
  path, and every object the reference shows, with each public member it shows, must have a
  docstring. Each miss is logged as a warning, which ``mkdocs build --strict`` turns into a
  failed build. ``tests/test_docs.py`` runs the same check.

Only the standard library is imported at module level, so the test can load this file
without MkDocs; the check itself needs griffe (the ``docs`` extra).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"
EXTENSION = f"{DOCS / 'griffe_extensions.py'}:ReadableDocstrings"

PUBLIC_MODULES = (
    "zeep_sfrefresh",
    "zeep_sfrefresh.typed",
    "zeep_sfrefresh.testing",
    "zeep_sfrefresh.testing.pytest_plugin",
    "zeep_sfrefresh.testing.fleet",
    "zeep_sfrefresh.testing.redis_server",
)
"""Modules whose ``__all__`` is the public API the reference must cover, name by name."""

CLI_MARKER = "<!-- cli-help -->"
HELP_WIDTH = 96

log = logging.getLogger("mkdocs.hooks.reference")

_DIRECTIVE = re.compile(
    r"^::: +(?P<identifier>[\w.]+)[ \t]*\n(?P<options>(?:[ \t]+\S.*\n?)*)", re.M
)


# --- MkDocs events ----------------------------------------------------------------------------


def on_pre_build(config: Any) -> None:
    """Check the reference before anything is rendered: one warning per problem."""
    for problem in reference_problems():
        log.warning(problem)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Put the command line's help where the CLI page asks for it."""
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_help_markdown())
    return markdown


# --- the command line page ------------------------------------------------------------------


def cli_help_markdown() -> str:
    """``zeep-sfrefresh --help`` and each subcommand's, as Markdown sections."""
    from zeep_sfrefresh._cli import _parser

    parser = _parser()
    sections = [_help_section("zeep-sfrefresh", parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                sections.append(_help_section(f"zeep-sfrefresh {name}", sub))
    return "\n".join(sections)


def _help_section(title: str, parser: argparse.ArgumentParser) -> str:
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(HELP_WIDTH)  # argparse wraps to the terminal's width
    try:
        text = parser.format_help()
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    return f"### `{title}`\n\n```text\n{text.rstrip()}\n```\n"


# --- the reference check --------------------------------------------------------------------


@dataclass
class Directive:
    """One ``::: identifier`` of a reference page and its ``members`` option."""

    page: str
    identifier: str
    members: list[str] | bool | None = None
    options: dict[str, Any] = field(default_factory=dict)


def directives(reference: Path = REFERENCE) -> list[Directive]:
    """Every ``:::`` directive of the reference pages, in page order."""
    yaml: Any = importlib.import_module("yaml")  # PyYAML, which MkDocs requires
    found = []
    for page in sorted(reference.glob("*.md")):
        for match in _DIRECTIVE.finditer(page.read_text(encoding="utf-8")):
            block = yaml.safe_load(match["options"]) if match["options"].strip() else None
            options = (block or {}).get("options") or {}
            found.append(
                Directive(
                    page=page.relative_to(DOCS).as_posix(),
                    identifier=match["identifier"],
                    members=options.get("members"),
                    options=options,
                )
            )
    return found


def public_names() -> list[str]:
    """Every public name by its public path: the ``__all__`` of each public module."""
    names = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        names += [f"{module_name}.{name}" for name in module.__all__]
    return names


def reference_problems(reference: Path = REFERENCE) -> list[str]:
    """What is wrong with the reference: a public name missing, a private path, no docstring."""
    import griffe

    found = directives(reference)
    problems = []
    shown = {directive.identifier for directive in found}
    for name in public_names():
        if name not in shown:
            problems.append(f"public name {name} is not in any page of docs/reference/")
    package = griffe.load(
        "zeep_sfrefresh",
        search_paths=[str(ROOT)],
        extensions=griffe.load_extensions(EXTENSION),
        resolve_aliases=True,
        resolve_external=False,
    )
    for directive in found:
        where = f"docs/{directive.page}: ::: {directive.identifier}"
        if any(
            part.startswith("_") and not part.startswith("__")
            for part in directive.identifier.split(".")
        ):
            problems.append(f"{where} names a private module; use the public import path")
        try:
            obj = package[directive.identifier.removeprefix("zeep_sfrefresh.")]
        except KeyError:
            problems.append(f"{where}: no such object")
            continue
        for path in _undocumented(obj, directive.members):
            problems.append(f"{where}: {path} has no docstring")
    return problems


def _undocumented(obj: Any, members: list[str] | bool | None) -> Iterator[str]:
    """Paths of ``obj`` and of the members the reference shows of it that have no docstring.

    The members are those mkdocstrings renders with this site's options: the ``members``
    list when a page gives one, none for ``members: false``, else every member defined on
    the object or inherited from a base class of this package (``inherited_members: true``;
    external bases such as ``zeep.Transport`` are not loaded), not imported, whose name has
    no leading underscore.
    """
    if obj.is_alias:
        obj = obj.final_target
    if not (obj.docstring and obj.docstring.value.strip()):
        yield obj.path
    if members is False or not (obj.is_class or obj.is_module):
        return
    for name, member in obj.all_members.items():  # inherited ones too, as the site shows them
        if isinstance(members, list):
            if name not in members:
                continue
        elif name.startswith("_") or (member.is_alias and not member.inherited):
            continue
        yield from _undocumented(member, None)
