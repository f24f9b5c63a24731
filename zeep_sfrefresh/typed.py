"""What a module written by ``zeep-sfrefresh stubs`` runs on: the run-time half of typed calls.

A generated module ``NAME.py`` is small: the WSDL's type and operation names, bound to one
:class:`TypedModule`. Its ``NAME.pyi`` holds every type for mypy and pyright. At run time
nothing is wrapped: :meth:`TypedModule.service` checks that the client's WSDL has the
operations the stub knows and hands back zeep's own service proxy, so a typed call costs no
more than a cast. Classes named in the stub exist at run time as markers, for
:meth:`TypedModule.narrow` and for imports; zeep's objects are never instances of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

__all__ = ["TypedModule", "XsdClass"]

T = TypeVar("T")


class XsdClass(type):
    """The run-time stand-in of a class of a generated stub: it names an XSD type."""

    __xsd_qname__: str

    def __repr__(cls) -> str:
        return f"<stub class {cls.__module__}.{cls.__qualname__} for {cls.__xsd_qname__}>"


def _type_qnames(value: object) -> list[str]:
    """The XSD type of a zeep object and the types it extends, as ``{ns}name`` strings."""
    xsd_type = getattr(value, "_xsd_type", None)
    if xsd_type is None:
        return []
    names = [str(xsd_type.qname)] if getattr(xsd_type, "qname", None) is not None else []
    for accepted in getattr(xsd_type, "_extension_types", ()):
        base = getattr(accepted, "_xsd_type", None)
        if base is not None and getattr(base, "qname", None) is not None:
            names.append(str(base.qname))
    return names


class TypedModule:
    """The names of one generated module and the functions it exports.

    ``types`` maps each class name of the stub to its XSD type (``{ns}name``);
    ``dicts`` lists the TypedDict names and ``aliases`` the Literal aliases, which exist at
    run time as ``dict`` and ``str``; ``operations`` are the operations of the binding the
    stub describes (the one ``client.service`` uses).
    """

    def __init__(
        self,
        module: str,
        *,
        wsdl: str,
        operations: Sequence[str],
        types: Mapping[str, str],
        dicts: Sequence[str] = (),
        aliases: Sequence[str] = (),
        others: Sequence[str] = (),
    ) -> None:
        self.module = module
        """The generated module's name."""
        self.wsdl = wsdl
        """The WSDL the module was generated from, as the generator was given it."""
        self.operations = frozenset(operations)
        """The operations the stub types; :meth:`service` checks the client's WSDL has them."""
        self._types = dict(types)
        self._dicts = frozenset(dicts)
        self._aliases = frozenset(aliases)
        self._others = frozenset(others)
        self._classes: dict[str, XsdClass] = {}

    # --- what the generated module exports ---------------------------------------------------

    def service(self, client: Any) -> Any:
        """Return ``client.service``, once its WSDL is known to have every operation of the stub.

        A stub generated from another WSDL (an older API version, another org's enterprise
        WSDL) would type calls the service does not have: that is a ``TypeError`` here, not an
        ``AttributeError`` at some later call.
        """
        proxy = client.service
        binding = getattr(proxy, "_binding", None)
        available = set(getattr(binding, "_operations", {}) or {})
        missing = sorted(self.operations - available)
        if missing:
            raise TypeError(
                f"the client's WSDL lacks operations the stub {self.module} was generated with "
                f"({', '.join(missing)}); regenerate it from this WSDL: "
                f"zeep-sfrefresh stubs WSDL -o {self.module.rpartition('.')[2]}.py"
            )
        return proxy

    async_service = service
    """The same for ``zeep.AsyncClient`` (whose calls return awaitables)."""

    def narrow(self, value: object, cls: type[T]) -> T:
        """Return ``value`` typed as ``cls`` when zeep built it as that XSD type (or one
        extending it); raise ``TypeError`` otherwise."""
        qname = getattr(cls, "__xsd_qname__", None)
        if qname is None:
            raise TypeError(f"{cls!r} is not a class of a generated stub")
        if qname not in _type_qnames(value):
            found = _type_qnames(value)[:1] or [type(value).__name__]
            raise TypeError(f"expected a {qname} object, got {found[0]}")
        return value  # type: ignore[return-value]  # zeep's object, as the stub describes it

    def types(self, client: Any) -> Any:
        """``Types(client)``: build the stub's types through ``client.get_type``."""
        return _Types(client, self._types)

    def attribute(self, name: str) -> object:
        """A module-level name of the stub at run time (the generated ``__getattr__``)."""
        if name in self._types:
            cls = self._classes.get(name)
            if cls is None:
                cls = XsdClass(name, (), {"__xsd_qname__": self._types[name]})
                cls.__module__ = self.module
                self._classes[name] = cls
            return cls
        if name in self._dicts:
            return dict
        if name in self._aliases:
            return str
        if name in self._others:
            return object
        raise AttributeError(f"module {self.module!r} has no attribute {name!r}")


class _Types:
    """``Types(client).Contact(**fields)`` is ``client.get_type('{ns}Contact')(**fields)``."""

    def __init__(self, client: Any, types: Mapping[str, str]) -> None:
        self._client = client
        self._qnames = types

    def __getattr__(self, name: str) -> Any:
        qname = self._qnames.get(name)
        if qname is None:
            raise AttributeError(f"the stub has no type {name!r}")
        return self._client.get_type(qname)
