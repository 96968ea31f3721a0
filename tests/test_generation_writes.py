"""What a generation writes to PostgreSQL, and the rules that migration 0012 moved (issue 23).

The settlement updates its generation in place (a HOT update: no new index entries), history's
references are checked on a delete rather than by foreign keys on every insert, and the sweeper
looks at recent generations, and at all of them on its first round.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import User, make_settings
from support import ServerThread, asyncpg_dsn, orphan_admission
from tollgate_core import Usage
from tollgate_server.app import create_app
from tollgate_server.errors import InsufficientCredits, RateLimited
from tollgate_server.services import ledger, sweeper

pytestmark = [pytest.mark.postgres, pytest.mark.e2e, pytest.mark.usefixtures("test_models")]

PROMPT = [{"role": "user", "content": "hello"}]


def run(database_url: str, work: Callable[[asyncpg.Connection], Any]) -> Any:
    async def go() -> Any:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


async def _admission(conn: asyncpg.Connection, account_id: str) -> ledger.Admission:
    return await orphan_admission(conn, account_id, hold=50_000_000)  # type: ignore[no-any-return]


def _update_counts(database_url: str) -> tuple[int, int]:
    async def read(conn: asyncpg.Connection) -> tuple[int, int]:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        row = await conn.fetchrow(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'generations'"
        )
        return row["n_tup_upd"], row["n_tup_hot_upd"]

    return run(database_url, read)  # type: ignore[no-any-return]


def test_settlements_update_their_generations_in_place(
    database_url: str, make_user: Callable[..., User]
) -> None:
    user = make_user(credits=1000)
    before = _update_counts(database_url)

    async def admit_and_settle(conn: asyncpg.Connection) -> None:
        for _ in range(20):
            admission = await _admission(conn, user.id)
            await ledger.admit(conn, admission, strict=False, max_running=16)
            outcome = ledger.Outcome(
                status="completed", usage=Usage(input_tokens=5, output_tokens=3), charge=11
            )
            assert await ledger.settle(conn, admission.generation_id, outcome)

    # The backend reports its table statistics when it exits (or after a second idle).
    run(database_url, admit_and_settle)
    deadline = time.monotonic() + 15
    while (after := _update_counts(database_url))[0] - before[0] < 20:
        assert time.monotonic() < deadline, "the statistics never counted the settlements"
        time.sleep(0.2)
    updates, hot = after[0] - before[0], after[1] - before[1]
    # Every settlement was a heap-only update: an index on a column it changes (settled_at,
    # status, cost...) would make each write a new entry in every index of the table.
    assert hot == updates


def test_history_is_kept_from_deletion(
    api: httpx.Client, database_url: str, make_user: Callable[..., User]
) -> None:
    user = make_user(credits=100)
    answer = api.post(
        "/v1/chat/completions",
        headers=user.headers,
        json={"model": "fake-openai", "messages": PROMPT, "max_tokens": 5},
    )
    assert answer.status_code == 200, answer.text

    async def deletions(conn: asyncpg.Connection) -> list[str]:
        generation = await conn.fetchrow(
            "SELECT id, model_id, price_id FROM generations WHERE account_id = $1",
            uuid.UUID(user.id),
        )
        refused = []
        for table, row_id in (
            ("accounts", uuid.UUID(user.id)),
            ("models", generation["model_id"]),
            ("model_prices", generation["price_id"]),
            ("generations", generation["id"]),
        ):
            try:
                await conn.execute(f"DELETE FROM {table} WHERE id = $1", row_id)
            except asyncpg.ForeignKeyViolationError as exc:
                assert table in str(exc)
                refused.append(table)
        # A row that nothing refers to goes as before.
        spare = await conn.fetchval(
            "INSERT INTO models (name, provider, upstream_model, context_window, "
            "max_output_tokens, default_max_tokens) VALUES ($1, 'openai', 'x', 10, 10, 10) "
            "RETURNING id",
            f"spare-{uuid.uuid4().hex[:8]}",
        )
        assert await conn.execute("DELETE FROM models WHERE id = $1", spare) == "DELETE 1"
        return refused

    assert run(database_url, deletions) == ["accounts", "models", "model_prices", "generations"]


def test_the_sweeper_looks_back_past_the_deadline_and_at_everything_when_asked(
    database_url: str, make_user: Callable[..., User]
) -> None:
    user = make_user(credits=1000)

    async def scenario(conn: asyncpg.Connection) -> tuple[bool, bool, bool]:
        admission = await _admission(conn, user.id)
        await ledger.admit(conn, admission, strict=False, max_running=16)
        found = []
        for created in ("10 minutes", "1 hour"):
            await conn.execute(
                f"UPDATE generations SET created_at = now() - interval '{created}', "
                "deadline_at = now() - interval '1 minute' WHERE id = $1",
                admission.generation_id,
            )
            window = 600 + ledger.DEADLINE_MARGIN_SECONDS + sweeper.LOOK_BACK_SECONDS  # 22 min
            rows = await conn.fetch(sweeper.ORPHANS_SQL, 30.0, [], window, 500)
            found.append(admission.generation_id in {r["id"] for r in rows})
        rows = await conn.fetch(sweeper.ORPHANS_SQL, 30.0, [], sweeper.EVERYTHING, 500)
        found.append(admission.generation_id in {r["id"] for r in rows})
        outcome = ledger.Outcome(status="interrupted", usage=None, charge=0)
        assert await ledger.settle(conn, admission.generation_id, outcome)
        return found[0], found[1], found[2]

    recent, old_in_routine_sweep, old_in_full_sweep = run(database_url, scenario)
    assert recent is True
    assert old_in_routine_sweep is False
    assert old_in_full_sweep is True


def test_a_server_s_first_sweep_releases_a_hold_older_than_the_look_back(
    database_url: str,
    make_user: Callable[..., User],
    provider_env: dict[str, str],
    tmp_path: Path,
) -> None:
    user = make_user(credits=1000)

    async def orphan(conn: asyncpg.Connection) -> uuid.UUID:
        admission = await _admission(conn, user.id)
        await ledger.admit(conn, admission, strict=False, max_running=16)
        await conn.execute(
            "UPDATE generations SET created_at = now() - interval '40 days', "
            "deadline_at = now() - interval '39 days' WHERE id = $1",
            admission.generation_id,
        )
        return admission.generation_id

    generation_id = run(database_url, orphan)

    async def status(conn: asyncpg.Connection) -> str:
        return await conn.fetchval(  # type: ignore[no-any-return]
            "SELECT status FROM generations WHERE id = $1", generation_id
        )

    settings = make_settings(database_url, tmp_path / "data", sweep_interval_seconds=0.2)
    with ServerThread(create_app(settings, provider_env=provider_env)):
        deadline = time.monotonic() + 20
        while run(database_url, status) == "running":
            assert time.monotonic() < deadline, "the first sweep left the old hold"
            time.sleep(0.2)
    assert run(database_url, status) == "interrupted"


def test_one_sweep_releases_every_orphan_however_many_batches_they_take(
    database_url: str,
    make_user: Callable[..., User],
    provider_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A round that stopped at one batch left the rest for later rounds, whose look back they
    could outlive: the sweep before a process serves releases all five, two at a time."""
    monkeypatch.setattr(sweeper, "ORPHANS_BATCH", 2)
    user = make_user(credits=1000)

    async def orphans(conn: asyncpg.Connection) -> list[uuid.UUID]:
        ids = []
        for _ in range(5):
            admission = await _admission(conn, user.id)
            await ledger.admit(conn, admission, strict=False, max_running=16)
            ids.append(admission.generation_id)
        return ids

    ids = run(database_url, orphans)

    async def statuses(conn: asyncpg.Connection) -> list[str]:
        rows = await conn.fetch("SELECT status FROM generations WHERE id = ANY($1::uuid[])", ids)
        return [row["status"] for row in rows]

    # No routine round in the test's time: only the sweep that runs before serving.
    settings = make_settings(database_url, tmp_path / "data", sweep_interval_seconds=3600)
    with ServerThread(create_app(settings, provider_env=provider_env)):
        assert run(database_url, statuses) == ["interrupted"] * 5


