"""Partner API records: build sObjects for create/update/upsert, read returned records as dicts.

The partner WSDL's ``sObject`` has three declared elements (``type``, ``fieldsToNull``, ``Id``)
and an ``xsd:any`` for every other field. zeep keeps that part as raw lxml elements under
``_value_1`` and silently drops dict keys it does not know, so
``create([{"type": "Contact", "LastName": "X"}])`` sends a Contact without a LastName.
:func:`sobject` builds those elements; :func:`fields` reads them back (both pure: no I/O, no
client). :func:`keep_field_names` stops zeep from parsing typed fields (relationships,
sub-queries) into objects that have lost their names.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import math
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from lxml import etree

if TYPE_CHECKING:
    import zeep

    from .partner import sObjectDict

__all__ = ["fields", "keep_field_names", "sobject"]

_NS = "urn:sobject.partner.soap.sforce.com"
_SOBJECT_TYPE = f"{{{_NS}}}sObject"
_XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
_XSI_NIL = f"{{{_XSI_NS}}}nil"
_XSI_TYPE = f"{{{_XSI_NS}}}type"
_PARTS = frozenset({"type", "fieldsToNull", "Id", "_value_1"})
"""The keys of a partner sObject as zeep sees it (what :func:`sobject` returns)."""


def sobject(type: str, /, **fields: object) -> sObjectDict:
    """A partner sObject of ``type`` with ``fields``, for create, update and upsert.

    ``Id`` goes to the sObject's own ``Id`` element (``Id=None`` leaves it out) and
    ``fieldsToNull`` (a list of field names) to its ``fieldsToNull`` elements. Every other
    field becomes an element in the sobject namespace, its value as Salesforce's text:
    ``str`` as is; ``bool`` ``true``/``false``; ``int``, ``float``, ``Decimal`` by ``str``
    (not NaN or infinity); an aware ``datetime`` in ISO 8601 with ``Z`` for UTC or its
    offset (a naive one is a ValueError: Salesforce would read it as UTC); ``date``
    ``YYYY-MM-DD``; ``bytes`` base64 (``base64`` fields such as ``Attachment.Body``);
    another :func:`sobject` a relationship, e.g. ``Account=sobject("Account",
    Ext__c="A-1")`` to point at a parent by external id; ``None`` puts the field in
    ``fieldsToNull`` instead (update and upsert clear it).

    The result is the dict zeep turns into the sObject: ``type``, ``fieldsToNull``, ``Id``
    and the field elements under ``_value_1``, typed as the shipped typed partner module's
    ``sObjectDict`` so typed calls take it. zeep accepts it wherever the WSDL wants an
    sObject, in any partner WSDL version, with ``zeep.Client`` and ``zeep.AsyncClient``
    alike, so no client is needed and none is taken: a ``client=`` keyword would steal a
    field name and make ``sobject("Contact", **row)`` fail type checking. For zeep's own
    object, ``client.get_type("{urn:sobject.partner.soap.sforce.com}sObject")(**record)``.

    A field name that is not an XML name is a ValueError naming it; a value of another type
    a TypeError.
    """
    parts = _sobject_parts(type, fields)
    return {
        "type": parts["type"],
        "fieldsToNull": parts["fieldsToNull"],
        "Id": parts["Id"],
        "_value_1": parts["_value_1"],
    }


def _partner_sobject_type(client: zeep.Client) -> Any:  # an AsyncClient is a Client
    from zeep.exceptions import Error as ZeepError

    try:
        sobject_type = client.get_type(_SOBJECT_TYPE)
    except ZeepError as exc:
        raise ValueError(
            f"the client's WSDL has no {_SOBJECT_TYPE} type: these helpers are for partner "
            "API records (load the partner WSDL)"
        ) from exc
    return sobject_type


def keep_field_names(client: zeep.Client | zeep.AsyncClient) -> None:
    """Make ``client`` return every partner field as its XML element, name included.

    The sObject's ``xsd:any`` is ``processContents="lax"``, so zeep parses a field carrying an
    ``xsi:type`` (a relationship such as ``Account``, a sub-query, an address) into an object
    and drops the field's name: ``fields()`` could not tell ``Account`` from ``Owner``. After
    this call zeep leaves those fields as elements too. :func:`connect` does it for you;
    call it once on a ``zeep.Client`` you built yourself. Sending is unaffected. A
    ValueError if the client's WSDL has no partner sObject.
    """
    from zeep.xsd.elements.any import Any as AnyElement

    content = getattr(_partner_sobject_type(client), "_element", None)
    wildcards = [part for part in content or [] if isinstance(part, AnyElement)]
    if not wildcards:
        raise ValueError(f"the client's {_SOBJECT_TYPE} has no xsd:any part")
    for wildcard in wildcards:
        wildcard.process_contents = "skip"


def fields(record: object, describe: Mapping[str, str] | None = None) -> dict[str, object]:
    """A partner record (from query, queryMore, retrieve, search) as a plain dict.

    ``type`` and ``Id`` (None when the query did not select it) come first, then each field
    by name, in the order Salesforce sent them. ``xsi:nil`` is None. A relationship field
    (``Account`` in ``SELECT Account.Name FROM Contact``) is a nested dict of the same shape;
    a child relationship sub-query (``SELECT (SELECT Id FROM Contacts) FROM Account``) is
    ``{"done", "queryLocator", "records": [dicts], "size"}``; another compound value
    (``MailingAddress``) a dict of its parts, as text.

    Values are text unless ``describe`` gives the field's type: it maps field names (or
    paths such as ``Account.AnnualRevenue``; any case) to describe's ``type`` or ``soapType``,
    e.g. ``{f.name: f.type for f in client.service.describeSObject("Contact").body.result.fields}``.
    Converted: ``boolean`` to bool; ``int`` and ``long`` to int; ``double``, ``currency``
    and ``percent`` to ``Decimal`` (exactly what Salesforce sent, no binary rounding;
    ``float()`` it if you like); ``date`` to ``date``; ``datetime`` to an aware ``datetime``
    (UTC); ``base64`` to bytes. Other types (string, id, reference, picklist, time, ...)
    stay text. A value that does not parse as its type is a ValueError naming the field.

    Relationship fields and sub-queries need a client from :func:`connect` or one passed to
    :func:`keep_field_names`: otherwise zeep hands them over as objects without their names,
    and ``fields()`` raises a ValueError saying so. ``record`` may also be the record's lxml
    element, or what :func:`sobject` returns.
    """
    types = {name.lower(): kind.lower() for name, kind in (describe or {}).items()}
    if isinstance(record, etree._Element):
        return _element_record(record, types, "")
    if not _is_sobject(record):
        raise TypeError(
            "fields() reads a partner sObject (a query, retrieve or search record), "
            f"not {_type_name(record)}"
        )
    read: Any = record
    return _collect(read["type"], read["Id"], read["fieldsToNull"], read["_value_1"], types, "")


# --- building ---------------------------------------------------------------------------


def _sobject_parts(type_name: object, values: Mapping[str, object]) -> dict[str, Any]:
    if not isinstance(type_name, str) or not type_name:
        raise TypeError(f"sobject() needs the object type as a non-empty str, not {type_name!r}")
    given = dict(values)
    for reserved in ("type", "_value_1"):
        if reserved in given:
            raise ValueError(f"{reserved!r} is not a field: the type is sobject()'s first argument")
    record_id = given.pop("Id", None)
    if record_id is not None and not isinstance(record_id, str):
        raise TypeError(f"Id must be a str, not {_type_name(record_id)}")
    to_null = _null_names(given.pop("fieldsToNull", None))
    elements: list[etree._Element] = []
    for name, value in given.items():
        _check_name(name)
        if value is None:
            to_null.append(name)
        else:
            elements.append(_field_element(name, value))
    return {"type": type_name, "fieldsToNull": to_null, "Id": record_id, "_value_1": elements}


def _null_names(names: object) -> list[str]:
    if names is None:
        return []
    if isinstance(names, str) or not isinstance(names, Iterable):
        raise TypeError(f"fieldsToNull takes a list of field names, not {_type_name(names)}")
    result = []
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"fieldsToNull takes field names (str), not {_type_name(name)}")
        _check_name(name)
        result.append(name)
    return result


def _check_name(name: str) -> None:
    try:
        etree.QName(_NS, name)
    except ValueError:
        raise ValueError(f"{name!r} is not a valid field name (not an XML name)") from None


def _field_element(name: str, value: object) -> etree._Element:
    nested = _sobject_view(value)
    if nested is not None:
        return _nested_element(name, nested)
    element = etree.Element(etree.QName(_NS, name))
    text = _text(name, value)
    try:
        element.text = text
    except ValueError:
        raise ValueError(
            f"field {name}: the value holds characters XML cannot carry (NUL, control codes)"
        ) from None
    return element


def _nested_element(name: str, parts: Mapping[str, Any]) -> etree._Element:
    """``<Account xsi:type="sf:sObject"><type>Account</type>...``: a relationship value."""
    element = etree.Element(etree.QName(_NS, name), nsmap={"sf": _NS, "xsi": _XSI_NS})
    element.set(_XSI_TYPE, "sf:sObject")
    etree.SubElement(element, etree.QName(_NS, "type")).text = parts["type"]
    for null in parts.get("fieldsToNull") or []:
        etree.SubElement(element, etree.QName(_NS, "fieldsToNull")).text = null
    if parts.get("Id") is not None:
        etree.SubElement(element, etree.QName(_NS, "Id")).text = parts["Id"]
    # Copies: an lxml element has one parent, and the nested record may be used again.
    element.extend(copy.deepcopy(child) for child in parts.get("_value_1") or [])
    return element


def _text(name: str, value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float | Decimal):
        if not (math.isfinite(value) if isinstance(value, float) else value.is_finite()):
            raise ValueError(f"field {name}: Salesforce has no {value} (NaN or infinity)")
        return str(value)
    if isinstance(value, dt.datetime):
        offset = value.utcoffset()
        if offset is None:
            raise ValueError(
                f"field {name}: a naive datetime; give it a tzinfo (Salesforce reads a "
                "dateTime without an offset as UTC)"
            )
        text = value.isoformat()
        return text[: -len("+00:00")] + "Z" if not offset else text
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Mapping) and "type" in value:
        raise TypeError(
            f"field {name}: a plain dict; build a relationship value with "
            f"sobject({value['type']!r}, ...)"
        )
    raise TypeError(
        f"field {name}: cannot send {_type_name(value)} (str, bool, int, float, Decimal, "
        "datetime, date, bytes, None or sobject(...))"
    )


# --- reading ----------------------------------------------------------------------------


def _is_sobject(value: object) -> bool:
    """Whether ``value`` is a partner sObject: a dict from :func:`sobject` or zeep's object."""
    if isinstance(value, Mapping):
        return "type" in value and "_value_1" in value and set(value) <= _PARTS
    xsd_type = getattr(value, "_xsd_type", None)
    return xsd_type is not None and getattr(xsd_type, "qname", None) == etree.QName(_SOBJECT_TYPE)


