"""The async engine. One per process, owned by the app's lifespan or the CLI command."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def make_engine(url: str, *, pool_size: int = 20) -> AsyncEngine:
    """An asyncpg engine whose pool survives a PostgreSQL restart (pre-ping on checkout).

    The generation path does not use it: it has a bare asyncpg pool (`tollgate_server.db.raw`).
    """
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=3600,
        # The server's own statements are few and fixed; asyncpg caches their plans.
        connect_args={"server_settings": {"application_name": "tollgate"}},
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
