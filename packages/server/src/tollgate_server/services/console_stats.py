"""Aggregates the web console draws: spend per day and model, per key, top spenders.

Every figure comes from one GROUP BY in PostgreSQL over an index range (generations by account
and time, or by time alone for the admin's views; see migration 0007), never from rows loaded
into Python: the
console's pages must stay fast with hundreds of thousands of generations. Amounts stay integer
micro-credits here; the pages format them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True, slots=True)
class DayModel:
    """One UTC day's totals for one model."""

    day: date
    model: str
    generations: int
    input_tokens: int
    output_tokens: int
    cost: int
    """Micro-credits charged."""


def window_start(days: int, now: datetime | None = None) -> datetime:
    """Midnight UTC `days - 1` days ago: a window of `days` whole days ending today."""
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    return datetime(first.year, first.month, first.day, tzinfo=UTC)


def month_start(now: datetime | None = None) -> datetime:
    today = (now or datetime.now(UTC)).astimezone(UTC)
    return datetime(today.year, today.month, 1, tzinfo=UTC)


_BY_DAY_AND_MODEL = (
    "SELECT (created_at AT TIME ZONE 'UTC')::date AS day, model_name, count(*) AS generations, "
    "coalesce(sum(input_tokens), 0)::bigint AS input_tokens, "
    "coalesce(sum(output_tokens), 0)::bigint AS output_tokens, "
    "coalesce(sum(cost), 0)::bigint AS cost FROM generations "
    "WHERE created_at >= :since AND settled_at IS NOT NULL {account} "
    "GROUP BY 1, 2 ORDER BY 1, 2"
)


async def by_day_and_model(
    *, session: AsyncSession, account_id: uuid.UUID | None, since: datetime
) -> list[DayModel]:
    """Settled generations' totals per UTC day and model from `since` on; every account's
    when `account_id` is None."""
    where = "AND account_id = :account" if account_id is not None else ""
    rows = await session.execute(
        text(_BY_DAY_AND_MODEL.format(account=where)), {"since": since, "account": account_id}
    )
    return [
        DayModel(
            day=r.day,
            model=r.model_name,
            generations=r.generations,
            input_tokens=int(r.input_tokens),
            output_tokens=int(r.output_tokens),
            cost=int(r.cost),
        )
        for r in rows
    ]


async def spend_per_key(*, session: AsyncSession, account_id: uuid.UUID) -> dict[uuid.UUID, int]:
    """Micro-credits charged through each of the account's API keys, all time."""
    rows = await session.execute(
        text(
            # A key's generations are its account's: `ix_generations_account_created` serves.
            "SELECT api_key_id, coalesce(sum(cost), 0)::bigint AS cost FROM generations "
            "WHERE account_id = :account AND api_key_id IS NOT NULL GROUP BY api_key_id"
        ),
        {"account": account_id},
    )
    return {r.api_key_id: int(r.cost) for r in rows}


@dataclass(frozen=True, slots=True)
class Overall:
    """Every account's usage over a window: per day and model, and the top spenders."""

    by_day_and_model: list[DayModel]
    top_spenders: list[dict[str, Any]]
    """`id`, `email`, `generations` and `cost` (micro-credits), the largest cost first."""


async def overall(*, session: AsyncSession, since: datetime, top: int = 10) -> Overall:
    """Both of the admin's views in one pass over the window (GROUPING SETS), not two scans."""
    rows = (
        await session.execute(
            text(
                "SELECT (created_at AT TIME ZONE 'UTC')::date AS day, model_name, account_id, "
                "GROUPING(account_id) = 1 AS per_day, count(*) AS generations, "
                "coalesce(sum(input_tokens), 0)::bigint AS input_tokens, "
                "coalesce(sum(output_tokens), 0)::bigint AS output_tokens, "
                "coalesce(sum(cost), 0)::bigint AS cost FROM generations "
                "WHERE created_at >= :since AND settled_at IS NOT NULL "
                "GROUP BY GROUPING SETS (((created_at AT TIME ZONE 'UTC')::date, model_name), "
                "(account_id))"
            ),
            {"since": since},
        )
    ).all()
    days = sorted(
        (
            DayModel(
                day=r.day,
                model=r.model_name,
                generations=r.generations,
                input_tokens=int(r.input_tokens),
                output_tokens=int(r.output_tokens),
                cost=int(r.cost),
            )
            for r in rows
            if r.per_day
        ),
        key=lambda d: (d.day, d.model),
    )
    spenders = sorted(
        (r for r in rows if not r.per_day), key=lambda r: (-int(r.cost), str(r.account_id))
    )[:top]
    emails: dict[uuid.UUID, str] = {}
    if spenders:
        found = await session.execute(
            text("SELECT id, email FROM accounts WHERE id = ANY(:ids)"),
            {"ids": [r.account_id for r in spenders]},
        )
        emails = {r.id: r.email for r in found}
    return Overall(
        by_day_and_model=days,
        top_spenders=[
            {
                "id": r.account_id,
                "email": emails.get(r.account_id, ""),
                "generations": r.generations,
                "cost": int(r.cost),
            }
            for r in spenders
        ],
    )