def _sobject_view(value: object) -> Mapping[str, Any] | None:
    if not _is_sobject(value):
        return None
    if isinstance(value, Mapping):
        return value
    read: Any = value
    return {key: read[key] for key in _PARTS}


def _collect(
    type_name: object,
    record_id: object,
    nulls: Iterable[str] | None,
    elements: Iterable[object] | None,
    types: Mapping[str, str],
    prefix: str,
) -> dict[str, object]:
    result: dict[str, object] = {"type": type_name, "Id": record_id}
    for name in nulls or []:
        result[name] = None
    for element in elements or []:
        if not isinstance(element, etree._Element):
            raise ValueError(
                f"this {type_name} record holds a field zeep parsed into "
                f"{_type_name(element)} without its name (a relationship, sub-query or "
                "compound field): build the client with connect(), or call "
                "keep_field_names(client) once, so such fields stay XML with their names"
            )
        if not isinstance(element.tag, str):
            continue  # comments, processing instructions
        name = etree.QName(element).localname
        value = _value(element, types, prefix + name)
        if name == "Id" and value is None and result.get("Id") is not None:
            continue
        result[name] = value
    return result


def _children(element: etree._Element) -> list[etree._Element]:
    return [child for child in element if isinstance(child.tag, str)]


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname


def _xsi_type(element: etree._Element) -> str | None:
    value = element.get(_XSI_TYPE)
    return None if value is None else value.rpartition(":")[2]


