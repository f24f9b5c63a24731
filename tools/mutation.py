#!/usr/bin/env python3
"""Mutation testing for the modules that decide where a token goes and when it is refreshed.

Usage (from the repository root, with the project's virtualenv)::

    .venv/bin/python tools/mutation.py _faults            # one module
    .venv/bin/python tools/mutation.py _routing _envelope # several
    .venv/bin/python tools/mutation.py all -j 2 --fail-under 90
    .venv/bin/python tools/mutation.py _stores:FileTokenStore --sample 150 --seed 1
    .venv/bin/python tools/mutation.py _faults --list     # the mutants, without running

Each mutant is a small edit of one module's source (see ``OPERATORS``): the repository is
copied into a temporary directory (one copy per worker), the edit is written there, and the
module's test subset (``SUBSETS``) runs against it with ``pytest -x``. A failing run kills
the mutant; a passing one means no test noticed the edit. The working tree is never written.

Speed: each worker forks its runs from a server process that has already imported pytest
and the third-party libraries the tests use (``--no-fork``: a fresh ``python -m pytest``
each time). With ``--by-coverage`` a traced run of the unmutated module tells which tests
run which lines, and a mutant first runs only the tests that run its lines.

Score per module: killed / (mutants - those listed in ``tools/mutation_equivalents.toml``,
the survivors judged equivalent or unreachable, each with its reason). See tools/README.md.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import json
import os
import queue
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info < (3, 11):  # the library runs on 3.10; this tool needs tomllib
    sys.exit("tools/mutation.py needs Python 3.11 or newer")

import tomllib

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "zeep_sfrefresh"
EQUIVALENTS_FILE = Path(__file__).with_name("mutation_equivalents.toml")

SUBSETS: dict[str, tuple[str, ...]] = {
    # module -> the test files that exercise it, most targeted (and fastest) first: with -x a
    # killed mutant usually stops in the first file. Chosen by which tests import or drive
    # the module; keep each subset to what runs in seconds. A missing file is skipped with a
    # warning.
    "_faults": ("tests/test_faults.py", "tests/test_properties.py"),
    "_envelope": ("tests/test_envelope.py", "tests/test_properties.py"),
    "_routing": ("tests/test_routing.py", "tests/test_secrets.py"),
    "_redaction": ("tests/test_redaction.py", "tests/test_secrets.py", "tests/test_envelope.py"),
    # The call policy.
    "_flow": (
        "tests/test_flow.py",
        "tests/test_flow_policy.py",
        "tests/test_callouts.py",
        "tests/test_transport.py",
    ),
    "_callouts": ("tests/test_flow_policy.py", "tests/test_callouts.py", "tests/test_rest.py"),
    # The refresh core and the stores.
    "_refresh": (
        "tests/test_refresher.py",
        "tests/test_tokens.py",
        "tests/test_shared_refresh.py",
        "tests/test_events_and_breaker.py",
    ),
    "_stores": (
        "tests/test_store_schedules.py",
        "tests/test_memory_store.py",
        "tests/test_file_store.py",
        "tests/test_shared_refresh.py",
    ),
    "_redis_store": (
        "tests/test_redis_store.py",
        "tests/test_store_peek.py",
        "tests/test_join.py",
        "tests/test_shared_refresh.py",
    ),
}

IGNORED_IN_COPY = shutil.ignore_patterns(
    ".git", ".venv", ".tox", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis",
    "__pycache__", "build", "dist", "*.egg-info", "mutants",
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Mutants


@dataclass(frozen=True)
class Mutant:
    """One edit of a module. Its identity (module, scope, original, mutated, occurrence) does
    not mention line numbers, so it survives edits elsewhere in the file."""

    module: str
    scope: str
    """Enclosing class/function (``Class.method``, ``function.inner``), ``<module>`` at top."""
    operator: str
    original: str
    """``ast.unparse`` of the node replaced: normalised source, formatting-independent."""
    mutated: str
    occurrence: int
    """1 for the first mutant with this (scope, original, mutated), 2 for the next..."""
    line: int
    end_line: int
    start: int
    """Byte offsets of the replaced node in the module's UTF-8 source."""
    end: int
    replacement: str
    note: str = ""
    """Shown instead of ``original -> mutated`` when set (an element left out of a list)."""

    @property
    def key(self) -> tuple[str, str, str, str, int]:
        return (self.module, self.scope, self.original, self.mutated, self.occurrence)

    def apply(self, source: bytes) -> bytes:
        return source[: self.start] + self.replacement.encode() + source[self.end :]

    def describe(self, width: int = 70) -> str:
        """``_faults.py:74 parse_fault [compare] len(body) > M  ->  len(body) >= M``."""
        occurrence = f" #{self.occurrence}" if self.occurrence > 1 else ""
        change = self.note or f"{_short(self.original, width)}  ->  {_short(self.mutated, width)}"
        return f"{self.module}.py:{self.line} {self.scope} [{self.operator}]{occurrence} {change}"


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


_BINOP_SWAPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
    ast.BitOr: ast.BitAnd,
    ast.BitAnd: ast.BitOr,
    ast.BitXor: ast.BitOr,
}

_COMPARE_SWAPS: dict[type[ast.cmpop], tuple[type[ast.cmpop], ...]] = {
    # The boundary moved, and the comparison negated.
    ast.Lt: (ast.LtE, ast.GtE),
    ast.LtE: (ast.Lt, ast.Gt),
    ast.Gt: (ast.GtE, ast.LtE),
    ast.GtE: (ast.Gt, ast.Lt),
    ast.Eq: (ast.NotEq,),
    ast.NotEq: (ast.Eq,),
    ast.Is: (ast.IsNot,),
    ast.IsNot: (ast.Is,),
    ast.In: (ast.NotIn,),
    ast.NotIn: (ast.In,),
}

