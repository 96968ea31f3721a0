"""How many connections a serving process opens, and fitting that to what the database allows.

Each process has three consumers: the hot asyncpg pool (``db_pool_size``), the SQLAlchemy
engine (a quarter of it, at least 2, plus as much again in overflow) and the LISTEN connection.
At the default size that is 31 a process, so ``--workers 4`` wants 124 where PostgreSQL allows
100 by default: the pools fail under load (503s) and so do the database's other clients.
`tollgate serve` reads the server's limit first and shrinks the pools to fit, or refuses.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from tollgate_server.db.raw import asyncpg_dsn

MIN_POOL_SIZE = 2
"""Below this a process would queue most requests on one or two connections: refused."""


def engine_pool_size(pool_size: int) -> int:
    """The SQLAlchemy engine's pool for a given hot pool size (its overflow is as large)."""
    return max(2, pool_size // 4)


def connections_per_process(pool_size: int) -> int:
    """The most connections one serving process opens with `pool_size`."""
    return pool_size + 2 * engine_pool_size(pool_size) + 1


@dataclass(frozen=True)
class DatabaseBudget:
    max_connections: int
    reserved: int
    """``superuser_reserved_connections`` (and ``reserved_connections``), which we may not use."""
    in_use: int = 0
    """Connections open when we looked, other than ours. Only reported: it changes by the
    second (other servers, tests, CLI commands), so sizing on it would make a start succeed or
    fail by chance; the headroom is what other clients keep."""

    @property
    def headroom(self) -> int:
        """Connections left for the database's other clients (and tollgate CLI commands):
        a fifth of the limit, at least 10."""
        return max(10, self.max_connections // 5)

    @property
    def available(self) -> int:
        return self.max_connections - self.reserved - self.headroom


def fit_pool_size(wanted: int, workers: int, budget: DatabaseBudget) -> int | None:
    """The largest pool size up to `wanted` whose `workers` processes fit the budget, or None
    when not even `MIN_POOL_SIZE` does."""
    size = wanted
    while size >= MIN_POOL_SIZE:
        if workers * connections_per_process(size) <= budget.available:
            return size
        size -= 1
    return None


def too_many_message(workers: int, budget: DatabaseBudget) -> str:
    return (
        f"--workers {workers} need at least "
        f"{workers * connections_per_process(MIN_POOL_SIZE)} database connections, but the "
        f"database gives Tollgate {budget.available} (max_connections {budget.max_connections}, "
        f"less {budget.reserved} reserved and {budget.headroom} kept for other clients; "
        f"{budget.in_use} in use now): lower --workers, or raise PostgreSQL's max_connections"
    )


async def read_budget(url: str) -> DatabaseBudget:
    """The database server's connection limit and what is already taken of it."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        row = await conn.fetchrow(
            "SELECT current_setting('max_connections')::int AS max_connections,"
            " current_setting('superuser_reserved_connections')::int"
            " + coalesce(current_setting('reserved_connections', true)::int, 0) AS reserved,"
            " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
            "  AND pid <> pg_backend_pid())::int AS in_use"
        )
    finally:
        await conn.close()
    return DatabaseBudget(
        max_connections=row["max_connections"], reserved=row["reserved"], in_use=row["in_use"]
    )
