"""A tiny SOSL subset, enough for the stand-in org to answer the partner API's ``search`` call.

Grammar (keywords case-insensitive)::

    FIND {term} [IN ALL FIELDS | IN NAME FIELDS | IN EMAIL FIELDS | IN PHONE FIELDS]
    [RETURNING Object [(field [, field ...])] [, Object [(field ...)] ...]] [LIMIT n]

How the stand-in matches, where Salesforce's search index does more:

* The term is split into words at spaces; a record matches when every word occurs, ignoring
  case, in one of its searched fields (SOSL's implicit AND). ``*`` in a word stands for any
  characters and ``?`` for one; a ``"quoted phrase"`` is one word; ``\\`` escapes the next
  character. The words must hold two characters or more besides wildcards, as in Salesforce.
* The searched fields follow the scope: ALL FIELDS (the default) every text field of the
  object, NAME FIELDS its name fields (``Name``, ``FirstName``, ``LastName``), EMAIL FIELDS its
  email fields, PHONE FIELDS its phone fields (none in the stand-in's schema).
* Without RETURNING every object of the schema is searched; an object without a field list
  returns its Id only. Records come object by object in RETURNING order, then in store order
  (Salesforce orders by relevance); LIMIT caps the total.
* Deleted records are never found.

Errors are :class:`zeep_sfrefresh.testing.soql.SoqlError` with Salesforce's codes: a string
that is not of this shape is ``MALFORMED_SEARCH`` (with the row and column of the offending
token when there is one), an unknown object ``INVALID_TYPE`` and an unknown field
``INVALID_FIELD``. The search operators (``AND``, ``OR``, ``AND NOT``, parentheses) and the
clauses this subset leaves out (``WHERE``, ``ORDER BY``, ``WITH`` ...) are refused with
``MALFORMED_SEARCH`` rather than half-answered.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from zeep_sfrefresh.testing.data import FieldSpec, SObjectSpec, Value
from zeep_sfrefresh.testing.soql import SoqlError, TokenCursor, _Token, _tokenize

__all__ = [
    "NO_TERM",
    "SCOPES",
    "ResolvedSearch",
    "SearchTarget",
    "SoslSearch",
    "matches",
    "parse",
    "resolve",
    "searched_fields",
]

_MALFORMED = "MALFORMED_SEARCH"
NO_TERM = "No search term found. The search term must be enclosed in braces."
"""Salesforce's MALFORMED_SEARCH message for a search string without ``{term}``."""

SCOPES = ("ALL", "NAME", "EMAIL", "PHONE")
"""The ``IN ... FIELDS`` scopes the subset knows."""

_NAME_PARTS = frozenset({"Name", "FirstName", "LastName"})
_OPERATORS = frozenset({"AND", "OR", "NOT"})
_KEYWORDS = frozenset({"FIND", "IN", "FIELDS", "RETURNING", "LIMIT"})


@dataclass(frozen=True)
class SoslSearch:
    """A parsed search, names as written (not yet checked against the schema)."""

    text: str
    words: tuple[str, ...]
    """One regular expression per word of the term (wildcards already translated)."""
    scope: str
    returning: tuple[tuple[_Token, tuple[_Token, ...]], ...]
    """(object token, its field tokens) per RETURNING entry; empty without RETURNING."""
    limit: int | None


@dataclass(frozen=True)
class SearchTarget:
    """One object to search and the fields to return of each hit."""

    sobject: SObjectSpec
    fields: tuple[FieldSpec, ...]


@dataclass(frozen=True)
class ResolvedSearch:
    """A search checked against the schema: compiled words and canonical names."""

    words: tuple[re.Pattern[str], ...]
    scope: str
    targets: tuple[SearchTarget, ...]
    limit: int | None


def _malformed(message: str, text: str, token: _Token | None = None) -> SoqlError:
    if token is None:
        return SoqlError(_MALFORMED, message, text, -1, -1)
    return SoqlError(_MALFORMED, message, text, token.row, token.column)


def _position(text: str, index: int) -> tuple[int, int]:
    """(row, column), both from 1, of a character offset."""
    before = text[:index]
    return before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1


def _term(text: str, start: int) -> tuple[tuple[str, ...], int]:
    """The words of the term whose ``{`` is at ``start`` and the offset of its ``}``."""
    words: list[str] = []
    current: list[str] = []
    plain: list[str] = []  # the current word as written, without escapes, for operator checks
    literal_characters = 0
    quoted = False
    index = start + 1

    def end_word() -> None:
        nonlocal current, plain
        if current:
            if not quoted and "".join(plain).upper() in _OPERATORS:
                raise _malformed(
                    f"The stand-in org's search supports no operators: {''.join(plain)}", text
                )
            words.append("".join(current))
        current, plain = [], []

    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            current.append(re.escape(text[index + 1]))
            plain.append("\\")  # an escaped word is never an operator
            literal_characters += 1
            index += 2
            continue
        if char == "}" and not quoted:
            end_word()
            if literal_characters < 2 or not words:
                term = text[start + 1 : index].strip()
                raise _malformed(f"search term must be longer than one character: {term}", text)
            return tuple(words), index
        if char == '"':
            if quoted:
                end_word()
            quoted = not quoted
        elif char.isspace() and not quoted:
            end_word()
        elif char in "()" and not quoted:
            raise _malformed("The stand-in org's search supports no parentheses in a term", text)
        elif char == "*":
            current.append(".*")
            plain.append(char)
        elif char == "?":
            current.append(".")
            plain.append(char)
        elif char.isspace():  # inside a quoted phrase
            current.append(r"\s+")
        else:
            current.append(re.escape(char))
            plain.append(char)
            literal_characters += 1
        index += 1
    row, column = _position(text, len(text))
    raise SoqlError(_MALFORMED, "unexpected token: <EOF>", text, row, column)


