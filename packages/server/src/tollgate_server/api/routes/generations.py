"""The caller's generations: what each one used and cost."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from tollgate_server.api.deps import CallerDep, SessionDep
from tollgate_server.api.json_body import StrictJsonRoute
from tollgate_server.api.pagination import Cursor, Limit
from tollgate_server.api.responses import Failure, errors
from tollgate_server.schemas import Page
from tollgate_server.services import generations

router = APIRouter(prefix="/v1/generations", tags=["generation"], route_class=StrictJsonRoute)


class GenerationPublic(BaseModel):
    """One generation (a chat completion, a message or an embedding): its state, what it used
    and what it cost."""

    id: uuid.UUID = Field(
        description="The generation's id (also in X-Tollgate-Generation-Id)",
        examples=["5f0c2d9e-8b1a-4e7f-a3c6-19d2b4e6f801"],
    )
    model: str = Field(description="The model asked for", examples=["gpt-4o-mini"])
    endpoint: str = Field(
        description="The API that made it: chat.completions, messages or embeddings",
        examples=["chat.completions"],
    )
    status: str = Field(
        description="running, completed, client_disconnected, client_not_reading, "
        "upstream_error, upstream_timeout, generation_timeout, interrupted, error",
        examples=["completed"],
    )
    stream: bool = Field(description="Whether the answer was streamed")
    input_tokens: int | None = Field(description="null while running", examples=[9])
    output_tokens: int | None = Field(description="null while running", examples=[1])
    estimated: bool | None = Field(
        description="Usage counted by Tollgate, not the upstream", examples=[False]
    )
    hold: str = Field(
        description="Credits held while it ran (its worst-case cost)", examples=["0.000633"]
    )
    cost: str | None = Field(
        description="Credits charged; null while running", examples=["0.000195"]
    )
    usage_replaced: list[str] | None = Field(
        None,
        description="The upstream's counts that were out of range (negative, larger than the "
        "request could produce) and replaced by Tollgate's own count; null when all were sound",
        examples=[None],
    )
    error_code: str | None = Field(description="Why it failed, when it did", examples=[None])
    first_token_ms: int | None = Field(
        description="Milliseconds from the request to the first token; null if none came",
        examples=[212],
    )
    duration_ms: int | None = Field(
        description="Milliseconds from the request to its end; null while running",
        examples=[480],
    )
    created_at: datetime = Field(
        description="When the request was admitted", examples=["2026-11-27T09:30:00Z"]
    )
    settled_at: datetime | None = Field(
        description="When it was charged; null while running", examples=["2026-11-27T09:30:01Z"]
    )
    served_model: str | None = Field(
        None,
        description="The model that answered: `model`, or one of its fallbacks; null when none "
        "did (or before routing recorded it)",
        examples=["gpt-4o-mini"],
    )
    attempts: int = Field(
        0, description="Upstream calls made for it (retries included)", examples=[1]
    )


class AttemptAdmin(BaseModel):
    """One upstream call made for a generation."""

    attempt: int = Field(description="1 for the first call, then 2, ...", examples=[1])
    model: str = Field(
        description="The model called: the one asked for, or a fallback", examples=["gpt-4o-mini"]
    )
    deployment_id: int | None = Field(
        description="null: the provider's default upstream", examples=[3]
    )
    outcome: str = Field(description="ok, error, timeout, or failed_mid_stream", examples=["error"])
    error_code: str | None = Field(
        description="Why it failed; null when it did not", examples=["upstream_rate_limited"]
    )
    upstream_status: int | None = Field(
        description="The upstream's HTTP status, when it answered with an error", examples=[429]
    )
    latency_ms: int = Field(description="To its first token, or to its failure", examples=[85])


class GenerationAdmin(GenerationPublic):
    """A generation as an admin sees it: whose it is, and what a failed upstream said."""

    account_id: uuid.UUID = Field(
        description="The account that made it", examples=["3fa85f64-5717-4562-b3fc-2c963f66afa6"]
    )
    error_detail: str | None = Field(
        description="What the upstream said when it failed, with keys redacted; clients are "
        "only told a fixed message per `error_code`",
        examples=["upstream answered 500: overloaded"],
    )
    deployment_id: int | None = Field(
        None, description="The deployment that served; null: the provider's default upstream"
    )
    attempts: list[AttemptAdmin] = Field(  # type: ignore[assignment]
        default_factory=list, description="Every upstream call, in order"
    )


class GenerationPage(Page[GenerationPublic]):
    """Generations, newest first."""


@router.get(
    "", response_model=GenerationPage, summary="Your generations", responses=errors(401, 403)
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
    responses=errors(
        401,
        403,
        404,
        notes={
            404: Failure(
                "No such generation among yours (`not_found`)", "not_found", "no such generation"
            )
        },
    ),
)
async def get_generation(
    generation_id: Annotated[
        uuid.UUID, Path(description="The generation's id (also in X-Tollgate-Generation-Id)")
    ],
    caller: CallerDep,
    session: SessionDep,
) -> Any:
    """One of your generations; someone else's answers 404 like a missing one. A client that
    lost its connection finds here what it was charged."""
    return await generations.get_generation(
        session=session, generation_id=generation_id, account_id=caller.account_id
    )