def _is_nil(element: etree._Element) -> bool:
    return (element.get(_XSI_NIL) or "").strip() in ("true", "1")


def _value(element: etree._Element, types: Mapping[str, str], path: str) -> object:
    if _is_nil(element):
        return None
    children = _children(element)
    if not children:
        return _convert(element.text or "", types.get(path.lower()), path)
    kind = _xsi_type(element)
    if kind == "sObject" or (kind is None and _local(children[0]) == "type"):
        return _element_record(element, types, path + ".")
    if kind == "QueryResult":
        return _query_result(children, types, path + ".")
    return {_local(child): _value(child, types, f"{path}.{_local(child)}") for child in children}


def _element_record(
    element: etree._Element, types: Mapping[str, str], prefix: str
) -> dict[str, object]:
    type_name: str | None = None
    record_id: str | None = None
    seen_type = seen_id = False
    nulls: list[str] = []
    rest: list[etree._Element] = []
    for child in _children(element):
        name = _local(child)
        if name == "type" and not seen_type:
            seen_type, type_name = True, child.text
        elif name == "fieldsToNull":
            nulls.append(child.text or "")
        elif name == "Id" and not seen_id:
            seen_id, record_id = True, None if _is_nil(child) else child.text
        else:
            rest.append(child)
    return _collect(type_name, record_id, nulls, rest, types, prefix)


