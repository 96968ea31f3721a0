"""Balances, admin top-ups and deductions, idempotency, and the ledger's pages."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import asyncpg
import httpx
import pytest
from conftest import User
from support import asyncpg_dsn

pytestmark = pytest.mark.postgres


def _post(
    api: httpx.Client,
    admin: dict[str, str],
    user: User,
    amount: object,
    key: str | None = None,
    reason: str = "top-up",
) -> httpx.Response:
    headers = dict(admin)
    if key is not None:
        headers["Idempotency-Key"] = key
    return api.post(
        f"/v1/admin/users/{user.id}/credits",
        json={"amount": amount, "reason": reason},
        headers=headers,
    )


def test_new_account_starts_at_zero(api: httpx.Client, make_user: Callable[..., User]) -> None:
    user = make_user()
    assert api.get("/v1/balance", headers=user.headers).json() == {
        "balance": "0",
        "held": "0",
        "available": "0",
    }


def test_top_up_and_deduct_are_ledger_entries(
    api: httpx.Client, make_user: Callable[..., User], admin_headers: dict[str, str]
) -> None:
    user = make_user()
    up = _post(api, admin_headers, user, "12.5", key=uuid.uuid4().hex)
    assert up.status_code == 201
    assert up.json()["balance"]["balance"] == "12.5"
    down = _post(
        api, admin_headers, user, "-2.000001", key=uuid.uuid4().hex, reason="refund correction"
    )
    assert down.status_code == 201
    assert api.get("/v1/balance", headers=user.headers).json()["balance"] == "10.499999"
    entries = api.get("/v1/ledger", headers=user.headers).json()["data"]
    assert [(e["kind"], e["amount"], e["balance_after"]) for e in entries] == [
        ("adjustment", "-2.000001", "10.499999"),
        ("topup", "12.5", "12.5"),
    ]
    assert entries[0]["reason"] == "refund correction"
    assert entries[1]["actor_id"] is not None


def test_idempotency_key_replays_the_first_result(
    api: httpx.Client, make_user: Callable[..., User], admin_headers: dict[str, str]
) -> None:
    user = make_user()
    key = uuid.uuid4().hex
    first = _post(api, admin_headers, user, "5", key=key)
    again = _post(api, admin_headers, user, "5", key=key)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert api.get("/v1/balance", headers=user.headers).json()["balance"] == "5"
    other_body = _post(api, admin_headers, user, "6", key=key)
    assert other_body.status_code == 409
    assert other_body.json()["error"]["code"] == "idempotency_key_reused"
    assert len(api.get("/v1/ledger", headers=user.headers).json()["data"]) == 1


def test_idempotency_key_is_required(
    api: httpx.Client, make_user: Callable[..., User], admin_headers: dict[str, str]
) -> None:
    user = make_user()
    response = _post(api, admin_headers, user, "5")
    assert response.status_code == 422
    assert api.get("/v1/balance", headers=user.headers).json()["balance"] == "0"


@pytest.mark.parametrize(
    ("amount", "status"),
    [("0.0000001", 422), ("0", 422), ("abc", 422), (1.5, 422), ("NaN", 422), ("-1", 409)],
)
def test_bad_amounts_change_nothing(
    api: httpx.Client,
    make_user: Callable[..., User],
    admin_headers: dict[str, str],
    amount: object,
    status: int,
) -> None:
    user = make_user()
    response = _post(api, admin_headers, user, amount, key=uuid.uuid4().hex)
    assert response.status_code == status, response.text
    assert api.get("/v1/balance", headers=user.headers).json()["balance"] == "0"
    assert api.get("/v1/ledger", headers=user.headers).json()["data"] == []


def test_credits_for_unknown_user_is_404(api: httpx.Client, admin_headers: dict[str, str]) -> None:
    response = api.post(
        f"/v1/admin/users/{uuid.uuid4()}/credits",
        json={"amount": "1", "reason": "x"},
        headers={**admin_headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 404


def test_ledger_pages_with_a_cursor(
    api: httpx.Client, make_user: Callable[..., User], admin_headers: dict[str, str]
) -> None:
    user = make_user()
    for amount in ("1", "2", "3"):
        _post(api, admin_headers, user, amount, key=uuid.uuid4().hex)
    first = api.get("/v1/ledger", params={"limit": 2}, headers=user.headers).json()
    assert [e["amount"] for e in first["data"]] == ["3", "2"]
    second = api.get(
        "/v1/ledger", params={"limit": 2, "cursor": first["next_cursor"]}, headers=user.headers
    ).json()
    assert [e["amount"] for e in second["data"]] == ["1"]
    assert second["next_cursor"] is None
    assert api.get("/v1/ledger", params={"cursor": "zzz"}, headers=user.headers).status_code == 422
    admin_view = api.get(f"/v1/admin/users/{user.id}/ledger", headers=admin_headers).json()
    assert [e["amount"] for e in admin_view["data"]] == ["3", "2", "1"]


def test_ledger_rows_cannot_be_changed(
    database_url: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    admin_headers: dict[str, str],
) -> None:
    import asyncio

    import asyncpg
    from support import asyncpg_dsn

    user = make_user()
    _post(api, admin_headers, user, "1", key=uuid.uuid4().hex)

    async def tamper() -> None:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute(
                    "UPDATE ledger_entries SET amount = 100 WHERE account_id = $1",
                    uuid.UUID(user.id),
                )
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute(
                    "DELETE FROM ledger_entries WHERE account_id = $1", uuid.UUID(user.id)
                )
        finally:
            await conn.close()

    asyncio.run(tamper())


def test_usage_totals_by_model_and_day(
    api: httpx.Client, make_user: Callable[..., User], test_models: dict[str, str]
) -> None:
    user = make_user(credits=1000)
    for model in (test_models["openai"], test_models["openai"], test_models["gemini"]):
        assert (
            api.post(
                "/v1/chat/completions",
                headers=user.headers,
                json={"model": model, "messages": [{"role": "user", "content": "hello there"}]},
            ).status_code
            == 200
        )
    rows = api.get("/v1/usage", headers=user.headers).json()["data"]
    by_model = {r["model"]: r for r in rows}
    assert by_model[test_models["openai"]]["generations"] == 2
    assert by_model[test_models["openai"]]["output_tokens"] == 10
    assert by_model[test_models["openai"]]["cost"] == "28"
    assert by_model[test_models["gemini"]]["cost"] == "14"


def test_signup_grant_is_a_ledger_entry(
    database_url: str, tmp_path: object, provider_env: dict[str, str]
) -> None:
    from pathlib import Path

    from conftest import PASSWORD, make_settings
    from support import ServerThread
    from tollgate_server.app import create_app

    settings = make_settings(database_url, Path(str(tmp_path)), signup_grant="2.5")
    with ServerThread(create_app(settings, provider_env=provider_env)) as server:
        with httpx.Client(base_url=server.url) as client:
            email = f"grant-{uuid.uuid4().hex[:8]}@example.com"
            created = client.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
            assert created.json()["balance"] == "2.5"
            token = client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
            headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
            entries = client.get("/v1/ledger", headers=headers).json()["data"]
    assert [(e["kind"], e["amount"]) for e in entries] == [("grant", "2.5")]


def test_large_amounts_are_exact(
    api: httpx.Client, make_user: Callable[..., User], admin_headers: dict[str, str]
) -> None:
    user = make_user()
    # Far beyond a 32-bit integer of micro-credits (2,147 credits).
    big = _post(api, admin_headers, user, "987654321.345678", key=uuid.uuid4().hex)
    assert big.status_code == 201, big.text
    assert api.get("/v1/balance", headers=user.headers).json()["balance"] == "987654321.345678"
    down = _post(api, admin_headers, user, "-987654309", key=uuid.uuid4().hex)
    assert down.status_code == 201, down.text
    assert api.get("/v1/balance", headers=user.headers).json()["balance"] == "12.345678"


def test_top_ups_stop_at_the_balance_cap_with_a_409_never_an_overflow(
    api: httpx.Client,
    make_user: Callable[..., User],
    admin_headers: dict[str, str],
    database_url: str,
) -> None:
    """Each top-up is legal (under a billion credits); their sum once overflowed the BIGINT
    balance with a 500. The balance is moved near the limits directly, with a ledger entry, as
    thousands of top-ups would have."""
    from tollgate_core.money import MAX_BALANCE

    user = make_user()
    dsn = asyncpg_dsn(database_url)
    # One credit below the cap: one more credit fits, two do not.
    asyncio.run(_set_balance(dsn, user.id, MAX_BALANCE - 10**6))
    over = _post(api, admin_headers, user, "2", key=uuid.uuid4().hex)
    assert over.status_code == 409, over.text
    assert over.json()["error"]["code"] == "balance_limit_exceeded"
    assert _post(api, admin_headers, user, "1", key=uuid.uuid4().hex).status_code == 201
    # Next to the BIGINT limit itself (a balance from before the cap): a clear 409 still.
    near_limit = 2**63 - 1 - 10**14
    asyncio.run(_set_balance(dsn, user.id, near_limit - MAX_BALANCE))
    before = api.get("/v1/balance", headers=user.headers).json()
    over = _post(api, admin_headers, user, "999999999", key=uuid.uuid4().hex)
    assert over.status_code == 409, over.text
    assert over.json()["error"]["code"] == "balance_limit_exceeded"
    assert api.get("/v1/balance", headers=user.headers).json() == before
    # A deduction still works there, and leaves the ledger's invariants whole.
    asyncio.run(_set_balance(dsn, user.id, -near_limit))
    assert api.get("/v1/balance", headers=user.headers).json()["balance"] == "0"


async def _set_balance(dsn: str, account_id: str, micro: int) -> None:
    """Move a balance with a matching ledger entry, as an adjustment would."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            row = await conn.fetchrow(
                "UPDATE accounts SET balance = balance + $2 WHERE id = $1 RETURNING balance, held",
                uuid.UUID(account_id),
                micro,
            )
            await conn.execute(
                "INSERT INTO ledger_entries (account_id, kind, amount, held_delta, "
                "balance_after, held_after, reason) VALUES ($1, 'adjustment', $2, 0, $3, $4, "
                "'test')",
                uuid.UUID(account_id),
                micro,
                row["balance"],
                row["held"],
            )
    finally:
        await conn.close()
