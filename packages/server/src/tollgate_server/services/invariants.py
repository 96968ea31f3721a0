"""The ledger's invariants, as SQL. Run after every integration test, by the soak benchmark,
and by `tollgate db check`. Each query returns the rows that break its rule: none is good."""

from __future__ import annotations

import uuid
from collections.abc import Collection

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

CHECKS: dict[str, str] = {
    "balance equals the sum of the account's entries": """
        SELECT a.id, a.balance, coalesce(sum(e.amount), 0) AS entries
        FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
        GROUP BY a.id HAVING a.balance <> coalesce(sum(e.amount), 0)
    """,
    "held and running equal the holds of unsettled generations": """
        SELECT a.id, a.held, a.running, coalesce(g.holds, 0), coalesce(g.n, 0)
        FROM accounts a LEFT JOIN (
            SELECT account_id, sum(hold) AS holds, count(*) AS n FROM generations
            WHERE settled_at IS NULL GROUP BY account_id
        ) g ON g.account_id = a.id
        WHERE a.held <> coalesce(g.holds, 0) OR a.running <> coalesce(g.n, 0)
    """,
    # Holds are not entries since migration 0012 (they move no credit); earlier generations
    # keep theirs, at most one each.
    "no generation has two hold entries": """
        SELECT generation_id FROM ledger_entries WHERE kind = 'hold'
        GROUP BY generation_id HAVING count(*) > 1
    """,
    "every settled generation has exactly one charge or release, equal to its cost": """
        SELECT g.id, g.cost, count(e.id) AS settlements, min(e.amount) AS amount
        FROM generations g
        LEFT JOIN ledger_entries e
            ON e.generation_id = g.id AND e.kind IN ('charge', 'release')
        WHERE g.settled_at IS NOT NULL
        GROUP BY g.id, g.cost
        HAVING count(e.id) <> 1 OR min(e.amount) <> -g.cost
    """,
    # An upstream's usage is untrusted: these two catch a charge priced from a count that
    # slipped past the check (a negative prompt once turned a settlement into a credit).
    # Each is two plain scans: an OR across both sides of a join left the planner no index
    # and no hash condition to use, which took minutes on a ledger of millions of entries.
    "no generation raised a balance": """
        SELECT g.id, g.cost, NULL::bigint AS entry, NULL::bigint AS amount FROM generations g
        WHERE g.cost < 0
        UNION ALL
        SELECT e.generation_id, NULL, e.id, e.amount FROM ledger_entries e
        WHERE e.generation_id IS NOT NULL AND e.kind IN ('hold', 'charge', 'release')
          AND e.amount > 0
    """,
    "no charge above its generation's hold": """
        SELECT g.id, g.hold, g.cost, NULL::bigint AS amount FROM generations g
        WHERE g.cost > g.hold
        UNION ALL
        SELECT g.id, g.hold, g.cost, e.amount FROM generations g
        JOIN ledger_entries e ON e.generation_id = g.id AND e.kind IN ('charge', 'release')
        WHERE -e.amount > g.hold
    """,
    "no unsettled generation has a settlement entry": """
        SELECT g.id FROM generations g JOIN ledger_entries e
            ON e.generation_id = g.id AND e.kind IN ('charge', 'release')
        WHERE g.settled_at IS NULL
    """,
    "each entry's balance_after continues the one before it": """
        SELECT id, account_id FROM (
            SELECT id, account_id, balance_after, sum(amount) OVER w AS running_balance
            FROM ledger_entries
            WINDOW w AS (PARTITION BY account_id ORDER BY id)
        ) x WHERE balance_after <> running_balance
    """,
    "no entry but an old hold entry raised the held sum": """
        SELECT id, account_id, kind, held_delta FROM ledger_entries
        WHERE held_delta > 0 AND kind <> 'hold'
    """,
    # Migration 0010: a key's spend counters follow its generations, period by period.
    "each key's held spend equals the holds of its unsettled generations": """
        SELECT s.api_key_id, s.period_start, s.held, coalesce(g.holds, 0) FROM key_spend s
        LEFT JOIN (
            SELECT api_key_id, key_period_start, sum(hold) AS holds FROM generations
            WHERE settled_at IS NULL AND api_key_id IS NOT NULL
            GROUP BY api_key_id, key_period_start
        ) g ON g.api_key_id = s.api_key_id AND g.key_period_start = s.period_start
        WHERE s.held <> coalesce(g.holds, 0)
    """,
    "each key's charged spend equals the charges of its settled generations": """
        SELECT s.api_key_id, s.period_start, s.charged, coalesce(g.charged, 0) FROM key_spend s
        LEFT JOIN (
            SELECT g.api_key_id, g.key_period_start,
                   sum(g.cost) + coalesce(sum(-late.amount), 0) AS charged
            FROM generations g LEFT JOIN ledger_entries late
                ON late.generation_id = g.id AND late.kind = 'late_charge'
            WHERE g.settled_at IS NOT NULL AND g.api_key_id IS NOT NULL
            GROUP BY g.api_key_id, g.key_period_start
        ) g ON g.api_key_id = s.api_key_id AND g.key_period_start = s.period_start
        WHERE s.charged <> coalesce(g.charged, 0)
    """,
}

