"""Pooled asyncpg connections for the hot path's few fixed statements.

The gateway's admission and settlement are single statements; running them on the driver
connection skips SQLAlchemy's per-statement work. Their pool has no pre-ping (a round trip per
checkout): instead a statement that finds its connection dead is retried once on a fresh one,
after the pool has been emptied of connections from before the outage.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from tollgate_server.errors import database_unavailable

T = TypeVar("T")


@contextlib.asynccontextmanager
async def raw_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """Check a connection out of `engine`'s pool as a bare asyncpg connection.

    Statements run in autocommit: each is its own transaction, which is what the ledger's
    single-statement admission and settlement are written for. A connection that failed
    because the database went away is invalidated, and so is the rest of the pool.
    """
    async with engine.connect() as conn:
        fairy = await conn.get_raw_connection()
        driver = fairy.driver_connection
        assert driver is not None
        try:
            yield driver
        except BaseException as exc:
            if isinstance(exc, Exception) and database_unavailable(exc):
                await conn.invalidate(exc)
                # Every pooled connection predates the outage: replace them all.
                await engine.dispose(close=False)
            raise


async def run_with_retry(
    engine: AsyncEngine, operation: Callable[[asyncpg.Connection], Awaitable[T]]
) -> T:
    """Run `operation` on a pooled connection, once more on a fresh one if the first was dead.

    `operation` must be safe to repeat: the gateway's statements are guarded so that a repeat
    either does the same thing or nothing.
    """
    try:
        async with raw_connection(engine) as conn:
            return await operation(conn)
    except Exception as exc:
        if not database_unavailable(exc):
            raise
    async with raw_connection(engine) as conn:
        return await operation(conn)
