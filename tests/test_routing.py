"""Routing end to end: several fake upstreams on their own ports as the deployments of a model,
scripted apart with each server's `fault`; one hold and one charge whatever happens upstream."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from conftest import User, make_settings, upstream_env
from support import ServerThread, add_deployment, asyncpg_dsn, routed_generation
from tollgate_core import ConfigurationError, Message, Price, hold_amount
from tollgate_core.fake_upstream import FakeUpstream
from tollgate_core.tokens import estimate_messages_tokens
from tollgate_server.app import create_app

# The routed server's fixtures (`fakes`, `calm`, `rapi`, `radmin`, `ruser`) are conftest's;
# this module's `routed` is the server they talk to.
pytestmark = pytest.mark.usefixtures("calm", "no_deployments_left")

PROMPT = "Say hello to the routing tests."


@pytest.fixture(scope="module")
def routed(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream
) -> Iterator[ServerThread]:
    settings = make_settings(
        database_url,
        tmp_path_factory.mktemp("routing"),
        strict_balance=True,
        cooldown_after_failures=2,
        cooldown_seconds=1.0,
        route_deadline_seconds=2.0,
        route_max_attempts=5,
        route_backoff_seconds=0.01,
        requests_per_minute=0,  # the weighted split sends 1,000 requests from one account
    )
    with ServerThread(create_app(settings, provider_env=upstream_env(upstream))) as running:
        yield running


def add_model(
    api: httpx.Client, admin: dict[str, str], *, price: str = "1000000", **fields: Any
) -> str:
    name = f"routed-{uuid.uuid4().hex[:10]}"
    response = api.post(
        "/v1/admin/models",
        json={
            "name": name,
            "provider": "openai",
            "upstream_model": "gpt-routed",
            "context_window": 4000,
            "max_output_tokens": 1000,
            "default_max_tokens": 20,
            "input_price": price,
            "output_price": price,
            **fields,
        },
        headers=admin,
    )
    assert response.status_code == 201, response.text
    return name


def chat(api: httpx.Client, user: User, model: str, **body: Any) -> httpx.Response:
    return api.post(
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": PROMPT}], **body},
        headers=user.headers,
    )


def entries(database_url: str, account_id: str) -> list[tuple[str, int, Any]]:
    async def read() -> list[tuple[str, int, Any]]:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            rows = await conn.fetch(
                "SELECT kind, amount, generation_id FROM ledger_entries "
                "WHERE account_id = $1 ORDER BY id",
                uuid.UUID(account_id),
            )
        finally:
            await conn.close()
        return [(r["kind"], r["amount"], r["generation_id"]) for r in rows]

    return asyncio.run(read())


@pytest.mark.parametrize("status", [429, 503])
def test_a_failing_deployment_is_retried_on_the_next_and_charged_once(
    rapi: httpx.Client,
    radmin: dict[str, str],
    ruser: Callable[[str], User],
    fakes: list[FakeUpstream],
    database_url: str,
    status: int,
) -> None:
    model = add_model(rapi, radmin)
    first = add_deployment(rapi, radmin, model, fakes[0], priority=1)
    second = add_deployment(rapi, radmin, model, fakes[1], priority=0)
    fakes[0].fault = f"status={status}"
    user = ruser("1000")

    response = chat(rapi, user, model)

    assert response.status_code == 200, response.text
    assert len(fakes[0].records) == 1 and len(fakes[1].records) == 1
    found = routed_generation(rapi, radmin, response)
    assert found["status"] == "completed"
    assert found["deployment_id"] == second["id"]
    assert found["served_model"] == model
    assert [
        (a["deployment_id"], a["outcome"], a["upstream_status"]) for a in found["attempts"]
    ] == [
        (first["id"], "error", status),
        (second["id"], "ok", None),
    ]
    kinds = [kind for kind, _, gid in entries(database_url, user.id) if gid is not None]
    assert kinds == ["charge"]
    # The client's own view has the count, not the deployments.
    own = rapi.get(f"/v1/generations/{found['id']}", headers=user.headers).json()
    assert own["attempts"] == 2 and "deployment_id" not in own


def test_a_routed_stream_that_opens_with_a_tool_call_keeps_its_first_piece(
    rapi: httpx.Client,
    radmin: dict[str, str],
    ruser: Callable[[str], User],
    fakes: list[FakeUpstream],
) -> None:
    """Routing reads a stream up to its first delta; when that delta is the piece of a tool
    call with its id and name, it once never reached the client."""
    model = add_model(rapi, radmin)
    add_deployment(rapi, radmin, model, fakes[0], priority=1)
    add_deployment(rapi, radmin, model, fakes[1], priority=0)
    fakes[0].fault = "status=503"
    user = ruser("1000")
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "weather? [[fake:tool=get_weather]]"}],
        "tools": [tool],
        "stream": True,
    }
    calls: list[dict[str, Any]] = []
    with rapi.stream("POST", "/v1/chat/completions", json=body, headers=user.headers) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {") and '"choices":[{' in line:
                delta = json.loads(line[6:])["choices"][0]["delta"]
                calls.extend(delta.get("tool_calls") or [])
    assert calls[0]["id"].startswith("call_") and calls[0]["function"]["name"] == "get_weather"
    assert len(fakes[1].records) == 1


def test_a_failure_after_the_first_token_is_not_retried(
    rapi: httpx.Client,
    radmin: dict[str, str],
    ruser: Callable[[str], User],
    fakes: list[FakeUpstream],
) -> None:
    model = add_model(rapi, radmin)
    add_deployment(rapi, radmin, model, fakes[0], priority=1)
    add_deployment(rapi, radmin, model, fakes[1], priority=0)
    fakes[0].fault = "chunks=6,error_after=2"
    user = ruser("1000")

    with rapi.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": PROMPT}], "stream": True},
        headers=user.headers,
    ) as response:
        body = response.read().decode()
    assert response.status_code == 200
    assert '"error"' in body and "[DONE]" not in body.split('"error"')[0][-20:]
    assert len(fakes[1].records) == 0, "retried after a token had been forwarded"
    found = routed_generation(rapi, radmin, response)
    assert found["status"] == "upstream_error"
    assert [a["outcome"] for a in found["attempts"]] == ["failed_mid_stream"]
    assert Decimal(found["cost"]) > 0, "the deltas it received are charged"


def test_every_deployment_down_charges_nothing_and_releases_the_hold(
    rapi: httpx.Client,
    radmin: dict[str, str],
    ruser: Callable[[str], User],
    fakes: list[FakeUpstream],
    database_url: str,
) -> None:
    model = add_model(rapi, radmin)
    for fake in fakes:
        add_deployment(rapi, radmin, model, fake)
        fake.fault = "status=503"
    user = ruser("1000")

    response = chat(rapi, user, model)

    assert response.status_code in (502, 503), response.text
    assert sum(len(f.records) for f in fakes) == 3
    found = routed_generation(rapi, radmin, response)
    assert found["cost"] == "0" and len(found["attempts"]) == 3
    balance = rapi.get("/v1/balance", headers=user.headers).json()
    assert balance == {"balance": "1000", "held": "0", "available": "1000"}
    assert [k for k, _, g in entries(database_url, user.id) if g] == ["release"]


def test_a_weighted_split_over_1000_requests_is_within_5_percent_of_the_weights(
    routed: ServerThread,
    rapi: httpx.Client,
    radmin: dict[str, str],
    ruser: Callable[[str], User],
    fakes: list[FakeUpstream],
) -> None:
    model = add_model(rapi, radmin)
    weights = [1, 3, 6]
    for fake, weight in zip(fakes, weights, strict=True):
        add_deployment(rapi, radmin, model, fake, weight=weight)
    user = ruser("100000")

    async def send() -> list[int]:
        limits = httpx.Limits(max_connections=8)
        async with httpx.AsyncClient(base_url=routed.url, timeout=60, limits=limits) as client:
            gate = asyncio.Semaphore(8)

            async def one() -> int:
                async with gate:
                    response = await client.post(
                        "/v1/chat/completions",
                        json={
                            "model": model,
                            "messages": [{"role": "user", "content": PROMPT}],
                            "max_tokens": 2,
                        },
                        headers=user.headers,
                    )
                    return response.status_code

            return await asyncio.gather(*(one() for _ in range(1000)))

    assert set(asyncio.run(send())) == {200}
    for _ in range(100):  # a fake writes its record as its handler ends, a moment later
        counts = [len(fake.records) for fake in fakes]
        if sum(counts) == 1000:
            break
        time.sleep(0.02)
    assert sum(counts) == 1000
    for count, weight in zip(counts, weights, strict=True):
        assert abs(count / 1000 - weight / sum(weights)) <= 0.05, counts


def test_a_cooling_deployment_gets_no_traffic_until_its_probe_succeeds(
    rapi: httpx.Client,
    radmin: dict[str, str],
    ruser: Callable[[str], User],
    fakes: list[FakeUpstream],
) -> None:
    model = add_model(rapi, radmin)
    flaky = add_deployment(rapi, radmin, model, fakes[0], priority=1)
    add_deployment(rapi, radmin, model, fakes[1], priority=0)
    fakes[0].fault = "status=500"
    user = ruser("1000")

    for _ in range(2):  # cooldown_after_failures
        assert chat(rapi, user, model).status_code == 200
    assert len(fakes[0].records) == 2
    shown = rapi.get(f"/v1/admin/deployments/{flaky['id']}", headers=radmin).json()
    assert shown["cooldown_seconds"] is not None and shown["error_rate"] == 1.0

    fakes[0].fault = ""  # healthy again, but cooling down: nothing goes there yet
    for _ in range(3):
        assert chat(rapi, user, model).status_code == 200
    assert len(fakes[0].records) == 2

    time.sleep(1.2)  # the cooldown ends: one probe, which succeeds
    response = chat(rapi, user, model)
    assert response.status_code == 200
    assert routed_generation(rapi, radmin, response)["deployment_id"] == flaky["id"]
    assert len(fakes[0].records) == 3
    assert (
        rapi.get(f"/v1/admin/deployments/{flaky['id']}", headers=radmin).json()["cooldown_seconds"]
        is None
    )


def test_a_401_disables_the_deployment_and_shows_it_to_the_admin(
    rapi: httpx.Client,
    radmin: dict[str, str],
    ruser: Callable[[str], User],
    fakes: list[FakeUpstream],
) -> None:
    model = add_model(rapi, radmin)
    refused = add_deployment(rapi, radmin, model, fakes[0], priority=1)
    add_deployment(rapi, radmin, model, fakes[1], priority=0)
    fakes[0].fault = "status=401"
    user = ruser("1000")

    response = chat(rapi, user, model)
    assert response.status_code == 502, "a 401 is never retried"
    assert len(fakes[1].records) == 0
    shown = rapi.get(f"/v1/admin/deployments/{refused['id']}", headers=radmin).json()
    assert shown["enabled"] is False
    assert shown["disabled_reason"] == "upstream_authentication_error"

    assert chat(rapi, user, model).status_code == 200
    assert len(fakes[0].records) == 1, "a disabled deployment got traffic"
    enabled = rapi.patch(
        f"/v1/admin/deployments/{refused['id']}", json={"enabled": True}, headers=radmin
    ).json()
    assert enabled["enabled"] is True and enabled["disabled_reason"] is None


def test_retries_stop_at_the_overall_deadline(
    rapi: httpx.Client,
    radmin: dict[str, str],
    ruser: Callable[[str], User],
    fakes: list[FakeUpstream],
) -> None:
    model = add_model(rapi, radmin)
    for fake in [*fakes, fakes[0], fakes[1]]:
        add_deployment(rapi, radmin, model, fake, first_token_timeout=0.8)
        fake.fault = "stall_first_s=5"
    user = ruser("1000")

    began = time.monotonic()
    response = chat(rapi, user, model)
    elapsed = time.monotonic() - began

    assert response.status_code == 504, response.text
    found = routed_generation(rapi, radmin, response)
    # Five deployments and five attempts allowed, but a 2 s deadline and 0.8 s per attempt:
    # the third starts before the deadline, no fourth does.
    assert 2 <= len(found["attempts"]) <= 3
    assert all(a["outcome"] == "timeout" for a in found["attempts"])
    assert elapsed < 2.0 + 0.8 + 1.0
    assert found["cost"] == "0"


def test_fallbacks_hold_at_the_dearest_and_charge_the_model_that_served(
    rapi: httpx.Client,
    radmin: dict[str, str],
    ruser: Callable[[str], User],
    fakes: list[FakeUpstream],
) -> None:
    cheap = add_model(rapi, radmin, price="1000000")  # 1 credit a token
    dear = add_model(rapi, radmin, price="10000000")  # 10 credits a token
    add_deployment(rapi, radmin, cheap, fakes[0])
    add_deployment(rapi, radmin, dear, fakes[1])
    for model, fallback in ((cheap, dear), (dear, cheap)):
        response = rapi.patch(
            f"/v1/admin/models/{model}", json={"fallbacks": [fallback]}, headers=radmin
        )
        assert response.status_code == 200 and response.json()["fallbacks"] == [fallback]
    prompt_tokens = estimate_messages_tokens((Message(role="user", content=PROMPT),))
    dear_hold = hold_amount(prompt_tokens=prompt_tokens, max_tokens=20, price=Price(10**13, 10**13))
    cheap_hold = hold_amount(
        prompt_tokens=prompt_tokens, max_tokens=20, price=Price(10**12, 10**12)
    )
    user = ruser("1000")

    # The cheap model's upstream is down: the dear one serves, at its own price.
    fakes[0].fault = "status=503"
    response = chat(rapi, user, cheap)
    assert response.status_code == 200, response.text
    found = routed_generation(rapi, radmin, response)
    assert found["model"] == cheap and found["served_model"] == dear
    assert Decimal(found["hold"]) * 1_000_000 == dear_hold
    tokens = found["input_tokens"] + found["output_tokens"]
    assert Decimal(found["cost"]) == 10 * tokens

    # The dear model's upstream is down: the cheap one serves, at the cheap price.
    fakes[0].fault, fakes[1].fault = "", "status=503"
    response = chat(rapi, user, dear)
    assert response.status_code == 200, response.text
    found = routed_generation(rapi, radmin, response)
    assert found["served_model"] == cheap
    assert Decimal(found["hold"]) * 1_000_000 == dear_hold
    assert Decimal(found["cost"]) == found["input_tokens"] + found["output_tokens"]

    # A balance that covers the cheap model's hold but not its dear fallback's is refused.
    assert cheap_hold < dear_hold
    poor = ruser(str(Decimal(cheap_hold + 1) / 1_000_000))
    refused = chat(rapi, poor, cheap)
    assert refused.status_code == 402, refused.text
    assert refused.json()["error"]["code"] == "insufficient_balance"
    rapi.patch(f"/v1/admin/models/{cheap}", json={"fallbacks": []}, headers=radmin)
    fakes[1].fault = ""
    assert chat(rapi, poor, cheap).status_code == 200


def test_no_deployment_key_appears_in_a_response_log_or_error(
    rapi: httpx.Client,
    radmin: dict[str, str],
    ruser: Callable[[str], User],
    fakes: list[FakeUpstream],
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "sk-proj-" + uuid.uuid4().hex + "SECRETEND"
    model = add_model(rapi, radmin)
    created = rapi.post(
        "/v1/admin/deployments",
        json={
            "model": model,
            "provider": "openai",
            "base_url": fakes[0].openai_base_url,
            "api_key": secret,
        },
        headers=radmin,
    )
    assert created.status_code == 201
    assert created.json()["api_key"] == "…TEND"
    deployment_id = created.json()["id"]
    fakes[0].fault = "status=500,leak"
    user = ruser("1000")
    bodies = [
        created.text,
        rapi.get("/v1/admin/deployments", headers=radmin).text,
        rapi.patch(
            f"/v1/admin/deployments/{deployment_id}", json={"weight": 2}, headers=radmin
        ).text,
        rapi.get("/openapi.json").text,
    ]
    failed = chat(rapi, user, model)
    assert failed.status_code == 502
    bodies += [failed.text, str(routed_generation(rapi, radmin, failed))]
    with rapi.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": PROMPT}], "stream": True},
        headers=user.headers,
    ) as streamed:
        bodies.append(streamed.read().decode())
    assert fakes[0].last_record.api_key == secret, "the key did reach its upstream"
    for body in bodies:
        assert secret not in body and secret[8:24] not in body
    for record in caplog.records:
        assert secret not in record.getMessage()

    async def stored() -> bytes:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            return bytes(
                await conn.fetchval(
                    "SELECT api_key_encrypted FROM deployments WHERE id = $1", deployment_id
                )
            )
        finally:
            await conn.close()

    assert secret.encode() not in asyncio.run(stored())


def test_concurrent_requests_on_failing_deployments_hold_and_charge_once(
    routed: ServerThread,
    rapi: httpx.Client,
    radmin: dict[str, str],
    ruser: Callable[[str], User],
    fakes: list[FakeUpstream],
    database_url: str,
) -> None:
    model = add_model(rapi, radmin)
    for fake in fakes:
        add_deployment(rapi, radmin, model, fake)
    fakes[0].fault = "flaky=0.6"
    fakes[1].fault = "flaky=0.6"
    fakes[2].fault = "flaky=0.3,chunks=8,error_after=3"
    user = ruser("2000")

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=routed.url, timeout=60) as client:

            async def one(i: int) -> int:
                response = await client.post(
                    "/v1/chat/completions",
                    json={
                        "model": model,
                        "messages": [{"role": "user", "content": PROMPT}],
                        "stream": i % 2 == 0,
                    },
                    headers=user.headers,
                )
                return response.status_code

            return await asyncio.gather(*(one(i) for i in range(50)))

    statuses = asyncio.run(burst())
    assert statuses.count(200) > 0
    rows = entries(database_url, user.id)
    per_generation: dict[Any, list[str]] = {}
    for kind, _, generation_id in rows:
        if generation_id is not None:
            per_generation.setdefault(generation_id, []).append(kind)
    assert per_generation
    for kinds in per_generation.values():
        assert kinds.count("charge") + kinds.count("release") == 1 == len(kinds)
    # The ledger's invariants are checked after the test by the conftest fixture.


def test_a_lost_secret_key_is_a_clear_start_up_error(
    database_url: str,
    tmp_path: Path,
    rapi: httpx.Client,
    radmin: dict[str, str],
    fakes: list[FakeUpstream],
    upstream: FakeUpstream,
) -> None:
    add_deployment(rapi, radmin, add_model(rapi, radmin), fakes[0])
    settings = make_settings(database_url, tmp_path, secret_key="another-key-" + "z" * 30)
    app = create_app(settings, provider_env=upstream_env(upstream))

    async def start() -> None:
        async with app.router.lifespan_context(app):
            pass

    with pytest.raises(ConfigurationError, match="TOLLGATE_SECRET_KEY"):
        asyncio.run(start())
