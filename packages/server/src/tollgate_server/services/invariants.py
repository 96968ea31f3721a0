"""The ledger's invariants, as SQL. Run after every integration test, by the soak benchmark,
and by `tollgate db check`. Each query returns the rows that break its rule: none is good."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

CHECKS: dict[str, str] = {
    "balance equals the sum of the account's entries": """
        SELECT a.id, a.balance, coalesce(sum(e.amount), 0) AS entries
        FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
        GROUP BY a.id HAVING a.balance <> coalesce(sum(e.amount), 0)
    """,
    "held equals the sum of the entries' held changes": """
        SELECT a.id, a.held, coalesce(sum(e.held_delta), 0) AS entries
        FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
        GROUP BY a.id HAVING a.held <> coalesce(sum(e.held_delta), 0)
    """,
    "held and running equal the holds of unsettled generations": """
        SELECT a.id, a.held, a.running, coalesce(g.holds, 0), coalesce(g.n, 0)
        FROM accounts a LEFT JOIN (
            SELECT account_id, sum(hold) AS holds, count(*) AS n FROM generations
            WHERE settled_at IS NULL GROUP BY account_id
        ) g ON g.account_id = a.id
        WHERE a.held <> coalesce(g.holds, 0) OR a.running <> coalesce(g.n, 0)
    """,
    "every generation has exactly one hold entry": """
        SELECT g.id FROM generations g
        LEFT JOIN ledger_entries e ON e.generation_id = g.id AND e.kind = 'hold'
        GROUP BY g.id HAVING count(e.id) <> 1
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
    "no generation raised a balance": """
        SELECT g.id, g.cost, e.id AS entry, e.amount FROM generations g
        LEFT JOIN ledger_entries e
            ON e.generation_id = g.id AND e.kind IN ('hold', 'charge', 'release')
        WHERE g.cost < 0 OR e.amount > 0
    """,
    "no charge above its generation's hold": """
        SELECT g.id, g.hold, g.cost, e.amount FROM generations g
        LEFT JOIN ledger_entries e
            ON e.generation_id = g.id AND e.kind IN ('charge', 'release')
        WHERE g.cost > g.hold OR -e.amount > g.hold
    """,
    "no unsettled generation has a settlement entry": """
        SELECT g.id FROM generations g JOIN ledger_entries e
            ON e.generation_id = g.id AND e.kind IN ('charge', 'release')
        WHERE g.settled_at IS NULL
    """,
    "each entry's balance_after continues the one before it": """
        SELECT id, account_id FROM (
            SELECT id, account_id, balance_after, held_after,
                   sum(amount) OVER w AS running_balance, sum(held_delta) OVER w AS running_held
            FROM ledger_entries
            WINDOW w AS (PARTITION BY account_id ORDER BY id)
        ) x WHERE balance_after <> running_balance OR held_after <> running_held
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
