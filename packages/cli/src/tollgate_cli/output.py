"""What the commands print: aligned tables for people, JSON for scripts, one-line errors.

Only the standard library and Typer: this module is imported by every command module, so it
must stay cheap (shell completion imports it on every TAB).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, NoReturn

import typer

JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print JSON for scripts (amounts as decimal strings).")
]

_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def fail(message: str) -> NoReturn:
    """One line on stderr and exit status 1: never a traceback for a user's mistake."""
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(1)


def one_line(text: str, *, limit: int = 300) -> str:
    """The first non-empty line of `text`, cut to `limit` characters."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else ""
    return first if len(first) <= limit else first[: limit - 3] + "..."


def cell(value: object) -> str:
    """How one value looks in a table: None is '-', booleans are yes/no, times to the second."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, list | tuple):
        return ",".join(cell(item) for item in value) if value else "-"
    return str(value).replace("\n", " ")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Rows as aligned plain-text columns under a header.

    Columns whose every value is a number (such as amounts) are aligned right, the rest left.
    Widths count characters, so wide (East Asian) characters can misalign a column.
    """
    text_rows = [[cell(value) for value in row] for row in rows]
    for row in text_rows:
        if len(row) != len(headers):
            raise ValueError(f"a row has {len(row)} cells for {len(headers)} columns")
    widths = [len(header) for header in headers]
    for row in text_rows:
        widths = [max(width, len(text)) for width, text in zip(widths, row, strict=True)]
    numeric = [
        any(_NUMBER.match(row[i]) for row in text_rows)
        and all(_NUMBER.match(row[i]) or row[i] == "-" for row in text_rows)
        for i in range(len(headers))
    ]

    def line(cells: Sequence[str]) -> str:
        parts = [
            text.rjust(width) if right else text.ljust(width)
            for text, width, right in zip(cells, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(list(headers)), *(line(row) for row in text_rows)])


def fields(pairs: Sequence[tuple[str, object]]) -> str:
    """One `label: value` per line with the values aligned, for a single object."""
    width = max((len(label) for label, _ in pairs), default=0)
    return "\n".join(f"{label + ':':<{width + 1}} {cell(value)}" for label, value in pairs)


def _json_default(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    return str(value)


def to_json(value: Any) -> str:
    """JSON text: ids and amounts as strings, times in ISO 8601."""
    return json.dumps(value, default=_json_default, indent=2, ensure_ascii=False)


def echo_json(value: Any) -> None:
    typer.echo(to_json(value))


def note(message: str) -> None:
    """A hint for people, on stderr so that it never mixes with output a script reads."""
    typer.echo(message, err=True)
