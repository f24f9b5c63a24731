"""A tiny SOQL subset, enough for the stand-in org to answer realistic queries.

Grammar (keywords case-insensitive)::

    SELECT field [, field ...] FROM Object [WHERE field = literal [AND field = literal ...]]
    [LIMIT n]

where ``literal`` is a single-quoted string (``\\'`` and ``\\\\`` escapes), ``true``,
``false``, ``null`` or a number. Errors carry the row and column Salesforce reports, so the
faults built from them look like the real ``MALFORMED_QUERY`` / ``INVALID_TYPE`` /
``INVALID_FIELD`` ones. Anything outside the subset (ORDER BY, sub-queries, relationship paths)
is refused with one of those errors rather than half-answered.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from zeep_sfrefresh.testing.data import FieldSpec, SObjectSpec, Value, same_id

__all__ = [
    "Condition",
    "ResolvedQuery",
    "SoqlError",
    "SoqlQuery",
    "TokenCursor",
    "matches",
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
    value: Value
    row: int
    column: int


@dataclass(frozen=True)
class SoqlQuery:
    """A parsed query, names as written (not yet checked against the schema)."""

    text: str
    fields: tuple[tuple[str, int, int], ...]
    """(name, row, column) for every selected field, in SELECT order."""
    sobject: str
    sobject_position: tuple[int, int]
    where: tuple[Condition, ...]
    limit: int | None


@dataclass(frozen=True)
class ResolvedQuery:
    """A query checked against the schema: canonical names, ready to run."""

    sobject: SObjectSpec
    fields: tuple[FieldSpec, ...]
    where: tuple[tuple[FieldSpec, Value], ...]
    limit: int | None


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

    def query(self) -> SoqlQuery:
        self.expect_keyword("SELECT")
        fields = []
        while True:
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
        )


def parse(text: str) -> SoqlQuery:
    """Parse a query of the supported subset, or raise :class:`SoqlError` (MALFORMED_QUERY)."""
    return _Parser(text).query()


def resolve(query: SoqlQuery, schema: Mapping[str, SObjectSpec]) -> ResolvedQuery:
    """Check object and field names against the schema, as Salesforce does after parsing.

    Raises :class:`SoqlError` with ``INVALID_TYPE`` for an unknown object and ``INVALID_FIELD``
    for an unknown field, worded like Salesforce's messages.
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

    def lookup(name: str, row: int, column: int) -> FieldSpec:
        found = spec.field(name)
        if found is not None:
            return found
        if "." in name:
            relationship = name.split(".", 1)[0]
            message = (
                f"Didn't understand relationship '{relationship}' in field path. If you are "
                "attempting to use a custom relationship, be sure to append the '__r' after the "
                "custom relationship name. Please reference your WSDL or the describe call for "
                "the appropriate names."
            )
        else:
            message = (
                f"No such column '{name}' on entity '{spec.name}'. If you are attempting to use "
                "a custom field, be sure to append the '__c' after the custom field name. Please "
                "reference your WSDL or the describe call for the appropriate names."
            )
        raise SoqlError("INVALID_FIELD", message, query.text, row, column)

    fields = tuple(lookup(*item) for item in query.fields)
    where = tuple((lookup(cond.field, cond.row, cond.column), cond.value) for cond in query.where)
    return ResolvedQuery(spec, fields, where, query.limit)


def _equal(spec: FieldSpec, stored: Value, wanted: Value) -> bool:
    if stored is None or wanted is None:
        return stored is wanted
    if isinstance(stored, bool) or isinstance(wanted, bool):
        return stored == wanted
    if spec.soap_type == "tns:ID":
        return same_id(stored, wanted)
    # SOQL compares text case-insensitively.
    return stored.lower() == wanted.lower()


def matches(query: ResolvedQuery, record: Mapping[str, Value]) -> bool:
    """Whether a record satisfies every WHERE condition of the query."""
    return all(_equal(spec, record.get(spec.name), value) for spec, value in query.where)
