"""A database crash gives no answer away (issue 24).

PostgreSQL is killed with SIGKILL (as an out-of-memory kill or a power cut would) while streams
run. Every stream still delivers its whole answer, and every answer delivered is charged what it
delivered: at once when the database comes back, or by the next start from the settlement spool.
The embedded database of `tollgate serve` is brought back by the server itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, JWT_SECRET, ensure_test_models, make_settings
from conftest import upstream_env as upstream_environment
from support import CLI, EmbeddedCluster, ServeProcess, ServerThread, serve_env
from tollgate_core.fake_upstream import FakeUpstream
from tollgate_server.app import create_app

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

CHUNKS = 40
ASK = {
    "model": "fake-openai",
    "stream": True,
    "max_tokens": 500,
    "messages": [{"role": "user", "content": f"hi [[fake:chunks={CHUNKS},delay_ms=50]]"}],
}


class Stream(threading.Thread):
    """One streaming generation read to its end, in a thread."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.url, self.headers = url, headers
        self.started = threading.Event()
        self.events: list[str] = []
        self.cost: Decimal | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with (
                httpx.Client(timeout=60) as client,
                client.stream(
                    "POST", f"{self.url}/v1/chat/completions", json=ASK, headers=self.headers
                ) as response,
            ):
                assert response.status_code == 200, response.read()
                for line in response.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    self.events.append(line)
                    if '"content":' in line:
                        self.started.set()
                    if '"usage":' in line and '"cost":' in line:
                        self.cost = Decimal(json.loads(line[6:])["usage"]["cost"])
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.started.set()

    @property
    def complete(self) -> bool:
        deltas = sum('"content":' in e for e in self.events)
        return self.events[-1:] == ["data: [DONE]"] and deltas >= CHUNKS


def _start_streams(url: str, headers: dict[str, str], count: int) -> list[Stream]:
    streams = [Stream(url, headers) for _ in range(count)]
    for stream in streams:
        stream.start()
    for stream in streams:
        assert stream.started.wait(30)
    return streams


def _finish(streams: list[Stream]) -> Decimal:
    """Every answer complete; returns what the clients were told they were charged."""
    for stream in streams:
        stream.join(60)
        assert stream.error is None, stream.error
        assert stream.complete, stream.events[-3:]
        assert stream.cost is not None and stream.cost > 0
    return sum((s.cost for s in streams if s.cost is not None), Decimal(0))


def _kill_postmaster(pgdata: Path) -> None:
    pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)


def _restart(cluster: EmbeddedCluster) -> None:
    """Start a killed cluster again (crash recovery), once its old processes are gone."""
    deadline = time.monotonic() + 60
    while True:
        try:
            cluster.start()
            return
        except subprocess.CalledProcessError:
            assert time.monotonic() < deadline, "the killed PostgreSQL would not start again"
            time.sleep(0.5)


