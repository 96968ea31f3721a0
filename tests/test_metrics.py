"""`GET /metrics`: a known workload moves each counter by exactly what happened, read with
prometheus-client's own parser; the credits counter equals the ledger's charges; who may read."""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import openai
import pytest
from conftest import User, make_settings
from prometheus_client.parser import text_string_to_metric_families
from support import ServerThread, asyncpg_dsn, free_port
from tollgate_server.app import create_app

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

UUID_LIKE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of the exposition, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def scrape(api: httpx.Client, headers: dict[str, str]) -> Samples:
    response = api.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def create_model(api: httpx.Client, admin_headers: dict[str, str], provider: str) -> str:
    """A model of its own, so that the counters labelled with it move only with this test."""
    name = f"metered-{uuid.uuid4().hex[:8]}"
    response = api.post(
        "/v1/admin/models",
        json={
            "name": name,
            "provider": provider,
            "upstream_model": f"{provider}-upstream",
            "context_window": 4000,
            "max_output_tokens": 1000,
            "default_max_tokens": 100,
            "input_price": "1000000",
            "output_price": "2000000",
        },
        headers=admin_headers,
    )
    assert response.status_code == 201, response.text
    return name


async def _ledger_charges(url: str, model: str) -> tuple[int, int]:
    """The ledger's charges for `model`'s generations (micro-credits) and how many there are."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        row = await conn.fetchrow(
            "SELECT coalesce(sum(-e.amount), 0)::bigint, count(*) FROM ledger_entries e "
            "JOIN generations g ON g.id = e.generation_id "
            "WHERE g.model_name = $1 AND e.kind = 'charge'",
            model,
        )
    finally:
        await conn.close()
    assert row is not None
    return int(row[0]), int(row[1])


def _settled_all(api: httpx.Client, user: User, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        data: list[dict[str, Any]] = api.get("/v1/generations", headers=user.headers).json()["data"]
        if len(data) == count and all(g["status"] != "running" for g in data):
            return data
        time.sleep(0.05)
    raise AssertionError("the generations were not settled")


def _wait_for(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the metrics never showed it"
        time.sleep(0.05)


def test_a_known_workload_moves_each_counter_by_what_happened(
    api: httpx.Client,
    server: ServerThread,
    admin_headers: dict[str, str],
    make_user: Callable[..., User],
    test_models: dict[str, str],
    database_url: str,
) -> None:
    model = create_model(api, admin_headers, "openai")
    user = make_user(credits=1000)
    broke = make_user()
    client = openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=user.token, max_retries=0, timeout=30
    )
    before = scrape(api, admin_headers)

    def ask(text: str, **extra: Any) -> Any:
        return client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": text}], **extra
        )

    # Two completions (one reporting cached and reasoning tokens) and one stream.
    ask("one [[fake:chunks=3]]")
    ask("two [[fake:chunks=4,cached=2,reasoning=3]]")
    streamed = list(ask("three [[fake:chunks=5]]", stream=True))
    assert streamed
    # A refusal: no credits.
    refused = httpx.post(
        f"{server.url}/v1/chat/completions",
        headers=broke.headers,
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert refused.status_code == 402
    # An upstream failure before the first token.
    with pytest.raises(openai.APIStatusError):
        ask("four [[fake:status=500]]")
    # A client that hangs up after three deltas of a long stream.
    body = {
        "model": model,
        "stream": True,
        "max_tokens": 200,
        "messages": [{"role": "user", "content": "five [[fake:chunks=100,delay_ms=50]]"}],
    }
    with (
        httpx.Client(base_url=server.url, timeout=30) as hangup,
        hangup.stream("POST", "/v1/chat/completions", json=body, headers=user.headers) as answer,
    ):
        assert answer.status_code == 200
        deltas = 0
        for line in answer.iter_lines():
            if '"delta":{"content":' in line:
                deltas += 1
                if deltas == 3:
                    break

    generations = _settled_all(api, user, 5)
    by_status: dict[str, int] = {}
    for generation in generations:
        by_status[generation["status"]] = by_status.get(generation["status"], 0) + 1
    assert by_status == {"completed": 3, "upstream_error": 1, "client_disconnected": 1}

    after: Samples = {}

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # The hang-up is counted when its request ends, a moment after the client left.
    def all_counted() -> bool:
        nonlocal after
        after = scrape(api, admin_headers)
        return moved("tollgate_generations_total", model=model) == 5

    _wait_for(all_counted)

    generations_total = "tollgate_generations_total"
    for status, count in by_status.items():
        assert moved(generations_total, model=model, status=status) == count, status
    assert (
        moved(
            generations_total,
            model=model,
            provider="openai",
            endpoint="/v1/chat/completions",
            status="completed",
        )
        == 3
    )
    assert moved("tollgate_admission_refusals_total", reason="insufficient_balance") == 1
    assert moved("tollgate_upstream_errors_total", provider="openai") == 1
    assert moved("tollgate_upstream_errors_total", provider="openai", kind="upstream_error") == 1

    # Tokens: exactly what the generations record.
    assert moved("tollgate_input_tokens_total", model=model) == sum(
        g["input_tokens"] or 0 for g in generations
    )
    assert moved("tollgate_output_tokens_total", model=model) == sum(
        g["output_tokens"] or 0 for g in generations
    )
    assert moved("tollgate_cached_input_tokens_total", model=model) == 2
    assert moved("tollgate_reasoning_tokens_total", model=model) == 3

    # Credits: the counter is the ledger's charges, to the micro-credit.
    charged, charges = asyncio.run(_ledger_charges(database_url, model))
    assert charges == 4  # three completed and the hang-up; the failure charged nothing
    assert moved("tollgate_credits_charged_microcredits_total", model=model) == charged > 0

    # Upstream latency: one observation per generation that reached the upstream and produced.
    ttft = "tollgate_upstream_first_token_seconds_count"
    assert moved(ttft, model=model, provider="openai") == 4
    assert moved("tollgate_upstream_duration_seconds_count", model=model) == 5

    # HTTP: by route template and status, never by path or account.
    route = "/v1/chat/completions"
    requests = "tollgate_http_requests_total"
    assert moved(requests, route=route, method="POST", status="200") == 4
    assert moved(requests, route=route, method="POST", status="402") == 1
    assert moved(requests, route=route, method="POST", status="502") == 1
    assert moved("tollgate_http_request_duration_seconds_count", route=route) == 6
    assert moved(requests, route="/v1/generations", method="GET", status="200") >= 1
    labels = {value for (_, ls), _ in after.items() for _, value in ls}
    assert user.id not in labels and broke.id not in labels
    # Paths appear as their templates (/v1/generations/{generation_id}), never with an id.
    assert not any(UUID_LIKE.search(label) for label in labels)

    # Gauges of now: nothing held, nothing in flight; the pools are visible.
    assert value(after, "tollgate_generations_in_flight") == 0
    assert value(after, "tollgate_credits_held_microcredits") == 0
    assert ("tollgate_db_pool_connections_in_use", (("pool", "hot"),)) in after
    assert value(after, "tollgate_settlements_waiting") == 0


def test_credits_held_and_generations_in_flight_are_read_from_the_database(
    api: httpx.Client,
    server: ServerThread,
    admin_headers: dict[str, str],
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    user = make_user(credits=1000)
    body = {
        "model": test_models["openai"],
        "stream": True,
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "slow [[fake:chunks=3,stall_first_s=2]]"}],
    }
    answers: list[httpx.Response] = []
    request = threading.Thread(
        target=lambda: answers.append(
            httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=user.headers)
        )
    )
    request.start()
    try:
        # The stream answers nothing until its first token: meanwhile it is in flight.
        _wait_for(lambda: Decimal(api.get("/v1/balance", headers=user.headers).json()["held"]) > 0)
        during = scrape(api, admin_headers)
        held = Decimal(api.get("/v1/balance", headers=user.headers).json()["held"])
    finally:
        request.join(30)
    assert answers and answers[0].status_code == 200
    assert value(during, "tollgate_generations_in_flight") >= 1
    assert value(during, "tollgate_credits_held_microcredits") >= held * 1_000_000 > 0
    _wait_for(lambda: value(scrape(api, admin_headers), "tollgate_generations_in_flight") == 0)


def test_labels_stay_bounded_whatever_a_client_sends(
    api: httpx.Client, admin_headers: dict[str, str]
) -> None:
    junk = uuid.uuid4().hex
    before = scrape(api, admin_headers)
    assert api.request("PROPFIND", f"/coffee/{junk}").status_code == 404
    assert api.delete(f"/v1/keys/{junk}", headers=admin_headers).status_code == 404
    after = scrape(api, admin_headers)
    requests = "tollgate_http_requests_total"
    moved = value(after, requests, route="unmatched", method="other", status="404") - value(
        before, requests, route="unmatched", method="other", status="404"
    )
    assert moved == 1
    assert value(after, requests, route="/v1/keys/{key_id}", method="DELETE", status="404") >= 1
    assert not any(
        junk in label or "PROPFIND" in label for (_, ls), _ in after.items() for _, label in ls
    )


# --- who may read ------------------------------------------------------------------------------


@pytest.fixture
def serve_with(
    database_url: str, provider_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def serve(**overrides: Any) -> ServerThread:
        # A small pool: these servers share the test database server with everything else.
        settings = make_settings(database_url, tmp_path, db_pool_size=2, **overrides)
        running = ServerThread(create_app(settings, provider_env=provider_env)).start()
        started.append(running)
        return running

    yield serve
    for running in started:
        running.stop()


def test_token_mode_takes_the_metrics_token_or_an_admin_and_refuses_everyone_else(
    serve_with: Callable[..., ServerThread], make_user: Callable[..., User]
) -> None:
    running = serve_with(metrics="token", metrics_token="scrape-" + "s" * 30)
    user = make_user()
    with httpx.Client(base_url=running.url, timeout=30) as client:
        key = client.post("/v1/keys", json={"name": "k"}, headers=user.headers).json()["key"]
        admin_login = client.post(
            "/v1/auth/login", json={"email": "root@example.com", "password": "admin-password-123"}
        ).json()
        for headers, status, code in [
            ({}, 401, "unauthenticated"),
            ({"Authorization": "Bearer wrong"}, 401, "unauthenticated"),
            ({"Authorization": "Bearer tg-" + "x" * 40}, 401, "unauthenticated"),
            (user.headers, 403, "forbidden"),
            ({"Authorization": f"Bearer {key}"}, 403, "forbidden"),
        ]:
            refused = client.get("/metrics", headers=headers)
            assert refused.status_code == status, refused.text
            assert refused.json()["error"]["code"] == code
            assert "tollgate_" not in refused.text
        for token in ("scrape-" + "s" * 30, admin_login["access_token"]):
            allowed = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            assert allowed.status_code == 200
            assert "tollgate_http_requests_total" in allowed.text
        document = client.get("/openapi.json").json()
        assert document["paths"]["/metrics"]["get"]["security"]


def test_open_off_and_a_listener_of_its_own(serve_with: Callable[..., ServerThread]) -> None:
    opened = serve_with(metrics="open")
    answer = httpx.get(f"{opened.url}/metrics")
    assert answer.status_code == 200 and "tollgate_http_requests_total" in answer.text
    assert (
        "security" not in httpx.get(f"{opened.url}/openapi.json").json()["paths"]["/metrics"]["get"]
    )
    opened.stop()

    off = serve_with(metrics="off")
    assert httpx.get(f"{off.url}/metrics").status_code == 404
    assert "/metrics" not in httpx.get(f"{off.url}/openapi.json").json()["paths"]
    off.stop()

    port = free_port()
    apart = serve_with(metrics=f"listen:127.0.0.1:{port}")
    assert httpx.get(f"{apart.url}/metrics").status_code == 404
    scraped = httpx.get(f"http://127.0.0.1:{port}/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "tollgate_credits_held_microcredits" in scraped.text


def test_a_bad_metrics_setting_is_refused_in_one_line() -> None:
    import os

    from tollgate_core import ConfigurationError
    from tollgate_server.settings import load_settings

    os.environ["TOLLGATE_METRICS"] = "sometimes"
    try:
        with pytest.raises(ConfigurationError, match="TOLLGATE_METRICS: expected off, open"):
            load_settings()
    finally:
        del os.environ["TOLLGATE_METRICS"]


def test_every_workers_counts_add_up(database_url: str, tmp_path: Path) -> None:
    """`tollgate serve --workers 2` gives the workers one fresh multiprocess folder: whichever
    worker answers a scrape (here on the metrics' own listener, which every worker binds), it
    counts every worker's requests."""
    from conftest import JWT_SECRET
    from support import ServeProcess, serve_env

    metrics_port = free_port()
    env = serve_env(
        TOLLGATE_DATABASE_URL=database_url,
        TOLLGATE_DATA_DIR=str(tmp_path / "data"),
        TOLLGATE_JWT_SECRET=JWT_SECRET,
        TOLLGATE_METRICS=f"listen:127.0.0.1:{metrics_port}",
        TOLLGATE_DB_POOL_SIZE="2",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with ServeProcess(env, "--workers", "2") as running:
        # A new connection each: the kernel spreads them over both workers.
        for _ in range(40):
            assert httpx.get(f"{running.url}/healthz").status_code == 200
        assert httpx.get(f"{running.url}/metrics").status_code == 404
        for _ in range(6):
            samples = parse(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text)
            counted = value(samples, "tollgate_http_requests_total", route="/healthz")
            assert counted == 40
            # Live gauges too: each worker's pool, summed.
            assert ("tollgate_db_pool_connections_in_use", (("pool", "hot"),)) in samples
        assert running.stop() == 0
