"""Reading generations back: what each used, cost, and how it ended."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from tollgate_core import format_credits

from tollgate_server.errors import InvalidParameters, not_found

COLUMNS = (
    "id, model_name, status, stream, input_tokens, output_tokens, usage_estimated, hold, cost, "
    "error_code, first_token_ms, duration_ms, created_at, settled_at, usage_replaced, "
    "served_model, endpoint, "
    # One call that went well is not written (see the gateway): it counts as one attempt.
    "greatest((SELECT count(*) FROM generation_attempts a "
    "WHERE a.generation_id = generations.id), (served_model IS NOT NULL)::int) AS attempt_count"
)


def generation_public(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "model": row.model_name,
        "endpoint": row.endpoint,
        "status": row.status,
        "stream": row.stream,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "estimated": row.usage_estimated,
        "usage_replaced": row.usage_replaced.split(",") if row.usage_replaced else None,
        "hold": format_credits(row.hold),
        "cost": format_credits(row.cost) if row.cost is not None else None,
        "error_code": row.error_code,
        "first_token_ms": row.first_token_ms,
        "duration_ms": row.duration_ms,
        "created_at": row.created_at,
        "settled_at": row.settled_at,
        "served_model": row.served_model,
        "attempts": row.attempt_count,
    }


def _parse_cursor(value: str | None) -> tuple[datetime, uuid.UUID] | None:
    if value is None:
        return None
    try:
        stamp, ident = value.split("_", 1)
        return datetime.fromisoformat(stamp), uuid.UUID(ident)
    except ValueError:
        raise InvalidParameters(
            "validation_error", "cursor: not a cursor this list gave out"
        ) from None


async def list_generations(
    *, session: AsyncSession, account_id: uuid.UUID, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """An account's generations, newest first; the cursor is (created_at, id) of the last."""
    after = _parse_cursor(cursor)
    rows = (
        await session.execute(
            text(
                f"SELECT {COLUMNS} FROM generations WHERE account_id = :account "
                "AND (CAST(:stamp AS timestamptz) IS NULL OR (created_at, id) < (:stamp, :id)) "
                "ORDER BY created_at DESC, id DESC LIMIT :limit"
            ),
            {
                "account": account_id,
                "stamp": after[0] if after else None,
                "id": after[1] if after else None,
                "limit": limit + 1,
            },
        )
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = f"{rows[-1].created_at.isoformat()}_{rows[-1].id}" if more and rows else None
    return [generation_public(r) for r in rows], next_cursor


async def get_generation(
    *, session: AsyncSession, generation_id: uuid.UUID, account_id: uuid.UUID
) -> dict[str, Any]:
    """One of the account's generations; someone else's is as missing as a made-up id."""
    row = (
        await session.execute(
            text(f"SELECT {COLUMNS} FROM generations WHERE id = :id AND account_id = :account"),
            {"id": generation_id, "account": account_id},
        )
    ).one_or_none()
    if row is None:
        raise not_found("generation")
    return generation_public(row)


async def get_generation_for_admin(
    *, session: AsyncSession, generation_id: uuid.UUID
) -> dict[str, Any]:
    """Any account's generation, with its account and, when the upstream failed, what the
    upstream said (redacted): the detail a client is never shown."""
    row = (
        await session.execute(
            text(
                f"SELECT {COLUMNS}, account_id, error_detail, deployment_id FROM generations "
                "WHERE id = :id"
            ),
            {"id": generation_id},
        )
    ).one_or_none()
    if row is None:
        raise not_found("generation")
    attempts = (
        await session.execute(
            text(
                "SELECT attempt, model_name, deployment_id, outcome, error_code, upstream_status, "
                "latency_ms FROM generation_attempts WHERE generation_id = :id ORDER BY attempt"
            ),
            {"id": generation_id},
        )
    ).all()
    return {
        **generation_public(row),
        "account_id": row.account_id,
        "error_detail": row.error_detail,
        "deployment_id": row.deployment_id,
        "attempts": [
            {
                "attempt": a.attempt,
                "model": a.model_name,
                "deployment_id": a.deployment_id,
                "outcome": a.outcome,
                "error_code": a.error_code,
                "upstream_status": a.upstream_status,
                "latency_ms": a.latency_ms,
            }
            for a in attempts
        ]
        or _single_attempt(row),
    }


def _single_attempt(row: Any) -> list[dict[str, Any]]:
    """The one call of a generation served at the first try (not written, see the gateway)."""
    if row.served_model is None:
        return []
    return [
        {
            "attempt": 1,
            "model": row.served_model,
            "deployment_id": row.deployment_id,
            "outcome": "ok" if row.status != "upstream_error" else "failed_mid_stream",
            "error_code": None if row.status != "upstream_error" else row.error_code,
            "upstream_status": None,
            "latency_ms": row.first_token_ms or 0,
        }
    ]
