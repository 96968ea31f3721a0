"""`tollgate serve` as a person runs it: a real process, the embedded database, bad settings."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import httpx
import pytest
from support import CLI, ServeProcess, free_port, serve_env


@pytest.mark.e2e
def test_serve_on_embedded_postgres_keeps_data_across_restarts(tmp_path: Path) -> None:
    env = serve_env(TOLLGATE_DATA_DIR=str(tmp_path / "data"))
    email = "keeper@example.com"
    first = ServeProcess(env)
    with first:
        created = httpx.post(
            f"{first.url}/v1/auth/register", json={"email": email, "password": "password-123"}
        )
        assert created.status_code == 201
        assert first.stop() == 0
    assert f"{first.url}/docs" in first.output()

    second = ServeProcess(env)
    second.port = first.port
    with second:
        login = httpx.post(
            f"{second.url}/v1/auth/login", json={"email": email, "password": "password-123"}
        )
        assert login.status_code == 200, "the account did not survive the restart"
        assert second.stop() == 0


def _run_serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "serve", *args],
        env=serve_env(TOLLGATE_DATA_DIR=str(tmp_path), **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    result = _run_serve(
        tmp_path,
        "--port",
        str(free_port()),
        TOLLGATE_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:1/none",
    )
    assert "TOLLGATE_DATABASE_URL" in _one_line(result)


def test_a_database_url_for_another_driver_is_one_line(tmp_path: Path) -> None:
    result = _run_serve(
        tmp_path, TOLLGATE_DATABASE_URL="postgresql+psycopg2://postgres@127.0.0.1/tollgate"
    )
    line = _one_line(result)
    assert "TOLLGATE_DATABASE_URL" in line
    assert "asyncpg" in line


def test_a_plain_postgresql_url_means_asyncpg() -> None:
    from tollgate_server.settings import Settings

    plain = Settings(database_url="postgresql://u:p%40ss@db:5432/tollgate")
    assert plain.database_url == "postgresql+asyncpg://u:p%40ss@db:5432/tollgate"
    assert Settings(database_url="").database_url is None


def test_short_jwt_secret_is_one_line(tmp_path: Path) -> None:
    result = _run_serve(tmp_path, TOLLGATE_JWT_SECRET="too-short")
    assert "TOLLGATE_JWT_SECRET" in _one_line(result)


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run_serve(
            tmp_path,
            "--port",
            str(port),
            TOLLGATE_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:1/x",
        )
    assert "--port" in _one_line(result)


def test_a_database_newer_than_the_code_is_refused(database_url: str, tmp_path: Path) -> None:
    import asyncio

    from support import asyncpg_dsn, execute_sql, fresh_database

    with fresh_database(database_url, prefix="tollgate_newer", migrate=False) as url:
        asyncio.run(
            execute_sql(
                asyncpg_dsn(url),
                (
                    "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);"
                    "INSERT INTO alembic_version VALUES ('9999_from_the_future')"
                ),
            )
        )
        result = _run_serve(tmp_path, "--port", str(free_port()), TOLLGATE_DATABASE_URL=url)
    line = _one_line(result)
    assert "newer" in line and "9999_from_the_future" in line
