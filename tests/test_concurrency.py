"""Many requests racing for one balance, over real sockets: the admission statement lets in
exactly what the policy allows, and the books balance."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from conftest import User, ensure_test_models, make_settings
from support import ServeProcess, ServerThread, serve_env
from tollgate_core.fake_upstream import FakeUpstream
from tollgate_server.app import create_app

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

# Hold of one request: prompt estimate (3 + 4 + ceil(len(content) / 3)) at 1 credit plus
# max_tokens (50) at 2 credits; the content is padded to a fixed length so the hold is known.
MAX_TOKENS = 50


def _content(marker: str) -> str:
    # Long enough (2 s) that every request of the race arrives while the admitted ones run.
    return f"{marker} [[fake:chunks=5,delay_ms=400]]"


def _hold(marker: str) -> int:
    content = _content(marker)
    return 3 + 4 + -(-len(content.encode()) // 3) + 2 * MAX_TOKENS


async def _race(url: str, token: str, model: str, marker: str, n: int) -> Counter[int]:
    async with httpx.AsyncClient(
        base_url=url, timeout=60, limits=httpx.Limits(max_connections=n)
    ) as client:

        async def one() -> int:
            response = await client.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {token}"},
                json={
                    "model": model,
                    "max_tokens": MAX_TOKENS,
                    "messages": [{"role": "user", "content": _content(marker)}],
                },
            )
            return response.status_code

        return Counter(await asyncio.gather(*(one() for _ in range(n))))


def _run_race(
    api: httpx.Client, user: User, model: str, upstream: FakeUpstream, credits_in_holds: Decimal
) -> tuple[Counter[int], int, Decimal]:
    marker = uuid.uuid4().hex
    hold = _hold(marker)
    start = credits_in_holds * hold
    from conftest import grant

    admin = api.post(
        "/v1/auth/login", json={"email": "root@example.com", "password": "admin-password-123"}
    ).json()
    grant(api, {"Authorization": f"Bearer {admin['access_token']}"}, user.id, str(start))
    statuses = asyncio.run(_race(str(api.base_url), user.token, model, marker, 50))
    seen = sum(1 for r in upstream.records if marker in str(r.body))
    final = Decimal(api.get("/v1/balance", headers=user.headers).json()["balance"])
    charged = sum(
        Decimal(g["cost"])
        for g in api.get("/v1/generations", params={"limit": 100}, headers=user.headers).json()[
            "data"
        ]
    )
    assert final == start - charged
    return statuses, seen, final


def test_fifty_at_once_against_one_generations_worth(
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    user = make_user()
    statuses, seen, final = _run_race(api, user, test_models["openai"], upstream, Decimal(1))
    # Default policy: admitted while available > 0; one hold uses it all up.
    assert statuses == Counter({200: 1, 402: 49})
    assert seen == 1, "the upstream saw only the admitted request"
    assert final >= 0


def test_fifty_at_once_against_two_and_a_half(
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    user = make_user()
    statuses, seen, final = _run_race(api, user, test_models["gemini"], upstream, Decimal("2.5"))
    # 2.5 holds -> 1.5 -> 0.5 -> -0.5: three admitted, the fourth finds nothing available.
    assert statuses == Counter({200: 3, 402: 47})
    assert seen == 3
    assert final > -_hold("x" * 32)
    assert final > -_hold("x" * 32), "never below zero by more than one generation's hold"


@pytest.fixture(scope="module")
def strict_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, provider_env: dict[str, str]
) -> Iterator[ServerThread]:
    settings = make_settings(
        database_url, Path(tmp_path_factory.mktemp("strict")), strict_balance=True
    )
    with ServerThread(create_app(settings, provider_env=provider_env)) as running:
        yield running


def test_strict_mode_never_goes_negative(
    strict_server: ServerThread,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
    admin_headers: dict[str, str],
) -> None:
    user = make_user()
    with httpx.Client(base_url=strict_server.url, timeout=60) as strict:
        ensure_test_models(strict, admin_headers)
        statuses, seen, final = _run_race(
            strict, user, test_models["anthropic"], upstream, Decimal("2.5")
        )
    assert statuses == Counter({200: 2, 402: 48})
    assert seen == 2
    assert final >= 0


@pytest.fixture(scope="module")
def two_workers(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream
) -> Iterator[ServeProcess]:
    from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, JWT_SECRET, upstream_env

    env = serve_env(
        TOLLGATE_DATABASE_URL=database_url,
        TOLLGATE_DATA_DIR=str(tmp_path_factory.mktemp("workers")),
        TOLLGATE_JWT_SECRET=JWT_SECRET,
        TOLLGATE_ADMIN_EMAIL=ADMIN_EMAIL,
        TOLLGATE_ADMIN_PASSWORD=ADMIN_PASSWORD,
        **upstream_env(upstream),
    )
    with ServeProcess(env, "--workers", "2") as running:
        yield running
        running.stop()


def test_two_worker_processes_give_the_same_guarantee(
    two_workers: ServeProcess,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
    admin_headers: dict[str, str],
) -> None:
    user = make_user()
    with httpx.Client(base_url=two_workers.url, timeout=60) as client:
        statuses, seen, final = _run_race(
            client, user, test_models["openai"], upstream, Decimal("2.5")
        )
    assert statuses == Counter({200: 3, 402: 47})
    assert seen == 3
    assert final > -_hold("x" * 32)
