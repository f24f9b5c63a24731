"""Query paging, written once for every API: a query's snapshot, its batches and locators.

A query runs once (:func:`run_query`): the matching records, and the parent records its
relationship fields read, are copied into a :class:`~zeep_sfrefresh.testing.soql.Cursor`, as
Salesforce snapshots a result, so later batches show that moment whatever was written since.
:class:`QueryCursors` serves the cursor batch by batch and keeps it, under a locator
(``<cursor id>-<offset>``), while more is to come. The org keeps one table of cursors, as
Salesforce keeps one server-side cursor per query locator: a locator opened by one API (SOAP
partner or enterprise ``query``, REST ``query``) can be continued by another (``queryMore``,
``nextRecordsUrl``), each rendering the batch its own way and wording its own errors.

Not thread-safe by itself: the org calls it with its lock held.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from zeep_sfrefresh.testing import soql
from zeep_sfrefresh.testing.data import Record, RecordStore, random_id

__all__ = ["InvalidQueryLocator", "Page", "QueryCursors", "parent_snapshot", "run_query"]


class InvalidQueryLocator(Exception):
    """A locator no open cursor has, or one past its end (each API words the refusal)."""


def parent_snapshot(
    select: Sequence[soql.Selected], records: Sequence[Record], lookup: soql.ParentLookup
) -> dict[tuple[str, str], Record]:
    """Copies of every parent record the select list reads for ``records`` (the moment's)."""
    snapshot: dict[tuple[str, str], Record] = {}
    for record in records:
        found = soql.parent_records(select, record, lookup)
        snapshot.update((key, dict(parent)) for key, parent in found.items())
    return snapshot


def run_query(
    query: soql.ResolvedQuery,
    records: RecordStore,
    lookup: soql.ParentLookup,
    *,
    include_deleted: bool = False,
    batch_size: int,
) -> soql.Cursor:
    """Run a resolved query over the records: its snapshot, served ``batch_size`` at a time.

    ``include_deleted`` is queryAll's (the recycle bin too). LIMIT is applied here; for a
    ``SELECT COUNT()`` the answer is the number of records the cursor holds.
    """
    matched = [
        record
        for record in records.scan(query.sobject.name, include_deleted=include_deleted)
        if soql.matches(query, record, lookup)
    ]
    if query.limit is not None:
        matched = matched[: query.limit]
    return soql.Cursor(
        query.sobject.name,
        query.fields,
        [dict(record) for record in matched],
        batch_size,
        query.select,
        parent_snapshot(query.select, matched, lookup),
    )


@dataclass(frozen=True)
class Page:
    """One batch of a cursor: records ``start`` to ``end`` (exclusive) of its snapshot."""

    cursor: soql.Cursor
    cursor_id: str
    start: int
    end: int

    @property
    def records(self) -> list[Record]:
        return self.cursor.records[self.start : self.end]

    @property
    def done(self) -> bool:
        """Whether this batch is the last one."""
        return self.end >= len(self.cursor.records)

    @property
    def locator(self) -> str | None:
        """Where the next batch starts (``<cursor id>-<end>``); None for the last batch."""
        return None if self.done else f"{self.cursor_id}-{self.end}"

    @property
    def total(self) -> int:
        """Records the whole query matched (what every batch reports as its size)."""
        return len(self.cursor.records)

    @property
    def select(self) -> Sequence[soql.Selected]:
        """What to render of each record: the select list with its relationships."""
        return self.cursor.fields if self.cursor.select is None else self.cursor.select


class QueryCursors:
    """The org's open query cursors, by cursor id, whichever API opened them."""

    def __init__(self) -> None:
        self._open: dict[str, soql.Cursor] = {}

    def first(self, cursor: soql.Cursor) -> Page:
        """The first batch of a query just run (its cursor kept when more is to come)."""
        return self._page(random_id("01g"), cursor, 0, cursor.batch_size)

    def resume(self, locator: str, batch_size: int | None = None) -> Page:
        """The batch a locator starts; ``batch_size`` None keeps the one the query had.

        Raises :class:`InvalidQueryLocator` for a locator no cursor has or one past its end.
        """
        cursor_id, _, offset = locator.rpartition("-")
        cursor = self._open.get(cursor_id)
        if cursor is None or not offset.isdigit() or int(offset) > len(cursor.records):
            raise InvalidQueryLocator(locator)
        size = cursor.batch_size if batch_size is None else batch_size
        return self._page(cursor_id, cursor, int(offset), size)

    def _page(self, cursor_id: str, cursor: soql.Cursor, start: int, size: int) -> Page:
        page = Page(cursor, cursor_id, start, start + size)
        if not page.done:
            self._open[cursor_id] = cursor
        return page
