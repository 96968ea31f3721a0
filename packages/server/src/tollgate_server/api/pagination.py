"""Query parameters shared by every list: a page size bounded by a maximum, and a cursor."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

MAX_PAGE_SIZE = 100

Limit = Annotated[
    int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"Page size, 1 to {MAX_PAGE_SIZE}")
]
Cursor = Annotated[
    str | None,
    Query(max_length=400, description="`next_cursor` of the previous page"),
]


def int_cursor(cursor: str | None) -> int | None:
    """An integer cursor; anything else is a 422 the caller can understand."""
    from tollgate_server.errors import InvalidParameters

    if cursor is None:
        return None
    # isascii: "³".isdigit() is true, and int() refuses it.
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 18:
        raise InvalidParameters("validation_error", "cursor: not a cursor this list gave out")
    return int(cursor)
