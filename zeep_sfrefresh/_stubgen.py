"""``zeep-sfrefresh stubs``: typed calls for a WSDL, generated from zeep's own reading of it.

The output describes what zeep really does, not what the schema suggests:

* one class per complexType, describing the objects zeep returns (never instantiated):
  ``minOccurs=0`` or nillable is ``X | None``, ``maxOccurs>1`` is ``list[X]``, ``xsd:any`` is
  ``_value_N: list[Any]``, an ``extension`` is a subclass holding the fields it adds (zeep
  flattens them; the generator finds the base again through the accepted types zeep keeps);
* enumerations are ``Literal[...]`` aliases, read from the schema XML because zeep drops the
  facets;
* input types are TypedDicts (``ContactDict``); a type that other types extend (enterprise
  ``sObject``) is accepted only as an object built with ``Types(client)``, because zeep
  silently empties a plain dict given for it;
* per operation, the arguments, ``_soapheaders`` (a TypedDict of the input headers) and the
  value zeep returns: an envelope with ``.header`` and ``.body`` when the output has headers;
  otherwise the body unwrapped, and unwrapped once more when it holds one element whose
  type has exactly one child element and no attribute (zeep's rule, copied).

Names: a type keeps its XSD name unless that is not an identifier (invalid characters
become ``_``, a leading digit or underscore gets a ``T`` in front, a Python keyword gets a
trailing ``_``) or it is taken (by a name the module defines, or by a type of another
namespace, which then gets the namespace's first word in front: ``fault_ExceptionCode``).
Fields and dictionary keys keep their XSD names; a keyword field (``from``) is reachable as
``value["from"]`` (typed through ``__getitem__``) and a keyword key uses the functional
TypedDict form. Everything here is pure: :func:`generate` takes a loaded zeep ``Document``
and the WSDL's bytes, and returns the two files' text.
"""

from __future__ import annotations

import hashlib
import keyword
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from lxml import etree
from zeep.xsd.elements import Any as AnyElement
from zeep.xsd.elements import Element
from zeep.xsd.elements.indicators import Choice, OrderIndicator
from zeep.xsd.types import builtins as xsd_builtins
from zeep.xsd.types.complex import ComplexType

__all__ = ["FORMAT_VERSION", "Stub", "generate"]

FORMAT_VERSION = "1"
"""Bumped when the generated files change shape; recorded in their header."""

_XSD = "http://www.w3.org/2001/XMLSchema"

# zeep's builtin type classes -> (what zeep returns, what a caller may pass). The first
# class found along a type's MRO decides (Int derives from Integer, Integer from Decimal).
_BUILTINS: tuple[tuple[type, str, str], ...] = (
    (xsd_builtins.Boolean, "bool", "bool"),
    (xsd_builtins.Integer, "int", "int"),
    (xsd_builtins.Decimal, "_dec.Decimal", "_dec.Decimal | int | float"),
    (xsd_builtins.Float, "float", "float"),
    (xsd_builtins.Double, "float", "float"),
    (xsd_builtins.DateTime, "_dt.datetime", "_dt.datetime"),
    (xsd_builtins.Date, "_dt.date", "_dt.date"),
    (xsd_builtins.Time, "_dt.time", "_dt.time"),
    (xsd_builtins.Base64Binary, "bytes", "bytes"),
    (xsd_builtins.HexBinary, "str", "str"),
    (xsd_builtins.QName, "str", "str"),
    (xsd_builtins.AnyURI, "str", "str"),
    (xsd_builtins.String, "str", "str"),
)

_RESERVED = frozenset(
    {"service", "async_service", "narrow", "Types", "SoapService", "AsyncSoapService"}
)
"""Names the generated module defines itself; a type named so gets another name."""

_NIL_IN_PRACTICE = frozenset({"queryLocator"})
"""Elements Salesforce sends as ``xsi:nil`` even where its WSDL says they cannot be: a done
query's ``queryLocator`` (the tooling and metadata WSDLs declare it plain ``xsd:string``)."""

_BUILTIN_NAMES = frozenset({"str", "int", "float", "bool", "bytes", "list", "object", "None"})


