"""Query results as rows: flatten :func:`~zeep_sfrefresh._records.fields` dicts, then print them.

A SOQL answer is a tree (``Account.Owner.Name``, child sub-queries); a terminal, a
spreadsheet or ``jq`` wants rows with the same columns. :func:`flatten` turns one record into
one flat row with dotted column names, :func:`columns` finds the columns of many rows, and
:func:`render` writes them as an aligned table, CSV, a JSON array or JSON lines.
:func:`summary` and :func:`progress_text` are the CLI's count and progress lines.

Everything here is pure: no zeep, no network, no file but the text stream it is given, so
the formatting is tested without an org and the CLI stays a thin shell around it.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import json
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Final, TextIO

__all__ = [
    "FORMATS",
    "ChildRecords",
    "columns",
    "flatten",
    "progress_text",
    "render",
    "render_csv",
    "render_json",
    "render_jsonl",
    "render_table",
    "summary",
]

FORMATS: Final = ("table", "csv", "json", "jsonl")
"""The output formats :func:`render` knows, in the order a ``--format`` help should list them."""

_MIN_WIDTH: Final = 4
"""The narrowest a column is squeezed to (or its natural width, if that is less): three
characters and "…" still tell values apart; fewer would be a column of ellipses."""

_ELLIPSIS: Final = "…"
_SEPARATOR: Final = "  "
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
"""What a table cell cannot show as is: C0/C1 control codes (newline, tab, ESC, which could
also drive the terminal) and the Unicode line and paragraph separators."""
_NAMED_ESCAPES: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


class ChildRecords(list[dict[str, object]]):
    """A child sub-query's records, flattened, in a row's column (``Contacts`` in
    ``SELECT Name, (SELECT LastName FROM Contacts) FROM Account``).

    It is a list, so it compares equal to a plain list of rows and ``json`` writes it as an
    array: JSON output keeps the child records. ``total`` is the sub-query's ``size``, the
    number of child records Salesforce has: it can exceed ``len()`` when the sub-query
    answer is not ``done`` (Salesforce sends child records in batches and ``query`` does not
    fetch the rest), which the table shows as "200 of 250 records" rather than a wrong count.
    """

    total: int

    def __init__(self, records: Iterable[dict[str, object]] = (), total: int | None = None) -> None:
        super().__init__(records)
        self.total = len(self) if total is None else max(total, len(self))

    def __repr__(self) -> str:
        return f"ChildRecords({list.__repr__(self)}, total={self.total})"


# --- flattening -------------------------------------------------------------------------


def flatten(record: Mapping[str, object]) -> dict[str, object]:
    """One :func:`~zeep_sfrefresh._records.fields` record as one flat row, for printing.

    A table needs one value per column, so the record's tree becomes dotted column names:

    - ``type`` is dropped (every row of a query has the same one), and so is an ``Id`` that is
      None, at any level: Salesforce sends ``Id`` nil when the query did not select it.
    - A relationship (``Account``, a dict with ``type``) becomes ``Account.Name``,
      ``Account.Owner.Name``... recursively. A compound field (``MailingAddress``) likewise
      becomes ``MailingAddress.city`` and so on, null parts included.
    - A null relationship (the lookup is empty) or compound field becomes ``Account: None``:
      its sub-columns are unknown (nothing says which were selected), but the column must not
      vanish when every row's lookup is empty. :func:`columns` hides this placeholder when
      other rows have ``Account.*`` columns, so those print empty for this row.
    - A child sub-query (a dict with ``records``) becomes a :class:`ChildRecords` list of its
      records, each flattened: tables show "3 records", CSV the count, JSON the records. An
      empty sub-query arrives nil from Salesforce, so it is None (an empty cell) like a lookup.

    Other values (text, or what ``fields(record, describe)`` converted) stay as they are; the
    renderers turn them into text.
    """
    row: dict[str, object] = {}
    _flatten_into(row, "", record, is_record=True)
    return row


def _flatten_into(
    row: dict[str, object], prefix: str, values: Mapping[str, object], *, is_record: bool
) -> None:
    for name, value in values.items():
        if is_record and (name == "type" or (name == "Id" and value is None)):
            continue
        key = prefix + name
        if not isinstance(value, Mapping):
            row[key] = value
        elif _is_sub_query(value):
            records = value.get("records") or []
            size = value.get("size")
            row[key] = ChildRecords(
                (flatten(child) for child in _mappings(records)),
                total=size if isinstance(size, int) and not isinstance(size, bool) else None,
            )
        else:
            before = len(row)
            _flatten_into(row, key + ".", value, is_record="type" in value)
            if len(row) == before:  # a relationship with nothing selected but its null Id
                row[key] = None


def _is_sub_query(value: Mapping[str, object]) -> bool:
    return "records" in value and "type" not in value


def _mappings(records: object) -> list[Mapping[str, object]]:
    if not isinstance(records, Iterable) or isinstance(records, str | bytes | Mapping):
        return []
    return [record for record in records if isinstance(record, Mapping)]


def columns(rows: Sequence[Mapping[str, object]]) -> list[str]:
    """The column names of ``rows``: their union, in the order first seen.

    One exception keeps null lookups tidy: a placeholder such as ``Account`` (a row whose
    lookup was empty, see :func:`flatten`) is left out when another row has ``Account.Name``
    or other ``Account.*`` columns, and those columns take the placeholder's place, so a
    relationship's columns stay where Salesforce put the field even when the first rows'
    lookups are empty.
    """
    seen: dict[str, int] = {}
    for row in rows:
        for name in row:
            seen.setdefault(name, len(seen))
    parents = {name[:dot] for name in seen for dot in _dots(name)}

    def position(name: str) -> tuple[int, int]:
        group = min([seen[name[:dot]] for dot in _dots(name) if name[:dot] in seen] or [seen[name]])
        return (min(group, seen[name]), seen[name])

    return sorted((name for name in seen if name not in parents), key=position)


def _dots(name: str) -> list[int]:
    return [index for index, char in enumerate(name) if char == "."]


# --- text of values ---------------------------------------------------------------------


def _iso(value: dt.date | dt.time) -> str:
    """ISO 8601, with ``Z`` for UTC as Salesforce writes it (and as an untyped query shows)."""
    text = value.isoformat()
    if isinstance(value, dt.datetime | dt.time) and value.utcoffset() == dt.timedelta(0):
        text = text.removesuffix("+00:00") + "Z"
    return text


def _records_text(value: Sequence[object]) -> str:
    total = value.total if isinstance(value, ChildRecords) else len(value)
    noun = "record" if total == 1 else "records"
    return f"{len(value)} of {total} {noun}" if total > len(value) else f"{total} {noun}"


def _text(value: object) -> str:
    """A value as table or CSV text: the text Salesforce would send, where it has one."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date | dt.time):
        return _iso(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list | tuple):
        if all(isinstance(item, Mapping) for item in value):
            return _records_text(value)
        return json.dumps(_jsonable(value), ensure_ascii=False)
    if isinstance(value, Mapping):
        return json.dumps(_jsonable(value), ensure_ascii=False)
    return str(value)  # int, Decimal (exactly as sent), float, anything else


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _jsonable(value: object) -> object:
    """``value`` as JSON-native data; see :func:`render_json` for the choices."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.date | dt.time):
        return _iso(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        if value and all(isinstance(item, Mapping) for item in value):
            return _json_rows(value)
        return [_jsonable(item) for item in value]
    return str(value)


def _json_rows(rows: Sequence[Mapping[str, object]]) -> list[dict[str, object]]:
    """Every row with the same keys (:func:`columns`), null where a row has no value."""
    names = columns(rows)
    return [{name: _jsonable(row.get(name)) for name in names} for row in rows]


# --- display width ----------------------------------------------------------------------


def _char_width(char: str) -> int:
    if unicodedata.combining(char) or (
        unicodedata.category(char) in ("Mn", "Me", "Cf") and char != "\u00ad"
    ):
        return 0  # accents, variation selectors, zero-width joiners draw on the previous cell
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _width(text: str) -> int:
    """Terminal columns ``text`` takes: 2 for wide (W) and fullwidth (F) characters."""
    if text.isascii():
        return len(text)
    return sum(_char_width(char) for char in text)


def _clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` terminal columns, ending in "…" when cut."""
    if _width(text) <= width:
        return text
    if width <= 0:
        return ""
    kept: list[str] = []
    used = 0
    for char in text:
        used += _char_width(char)
        if used > width - 1:
            break
        kept.append(char)
    return "".join(kept) + _ELLIPSIS