def test_a_hold_refused_after_the_account_passed_is_given_back(
    database_url: str, make_user: Callable[..., User]
) -> None:
    """Migration 0015 takes the hold with the account's guarded UPDATE before the per-minute
    and key guards run; a refusal from those gives it back in the same transaction, so the
    account and the key's spend read as if nothing had been asked."""
    user = make_user(credits=1000)

    async def refuse(conn: asyncpg.Connection) -> None:
        key_id = await conn.fetchval(
            "INSERT INTO api_keys (account_id, name, prefix, key_hash, spend_limit) "
            "VALUES ($1, 'tight', 'tg_tight', $2, 1000) RETURNING id",
            uuid.UUID(user.id),
            uuid.uuid4().bytes,
        )
        before = await conn.fetchrow(
            "SELECT balance, held, running FROM accounts WHERE id = $1", uuid.UUID(user.id)
        )
        keyed = await _admission(conn, user.id)
        keyed = dataclasses.replace(keyed, api_key_id=key_id, hold=5000)
        with pytest.raises(InsufficientCredits) as budget:
            await ledger.admit(conn, keyed, strict=False, max_running=16)
        assert budget.value.code == "key_budget_exceeded"
        # The per-minute limit: the first admission passes, the second is refused.
        first = await _admission(conn, user.id)
        await ledger.admit(
            conn, first, strict=False, max_running=16, rate_subject=user.id, requests_per_minute=1
        )
        second = await _admission(conn, user.id)
        with pytest.raises(RateLimited) as limited:
            await ledger.admit(
                conn,
                second,
                strict=False,
                max_running=16,
                rate_subject=user.id,
                requests_per_minute=1,
            )
        assert limited.value.code == "rate_limited"
        after = await conn.fetchrow(
            "SELECT balance, held, running FROM accounts WHERE id = $1", uuid.UUID(user.id)
        )
        assert after["balance"] == before["balance"]
        assert after["held"] == before["held"] + first.hold  # only the admitted one
        assert after["running"] == before["running"] + 1
        refused = await conn.fetchval(
            "SELECT count(*) FROM generations WHERE id = ANY($1::uuid[])",
            [keyed.generation_id, second.generation_id],
        )
        assert refused == 0
        spend_held = await conn.fetchval(
            "SELECT coalesce(sum(held), 0) FROM key_spend WHERE api_key_id = $1", key_id
        )
        assert spend_held == 0
        released = ledger.Outcome(status="cancelled", usage=None, charge=0)
        assert await ledger.settle(conn, first.generation_id, released)

    run(database_url, refuse)
