"""Settlements that arrive late: replayed from a spool file, before or after the sweeper.

A generation is admitted for an instance that is gone (no heartbeat), and its settlement is
left in a spool file, as a process that died during a database outage leaves it.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import User, ensure_test_models, make_settings
from support import ServerThread, asyncpg_dsn, orphan_admission
from tollgate_core import Usage
from tollgate_server.app import create_app
from tollgate_server.services import ledger
from tollgate_server.services.spool import SettlementSpool, spool_directory

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

PROMPT_TOKENS, OUTPUT_TOKENS = 10, 40
CHARGE = (PROMPT_TOKENS * 1 + OUTPUT_TOKENS * 2) * 1_000_000
"""The test models cost 1 credit per input token and 2 per output token."""


async def _admit_for_a_dead_instance(database_url: str, account_id: str) -> uuid.UUID:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        admission = await orphan_admission(
            conn,
            account_id,
            hold=200_000_000,
            stream=True,
            max_tokens=95,
            prompt_tokens=PROMPT_TOKENS,
        )
        await ledger.admit(
            conn,
            admission,
            strict=False,
            max_running=16,
        )
        return admission.generation_id  # type: ignore[no-any-return]
    finally:
        await conn.close()


def _spool_settlement(data_dir: Path, generation_id: uuid.UUID) -> Path:
    """Write the settlement as the dead process did, before its answer's last byte."""
    spool = SettlementSpool(spool_directory(data_dir), uuid.uuid4())
    spool.append(
        generation_id,
        ledger.Outcome(
            status="completed",
            usage=Usage(input_tokens=PROMPT_TOKENS, output_tokens=OUTPUT_TOKENS),
            charge=CHARGE,
        ),
    )
    spool.close()
    return spool.path


@pytest.fixture
def serve_on(
    database_url: str, provider_env: dict[str, str], admin_headers: dict[str, str]
) -> Callable[..., Any]:
    @contextmanager
    def start(data_dir: Path, **overrides: Any) -> Iterator[httpx.Client]:
        settings = make_settings(database_url, data_dir, **overrides)
        with ServerThread(create_app(settings, provider_env=provider_env)) as running:
            with httpx.Client(base_url=running.url, timeout=30) as client:
                ensure_test_models(client, admin_headers)
                yield client

    return start


def _generation(client: httpx.Client, user: User) -> dict[str, Any]:
    data = client.get("/v1/generations", headers=user.headers).json()["data"]
    return data[0]  # type: ignore[no-any-return]


def test_a_settlement_arriving_after_its_hold_was_released_is_charged_late_once(
    database_url: str,
    serve_on: Callable[..., Any],
    make_user: Callable[..., User],
    test_models: object,
    tmp_path: Path,
) -> None:
    user = make_user(credits=1000)
    generation_id = asyncio.run(_admit_for_a_dead_instance(database_url, user.id))
    spooled = _spool_settlement(tmp_path / "late", generation_id)
    copy = tmp_path / "copy.jsonl"
    shutil.copy(spooled, copy)

    # Another machine's server (another data directory) sweeps the dead instance's hold.
    with serve_on(tmp_path / "elsewhere") as client:
        released = _generation(client, user)
        assert released["status"] == "interrupted" and released["cost"] == "0"
        assert client.get("/v1/balance", headers=user.headers).json()["held"] == "0"

    # Until then, `tollgate db check` on that data directory says what waits there.
    report = _db_check(database_url, tmp_path / "late")
    assert report["spooled_settlements"]["settlements"] == 1
    assert report["spooled_settlements"]["released_awaiting_late_charge"] == [str(generation_id)]

    # The dead instance's data directory comes back: its settlement is still charged.
    with serve_on(tmp_path / "late") as client:
        balance = client.get("/v1/balance", headers=user.headers).json()
        entries = client.get("/v1/ledger", headers=user.headers).json()["data"]
        ready = client.get("/readyz").json()
    assert balance == {"balance": "910", "held": "0", "available": "910"}
    late = [e for e in entries if e["kind"] == "late_charge"]
    assert len(late) == 1
    assert late[0]["generation_id"] == str(generation_id) and late[0]["amount"] == "-90"
    assert late[0]["held_delta"] == "0"
    assert not spooled.exists(), "a replayed spool file is removed"
    assert ready["settlements_spooled"] == 0
    report = _db_check(database_url, tmp_path / "late")
    assert report["spooled_settlements"]["settlements"] == 0
    assert report["spooled_settlements"]["released_awaiting_late_charge"] == []

    # Replaying the same settlement again charges nothing more.
    shutil.copy(copy, spooled)
    with serve_on(tmp_path / "late") as client:
        again = client.get("/v1/balance", headers=user.headers).json()
    assert again == balance
    assert not spooled.exists()


