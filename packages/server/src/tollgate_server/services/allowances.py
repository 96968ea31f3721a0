"""Periodic allowances: an account's recurring grant, issued by the server processes themselves.

An admin gives an account an allowance: `amount` credits every period (mode ``grant``), or a
top-up of the available balance to `amount` (mode ``floor``), per ``day``, ``week`` or ``month``
(calendar periods in UTC, the same arithmetic as API keys' budgets: `tollgate_period_start`).

There is no scheduler to miss a run. Every process runs `issue_due` at start and then every
`allowance_interval_seconds`; each period's grant is claimed by inserting its
`allowance_grants` row (primary key: account and period start) with ON CONFLICT DO NOTHING, in
the transaction that writes the ledger entry. Whichever process gets there first grants; the
others wait on the row and find it taken; a restart finds it taken; a rollback leaves it free.
Periods that passed while every process was down are granted once each when one comes back
(mode ``grant``, from the period the allowance started in); a floor only ever tops up the
current period, since topping up a balance in the past means nothing.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from tollgate_core import format_credits, parse_credits
from tollgate_core.money import MAX_BALANCE

from tollgate_server.db.raw import raw_connection
from tollgate_server.errors import not_found
from tollgate_server.schemas import AllowanceSet

if TYPE_CHECKING:
    from tollgate_server.runtime import Runtime

logger = logging.getLogger("tollgate.allowances")

DUE_SQL = """
SELECT a.account_id, p.period_start
FROM allowances a
CROSS JOIN LATERAL (
    SELECT tollgate_period_start(a.period, now() + make_interval(secs => $1)) AS current
) c
CROSS JOIN LATERAL (
    -- In UTC wall time, so that a day is always 24 hours (no daylight saving in between).
    SELECT generate_series(
        CASE WHEN a.mode = 'grant'
             THEN greatest(
                 tollgate_period_start(a.period, a.starts_at),
                 (SELECT max(g.period_start) FROM allowance_grants g
                  WHERE g.account_id = a.account_id)
             )
             ELSE c.current END AT TIME ZONE 'UTC',
        c.current AT TIME ZONE 'UTC',
        ('1 ' || a.period)::interval
    ) AT TIME ZONE 'UTC' AS period_start
) p
WHERE ($2::uuid IS NULL OR a.account_id = $2)
  AND NOT EXISTS (
      SELECT 1 FROM allowance_grants g
      WHERE g.account_id = a.account_id AND g.period_start = p.period_start
  )