class _Parser(TokenCursor):
    """The clauses after the term, over the SOQL tokenizer's tokens."""

    code = _MALFORMED
    reserved = _KEYWORDS

    def clauses(self, words: tuple[str, ...]) -> SoslSearch:
        scope = "ALL"
        if self.keyword("IN"):
            token = self.current
            if token.kind != "name" or token.text.upper() not in SCOPES:
                raise self.unexpected()
            scope = token.text.upper()
            self.index += 1
            if not self.keyword("FIELDS"):
                raise self.unexpected()
        returning: list[tuple[_Token, tuple[_Token, ...]]] = []
        if self.keyword("RETURNING"):
            while True:
                sobject = self.name()
                fields: list[_Token] = []
                if self.symbol("("):
                    while True:
                        fields.append(self.name())
                        if not self.symbol(","):
                            break
                    if not self.symbol(")"):
                        raise self.unexpected()
                returning.append((sobject, tuple(fields)))
                if not self.symbol(","):
                    break
        limit = self.limit_and_end()
        return SoslSearch(self.text, words, scope, tuple(returning), limit)


def parse(text: str) -> SoslSearch:
    """Parse a search of the supported subset, or raise :class:`SoqlError` (MALFORMED_SEARCH)."""
    find = re.match(r"\s*(FIND)\b", text, re.IGNORECASE)
    if find is None:
        tokens = _tokenize(text)
        raise _malformed(f"unexpected token: {tokens[0].text}", text, tokens[0])
    brace = re.compile(r"\s*\{").match(text, find.end())
    if brace is None:
        raise _malformed(NO_TERM, text)
    words, close = _term(text, brace.end() - 1)
    # Tokenize the whole text with FIND and the term blanked out, so positions stay true.
    blanked = "".join(
        char if index >= close + 1 or char == "\n" else " " for index, char in enumerate(text)
    )
    return _Parser(text, _tokenize(blanked)).clauses(words)


def resolve(search: SoslSearch, schema: Mapping[str, SObjectSpec]) -> ResolvedSearch:
    """Check object and field names against the schema, as Salesforce does after parsing."""
    targets: list[SearchTarget] = []
    for sobject, field_tokens in search.returning:
        spec = schema.get(sobject.text.lower())
        if spec is None:
            raise SoqlError(
                "INVALID_TYPE",
                f"sObject type '{sobject.text}' is not supported. If you are attempting to use a "
                "custom object, be sure to append the '__c' after the entity name. Please "
                "reference your WSDL or the describe call for the appropriate names.",
                search.text,
                sobject.row,
                sobject.column,
            )
        fields = []
        for token in field_tokens:
            found = spec.field(token.text)
            if found is None:
                raise SoqlError(
                    "INVALID_FIELD",
                    f"No such column '{token.text}' on entity '{spec.name}'. If you are "
                    "attempting to use a custom field, be sure to append the '__c' after the "
                    "custom field name. Please reference your WSDL or the describe call for the "
                    "appropriate names.",
                    search.text,
                    token.row,
                    token.column,
                )
            fields.append(found)
        targets.append(SearchTarget(spec, tuple(fields) or _id_only(spec)))
    if not search.returning:
        targets = [SearchTarget(spec, _id_only(spec)) for spec in schema.values()]
    words = tuple(re.compile(word, re.IGNORECASE | re.DOTALL) for word in search.words)
    return ResolvedSearch(words, search.scope, tuple(targets), search.limit)


def _id_only(spec: SObjectSpec) -> tuple[FieldSpec, ...]:
    found = spec.field("Id")
    return (found,) if found is not None else ()


def searched_fields(spec: SObjectSpec, scope: str) -> tuple[FieldSpec, ...]:
    """The fields of an object a search in ``scope`` looks at."""
    if scope == "NAME":
        return tuple(f for f in spec.fields if f.name_field or f.name in _NAME_PARTS)
    if scope == "EMAIL":
        return tuple(f for f in spec.fields if f.type == "email")
    if scope == "PHONE":
        return tuple(f for f in spec.fields if f.type == "phone")
    return tuple(f for f in spec.fields if f.soap_type == "xsd:string")


def matches(search: ResolvedSearch, spec: SObjectSpec, record: Mapping[str, Value]) -> bool:
    """Whether every word of the term occurs in one of the record's searched fields."""
    texts = [
        value
        for value in (record.get(f.name) for f in searched_fields(spec, search.scope))
        if isinstance(value, str) and value
    ]
    return all(any(word.search(text) for text in texts) for word in search.words)
