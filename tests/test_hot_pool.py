"""The hot path's bare asyncpg pool (`tollgate_server.db.raw`): which connections go back to the
pool and which are closed. Released without a reset query, a connection must only be reused
when it is known to be idle and sound."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from tollgate_server.db.raw import asyncpg_dsn, create_hot_pool, raw_connection
from tollgate_server.errors import InsufficientCredits, Refused

pytestmark = pytest.mark.postgres


async def _backend_after(url: str, failure: str) -> tuple[int, int]:
    """The backend pid of the pool's one connection before and after a failure inside
    `raw_connection`."""
    pool = await create_hot_pool(url, size=1)
    try:
        async with raw_connection(pool) as conn:
            before = await conn.fetchval("SELECT pg_backend_pid()")
        with pytest.raises((Refused, asyncpg.PostgresError, TimeoutError)):
            async with raw_connection(pool) as conn:
                if failure == "refusal":
                    await conn.fetchval("SELECT 1")
                    raise InsufficientCredits("insufficient_balance", "no credits")
                if failure == "server_error":
                    await conn.fetchval("SELECT 1 / 0")
                if failure == "cancelled":
                    async with asyncio.timeout(0.05):
                        await conn.fetchval("SELECT pg_sleep(5)")
        async with raw_connection(pool) as conn:
            after = await conn.fetchval("SELECT pg_backend_pid()")
        return before, after
    finally:
        await pool.close()


@pytest.mark.parametrize("failure", ["refusal", "server_error"])
def test_a_refusal_or_a_reported_error_keeps_the_connection(
    database_url: str, failure: str
) -> None:
    before, after = asyncio.run(_backend_after(database_url, failure))
    assert after == before


def test_a_statement_cut_off_half_way_closes_the_connection(database_url: str) -> None:
    before, after = asyncio.run(_backend_after(database_url, "cancelled"))
    assert after != before


def test_session_state_is_not_carried_to_the_next_user(database_url: str) -> None:
    """Nothing on the hot path sets session state; asyncpg's own pre-release check still rolls
    back a transaction left open, so the next user never starts inside one."""

    async def run() -> bool:
        pool = await create_hot_pool(database_url, size=1)
        try:
            async with raw_connection(pool) as conn:
                await conn.execute("BEGIN")
            async with raw_connection(pool) as conn:
                in_transaction: bool = conn.is_in_transaction()
                return in_transaction
        finally:
            await pool.close()

    assert asyncio.run(run()) is False


def test_the_dialects_url_options_are_translated_for_asyncpg() -> None:
    dsn = asyncpg_dsn(
        "postgresql+asyncpg://u:p%40ss@db/tollgate?ssl=require&prepared_statement_cache_size=0"
    )
    assert dsn == "postgresql://u:p%40ss@db/tollgate?sslmode=require"
    embedded = asyncpg_dsn("postgresql+asyncpg://postgres@/tollgate?host=/run/tg")
    assert embedded == "postgresql://postgres@/tollgate?host=%2Frun%2Ftg"