def _identifier(name: str) -> str:
    """A Python identifier for an XSD name (see the module doc for the rules)."""
    text = re.sub(r"\W", "_", name)
    if not text or text[0].isdigit() or text[0] == "_":
        text = "T" + text
    if keyword.iskeyword(text) or keyword.issoftkeyword(text):
        text += "_"
    return text


def _namespace_word(namespace: str) -> str:
    """The first word of a namespace: ``urn:fault.partner.soap.sforce.com`` -> ``fault``,
    ``http://soap.sforce.com/2006/04/metadata`` -> ``metadata``."""
    text = namespace.removeprefix("urn:")
    if "://" in text:
        text = text.split("://", 1)[1].rstrip("/").rsplit("/", 1)[-1]
    word = re.split(r"[^A-Za-z0-9]", text)[0] or "ns"
    return _identifier(word)


def enumerations(wsdl_bytes: bytes) -> dict[str, tuple[str, ...]]:
    """The enumeration facets of the WSDL's inline schemas, which zeep does not keep.

    Keyed by ``{namespace}name`` for named simple types and by
    ``{namespace}OwnerType/element`` for an element's anonymous simple type.
    """
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
    root = etree.fromstring(wsdl_bytes, parser=parser)
    found: dict[str, tuple[str, ...]] = {}
    for schema in root.iter(f"{{{_XSD}}}schema"):
        namespace = schema.get("targetNamespace", "")
        for simple in schema.iter(f"{{{_XSD}}}simpleType"):
            values = tuple(
                value
                for value in (
                    node.get("value")
                    for node in simple.iterfind(f"{{{_XSD}}}restriction/{{{_XSD}}}enumeration")
                )
                if value is not None
            )
            if not values:
                continue
            name = simple.get("name")
            if name is not None:
                found[f"{{{namespace}}}{name}"] = values
                continue
            owner_element = simple.getparent()
            owner_type = next(
                (a for a in simple.iterancestors(f"{{{_XSD}}}complexType") if a.get("name")),
                None,
            )
            if owner_element is not None and owner_type is not None:
                key = f"{{{namespace}}}{owner_type.get('name')}/{owner_element.get('name')}"
                found[key] = values
    return found


# --- the model ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    name: str
    """The attribute zeep exposes (and the dictionary key it takes)."""
    out: str
    """Annotation of the value zeep returns."""
    inp: str
    """Annotation of a value a caller may pass."""
    required: bool
    """Whether a caller must give it."""


@dataclass
class _Class:
    name: str
    qname: str
    base: str | None
    fields: list[_Field]
    all_fields: list[_Field]


@dataclass
class _Operation:
    name: str
    """The operation's name as zeep's service proxy has it."""
    params: list[_Field]
    headers: list[_Field]
    returns: str
    header_dict: str
    envelope: _Class | None = None
    output_headers: _Class | None = None


@dataclass
class _Model:
    classes: dict[str, _Class] = field(default_factory=dict)
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    operations: list[_Operation] = field(default_factory=list)


class _Names:
    """Allocates module-level names: deterministic, never two alike, never a reserved one."""

    def __init__(self) -> None:
        self.taken: set[str] = set(_RESERVED)
        self.by_key: dict[str, str] = {}

    def claim(self, key: str, name: str, namespace: str = "") -> str:
        if key in self.by_key:
            return self.by_key[key]
        candidate = _identifier(name)
        if candidate in self.taken and namespace:
            candidate = f"{_namespace_word(namespace)}_{candidate}"
        base, number = candidate, 2
        while candidate in self.taken or candidate + "Dict" in self.taken:
            candidate = f"{base}_{number}"
            number += 1
        self.taken.update({candidate, candidate + "Dict"})
        self.by_key[key] = candidate
        return candidate


