"""A tiny SOQL subset, enough for the stand-in org to answer realistic queries.

Grammar (keywords case-insensitive)::

    query     := SELECT selection FROM Object [WHERE condition [AND condition ...]] [LIMIT n]
    selection := COUNT() | path [, path ...]
    condition := path = literal
    path      := [Relationship.]... field

where ``literal`` is a single-quoted string (``\\'`` and ``\\\\`` escapes), ``true``,
``false``, ``null`` or a number, and ``Relationship`` is the relationship name of a reference
field (``Account`` for ``Contact.AccountId``), any number of them deep as the schema allows.
Object, relationship and field names are matched ignoring case; answers use the schema's
spelling. A path whose lookup is empty reads as null (``WHERE Account.Name = null`` matches a
Contact without an Account).

``COUNT()`` must stand alone: Salesforce's parser only knows it as the whole select list, so
``SELECT Id, COUNT() ...`` fails at its ``)`` (``COUNT`` there wants a field) and
``SELECT COUNT(), Id ...`` at the comma, both ``MALFORMED_QUERY`` "unexpected token". The
query then answers no records and the number that matched (capped by LIMIT) as its size.

Errors carry the row and column Salesforce reports, so the faults built from them look like the
real ``MALFORMED_QUERY`` / ``INVALID_TYPE`` / ``INVALID_FIELD`` ones. Anything outside the
subset (ORDER BY, sub-queries, aggregate functions such as ``COUNT(Id)``) is refused with one
of those errors rather than half-answered.

Relationship paths and ``COUNT()`` need an answer shape of their own, so :func:`resolve` only
accepts them when its caller says it can render them (the partner API and REST do; the
enterprise and tooling queries, which render flat typed records, do not: there a path gets the
INVALID_FIELD "Didn't understand relationship" error and ``COUNT()`` a MALFORMED_QUERY saying
the API does not answer it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from zeep_sfrefresh.testing.data import FieldSpec, Record, SObjectSpec, Value, id15, same_id

__all__ = [
    "Condition",
    "Cursor",
    "FieldPath",
    "ParentLookup",
    "Parents",
    "Relationship",
    "ResolvedQuery",
    "Selected",
    "SoqlError",
    "SoqlQuery",
    "TokenCursor",
    "matches",
    "parent_records",
    "parse",
    "resolve",
]

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<symbol>!=|<>|[,=()<>*])
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)

_EOF = "<EOF>"


class SoqlError(Exception):
    """A query Salesforce would refuse, with the code and position its fault reports."""

    def __init__(self, code: str, message: str, query: str, row: int, column: int) -> None:
        self.code = code
        self.message = message
        self.query = query
        self.row = row
        self.column = column
        super().__init__(self.exception_message)

    @property
    def exception_message(self) -> str:
        """The message in Salesforce's layout: the query line, a caret, the position, the text."""
        if self.row < 1:
            return self.message
        lines = self.query.splitlines() or [""]
        line = lines[min(self.row, len(lines)) - 1]
        caret = " " * (self.column - 1) + "^"
        return f"\n{line}\n{caret}\nERROR at Row:{self.row}:Column:{self.column}\n{self.message}"


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    row: int
    column: int


@dataclass(frozen=True)
class Condition:
    """``field = value`` in a WHERE clause (value already decoded from its literal)."""

    field: str
    """The field or relationship path as written (``Account.Name``)."""
    value: Value
    row: int
    column: int


@dataclass(frozen=True)
class SoqlQuery:
    """A parsed query, names as written (not yet checked against the schema)."""

    text: str
    fields: tuple[tuple[str, int, int], ...]
    """(name or path, row, column) for every selected field, in SELECT order (none for
    ``COUNT()``)."""
    sobject: str
    sobject_position: tuple[int, int]
    where: tuple[Condition, ...]
    limit: int | None
    count: tuple[int, int] | None = None
    """(row, column) of ``COUNT`` when the query is ``SELECT COUNT() ...``, else None."""


@dataclass(frozen=True)
class Relationship:
    """A parent relationship walked from a record: ``Account`` of a Contact.

    In a select list it carries what is read from the parent (``fields``, in SELECT order,
    possibly relationships of the parent in turn); in a WHERE path it is one hop and
    ``fields`` is empty.
    """

    name: str
    """The relationship name as the schema spells it (``Account``): the answer's element."""
    field: FieldSpec
    """The reference field holding the parent's Id (``Contact.AccountId``)."""
    sobject: SObjectSpec
    """The parent's object."""
    fields: tuple[FieldSpec | Relationship, ...] = ()


Selected = FieldSpec | Relationship
"""One entry of a resolved select list: a field of the record or a parent relationship."""


@dataclass(frozen=True)
class FieldPath:
    """A field reached from the queried record through zero or more parent relationships."""

    hops: tuple[Relationship, ...]
    field: FieldSpec