OPERATORS = {
    "binop": "arithmetic/bitwise operator swapped (+ -, * /, // *, | &, ...), also in x op= y",
    "compare": "comparison boundary moved (< <=) or negated (< >=, == !=, is/is not, in/not in)",
    "boolop": "and <-> or",
    "not": "a `not` removed",
    "negate": "an if/while/ternary/comprehension condition negated",
    "constant": "number +1/-1/0, string or bytes emptied (empty: 'XX'), True <-> False",
    "element": "one element left out of a tuple/list/set of constants or of calls of one function",
    "delete": "a simple statement replaced by `pass` (expression, assignment, raise, ...)",
    "return": "`return <value>` replaced by `return None`",
}


def _is_docstring_like(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and (isinstance(node.value.value, str) or node.value.value is Ellipsis)
    )


_TYPING_VALUES = {"Literal", "Annotated"}


def _is_config_list(elements: list[ast.expr]) -> bool:
    """Two or more constants, or calls of one function (``(re.compile(...), ...)``)."""
    if len(elements) < 2:
        return False
    if all(isinstance(element, ast.Constant) for element in elements):
        return True
    functions = {ast.unparse(e.func) if isinstance(e, ast.Call) else None for e in elements}
    return len(functions) == 1 and None not in functions


def _name_of(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else ""


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _assigns_dunder_all(node: ast.stmt) -> bool:
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AnnAssign | ast.AugAssign):
        targets = [node.target]
    return any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets)


def _constant_variants(value: object) -> list[str | bytes | bool | int | float]:
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [v for v in (value + 1, value - 1, 0) if v != value]
    if isinstance(value, float):
        return [v for v in (value + 1.0, value - 1.0, 0.0) if v != value]
    if isinstance(value, str):
        return ["XX"] if value == "" else [""]
    if isinstance(value, bytes):
        return [b"XX"] if value == b"" else [b""]
    return []  # None, Ellipsis, complex: nothing useful to change