@dataclass(frozen=True)
class Stub:
    """The generated files and what they were made from.

    ``stubs`` maps ``""`` to the one ``.pyi`` when everything fits a file pyright can read
    (:data:`MAX_STATEMENTS`), else the package's parts (``"__init__"``, ``"_types0"``, ...).
    """

    stubs: dict[str, str]
    py: str
    sha256: str
    operations: tuple[str, ...]
    classes: int
    returns: dict[str, str]
    """What each operation returns, as annotated (``_dt.datetime``, ``query_Envelope``...)."""
    shapes: dict[str, tuple[str, tuple[tuple[str, str], ...]]]
    """Each class: its XSD type (``""`` for envelopes and output headers) and its fields
    with the annotations of what zeep returns, inherited ones included."""
    aliases: dict[str, tuple[str, ...]]
    """Each Literal alias and its values."""


class _Builder:
    def __init__(self, document: Any, wsdl_bytes: bytes, primary: str) -> None:
        self.document = document
        self.enums = enumerations(wsdl_bytes)
        self.names = _Names()
        self.model = _Model()
        self.primary = primary
        self.types: dict[str, ComplexType] = {}
        self.subtyped: set[str] = set()

    # names ----------------------------------------------------------------------------------

    def _collect(self) -> None:
        """Every complexType zeep knows (named ones and element-anonymous ones), in order."""
        schema = self.document.types
        found: dict[str, ComplexType] = {}
        for xsd_type in schema.types:
            if isinstance(xsd_type, ComplexType) and xsd_type.qname is not None:
                found[str(xsd_type.qname)] = xsd_type
        for element in schema.elements:
            xsd_type = getattr(element, "type", None)
            if isinstance(xsd_type, ComplexType) and not xsd_type.is_global:
                found.setdefault(str(element.qname), xsd_type)
        priority = {self.primary: 0}
        self.types = dict(
            sorted(
                found.items(),
                key=lambda item: (priority.get(_ns(item[0]), 1), _ns(item[0]), _local(item[0])),
            )
        )
        for qname in self.types:
            self.names.claim(qname, _local(qname), _ns(qname))
        for qname in sorted(self.enums):
            if "/" not in qname:
                self.names.claim("enum:" + qname, _local(qname), _ns(qname))
        for xsd_type in self.types.values():
            base = _base(xsd_type)
            if base is not None:
                self.subtyped.add(base)

    # annotations ----------------------------------------------------------------------------

    def _simple(self, xsd_type: Any, owner: str | None, element_name: str) -> tuple[str, str]:
        """(returned, accepted) annotations of a simple type."""
        qname = str(getattr(xsd_type, "qname", "") or "")
        values = self.enums.get(qname)
        if values is not None:
            alias = self.names.claim("enum:" + qname, _local(qname), _ns(qname))
            self.model.aliases[alias] = values
            return alias, alias
        if owner is not None:
            anonymous = self.enums.get(f"{{{_ns(owner)}}}{_local(owner)}/{element_name}")
            if anonymous is not None:
                literal = _literal(anonymous)
                return literal, literal
        for klass in type(xsd_type).__mro__:
            for builtin, out, inp in _BUILTINS:
                if klass is builtin:
                    return out, inp
        return "_t.Any", "_t.Any"

    def _element(self, name: str, element: Any, owner: str | None, optional: bool) -> _Field:
        multiple = element.accepts_multiple
        if isinstance(element, AnyElement):
            out = inp = "_t.Any"
            nillable = False
        else:
            xsd_type = element.type
            nillable = bool(getattr(element, "nillable", False))
            if isinstance(xsd_type, ComplexType):
                key = _complex_key(xsd_type, element)
                cls = self.names.claim(key, _local(key), _ns(key))
                out = cls
                inp = cls if key in self.subtyped else f"{cls}Dict | {cls}"
            else:
                out, inp = self._simple(xsd_type, owner, element.name or name)
        maybe = optional or element.min_occurs == 0 or nillable or name in _NIL_IN_PRACTICE
        if out == "str" and not multiple:
            # zeep reads an empty element as None, and Salesforce sends empty strings for
            # required ones (a metadata describe's organizationNamespace, say).
            return _Field(name, "str | None", inp if not maybe else f"{inp} | None", not maybe)
        if multiple:
            return _Field(
                name,
                f"list[{out}]",
                f"_abc.Sequence[{inp}]",
                element.min_occurs > 0 and not optional,
            )
        if maybe:
            return _Field(name, f"{out} | None", f"{inp} | None", False)
        return _Field(name, out, inp, True)

    def _fields(self, xsd_type: ComplexType, owner: str | None) -> list[_Field]:
        result: list[_Field] = []

        def walk(items: Iterable[tuple[str | None, Any]], optional: bool) -> None:
            for name, item in items:
                if isinstance(item, OrderIndicator):
                    if name is not None and item.accepts_multiple:
                        result.append(_Field(name, "list[_t.Any]", "_abc.Sequence[_t.Any]", False))
                    else:
                        inner = optional or isinstance(item, Choice) or item.min_occurs == 0
                        walk(item.elements_nested, inner)
                elif isinstance(item, Element | AnyElement):
                    result.append(self._element(name or str(item.name), item, owner, optional))

        walk(xsd_type.elements_nested, False)
        for name, attribute in xsd_type.attributes:
            out, inp = (
                self._simple(attribute.type, owner, name) if attribute.type else ("str", "str")
            )
            required = getattr(attribute, "required", False)
            result.append(
                _Field(
                    name,
                    out if required else f"{out} | None",
                    inp if required else f"{inp} | None",
                    required,
                )
            )
        return result

    # the model ------------------------------------------------------------------------------

    def build(self) -> _Model:
        self._collect()
        for qname, xsd_type in self.types.items():
            name = self.names.claim(qname, _local(qname), _ns(qname))
            every = self._fields(xsd_type, qname)
            base_qname = _base(xsd_type)
            base = None
            own = every
            if base_qname is not None and base_qname in self.types:
                base = self.names.claim(base_qname, _local(base_qname), _ns(base_qname))
                inherited = {f.name for f in self._fields(self.types[base_qname], base_qname)}
                own = [f for f in every if f.name not in inherited]
            self.model.classes[name] = _Class(name, qname, base, own, every)
        binding = _binding(self.document)
        if binding is not None:
            for op_name in sorted(binding._operations):
                self.model.operations.append(self._operation(binding._operations[op_name]))
        return self.model

    def _operation(self, operation: Any) -> _Operation:
        name = operation.name
        params: list[_Field] = []
        body = operation.input.body if operation.input is not None else None
        if body is not None and isinstance(body.type, ComplexType):
            params = self._fields(body.type, _complex_key(body.type, body))
        headers: list[_Field] = []
        header = getattr(operation.input, "header", None)
        if header is not None and isinstance(header.type, ComplexType):
            # Header values are dicts only: a TypedDict alone gets mypy's precise messages
            # ('Missing key "scope" for TypedDict "QueryOptionsDict"').
            headers = [
                _Field(f.name, f.out, _dict_only(f.inp.removesuffix(" | None")), False)
                for f in self._fields(header.type, None)
            ]
        header_dict = self.names.claim(f"op:{name}:headers", f"{_identifier(name)}_Headers")
        op = _Operation(name, params, headers, "None", header_dict)
        op.returns = self._returns(operation, op)
        return op

    def _returns(self, operation: Any, op: _Operation) -> str:
        output = operation.output
        if output is None or not getattr(output, "envelope", None):
            return "None"
        body_element = output.body
        body_type = body_element.type if body_element is not None else None
        body_fields = (
            self._fields(body_type, _complex_key(body_type, body_element))
            if isinstance(body_type, ComplexType)
            else []
        )
        header_type = output.header.type if output.header is not None else None
        if header_type is not None and header_type._element:
            # Any output header may be missing from an answer: zeep then gives None.
            headers = [
                f if f.out.endswith(" | None") else _Field(f.name, f"{f.out} | None", f.inp, False)
                for f in self._fields(header_type, None)
            ]
            op.output_headers = self._synthetic(
                f"op:{op.name}:out", f"{_identifier(op.name)}_OutputHeaders", headers
            )
            body_cls = (
                self.names.claim(
                    _complex_key(body_type, body_element),
                    _local(_complex_key(body_type, body_element)),
                )
                if isinstance(body_type, ComplexType)
                else "None"
            )
            op.envelope = self._synthetic(
                f"op:{op.name}:envelope",
                f"{_identifier(op.name)}_Envelope",
                [
                    # None when the answer carries no SOAP Header at all.
                    _Field("header", f"{op.output_headers.name} | None", "", False),
                    _Field("body", body_cls, body_cls, True),
                ],
            )
            return op.envelope.name
        if body_type is None:
            return "None"
        if not isinstance(body_type, ComplexType):
            out, _ = self._simple(body_type, None, "")
            return out
        if len(body_fields) == 0:
            return "None"
        if len(body_fields) > 1:
            return self.names.claim(
                _complex_key(body_type, body_element), _local(_complex_key(body_type, body_element))
            )
        (only,) = body_fields
        _, child = body_type.elements[0]
        child_type = getattr(child, "type", None)
        if (
            isinstance(child, Element)
            and not child.accepts_multiple
            and isinstance(child_type, ComplexType)
            and len(child_type.elements) == 1
            and len(child_type.attributes) == 0
        ):
            key = _complex_key(child_type, child)
            (inner,) = self._fields(child_type, key)
            maybe = only.out.endswith(" | None")
            if maybe and not inner.out.endswith(" | None") and not inner.out.startswith("list["):
                return f"{inner.out} | None"
            return inner.out
        return only.out

    def _synthetic(self, key: str, name: str, fields: list[_Field]) -> _Class:
        cls_name = self.names.claim(key, name)
        cls = _Class(cls_name, "", None, fields, fields)
        self.model.classes[cls_name] = cls
        return cls