def _one_line(text: str) -> str:
    return _CONTROL.sub(lambda m: _NAMED_ESCAPES.get(m[0]) or f"\\x{ord(m[0]):02x}", text)


def _fit(natural: list[int], floors: list[int], budget: int) -> list[int] | None:
    """Column widths summing to at most ``budget``, cutting the widest first, none below its
    floor; None if the floors alone do not fit."""
    if sum(natural) <= budget:
        return natural

    def total(cap: int) -> int:
        return sum(
            max(floor, min(width, cap)) for width, floor in zip(natural, floors, strict=True)
        )

    if total(0) > budget:
        return None
    low, high = 0, max(natural)  # the largest cap that fits, by bisection
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if total(middle) <= budget else (low, middle - 1)
    widths = [max(floor, min(width, low)) for width, floor in zip(natural, floors, strict=True)]
    spare = budget - sum(widths)
    for index, width in enumerate(natural):  # one more column each, left first
        if spare and widths[index] == low < width:
            widths[index] += 1
            spare -= 1
    return widths


# --- renderers --------------------------------------------------------------------------


def render_table(
    rows: Sequence[Mapping[str, object]], out: TextIO, *, width: int | None = None
) -> None:
    """Write ``rows`` as an aligned table for a person at a terminal.

    A header, a rule of dashes, one line per row; columns two spaces apart, numbers (int,
    float, Decimal) right-aligned, no trailing spaces. Width counts terminal columns, so
    wide CJK characters (East Asian width W or F) count two and combining marks none. None
    is an empty cell, a sub-query "3 records", ``bool`` ``true``/``false``, dates ISO 8601.
    Newlines, tabs and other control characters are shown escaped (``\\n``, ``\\t``,
    ``\\x1b``), keeping each row on one line and the terminal safe from escape codes; the
    table is for reading, so a literal backslash-n is not told apart (CSV and JSON are exact).

    With ``width`` (the terminal's columns; at least 1) a table wider than that is narrowed
    so every line fits: the widest columns lose width first, each down to the longer of its
    header and 4 columns (or its natural width, if narrower), with "…" ending every cut cell.
    If that is still too wide, columns go down to 4 and headers are cut too; if even that
    does not fit, each line is cut at ``width`` with a final "…". No rows, no output.
    """
    if width is not None and width < 1:
        raise ValueError(f"width must be at least 1 terminal column, not {width}")
    names = columns(rows)
    if not names:
        return
    headers = [_one_line(name) for name in names]
    cells = [[_one_line(_text(row.get(name))) for name in names] for row in rows]
    numeric = [
        any(row.get(name) is not None for row in rows)
        and all(row.get(name) is None or _is_number(row.get(name)) for row in rows)
        for name in names
    ]
    header_widths = [_width(header) for header in headers]
    natural = [
        max([header_widths[index], *(_width(line[index]) for line in cells)])
        for index in range(len(names))
    ]
    widths, cut_lines = natural, False
    if width is not None:
        budget = width - len(_SEPARATOR) * (len(names) - 1)
        narrow = [min(natural_width, _MIN_WIDTH) for natural_width in natural]
        keep_headers = [
            min(natural_width, max(_MIN_WIDTH, header_width))
            for natural_width, header_width in zip(natural, header_widths, strict=True)
        ]
        fitted = _fit(natural, keep_headers, budget) or _fit(natural, narrow, budget)
        widths, cut_lines = (fitted, False) if fitted is not None else (narrow, True)

    def line(texts: list[str]) -> str:
        padded = []
        for text, column_width, right in zip(texts, widths, numeric, strict=True):
            text = _clip(text, column_width)
            gap = " " * (column_width - _width(text))
            padded.append(gap + text if right else text + gap)
        joined = _SEPARATOR.join(padded).rstrip()
        return _clip(joined, width) if cut_lines and width is not None else joined

    out.write(line(headers) + "\n")
    out.write(line(["-" * column_width for column_width in widths]) + "\n")
    for texts in cells:
        out.write(line(texts) + "\n")


