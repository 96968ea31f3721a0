"""Pools sized to the database's max_connections (`tollgate_server.db.pool_budget`)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import CLI, EmbeddedCluster, ServeProcess, execute_sql, free_port, serve_env
from tollgate_server.db.pool_budget import (
    DatabaseBudget,
    connections_per_process,
    fit_pool_size,
    read_budget,
)
from tollgate_server.db.raw import asyncpg_dsn

PG_DEFAULT = DatabaseBudget(max_connections=100, reserved=3, in_use=0)


def test_the_default_pools_of_four_workers_are_shrunk_to_fit_postgresql_defaults() -> None:
    assert 4 * connections_per_process(20) > 100  # what the issue measured: about 124
    size = fit_pool_size(20, 4, PG_DEFAULT)
    assert size is not None and size < 20
    assert 4 * connections_per_process(size) <= PG_DEFAULT.available
    assert 4 * connections_per_process(size + 1) > PG_DEFAULT.available
    assert fit_pool_size(20, 1, PG_DEFAULT) == 20


def test_a_small_server_takes_one_worker_with_the_smallest_pools() -> None:
    small = DatabaseBudget(max_connections=20, reserved=3)
    assert fit_pool_size(20, 1, small) == 2
    assert fit_pool_size(20, 2, small) is None


def test_connections_in_use_now_do_not_decide() -> None:
    """They come and go by the second; a start must not succeed or fail by chance."""
    busy = DatabaseBudget(max_connections=100, reserved=3, in_use=90)
    assert fit_pool_size(20, 4, busy) == fit_pool_size(20, 4, PG_DEFAULT)


@pytest.fixture(scope="module")
def small_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    """A PostgreSQL that allows 40 connections (3 of them for superusers)."""
    with EmbeddedCluster(tmp_path_factory.mktemp("small") / "pg") as cluster:
        dsn = asyncpg_dsn(cluster.url)
        asyncio.run(execute_sql(dsn, "ALTER SYSTEM SET max_connections = 40"))
        cluster.stop()
        cluster.start()
        yield cluster


def test_read_budget(small_cluster: EmbeddedCluster) -> None:
    budget = asyncio.run(read_budget(small_cluster.url))
    assert (budget.max_connections, budget.reserved) == (40, 3)


@pytest.mark.e2e
def test_serve_shrinks_the_pools_to_fit_the_database(
    small_cluster: EmbeddedCluster, tmp_path: Path
) -> None:
    env = serve_env(TOLLGATE_DATABASE_URL=small_cluster.url, TOLLGATE_DATA_DIR=str(tmp_path))
    serve = ServeProcess(env, "--workers", "2")
    with serve:
        assert serve.stop() == 0
    output = serve.output()
    assert "TOLLGATE_DB_POOL_SIZE: 20 lowered to 8 so that 2 worker(s) fit" in output, output


def test_serve_refuses_workers_the_database_cannot_hold(
    small_cluster: EmbeddedCluster, tmp_path: Path
) -> None:
    result = subprocess.run(
        [*CLI, "serve", "--port", str(free_port()), "--workers", "8"],
        env=serve_env(TOLLGATE_DATABASE_URL=small_cluster.url, TOLLGATE_DATA_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        "error: --workers 8 need at least 56 database connections, but the database gives "
        "Tollgate 27 (max_connections 40, less 3 reserved and 10 kept for other clients"
    )
    assert "raise PostgreSQL's max_connections" in lines[0]