ParentLookup = Callable[[SObjectSpec, str], Mapping[str, Value] | None]
"""``lookup(object, record_id)``: that object's record with that Id (15 or 18 characters), or
None when there is none. How :func:`matches` and :func:`parent_records` reach parents."""

Parents = Mapping[tuple[str, str], Mapping[str, Value]]
"""Parent records by (object name, 15-character Id): what a query's answer reads, as data."""


@dataclass(frozen=True)
class ResolvedQuery:
    """A query checked against the schema: canonical names, ready to run."""

    sobject: SObjectSpec
    select: tuple[Selected, ...]
    """What each record answers, in SELECT order, relationships grouped at their first
    mention (as Salesforce nests them); empty for ``COUNT()``."""
    where: tuple[tuple[FieldPath, Value], ...]
    limit: int | None
    count: bool = False
    """``SELECT COUNT()``: answer the number of matches, no records."""

    @property
    def fields(self) -> tuple[FieldSpec, ...]:
        """The selected fields of the queried object itself, in SELECT order.

        The whole select list unless the query reads relationships, which only callers that
        resolved with ``relationships=True`` get (they render :attr:`select`).
        """
        return tuple(item for item in self.select if isinstance(item, FieldSpec))


@dataclass
class Cursor:
    """A query's snapshot, served batch by batch (SOAP queryMore, REST ``nextRecordsUrl``).

    The org keeps its cursors in one table, as Salesforce keeps one server-side cursor per
    query locator: a locator opened by one API can be continued by another, each rendering
    the records its own way. The records are copies taken when the query ran, so later
    batches show that moment, not later writes.
    """

    sobject: str
    fields: tuple[FieldSpec, ...]
    records: list[Record]
    batch_size: int = 2000
    """The batch size of the call that opened it, reused when a continuation names none."""
    select: tuple[Selected, ...] | None = None
    """The select list with its relationships; None when ``fields`` is all of it."""
    parents: Parents = field(default_factory=dict)
    """Copies of the parent records the relationships read, taken when the query ran."""


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    row, line_start = 1, 0
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup or "other"
        start = match.start()
        if kind != "space":
            tokens.append(_Token(kind, match.group(), row, start - line_start + 1))
        newlines = match.group().count("\n")
        if newlines:
            row += newlines
            line_start = start + match.group().rindex("\n") + 1
    lines = text.splitlines() or [""]
    tokens.append(_Token("eof", _EOF, len(lines), len(lines[-1]) + 1))
    return tokens


