"""Delivering a settlement that arrives late, and the late charge.

A settlement that waited out a database outage (in memory, or in a spool file replayed by a later
process) normally finds its generation still running and settles it as usual. If, meanwhile, the
sweeper released the hold (status ``interrupted``: the process that owned it looked dead), the
answer was still delivered: it is then charged as a separate, visible ledger entry of kind
``late_charge``, never silently dropped. The entry names the generation; a unique index allows one
late charge per generation, so a settlement replayed twice charges once. The generation row keeps
its ``interrupted`` status and zero cost; the late charge is found in the ledger.
"""

from __future__ import annotations

import logging
import uuid
from typing import Literal

import asyncpg

from tollgate_server.services import ledger

logger = logging.getLogger("tollgate.settlement")

LATE_CHARGE_SQL = """
WITH gen AS (
    SELECT id, account_id, api_key_id, key_period_start FROM generations
    WHERE id = $1 AND status = 'interrupted' AND settled_at IS NOT NULL AND cost = 0
      AND NOT EXISTS (
          SELECT 1 FROM ledger_entries WHERE generation_id = $1 AND kind = 'late_charge'
      )
), acc AS (
    UPDATE accounts a SET balance = a.balance - $2, updated_at = now()
    FROM gen WHERE a.id = gen.account_id
    RETURNING a.id, a.balance, a.held
), ks AS (
    -- Counted in the key's spend too, in the generation's period: it was delivered.
    UPDATE key_spend s SET charged = s.charged + $2
    FROM gen WHERE s.api_key_id = gen.api_key_id AND s.period_start = gen.key_period_start
)
INSERT INTO ledger_entries (
    account_id, kind, amount, held_delta, balance_after, held_after, generation_id, reason
)
SELECT id, 'late_charge', -$2, 0, balance, held, $1, $3 FROM acc
RETURNING id
"""

EXISTS_SQL = "SELECT status FROM generations WHERE id = $1"

Delivery = Literal["settled", "late_charge", "already_settled", "unknown_generation"]


async def deliver_settlement(
    conn: asyncpg.Connection, generation_id: uuid.UUID, outcome: ledger.Outcome
) -> Delivery:
    """Settle, or charge late when the hold was already released; safe to repeat.

    ``unknown_generation``: this database has no such generation (a spool file carried to
    another database); the caller keeps the settlement rather than drop it.
    """
    if await ledger.settle(conn, generation_id, outcome):
        return "settled"
    if outcome.charge > 0:
        reason = f"late settlement ({outcome.status}) of a generation released as interrupted"
        try:
            row = await conn.fetchrow(LATE_CHARGE_SQL, generation_id, outcome.charge, reason)
        except asyncpg.UniqueViolationError:
            row = None  # another process charged it at the same moment
        if row is not None:
            logger.warning(
                "late charge of %d micro-credits for generation %s (its hold had been released)",
                outcome.charge,
                generation_id,
            )
            return "late_charge"
    if await conn.fetchval(EXISTS_SQL, generation_id) is None:
        return "unknown_generation"
    return "already_settled"
