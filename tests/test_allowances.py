"""Periodic allowances: each period granted once, whichever server process gets there first,
however many run at once, restart, or were all down when the period began."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import User, make_settings
from support import ServerThread, asyncpg_dsn, json_object
from tollgate_server.app import create_app
from tollgate_server.services import allowances

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]


def _months_ahead(database_url: str, months: int) -> float:
    """Seconds to add to the database's clock to stand a day into the month `months` ahead."""

    async def offset() -> float:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            now: dt.datetime = await conn.fetchval("SELECT now()")
        finally:
            await conn.close()
        year, month = now.year, now.month + months
        year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
        target = dt.datetime(year, month, 2, tzinfo=dt.UTC)
        return (target - now).total_seconds()

    return asyncio.run(offset())


def _grants(api: httpx.Client, user: User) -> list[dict[str, Any]]:
    entries = api.get("/v1/ledger", params={"limit": 100}, headers=user.headers).json()["data"]
    return [e for e in entries if e["kind"] == "grant" and "allowance" in (e["reason"] or "")]


def _balance(api: httpx.Client, user: User) -> str:
    return str(api.get("/v1/balance", headers=user.headers).json()["balance"])


def _give(
    api: httpx.Client, admin_headers: dict[str, str], user: User, **body: str
) -> dict[str, Any]:
    answer = api.put(f"/v1/admin/users/{user.id}/allowance", json=body, headers=admin_headers)
    assert answer.status_code == 200, answer.text
    return json_object(answer)


async def _three_instances(database_url: str, offset: float, account: str) -> list[int]:
    pools = [
        await asyncpg.create_pool(asyncpg_dsn(database_url), min_size=1, max_size=1)
        for _ in range(3)
    ]
    try:
        import uuid

        return list(
            await asyncio.gather(
                *(
                    allowances.issue_due(pool, clock_offset=offset, account_id=uuid.UUID(account))
                    for pool in pools
                )
            )
        )
    finally:
        for pool in pools:
            await pool.close()


def test_the_current_period_is_granted_once_when_given(
    api: httpx.Client, make_user: Callable[..., User], admin_headers: dict[str, str]
) -> None:
    user = make_user()
    given = _give(api, admin_headers, user, amount="100", period="month")
    assert (given["amount"], given["period"], given["mode"]) == ("100", "month", "grant")
    assert len(given["grants"]) == 1 and given["grants"][0]["amount"] == "100"
    assert _balance(api, user) == "100"
    # Given again (or replaced): the current month has had its grant.
    _give(api, admin_headers, user, amount="100", period="month")
    assert _balance(api, user) == "100"
    assert len(_grants(api, user)) == 1


def test_three_instances_at_once_give_one_grant(
    api: httpx.Client,
    make_user: Callable[..., User],
    admin_headers: dict[str, str],
    database_url: str,
) -> None:
    user = make_user()
    _give(api, admin_headers, user, amount="100", period="month")
    granted = asyncio.run(_three_instances(database_url, _months_ahead(database_url, 1), user.id))
    assert sorted(granted) == [0, 0, 1]
    assert _balance(api, user) == "200"
    assert len(_grants(api, user)) == 2


def test_a_missed_period_is_granted_once_when_a_process_comes_back(
    api: httpx.Client,
    make_user: Callable[..., User],
    admin_headers: dict[str, str],
    database_url: str,
) -> None:
    """Nothing ran through next month: two months on, it and the current one are each granted,
    once, however many times the processes then run."""
    user = make_user()
    _give(api, admin_headers, user, amount="100", period="month")
    offset = _months_ahead(database_url, 2)
    assert asyncio.run(_three_instances(database_url, offset, user.id)) in (
        [2, 0, 0],
        [0, 2, 0],
        [0, 0, 2],
        [1, 1, 0],
        [1, 0, 1],
        [0, 1, 1],
    )
    assert asyncio.run(_three_instances(database_url, offset, user.id)) == [0, 0, 0]
    assert _balance(api, user) == "300"
    periods = sorted(
        g["period_start"]
        for g in api.get(f"/v1/admin/users/{user.id}/allowance", headers=admin_headers).json()[
            "grants"
        ]
    )
    assert len(periods) == len(set(periods)) == 3


def test_a_restart_grants_nothing_more(
    api: httpx.Client,
    make_user: Callable[..., User],
    admin_headers: dict[str, str],
    database_url: str,
    tmp_path: Path,
    provider_env: dict[str, str],
) -> None:
    """A real server process's own background task, started twice a month ahead."""
    user = make_user()
    _give(api, admin_headers, user, amount="7", period="month")
    settings = make_settings(
        database_url,
        tmp_path,
        period_clock_offset_seconds=_months_ahead(database_url, 1),
        allowance_interval_seconds=0.1,
    )
    for _ in range(2):
        with ServerThread(create_app(settings, provider_env=provider_env)):
            deadline = time.monotonic() + 10
            while _balance(api, user) != "14":
                assert time.monotonic() < deadline, "the server never granted next month"
                time.sleep(0.05)
            time.sleep(0.5)  # several more runs of its task
    assert _balance(api, user) == "14"
    assert len(_grants(api, user)) == 2


def test_a_floor_tops_up_the_current_period_only(
    api: httpx.Client,
    make_user: Callable[..., User],
    admin_headers: dict[str, str],
    database_url: str,
) -> None:
    user = make_user("10")
    given = _give(api, admin_headers, user, amount="50", period="day", mode="floor")
    assert given["grants"][0]["amount"] == "40"
    assert _balance(api, user) == "50"
    # Three days on, the missed days are not topped up after the fact: one top-up, to 50.
    api.post(
        f"/v1/admin/users/{user.id}/credits",
        json={"amount": "-20", "reason": "spent"},
        headers={**admin_headers, "Idempotency-Key": f"floor-{user.id}"},
    )
    offset = 3 * 86_400.0
    assert sum(asyncio.run(_three_instances(database_url, offset, user.id))) == 1
    assert _balance(api, user) == "50"


def test_bad_allowances_are_422_and_unknown_accounts_404(
    api: httpx.Client, make_user: Callable[..., User], admin_headers: dict[str, str]
) -> None:
    user = make_user()
    for body in (
        {"amount": "0", "period": "month"},
        {"amount": "-5", "period": "month"},
        {"amount": "5", "period": "year"},
        {"amount": "5", "period": "month", "mode": "gift"},
        {"period": "month"},
    ):
        answer = api.put(f"/v1/admin/users/{user.id}/allowance", json=body, headers=admin_headers)
        assert answer.status_code == 422, (body, answer.text)
    missing = api.put(
        "/v1/admin/users/00000000-0000-0000-0000-000000000000/allowance",
        json={"amount": "5", "period": "day"},
        headers=admin_headers,
    )
    assert missing.status_code == 404
    assert api.get(f"/v1/admin/users/{user.id}/allowance", headers=admin_headers).status_code == 404
    assert (
        api.put(
            f"/v1/admin/users/{user.id}/allowance",
            json={"amount": "5", "period": "day"},
            headers=user.headers,
        ).status_code
        == 403
    )
    assert _balance(api, user) == "0"
    _give(api, admin_headers, user, amount="5", period="day")
    deleted = api.delete(f"/v1/admin/users/{user.id}/allowance", headers=admin_headers)
    assert deleted.status_code == 204
    assert _balance(api, user) == "5", "a grant made stays"
