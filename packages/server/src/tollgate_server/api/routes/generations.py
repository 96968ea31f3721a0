"""The caller's generations: what each one used and cost."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import text
from tollgate_core import format_credits

from tollgate_server.api.deps import CallerDep, SessionDep
from tollgate_server.api.pagination import Cursor, Limit
from tollgate_server.api.responses import errors
from tollgate_server.errors import ApiError, not_found
from tollgate_server.schemas import Page

router = APIRouter(prefix="/v1/generations", tags=["generation"])


class GenerationPublic(BaseModel):
    id: uuid.UUID
    model: str
    status: str = Field(
        description="running, completed, client_disconnected, upstream_error, "
        "upstream_timeout, generation_timeout, interrupted, error",
        examples=["completed"],
    )
    stream: bool
    input_tokens: int | None
    output_tokens: int | None
    estimated: bool | None = Field(description="Usage counted by Tollgate, not the upstream")
    hold: str
    cost: str | None
    error_code: str | None
    first_token_ms: int | None
    duration_ms: int | None
    created_at: datetime
    settled_at: datetime | None


COLUMNS = (
    "id, model_name, status, stream, input_tokens, output_tokens, usage_estimated, hold, cost, "
    "error_code, first_token_ms, duration_ms, created_at, settled_at"
)


def _public(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "model": row.model_name,
        "status": row.status,
        "stream": row.stream,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "estimated": row.usage_estimated,
        "hold": format_credits(row.hold),
        "cost": format_credits(row.cost) if row.cost is not None else None,
        "error_code": row.error_code,
        "first_token_ms": row.first_token_ms,
        "duration_ms": row.duration_ms,
        "created_at": row.created_at,
        "settled_at": row.settled_at,
    }


def _cursor(value: str | None) -> tuple[datetime, uuid.UUID] | None:
    if value is None:
        return None
    try:
        stamp, ident = value.split("_", 1)
        return datetime.fromisoformat(stamp), uuid.UUID(ident)
    except ValueError:
        raise ApiError(422, "validation_error", "cursor: not a cursor this list gave out") from None


@router.get(
    "", response_model=Page[GenerationPublic], summary="Your generations", responses=errors(401)
)
async def list_generations(
    caller: CallerDep, session: SessionDep, limit: Limit = 50, cursor: Cursor = None
) -> Any:
    """Newest first, with status, tokens, cost and timings."""
    after = _cursor(cursor)
    rows = (
        await session.execute(
            text(
                f"SELECT {COLUMNS} FROM generations WHERE account_id = :account "
                "AND (CAST(:stamp AS timestamptz) IS NULL OR (created_at, id) < (:stamp, :id)) "
                "ORDER BY created_at DESC, id DESC LIMIT :limit"
            ),
            {
                "account": caller.account_id,
                "stamp": after[0] if after else None,
                "id": after[1] if after else None,
                "limit": limit + 1,
            },
        )
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = f"{rows[-1].created_at.isoformat()}_{rows[-1].id}" if more and rows else None
    return {"data": [_public(r) for r in rows], "next_cursor": next_cursor}


@router.get(
    "/{generation_id}",
    response_model=GenerationPublic,
    summary="One generation",
    responses=errors(401, 404),
)
async def get_generation(generation_id: uuid.UUID, caller: CallerDep, session: SessionDep) -> Any:
    """One of your generations; someone else's answers 404 like a missing one."""
    row = (
        await session.execute(
            text(f"SELECT {COLUMNS} FROM generations WHERE id = :id AND account_id = :account"),
            {"id": generation_id, "account": caller.account_id},
        )
    ).one_or_none()
    if row is None:
        raise not_found("generation")
    return _public(row)
