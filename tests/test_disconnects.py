"""Clients that hang up, over real sockets: the upstream is stopped at once and the generation
is charged by the written policy (see `tollgate_server.services.gateway`)."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from conftest import User
from support import record_for, settled_generation
from tollgate_core.fake_upstream import FakeUpstream

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

PROVIDERS = ["openai", "gemini", "anthropic"]


def _admin_usage(api: httpx.Client, admin_headers: dict[str, str], user: User) -> dict[str, Any]:
    rows = api.get(f"/v1/admin/users/{user.id}/usage", headers=admin_headers).json()
    assert len(rows["data"]) == 1
    return rows["data"][0]  # type: ignore[no-any-return]


def _balance(api: httpx.Client, user: User) -> dict[str, str]:
    return api.get("/v1/balance", headers=user.headers).json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_hang_up_after_a_few_chunks(
    provider: str,
    api: httpx.Client,
    server: object,
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
    with (
        httpx.Client(base_url=api.base_url, timeout=30) as client,
        client.stream("POST", "/v1/chat/completions", json=body, headers=user.headers) as response,
    ):
        assert response.status_code == 200
        deltas = 0
        for line in response.iter_lines():
            if '"delta":{"content":' in line:
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
    # Prompt estimate at 1 credit plus the deltas received at 2 credits, nothing more.
    expected = int(generation["input_tokens"]) + 2 * out
    assert Decimal(str(generation["cost"])) == expected
    assert _balance(api, user) == {
        "balance": str(1000 - expected),
        "held": "0",
        "available": str(1000 - expected),
    }


def test_hang_up_just_before_the_final_usage_chunk(
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    user = make_user(credits=1000)
    marker = uuid.uuid4().hex
    # All three chunks arrive, then the upstream goes quiet before its usage and end.
    body = {
        "model": test_models["openai"],
        "stream": True,
        "messages": [
            {"role": "user", "content": f"{marker} [[fake:chunks=3,stall_after=3,stall_s=20]]"}
        ],
    }
    with (
        httpx.Client(base_url=api.base_url, timeout=30) as client,
        client.stream("POST", "/v1/chat/completions", json=body, headers=user.headers) as response,
    ):
        deltas = 0
        for line in response.iter_lines():
            if '"delta":{"content":' in line:
                deltas += 1
                if deltas == 3:
                    break
    record = record_for(upstream, marker)
    assert record.wait_disconnected(2.0)
    generation = settled_generation(api, user)
    assert generation["status"] == "client_disconnected"
    # Counted from the three deltas ("tok0" is two tokens, "tok" and "0", to a real tokenizer).
    assert 3 <= int(generation["output_tokens"]) <= 6
    assert generation["estimated"] is True


def test_hang_up_before_the_first_byte(
    api: httpx.Client,
    server: object,
    admin_headers: dict[str, str],
    make_user: Callable[..., User],
    test_models: dict[str, str],
    upstream: FakeUpstream,
) -> None:
    user = make_user(credits=1000)
    marker = uuid.uuid4().hex
    body = orjson.dumps(
        {
            "model": test_models["openai"],
            "stream": True,
            "messages": [{"role": "user", "content": f"{marker} [[fake:stall_first_s=20]]"}],
        }
    )
    host, port = str(api.base_url.host), int(api.base_url.port or 80)
    with socket.create_connection((host, port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {user.token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        record = record_for(upstream, marker)
    # The socket is closed without a byte of the answer read.
    assert record.wait_disconnected(2.0)
    generation = settled_generation(api, user)
    assert generation["status"] == "client_disconnected"
    # A client pays for what it received: nothing. The upstream had the prompt, so what it may
    # bill the operator for is recorded as unbilled, for reconciliation.
    assert generation["cost"] == "0" and generation["input_tokens"] is None
    assert _balance(api, user) == {"balance": "1000", "held": "0", "available": "1000"}
    usage = _admin_usage(api, admin_headers, user)
    assert usage["unbilled_input_tokens"] > 0 and usage["cost"] == "0"


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
            "/v1/chat/completions",
            headers=user.headers,
            json={
                "model": test_models["anthropic"],
                "messages": [{"role": "user", "content": f"{marker} [[fake:stall_first_s=20]]"}],
            },
        )
    record = record_for(upstream, marker)
    assert record.wait_disconnected(2.0)
    assert settled_generation(api, user)["status"] == "client_disconnected"


def test_send_and_close_before_the_upstream_call_charges_nothing(
    api: httpx.Client,
    server: object,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    """A raw socket that sends a whole request and closes at once: the gateway admits it, and
    the hang-up cancels the generation around the upstream call. The client received nothing,
    so it pays nothing (the prompt estimate was charged 10 times out of 10)."""
    user = make_user(credits=1000)
    host, port = str(api.base_url.host), int(api.base_url.port or 80)
    tries = 5
    for _ in range(tries):
        body = orjson.dumps(
            {
                "model": test_models["openai"],
                "stream": True,
                "messages": [{"role": "user", "content": "hello [[fake:stall_first_s=5]]"}],
            }
        )
        with socket.create_connection((host, port)) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\n"
                + f"Authorization: Bearer {user.token}\r\n".encode()
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        data = api.get("/v1/generations", headers=user.headers).json()["data"]
        if len(data) == tries and all(g["status"] != "running" for g in data):
            break
        time.sleep(0.05)
    assert len(data) == tries
    assert {(g["status"], g["cost"]) for g in data} == {("client_disconnected", "0")}
    assert _balance(api, user) == {"balance": "1000", "held": "0", "available": "1000"}


@pytest.mark.parametrize("stream", [False, True])
def test_a_half_closed_client_is_answered_and_charged_for_its_answer(
    stream: bool,
    api: httpx.Client,
    server: object,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    """A client that shuts its sending side after a complete request still waits for the
    answer: it gets one (after an interim 100 Continue), where it once got nothing."""
    user = make_user(credits=1000)
    body = orjson.dumps(
        {
            "model": test_models["openai"],
            "stream": stream,
            "messages": [{"role": "user", "content": "hello [[fake:chunks=3]]"}],
        }
    )
    host, port = str(api.base_url.host), int(api.base_url.port or 80)
    with socket.create_connection((host, port)) as sock:
        sock.settimeout(10)
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\n"
            + f"Authorization: Bearer {user.token}\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), answer[:200]
    assert b"tok0" in answer and b"tok2" in answer
    generation = settled_generation(api, user)
    assert generation["status"] == "completed"
    assert Decimal(str(generation["cost"])) > 0