def _query_result(
    children: list[etree._Element], types: Mapping[str, str], prefix: str
) -> dict[str, object]:
    result: dict[str, object] = {"done": None, "queryLocator": None, "records": [], "size": None}
    records: list[dict[str, object]] = []
    for child in children:
        name = _local(child)
        if name == "records":
            records.append(_element_record(child, types, prefix))
        elif name == "done":
            result["done"] = _boolean((child.text or "").strip())
        elif name == "size":
            result["size"] = int((child.text or "0").strip())
        elif name == "queryLocator":
            result["queryLocator"] = None if _is_nil(child) else child.text
    result["records"] = records
    return result


def _boolean(text: str) -> bool:
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError("not true or false")


def _datetime(text: str) -> dt.datetime:
    # Salesforce sends 2024-01-31T10:00:00.000Z; Python 3.10 does not read the Z.
    value = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


_CONVERTERS: dict[str, Callable[[str], object]] = {
    "boolean": _boolean,
    "int": int,
    "long": int,
    "double": Decimal,
    "currency": Decimal,
    "percent": Decimal,
    "date": dt.date.fromisoformat,
    "datetime": _datetime,
    "base64": base64.b64decode,
    # describe's soapType, lower-cased
    "xsd:boolean": _boolean,
    "xsd:int": int,
    "xsd:long": int,
    "xsd:double": Decimal,
    "xsd:date": dt.date.fromisoformat,
    "xsd:datetime": _datetime,
    "xsd:base64binary": base64.b64decode,
}
"""describe's field types (``type`` or ``soapType``, lower case) that :func:`fields` converts."""


def _convert(text: str, kind: str | None, path: str) -> object:
    convert = _CONVERTERS.get(kind) if kind is not None else None
    if convert is None:
        return text
    if not text.strip():
        return None
    try:
        return convert(text.strip())
    except (ValueError, ArithmeticError) as exc:  # decimal.InvalidOperation is arithmetic
        raise ValueError(f"field {path}: {text!r} is not a {kind} value") from exc


def _type_name(value: object) -> str:
    return "None" if value is None else f"a {type(value).__name__}"
