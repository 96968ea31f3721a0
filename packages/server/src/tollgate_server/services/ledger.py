"""The credit ledger: the SQL that carries out `tollgate_core.billing` atomically.

Every change of a balance is one row in `ledger_entries`, written in the same statement or
transaction as the change itself. Admission is ONE guarded statement: the row lock taken by its
``UPDATE accounts`` serialises concurrent admissions for an account, so a thousand requests in
parallel cannot overspend. Settlement is ONE statement too, guarded by ``settled_at IS NULL`` and
a unique index, so running it twice charges once.

A hold moves no credit: it is the running generation's `hold`, summed in ``accounts.held``, and
since migration 0012 it writes no ledger entry (that entry was an eighth of a generation's WAL).
The settlement's entry says what the hold was (``held_delta``) and what was charged (``amount``).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from tollgate_core import Price, Usage, format_credits, parse_credits
from tollgate_core.money import MAX_BALANCE

from tollgate_server.errors import (
    Conflict,
    Forbidden,
    InsufficientCredits,
    InvalidParameters,
    RateLimited,
    Refused,
    not_found,
)
from tollgate_server.services.alerts import check_balance_alert

# --- admission and settlement (raw asyncpg: the hot path) ----------------------------------

DEADLINE_MARGIN_SECONDS = 120.0
"""Added to the maximum generation time for the sweeper's deadline: a live process has settled
every generation well before it."""

ADMIT_SQL = """
SELECT o_refusal AS refusal, o_balance AS balance, o_held AS held, o_window_left AS window_left
FROM tollgate_admit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                    $18, $19, $20)
"""
"""Admission in ONE statement that also says which guard refused (NULL: admitted); a missing
account reads as disabled. The steps are the PL/pgSQL function `tollgate_admit` (migration 0013,
replaced by 0015): one statement and one transaction, which runs each guard only when it
applies (a per-minute limit, a key's limits, an alert). The hold is taken by the account's
guarded UPDATE, whose row lock serialises the account's admissions; a refusal is worded from the
locked row, and a refusal by a later guard gives the hold back in the same transaction."""

SETTLE_SQL = """
SELECT tollgate_settle($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                       $17, $18, $19, $20) AS balance_after
"""
"""Settlement in ONE statement: the PL/pgSQL function `tollgate_settle` (migration 0014)
updates the generation guarded by ``settled_at IS NULL``, then the account, the key's spend
(only for a keyed generation) and writes the ledger entry; NULL when it was settled before."""


@dataclass(frozen=True, slots=True)
class Admission:
    """What the gateway needs to admit one generation."""

    generation_id: uuid.UUID
    account_id: uuid.UUID
    api_key_id: uuid.UUID | None
    model_id: int
    model_name: str
    price_id: int | None
    input_price: int
    output_price: int
    hold: int
    stream: bool
    max_tokens: int
    prompt_tokens: int
    deadline_seconds: float
    instance_id: uuid.UUID | None = None
    """The server process that runs it: when that process dies, the sweeper releases it."""
    endpoint: str = "chat.completions"
    """The API that asked: ``chat.completions``, ``embeddings`` or ``messages``."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a generation ended, for its one settlement."""

    status: str
    """completed, client_disconnected, upstream_error, upstream_timeout, cancelled,
    interrupted (swept after a crash), shutdown."""
    usage: Usage | None
    charge: int
    error_code: str | None = None
    first_token_ms: int | None = None
    duration_ms: int | None = None
    usage_replaced: tuple[str, ...] = ()
    """The upstream's counts that were out of range and replaced by the gateway's."""
    unbilled_input_tokens: int = 0
    """What the upstream may bill the operator for beyond `usage` (see the gateway's policy)."""
    unbilled_output_tokens: int = 0
    error_detail: str | None = None
    """What the upstream said when it failed, redacted: for admins, never for the client."""
    served_model: str | None = None
    """The model that served (a fallback's name when one did); None when none did."""
    deployment_id: int | None = None
    served_price: Price | None = None
    """The serving model's price, captured when it served: the charge is at this price, and
    the generation names it (the hold was at the dearest of the model and its fallbacks)."""
    attempts: tuple[Any, ...] = ()
    """The upstream calls (`services.routing.Attempt`), recorded with the settlement."""


async def admit(
    conn: asyncpg.Connection,
    admission: Admission,
    *,
    strict: bool,
    max_running: int,
    rate_subject: str = "",
    requests_per_minute: int = 0,
    clock_offset: float = 0.0,
) -> None:
    """Take the hold in one guarded statement, or raise the 402/403/429 that it named.

    `rate_subject` names the per-minute request counter (the gateway uses the account's);
    `requests_per_minute` 0 turns the limit off. The key's own limits (spend in its period,
    requests and tokens per minute) are read and enforced in the same statement.
    `clock_offset` (seconds) shifts the database's clock for the key's period only: tests use
    it to stand on either side of a boundary.
    """
    try:
        row = await _admit_row(
            conn, admission, strict, max_running, rate_subject, requests_per_minute, clock_offset
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "pk_generations":
            return  # a retry of an admission whose first attempt had committed
        raise
    assert row is not None  # the statement always answers one row
    if row["refusal"] is not None:
        raise _refusal(row, admission, strict, max_running, requests_per_minute)


async def _admit_row(
    conn: asyncpg.Connection,
    admission: Admission,
    strict: bool,
    max_running: int,
    rate_subject: str,
    requests_per_minute: int,
    clock_offset: float,
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        ADMIT_SQL,
        admission.account_id,
        admission.hold,
        strict,
        admission.generation_id,
        admission.api_key_id,
        admission.model_id,
        admission.model_name,
        admission.price_id,
        admission.input_price,
        admission.output_price,
        admission.stream,
        admission.max_tokens,
        admission.prompt_tokens,
        admission.deadline_seconds,
        max_running,
        rate_subject,
        requests_per_minute,
        admission.instance_id,
        clock_offset,
        admission.endpoint,
    )


def _refusal(
    row: asyncpg.Record,
    admission: Admission,
    strict: bool,
    max_running: int,
    requests_per_minute: int,
) -> Refused:
    """The error for the guard the admission statement named, worded from the same row."""
    reason = row["refusal"]
    if reason == "account_disabled":
        return Forbidden("account_disabled", "this account is disabled")
    if reason == "rate_limited":
        return RateLimited(
            "rate_limited",
            f"at most {requests_per_minute} requests a minute",
            retry_after=max(1, row["window_left"]),
        )
    if reason == "key_rate_limited":
        return RateLimited(
            "key_rate_limited",
            "this API key's requests or tokens per minute are used up",
            retry_after=max(1, row["window_left"]),
        )
    if reason == "key_budget_exceeded":
        return InsufficientCredits(
            "key_budget_exceeded",
            "this API key's spend limit for its period is reached (its holds count until "
            "they settle); raise the key's spend_limit or wait for the next period",
        )
    if reason == "too_many_concurrent_requests":
        return RateLimited(
            "too_many_concurrent_requests",
            f"at most {max_running} generations may run at once for an account",
            retry_after=1,
        )
    available = row["balance"] - row["held"]
    message = f"available balance is {format_credits(available)} credits"
    if strict:
        message += (
            f"; this request may cost up to {format_credits(admission.hold)}: "
            "lower max_tokens or top up"
        )
    return InsufficientCredits("insufficient_balance", message)


ATTEMPTS_SQL = """
INSERT INTO generation_attempts (
    generation_id, attempt, model_name, deployment_id, outcome, error_code, upstream_status,
    latency_ms
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT DO NOTHING
"""


async def settle(conn: asyncpg.Connection, generation_id: uuid.UUID, outcome: Outcome) -> bool:
    """Charge once and release the hold. False when the generation was already settled.

    A generation's attempts are written in the same transaction, so they exist exactly when
    its settlement does."""
    if not outcome.attempts:
        return await _settle(conn, generation_id, outcome)
    async with conn.transaction():
        settled = await _settle(conn, generation_id, outcome)
        if settled:
            await conn.executemany(
                ATTEMPTS_SQL,
                [
                    (
                        generation_id,
                        a.attempt,
                        a.model_name,
                        a.deployment_id,
                        a.outcome,
                        a.error_code,
                        a.upstream_status,
                        a.latency_ms,
                    )
                    for a in outcome.attempts
                ],
            )
        return settled


async def _settle(conn: asyncpg.Connection, generation_id: uuid.UUID, outcome: Outcome) -> bool:
    usage = outcome.usage
    price = outcome.served_price
    balance_after = await conn.fetchval(
        SETTLE_SQL,
        generation_id,
        outcome.status,
        usage.input_tokens if usage else None,
        usage.output_tokens if usage else None,
        usage.cached_input_tokens if usage else None,
        usage.reasoning_tokens if usage else None,
        usage.estimated if usage else None,
        outcome.charge,
        outcome.error_code,
        outcome.first_token_ms,
        outcome.duration_ms,
        ",".join(outcome.usage_replaced) or None,
        outcome.unbilled_input_tokens,
        outcome.unbilled_output_tokens,
        outcome.error_detail,
        outcome.served_model,
        outcome.deployment_id,
        price.id if price else None,
        price.input_per_million if price else None,
        price.output_per_million if price else None,
    )
    return balance_after is not None


# --- balances, grants and the ledger's pages -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Balance:
    balance: int
    held: int

    @property
    def available(self) -> int:
        return self.balance - self.held

    def public(self) -> dict[str, str]:
        return {
            "balance": format_credits(self.balance),
            "held": format_credits(self.held),
            "available": format_credits(self.available),
        }


async def get_balance(*, session: AsyncSession, account_id: uuid.UUID) -> Balance:
    row = (
        await session.execute(
            text("SELECT balance, held FROM accounts WHERE id = :id"), {"id": account_id}
        )
    ).one_or_none()
    if row is None:
        raise not_found("account")
    return Balance(balance=row.balance, held=row.held)


ENTRY_COLUMNS = (
    "id, kind, amount, held_delta, balance_after, held_after, generation_id, actor_id, "
    "reason, created_at"
)


def entry_public(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "amount": format_credits(row.amount),
        "held_delta": format_credits(row.held_delta),
        "balance_after": format_credits(row.balance_after),
        "held_after": format_credits(row.held_after),
        "generation_id": row.generation_id,
        "actor_id": row.actor_id,
        "reason": row.reason,
        "created_at": row.created_at,
    }


def _request_hash(account_id: uuid.UUID, amount: int, reason: str) -> str:
    payload = orjson.dumps({"account": str(account_id), "amount": amount, "reason": reason})
    return hashlib.sha256(payload).hexdigest()


async def post_credits(
    *,
    session: AsyncSession,
    account_id: uuid.UUID,
    amount: str,
    reason: str,
    actor_id: uuid.UUID | None,
    idempotency_key: str | None,
    kind: str | None = None,
) -> tuple[dict[str, Any], Balance, bool]:
    """Top up (amount > 0) or deduct (amount < 0) credits, as one ledger entry.

    Returns (entry, balance after, replayed). With an idempotency key, a repeat of the same
    request returns the first result unchanged (replayed=True), and the same key with another
    request is a 409. A deduction may not take the available balance below zero: negative
    balances arise only from settling generations.
    """
    micro = parse_credits(amount)
    if micro == 0:
        raise InvalidParameters("validation_error", "amount must not be zero")
    kind = kind or ("topup" if micro > 0 else "adjustment")
    fingerprint = _request_hash(account_id, micro, reason)
    if idempotency_key is not None:
        replay = await _replay(session, idempotency_key, fingerprint)
        if replay is not None:
            return replay[0], replay[1], True
    try:
        row = (
            await session.execute(
                text(
                    # Amounts are BIGINT micro-credits: an unadorned parameter would be bound
                    # as a 32-bit integer and refuse anything above 2,147 credits.
                    # The guards never compute balance + amount, which could overflow BIGINT
                    # (SQL does not promise to short-circuit OR); |amount| < 1e15 by the schema.
                    "UPDATE accounts SET balance = balance + CAST(:amount AS BIGINT), "
                    "updated_at = now() WHERE id = :id AND (CAST(:amount AS BIGINT) > 0 "
                    "OR balance - held >= -CAST(:amount AS BIGINT)) "
                    "AND balance <= CAST(:max AS BIGINT) - CAST(:amount AS BIGINT) "
                    "RETURNING balance, held"
                ),
                {"amount": micro, "id": account_id, "max": MAX_BALANCE},
            )
        ).one_or_none()
        if row is None:
            await session.rollback()
            exists = await session.scalar(
                text("SELECT 1 FROM accounts WHERE id = :id"), {"id": account_id}
            )
            if not exists:
                raise not_found("account")
            if micro > 0:
                raise Conflict(
                    "balance_limit_exceeded",
                    f"a balance may not exceed {format_credits(MAX_BALANCE)} credits",
                )
            raise Conflict(
                "insufficient_balance", "a deduction may not exceed the available balance"
            )
        # The low-balance alert (or its re-arming), in this same transaction.
        await check_balance_alert(session, account_id)
        entry = (
            await session.execute(
                text(
                    "INSERT INTO ledger_entries (account_id, kind, amount, held_delta, "
                    "balance_after, held_after, actor_id, reason, idempotency_key, "
                    "request_hash) VALUES (:account, :kind, CAST(:amount AS BIGINT), 0, "
                    "CAST(:balance AS BIGINT), CAST(:held AS BIGINT), "
                    f":actor, :reason, :key, :hash) RETURNING {ENTRY_COLUMNS}"
                ),
                {
                    "account": account_id,
                    "kind": kind,
                    "amount": micro,
                    "balance": row.balance,
                    "held": row.held,
                    "actor": actor_id,
                    "reason": reason,
                    "key": idempotency_key,
                    "hash": fingerprint,
                },
            )
        ).one()
        await session.commit()
    except IntegrityError:
        # Another request with the same key won the race: answer as its replay.
        await session.rollback()
        replay = await _replay(session, idempotency_key, fingerprint) if idempotency_key else None
        if replay is None:
            raise
        return replay[0], replay[1], True
    return entry_public(entry), Balance(row.balance, row.held), False


async def _replay(
    session: AsyncSession, key: str, fingerprint: str
) -> tuple[dict[str, Any], Balance] | None:
    entry = (
        await session.execute(
            text(
                f"SELECT {ENTRY_COLUMNS}, request_hash FROM ledger_entries "
                "WHERE idempotency_key = :key"
            ),
            {"key": key},
        )
    ).one_or_none()
    if entry is None:
        return None
    if entry.request_hash != fingerprint:
        raise Conflict(
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request",
        )
    return entry_public(entry), Balance(entry.balance_after, entry.held_after)


async def list_entries(
    *, session: AsyncSession, account_id: uuid.UUID, cursor: int | None, limit: int
) -> tuple[list[dict[str, Any]], int | None]:
    """Entries newest first; the cursor is the last id of the previous page."""
    rows = (
        await session.execute(
            text(
                f"SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE account_id = :account "
                "AND (CAST(:cursor AS BIGINT) IS NULL OR id < :cursor) "
                "ORDER BY id DESC LIMIT :limit"
            ),
            {"account": account_id, "cursor": cursor, "limit": limit + 1},
        )
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return [entry_public(r) for r in rows], (rows[-1].id if more and rows else None)


async def usage_by_day(
    *,
    session: AsyncSession,
    account_id: uuid.UUID,
    since: datetime | None,
    unbilled: bool = False,
) -> list[dict[str, Any]]:
    """Settled generations per UTC day and model. With `unbilled` (the admin's view), also the
    tokens the upstream may have billed the operator for that the client was not charged."""
    rows = (
        await session.execute(
            text(
                "SELECT to_char(date_trunc('day', created_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD') "
                "AS day, model_name, count(*) AS generations, "
                "coalesce(sum(input_tokens), 0) AS input_tokens, "
                "coalesce(sum(output_tokens), 0) AS output_tokens, "
                "coalesce(sum(cost), 0) AS cost, "
                "sum(unbilled_input_tokens) AS unbilled_input_tokens, "
                "sum(unbilled_output_tokens) AS unbilled_output_tokens "
                "FROM generations WHERE account_id = :account AND settled_at IS NOT NULL "
                "AND (CAST(:since AS timestamptz) IS NULL OR created_at >= :since) "
                "GROUP BY 1, 2 ORDER BY 1 DESC, 2"
            ),
            {"account": account_id, "since": since},
        )
    ).all()
    return [
        {
            "day": r.day,
            "model": r.model_name,
            "generations": r.generations,
            "input_tokens": int(r.input_tokens),
            "output_tokens": int(r.output_tokens),
            "cost": format_credits(int(r.cost)),
            **(
                {
                    "unbilled_input_tokens": int(r.unbilled_input_tokens),
                    "unbilled_output_tokens": int(r.unbilled_output_tokens),
                }
                if unbilled
                else {}
            ),
        }
        for r in rows
    ]