def render_csv(rows: Sequence[Mapping[str, object]], out: TextIO) -> None:
    """Write ``rows`` as CSV for spreadsheets and scripts: a header row, then one per row.

    The ``csv`` module's default (Excel) dialect quotes commas, quotes and newlines, with
    ``\\n`` line ends (open ``out`` with ``newline=""`` on Windows). None is an empty field,
    ``bool`` ``true``/``false`` as Salesforce writes it, Decimal exactly as sent, dates ISO
    8601 (``Z`` for UTC), bytes base64, and a sub-query its number of child records (its
    ``size``), a number a spreadsheet can sum. No rows, no output (no header is known).
    """
    names = columns(rows)
    if not names:
        return
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow([_csv_text(row.get(name)) for name in names])


def _csv_text(value: object) -> str:
    if isinstance(value, ChildRecords):
        return str(value.total)
    return _text(value)


def render_json(rows: Sequence[Mapping[str, object]], out: TextIO) -> None:
    """Write ``rows`` as one JSON array of objects (``indent=1``, UTF-8 text, final newline).

    Every object has the same keys, :func:`columns` of the rows, with null where a row has
    no value, so tools such as ``jq`` and pandas see one shape. Values that JSON lacks are
    text: Decimal as its exact string (a JSON number would be read as a binary float),
    dates and datetimes ISO 8601 (``Z`` for UTC), bytes base64; a sub-query is the array of
    its flattened records.
    """
    json.dump(_json_rows(rows), out, indent=1, ensure_ascii=False)
    out.write("\n")


