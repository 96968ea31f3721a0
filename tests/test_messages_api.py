"""Anthropic's Messages API (`POST /v1/messages`) end to end, through the official `anthropic`
SDK, on a model of each provider behind the fake upstream: plain and streamed messages, a tool
round trip, `count_tokens`, Anthropic's error envelope (so the SDK raises its own classes), and
the charge: the upstream's usage at the model's prices, the same ledger as chat completions.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import pytest
from conftest import User
from support import balance
from tollgate_core.fake_upstream import FakeUpstream

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

PROVIDERS = ["openai", "gemini", "anthropic"]
WEATHER_TOOL: Any = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def api_key(api: httpx.Client, user: User) -> str:
    created = api.post("/v1/keys", json={"name": "anthropic-sdk"}, headers=user.headers)
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


def sdk(api: httpx.Client, key: str) -> anthropic.Anthropic:
    """The SDK as a user sets it up: the server's root as base URL, the key as `api_key`
    (sent as `x-api-key`)."""
    return anthropic.Anthropic(
        base_url=str(api.base_url).rstrip("/"), api_key=key, max_retries=0, timeout=30
    )


def generations(api: httpx.Client, user: User) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = api.get("/v1/generations", headers=user.headers).json()["data"]
    return data


def priced(usage: Any) -> Decimal:
    """The test models' price (1 credit an input token, 2 an output token) of Anthropic's
    usage, whose input_tokens leaves out the cache's tokens."""
    inputs = (
        usage.input_tokens
        + (usage.cache_read_input_tokens or 0)
        + (usage.cache_creation_input_tokens or 0)
    )
    return Decimal(inputs) + 2 * Decimal(usage.output_tokens)