def _dict_only(annotation: str) -> str:
    """``XDict | X`` -> ``XDict``."""
    first, _, rest = annotation.partition(" | ")
    return first if first.endswith("Dict") and rest == first.removesuffix("Dict") else annotation


def _ns(qname: str) -> str:
    return qname[1:].split("}", 1)[0] if qname.startswith("{") else ""


def _local(qname: str) -> str:
    return qname.split("}", 1)[1] if qname.startswith("{") else qname


def _complex_key(xsd_type: ComplexType, element: Any) -> str:
    if xsd_type.qname is not None and xsd_type.is_global:
        return str(xsd_type.qname)
    return str(getattr(element, "qname", None) or xsd_type.qname)


def _base(xsd_type: ComplexType) -> str | None:
    """The type ``xsd_type`` extends (zeep flattens extensions but keeps the base's class)."""
    for accepted in xsd_type._extension_types[:1]:
        base = getattr(accepted, "_xsd_type", None)
        if base is not None and base.qname is not None:
            return str(base.qname)
    return None


def _binding(document: Any) -> Any:
    """The binding ``client.service`` uses: the first port of the first service."""
    for service in document.services.values():
        for port in service.ports.values():
            return port.binding
    return next(iter(document.bindings.values()), None)


def _literal(values: Sequence[str]) -> str:
    return "_te.Literal[" + ", ".join(repr(v) for v in values) + "]"


