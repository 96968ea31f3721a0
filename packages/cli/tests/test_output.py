"""Tables, single objects and JSON as the commands print them."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from tollgate_cli.output import cell, fields, one_line, table, to_json


def test_table_aligns_columns_and_right_aligns_numbers() -> None:
    text = table(
        ["EMAIL", "BALANCE", "ROLE"],
        [("ada@example.com", "100.5", "admin"), ("bo@example.com", "-2", "client")],
    )
    assert text.splitlines() == [
        "EMAIL            BALANCE  ROLE",
        "ada@example.com    100.5  admin",
        "bo@example.com        -2  client",
    ]


def test_table_shows_none_booleans_lists_and_times() -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, 678, tzinfo=UTC)
    text = table(["A", "B", "C", "D"], [(None, True, ["x", "y"], when), (1, False, [], None)])
    lines = text.splitlines()
    assert lines[1].split() == ["-", "yes", "x,y", "2030-01-02T03:04:05+00:00"]
    assert lines[2].split() == ["1", "no", "-", "-"]


def test_a_column_of_dashes_only_stays_left_aligned() -> None:
    assert table(["REV", "AFTER", "MSG"], [("a1b2", None, "first")]).splitlines() == [
        "REV   AFTER  MSG",
        "a1b2  -      first",
    ]


def test_table_without_rows_is_its_header() -> None:
    assert table(["ID", "NAME"], []) == "ID  NAME"


def test_table_refuses_a_row_of_the_wrong_width() -> None:
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        table(["A", "B", "C"], [(1, 2)])


def test_cells_never_break_a_line() -> None:
    assert cell("two\nlines") == "two lines"


def test_fields_align_values() -> None:
    assert fields([("id", 7), ("balance", "1.5")]) == "id:      7\nbalance: 1.5"


def test_json_writes_ids_amounts_and_times_as_strings() -> None:
    key = uuid.UUID(int=1)
    when = datetime(2030, 1, 1, tzinfo=UTC)
    data = json.loads(to_json({"id": key, "at": when, "amount": Decimal("1.5"), "t": (1, 2)}))
    assert data == {
        "id": str(key),
        "at": "2030-01-01T00:00:00+00:00",
        "amount": "1.5",
        "t": [1, 2],
    }


def test_one_line_keeps_the_first_line_and_cuts_long_ones() -> None:
    assert one_line("\n  first  \nsecond") == "first"
    cut = one_line("x" * 500, limit=20)
    assert len(cut) == 20 and cut.endswith("...")