def upstream_record(upstream: FakeUpstream, marker: str) -> Any:
    found = [r for r in list(upstream.records) if marker in json.dumps(r.body)]
    assert len(found) == 1
    return found[0]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_create_is_answered_and_charged_the_upstreams_usage(
    provider: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    user = make_user(credits=1000)
    client = sdk(api, api_key(api, user))
    marker = uuid.uuid4().hex
    message = client.messages.create(
        model=test_models[provider],
        max_tokens=50,
        system="Be brief.",
        messages=[{"role": "user", "content": f"Hi {marker} [[fake:chunks=4]]"}],
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.model == test_models[provider]
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "tok0 tok1 tok2 tok3"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    record = upstream_record(upstream, marker)
    assert record.protocol == provider
    # The fake's exact usage: every message's words + 2 (system included), one per chunk.
    assert (message.usage.input_tokens, message.usage.output_tokens) == ((2 + 2) + (3 + 2), 4)
    charge = priced(message.usage)
    assert Decimal(message.usage.model_extra["cost"]) == charge  # type: ignore[index]
    assert balance(api, user) == 1000 - charge
    [generation] = generations(api, user)
    assert generation["status"] == "completed" and generation["endpoint"] == "messages"
    assert generation["id"] == message.model_extra["generation_id"]  # type: ignore[index]
    assert Decimal(generation["cost"]) == charge


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_gives_text_and_the_final_message(
    provider: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    user = make_user(credits=1000)
    client = sdk(api, api_key(api, user))
    with client.messages.stream(
        model=test_models[provider],
        max_tokens=50,
        messages=[{"role": "user", "content": "Hi [[fake:chunks=5]]"}],
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    # One text event per upstream chunk, as they came.
    assert len(texts) == 5 and "".join(texts) == "tok0 tok1 tok2 tok3 tok4"
    assert final.content[0].text == "tok0 tok1 tok2 tok3 tok4"  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 5
    assert final.usage.input_tokens == 2 + 2  # the upstream's count, from message_delta
    charge = priced(final.usage)
    assert balance(api, user) == 1000 - charge
    [generation] = generations(api, user)
    assert generation["status"] == "completed" and Decimal(generation["cost"]) == charge


def test_the_stream_is_anthropics_event_sequence(
    api: httpx.Client, make_user: Callable[..., User], test_models: dict[str, str]
) -> None:
    user = make_user(credits=1000)
    body = {
        "model": test_models["openai"],
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": "Hi [[fake:chunks=2]]"}],
    }
    headers = {"x-api-key": api_key(api, user), "anthropic-version": "2023-06-01"}
    with api.stream("POST", "/v1/messages", json=body, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["request-id"] == response.headers["x-request-id"]
        lines = [line for line in response.iter_lines() if line]
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    data = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert [d["type"] for d in data] == names
    assert data[3]["delta"] == {"type": "text_delta", "text": "tok0"}
    assert data[6]["delta"]["stop_reason"] == "end_turn"
    assert data[6]["usage"]["output_tokens"] == 2


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_tool_use_round_trip(
    provider: str,
    stream: bool,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    user = make_user(credits=1000)
    client = sdk(api, api_key(api, user))
    model = test_models[provider]
    question: Any = {"role": "user", "content": "Weather in Paris? [[fake:tool=get_weather]]"}

    def ask(messages: list[Any]) -> Any:
        if not stream:
            return client.messages.create(
                model=model, max_tokens=200, tools=[WEATHER_TOOL], messages=messages
            )
        with client.messages.stream(
            model=model, max_tokens=200, tools=[WEATHER_TOOL], messages=messages
        ) as events:
            return events.get_final_message()

    first = ask([question])
    assert first.stop_reason == "tool_use"
    [call] = [block for block in first.content if block.type == "tool_use"]
    assert call.name == "get_weather"
    assert isinstance(call.input, dict) and isinstance(call.input["city"], str)
    assert call.id
    # The tool's result goes back; the model answers in text.
    second = ask(
        [
            question,
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny"}],
            },
        ]
    )
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text" and second.content[0].text.startswith("tok0")
    # The upstream got the call and its result in its own wire format.
    last = upstream.records[-1]
    assert last.protocol == provider
    assert "Sunny" in json.dumps(last.body)
    assert call.id in json.dumps(last.body) or provider == "gemini"  # Gemini matches by name
    charge = priced(first.usage) + priced(second.usage)
    assert balance(api, user) == 1000 - charge
    assert [g["status"] for g in generations(api, user)] == ["completed", "completed"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_count_tokens_is_free(
    provider: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    user = make_user(credits=10)
    client = sdk(api, api_key(api, user))
    small = client.messages.count_tokens(
        model=test_models[provider], messages=[{"role": "user", "content": "Hi"}]
    )
    big = client.messages.count_tokens(
        model=test_models[provider],
        system="You are a weather bot. " * 20,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "What is the weather in Paris today?"}],
    )
    assert 0 < small.input_tokens < big.input_tokens
    assert balance(api, user) == 10
    assert generations(api, user) == []
    ledger = api.get("/v1/ledger", headers=user.headers).json()["data"]
    assert [entry["kind"] for entry in ledger] == ["topup"]


def test_402_is_a_billing_error(
    api: httpx.Client, make_user: Callable[..., User], test_models: dict[str, str]
) -> None:
    user = make_user()  # no credits
    client = sdk(api, api_key(api, user))
    with pytest.raises(anthropic.APIStatusError) as raised:
        client.messages.create(
            model=test_models["anthropic"],
            max_tokens=10,
            messages=[{"role": "user", "content": "Hi"}],
        )
    # The SDK's class for a 402.
    assert type(raised.value).__name__ == "PaymentRequiredError"
    assert raised.value.status_code == 402
    body: Any = raised.value.body
    assert body["type"] == "error"
    assert body["error"]["type"] == "billing_error"
    assert body["error"]["code"] == "insufficient_balance"
    assert raised.value.request_id == body["request_id"]
    assert generations(api, user) == []


def test_401_is_an_authentication_error(api: httpx.Client, test_models: dict[str, str]) -> None:
    client = sdk(api, "tg-" + "x" * 40)
    with pytest.raises(anthropic.AuthenticationError) as raised:
        client.messages.create(
            model=test_models["openai"], max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
        )
    body: Any = raised.value.body
    assert body["error"]["type"] == "authentication_error"
    assert body["error"]["code"] == "unauthenticated"


def test_an_unknown_model_is_a_not_found_error(
    api: httpx.Client, make_user: Callable[..., User]
) -> None:
    user = make_user(credits=10)
    client = sdk(api, api_key(api, user))
    with pytest.raises(anthropic.NotFoundError) as raised:
        client.messages.create(
            model="claude-no-such-model",
            max_tokens=10,
            messages=[{"role": "user", "content": "Hi"}],
        )
    body: Any = raised.value.body
    assert body["error"] == {
        "type": "not_found_error",
        "message": "no model named claude-no-such-model is served",
        "code": "model_not_found",
    }
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(
            model="claude-no-such-model", messages=[{"role": "user", "content": "Hi"}]
        )


def test_a_bearer_token_is_accepted_too(
    api: httpx.Client, make_user: Callable[..., User], test_models: dict[str, str]
) -> None:
    user = make_user(credits=100)
    key = api_key(api, user)
    body = {
        "model": test_models["gemini"],
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    for headers in ({"Authorization": f"Bearer {key}"}, user.headers):
        response = api.post(
            "/v1/messages", json=body, headers={**headers, "anthropic-beta": "x-2025-01-01"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["content"][0]["text"].startswith("tok0")
        assert response.headers["request-id"] == response.headers["x-request-id"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"frequency_penalty": 1}, "frequency_penalty: Extra inputs are not permitted"),
        ({"max_tokens": None}, "max_tokens"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "role"),
        ({"messages": [{"role": "system", "content": "x"}]}, "at least one user or assistant"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools"),
        ({"top_k": 5}, "top_k: the model fake-openai does not support this parameter"),
        ({"max_tokens": 5000}, "max_tokens: at most 1000 for fake-openai"),
    ],
)
def test_bad_requests_are_400_invalid_request_errors_and_change_nothing(
    change: dict[str, Any],
    message: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    user = make_user(credits=100)
    body: dict[str, Any] = {
        "model": test_models["openai"],
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "Hi"}],
        **change,
    }
    body = {name: value for name, value in body.items() if value is not None}
    response = api.post("/v1/messages", json=body, headers={"x-api-key": api_key(api, user)})
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert message in error["error"]["message"]
    assert response.headers["request-id"] == error["request_id"]
    assert balance(api, user) == 100
    assert generations(api, user) == []


def thinking_model(api: httpx.Client, admin_headers: dict[str, str], provider: str) -> str:
    """A model of `provider` whose output limit leaves room for Anthropic's least thinking
    budget (1024, below max_tokens)."""
    name = f"thinking-{provider}"
    response = api.post(
        "/v1/admin/models",
        json={
            "name": name,
            "provider": provider,
            "upstream_model": f"{provider}-upstream",
            "context_window": 40000,
            "max_output_tokens": 8000,
            "default_max_tokens": 100,
            "input_price": "1000000",
            "output_price": "2000000",
        },
        headers=admin_headers,
    )
    assert response.status_code in (201, 409), response.text
    return name


@pytest.mark.parametrize("provider", PROVIDERS)
def test_thinking_reaches_each_upstream_in_its_own_words(
    provider: str,
    api: httpx.Client,
    admin_headers: dict[str, str],
    make_user: Callable[..., User],
    upstream: FakeUpstream,
) -> None:
    """A thinking budget is carried as the reasoning effort whose budget is the largest not
    above it; adaptive thinking at `output_config.effort` (as Claude Code sends it)."""
    model = thinking_model(api, admin_headers, provider)
    user = make_user(credits=100_000)
    key = api_key(api, user)
    sent: list[Any] = []
    for thinking, effort in (
        ({"type": "enabled", "budget_tokens": 3000}, None),
        ({"type": "adaptive"}, "high"),
    ):
        marker = uuid.uuid4().hex
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": 4000,
            "thinking": thinking,
            "messages": [{"role": "user", "content": f"Think {marker}"}],
        }
        if effort is not None:
            body["output_config"] = {"effort": effort}
        response = api.post("/v1/messages", json=body, headers={"x-api-key": key})
        assert response.status_code == 200, response.text
        sent.append(upstream_record(upstream, marker).body)
    if provider == "openai":
        assert [b["reasoning_effort"] for b in sent] == ["low", "high"]
    elif provider == "gemini":
        budgets = [b["generationConfig"]["thinkingConfig"]["thinkingBudget"] for b in sent]
        assert 0 < budgets[0] <= 3000 < budgets[1]
    else:
        # Anthropic's budget: at most the one asked for, and below max_tokens.
        assert [b["thinking"] for b in sent] == [
            {"type": "enabled", "budget_tokens": 2048},
            {"type": "enabled", "budget_tokens": 3999},
        ]


def test_claude_codes_request_shape_is_carried(
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    """System blocks with cache hints, a system turn in the conversation, metadata and the
    clearing of earlier thinking: what Claude Code sends."""
    user = make_user(credits=1000)
    marker = uuid.uuid4().hex
    body = {
        "model": test_models["openai"],
        "max_tokens": 50,
        "system": [
            {"type": "text", "text": "You are terse."},
            {"type": "text", "text": "Answer in English.", "cache_control": {"type": "ephemeral"}},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}},
                    {"type": "text", "text": marker},
                ],
            },
            {"role": "system", "content": "Agents available: none."},
        ],
        "metadata": {"user_id": "user-42"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "stop_sequences": ["STOP"],
        "temperature": 0.5,
    }
    response = api.post(
        "/v1/messages",
        json=body,
        headers={
            "x-api-key": api_key(api, user),
            "anthropic-beta": "context-management-2025-06-27",
        },
    )
    assert response.status_code == 200, response.text
    sent = upstream_record(upstream, marker).body
    assert sent["messages"] == [
        {"role": "system", "content": "You are terse.\n\nAnswer in English."},
        {"role": "user", "content": f"Hi{marker}"},
        {"role": "system", "content": "Agents available: none."},
    ]
    assert (sent["user"], sent["stop"], sent["temperature"]) == ("user-42", ["STOP"], 0.5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"output_config": {"effort": "low"}},
            "output_config.effort: carried only with thinking enabled or adaptive",
        ),
        (
            {"context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]}},
            "context_management.edits.0.type",
        ),
        ({"thinking": {"type": "enabled", "budget_tokens": 10}}, "budget_tokens"),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 2000}},
            "thinking.budget_tokens: must be below max_tokens",
        ),
        (
            {"messages": [{"role": "system", "content": [{"type": "image", "source": {}}]}]},
            "messages.0",
        ),
    ],
)
def test_what_cannot_be_carried_is_refused_by_name(
    change: dict[str, Any],
    message: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    user = make_user(credits=100)
    body: dict[str, Any] = {
        "model": test_models["anthropic"],
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "Hi"}],
        **change,
    }
    response = api.post("/v1/messages", json=body, headers={"x-api-key": api_key(api, user)})
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]
    assert generations(api, user) == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_structured_output_and_images_are_carried(
    provider: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    png = (
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJ"
        "RU5ErkJggg=="
    )
    user = make_user(credits=100_000)
    client = sdk(api, api_key(api, user))
    marker = uuid.uuid4().hex
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string"}},
        "required": ["colour"],
        "additionalProperties": False,
    }
    message = client.messages.create(
        model=test_models[provider],
        max_tokens=200,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": png},
                    },
                    {"type": "text", "text": f"What colour? {marker}"},
                ],
            }
        ],
        extra_body={"output_config": {"format": {"type": "json_schema", "schema": schema}}},
    )
    answer = json.loads(message.content[0].text)  # type: ignore[union-attr]
    assert isinstance(answer["colour"], str)
    sent = json.dumps(upstream_record(upstream, marker).body)
    assert png in sent