# --- rendering -----------------------------------------------------------------------------


def _qualify(annotation: str, shadowed: set[str]) -> str:
    """Rewrite names a class body shadows (a field called ``Account`` or ``str``)."""
    if not shadowed:
        return annotation

    def replace(match: re.Match[str]) -> str:
        word = match.group(0)
        if word not in shadowed:
            return word
        return f"_b.{word}" if word in _BUILTIN_NAMES else f"_T_{word}"

    return re.sub(r"(?<![.\w'\"])[A-Za-z_]\w*(?![\w'\"])", replace, annotation)


_MODULES = (
    ("_b", "import builtins as _b"),
    ("_abc", "import collections.abc as _abc"),
    ("_dt", "import datetime as _dt"),
    ("_dec", "import decimal as _dec"),
    ("_t", "import typing as _t"),
    ("_te", "import typing_extensions as _te"),
    ("_zeep", "import zeep as _zeep"),
)


def _file(header: str, imports: Sequence[str], body: Sequence[str]) -> str:
    """One stub file: the header, the modules its body uses (only those: strict pyright
    reports an unused import), its imports from sibling parts, the body."""
    text = "\n".join(body)
    modules = [line for alias, line in _MODULES if f"{alias}." in text]
    parts = [header, "from __future__ import annotations", "", *modules, *imports, "", *body]
    return "\n".join(parts).rstrip() + "\n"