def render_jsonl(rows: Sequence[Mapping[str, object]], out: TextIO) -> None:
    """Write ``rows`` as JSON lines: one compact object per line, as :func:`render_json`
    writes them, for streaming tools (``jq -c``, log shippers). No rows, no output."""
    for item in _json_rows(rows):
        out.write(json.dumps(item, ensure_ascii=False, separators=(",", ":")) + "\n")


def render(
    format: str, rows: Sequence[Mapping[str, object]], out: TextIO, *, width: int | None = None
) -> None:
    """Write ``rows`` in ``format``, one of :data:`FORMATS`; ``width`` is for ``table`` only.

    An unknown format is a ValueError naming the known ones, so a ``--format`` typo reads
    well on the command line.
    """
    if format == "table":
        render_table(rows, out, width=width)
        return
    writers: dict[str, Callable[[Sequence[Mapping[str, object]], TextIO], None]] = {
        "csv": render_csv,
        "json": render_json,
        "jsonl": render_jsonl,
    }
    writer = writers.get(format)
    if writer is None:
        raise ValueError(f"unknown format {format!r}: choose one of {', '.join(FORMATS)}")
    writer(rows, out)


# --- summary lines ----------------------------------------------------------------------


def summary(shown: int, total: int | None = None) -> str:
    """The line under a table: "(1 row)", "(3 rows)", "(2000 of 5312 rows)", "count: 42".

    ``shown`` is the number of rows printed; ``total`` the query's ``size``, when known.
    ``SELECT COUNT() FROM ...`` answers with no records and the count as ``size``, so no
    rows with a positive total prints "count: 42". (With a count of 0 it cannot be told from
    an empty result and prints "(0 rows)".) Fewer rows than the total (the caller stopped
    early) says so.
    """
    if shown < 0 or (total is not None and total < 0):
        raise ValueError(f"row counts cannot be negative ({shown}, {total})")
    if shown == 0 and total:
        return f"count: {total}"
    if total is not None and total > shown:
        return f"({shown} of {total} rows)"
    return f"({shown} row{'' if shown == 1 else 's'})"


def progress_text(fetched: int, total: int) -> str:
    """The progress line while a long query pages through queryMore, for stderr:
    "fetched 2000 of 5312 records", so a person sees it is moving and how far it has to go."""
    return f"fetched {fetched} of {total} record{'' if total == 1 else 's'}"
