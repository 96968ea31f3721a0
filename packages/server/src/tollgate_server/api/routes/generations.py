"""The caller's generations: what each one used and cost."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from tollgate_server.api.deps import CallerDep, SessionDep
from tollgate_server.api.pagination import Cursor, Limit
from tollgate_server.api.responses import errors
from tollgate_server.schemas import Page
from tollgate_server.services import generations

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


@router.get(
    "", response_model=Page[GenerationPublic], summary="Your generations", responses=errors(401)
)
async def list_generations(
    caller: CallerDep, session: SessionDep, limit: Limit = 50, cursor: Cursor = None
) -> Any:
    """Newest first, with status, tokens, cost and timings. Accepts an API key."""
    data, next_cursor = await generations.list_generations(
        session=session, account_id=caller.account_id, cursor=cursor, limit=limit
    )
    return {"data": data, "next_cursor": next_cursor}


@router.get(
    "/{generation_id}",
    response_model=GenerationPublic,
    summary="One generation",
    responses=errors(401, 404),
)
async def get_generation(generation_id: uuid.UUID, caller: CallerDep, session: SessionDep) -> Any:
    """One of your generations; someone else's answers 404 like a missing one. A client that
    lost its connection finds here what it was charged."""
    return await generations.get_generation(
        session=session, generation_id=generation_id, account_id=caller.account_id
    )