class _Collector:
    """Walks a module's AST and records (node, replacement node, operator, scope)."""

    def __init__(self) -> None:
        self.found: list[tuple[ast.AST, ast.AST, str, str, bool]] = []
        """(node, replacement, operator, scope, is_statement)"""
        self._scope: list[str] = []

    @property
    def scope(self) -> str:
        return ".".join(self._scope) or "<module>"

    def add(self, node: ast.AST, replacement: ast.AST, operator: str) -> None:
        self.found.append((node, replacement, operator, self.scope, isinstance(node, ast.stmt)))

    # Statements --------------------------------------------------------------------------

    def body(self, statements: Sequence[ast.stmt]) -> None:
        for statement in statements:
            self.statement(statement)

    def statement(self, node: ast.stmt) -> None:
        if _is_docstring_like(node) or _assigns_dunder_all(node):
            return
        if isinstance(node, ast.Import | ast.ImportFrom | ast.Global | ast.Nonlocal | ast.Pass):
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            self.definition(node)
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            return  # typing-only imports: never run
        if isinstance(node, ast.Assert):
            return  # invariants for type checkers; python -O drops them
        if isinstance(
            node,
            ast.Expr
            | ast.Assign
            | ast.AugAssign
            | ast.AnnAssign
            | ast.Raise
            | ast.Delete
            | ast.Break
            | ast.Continue,
        ) and not (isinstance(node, ast.AnnAssign) and node.value is None):
            self.add(node, ast.Pass(), "delete")
        if isinstance(node, ast.Return) and not (
            node.value is None
            or (isinstance(node.value, ast.Constant) and node.value.value is None)
        ):
            self.add(node, ast.Return(value=ast.Constant(None)), "return")
        if isinstance(node, ast.AugAssign) and type(node.op) in _BINOP_SWAPS:
            swapped = ast.AugAssign(node.target, _BINOP_SWAPS[type(node.op)](), node.value)
            self.add(node, swapped, "binop")
        if isinstance(node, ast.If | ast.While):
            self.negate(node.test)
        # Expressions and nested bodies, skipping annotations and assignment targets.
        for name, value in ast.iter_fields(node):
            if name not in ("annotation", "targets", "target"):
                self.visit_field(value)

    def definition(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self._scope.append(node.name)
        try:
            for decorator in node.decorator_list:
                self.expression(decorator)
            if isinstance(node, ast.ClassDef):
                for base in [*node.bases, *(k.value for k in node.keywords)]:
                    self.expression(base)
            else:
                arguments = node.args
                for default in [*arguments.defaults, *arguments.kw_defaults]:
                    if default is not None:
                        self.expression(default)
            self.body(node.body)
        finally:
            self._scope.pop()

    def visit_field(self, value: object) -> None:
        if isinstance(value, list):
            for item in value:
                self.visit_field(item)
        elif isinstance(value, ast.stmt):
            self.statement(value)
        elif isinstance(value, ast.expr):
            self.expression(value)
        elif isinstance(value, ast.excepthandler | ast.match_case | ast.withitem):
            for name, child in ast.iter_fields(value):
                if name not in ("type", "name", "optional_vars", "pattern"):
                    self.visit_field(child)
        elif isinstance(value, ast.comprehension):
            self.expression(value.iter)
            for condition in value.ifs:
                self.negate(condition)
                self.expression(condition)
        elif isinstance(value, ast.keyword):
            self.expression(value.value)
        elif isinstance(value, ast.arguments):
            pass  # lambda defaults: not worth it

    # Expressions -------------------------------------------------------------------------

    def negate(self, test: ast.expr) -> None:
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            return  # removing the `not` is the same mutant
        if isinstance(test, ast.Compare) and len(test.ops) == 1:
            return  # the compare operator already yields the negated comparison
        self.add(test, ast.UnaryOp(ast.Not(), test), "negate")

    def expression(self, node: ast.expr) -> None:
        if isinstance(node, ast.Subscript) and _name_of(node.value) in _TYPING_VALUES:
            return  # Literal["a", "b"], Annotated[...]: for type checkers
        if isinstance(node, ast.Call) and _name_of(node.func) == "cast" and node.args:
            for argument in node.args[1:]:
                self.expression(argument)  # cast("Type", value): the type is a checker's
            return
        if isinstance(node, ast.JoinedStr):
            # An f-string: emptied as a whole; its parts' positions are unreliable before 3.12.
            if node.values:
                self.add(node, ast.Constant(""), "constant")
            return
        if isinstance(node, ast.Constant):
            for value in _constant_variants(node.value):
                self.add(node, ast.Constant(value), "constant")
            return
        if isinstance(node, ast.Tuple | ast.List | ast.Set) and _is_config_list(node.elts):
            for index in range(len(node.elts)):
                kept = [e for i, e in enumerate(node.elts) if i != index]
                shorter: ast.expr = (
                    ast.Set(kept) if isinstance(node, ast.Set) else type(node)(kept, ast.Load())
                )
                self.add(node, shorter, "element")
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAPS:
            self.add(node, ast.BinOp(node.left, _BINOP_SWAPS[type(node.op)](), node.right), "binop")
        elif isinstance(node, ast.Compare):
            for index, op in enumerate(node.ops):
                for swap in _COMPARE_SWAPS.get(type(op), ()):
                    ops = [*node.ops[:index], swap(), *node.ops[index + 1 :]]
                    self.add(node, ast.Compare(node.left, ops, node.comparators), "compare")
        elif isinstance(node, ast.BoolOp):
            other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            self.add(node, ast.BoolOp(other, node.values), "boolop")
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            self.add(node, node.operand, "not")
        elif isinstance(node, ast.IfExp):
            self.negate(node.test)
        elif isinstance(node, ast.Lambda):
            self.expression(node.body)
            return
        for _name, value in ast.iter_fields(node):
            self.visit_field(value)


def _in_context(
    parents: dict[ast.AST, ast.AST], node: ast.AST, replacement: ast.AST, limit: int = 100
) -> tuple[str, str] | None:
    """(what holds ``node``, the same with ``node`` replaced) as source, if short enough.

    What holds it: its parent expression or keyword (``no_network=True``, ``64 * 1024``), or
    the subscript around a slice (``tag[:1]``)."""
    parent = parents.get(node)
    if not isinstance(parent, ast.expr | ast.keyword) or isinstance(parent, ast.JoinedStr):
        return None
    shown: ast.AST = parent
    if isinstance(parent, ast.Slice) and isinstance(parents.get(parent), ast.Subscript):
        shown = parents[parent]
    original = ast.unparse(shown)
    if len(original) > limit:
        return None
    for name, value in ast.iter_fields(parent):
        if value is node:
            setattr(parent, name, replacement)
            try:
                return original, ast.unparse(shown)
            finally:
                setattr(parent, name, node)
        if isinstance(value, list) and any(item is node for item in value):
            index = next(i for i, item in enumerate(value) if item is node)
            value[index] = replacement
            try:
                return original, ast.unparse(shown)
            finally:
                value[index] = node
    return None


def _element_note(node: ast.AST, shorter: ast.AST) -> str:
    kept = {id(element) for element in getattr(shorter, "elts", [])}
    left_out = [e for e in getattr(node, "elts", []) if id(e) not in kept]
    return f"{_short(ast.unparse(left_out[0]), 60)} left out of {_short(ast.unparse(node), 50)}"


def _line_offsets(source: bytes) -> list[int]:
    offsets = [0, 0]  # ast lines are 1-based
    for line in source.splitlines(keepends=True):
        offsets.append(offsets[-1] + len(line))
    return offsets


def generate_mutants(module: str, source: bytes) -> list[Mutant]:
    """Every mutant of ``source`` (the module ``module``), in source order, deduplicated."""
    tree = ast.parse(source)
    parents: dict[ast.AST, ast.AST] = {}
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            parents[child] = parent
    collector = _Collector()
    collector.body(tree.body)
    offsets = _line_offsets(source)
    original_dump = ast.dump(tree)
    seen_sources: set[bytes] = set()
    counts: Counter[tuple[str, str, str]] = Counter()
    mutants: list[Mutant] = []
    found = sorted(
        collector.found,
        key=lambda item: (getattr(item[0], "lineno", 0), getattr(item[0], "col_offset", 0)),
    )
    for node, replacement, operator, scope, is_statement in found:
        lineno, col = getattr(node, "lineno", None), getattr(node, "col_offset", None)
        end_lineno, end_col = (
            getattr(node, "end_lineno", None),
            getattr(node, "end_col_offset", None),
        )
        if lineno is None or col is None or end_lineno is None or end_col is None:
            continue
        start, end = offsets[lineno] + col, offsets[end_lineno] + end_col
        text = ast.unparse(replacement)
        spliced = text if is_statement else f"({text})"
        original = ast.unparse(node)
        if operator == "constant":
            # A bare "True -> False" says little; name it by what holds it ("no_network=True",
            # "64 * 1024"), unless that is long.
            context = _in_context(parents, node, replacement)
            if context is not None:
                original, text = context
        mutant_source = source[:start] + spliced.encode() + source[end:]
        if mutant_source in seen_sources:
            continue
        try:
            mutant_tree = ast.parse(mutant_source)
            compile(mutant_tree, f"{module}.py", "exec")
        except (SyntaxError, ValueError):
            continue  # e.g. `pass` where an expression statement was the only `else` arm...
        if ast.dump(mutant_tree) == original_dump:
            continue
        seen_sources.add(mutant_source)
        counts[(scope, original, text)] += 1
        mutants.append(
            Mutant(
                module=module,
                scope=scope,
                operator=operator,
                original=original,
                mutated=text,
                occurrence=counts[(scope, original, text)],
                line=lineno,
                end_line=end_lineno,
                start=start,
                end=end,
                replacement=spliced,
                note=_element_note(node, replacement) if operator == "element" else "",
            )
        )
    return mutants


# --------------------------------------------------------------------------------------------
# The equivalents list


@dataclass
class Equivalent:
    module: str
    scope: str
    original: str
    mutated: str
    occurrence: int
    reason: str
    matched: bool = False

    @property
    def key(self) -> tuple[str, str, str, str, int]:
        return (self.module, self.scope, self.original, self.mutated, self.occurrence)


def load_equivalents(path: Path) -> dict[tuple[str, str, str, str, int], Equivalent]:
    if not path.exists():
        return {}
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    entries: dict[tuple[str, str, str, str, int], Equivalent] = {}
    for number, raw in enumerate(data.get("equivalent", []), start=1):
        missing = {"module", "scope", "original", "mutated", "reason"} - set(raw)
        if missing:
            raise SystemExit(f"{path}: entry {number} lacks {', '.join(sorted(missing))}")
        if not str(raw["reason"]).strip():
            raise SystemExit(f"{path}: entry {number} has an empty reason")
        entry = Equivalent(
            module=str(raw["module"]),
            scope=str(raw["scope"]),
            original=str(raw["original"]),
            mutated=str(raw["mutated"]),
            occurrence=int(raw.get("occurrence", 1)),
            reason=str(raw["reason"]),
        )
        if entry.key in entries:
            raise SystemExit(f"{path}: entry {number} repeats an earlier one")
        entries[entry.key] = entry
    return entries


def _toml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def toml_entry(mutant: Mutant, source_line: str) -> str:
    """The equivalents-file entry for ``mutant``, to paste with a reason filled in."""
    lines = [
        f"[[equivalent]]  # {mutant.module}.py:{mutant.line}  {_short(source_line.strip(), 70)}",
        f"module = {_toml_string(mutant.module)}",
        f"scope = {_toml_string(mutant.scope)}",
        f"original = {_toml_string(mutant.original)}",
        f"mutated = {_toml_string(mutant.mutated)}",
    ]
    if mutant.occurrence > 1:
        lines.append(f"occurrence = {mutant.occurrence}")
    lines.append('reason = ""')
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Running


def _commit() -> str:
    """The checked-out commit, read from .git (no git command), for the record."""
    git = REPO / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:12]
        ref = head[5:]
        if (git / ref).exists():
            return (git / ref).read_text().strip()[:12]
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0][:12]
    except OSError:
        pass
    return "unknown"


