"""Query rows: flattening fields() records and rendering them as table, CSV, JSON, JSON lines."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import unicodedata
from collections.abc import Mapping, Sequence
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zeep_sfrefresh._rows import (
    FORMATS,
    ChildRecords,
    columns,
    flatten,
    progress_text,
    render,
    render_csv,
    render_json,
    render_jsonl,
    render_table,
    summary,
)

Rows = Sequence[Mapping[str, object]]

CONTACT = {
    "type": "Contact",
    "Id": "003000000000001AAA",
    "LastName": "Lovelace",
    "Email": None,
    "Account": {
        "type": "Account",
        "Id": None,
        "Name": "Acme",
        "Owner": {"type": "User", "Id": None, "Alias": "ada"},
    },
    "MailingAddress": {"city": "London", "state": None},
    "Cases__r": {
        "done": True,
        "queryLocator": None,
        "records": [{"type": "Case__c", "Id": None, "Subject__c": "Engine"}],
        "size": 1,
    },
}


def width_of(text: str) -> int:
    """Terminal columns, counted independently of the module (no combining marks in tests)."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def table(rows: Rows, width: int | None = None) -> list[str]:
    out = io.StringIO()
    render_table(rows, out, width=width)
    text = out.getvalue()
    assert text == "" or text.endswith("\n")
    return text.splitlines()


def rendered(format: str, rows: Rows) -> str:
    out = io.StringIO()
    render(format, rows, out)
    return out.getvalue()


# --- flatten and columns ----------------------------------------------------------------


def test_flatten_makes_dotted_columns_two_levels_deep() -> None:
    row = flatten(CONTACT)
    assert row == {
        "Id": "003000000000001AAA",
        "LastName": "Lovelace",
        "Email": None,
        "Account.Name": "Acme",
        "Account.Owner.Alias": "ada",
        "MailingAddress.city": "London",
        "MailingAddress.state": None,
        "Cases__r": [{"Subject__c": "Engine"}],
    }
    assert list(row) == list(columns([row]))  # Salesforce's field order is kept


def test_flatten_drops_type_and_only_unselected_ids() -> None:
    record = {
        "type": "Contact",
        "Id": None,
        "Account": {"type": "Account", "Id": "001A", "Name": "Acme"},
    }
    assert flatten(record) == {"Account.Id": "001A", "Account.Name": "Acme"}


def test_null_lookup_is_a_placeholder_that_gives_way_to_its_columns() -> None:
    empty = flatten({"type": "Contact", "Id": "003B", "Account": None, "LastName": "Byron"})
    assert empty == {"Id": "003B", "Account": None, "LastName": "Byron"}
    full = flatten(
        {"type": "Contact", "Id": "003A", "Account": {"type": "Account", "Id": None, "Name": "A"}}
        | {"LastName": "Lovelace"}
    )
    # The null lookup comes first, yet Account.Name keeps the Account field's place.
    assert columns([empty, full]) == ["Id", "Account.Name", "LastName"]
    lines = table([empty, full])
    assert lines[0].split() == ["Id", "Account.Name", "LastName"]
    assert lines[2].split() == ["003B", "Byron"]  # the Account.Name cell is empty
    # Every lookup empty: the column is still there, empty.
    assert columns([empty]) == ["Id", "Account", "LastName"]
    assert json.loads(rendered("json", [empty, full]))[0] == {
        "Id": "003B",
        "Account.Name": None,
        "LastName": "Byron",
    }


def test_nested_null_lookup_keeps_its_place_too() -> None:
    first = flatten(
        {"type": "Contact", "Id": None, "Account": {"type": "Account", "Id": None, "Owner": None}}
        | {"Email": "a@example.com"}
    )
    second = flatten(
        {
            "type": "Contact",
            "Id": None,
            "Account": {"type": "Account", "Id": None, "Owner": {"type": "User", "Alias": "x"}},
            "Email": "b@example.com",
        }
    )
    assert first == {"Account.Owner": None, "Email": "a@example.com"}
    assert columns([first, second]) == ["Account.Owner.Alias", "Email"]


def test_sub_query_is_its_records_counted_for_people_and_listed_for_json() -> None:
    partial = {
        "type": "Account",
        "Id": None,
        "Name": "Acme",
        "Contacts": {
            "done": False,
            "queryLocator": "01g-200",
            "records": [{"type": "Contact", "Id": None, "LastName": f"C{i}"} for i in range(200)],
            "size": 250,
        },
    }
    row = flatten(partial)
    children = row["Contacts"]
    assert isinstance(children, ChildRecords)
    assert (len(children), children.total) == (200, 250)
    assert children[0] == {"LastName": "C0"}
    assert table([row])[2].split("  ") == ["Acme", "200 of 250 records"]
    assert table([flatten(CONTACT)])[2].endswith("  1 record")
    assert rendered("csv", [row]).splitlines()[1] == "Acme,250"
    assert json.loads(rendered("json", [row]))[0]["Contacts"][199] == {"LastName": "C199"}


