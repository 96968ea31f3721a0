"""End to end: the official OpenAI SDK against Tollgate, against the fake upstream of each
provider, streaming and not, with the balance checked after each generation."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from conftest import User
from openai.types.chat import ChatCompletionMessageParam
from support import ServerThread, balance, openai_client
from tollgate_core.fake_upstream import FakeUpstream
from tollgate_server.app import create_app
from tollgate_server.settings import Settings

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

PROMPT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
TEXT = "tok0 tok1 tok2 tok3 tok4"
# The fake counts 2 words + 2 per message = 4 input tokens and 5 output tokens; at 1 and 2
# credits a token that is 4 + 10 = 14 credits.
COST = Decimal(14)
PROVIDERS = ["openai", "gemini", "anthropic"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_non_streaming_completion_is_charged_from_usage(
    provider: str,
    server: object,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    user = make_user(credits=1000)
    client = openai_client(api, user.token)
    raw = client.chat.completions.with_raw_response.create(
        model=test_models[provider],
        messages=PROMPT,
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == TEXT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (4, 5)
    extra = completion.model_extra or {}
    generation_id = raw.headers["x-tollgate-generation-id"]
    assert extra["generation_id"] == generation_id
    assert Decimal(completion.usage.model_extra["cost"]) == COST  # type: ignore[index]
    assert balance(api, user) == 1000 - COST
    record = upstream.last_record
    assert (record.api_key is not None and record.api_key.startswith("sk-")) or provider != "openai"
    generation = api.get(f"/v1/generations/{generation_id}", headers=user.headers).json()
    assert generation["status"] == "completed"
    assert generation["estimated"] is False
    assert Decimal(generation["cost"]) == COST


@pytest.mark.parametrize("provider", PROVIDERS)
def test_streaming_completion_ends_with_usage_and_cost(
    provider: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    user = make_user(credits=1000)
    client = openai_client(api, user.token)
    stream = client.chat.completions.create(
        model=test_models[provider],
        messages=PROMPT,
        stream=True,
        stream_options={"include_usage": True},
    )
    deltas, usage, finish = [], None, None
    for chunk in stream:
        if chunk.choices:
            if chunk.choices[0].delta.content:
                deltas.append(chunk.choices[0].delta.content)
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(deltas) == TEXT
    assert len(deltas) == 5, "deltas are forwarded one by one, not buffered"
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == 5
    assert Decimal(usage.model_extra["cost"]) == COST  # type: ignore[index]
    assert balance(api, user) == 1000 - COST


def test_sse_framing_ends_with_done(
    api: httpx.Client, make_user: Callable[..., User], test_models: dict[str, str]
) -> None:
    user = make_user(credits=1000)
    with api.stream(
        "POST",
        "/v1/chat/completions",
        headers=user.headers,
        json={"model": test_models["openai"], "messages": PROMPT, "stream": True},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = b"".join(response.iter_raw()).decode()
    events = [e for e in body.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert '"usage"' in events[-2] and '"cost":"14"' in events[-2]


def test_api_key_works_with_the_sdk_and_is_limited_to_its_models(
    api: httpx.Client, make_user: Callable[..., User], test_models: dict[str, str]
) -> None:
    user = make_user(credits=1000)
    key = api.post(
        "/v1/keys", json={"name": "sdk", "models": [test_models["openai"]]}, headers=user.headers
    ).json()["key"]
    client = openai_client(api, key)
    ok = client.chat.completions.create(model=test_models["openai"], messages=PROMPT)
    assert ok.choices[0].message.content == TEXT
    listed = [m.id for m in client.models.list()]
    assert listed == [test_models["openai"]]
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(model=test_models["gemini"], messages=PROMPT)
    assert refused.value.body["code"] == "model_not_allowed"  # type: ignore[index]
    assert balance(api, user) == 1000 - COST


def test_models_list_shows_prices(
    api: httpx.Client, make_user: Callable[..., User], test_models: dict[str, str]
) -> None:
    user = make_user()
    models = {m["id"]: m for m in api.get("/v1/models", headers=user.headers).json()["data"]}
    # Issue 14 adds the cached input price (null: cached tokens cost the input price).
    assert models[test_models["anthropic"]]["pricing"] == {
        "input": "1000000",
        "output": "2000000",
        "cached_input": None,
    }
    assert models[test_models["gemini"]]["owned_by"] == "gemini"


def test_insufficient_balance_is_402_without_an_upstream_call(
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    user = make_user()
    before = len(upstream.records)
    client = openai_client(api, user.token)
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model=test_models["openai"], messages=PROMPT)
    assert refused.value.status_code == 402
    assert refused.value.body["code"] == "insufficient_balance"  # type: ignore[index]
    assert len(upstream.records) == before
    assert api.get("/v1/generations", headers=user.headers).json()["data"] == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model": "no-such-model"}, 404, "model_not_found"),
        ({"max_tokens": 5000}, 422, "validation_error"),
        # Issue 14: every parameter of the reference is known; audio no provider carries.
        ({"audio": {"voice": "alloy", "format": "mp3"}}, 422, "unsupported_parameter"),
        ({"n": 0}, 422, "validation_error"),
        ({"n": 129}, 422, "validation_error"),
        ({"tools": []}, 422, "validation_error"),
        ({"messages": []}, 422, "validation_error"),
        (
            {"messages": [{"role": "user", "content": "word " * 20000}]},
            400,
            "context_length_exceeded",
        ),
    ],
)
def test_bad_requests_are_refused_before_any_hold(
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    body: dict[str, object],
    status: int,
    code: str,
) -> None:
    user = make_user(credits=1000)
    request = {"model": test_models["openai"], "messages": PROMPT, **body}
    response = api.post("/v1/chat/completions", json=request, headers=user.headers)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert api.get("/v1/balance", headers=user.headers).json()["held"] == "0"
    assert api.get("/v1/generations", headers=user.headers).json()["data"] == []


def test_disabled_model_and_disabled_account_are_refused(
    api: httpx.Client,
    make_user: Callable[..., User],
    admin_headers: dict[str, str],
) -> None:
    name = f"off-{uuid.uuid4().hex[:6]}"
    api.post(
        "/v1/admin/models",
        headers=admin_headers,
        json={
            "name": name,
            "provider": "openai",
            "upstream_model": "x",
            "context_window": 1000,
            "max_output_tokens": 100,
            "input_price": "1",
            "output_price": "1",
            "enabled": False,
        },
    )
    user = make_user(credits=1000)
    off = api.post(
        "/v1/chat/completions", headers=user.headers, json={"model": name, "messages": PROMPT}
    )
    assert off.status_code == 404
    api.patch(f"/v1/admin/users/{user.id}", json={"disabled": True}, headers=admin_headers)
    blocked = api.post(
        "/v1/chat/completions",
        headers=user.headers,
        json={"model": "fake-openai", "messages": PROMPT},
    )
    assert blocked.status_code == 403
    assert blocked.json()["error"]["code"] == "account_disabled"
    # The account's own routes refuse it now too (issue 21): an admin reads its ledger.
    ledger = api.get(f"/v1/admin/users/{user.id}/ledger", headers=admin_headers).json()["data"]
    assert [entry["kind"] for entry in ledger] == ["topup"]  # nothing was charged or released
    assert ledger[0]["held_after"] == "0"


@pytest.mark.parametrize(
    ("directive", "status", "code"),
    [
        ("[[fake:status=400]]", 400, "upstream_bad_request"),
        ("[[fake:status=429,retry_after=7]]", 429, "upstream_rate_limited"),
        ("[[fake:status=500]]", 502, "upstream_error"),
        ("[[fake:status=503]]", 502, "upstream_error"),
        ("[[fake:status=401]]", 502, "upstream_authentication_error"),
    ],
)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_upstream_failures_before_the_first_token_charge_nothing(
    provider: str,
    directive: str,
    status: int,
    code: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    user = make_user(credits=1000)
    for stream in (False, True):
        response = api.post(
            "/v1/chat/completions",
            headers=user.headers,
            json={
                "model": test_models[provider],
                "stream": stream,
                "messages": [{"role": "user", "content": f"hi {directive}"}],
            },
        )
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] == code
        for secret in ("sk-test", "AIza", "sk-ant"):
            assert secret not in response.text
        if status == 429:
            assert response.headers["retry-after"] == "7"
    assert balance(api, user) == 1000
    statuses = {
        g["status"] for g in api.get("/v1/generations", headers=user.headers).json()["data"]
    }
    assert statuses == {"upstream_error"}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_upstream_failure_mid_stream_ends_with_an_error_event_and_charges_what_was_made(
    provider: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    user = make_user(credits=1000)
    client = openai_client(api, user.token)
    deltas = []
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(
            model=test_models[provider],
            stream=True,
            messages=[{"role": "user", "content": "hi [[fake:chunks=10,error_after=3]]"}],
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                deltas.append(chunk.choices[0].delta.content)
    assert len(deltas) == 3
    generation = api.get("/v1/generations", headers=user.headers).json()["data"][0]
    assert generation["status"] == "upstream_error"
    assert generation["estimated"] is True
    # Estimated from the three deltas received: at least one token each.
    assert 3 <= generation["output_tokens"] < 10
    expected = generation["input_tokens"] + 2 * generation["output_tokens"]
    assert Decimal(generation["cost"]) == expected
    assert balance(api, user) == 1000 - Decimal(generation["cost"])


@pytest.mark.parametrize("provider", ["anthropic", "gemini"])
def test_a_cut_stream_is_charged_the_vendors_prompt_count_when_it_sent_one(
    provider: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    user = make_user(credits=1000)
    client = openai_client(api, user.token)
    marker = uuid.uuid4().hex
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(
            model=test_models[provider],
            stream=True,
            messages=[{"role": "user", "content": f"{marker} [[fake:chunks=10,error_after=3]]"}],
        ):
            pass
    record = next(r for r in upstream.records if marker in str(r.body))
    assert record.outcome == "error_event" and record.usage is None  # no final usage was sent
    generation = api.get("/v1/generations", headers=user.headers).json()["data"][0]
    assert generation["status"] == "upstream_error"
    # Anthropic's message_start and Gemini's first usageMetadata gave the exact count (4 here),
    # where the gateway's estimate of the prompt was several times larger.
    # (the fake counts 2 words + 2 per message).
    assert generation["input_tokens"] == 4
    assert Decimal(generation["cost"]) == (
        generation["input_tokens"] + 2 * generation["output_tokens"]
    )


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_non_streaming_call_that_fails_after_its_first_token_charges_nothing(
    provider: str,
    api: httpx.Client,
    admin_headers: dict[str, str],
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    """A non-streaming client that gets a 502 received nothing, so it pays nothing; with the
    SDK's default retries one failed call once cost three charges."""
    user = make_user(credits=1000)
    client = openai.OpenAI(
        base_url=f"{str(api.base_url).rstrip('/')}/v1", api_key=user.token, max_retries=2
    )
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(
            model=test_models[provider],
            messages=[{"role": "user", "content": "hi [[fake:chunks=10,error_after=3]]"}],
        )
    assert caught.value.status_code == 502
    generations = api.get("/v1/generations", headers=user.headers).json()["data"]
    assert len(generations) == 3  # the SDK tried three times
    assert {(g["status"], g["cost"]) for g in generations} == {("upstream_error", "0")}
    assert balance(api, user) == 1000
    # What the upstream may bill the operator for is kept for reconciliation.
    usage = api.get(f"/v1/admin/users/{user.id}/usage", headers=admin_headers).json()["data"]
    assert usage[0]["generations"] == 3 and usage[0]["cost"] == "0"
    assert usage[0]["unbilled_output_tokens"] >= 9 and usage[0]["unbilled_input_tokens"] > 0