@dataclass
class Workspace:
    """One worker's copy of the repository (with ``../shared`` beside it, for reference data)."""

    root: Path
    hypothesis_dir: Path

    @property
    def repo(self) -> Path:
        return self.root / "main"

    def module_path(self, module: str) -> Path:
        return self.repo / PACKAGE / f"{module}.py"


def make_workspaces(base: Path, count: int) -> list[Workspace]:
    workspaces = []
    for index in range(count):
        root = base / f"w{index}"
        root.mkdir()
        shutil.copytree(REPO, root / "main", symlinks=True, ignore=IGNORED_IN_COPY)
        shared = REPO.parent / "shared"
        if not shared.is_dir():  # a checkout elsewhere (--repo): this one's reference data
            shared = Path(__file__).resolve().parents[2] / "shared"
        if shared.is_dir():
            (root / "shared").symlink_to(shared, target_is_directory=True)
        workspaces.append(Workspace(root, root / "hypothesis"))
    return workspaces


@dataclass
class Outcome:
    status: str  # killed, survived, timeout
    seconds: float
    output: str = ""
    tests: int = 0
    """How many node ids ran (0: the whole subset)."""
    coverage: dict[str, list[int]] | None = None
    """Traced baseline only: test node id -> lines of the module it ran."""


@dataclass
class TestCommand:
    tests: tuple[str, ...]
    """Test files, or node ids (``tests/test_x.py::test_y[z]``)."""
    uses_hypothesis: bool

    def pytest_args(self) -> list[str]:
        args = ["-x", "-q", "-p", "no:cacheprovider", "--no-header", "--tb=line"]
        args += ["--hypothesis-seed=0"] if self.uses_hypothesis else ["-p", "no:hypothesispytest"]
        return [*args, *self.tests]


def _environment(workspace: Workspace) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(workspace.repo),
        "PYTHONHASHSEED": "0",
        "HYPOTHESIS_STORAGE_DIRECTORY": str(workspace.hypothesis_dir),
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _status(returncode: int) -> str:
    # Any failure counts: the unmutated module passed the same command (an ImportError
    # while loading conftest, pytest's "usage error" 4, is a mutant breaking the import).
    return "survived" if returncode == 0 else "killed"


