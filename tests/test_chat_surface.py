"""Issue 14 end to end: the whole Chat Completions request through the official `openai` SDK.

Tool calls (a round trip, streaming and not), structured outputs parsed into a pydantic model,
images, and a walk over every parameter of the request schema: each is carried out by the
model's provider or refused with 422 ``unsupported_parameter`` before any hold, never a 500.
The fake upstream records what each upstream was sent.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import openai
import pytest
from conftest import User
from google.genai import types as genai_types
from pydantic import BaseModel, TypeAdapter
from support import balance, openai_client
from tollgate_core.fake_upstream import FakeUpstream
from tollgate_server.openai_format import ChatCompletionCreate

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

PROVIDERS = ["openai", "gemini", "anthropic"]
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
# A 1x1 transparent PNG.
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()


def generations(api: httpx.Client, user: User) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = api.get("/v1/generations", headers=user.headers).json()["data"]
    return data


def priced(usage: Any) -> Decimal:
    # The test models cost 1 credit an input token and 2 an output token, and have no cached
    # input price: cached tokens cost the input price.
    return Decimal(usage.prompt_tokens) + 2 * Decimal(usage.completion_tokens)


def call_weather(
    client: openai.OpenAI, model: str, messages: list[Any], *, stream: bool
) -> tuple[str | None, list[Any], str, Any, list[Any]]:
    """Content, tool calls, finish reason, usage and (streaming) the tool-call deltas seen."""
    if not stream:
        completion = client.chat.completions.create(
            model=model, messages=messages, tools=[WEATHER_TOOL]
        )
        message = completion.choices[0].message
        return (
            message.content,
            list(message.tool_calls or []),
            completion.choices[0].finish_reason,
            completion.usage,
            [],
        )
    chunks = client.chat.completions.create(
        model=model,
        messages=messages,
        tools=[WEATHER_TOOL],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, deltas, finish, usage = [], [], "", None
    for chunk in chunks:
        if chunk.choices:
            delta = chunk.choices[0].delta
            text.append(delta.content or "")
            deltas.extend(delta.tool_calls or [])
            finish = chunk.choices[0].finish_reason or finish
        usage = chunk.usage or usage
    calls: dict[int, dict[str, str]] = {}
    for piece in deltas:
        call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
        call["id"] += piece.id or ""
        call["name"] += (piece.function.name if piece.function else None) or ""
        call["arguments"] += (piece.function.arguments if piece.function else None) or ""
    whole = [
        openai.types.chat.ChatCompletionMessageFunctionToolCall.model_validate(
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
        )
        for _, c in sorted(calls.items())
    ]
    return "".join(text) or None, whole, finish, usage, deltas


def check_gemini_body(body: dict[str, Any]) -> None:
    """The recorded body is a request google-genai's own types accept (camelCase aliases)."""
    for content in body["contents"]:
        genai_types.Content.model_validate(content)
    for tool in body.get("tools") or ():
        genai_types.Tool.model_validate(tool)
    if "toolConfig" in body:
        genai_types.ToolConfig.model_validate(body["toolConfig"])
    config = {k: v for k, v in body["generationConfig"].items()}
    genai_types.GenerateContentConfig.model_validate(config)


def check_anthropic_body(body: dict[str, Any]) -> None:
    """The recorded body is a request Anthropic's own SDK types accept."""
    adapter = TypeAdapter(anthropic.types.MessageCreateParams)
    checked = adapter.validate_python(body)
    for message in checked["messages"]:
        # Iterables validate lazily: walk them.
        if not isinstance(message["content"], str):
            list(message["content"])


TOOL_PROVIDERS = ["openai", "anthropic", "gemini"]


