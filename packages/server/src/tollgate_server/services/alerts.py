"""The low-balance alert outside admission: raised or re-armed in a change's own transaction.

The admission statement raises it itself (`tollgate_server.services.ledger`); a deduction, a
top-up or a grant runs `LOW_BALANCE_SQL` in its transaction, so the event (an outbox row, sent
by `tollgate_server.services.webhooks`) commits or rolls back with the change.
"""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

LOW_BALANCE_SQL = """
WITH acc AS (SELECT id, balance - held AS available FROM accounts WHERE id = :account),
lifted AS (
    -- A top-up that lifts the available balance back above the threshold re-arms the alert.
    UPDATE balance_alerts b SET alerted = false FROM acc
    WHERE b.account_id = acc.id AND b.alerted AND acc.available >= b.threshold
), low AS (
    UPDATE balance_alerts b SET alerted = true FROM acc
    WHERE b.account_id = acc.id AND NOT b.alerted AND acc.available < b.threshold
    RETURNING b.threshold, acc.available
)
INSERT INTO webhook_events (type, account_id, data)
SELECT 'balance.low', :account, jsonb_build_object(
    'account_id', CAST(:account AS uuid), 'available', tollgate_credits(low.available),
    'threshold', tollgate_credits(low.threshold))
FROM low WHERE EXISTS (SELECT 1 FROM webhook_endpoint)
"""
"""Run in the transaction of a change of balance outside admission (a deduction, a top-up, a
grant): raises the low-balance alert, or re-arms it."""


async def check_balance_alert(session: AsyncSession, account_id: uuid.UUID) -> None:
    """The low-balance alert for a change made in `session`'s transaction (not committed)."""
    await session.execute(text(LOW_BALANCE_SQL), {"account": account_id})