def test_a_live_answer_whose_hold_was_released_meanwhile_is_charged_late(
    api: httpx.Client, database_url: str, make_user: Callable[..., User], test_models: object
) -> None:
    """The owner was alive after all (its heartbeat was late): the sweeper released the hold
    while the stream ran, and the answer it still delivered is charged, as a late charge."""
    user = make_user(credits=1000)
    body = {
        "model": "fake-openai",
        "stream": True,
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi [[fake:chunks=8,delay_ms=100]]"}],
    }

    async def release_as_the_sweeper_does() -> uuid.UUID:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            generation_id: uuid.UUID = await conn.fetchval(
                "SELECT id FROM generations WHERE account_id = $1 AND settled_at IS NULL",
                uuid.UUID(user.id),
            )
            swept = ledger.Outcome(
                status="interrupted", usage=None, charge=0, error_code="interrupted"
            )
            assert await ledger.settle(conn, generation_id, swept)
            return generation_id
        finally:
            await conn.close()

    with api.stream("POST", "/v1/chat/completions", json=body, headers=user.headers) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        while '"delta":{"content":' not in next(lines):
            pass
        generation_id = asyncio.run(release_as_the_sweeper_does())
        assert "data: [DONE]" in list(lines)

    entries = api.get("/v1/ledger", headers=user.headers).json()["data"]
    late = [e for e in entries if e["generation_id"] == str(generation_id)]
    assert [e["kind"] for e in late] == ["late_charge", "release"]  # newest first
    charged = -Decimal(late[0]["amount"])
    assert charged > 0
    balance = api.get("/v1/balance", headers=user.headers).json()
    assert Decimal(balance["balance"]) == 1000 - charged and balance["held"] == "0"


def test_the_sweeper_never_releases_a_hold_whose_settlement_is_spooled(
    database_url: str,
    serve_on: Callable[..., Any],
    make_user: Callable[..., User],
    test_models: object,
    tmp_path: Path,
) -> None:
    user = make_user(credits=1000)
    generation_id = asyncio.run(_admit_for_a_dead_instance(database_url, user.id))
    data_dir = tmp_path / "shared"
    spooled = _spool_settlement(data_dir, generation_id)
    # A live process on the same data directory still holds its file (its retries run).
    fd = os.open(spooled, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with serve_on(data_dir, sweep_interval_seconds=0.1) as client:
            time.sleep(0.5)  # several sweeps
            running = _generation(client, user)
            assert running["status"] == "running", f"a spooled hold was released: {running}"
            ready = client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["settlements_spooled"] == 1, ready.text
            os.close(fd)  # that process is gone now: its file is replayed by the next sweep
            fd = -1
            deadline = time.monotonic() + 30
            while _generation(client, user)["status"] == "running":
                assert time.monotonic() < deadline, "the abandoned spool was not replayed"
                time.sleep(0.1)
            settled = _generation(client, user)
            balance = client.get("/v1/balance", headers=user.headers).json()
    finally:
        if fd >= 0:
            os.close(fd)
    assert settled["status"] == "completed" and settled["cost"] == "90"
    assert balance == {"balance": "910", "held": "0", "available": "910"}
    assert not spooled.exists()


def _db_check(database_url: str, data_dir: Path) -> dict[str, Any]:
    from tollgate_cli.main import app
    from typer.testing import CliRunner

    env = {"TOLLGATE_DATABASE_URL": database_url, "TOLLGATE_DATA_DIR": str(data_dir)}
    result = CliRunner(env=env).invoke(app, ["db", "check", "--json"])
    report: dict[str, Any] = json.loads(result.stdout)
    assert result.exit_code == (0 if report["ok"] else 1)
    return report


def test_db_check_reports_an_answer_delivered_and_charged_nothing(
    database_url: str, make_user: Callable[..., User], test_models: object, tmp_path: Path
) -> None:
    user = make_user(credits=1000)
    generation_id = asyncio.run(_admit_for_a_dead_instance(database_url, user.id))

    async def settle(outcome: ledger.Outcome) -> None:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            assert await ledger.settle(conn, generation_id, outcome)
        finally:
            await conn.close()

    # An answer delivered (40 tokens) but charged nothing, with no reason: a bug to report.
    usage = Usage(input_tokens=PROMPT_TOKENS, output_tokens=OUTPUT_TOKENS)
    asyncio.run(settle(ledger.Outcome(status="completed", usage=usage, charge=0)))
    report = _db_check(database_url, tmp_path)
    assert report["ok"] is False
    (rule,) = report["violations"]
    assert "delivered output" in rule
    assert report["violations"][rule][0][0] == str(generation_id)

    # Undo the forged usage, so the suite's own check after this test finds the books whole.
    async def forget_usage() -> None:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            await conn.execute(
                "UPDATE generations SET output_tokens = NULL WHERE id = $1", generation_id
            )
        finally:
            await conn.close()

    asyncio.run(forget_usage())
    assert _db_check(database_url, tmp_path)["ok"] is True