PENDING_SQL = "SELECT count(*) FROM generations WHERE settled_at IS NULL"


async def find_violations(conn: AsyncConnection) -> dict[str, list[tuple[object, ...]]]:
    """Every broken rule with (up to 10 of) the rows that break it."""
    broken: dict[str, list[tuple[object, ...]]] = {}
    for rule, sql in CHECKS.items():
        rows = (await conn.execute(text(sql + " LIMIT 10"))).all()
        if rows:
            broken[rule] = [tuple(row) for row in rows]
    return broken


async def pending_generations(conn: AsyncConnection) -> int:
    return int((await conn.execute(text(PENDING_SQL))).scalar_one())


# --- answers: what was delivered is charged (issue 24) --------------------------------------

ANSWER_CHECKS: dict[str, str] = {
    "every generation that delivered output was charged, or says why": """
        SELECT g.id, g.status, g.output_tokens, g.cost FROM generations g
        WHERE g.settled_at IS NOT NULL AND coalesce(g.output_tokens, 0) > 0 AND g.cost = 0
          AND (g.input_price > 0 OR g.output_price > 0)
          AND NOT EXISTS (
              SELECT 1 FROM ledger_entries e
              WHERE e.generation_id = g.id AND e.kind = 'late_charge'
          )
    """,
    "every late charge follows a release of an interrupted generation, once": """
        SELECT e.generation_id, g.status, g.cost, e.amount FROM ledger_entries e
        JOIN generations g ON g.id = e.generation_id
        WHERE e.kind = 'late_charge'
          AND (g.status <> 'interrupted' OR g.settled_at IS NULL OR g.cost <> 0
               OR e.amount >= 0 OR e.held_delta <> 0)
    """,
}
"""A generation's usage is recorded only when its settlement reaches the database; one that
never did (its process died before the database came back) shows as ``interrupted`` with no
usage. Its settlement, if spooled, is in the data directory: `spooled_answers_released` finds
those whose hold was released already, until the next start charges them late."""


async def find_answer_violations(conn: AsyncConnection) -> dict[str, list[tuple[object, ...]]]:
    """Like `find_violations`, for the rules that answers delivered are paid for."""
    broken: dict[str, list[tuple[object, ...]]] = {}
    for rule, sql in ANSWER_CHECKS.items():
        rows = (await conn.execute(text(sql + " LIMIT 10"))).all()
        if rows:
            broken[rule] = [tuple(row) for row in rows]
    return broken


async def spooled_answers_released(
    conn: AsyncConnection, generation_ids: Collection[uuid.UUID]
) -> list[uuid.UUID]:
    """Of the spooled settlements given, those whose generation was released with no charge
    (answers delivered, not yet paid: the next start on that data directory charges them)."""
    if not generation_ids:
        return []
    rows = await conn.execute(
        text(
            "SELECT g.id FROM generations g WHERE g.id = ANY(:ids) AND g.settled_at IS NOT NULL "
            "AND g.cost = 0 AND NOT EXISTS (SELECT 1 FROM ledger_entries e "
            "WHERE e.generation_id = g.id AND e.kind = 'late_charge') ORDER BY g.id"
        ),
        {"ids": list(generation_ids)},
    )
    return [row[0] for row in rows]