MAX_STATEMENTS = 24_000
"""Statements per stub file. pyright gives up on a file of about 32,000 ("Code is too complex
to analyze"), so bigger stubs are split into parts (see :func:`generate`)."""


def _chunks(model: _Model) -> list[tuple[list[str], set[str]]]:
    """The type definitions, one chunk per class or TypedDict, with the names each chunk
    needs an alias for (a name its body shadows)."""
    chunks: list[tuple[list[str], set[str]]] = []
    for name, values in sorted(model.aliases.items()):
        chunks.append(([f"{name}: _te.TypeAlias = {_literal(values)}"], set()))
    for cls in model.classes.values():
        aliased: set[str] = set()
        chunks.append((list(_render_class(cls, aliased)), aliased))
    for cls in model.classes.values():
        if cls.qname:
            aliased = set()
            chunks.append((list(_render_dict(cls, aliased)), aliased))
    for op in model.operations:
        aliased = set()
        chunks.append((list(_render_header_dict(op, aliased)), aliased))
    return chunks


def _closing(model: _Model) -> list[str]:
    """The services, ``Types`` and the module functions: the module's own names."""
    lines = list(_render_services(model))
    lines.append("class Types:")
    lines.append("    def __init__(self, client: _zeep.Client | _zeep.AsyncClient) -> None: ...")
    for cls in model.classes.values():
        if cls.qname:
            lines.append(
                f"    def {cls.name}(self, **fields: _te.Unpack[{cls.name}Dict]) -> {cls.name}: ..."
            )
    lines += [
        "",
        "def service(client: _zeep.Client) -> SoapService: ...",
        "def async_service(client: _zeep.AsyncClient) -> AsyncSoapService: ...",
        "_N = _t.TypeVar('_N')",
        "def narrow(value: object, cls: type[_N]) -> _N: ...",
    ]
    return lines


_WORD = re.compile(r"(?<![.\w'\"])[A-Za-z]\w*")
_DEFINES = re.compile(r"^(?:class (\w+)|(\w+)(?:: _te\.TypeAlias)? = )")


_ANNOTATION = re.compile(
    r"^(?:class \w+\((.*)\):"  # a base class
    r"|    \w+: (.*)"  # a field or a key
    r"|.*-> (.*): \.\.\."  # what __getitem__ returns
    r"|\w+: .* = (.*)"  # an alias
    r"|.*, (\{.*\}), total=False\))$"  # a functional TypedDict's keys
)


def _references(lines: Iterable[str]) -> set[str]:
    """The names the annotations (and bases) of ``lines`` use; not field names, not text."""
    used: set[str] = set()
    for line in lines:
        match = _ANNOTATION.match(line)
        if match is None:
            continue
        text = re.sub(r"'[^']*'", "", " ".join(g for g in match.groups() if g))
        used.update(_WORD.findall(text))
    return used


def _defined(lines: Iterable[str]) -> Iterator[str]:
    """The module-level names a chunk defines."""
    for line in lines:
        match = _DEFINES.match(line)
        if match:
            yield match.group(1) or match.group(2)


def _aliases(names: Iterable[str]) -> list[str]:
    return [f"_T_{name}: _te.TypeAlias = {name}" for name in sorted(names)]