@pytest.mark.parametrize("provider", TOOL_PROVIDERS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_tool_call_round_trip_is_charged_from_the_upstreams_usage(
    provider: str,
    stream: bool,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    user = make_user(credits=1000)
    client = openai_client(api, user.token)
    model = test_models[provider]
    messages: list[Any] = [
        {"role": "system", "content": "You answer with tools."},
        {"role": "user", "content": "Weather in Paris? [[fake:tool=get_weather,cached=3]]"},
    ]
    content, calls, finish, usage, deltas = call_weather(client, model, messages, stream=stream)
    assert finish == "tool_calls"
    assert content is None
    assert len(calls) == 1
    call = calls[0]
    assert call.id.startswith("call_fake") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "tok"}
    if stream:
        # As OpenAI streams a call: index, id and name first, then argument fragments.
        assert deltas[0].index == 0 and deltas[0].id == call.id
        assert deltas[0].function.name == "get_weather"
        fragments = [d.function.arguments for d in deltas if d.function.arguments]
        assert all(d.id is None for d in deltas[1:])
        # Pieces as they came: OpenAI and Anthropic stream the arguments, Gemini sends them
        # whole, in the first delta.
        assert len(fragments) > 1 if provider != "gemini" else len(deltas) == 1
    sent = upstream.last_record.body
    if provider == "openai":
        assert sent["tools"] == [WEATHER_TOOL]
    elif provider == "gemini":
        function = WEATHER_TOOL["function"]
        declaration = {
            "name": "get_weather",
            "description": function["description"],
            "parametersJsonSchema": function["parameters"],
        }
        assert sent["tools"] == [{"functionDeclarations": [declaration]}]
        check_gemini_body(sent)
    else:
        function = WEATHER_TOOL["function"]
        assert sent["tools"] == [
            {
                "name": "get_weather",
                "input_schema": function["parameters"],
                "description": function["description"],
                "strict": True,
            }
        ]
        check_anthropic_body(sent)
    assert usage is not None and usage.prompt_tokens_details.cached_tokens == 3
    cost = Decimal(usage.model_extra["cost"])
    assert cost == priced(usage) > 0
    assert balance(api, user) == 1000 - cost

    # The tool's result goes back; the model answers in text.
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 21}'},
    ]
    content, calls, finish, usage, _ = call_weather(client, model, messages, stream=stream)
    assert (content, calls, finish) == ("tok0 tok1 tok2 tok3 tok4", [], "stop")
    sent = upstream.last_record.body
    if provider == "openai":
        assert sent["messages"][2:] == messages[2:]
    elif provider == "gemini":
        assert sent["contents"][1:] == [
            {
                "role": "model",
                "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "tok"}}}],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"celsius": 21}}}
                ],
            },
        ]
        check_gemini_body(sent)
    else:
        use = {"type": "tool_use", "id": call.id, "name": "get_weather", "input": {"city": "tok"}}
        result = {"type": "tool_result", "tool_use_id": call.id, "content": '{"celsius": 21}'}
        assert sent["messages"][1:] == [
            {"role": "assistant", "content": [use]},
            {"role": "user", "content": [result]},
        ]
        check_anthropic_body(sent)
    second = Decimal(usage.model_extra["cost"])
    assert second == priced(usage)
    assert balance(api, user) == 1000 - cost - second


class Weather(BaseModel):
    city: str
    celsius: int
    sunny: bool