def test_usage_that_disagrees_with_the_text_is_capped_at_the_hold(
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    user = make_user(credits=1000)
    response = api.post(
        "/v1/chat/completions",
        headers=user.headers,
        json={
            "model": test_models["openai"],
            "max_tokens": 10,
            # 20 is within what 10 max tokens allow a vendor to count (see
            # tollgate_core.metering), but costs more than the hold.
            "messages": [{"role": "user", "content": "hi [[fake:usage_output=20]]"}],
        },
    )
    assert response.status_code == 200
    generation = api.get("/v1/generations", headers=user.headers).json()["data"][0]
    assert generation["usage_replaced"] is None and generation["output_tokens"] == 20
    # The hold (prompt estimate + 10 output tokens) is the most a generation can cost.
    assert generation["cost"] == generation["hold"]
    assert balance(api, user) == 1000 - Decimal(generation["hold"])


def test_missing_usage_is_estimated_and_marked(
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    user = make_user(credits=1000)
    response = api.post(
        "/v1/chat/completions",
        headers=user.headers,
        json={
            "model": test_models["openai"],
            "messages": [{"role": "user", "content": "hi [[fake:no_usage]]"}],
        },
    )
    assert response.status_code == 200
    usage = response.json()["usage"]
    assert usage["estimated"] is True
    assert usage["completion_tokens"] >= 5  # at least one token a delta


def test_generations_list_pages(
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    user = make_user(credits=1000)
    ids = []
    for _ in range(3):
        ids.append(
            api.post(
                "/v1/chat/completions",
                headers=user.headers,
                json={"model": test_models["openai"], "messages": PROMPT},
            ).headers["x-tollgate-generation-id"]
        )
    first = api.get("/v1/generations", params={"limit": 2}, headers=user.headers).json()
    second = api.get(
        "/v1/generations", params={"limit": 2, "cursor": first["next_cursor"]}, headers=user.headers
    ).json()
    seen = [g["id"] for g in first["data"] + second["data"]]
    assert seen == list(reversed(ids))
    other = make_user()
    assert api.get(f"/v1/generations/{ids[0]}", headers=other.headers).status_code == 404


@pytest.mark.parametrize(
    ("path", "provider"),
    [("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic")],
    ids=["chat", "messages"],
)
def test_a_stream_opens_in_the_same_write_as_its_first_delta(
    settings: Settings,
    provider_env: dict[str, str],
    make_user: Callable[..., User],
    test_models: dict[str, str],
    path: str,
    provider: str,
) -> None:
    """The stream's opening (OpenAI's role chunk, Anthropic's message_start) goes out with the
    first delta, not in a write of its own: one write fewer before the first token."""
    app = create_app(settings, provider_env=provider_env)
    bodies: list[bytes] = []

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        async def send_recorded(message: Any) -> None:
            if scope["type"] == "http" and message["type"] == "http.response.body":
                bodies.append(message["body"])
            await send(message)

        await app(scope, receive, send_recorded)

    user = make_user(credits=1000)
    body = {
        "model": test_models[provider],
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": "say something [[fake:chunks=3]]"}],
    }
    with ServerThread(recording) as server, httpx.Client(base_url=server.url) as client:
        response = client.post(path, json=body, headers=user.headers)
    assert response.status_code == 200, response.text
    first, *rest, last = bodies
    opening = b'"role":"assistant"' if provider == "openai" else b"event: message_start"
    delta = b'"content":"' if provider == "openai" else b"event: content_block_delta"
    assert opening in first and delta in first
    assert len(rest) == 2  # the other two deltas, then the end of the answer
    assert not any(opening in b for b in (*rest, last))
