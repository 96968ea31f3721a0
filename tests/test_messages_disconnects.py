"""Clients of `/v1/messages` that hang up, over real sockets, and upstreams that fail mid-stream:
the same policy as chat completions (see `tollgate_server.services.gateway`). The upstream is
stopped at once, and the client pays for the prompt and the deltas it was sent, nothing more.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import orjson
import pytest
from conftest import User
from support import record_for, settled_generation
from tollgate_core.fake_upstream import FakeUpstream

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

PROVIDERS = ["openai", "gemini", "anthropic"]


def _balance(api: httpx.Client, user: User) -> dict[str, str]:
    return api.get("/v1/balance", headers=user.headers).json()  # type: ignore[no-any-return]


def _key(api: httpx.Client, user: User) -> str:
    created = api.post("/v1/keys", json={"name": "disconnects"}, headers=user.headers)
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


@pytest.mark.parametrize("provider", PROVIDERS)
def test_hang_up_after_a_few_text_deltas(
    provider: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    user = make_user(credits=1000)
    marker = uuid.uuid4().hex
    body = {
        "model": test_models[provider],
        "stream": True,
        "max_tokens": 200,
        "messages": [{"role": "user", "content": f"{marker} [[fake:chunks=100,delay_ms=50]]"}],
    }
    headers = {"x-api-key": _key(api, user), "anthropic-version": "2023-06-01"}
    with (
        httpx.Client(base_url=api.base_url, timeout=30) as client,
        client.stream("POST", "/v1/messages", json=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        deltas = 0
        for line in response.iter_lines():
            if '"type":"text_delta"' in line:
                deltas += 1
                if deltas == 3:
                    break
    record = record_for(upstream, marker)
    assert record.wait_disconnected(2.0), "the upstream connection was not closed"
    generation = settled_generation(api, user)
    assert generation["status"] == "client_disconnected"
    assert generation["estimated"] is True
    out = int(generation["output_tokens"])
    assert 3 <= out < 100
    # The prompt at 1 credit plus the deltas received at 2 credits, nothing more.
    expected = int(generation["input_tokens"]) + 2 * out
    assert Decimal(str(generation["cost"])) == expected
    assert _balance(api, user) == {
        "balance": str(1000 - expected),
        "held": "0",
        "available": str(1000 - expected),
    }


def test_hang_up_in_the_middle_of_a_tool_call(
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    """The pieces of a tool call's input count as output, as text does."""
    user = make_user(credits=1000)
    marker = uuid.uuid4().hex
    body = {
        "model": test_models["anthropic"],
        "stream": True,
        "max_tokens": 200,
        "tools": [
            {
                "name": "get_weather",
                "input_schema": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "note": {"type": "string"}},
                    "required": ["city", "note"],
                },
            }
        ],
        "messages": [
            {"role": "user", "content": f"{marker} [[fake:tool=get_weather,delay_ms=300]]"}
        ],
    }
    headers = {"x-api-key": _key(api, user)}
    with (
        httpx.Client(base_url=api.base_url, timeout=30) as client,
        client.stream("POST", "/v1/messages", json=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if '"type":"input_json_delta"' in line:
                break
    record = record_for(upstream, marker)
    assert record.wait_disconnected(2.0)
    assert not record.completed
    generation = settled_generation(api, user)
    assert generation["status"] == "client_disconnected"
    assert int(generation["output_tokens"]) >= 1
    expected = int(generation["input_tokens"]) + 2 * int(generation["output_tokens"])
    assert Decimal(str(generation["cost"])) == expected


def test_hang_up_before_the_first_byte_charges_nothing(
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    user = make_user(credits=1000)
    marker = uuid.uuid4().hex
    body = orjson.dumps(
        {
            "model": test_models["gemini"],
            "max_tokens": 100,
            "stream": True,
            "messages": [{"role": "user", "content": f"{marker} [[fake:stall_first_s=20]]"}],
        }
    )
    host, port = str(api.base_url.host), int(api.base_url.port or 80)
    with socket.create_connection((host, port)) as sock:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"x-api-key: {_key(api, user)}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        record = record_for(upstream, marker)
    assert record.wait_disconnected(2.0)
    generation = settled_generation(api, user)
    assert generation["status"] == "client_disconnected"
    assert generation["cost"] == "0"
    assert _balance(api, user) == {"balance": "1000", "held": "0", "available": "1000"}


def test_non_streaming_client_hang_up_stops_the_upstream(
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    user = make_user(credits=1000)
    marker = uuid.uuid4().hex
    with (
        pytest.raises(httpx.ReadTimeout),
        httpx.Client(base_url=api.base_url, timeout=0.5) as client,
    ):
        client.post(
            "/v1/messages",
            headers={"x-api-key": _key(api, user)},
            json={
                "model": test_models["openai"],
                "max_tokens": 100,
                "messages": [{"role": "user", "content": f"{marker} [[fake:stall_first_s=20]]"}],
            },
        )
    record = record_for(upstream, marker)
    assert record.wait_disconnected(2.0)
    generation = settled_generation(api, user)
    assert generation["status"] == "client_disconnected" and generation["cost"] == "0"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_upstream_failing_mid_stream_is_an_error_event(
    provider: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    user = make_user(credits=1000)
    client = anthropic.Anthropic(
        base_url=str(api.base_url).rstrip("/"), api_key=_key(api, user), max_retries=0
    )
    texts: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as raised,
        client.messages.stream(
            model=test_models[provider],
            max_tokens=100,
            messages=[{"role": "user", "content": "Hi [[fake:chunks=10,error_after=3]]"}],
        ) as stream,
    ):
        texts.extend(stream.text_stream)
    assert "".join(texts) == "tok0 tok1 tok2"
    body: Any = raised.value.body
    assert body["type"] == "error"
    assert body["error"]["type"] == "api_error"
    assert body["error"]["code"] == "upstream_error"
    generation = settled_generation(api, user)
    assert generation["status"] == "upstream_error"
    # The prompt and the three deltas sent.
    expected = int(generation["input_tokens"]) + 2 * int(generation["output_tokens"])
    assert 3 <= int(generation["output_tokens"]) <= 6
    assert Decimal(str(generation["cost"])) == expected


def test_hang_up_while_the_model_thinks_pays_for_the_thinking_received(
    api: httpx.Client,
    admin_headers: dict[str, str],
    make_user: Callable[..., User],
    upstream: FakeUpstream,
) -> None:
    """Anthropic's format carries thinking: what of it was sent is output the client got."""
    created = api.post(
        "/v1/admin/models",
        json={
            "name": "thinking-disconnects",
            "provider": "anthropic",
            "upstream_model": "anthropic-upstream",
            "context_window": 40000,
            "max_output_tokens": 8000,
            "input_price": "1000000",
            "output_price": "2000000",
        },
        headers=admin_headers,
    )
    assert created.status_code in (201, 409), created.text
    user = make_user(credits=100_000)
    marker = uuid.uuid4().hex
    body = {
        "model": "thinking-disconnects",
        "stream": True,
        "max_tokens": 4000,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "messages": [
            {"role": "user", "content": f"{marker} [[fake:thinking=100,chunks=5,delay_ms=50]]"}
        ],
    }
    with (
        httpx.Client(base_url=api.base_url, timeout=30) as client,
        client.stream(
            "POST", "/v1/messages", json=body, headers={"x-api-key": _key(api, user)}
        ) as response,
    ):
        assert response.status_code == 200
        thoughts = 0
        for line in response.iter_lines():
            if '"type":"thinking_delta"' in line:
                thoughts += 1
                if thoughts == 4:
                    break
    record = record_for(upstream, marker)
    assert record.wait_disconnected(2.0), "the upstream connection was not closed"
    generation = settled_generation(api, user)
    assert generation["status"] == "client_disconnected"
    out = int(generation["output_tokens"])
    # Four pieces of thinking ("think0" may count as two tokens), not the hundred produced.
    assert 4 <= out < 20
    expected = int(generation["input_tokens"]) + 2 * out
    assert Decimal(str(generation["cost"])) == expected