class TokenCursor:
    """Walks a token list: the moves the SOQL parser and the SOSL parser share.

    ``code`` is the fault code of a syntax error (``MALFORMED_QUERY``, ``MALFORMED_SEARCH``),
    ``reserved`` the keywords that are not names.
    """

    code = "MALFORMED_QUERY"
    reserved: frozenset[str] = frozenset({"SELECT", "FROM", "WHERE", "LIMIT"})

    def __init__(self, text: str, tokens: list[_Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.index = 0

    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def unexpected(self) -> SoqlError:
        token = self.current
        return SoqlError(
            self.code, f"unexpected token: {token.text}", self.text, token.row, token.column
        )

    def keyword(self, word: str) -> bool:
        token = self.current
        if token.kind == "name" and token.text.upper() == word:
            self.index += 1
            return True
        return False

    def name(self) -> _Token:
        token = self.current
        if token.kind != "name" or token.text.upper() in self.reserved:
            raise self.unexpected()
        self.index += 1
        return token

    def symbol(self, text: str) -> bool:
        if self.current.kind == "symbol" and self.current.text == text:
            self.index += 1
            return True
        return False

    def limit_and_end(self) -> int | None:
        """An optional ``LIMIT n``, then the end of the text."""
        limit = None
        if self.keyword("LIMIT"):
            if self.current.kind != "number" or not self.current.text.isdigit():
                raise self.unexpected()
            limit = int(self.current.text)
            self.index += 1
        if self.current.kind != "eof":
            raise self.unexpected()
        return limit


class _Parser(TokenCursor):
    def __init__(self, text: str) -> None:
        super().__init__(text, _tokenize(text))

    def expect_keyword(self, word: str) -> None:
        if not self.keyword(word):
            raise self.unexpected()

    def literal(self) -> Value:
        token = self.current
        self.index += 1
        if token.kind == "string":
            return re.sub(r"\\(.)", r"\1", token.text[1:-1])
        if token.kind == "number":
            return token.text
        if token.kind == "name" and token.text.lower() in {"true", "false"}:
            return token.text.lower() == "true"
        if token.kind == "name" and token.text.lower() == "null":
            return None
        self.index -= 1
        raise self.unexpected()

    def _ahead(self, offset: int, text: str) -> bool:
        token = self.tokens[min(self.index + offset, len(self.tokens) - 1)]
        return token.kind == "symbol" and token.text == text

    def _is_count(self) -> bool:
        """``COUNT ( )`` starts here (spaces allowed, as in Salesforce)."""
        token = self.current
        return (
            token.kind == "name"
            and token.text.upper() == "COUNT"
            and self._ahead(1, "(")
            and self._ahead(2, ")")
        )

    def _function(self) -> SoqlError:
        """The refusal of ``NAME(...)`` in a select list: a function the subset lacks."""
        token = self.current
        if token.text.upper() == "COUNT" and self._ahead(2, ")"):
            # COUNT() after another field: Salesforce's parser reads COUNT(field) there.
            self.index += 2
            return self.unexpected()
        return SoqlError(
            self.code,
            f"The stand-in org's SOQL does not support {token.text}(...); its only function "
            "is COUNT(), alone in the select list",
            self.text,
            token.row,
            token.column,
        )

    def query(self) -> SoqlQuery:
        self.expect_keyword("SELECT")
        fields = []
        count = None
        if self._is_count():
            count = (self.current.row, self.current.column)
            self.index += 3
        else:
            while True:
                if self.current.kind == "name" and self._ahead(1, "("):
                    raise self._function()
                token = self.name()
                fields.append((token.text, token.row, token.column))
                if not self.symbol(","):
                    break
        self.expect_keyword("FROM")
        sobject = self.name()
        where: list[Condition] = []
        if self.keyword("WHERE"):
            while True:
                token = self.name()
                if not self.symbol("="):
                    raise self.unexpected()
                value = self.literal()
                where.append(Condition(token.text, value, token.row, token.column))
                if not self.keyword("AND"):
                    break
        limit = self.limit_and_end()
        return SoqlQuery(
            self.text,
            tuple(fields),
            sobject.text,
            (sobject.row, sobject.column),
            tuple(where),
            limit,
            count,
        )


def parse(text: str) -> SoqlQuery:
    """Parse a query of the supported subset, or raise :class:`SoqlError` (MALFORMED_QUERY)."""
    return _Parser(text).query()


def _no_relationship(name: str, query: str, row: int, column: int) -> SoqlError:
    return SoqlError(
        "INVALID_FIELD",
        f"Didn't understand relationship '{name}' in field path. If you are attempting to use "
        "a custom relationship, be sure to append the '__r' after the custom relationship "
        "name. Please reference your WSDL or the describe call for the appropriate names.",
        query,
        row,
        column,
    )


def _no_column(name: str, spec: SObjectSpec, query: str, row: int, column: int) -> SoqlError:
    return SoqlError(
        "INVALID_FIELD",
        f"No such column '{name}' on entity '{spec.name}'. If you are attempting to use a "
        "custom field, be sure to append the '__c' after the custom field name. Please "
        "reference your WSDL or the describe call for the appropriate names.",
        query,
        row,
        column,
    )


class _Resolver:
    """Turns names as written into schema specs for one query (see :func:`resolve`)."""

    def __init__(
        self, query: SoqlQuery, schema: Mapping[str, SObjectSpec], *, relationships: bool
    ) -> None:
        self.query = query
        self.schema = schema
        self.relationships = relationships

    def relationship(self, spec: SObjectSpec, name: str) -> Relationship | None:
        """The parent relationship ``name`` of ``spec`` (any case), if the schema has it."""
        wanted = name.lower()
        for candidate in spec.fields:
            parent = self.schema.get((candidate.reference_to or "").lower())
            named = candidate.relationship_name
            if parent is not None and named is not None and named.lower() == wanted:
                return Relationship(named, candidate, parent)
        return None

    def path(self, spec: SObjectSpec, written: str, row: int, column: int) -> FieldPath:
        """``A.B.c`` from ``spec``: each hop a relationship, the last part a field."""
        *names, last = written.split(".")
        hops: list[Relationship] = []
        current = spec
        for name in names:
            hop = self.relationship(current, name) if self.relationships else None
            if hop is None:
                raise _no_relationship(name, self.query.text, row, column)
            hops.append(hop)
            current = hop.sobject
        found = current.field(last)
        if found is None:
            raise _no_column(last, current, self.query.text, row, column)
        return FieldPath(tuple(hops), found)


def _tree(paths: Sequence[FieldPath]) -> tuple[Selected, ...]:
    """The select list as a tree: a relationship's fields gathered at its first mention.

    Salesforce writes one element (one JSON object) per relationship, where the relationship
    is first selected, holding every field read through it in SELECT order.
    """
    order: list[FieldSpec | str] = []  # a field, or the reference field naming a group
    groups: dict[str, tuple[Relationship, list[FieldPath]]] = {}
    for path in paths:
        if not path.hops:
            order.append(path.field)
            continue
        hop = path.hops[0]
        if hop.field.name not in groups:
            groups[hop.field.name] = (hop, [])
            order.append(hop.field.name)
        groups[hop.field.name][1].append(FieldPath(path.hops[1:], path.field))
    result: list[Selected] = []
    for item in order:
        if isinstance(item, FieldSpec):
            result.append(item)
        else:
            hop, below = groups[item]
            result.append(Relationship(hop.name, hop.field, hop.sobject, _tree(below)))
    return tuple(result)


def resolve(
    query: SoqlQuery,
    schema: Mapping[str, SObjectSpec],
    *,
    relationships: bool = False,
    count: bool = False,
) -> ResolvedQuery:
    """Check object and field names against the schema, as Salesforce does after parsing.

    Raises :class:`SoqlError` with ``INVALID_TYPE`` for an unknown object and ``INVALID_FIELD``
    for an unknown field or relationship, worded like Salesforce's messages.

    ``relationships`` and ``count`` say whether the caller can answer relationship paths and
    ``COUNT()``; callers that cannot (they render flat records) leave them off and such
    queries fail as the subset failed them before: a path with the INVALID_FIELD "Didn't
    understand relationship" error, ``COUNT()`` with a MALFORMED_QUERY saying so.
    """
    spec = schema.get(query.sobject.lower())
    if spec is None:
        row, column = query.sobject_position
        raise SoqlError(
            "INVALID_TYPE",
            f"sObject type '{query.sobject}' is not supported. If you are attempting to use a "
            "custom object, be sure to append the '__c' after the entity name. Please reference "
            "your WSDL or the describe call for the appropriate names.",
            query.text,
            row,
            column,
        )
    if query.count is not None and not count:
        row, column = query.count
        raise SoqlError(
            "MALFORMED_QUERY",
            "The stand-in org answers COUNT() on the partner API and REST only",
            query.text,
            row,
            column,
        )
    resolver = _Resolver(query, schema, relationships=relationships)
    paths = [resolver.path(spec, *item) for item in query.fields]
    where = tuple(
        (resolver.path(spec, cond.field, cond.row, cond.column), cond.value) for cond in query.where
    )
    return ResolvedQuery(spec, _tree(paths), where, query.limit, count=query.count is not None)


def _equal(spec: FieldSpec, stored: Value, wanted: Value) -> bool:
    if stored is None or wanted is None:
        return stored is wanted
    if isinstance(stored, bool) or isinstance(wanted, bool):
        return stored == wanted
    if spec.soap_type == "tns:ID":
        return same_id(stored, wanted)
    # SOQL compares text case-insensitively.
    return stored.lower() == wanted.lower()


def _parent(
    hop: Relationship, record: Mapping[str, Value], lookup: ParentLookup | None
) -> Mapping[str, Value] | None:
    parent_id = record.get(hop.field.name)
    if not isinstance(parent_id, str) or not parent_id:
        return None
    if lookup is None:
        raise ValueError(f"this query reads {hop.name} records: pass a parent lookup")
    return lookup(hop.sobject, parent_id)


def _value(path: FieldPath, record: Mapping[str, Value], lookup: ParentLookup | None) -> Value:
    current = record
    for hop in path.hops:
        parent = _parent(hop, current, lookup)
        if parent is None:
            return None  # an empty lookup: every field beyond it is null
        current = parent
    return current.get(path.field.name)


def matches(
    query: ResolvedQuery, record: Mapping[str, Value], parents: ParentLookup | None = None
) -> bool:
    """Whether a record satisfies every WHERE condition of the query.

    ``parents`` finds the parent records of relationship paths; a query without them needs
    none (a ValueError if it does and none is given).
    """
    return all(
        _equal(path.field, _value(path, record, parents), value) for path, value in query.where
    )


def parent_records(
    select: Sequence[Selected], record: Mapping[str, Value], lookup: ParentLookup
) -> dict[tuple[str, str], Mapping[str, Value]]:
    """Every parent record the select list reads for ``record``, keyed as :data:`Parents`.

    The answer builders take parents as data rather than a lookup, so an answer (or a
    queryMore batch served later) shows the parents as they were when the query ran.
    """
    found: dict[tuple[str, str], Mapping[str, Value]] = {}

    def walk(items: Sequence[Selected], current: Mapping[str, Value]) -> None:
        for item in items:
            parent_id = current.get(item.field.name) if isinstance(item, Relationship) else None
            if isinstance(item, Relationship) and isinstance(parent_id, str):
                parent = _parent(item, current, lookup)
                if parent is not None:
                    found[(item.sobject.name, id15(parent_id))] = parent
                    walk(item.fields, parent)

    walk(select, record)
    return found
