"""A bare asyncpg pool for the hot path's few fixed statements.

The gateway's admission and settlement (and API key look-ups) are single statements in
autocommit. They run on their own asyncpg pool, not through SQLAlchemy's: no greenlet hop, no
pre-ping round trip and no reset round trip on release. A statement that finds its connection
dead empties the pool of connections from before the outage and is retried once on a fresh one.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import asyncpg
from sqlalchemy.engine import make_url

from tollgate_server.errors import Refused, database_unavailable

T = TypeVar("T")

SERVER_SETTINGS = {"application_name": "tollgate"}
"""Session settings of every connection the server opens (the engine's and the hot pool's)."""


_DIALECT_ONLY_OPTIONS = ("prepared_statement_cache_size", "prepared_statement_name_func")
"""Query options of SQLAlchemy's asyncpg dialect that asyncpg itself would send to the server
as settings (and the server would refuse)."""


def asyncpg_dsn(url: str) -> str:
    """asyncpg's DSN for one of our SQLAlchemy URLs (``postgresql+asyncpg://...``).

    The dialect's ``ssl=`` option is asyncpg's ``sslmode=``; the dialect's own options are
    dropped.
    """
    parsed = make_url(url)
    query = {k: v for k, v in parsed.query.items() if k not in _DIALECT_ONLY_OPTIONS}
    if "ssl" in query and "sslmode" not in query:
        query["sslmode"] = query.pop("ssl")
    return parsed.set(drivername="postgresql", query=query).render_as_string(hide_password=False)


async def create_hot_pool(url: str, *, size: int) -> asyncpg.Pool:
    """The hot path's pool, from the same SQLAlchemy URL as the engine."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        asyncpg_dsn(url),
        min_size=min(2, size),
        max_size=size,
        reset=_keep_session,
        server_settings=SERVER_SETTINGS,
    )
    return pool


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Release without asyncpg's default reset query (``UNLISTEN *; RESET ALL; ...``).

    That query is a round trip per release, two per generation, and here it resets nothing:
    these statements run in autocommit and set no session state. What the reset also caught
    is handled without it: asyncpg still checks, before calling this, that the connection is
    open and rolls back a transaction left open; `raw_connection` terminates a connection whose
    statement was cut off half-way (see `_leaves_connection_idle`); and a connection left
    mid-protocol by an outage raises InternalClientError on its next use, which counts as an
    outage (`database_unavailable`), so the statement is retried on a fresh connection.
    """


def _leaves_connection_idle(conn: asyncpg.Connection, exc: BaseException) -> bool:
    """Whether the connection is known to be idle and sound after `exc`: a refusal raised by
    our code after its statement completed (402, 429...), or an error PostgreSQL reported in
    full (asyncpg raises those only once the server is ready for the next query). Closing the
    connection then would cost a reconnect for every refused request. Anything else (a
    cancellation, a timeout, a client-side failure) may have cut a statement off half-way.

    Callers raise `Refused` only after their statements have completed; a caller that turned
    a timeout into an `Refused` would have to terminate the connection itself.
    """
    if database_unavailable(exc) or conn.is_closed() or conn.is_in_transaction():
        return False
    return isinstance(exc, (Refused, asyncpg.PostgresError))


@contextlib.asynccontextmanager
async def raw_connection(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection; on a database outage the whole pool is marked for replacement."""
    try:
        async with pool.acquire() as conn:
            try:
                yield conn
            except BaseException as exc:
                # A connection whose statement was cut off half-way is not handed out again.
                if not _leaves_connection_idle(conn, exc):
                    conn.terminate()
                raise
    except Exception as exc:
        if database_unavailable(exc):
            await pool.expire_connections()
        raise


async def run_with_retry(
    pool: asyncpg.Pool, operation: Callable[[asyncpg.Connection], Awaitable[T]]
) -> T:
    """Run `operation` on a pooled connection, once more on a fresh one if the first was dead.

    `operation` must be safe to repeat: the gateway's statements are guarded so that a repeat
    either does the same thing or nothing.
    """
    try:
        async with raw_connection(pool) as conn:
            return await operation(conn)
    except Exception as exc:
        if not database_unavailable(exc):
            raise
    async with raw_connection(pool) as conn:
        return await operation(conn)