def test_columns_are_the_union_in_first_seen_order() -> None:
    rows: list[dict[str, object]] = [{"b": 1, "a": 2}, {"c": 3, "a": 4}, {"d": None, "b": 5}]
    assert columns(rows) == ["b", "a", "c", "d"]
    assert columns([]) == []


# --- table ------------------------------------------------------------------------------

PEOPLE: list[dict[str, object]] = [
    {"Id": "003A", "Name": "Ada Lovelace", "Email": "ada@example.com", "Score": 7},
    {"Id": "003B", "Name": "Bo", "Email": None, "Score": 1234},
    {"Id": "003C", "Name": None, "Email": "c@example.com", "Score": None},
]


def test_table_aligns_columns_under_a_header_and_rule() -> None:
    lines = table(PEOPLE)
    assert lines == [
        "Id    Name          Email            Score",
        "----  ------------  ---------------  -----",
        "003A  Ada Lovelace  ada@example.com      7",
        "003B  Bo                              1234",
        "003C                c@example.com",
    ]
    assert all(line == line.rstrip() for line in lines)


def test_table_of_no_rows_is_empty() -> None:
    assert table([]) == []


def test_table_shows_newlines_and_control_codes_escaped_on_one_line() -> None:
    lines = table([{"Note": "one\ntwo\tthree\x1b[31m", "Next": "x"}])
    assert len(lines) == 3
    assert lines[2] == "one\\ntwo\\tthree\\x1b[31m  x"


def test_table_counts_wide_characters_twice_so_columns_line_up() -> None:
    rows = [{"Name": "山田太郎", "City": "東京"}, {"Name": "Bob", "City": "Paris"}]
    lines = table(rows)
    assert lines[1] == "--------  -----"
    starts = [
        width_of(line[: line.index(city)])
        for line, city in zip(lines, ["City", "  -", "東京", "Paris"], strict=True)
    ]
    assert starts == [10, 8, 10, 10]  # "山田太郎" is 8 columns wide, then two spaces


def test_width_narrows_the_widest_columns_and_keeps_headers() -> None:
    rows: list[dict[str, object]] = [
        {"Id": "003A", "Description": "x" * 90, "Title": "Countess of Lovelace"},
        {"Id": "003B", "Description": "short", "Title": "Poet"},
    ]
    assert max(map(width_of, table(rows))) > 60
    lines = table(rows, width=60)
    assert all(width_of(line) <= 60 for line in lines)
    assert max(map(width_of, lines)) == 60  # no width wasted
    assert lines[0].split() == ["Id", "Description", "Title"]
    assert lines[2].startswith("003A  xxx")
    assert "…" in lines[2]
    assert lines[2].endswith("Countess of Lovelace")  # the narrow column is left whole
    assert "…" not in lines[3]


def test_width_never_cuts_a_header_while_other_columns_can_give() -> None:
    rows = [{"Id": "003A", "AccountDescription": "y" * 40, "Note": "z" * 40}]
    lines = table(rows, width=40)
    assert [width_of(line) for line in lines] == [30, 40, 40]  # the header ends at "Note"
    assert lines[0].split() == ["Id", "AccountDescription", "Note"]
    assert lines[2] == "003A  " + "y" * 17 + "…  " + "z" * 13 + "…"


def test_width_cuts_wide_characters_without_overflowing() -> None:
    rows = [{"Name": "山田太郎山田太郎山田太郎", "City": "東京"}]
    lines = table(rows, width=15)
    assert all(width_of(line) <= 15 for line in lines)
    assert "…" in lines[2]


def test_too_narrow_a_terminal_cuts_headers_then_lines() -> None:
    rows = [{f"Column{i}": "value" for i in range(8)}]
    lines = table(rows, width=46)  # 8 columns of 4 and their 7 gaps
    assert [width_of(line) for line in lines] == [46, 46, 46]
    assert lines[0].split() == ["Col…"] * 8
    assert lines[2].split() == ["val…"] * 8
    lines = table(rows, width=48)  # two columns to spare go to the first columns
    assert lines[0].split() == ["Colu…"] * 2 + ["Col…"] * 6
    lines = table(rows, width=20)
    assert [width_of(line) for line in lines] == [20, 20, 20]
    assert all(line.endswith("…") for line in lines)


def test_width_must_be_positive() -> None:
    with pytest.raises(ValueError, match="width"):
        table(PEOPLE, width=0)