def _stub_files(model: _Model, header: str) -> dict[str, str]:
    """``{"": text}`` when one stub file holds everything, else the parts of a package:
    ``{"__init__": text, "_types0": text, ...}``."""
    chunks = _chunks(model)
    closing = _closing(model)
    total = sum(len(lines) for lines, _ in chunks) + len(closing)
    if total <= MAX_STATEMENTS:
        aliased = set().union(*(names for _, names in chunks))
        body = [line for lines, _ in chunks for line in lines]
        return {"": _file(header, [], [*body, *closing, "", *_aliases(aliased)])}
    parts: list[list[tuple[list[str], set[str]]]] = [[]]
    size = 0
    for chunk in chunks:
        if size + len(chunk[0]) > MAX_STATEMENTS and parts[-1]:
            parts.append([])
            size = 0
        parts[-1].append(chunk)
        size += len(chunk[0])
    names = [f"_types{number}" for number in range(len(parts))]
    # A part imports by name what it uses from the others (a cycle of star imports is more
    # than mypy and pyright resolve); the package's __init__ star-imports each part, which
    # re-exports only what the part defines.
    owner = {
        defined: number
        for number, part in enumerate(parts)
        for lines, _ in part
        for defined in _defined(lines)
    }
    files: dict[str, str] = {}
    for number, (name, part) in enumerate(zip(names, parts, strict=True)):
        body = [line for lines, _ in part for line in lines]
        aliased = set().union(*(aliases for _, aliases in part))
        used = _references([*body, *_aliases(aliased)])
        imports: dict[int, list[str]] = {}
        for word in sorted(used):
            if owner.get(word, number) != number:
                imports.setdefault(owner[word], []).append(word)
        others = [
            f"from .{names[other]} import {', '.join(words)}"
            for other, words in sorted(imports.items())
        ]
        files[name] = _file(header, others, [*body, *_aliases(aliased)])
    star = [f"from .{name} import *" for name in names]
    files["__init__"] = _file(header, star, closing)
    return files


def _shadowed(names: Iterable[str], annotations: Iterable[str]) -> set[str]:
    defined = set(names)
    used = {w for a in annotations for w in re.findall(r"(?<![.\w])[A-Za-z_]\w*", a)}
    return defined & used


def _render_class(cls: _Class, aliased: set[str]) -> Iterator[str]:
    base = cls.base or ""
    attrs = [f for f in cls.fields if f.name.isidentifier() and not keyword.iskeyword(f.name)]
    keyed = [f for f in cls.all_fields if not f.name.isidentifier() or keyword.iskeyword(f.name)]
    shadowed = _shadowed((f.name for f in cls.fields), (f.out for f in cls.fields))
    aliased.update(s for s in shadowed if s not in _BUILTIN_NAMES)
    doc = f'    """{cls.qname}"""' if cls.qname else None
    yield f"class {cls.name}({base}):" if base else f"class {cls.name}:"
    body = [doc] if doc else []
    body += [f"    {f.name}: {_qualify(f.out, shadowed)}" for f in attrs]
    if keyed:
        body += _getitem(keyed, shadowed)
    if not attrs and not keyed and not doc:
        body.append("    ...")
    yield from body
    yield ""


def _getitem(keyed: Sequence[_Field], shadowed: set[str]) -> list[str]:
    """``value["from"]`` for fields whose names are not identifiers."""
    lines = []
    for f in keyed:
        lines.append("    @_t.overload")
        lines.append(
            f"    def __getitem__(self, key: _te.Literal[{f.name!r}]) -> "
            f"{_qualify(f.out, shadowed)}: ..."
        )
    if len(keyed) == 1:
        lines = [line for line in lines if "overload" not in line]
    return lines


def _render_dict(cls: _Class, aliased: set[str]) -> Iterator[str]:
    name = f"{cls.name}Dict"
    fields = cls.all_fields
    if any(not f.name.isidentifier() or keyword.iskeyword(f.name) for f in fields):
        items = ", ".join(f"{f.name!r}: {_key(f, set())}" for f in fields)
        yield f"{name} = _te.TypedDict({name!r}, {{{items}}}, total=False)"
        yield ""
        return
    shadowed = _shadowed((f.name for f in fields), (f.inp for f in fields))
    aliased.update(s for s in shadowed if s not in _BUILTIN_NAMES)
    yield f"class {name}(_te.TypedDict, total=False):"
    if not fields:
        yield "    pass"
    for f in fields:
        yield f"    {f.name}: {_key(f, shadowed)}"
    yield ""


def _key(f: _Field, shadowed: set[str]) -> str:
    annotation = _qualify(f.inp, shadowed)
    return f"_te.Required[{annotation}]" if f.required else annotation


def _render_header_dict(op: _Operation, aliased: set[str]) -> Iterator[str]:
    shadowed = _shadowed((f.name for f in op.headers), (f.inp for f in op.headers))
    aliased.update(s for s in shadowed if s not in _BUILTIN_NAMES)
    yield f"class {op.header_dict}(_te.TypedDict, total=False):"
    if not op.headers:
        yield "    pass"
    for f in op.headers:
        yield f"    {f.name}: {_qualify(f.inp, shadowed)}"
    yield ""


