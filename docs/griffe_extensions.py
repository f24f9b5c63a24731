"""Griffe extension for the API reference: docstrings read as they are meant to.

The package's docstrings are written for Sphinx-style readers: ``:class:`~a.b.C``` roles and
double-backquoted literals. The literals are Markdown code already; the roles become code
spans (``~`` keeps the last name only, as Sphinx does).

The stand-in org's knobs, identity and counters are class attributes of
:class:`~zeep_sfrefresh.testing.StandInOrg` that forward to a part of the org
(``rotation = _Forwarded[bool](_knobs)``); what each one means is documented once, on the
part (``Knobs``, ``OrgState``, ``Counters``). Here each forwarded attribute takes the
docstring and the type of the attribute it forwards to, so the reference shows them under
``StandInOrg`` without repeating a word in the code.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|mod|attr|exc|data|obj|const):`(~?)([^`]+)`")

_PARTS = {
    "_knobs": "zeep_sfrefresh.testing.knobs.Knobs",
    "_state": "zeep_sfrefresh.testing.state.OrgState",
}
_COUNTERS = "zeep_sfrefresh.testing.state.Counters"
_STAND_IN_ORG = "zeep_sfrefresh.testing.org.StandInOrg"


def _code_span(match: re.Match[str]) -> str:
    short, target = match.groups()
    if short:
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def readable(text: str) -> str:
    """``text`` with every Sphinx cross-reference role turned into a code span."""
    return _ROLE.sub(_code_span, text)


class ReadableDocstrings(griffe.Extension):
    """Turns Sphinx roles into code spans; documents the stand-in org's forwarded attributes."""

    def on_instance(self, *, node: Any, obj: griffe.Object, agent: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = readable(obj.docstring.value)

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name != "zeep_sfrefresh":
            return
        org = pkg[_STAND_IN_ORG.removeprefix("zeep_sfrefresh.")]
        for attribute in org.members.values():
            if not isinstance(attribute, griffe.Attribute) or attribute.docstring is not None:
                continue
            source = self._forwarded_to(attribute, pkg)
            if source is None or source.docstring is None:
                continue
            attribute.docstring = griffe.Docstring(
                source.docstring.value, lineno=source.docstring.lineno, parent=attribute
            )
            attribute.annotation = source.annotation
            attribute.value = None

    @staticmethod
    def _forwarded_to(attribute: griffe.Attribute, pkg: griffe.Module) -> griffe.Attribute | None:
        """The Knobs, OrgState or Counters attribute a forwarded StandInOrg attribute reads."""
        value = str(attribute.value or "")
        try:
            call = ast.parse(value, mode="eval").body
        except SyntaxError:
            return None
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Subscript):
            return None
        kind = ast.unparse(call.func.value)
        if kind == "_Forwarded" and call.args:
            part = _PARTS.get(ast.unparse(call.args[0]))
        elif kind == "_Counted":
            part = _COUNTERS
        else:
            return None
        if part is None:
            return None
        source = pkg[part.removeprefix("zeep_sfrefresh.")].members.get(attribute.name)
        return source if isinstance(source, griffe.Attribute) else None