class Runner:
    """Runs the test subset in one workspace: a fresh ``python -m pytest`` per run, or (the
    default) a fork of a server process that has already imported pytest and the
    third-party libraries the tests use, so a run costs the tests and not the imports."""

    def __init__(self, workspace: Workspace, python: str, fork: bool) -> None:
        self.workspace = workspace
        self.python = python
        self.fork = fork
        self._server: subprocess.Popen[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def run(
        self,
        command: TestCommand,
        timeout: float,
        *,
        write_bytecode: bool = False,
        trace: Path | None = None,
    ) -> Outcome:
        """Run ``command``; with ``trace`` (fork mode only), also record which lines of that
        file each test runs."""
        # No example database carried from one mutant to the next (its unicode cache stays).
        shutil.rmtree(self.workspace.hypothesis_dir / "examples", ignore_errors=True)
        if self.fork:
            return self._run_forked(command, timeout, write_bytecode=write_bytecode, trace=trace)
        env = _environment(self.workspace)
        if not write_bytecode:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        started = time.monotonic()
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [self.python, "-m", "pytest", *command.pytest_args()],
            cwd=self.workspace.repo,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._process = process
        try:
            output, _ = process.communicate(timeout=timeout)
            status = _status(process.returncode)
        except subprocess.TimeoutExpired:
            _kill_group(process.pid)
            output, _ = process.communicate()
            status = "timeout"
        _kill_group(process.pid)  # whatever the tests started and left behind
        self._process = None
        return Outcome(status, time.monotonic() - started, output.decode(errors="replace"))

    def _request(self, message: dict[str, object], timeout: float) -> dict[str, object]:
        if self._server is None:
            self._server = subprocess.Popen(  # noqa: S603 - our own interpreter and script
                [self.python, str(Path(__file__).resolve()), "--serve"],
                cwd=self.workspace.repo,
                env=_environment(self.workspace),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=(self.workspace.root / "server.log").open("ab"),
            )
        server = self._server
        assert server.stdin is not None
        assert server.stdout is not None
        server.stdin.write(json.dumps(message).encode() + b"\n")
        server.stdin.flush()
        ready, _, _ = select.select([server.stdout], [], [], timeout)
        line = server.stdout.readline() if ready else b""
        if not line:
            self.close()
            raise SystemExit(f"the fork server in {self.workspace.repo} stopped answering")
        answer: dict[str, object] = json.loads(line)
        return answer

    def _run_forked(
        self, command: TestCommand, timeout: float, *, write_bytecode: bool, trace: Path | None
    ) -> Outcome:
        output = self.workspace.root / "output.txt"
        modules = self.workspace.root / "modules.json"
        lines = self.workspace.root / "coverage.json"
        for stale in (output, modules, lines):
            stale.unlink(missing_ok=True)
        answer = self._request(
            {
                "args": command.pytest_args(),
                "timeout": timeout,
                "write_bytecode": write_bytecode,
                "output": str(output),
                "modules": str(modules) if write_bytecode else None,
                "trace": str(trace) if trace else None,
                "trace_out": str(lines),
            },
            timeout + 60,
        )
        text = output.read_text(errors="replace") if output.exists() else ""
        if write_bytecode and modules.exists():
            # The baseline run: import what it imported from outside the repository into the
            # server, so later forks start with it.
            self._request({"preload": json.loads(modules.read_text())}, 600)
        returncode = answer["returncode"]
        status = "timeout" if returncode is None else _status(int(str(returncode)))
        coverage = json.loads(lines.read_text()) if trace and lines.exists() else None
        return Outcome(status, float(str(answer["seconds"])), text, coverage=coverage)

    def close(self) -> None:
        """Stop the server (it kills the run it has going) or the test process."""
        process, self._process = self._process, None
        if process is not None:
            _kill_group(process.pid)
        if self._server is not None:
            server, self._server = self._server, None
            if server.stdin is not None:
                server.stdin.close()
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def serve() -> None:
    """The fork server (``--serve``): one JSON request per line on stdin, one answer per line.

    Run in a workspace with the workspace's environment. It imports nothing from the
    repository itself, so each forked run loads the (mutated) package from disk.
    """
    sys.path[0] = os.getcwd()  # as `python -m pytest` has it

    def stop(signum: int, frame: object) -> None:
        if _RUNNING:
            _kill_group(_RUNNING[0])
        os._exit(1)

    signal.signal(signal.SIGTERM, stop)
    for line in sys.stdin:
        request = json.loads(line)
        if "preload" in request:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for name in request["preload"]:
                    try:
                        __import__(name)
                    except Exception:  # noqa: BLE001, S112 - one that only imports in context
                        continue
            answer: dict[str, object] = {"preloaded": len(request["preload"])}
        else:
            answer = _serve_run(request)
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


_RUNNING: list[int] = []
"""The fork server's child running now (its process group)."""


def _serve_run(request: dict[str, object]) -> dict[str, object]:
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: a fresh session, output to a file, pytest, exit
        code = 3
        try:
            os.setsid()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            fd = os.open(str(request["output"]), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            sys.dont_write_bytecode = not request["write_bytecode"]
            import pytest

            tracer = _LineTracer(str(request["trace"])) if request["trace"] else None
            plugins = [tracer] if tracer else []
            if tracer:
                tracer.start()
            raw_args = request["args"]
            assert isinstance(raw_args, list)
            args = [str(arg) for arg in raw_args]
            code = int(pytest.main(args, plugins=plugins))
            if tracer:
                tracer.stop()
                Path(str(request["trace_out"])).write_text(json.dumps(tracer.result()))
            if request["modules"]:
                _dump_outside_modules(str(request["modules"]))
        except BaseException:  # noqa: BLE001 - whatever happens, the child must exit here
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _RUNNING[:] = [pid]
    timeout = float(str(request["timeout"]))
    returncode: int | None = None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            returncode = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() - started > timeout:
            _kill_group(pid)
            os.waitpid(pid, 0)
            break
        time.sleep(0.005)
    _kill_group(pid)  # whatever the tests started and left behind
    _RUNNING.clear()
    return {"returncode": returncode, "seconds": time.monotonic() - started}


class _LineTracer:
    """A pytest plugin recording, per test, the lines of one file it runs (in any thread
    started after it). Lines run outside a test (imports at collection) go under ""."""

    def __init__(self, filename: str) -> None:
        self.filenames = {filename, os.path.realpath(filename)}
        self.current = ""
        self.lines: dict[str, set[int]] = {}

    def start(self) -> None:
        sys.settrace(self._call)
        threading.settrace(self._call)

    def stop(self) -> None:
        sys.settrace(None)
        threading.settrace(None)

    def _call(self, frame: types.FrameType, event: str, arg: object) -> Any:
        return self._line if frame.f_code.co_filename in self.filenames else None

    def _line(self, frame: types.FrameType, event: str, arg: object) -> Any:
        if event == "line":
            self.lines.setdefault(self.current, set()).add(frame.f_lineno)
        return self._line

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.current = nodeid

    def pytest_runtest_logfinish(self) -> None:
        self.current = ""

    def result(self) -> dict[str, list[int]]:
        return {nodeid: sorted(lines) for nodeid, lines in self.lines.items()}


def _dump_outside_modules(path: str) -> None:
    """Names of the modules now loaded from outside the working directory (third-party and
    standard library), in import order."""
    here = os.getcwd() + os.sep
    names = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if name == "__main__" or not file or os.path.abspath(file).startswith(here):
            continue
        if name.split(".")[0] == PACKAGE:
            continue
        names.append(name)
    Path(path).write_text(json.dumps(names))


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _drop_bytecode(workspace: Workspace, module: str) -> None:
    for pyc in (workspace.repo / PACKAGE / "__pycache__").glob(f"{module}.*.pyc"):
        pyc.unlink()


@dataclass
class ModuleResult:
    module: str
    mutants: list[Mutant]
    outcomes: dict[Mutant, Outcome] = field(default_factory=dict)
    equivalent: set[Mutant] = field(default_factory=set)
    baseline: float = 0.0
    seconds: float = 0.0

    def count(self, *statuses: str, equivalent: bool | None = False) -> int:
        return sum(
            1
            for mutant, outcome in self.outcomes.items()
            if outcome.status in statuses
            and (equivalent is None or (mutant in self.equivalent) == equivalent)
        )

    @property
    def killed(self) -> int:
        return self.count("killed", "timeout")

    @property
    def judged(self) -> int:
        return len(self.outcomes) - len(self.equivalent & set(self.outcomes))

    @property
    def score(self) -> float:
        return 100.0 * self.killed / self.judged if self.judged else 100.0


def run_module(
    module: str,
    scope: str | None,
    runners: list[Runner],
    args: argparse.Namespace,
    equivalents: dict[tuple[str, str, str, str, int], Equivalent],
    report: Callable[[str], None],
) -> ModuleResult:
    source = (REPO / PACKAGE / f"{module}.py").read_bytes()
    mutants = select_mutants(generate_mutants(module, source), scope, args)
    result = ModuleResult(module, mutants)
    for mutant in mutants:
        entry = equivalents.get(mutant.key)
        if entry is not None:
            entry.matched = True
            result.equivalent.add(mutant)
    copy = runners[0].workspace.repo
    wanted = tuple(args.tests) if args.tests else SUBSETS[module]
    tests = tuple(test for test in wanted if (copy / test.partition("::")[0]).is_file())
    for test in sorted(set(wanted) - set(tests)):
        report(f"{module}: warning: no test file {test}; running without it")
    if not tests:
        raise SystemExit(f"{module}: none of its test files exist: {' '.join(wanted)}")
    uses_hypothesis = any(
        "hypothesis" in (copy / test.partition("::")[0]).read_text(encoding="utf-8")
        for test in tests
    )
    command = TestCommand(tests, uses_hypothesis)
    started = time.monotonic()

    # Baseline: the unmutated module must pass in every copy (this also compiles the
    # bytecode the mutant runs reuse); its time sets the per-mutant timeout.
    baselines: list[Outcome] = []
    threads = []
    for runner in runners:
        runner.workspace.module_path(module).write_bytes(source)

        def baseline(runner: Runner = runner) -> None:
            try:
                baselines.append(runner.run(command, 600, write_bytecode=True))
            except BaseException as exc:  # noqa: BLE001 - reported below, in the main thread
                baselines.append(Outcome("error", 0.0, repr(exc)))

        threads.append(threading.Thread(target=baseline))
        threads[-1].start()
    for thread in threads:
        thread.join()
    for outcome in baselines:
        if outcome.status != "survived":
            raise SystemExit(
                f"{module}: the tests fail without any mutant ({outcome.status}):\n"
                f"pytest {' '.join(command.pytest_args())}\n{outcome.output[-3000:]}"
            )
    result.baseline = max(outcome.seconds for outcome in baselines)
    timeout = args.timeout or max(10.0, 4 * result.baseline + 5)
    report(
        f"{module}: {len(mutants)} mutants ({len(result.equivalent)} listed equivalent), "
        f"tests: {' '.join(tests)}; baseline {result.baseline:.1f} s, timeout {timeout:.0f} s"
    )
    coverage: dict[str, set[int]] | None = None
    if args.coverage and args.fork:
        # Which tests run each line: a mutant then runs only the tests that run its lines.
        traced = runners[0].run(command, 600, trace=runners[0].workspace.module_path(module))
        if traced.status == "survived" and traced.coverage is not None:
            coverage = {k: set(v) for k, v in traced.coverage.items() if k}
        else:
            report(f"{module}: warning: the traced run failed; every mutant runs the whole subset")
    for runner in runners:
        _drop_bytecode(runner.workspace, module)

    def command_for(mutant: Mutant) -> TestCommand:
        if coverage is None:
            return command
        span = set(range(mutant.line, mutant.end_line + 1))
        covering = tuple(nodeid for nodeid, lines in coverage.items() if lines & span)
        # No test runs it in-process (import-time code, or code only a subprocess runs):
        # the whole subset.
        return dataclasses.replace(command, tests=covering) if covering else command

    pending: queue.Queue[Mutant] = queue.Queue()
    for mutant in mutants:
        pending.put(mutant)
    lock = threading.Lock()
    symbols = {"killed": ".", "timeout": "T", "survived": "S"}

    failures: list[str] = []

    def work(runner: Runner) -> None:
        path = runner.workspace.module_path(module)
        try:
            while not failures:
                try:
                    mutant = pending.get_nowait()
                except queue.Empty:
                    return
                path.write_bytes(mutant.apply(source))
                selected = command_for(mutant)
                outcome = runner.run(selected, timeout)
                if selected is not command:
                    outcome.tests = len(selected.tests)
                    if outcome.status == "survived" and not args.trust_coverage:
                        # Code run once per process (a cache, a lazy import) counts only for
                        # the first test that ran it: the survivor gets the whole subset.
                        outcome = runner.run(command, timeout)
                with lock:
                    result.outcomes[mutant] = outcome
                    if args.progress:
                        sys.stderr.write(symbols[outcome.status])
                        sys.stderr.flush()
        except BaseException as exc:  # noqa: BLE001 - a worker stopped: the run is void
            failures.append(f"{module}: a worker stopped: {exc!r}")
        finally:
            path.write_bytes(source)

    workers = [threading.Thread(target=work, args=(runner,), daemon=True) for runner in runners]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if args.progress and mutants:
        sys.stderr.write("\n")
    if failures:
        raise SystemExit(failures[0])
    result.seconds = time.monotonic() - started
    return result


def select_mutants(
    mutants: list[Mutant], scope: str | None, args: argparse.Namespace
) -> list[Mutant]:
    if scope:
        mutants = [m for m in mutants if m.scope == scope or m.scope.startswith(scope + ".")]
    if args.operator:
        mutants = [m for m in mutants if m.operator in args.operator]
    if args.match:
        pattern = re.compile(args.match)
        mutants = [m for m in mutants if pattern.search(m.describe(width=10_000))]
    if args.sample and args.sample < len(mutants):
        chosen = set(
            random.Random(args.seed).sample(  # noqa: S311 - reproducible choice
                range(len(mutants)), args.sample
            )
        )
        mutants = [m for index, m in enumerate(mutants) if index in chosen]
    return mutants


# --------------------------------------------------------------------------------------------
# The command


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Operators:\n"
        + "\n".join(f"  {name:9} {text}" for name, text in OPERATORS.items())
        + "\n\nModules and their test subsets:\n"
        + "\n".join(f"  {name:11} {' '.join(tests)}" for name, tests in SUBSETS.items()),
    )
    parser.add_argument(
        "modules",
        nargs="+",
        metavar="MODULE[:SCOPE]",
        help="a module of SUBSETS (e.g. _faults), optionally :Class or :function; or 'all'",
    )
    parser.add_argument("-j", "--jobs", type=int, default=2, help="parallel workers (default 2)")
    parser.add_argument(
        "--fail-under", type=float, default=0.0, help="exit 1 when a module scores below this %%"
    )
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument(
        "--sample", type=int, help="run N mutants per module, chosen by --seed (reproducible)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for --sample (default 0)")
    parser.add_argument("--operator", action="append", choices=sorted(OPERATORS))
    parser.add_argument("--match", help="only mutants whose one-line description matches REGEX")
    parser.add_argument("--tests", nargs="+", help="run these test files instead of the subset")
    parser.add_argument("--timeout", type=float, help="seconds per mutant (default from baseline)")
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter for pytest (default: this one)"
    )
    parser.add_argument(
        "--toml", action="store_true", help="print survivors as equivalents-file entries"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also list killed mutants and equivalents"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    parser.add_argument(
        "--repo", help="mutate and test this checkout instead of the one holding the tool"
    )
    parser.add_argument(
        "--by-coverage",
        dest="coverage",
        action="store_true",
        help="run each mutant first against the tests that run its lines (a traced run tells), "
        "then, if it survives, the whole subset; pays off when killing tests sit deep in a "
        "long subset",
    )
    parser.add_argument(
        "--trust-coverage",
        action="store_true",
        help="with --by-coverage: no whole-subset run for a survivor of the selected tests "
        "(faster, may under-count kills)",
    )
    parser.add_argument(
        "--no-fork",
        dest="fork",
        action="store_false",
        help="a fresh `python -m pytest` per mutant instead of forks of a preloaded server",
    )
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress characters"
    )
    args = parser.parse_args(argv)
    targets: list[tuple[str, str | None]] = []
    for name in args.modules:
        if name == "all":
            targets += [(module, None) for module in SUBSETS]
            continue
        module, _, scope = name.partition(":")
        module = module.removeprefix(f"{PACKAGE}.").removesuffix(".py")
        if not module.startswith("_") and f"_{module}" in SUBSETS:
            module = f"_{module}"
        if module not in SUBSETS and not args.tests:
            parser.error(f"unknown module {name!r} (known: {', '.join(SUBSETS)}; or give --tests)")
        targets.append((module, scope or None))
    args.targets = targets
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    return args


