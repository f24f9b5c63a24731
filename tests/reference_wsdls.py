"""The APIs' WSDLs as test parameters: the compact ones shipped with the package and the real ones.

Salesforce's real WSDLs (``../shared/reference/wsdl``) take one to three seconds each for zeep to
parse, so :func:`document` parses each one once per test session; zeep clients accept the parsed
document in place of a path, and building a client from it is then instant. Parameters for the
real WSDLs carry :data:`reference.requires_reference`, so they are skipped (with the reason)
when the reference folder is absent.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, cast

import pytest
import zeep
from reference import REFERENCE_DIR, requires_reference
from zeep.wsdl import Document

from zeep_sfrefresh._apis import SOAP_APIS

__all__ = ["REAL_WSDLS", "SETTINGS", "document", "load", "wsdl_params"]

SETTINGS = zeep.Settings(forbid_dtd=True)

parse_wsdl = cast(Callable[..., Any], Document)
"""zeep's Document, typed loosely (its annotation wants a Transport class, not an instance)."""

REAL_WSDLS: dict[str, tuple[str, ...]] = {
    "u": ("partner-v66.0.wsdl",),
    "c": ("enterprise-v64.0.wsdl", "enterprise-v60.0.wsdl"),
    "T": ("tooling-v61.0.wsdl",),
    "m": ("metadata-v66.0.wsdl",),
    "s": ("apex-v66.0.wsdl",),
}
"""The reference WSDLs of each API, by path code."""


@functools.cache
def document(name: str) -> Any:
    """The parsed reference WSDL ``name`` (parsed on first use, then shared)."""
    loader = zeep.Transport()
    try:
        return parse_wsdl(str(REFERENCE_DIR / "wsdl" / name), loader, settings=SETTINGS)
    finally:
        loader.session.close()


def wsdl_params(code: str) -> list[Any]:
    """``(code, source)`` parameters for one API: its compact WSDL, then each real one.

    ``source`` is ``"compact"`` or a reference file name; :func:`load` turns it into what
    ``zeep.Client`` takes. Ids read ``<api>-compact`` and ``<api>-v64.0``.
    """
    name = SOAP_APIS[code].name
    params = [pytest.param(code, "compact", id=f"{name}-compact")]
    for real in REAL_WSDLS[code]:
        version = real.removesuffix(".wsdl").rsplit("-", 1)[1]
        params.append(pytest.param(code, real, id=f"{name}-{version}", marks=requires_reference))
    return params


def load(code: str, source: str) -> Any:
    """The compact WSDL's path, or the parsed reference WSDL named ``source``."""
    return SOAP_APIS[code].wsdl if source == "compact" else document(source)