ORDER BY a.account_id, p.period_start
LIMIT 1000
"""
"""The periods owed: from the last one granted (or the allowance's first) to the current one."""

CLAIM_SQL = """
INSERT INTO allowance_grants (account_id, period_start, amount)
SELECT account_id, $2, 0 FROM allowances WHERE account_id = $1
ON CONFLICT (account_id, period_start) DO NOTHING
RETURNING (SELECT amount FROM allowances WHERE account_id = $1) AS amount,
          (SELECT mode FROM allowances WHERE account_id = $1) AS mode
"""


async def issue_due(
    pool: asyncpg.Pool, *, clock_offset: float = 0.0, account_id: uuid.UUID | None = None
) -> int:
    """Grant every period owed (of one account, or of all); returns how many were granted.

    Safe to run in any number of processes at once, and again: each period is granted once.
    """
    async with raw_connection(pool) as conn:
        due = await conn.fetch(DUE_SQL, clock_offset, account_id)
        granted = 0
        for row in due:
            if await _grant(conn, row["account_id"], row["period_start"]):
                granted += 1
    if granted:
        logger.info("issued %d allowance grants", granted)
    return granted


async def _grant(conn: asyncpg.Connection, account_id: uuid.UUID, period_start: datetime) -> bool:
    async with conn.transaction():
        claim = await conn.fetchrow(CLAIM_SQL, account_id, period_start)
        if claim is None:
            return False  # another process (or an earlier run) granted this period
        account = await conn.fetchrow(
            "SELECT balance, held FROM accounts WHERE id = $1 FOR UPDATE", account_id
        )
        amount = claim["amount"]
        if claim["mode"] == "floor":
            amount = max(0, amount - (account["balance"] - account["held"]))
        amount = min(amount, MAX_BALANCE - account["balance"])  # the balance's cap
        entry_id = None
        if amount > 0:
            after = await conn.fetchrow(
                "UPDATE accounts SET balance = balance + $2, updated_at = now() WHERE id = $1 "
                "RETURNING balance, held",
                account_id,
                amount,
            )
            entry_id = await conn.fetchval(
                "INSERT INTO ledger_entries (account_id, kind, amount, held_delta, "
                "balance_after, held_after, reason) VALUES ($1, 'grant', $2, 0, $3, $4, $5) "
                "RETURNING id",
                account_id,
                amount,
                after["balance"],
                after["held"],
                f"allowance ({claim['mode']}) for the period from {period_start.isoformat()}",
            )
            # A grant re-arms the account's low-balance alert once it lifts it above.
            await conn.execute(
                "UPDATE balance_alerts SET alerted = false WHERE account_id = $1 AND alerted "
                "AND $2::bigint - $3::bigint >= threshold",
                account_id,
                after["balance"],
                after["held"],
            )
        await conn.execute(
            "UPDATE allowance_grants SET amount = $3, ledger_entry_id = $4 "
            "WHERE account_id = $1 AND period_start = $2",
            account_id,
            period_start,
            max(amount, 0),
            entry_id,
        )
    return True


async def run_allowances(runtime: Runtime) -> None:
    """The background task of every process: grant what is owed, now and then."""
    while True:
        try:
            await issue_due(
                runtime.hot_pool, clock_offset=runtime.settings.period_clock_offset_seconds
            )
        except Exception as exc:  # a database outage must not end the loop
            # One line: the database's own outage is reported where it is watched.
            logger.warning("could not issue allowances (%s); will retry", type(exc).__name__)
        await asyncio.sleep(runtime.settings.allowance_interval_seconds)


# --- the admin's view ------------------------------------------------------------------------

ALLOWANCE_COLUMNS = "account_id, amount, period, mode, starts_at, updated_at"


def allowance_public(row: Any, grants: list[Any]) -> dict[str, Any]:
    return {
        "account_id": row.account_id,
        "amount": format_credits(row.amount),
        "period": row.period,
        "mode": row.mode,
        "starts_at": row.starts_at,
        "updated_at": row.updated_at,
        "grants": [
            {
                "period_start": g.period_start,
                "amount": format_credits(g.amount),
                "ledger_entry_id": g.ledger_entry_id,
            }
            for g in grants
        ],
    }


async def _grants(session: AsyncSession, account_id: uuid.UUID) -> list[Any]:
    rows = await session.execute(
        text(
            "SELECT period_start, amount, ledger_entry_id FROM allowance_grants "
            "WHERE account_id = :account ORDER BY period_start DESC LIMIT 12"
        ),
        {"account": account_id},
    )
    return list(rows)


async def set_allowance(
    *, session: AsyncSession, account_id: uuid.UUID, data: AllowanceSet, actor_id: uuid.UUID
) -> dict[str, Any]:
    """Give the account its allowance, or replace it (from the current period on)."""
    exists = await session.scalar(text("SELECT 1 FROM accounts WHERE id = :id"), {"id": account_id})
    if not exists:
        raise not_found("account")
    row = (
        await session.execute(
            text(
                "INSERT INTO allowances (account_id, amount, period, mode, created_by) "
                "VALUES (:account, CAST(:amount AS BIGINT), :period, :mode, :actor) "
                "ON CONFLICT (account_id) DO UPDATE SET amount = EXCLUDED.amount, "
                "period = EXCLUDED.period, mode = EXCLUDED.mode, "
                "created_by = EXCLUDED.created_by, starts_at = now(), updated_at = now() "
                f"RETURNING {ALLOWANCE_COLUMNS}"
            ),
            {
                "account": account_id,
                "amount": parse_credits(data.amount),
                "period": data.period,
                "mode": data.mode,
                "actor": actor_id,
            },
        )
    ).one()
    await session.commit()
    return allowance_public(row, await _grants(session, account_id))


async def get_allowance(*, session: AsyncSession, account_id: uuid.UUID) -> dict[str, Any]:
    row = (
        await session.execute(
            text(f"SELECT {ALLOWANCE_COLUMNS} FROM allowances WHERE account_id = :account"),
            {"account": account_id},
        )
    ).one_or_none()
    if row is None:
        raise not_found("allowance")
    return allowance_public(row, await _grants(session, account_id))


async def delete_allowance(*, session: AsyncSession, account_id: uuid.UUID) -> None:
    """Stop the allowance; grants already made stay (they are ledger entries)."""
    deleted = await session.scalar(
        text("DELETE FROM allowances WHERE account_id = :account RETURNING 1"),
        {"account": account_id},
    )
    if not deleted:
        raise not_found("allowance")
    await session.commit()