def _source_line(module: str, line: int) -> str:
    lines = (REPO / PACKAGE / f"{module}.py").read_text(encoding="utf-8").splitlines()
    return lines[line - 1] if 0 < line <= len(lines) else ""


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and sys.argv[1:] == ["--serve"]:
        serve()
        return 0
    args = parse_args(argv)
    if args.repo:
        global REPO
        REPO = Path(args.repo).resolve()
    equivalents = load_equivalents(EQUIVALENTS_FILE)

    if args.list:
        for module, scope in args.targets:
            source = (REPO / PACKAGE / f"{module}.py").read_bytes()
            mutants = select_mutants(generate_mutants(module, source), scope, args)
            for mutant in mutants:
                if args.toml:
                    if mutant.key not in equivalents:
                        print(toml_entry(mutant, _source_line(module, mutant.line)) + "\n")
                    continue
                mark = "E " if mutant.key in equivalents else "  "
                print(mark + mutant.describe())
            print(f"{module}: {len(mutants)} mutants", file=sys.stderr)
        return 0

    os.nice(10)  # the workers inherit it: other work on the machine comes first
    print(f"mutation run on commit {_commit()} (working tree as is), -j {args.jobs}")
    results: list[ModuleResult] = []
    base = Path(tempfile.mkdtemp(prefix="zeep-sfrefresh-mutation-"))
    runners: list[Runner] = []
    # A SIGTERM (kill, a CI timeout) ends the run through the cleanup below, as Ctrl-C does:
    # without it the fork servers would outlive the run, still testing their mutants.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        runners = [
            Runner(workspace, args.python, args.fork)
            for workspace in make_workspaces(base, args.jobs)
        ]
        for module, scope in args.targets:
            result = run_module(module, scope, runners, args, equivalents, print)
            results.append(result)
            print_module(result, equivalents, args)
            sys.stdout.flush()
    finally:
        for runner in runners:
            runner.close()
        if args.keep:
            print(f"copies kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)

    print()
    print(f"{'module':12} {'score':>7} {'killed':>7} {'judged':>7} {'equiv':>6} {'time':>7}")
    failed = False
    for result in results:
        listed = len(result.equivalent & set(result.outcomes))
        print(
            f"{result.module:12} {result.score:6.1f}% {result.killed:7} {result.judged:7} "
            f"{listed:6} {result.seconds:6.0f}s"
        )
        failed = failed or result.score < args.fail_under
    whole_modules = {module for module, scope in args.targets if scope is None}
    if not (args.sample or args.match or args.operator):
        stale = [e for e in equivalents.values() if e.module in whole_modules and not e.matched]
        for entry in stale:
            print(
                f"stale equivalent (no such mutant any more): {entry.module} {entry.scope} "
                f"{entry.original!r} -> {entry.mutated!r} #{entry.occurrence}"
            )
    if failed:
        print(f"FAIL: a module scored under {args.fail_under:g}%")
    return 1 if failed else 0


def print_module(
    result: ModuleResult,
    equivalents: dict[tuple[str, str, str, str, int], Equivalent],
    args: argparse.Namespace,
) -> None:
    ordered = sorted(result.outcomes.items(), key=lambda item: (item[0].line, item[0].start))
    for mutant, outcome in ordered:
        listed = mutant in result.equivalent
        if outcome.status == "survived" and not listed:
            print(f"  survived   {mutant.describe()}")
        elif listed and outcome.status != "survived":
            print(f"  KILLED BUT LISTED EQUIVALENT (remove it): {mutant.describe()}")
        elif args.verbose:
            label = "equivalent" if listed else outcome.status
            reason = f"  ({equivalents[mutant.key].reason})" if listed else ""
            print(f"  {label:10} {mutant.describe()}{reason}")
    if args.toml:
        for mutant, outcome in ordered:
            if outcome.status == "survived" and mutant not in result.equivalent:
                print()
                print(toml_entry(mutant, _source_line(mutant.module, mutant.line)))
    per_mutant = result.seconds / len(result.outcomes) if result.outcomes else 0.0
    whole = sum(1 for outcome in result.outcomes.values() if not outcome.tests)
    selection = (
        f"; {whole} ran the whole subset, the others only tests running their lines"
        if args.coverage
        else ""
    )
    print(
        f"{result.module}: score {result.score:.1f}% = {result.killed} killed / {result.judged} "
        f"({len(result.outcomes)} mutants - {len(result.equivalent)} listed equivalent); "
        f"{result.seconds:.0f} s ({per_mutant:.2f} s per mutant, -j {args.jobs}{selection})"
    )


if __name__ == "__main__":
    sys.exit(main())