def test_thinking_streams_as_thinking_deltas_and_is_paid_as_output(
    api: httpx.Client, admin_headers: dict[str, str], make_user: Callable[..., User]
) -> None:
    model = thinking_model(api, admin_headers, "anthropic")
    user = make_user(credits=100_000)
    client = sdk(api, api_key(api, user))
    thoughts: list[str] = []
    texts: list[str] = []
    with client.messages.stream(
        model=model,
        max_tokens=4000,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=[{"role": "user", "content": "Think [[fake:thinking=3,chunks=2]]"}],
    ) as stream:
        for event in stream:
            if event.type == "thinking":
                thoughts.append(event.thinking)
            elif event.type == "text":
                texts.append(event.text)
        final = stream.get_final_message()
    assert thoughts == ["think0", " think1", " think2"]
    assert texts == ["tok0", " tok1"]
    assert [block.type for block in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "think0 think1 think2"  # type: ignore[union-attr]
    assert final.content[1].text == "tok0 tok1"  # type: ignore[union-attr]
    assert final.usage.output_tokens == 3 + 2
    charge = priced(final.usage)
    assert balance(api, user) == 100_000 - charge
    [generation] = generations(api, user)
    assert generation["output_tokens"] == 5 and Decimal(generation["cost"]) == charge


def test_thinking_in_a_whole_message_and_left_out_of_chat_completions(
    api: httpx.Client, admin_headers: dict[str, str], make_user: Callable[..., User]
) -> None:
    model = thinking_model(api, admin_headers, "anthropic")
    user = make_user(credits=100_000)
    key = api_key(api, user)
    content = "Think [[fake:thinking=2,chunks=2]]"
    message = sdk(api, key).messages.create(
        model=model, max_tokens=100, messages=[{"role": "user", "content": content}]
    )
    assert [
        (b.type, getattr(b, "thinking", getattr(b, "text", None))) for b in message.content
    ] == [
        ("thinking", "think0 think1"),
        ("text", "tok0 tok1"),
    ]
    # OpenAI's chat format has no place for thinking: the answer is the text alone, and the
    # thinking is paid as the upstream's reasoning tokens.
    chat = api.post(
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": content}]},
        headers={"Authorization": f"Bearer {key}"},
    ).json()
    assert chat["choices"][0]["message"]["content"] == "tok0 tok1"
    assert chat["usage"]["completion_tokens_details"]["reasoning_tokens"] == 2
    assert chat["usage"]["completion_tokens"] == 4


def test_a_key_limited_to_other_models_gets_a_permission_error(
    api: httpx.Client, make_user: Callable[..., User], test_models: dict[str, str]
) -> None:
    user = make_user(credits=100)
    created = api.post(
        "/v1/keys",
        json={"name": "openai only", "models": [test_models["openai"]]},
        headers=user.headers,
    )
    assert created.status_code == 201, created.text
    client = sdk(api, created.json()["key"])
    model, messages = test_models["anthropic"], [{"role": "user", "content": "Hi"}]
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        client.messages.create(model=model, max_tokens=10, messages=messages)  # type: ignore[arg-type]
    with pytest.raises(anthropic.PermissionDeniedError) as not_counted:
        client.messages.count_tokens(model=model, messages=messages)  # type: ignore[arg-type]
    for raised in (refused, not_counted):
        body: Any = raised.value.body
        assert body["error"]["type"] == "permission_error"
        assert body["error"]["code"] == "model_not_allowed"
    assert generations(api, user) == []