VALUE_CHARS = st.sampled_from(list("abcXYZ 09,\"'\n\t\x1b\r山田é…\u3000"))
VALUES = st.one_of(
    st.none(),
    st.text(VALUE_CHARS, max_size=30),
    st.integers(-(10**12), 10**12),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
)
ROWS = st.lists(
    st.dictionaries(st.sampled_from(["Id", "Name", "Account.Name", "説明", "x"]), VALUES),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(rows=ROWS, width=st.one_of(st.none(), st.integers(1, 120)))
def test_table_lines_fit_and_have_no_trailing_space(rows: Rows, width: int | None) -> None:
    lines = table(rows, width)
    names = columns(rows)
    assert len(lines) == (len(rows) + 2 if names else 0)  # one line a row, whatever the text
    for line in lines:
        assert line == line.rstrip()
        if width is not None:
            assert width_of(line) <= width
    if width is None and names:
        assert lines[0].split() == [name for name in names if name]


# --- CSV and JSON -----------------------------------------------------------------------


def test_csv_quotes_commas_quotes_and_newlines() -> None:
    rows: list[dict[str, object]] = [
        {"Name": 'Lovelace, "Ada"', "Note": "line one\nline two", "Ok": True},
        {"Name": "Byron", "Note": None, "Ok": False},
    ]
    text = rendered("csv", rows)
    assert text == ('Name,Note,Ok\n"Lovelace, ""Ada""","line one\nline two",true\nByron,,false\n')
    assert list(csv.reader(io.StringIO(text))) == [
        ["Name", "Note", "Ok"],
        ['Lovelace, "Ada"', "line one\nline two", "true"],
        ["Byron", "", "false"],
    ]
    assert rendered("csv", []) == ""


def test_json_turns_salesforce_values_into_json_text() -> None:
    row = {
        "Amount": Decimal("15000000.10"),
        "Due": dt.date(2024, 1, 31),
        "Seen": dt.datetime(2024, 1, 31, 10, 0, tzinfo=dt.timezone.utc),
        "Local": dt.datetime(2024, 1, 31, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        "Body": b"\x00\xffdata",
        "Name": "Zoë 山田",
        "Count": 3,
        "Done": True,
    }
    text = rendered("json", [row, {"Name": "other"}])
    assert text.startswith('[\n {\n  "Amount"')  # indent=1
    assert text.endswith("]\n")
    assert "Zoë 山田" in text  # not \u escapes
    first, second = json.loads(text)
    assert first == {
        "Amount": "15000000.10",
        "Due": "2024-01-31",
        "Seen": "2024-01-31T10:00:00Z",
        "Local": "2024-01-31T10:00:00+02:00",
        "Body": base64.b64encode(b"\x00\xffdata").decode(),
        "Name": "Zoë 山田",
        "Count": 3,
        "Done": True,
    }
    assert list(second) == list(first)  # the same keys in every object
    assert second["Amount"] is None
    assert rendered("json", []) == "[]\n"


def test_jsonl_writes_one_compact_object_a_line() -> None:
    rows: list[dict[str, object]] = [
        {"Note": "two\nlines", "N": Decimal("1.5")},
        {"Note": None},
        {"N": 2},
    ]
    lines = rendered("jsonl", rows).split("\n")
    assert lines[-1] == ""
    assert len(lines[:-1]) == 3
    assert lines[0] == '{"Note":"two\\nlines","N":"1.5"}'
    assert [json.loads(line) for line in lines[:-1]][2] == {"Note": None, "N": 2}
    assert rendered("jsonl", []) == ""


def test_render_dispatches_on_each_format() -> None:
    for format, writer in [("csv", render_csv), ("json", render_json), ("jsonl", render_jsonl)]:
        direct = io.StringIO()
        writer(PEOPLE, direct)
        assert rendered(format, PEOPLE) == direct.getvalue()
    out = io.StringIO()
    render("table", PEOPLE, out, width=20)
    assert out.getvalue().splitlines() == table(PEOPLE, width=20)
    assert FORMATS == ("table", "csv", "json", "jsonl")


def test_unknown_format_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"'yaml'.*table, csv, json, jsonl"):
        render("yaml", PEOPLE, io.StringIO())


# --- summary lines ----------------------------------------------------------------------


def test_summary_counts_rows_and_count_queries() -> None:
    assert summary(1) == "(1 row)"
    assert summary(3) == "(3 rows)"
    assert summary(0) == "(0 rows)"
    assert summary(3, 3) == "(3 rows)"
    assert summary(2000, 5312) == "(2000 of 5312 rows)"
    assert summary(0, 42) == "count: 42"  # SELECT COUNT(): no records, the count as size
    assert summary(0, 0) == "(0 rows)"
    with pytest.raises(ValueError, match="negative"):
        summary(-1)


def test_progress_text() -> None:
    assert progress_text(2000, 5312) == "fetched 2000 of 5312 records"
    assert progress_text(1, 1) == "fetched 1 of 1 record"