def _signature(op: _Operation) -> str:
    parts = ["self"]
    seen_optional = False
    keyword_only = False
    for f in op.params:
        if not f.name.isidentifier() or keyword.iskeyword(f.name):
            continue  # reachable by position only through **kwargs: zeep takes both
        if f.required and seen_optional and not keyword_only:
            parts.append("*")
            keyword_only = True
        if f.required:
            parts.append(f"{f.name}: {f.inp}")
        else:
            seen_optional = True
            parts.append(f"{f.name}: {f.inp} = ...")
    if not keyword_only:
        parts.append("*")
    parts.append(f"_soapheaders: {op.header_dict} = ...")
    return ", ".join(parts)


def _render_services(model: _Model) -> Iterator[str]:
    for cls_name, awaitable in (("SoapService", False), ("AsyncSoapService", True)):
        yield f"class {cls_name}:"
        if not model.operations:
            yield "    ..."
        for op in model.operations:
            returns = f"_abc.Awaitable[{op.returns}]" if awaitable else op.returns
            if op.name.isidentifier() and not keyword.iskeyword(op.name):
                yield f"    def {op.name}({_signature(op)}) -> {returns}: ..."
            # else: not a Python name; getattr(service, name)(...) reaches it, untyped
        yield ""


def _render_py(model: _Model, header: str, wsdl: str) -> Iterator[str]:
    yield header
    yield "from __future__ import annotations"
    yield ""
    yield "from zeep_sfrefresh.typed import TypedModule"
    yield ""
    yield "_module = TypedModule("
    yield "    __name__,"
    yield f"    wsdl={wsdl!r},"
    yield "    operations=("
    for op in model.operations:
        yield f"        {op.name!r},"
    yield "    ),"
    yield "    types={"
    for cls in model.classes.values():
        if cls.qname:
            yield f"        {cls.name!r}: {cls.qname!r},"
    yield "    },"
    dicts = [f"{c.name}Dict" for c in model.classes.values() if c.qname]
    dicts += [op.header_dict for op in model.operations]
    yield f"    dicts={tuple(sorted(dicts))!r},"
    yield f"    aliases={tuple(sorted(model.aliases))!r},"
    others = [c.name for c in model.classes.values() if not c.qname]
    others += ["SoapService", "AsyncSoapService"]
    yield f"    others={tuple(sorted(others))!r},"
    yield ")"
    yield "service = _module.service"
    yield "async_service = _module.async_service"
    yield "Types = _module.types"
    yield "narrow = _module.narrow"
    yield "__getattr__ = _module.attribute"


def generate(document: Any, wsdl_bytes: bytes, *, source: str, version: str) -> Stub:
    """Generate the stub and run-time files for a loaded zeep WSDL ``Document``.

    ``source`` is how the WSDL is named in the files' header (a path or URL), ``version`` the
    generator's version; the output is byte-identical for the same inputs.
    """
    binding = _binding(document)
    primary = _ns(str(binding.name)) if binding is not None else ""
    model = _Builder(document, wsdl_bytes, primary).build()
    digest = hashlib.sha256(wsdl_bytes).hexdigest()
    label = source.replace("\\", "/").rsplit("/", 1)[-1]
    header = (
        f'"""Typed calls for {label}: generated by zeep-sfrefresh stubs; do not edit."""\n'
        f"# zeep-sfrefresh {version} (stub format {FORMAT_VERSION}); WSDL sha256 {digest}\n"
        "# ruff: noqa\n"
        "# fmt: off"
    )
    return Stub(
        stubs=_stub_files(model, header),
        py="\n".join(_render_py(model, header, label)) + "\n",
        sha256=digest,
        operations=tuple(op.name for op in model.operations),
        classes=sum(1 for c in model.classes.values() if c.qname),
        returns={op.name: op.returns for op in model.operations},
        shapes={
            c.name: (c.qname, tuple((f.name, f.out) for f in c.all_fields))
            for c in model.classes.values()
        },
        aliases=dict(model.aliases),
    )