@pytest.mark.parametrize("provider", TOOL_PROVIDERS)
def test_parse_returns_the_pydantic_object(
    provider: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    user = make_user(credits=1000)
    completion = openai_client(api, user.token).chat.completions.parse(
        model=test_models[provider],
        messages=[{"role": "user", "content": "Weather in Paris as JSON"}],
        response_format=Weather,
    )
    assert completion.choices[0].message.parsed == Weather(city="tok", celsius=1, sunny=True)
    body = upstream.last_record.body
    if provider == "openai":
        sent = body["response_format"]
        assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Weather"
        assert sent["json_schema"]["strict"] is True
        schema = sent["json_schema"]["schema"]
    elif provider == "gemini":
        config = body["generationConfig"]
        assert config["responseMimeType"] == "application/json"
        schema = config["responseJsonSchema"]
        check_gemini_body(body)
    else:
        # Anthropic's structured outputs: output_config.format.
        sent = body["output_config"]["format"]
        assert sent["type"] == "json_schema"
        schema = sent["schema"]
        check_anthropic_body(body)
    assert schema["required"] == ["city", "celsius", "sunny"]


@pytest.mark.parametrize("provider", TOOL_PROVIDERS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_an_image_as_a_data_url_reaches_the_upstream_and_is_held_for(
    provider: str,
    stream: bool,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    user = make_user(credits=5000)
    url = f"data:image/png;base64,{PNG}"
    content: Any = [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
    ]
    client = openai_client(api, user.token)
    messages: Any = [{"role": "user", "content": content}]
    if stream:
        text = "".join(
            chunk.choices[0].delta.content or ""
            for chunk in client.chat.completions.create(
                model=test_models[provider], messages=messages, stream=True
            )
            if chunk.choices
        )
    else:
        completion = client.chat.completions.create(model=test_models[provider], messages=messages)
        text = completion.choices[0].message.content or ""
    assert text == "tok0 tok1 tok2 tok3 tok4"
    body = upstream.last_record.body
    if provider == "openai":
        assert body["messages"][0]["content"] == content
    elif provider == "gemini":
        assert body["contents"][0]["parts"] == [
            {"text": "What is in this image?"},
            {"inlineData": {"mimeType": "image/png", "data": PNG}},
        ]
        check_gemini_body(body)
    else:
        source = {"type": "base64", "media_type": "image/png", "data": PNG}
        assert body["messages"][0]["content"] == [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image", "source": source},
        ]
        check_anthropic_body(body)
    # The hold counted the image at the vendor's largest image cost (OpenAI 1445 tokens,
    # Anthropic 1600, Gemini 1290, at 1 credit).
    client.chat.completions.create(
        model=test_models[provider],
        messages=[{"role": "user", "content": content[:1]}],
        max_tokens=1,
    )
    client.chat.completions.create(model=test_models[provider], messages=messages, max_tokens=1)
    holds = [
        Decimal(generation["hold"])
        for generation in api.get("/v1/generations", headers=user.headers).json()["data"]
    ]
    with_image, text_only = holds[0], holds[1]  # newest first
    assert with_image - text_only >= 1290


# One value for every parameter of the request schema beyond the model and the messages.
SAMPLES: dict[str, Any] = {
    "max_tokens": 5,
    "max_completion_tokens": 5,
    "temperature": 0.5,
    "top_p": 0.5,
    "stop": ["zzz"],
    "stream": True,
    "stream_options": {"include_usage": True},
    "user": "walker",
    "tools": [WEATHER_TOOL],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "response_format": {"type": "json_object"},
    "reasoning_effort": "low",
    "n": 2,
    "seed": 7,
    "presence_penalty": 0.5,
    "frequency_penalty": 0.5,
    "logit_bias": {"50256": -100},
    "logprobs": True,
    "top_logprobs": 2,
    "metadata": {"team": "walk"},
    "service_tier": "auto",
    "store": False,
    "verbosity": "low",
    "prompt_cache_key": "walk",
    "prompt_cache_retention": "in_memory",
    "safety_identifier": "walker",
    "prediction": {"type": "content", "content": "tok0"},
    "audio": {"voice": "alloy", "format": "mp3"},
    "modalities": ["text", "audio"],
    "functions": [{"name": "f", "parameters": {"type": "object"}}],
    "function_call": "auto",
    "web_search_options": {"search_context_size": "low"},
    "moderation": {"model": "omni-moderation-latest"},
    "prompt_cache_options": {"mode": "implicit"},
}


# What a parameter needs beside it to mean anything (OpenAI refuses it alone).
COMPANIONS: dict[str, dict[str, Any]] = {"top_logprobs": {"logprobs": True}}


def test_the_walk_covers_every_parameter_of_the_schema() -> None:
    fields = set(ChatCompletionCreate.model_fields) - {"model", "messages"}
    assert fields == set(SAMPLES)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_parameter_is_carried_out_or_refused_by_name(
    provider: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    user = make_user(credits=100_000)
    model = test_models[provider]
    outcomes: dict[str, int] = {}
    for name, value in SAMPLES.items():
        before = balance(api, user)
        count = len(generations(api, user))
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], name: value}
        body.update(COMPANIONS.get(name, {}))
        upstream.clear()
        response = api.post("/v1/chat/completions", json=body, headers=user.headers)
        outcomes[name] = response.status_code
        assert response.status_code in (200, 422), f"{name}: {response.text[:300]}"
        if response.status_code == 422:
            error = response.json()["error"]
            assert error["code"] == "unsupported_parameter", (name, error)
            # Named: the parameter, or the one it came with (top_logprobs needs logprobs).
            named = (name, *COMPANIONS.get(name, {}))
            assert any(n in error["message"] for n in named) and model in error["message"], error
            # Refused before any hold: nothing charged, no generation, no upstream call.
            assert balance(api, user) == before
            assert len(generations(api, user)) == count
            assert upstream.records == []
        else:
            record = upstream.last_record
            if provider == "openai" and name not in ("stream", "stream_options"):
                # Carried out: an OpenAI-compatible upstream gets the parameter as it came
                # (the gateway owns the stream and the token limit).
                if name not in ("max_tokens", "max_completion_tokens"):
                    assert record.body[name] == value, name
    # Every provider serves the plain parameters; the rest are the provider's to declare.
    for name in ("max_tokens", "temperature", "top_p", "stop", "stream", "user"):
        assert outcomes[name] == 200, (provider, name)
    assert outcomes["audio"] == 422
    # Several answers and log-probabilities where the vendor has them (not Anthropic).
    for name in ("n", "logprobs", "top_logprobs"):
        assert outcomes[name] == (422 if provider == "anthropic" else 200), (provider, name)
    if provider == "openai":
        for name in ("tools", "tool_choice", "response_format", "seed", "metadata"):
            assert outcomes[name] == 200, name


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_tool_message_answering_no_call_is_refused_before_any_hold(
    provider: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    user = make_user(credits=1000)
    upstream.clear()
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "tool", "tool_call_id": "call_1", "content": "21"},
    ]
    response = api.post(
        "/v1/chat/completions",
        json={"model": test_models[provider], "messages": messages},
        headers=user.headers,
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error" and "answers no earlier tool call" in str(error)
    assert upstream.records == [] and generations(api, user) == []


@pytest.mark.parametrize(
    ("message", "fragment"),
    [
        ({"role": "assistant", "content": None}, "content may be null"),
        ({"role": "tool", "content": "x"}, "tool_call_id"),
        ({"role": "user", "content": "x", "tool_call_id": "c"}, "tool_call_id"),
        (
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]},
            "https: URL",
        ),
        (
            {
                "role": "system",
                "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}],
            },
            "only user messages",
        ),
    ],
)
def test_malformed_messages_are_refused_with_a_clear_422(
    message: dict[str, Any],
    fragment: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    user = make_user(credits=1000)
    response = api.post(
        "/v1/chat/completions",
        json={"model": test_models["openai"], "messages": [message]},
        headers=user.headers,
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert fragment in json.dumps(error)
    assert balance(api, user) == 1000


@pytest.mark.parametrize("provider", TOOL_PROVIDERS)
def test_a_data_url_that_is_not_an_image_is_refused_before_any_hold(
    provider: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    user = make_user(credits=1000)
    upstream.clear()
    fake = base64.b64encode(b"#!/bin/sh\necho not an image\n").decode()
    part = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{fake}"}}
    response = api.post(
        "/v1/chat/completions",
        json={"model": test_models[provider], "messages": [{"role": "user", "content": [part]}]},
        headers=user.headers,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "image_not_an_image"
    assert upstream.records == [] and generations(api, user) == []
    assert balance(api, user) == 1000


def test_cached_input_tokens_cost_the_cached_input_price_when_the_model_has_one(
    api: httpx.Client,
    make_user: Callable[..., User],
    admin_headers: dict[str, str],
    test_models: dict[str, str],
) -> None:
    name = "fake-openai-cached"
    created = api.post(
        "/v1/admin/models",
        json={
            "name": name,
            "provider": "openai",
            "upstream_model": "openai-upstream",
            "context_window": 4000,
            "max_output_tokens": 1000,
            "default_max_tokens": 100,
            "input_price": "1000000",
            "output_price": "2000000",
            "cached_input_price": "250000",
        },
        headers=admin_headers,
    )
    assert created.status_code in (201, 409), created.text
    catalogue = api.get("/v1/admin/models", headers=admin_headers).json()
    shown = next(model for model in catalogue if model["name"] == name)
    assert shown["cached_input_price"] == "250000"
    user = make_user(credits=1000)
    cards = {m["id"]: m for m in api.get("/v1/models", headers=user.headers).json()["data"]}
    assert cards[name]["pricing"]["cached_input"] == "250000"
    assert cards[test_models["openai"]]["pricing"]["cached_input"] is None

    client = openai_client(api, user.token)
    messages: Any = [{"role": "user", "content": "Weather? [[fake:tool=get_weather,cached=3]]"}]
    completion = client.chat.completions.create(model=name, messages=messages, tools=[WEATHER_TOOL])
    assert completion.choices[0].finish_reason == "tool_calls"
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens_details is not None
    cached = usage.prompt_tokens_details.cached_tokens
    assert cached == 3
    # 1 credit an uncached input token, a quarter credit a cached one, 2 an output token;
    # rounded up once, to the micro-credit.
    expected = (
        Decimal(usage.prompt_tokens - cached)
        + Decimal(cached) / 4
        + 2 * Decimal(usage.completion_tokens)
    )
    assert Decimal(usage.model_extra["cost"]) == expected  # type: ignore[index]
    assert balance(api, user) == 1000 - expected

    # Sent as null, the cached price goes: cached tokens cost the input price again.
    changed = api.patch(
        f"/v1/admin/models/{name}", json={"cached_input_price": None}, headers=admin_headers
    )
    assert changed.status_code == 200 and changed.json()["cached_input_price"] is None


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://127.0.0.1/cat.png", "image_url_refused"),  # loopback
        ("https://169.254.169.254/latest/meta-data", "image_url_refused"),  # cloud metadata
    ],
)
def test_gemini_fetches_https_images_itself_and_refuses_private_ones_before_any_hold(
    url: str,
    code: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    """Gemini takes no image URL, so the gateway fetches it at planning: through the image
    fetcher's address checks, before any hold or upstream call."""
    user = make_user(credits=1000)
    upstream.clear()
    part = {"type": "image_url", "image_url": {"url": url}}
    response = api.post(
        "/v1/chat/completions",
        json={"model": test_models["gemini"], "messages": [{"role": "user", "content": [part]}]},
        headers=user.headers,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == code
    assert upstream.records == [] and generations(api, user) == []
    assert balance(api, user) == 1000