def _funded_user(client: httpx.Client) -> dict[str, str]:
    login = client.post("/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
    ensure_test_models(client, admin)
    email = f"crash-{uuid.uuid4().hex[:8]}@example.com"
    created = client.post("/v1/auth/register", json={"email": email, "password": "password-123"})
    granted = client.post(
        f"/v1/admin/users/{created.json()['id']}/credits",
        json={"amount": "100000", "reason": "t"},
        headers={**admin, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert granted.status_code == 201, granted.text
    token = client.post("/v1/auth/login", json={"email": email, "password": "password-123"})
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


def _spent(client: httpx.Client, headers: dict[str, str]) -> tuple[Decimal, str]:
    balance = client.get("/v1/balance", headers=headers).json()
    return Decimal(100000) - Decimal(balance["balance"]), balance["held"]


def _check_ledger(url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine
    from tollgate_server.services.invariants import (
        find_answer_violations,
        find_violations,
        pending_generations,
    )

    async def check() -> tuple[dict[str, Any], int]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                broken = {**await find_violations(conn), **await find_answer_violations(conn)}
                return broken, await pending_generations(conn)
        finally:
            await engine.dispose()

    assert asyncio.run(check()) == ({}, 0)


# --- an external PostgreSQL -------------------------------------------------------------------


def test_external_database_killed_and_restarted_while_the_server_runs(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    from tollgate_server.db.migrate import upgrade

    with EmbeddedCluster(tmp_path / "pg") as cluster:
        upgrade(cluster.url)
        settings = make_settings(cluster.url, tmp_path / "data")
        app = create_app(settings, provider_env=upstream_environment(upstream))
        with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            headers = _funded_user(client)
            streams = _start_streams(server.url, headers, 6)
            _kill_postmaster(cluster.server.pgdata)
            told = _finish(streams)
            down = client.get("/readyz")
            assert down.status_code == 503
            assert "settlements waiting: 6, spooled: 6" in down.json()["error"]["message"]

            _restart(cluster)
            deadline = time.monotonic() + 30
            while (ready := client.get("/readyz")).status_code != 200 or ready.json()[
                "settlements_waiting"
            ]:
                assert time.monotonic() < deadline, ready.text
                time.sleep(0.2)
            assert ready.json()["settlements_spooled"] == 0
            spent, held = _spent(client, headers)
        assert spent == told and held == "0"
        _check_ledger(cluster.url)


def test_answers_finished_during_an_outage_are_charged_by_the_next_start(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """The server stops before the database is back: the spool carries the charges over."""
    from tollgate_server.db.migrate import upgrade

    with EmbeddedCluster(tmp_path / "pg") as cluster:
        upgrade(cluster.url)
        settings = make_settings(cluster.url, tmp_path / "data", shutdown_grace_seconds=0.5)
        env = upstream_environment(upstream)
        with ServerThread(create_app(settings, provider_env=env)) as server:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                headers = _funded_user(client)
            streams = _start_streams(server.url, headers, 6)
            _kill_postmaster(cluster.server.pgdata)
            told = _finish(streams)
        # Stopped with the database still away; then the database comes back, and a new
        # process starts on the same data directory.
        _restart(cluster)
        with ServerThread(create_app(settings, provider_env=env)) as server:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                spent, held = _spent(client, headers)
                generations = client.get("/v1/generations", headers=headers).json()["data"]
        assert spent == told and held == "0"
        assert [g["status"] for g in generations] == ["completed"] * 6
        assert not list((tmp_path / "data" / "settlements").glob("*.jsonl"))
        _check_ledger(cluster.url)


def test_embeddings_answered_during_an_outage_are_spooled_and_charged(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """Embedding requests settle like chat generations: their vectors are delivered while the
    database is away, and their charges are spooled, then settled when it returns."""
    from tollgate_server.db.migrate import upgrade

    ask = {"model": "fake-openai-embed", "input": ["[[fake:stall_first_s=1.5]] embed me"]}
    with EmbeddedCluster(tmp_path / "pg") as cluster:
        upgrade(cluster.url)
        settings = make_settings(cluster.url, tmp_path / "data")
        app = create_app(settings, provider_env=upstream_environment(upstream))
        with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            headers = _funded_user(client)
            answers: list[httpx.Response] = []

            def call() -> None:
                with httpx.Client(timeout=30) as own:
                    answers.append(
                        own.post(f"{server.url}/v1/embeddings", json=ask, headers=headers)
                    )

            threads = [threading.Thread(target=call, daemon=True) for _ in range(3)]
            for thread in threads:
                thread.start()
            # Admitted, their upstream calls stalled: the database dies under them.
            deadline = time.monotonic() + 10
            while client.get("/v1/balance", headers=headers).json()["held"] == "0":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(0.3)
            _kill_postmaster(cluster.server.pgdata)
            for thread in threads:
                thread.join(30)
            assert [a.status_code for a in answers] == [200] * 3, [a.text for a in answers]
            told = sum((Decimal(a.json()["usage"]["cost"]) for a in answers), Decimal(0))
            assert told > 0
            down = client.get("/readyz")
            assert down.status_code == 503
            assert "settlements waiting: 3, spooled: 3" in down.json()["error"]["message"]

            _restart(cluster)
            deadline = time.monotonic() + 30
            while (ready := client.get("/readyz")).status_code != 200 or ready.json()[
                "settlements_waiting"
            ]:
                assert time.monotonic() < deadline, ready.text
                time.sleep(0.2)
            spent, held = _spent(client, headers)
            listed = client.get("/v1/generations", headers=headers).json()["data"]
        assert spent == told and held == "0"
        assert [(g["endpoint"], g["status"]) for g in listed] == [("embeddings", "completed")] * 3
        _check_ledger(cluster.url)


# --- the embedded PostgreSQL of `tollgate serve` ----------------------------------------------


def _embedded_env(data_dir: Path, upstream: FakeUpstream, **extra: str) -> dict[str, str]:
    return serve_env(
        TOLLGATE_DATA_DIR=str(data_dir),
        TOLLGATE_JWT_SECRET=JWT_SECRET,
        TOLLGATE_ADMIN_EMAIL=ADMIN_EMAIL,
        TOLLGATE_ADMIN_PASSWORD=ADMIN_PASSWORD,
        TOLLGATE_SHUTDOWN_GRACE_SECONDS="1",
        **upstream_environment(upstream),
        **extra,
    )


def _db_check(env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        [*CLI, "db", "check", "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_embedded_database_killed_under_streams_then_server_restarted(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """The issue's scenario: streams running, the embedded PostgreSQL killed with SIGKILL, the
    server stopped and started again. Every answer delivered is charged what it delivered."""
    data_dir = tmp_path / "data"
    env = _embedded_env(data_dir, upstream)
    first = ServeProcess(env)
    with first, httpx.Client(base_url=first.url, timeout=30) as client:
        headers = _funded_user(client)
        streams = _start_streams(first.url, headers, 12)
        _kill_postmaster(data_dir / "postgres" / "pgdata")
        told = _finish(streams)
        assert first.stop() == 0
    second = ServeProcess(env)
    with second, httpx.Client(base_url=second.url, timeout=30) as client:
        spent, held = _spent(client, headers)
        generations = client.get("/v1/generations", headers=headers).json()["data"]
        assert second.stop() == 0
    assert spent == told and held == "0"
    assert [g["status"] for g in generations] == ["completed"] * 12
    report = _db_check(env)
    assert report["ok"] and report["pending_generations"] == 0
    assert report["spooled_settlements"]["settlements"] == 0


def test_a_killed_embedded_database_is_brought_back_by_the_running_server(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    data_dir = tmp_path / "data"
    server = ServeProcess(_embedded_env(data_dir, upstream))
    with server, httpx.Client(base_url=server.url, timeout=30) as client:
        headers = _funded_user(client)
        _kill_postmaster(data_dir / "postgres" / "pgdata")
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200 or not _alive(data_dir):
            assert server.process is not None and server.process.poll() is None
            assert time.monotonic() < deadline, "the embedded PostgreSQL was not restarted"
            time.sleep(0.2)
        answer = client.post("/v1/chat/completions", headers=headers, json={**ASK, "stream": False})
        assert answer.status_code == 200, answer.text
        assert server.stop() == 0
    assert "embedded PostgreSQL is back" in server.output()
    # The restarted PostgreSQL is stopped with the server, not left running.
    assert not (data_dir / "postgres" / "pgdata" / "postmaster.pid").exists()


def _alive(data_dir: Path) -> bool:
    from tollgate_server.db.embedded import EmbeddedSupervisor

    probe = EmbeddedSupervisor.__new__(EmbeddedSupervisor)
    probe.pgdata = data_dir / "postgres" / "pgdata"
    return probe.alive()


def test_an_embedded_database_that_cannot_come_back_ends_the_server_with_one_line(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    data_dir = tmp_path / "data"
    env = _embedded_env(
        data_dir,
        upstream,
        TOLLGATE_EMBEDDED_RESTART_SECONDS="2",
        # The heartbeat and the sweeper run during the outage: their failures are one line
        # each, not a traceback (a heartbeat that fell in the outage once printed one).
        TOLLGATE_HEARTBEAT_SECONDS="0.2",
        TOLLGATE_SWEEP_INTERVAL_SECONDS="0.2",
    )
    server = ServeProcess(env)
    with server:
        pgdata = data_dir / "postgres" / "pgdata"
        control = pgdata / "global" / "pg_control"
        _kill_postmaster(pgdata)
        control.rename(control.with_suffix(".away"))  # it cannot start again
        assert server.wait(timeout=60) == 1
        lines = [line for line in server.output().splitlines() if line.strip()]
    assert "could not be restarted in 2 s" in lines[-1]
    assert "Traceback" not in "\n".join(lines)
