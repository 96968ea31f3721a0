"""An API key's limits (spend per period, requests and tokens per minute), over real sockets:
every guard is in the one admission statement, so racing requests, on one server or on two,
get through exactly as far as the key allows, and the key's counters balance."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import User
from support import ServeProcess, asyncpg_dsn, clear_of_minute_end, json_object, serve_env
from tollgate_core import format_credits
from tollgate_core.fake_upstream import FakeUpstream
from tollgate_server.errors import Refused
from tollgate_server.services import ledger

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

MAX_TOKENS = 50


def _content(marker: str, *, slow: bool = True) -> str:
    # Slow enough (2 s) that every request of a race arrives while the admitted ones run.
    return f"{marker} [[fake:chunks=5,delay_ms=400]]" if slow else f"{marker} [[fake:chunks=2]]"


def _prompt_tokens(content: str) -> int:
    return 3 + 4 + -(-len(content.encode()) // 3)


def _hold(content: str) -> int:
    """Micro-credits held for one request of the test models (1 and 2 credits per token)."""
    return (_prompt_tokens(content) + 2 * MAX_TOKENS) * 1_000_000


def _key(api: httpx.Client, user: User, **limits: Any) -> dict[str, Any]:
    created = api.post("/v1/keys", json={"name": "limited", **limits}, headers=user.headers)
    assert created.status_code == 201, created.text
    return json_object(created)


def _listed(api: httpx.Client, user: User, key_id: str) -> dict[str, Any]:
    listed = api.get("/v1/keys", headers=user.headers)
    assert listed.status_code == 200, listed.text
    return next(k for k in listed.json() if k["id"] == key_id)


async def _burst(urls: list[str], secret: str, model: str, content: str, n: int) -> list[Any]:
    clients = [
        httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=n))
        for url in urls
    ]
    try:

        async def one(i: int) -> httpx.Response:
            return await clients[i % len(clients)].post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {secret}"},
                json={
                    "model": model,
                    "max_tokens": MAX_TOKENS,
                    "messages": [{"role": "user", "content": content}],
                },
            )

        return list(await asyncio.gather(*(one(i) for i in range(n))))
    finally:
        for client in clients:
            await client.aclose()


def _codes(answers: list[httpx.Response]) -> Counter[object]:
    return Counter(
        a.status_code if a.status_code == 200 else a.json()["error"]["code"] for a in answers
    )


def _race_on_budget(
    api: httpx.Client,
    make_user: Callable[..., User],
    model: str,
    upstream: FakeUpstream,
    urls: list[str],
) -> None:
    user = make_user(1000)
    marker = uuid.uuid4().hex
    content = _content(marker)
    hold = _hold(content)
    key = _key(api, user, spend_limit=format_credits(2 * hold + hold // 2))
    answers = asyncio.run(_burst(urls, key["key"], model, content, 50))
    assert _codes(answers) == Counter({200: 2, "key_budget_exceeded": 48})
    assert {a.status_code for a in answers if a.status_code != 200} == {402}
    assert sum(1 for r in upstream.records if marker in str(r.body)) == 2
    spend = Decimal(_listed(api, user, key["id"])["spend"])
    charged = sum(
        Decimal(g["cost"]) for g in api.get("/v1/generations", headers=user.headers).json()["data"]
    )
    assert spend == charged
    assert spend <= Decimal(key["spend_limit"]), "the key never went above its bound"
    balance = Decimal(api.get("/v1/balance", headers=user.headers).json()["balance"])
    assert balance == 1000 - charged


def test_fifty_at_once_against_a_key_budget_of_two_holds(
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    # The account could pay for all fifty: only the key's budget stops the other 48.
    _race_on_budget(api, make_user, test_models["openai"], upstream, [str(api.base_url)])


@pytest.fixture(scope="module")
def two_servers(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream
) -> Iterator[list[ServeProcess]]:
    from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, JWT_SECRET, upstream_env

    servers = []
    try:
        for name in ("one", "two"):
            env = serve_env(
                TOLLGATE_DATABASE_URL=database_url,
                TOLLGATE_DATA_DIR=str(tmp_path_factory.mktemp(f"server-{name}")),
                TOLLGATE_JWT_SECRET=JWT_SECRET,
                TOLLGATE_ADMIN_EMAIL=ADMIN_EMAIL,
                TOLLGATE_ADMIN_PASSWORD=ADMIN_PASSWORD,
                **upstream_env(upstream),
            )
            server = ServeProcess(env)
            servers.append(server)
            server.start()
        yield servers
    finally:
        for server in servers:
            if server.process is not None:
                server.stop()


def test_two_server_processes_share_the_key_budget(
    two_servers: list[ServeProcess],
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    urls = [server.url for server in two_servers]
    _race_on_budget(api, make_user, test_models["gemini"], upstream, urls)


def test_requests_per_minute_under_a_burst(
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    user = make_user(1000)
    key = _key(api, user, rpm=5)
    marker = uuid.uuid4().hex
    clear_of_minute_end()
    answers = asyncio.run(
        _burst([str(api.base_url)], key["key"], test_models["openai"], _content(marker), 30)
    )
    assert _codes(answers) == Counter({200: 5, "key_rate_limited": 25})
    refused = [a for a in answers if a.status_code != 200]
    assert {a.status_code for a in refused} == {429}
    assert all(1 <= int(a.headers["Retry-After"]) <= 60 for a in refused)
    assert sum(1 for r in upstream.records if marker in str(r.body)) == 5


def test_tokens_per_minute_under_a_burst(
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    user = make_user(1000)
    marker = uuid.uuid4().hex
    content = _content(marker)
    per_request = _prompt_tokens(content) + MAX_TOKENS
    key = _key(api, user, tpm=3 * per_request + per_request // 2)
    clear_of_minute_end()
    answers = asyncio.run(
        _burst([str(api.base_url)], key["key"], test_models["anthropic"], content, 30)
    )
    assert _codes(answers) == Counter({200: 3, "key_rate_limited": 27})
    assert sum(1 for r in upstream.records if marker in str(r.body)) == 3


def test_a_key_without_limits_still_counts_its_spend(
    api: httpx.Client, make_user: Callable[..., User], test_models: dict[str, str]
) -> None:
    user = make_user(1000)
    key = _key(api, user)
    assert key["spend"] == "0"
    assert (key["spend_limit"], key["spend_period"], key["rpm"], key["tpm"]) == (
        None,
        None,
        None,
        None,
    )
    answer = api.post(
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key['key']}"},
        json={"model": test_models["openai"], "messages": [{"role": "user", "content": "hi"}]},
    )
    assert answer.status_code == 200, answer.text
    cost = api.get("/v1/generations", headers=user.headers).json()["data"][0]["cost"]
    assert _listed(api, user, key["id"])["spend"] == cost


# --- changing a key's limits -----------------------------------------------------------------


def test_owner_and_admin_change_a_keys_limits(
    api: httpx.Client,
    make_user: Callable[..., User],
    admin_headers: dict[str, str],
    test_models: dict[str, str],
) -> None:
    user, other = make_user(1000), make_user()
    key = _key(api, user, spend_limit="500", spend_period="month", rpm=60)
    assert (key["spend_limit"], key["spend_period"], key["rpm"], key["tpm"]) == (
        "500",
        "month",
        60,
        None,
    )
    changed = api.patch(f"/v1/keys/{key['id']}", json={"tpm": 1000}, headers=user.headers)
    assert changed.status_code == 200, changed.text
    assert (changed.json()["spend_limit"], changed.json()["tpm"]) == ("500", 1000)
    # Someone else's key is not found, whoever asks but its owner or an admin.
    stranger = api.patch(f"/v1/keys/{key['id']}", json={"rpm": 1}, headers=other.headers)
    assert stranger.status_code == 404
    assert stranger.json()["error"]["code"] == "not_found"
    # The admin lowers the budget below one hold: the very next request is refused.
    lowered = api.patch(
        f"/v1/admin/keys/{key['id']}",
        json={"spend_limit": "0.5", "spend_period": None},
        headers=admin_headers,
    )
    assert lowered.status_code == 200, lowered.text
    assert (lowered.json()["spend_limit"], lowered.json()["spend_period"]) == ("0.5", None)
    refused = api.post(
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key['key']}"},
        json={"model": test_models["openai"], "messages": [{"role": "user", "content": "hi"}]},
    )
    assert refused.status_code == 402
    assert refused.json()["error"]["code"] == "key_budget_exceeded"
    # null removes the limit again.
    lifted = api.patch(f"/v1/keys/{key['id']}", json={"spend_limit": None}, headers=user.headers)
    assert lifted.json()["spend_limit"] is None
    assert _listed(api, user, key["id"])["rpm"] == 60
    assert (
        api.patch(f"/v1/admin/keys/{key['id']}", json={"rpm": 1}, headers=user.headers).status_code
        == 403
    )


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"spend_limit": "0"},
        {"spend_limit": "-1"},
        {"spend_limit": "1e3"},
        {"spend_limit": 1.5},
        {"spend_period": "year"},
        {"rpm": 0},
        {"rpm": "5"},
        {"tpm": -1},
        {"name": "renamed"},
    ],
)
def test_bad_limits_are_422_and_change_nothing(
    api: httpx.Client, make_user: Callable[..., User], body: dict[str, Any]
) -> None:
    user = make_user()
    key = _key(api, user, spend_limit="5")
    answer = api.patch(f"/v1/keys/{key['id']}", json=body, headers=user.headers)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "validation_error"
    created = api.post("/v1/keys", json={"name": "x", **body}, headers=user.headers)
    if body and "name" not in body:
        assert created.status_code == 422
    assert _listed(api, user, key["id"])["spend_limit"] == "5"


# --- free models --------------------------------------------------------------------------------


def test_free_model_rule_at_zero_balance_and_at_a_spent_key(
    api: httpx.Client,
    make_user: Callable[..., User],
    admin_headers: dict[str, str],
    test_models: dict[str, str],
) -> None:
    """The README's rule: a free model is admitted like any other (default mode: only while
    the available balance is above zero); against a key's budget its hold of zero always fits."""
    name = f"free-{uuid.uuid4().hex[:8]}"
    made = api.post(
        "/v1/admin/models",
        json={
            "name": name,
            "provider": "openai",
            "upstream_model": "openai-upstream",
            "input_price": "0",
            "output_price": "0",
            "free": True,
        },
        headers=admin_headers,
    )
    assert made.status_code == 201, made.text
    broke = make_user()
    refused = api.post(
        "/v1/chat/completions",
        headers=broke.headers,
        json={"model": name, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert refused.status_code == 402
    assert refused.json()["error"]["code"] == "insufficient_balance"

    user = make_user(1000)
    key = _key(api, user, spend_limit="0.000001")
    paid = api.post(
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key['key']}"},
        json={"model": test_models["openai"], "messages": [{"role": "user", "content": "hi"}]},
    )
    assert paid.json()["error"]["code"] == "key_budget_exceeded"
    free = api.post(
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key['key']}"},
        json={"model": name, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert free.status_code == 200, free.text


# --- periods, with a clock the test controls -------------------------------------------------


async def _period_start(conn: asyncpg.Connection, period: str | None, at: str) -> dt.datetime:
    value = await conn.fetchval(
        "SELECT tollgate_period_start($1, $2::text::timestamptz)", period, at
    )
    assert isinstance(value, dt.datetime)
    return value


def test_period_starts_at_the_boundaries(database_url: str) -> None:
    async def check() -> None:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            # Calendar periods in UTC, whatever the session's time zone.
            await conn.execute("SET TIME ZONE 'America/New_York'")
            utc = dt.UTC
            last = "2030-01-31T23:59:59.999999Z"
            first = "2030-02-01T00:00:00Z"
            assert await _period_start(conn, "day", last) == dt.datetime(2030, 1, 31, tzinfo=utc)
            assert await _period_start(conn, "day", first) == dt.datetime(2030, 2, 1, tzinfo=utc)
            assert await _period_start(conn, "month", last) == dt.datetime(2030, 1, 1, tzinfo=utc)
            assert await _period_start(conn, "month", first) == dt.datetime(2030, 2, 1, tzinfo=utc)
            # 2030-01-06 is a Sunday: its week began on Monday 2029-12-31.
            sunday = "2030-01-06T23:59:59Z"
            assert await _period_start(conn, "week", sunday) == dt.datetime(
                2029, 12, 31, tzinfo=utc
            )
            monday = "2030-01-07T00:00:00Z"
            assert await _period_start(conn, "week", monday) == dt.datetime(2030, 1, 7, tzinfo=utc)
            # The key's lifetime: one period that began before any time.
            assert await conn.fetchval(
                "SELECT tollgate_period_start(NULL, $1::text::timestamptz) = '-infinity'", first
            )
        finally:
            await conn.close()

    asyncio.run(check())


def test_spend_resets_at_the_boundary_and_a_straddling_request_counts_once(
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    database_url: str,
) -> None:
    """The real admission and settlement statements, with the period's clock set on either
    side of a midnight (UTC) by the offset the gateway takes from its settings."""
    user = make_user(1000)
    hold = 3_000_000
    key = _key(api, user, spend_limit=format_credits(hold + hold // 2), spend_period="day")

    async def scenario() -> None:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            model_id = await conn.fetchval(
                "SELECT id FROM models WHERE name = $1", test_models["openai"]
            )
            now = await conn.fetchval("SELECT now()")
            midnight = dt.datetime(2030, 3, 10, tzinfo=dt.UTC)
            before = (midnight - dt.timedelta(seconds=5) - now).total_seconds()
            after = (midnight + dt.timedelta(seconds=5) - now).total_seconds()

            def admission() -> ledger.Admission:
                return ledger.Admission(
                    generation_id=uuid.uuid4(),
                    account_id=uuid.UUID(user.id),
                    api_key_id=uuid.UUID(key["id"]),
                    model_id=model_id,
                    model_name=test_models["openai"],
                    price_id=None,
                    input_price=1_000_000,
                    output_price=2_000_000,
                    hold=hold,
                    stream=False,
                    max_tokens=1,
                    prompt_tokens=1,
                    deadline_seconds=600,
                )

            async def admit(a: ledger.Admission, offset: float) -> None:
                await ledger.admit(conn, a, strict=False, max_running=16, clock_offset=offset)

            straddler = admission()
            await admit(straddler, before)
            with pytest.raises(Refused) as over:
                await admit(admission(), before)
            assert over.value.code == "key_budget_exceeded"
            # Past midnight the day's spend starts at zero, while the straddler still runs.
            next_day = admission()
            await admit(next_day, after)
            charge = 2_000_000
            await ledger.settle(
                conn,
                straddler.generation_id,
                ledger.Outcome(status="completed", usage=None, charge=charge),
            )
            # The straddler's charge went to the day it was admitted in, not to the new one.
            with pytest.raises(Refused) as still_over:
                await admit(admission(), after)
            assert still_over.value.code == "key_budget_exceeded"
            await ledger.settle(
                conn,
                next_day.generation_id,
                ledger.Outcome(status="completed", usage=None, charge=charge),
            )
            rows = await conn.fetch(
                "SELECT period_start, held, charged FROM key_spend WHERE api_key_id = $1 "
                "ORDER BY period_start",
                uuid.UUID(key["id"]),
            )
            assert [(r["period_start"], r["held"], r["charged"]) for r in rows] == [
                (midnight - dt.timedelta(days=1), 0, charge),
                (midnight, 0, charge),
            ]
        finally:
            await conn.close()

    asyncio.run(scenario())
    # Today's spend (the real clock) knows nothing of either day.
    assert _listed(api, user, key["id"])["spend"] == "0"


def test_a_refused_budget_names_itself_before_money_moves(
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    user = make_user(1000)
    key = _key(api, user, spend_limit="0.000001")
    before = len(upstream.records)
    answer = api.post(
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key['key']}"},
        json={"model": test_models["openai"], "messages": [{"role": "user", "content": "hi"}]},
    )
    assert answer.status_code == 402
    assert answer.json()["error"]["code"] == "key_budget_exceeded"
    assert len(upstream.records) == before
    assert api.get("/v1/balance", headers=user.headers).json()["held"] == "0"
    assert api.get("/v1/generations", headers=user.headers).json()["data"] == []
