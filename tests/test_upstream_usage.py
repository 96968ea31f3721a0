"""Usage from an upstream is untrusted input: a count out of range is replaced by the gateway's
own, flagged on the generation and logged, and no generation ever raises a balance (see
`tollgate_core.metering`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from conftest import User

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

PROVIDERS = ["openai", "gemini", "anthropic"]


def _ask(api: httpx.Client, user: User, model: str, content: str, **extra: Any) -> httpx.Response:
    return api.post(
        "/v1/chat/completions",
        headers=user.headers,
        json={"model": model, "messages": [{"role": "user", "content": content}], **extra},
    )


def _generation(api: httpx.Client, user: User) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        data = api.get("/v1/generations", headers=user.headers).json()["data"]
        if data and data[0]["status"] != "running":
            return data[0]  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError("the generation was not settled")


def _balance(api: httpx.Client, user: User) -> dict[str, str]:
    return api.get("/v1/balance", headers=user.headers).json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("stream", [False, True])
def test_a_negative_prompt_count_never_raises_the_balance(
    provider: str,
    stream: bool,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    user = make_user(credits=100)
    response = _ask(
        api,
        user,
        test_models[provider],
        "hi [[fake:usage_input=-1000000]]",
        stream=stream,
        max_tokens=5,
    )
    assert response.status_code == 200
    generation = _generation(api, user)
    assert generation["status"] == "completed"
    assert generation["usage_replaced"] == ["input_tokens"]
    assert generation["estimated"] is True
    assert 0 < generation["input_tokens"] < 100
    # Charged the gateway's count of the prompt (1 credit a token) and the 5 output tokens the
    # upstream reported (2 credits a token): a charge, never a credit.
    cost = Decimal(generation["cost"])
    assert cost == min(Decimal(generation["hold"]), generation["input_tokens"] + 2 * 5)
    assert _balance(api, user) == {
        "balance": str(100 - cost),
        "held": "0",
        "available": str(100 - cost),
    }
    assert any("out of range (input_tokens)" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_absurd_prompt_count_is_settled_at_once_not_released_free(
    provider: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    user = make_user(credits=100)
    response = _ask(api, user, test_models[provider], "hi [[fake:usage_input=1e23]]", max_tokens=5)
    assert response.status_code == 200
    generation = _generation(api, user)
    assert generation["status"] == "completed"
    assert generation["usage_replaced"] == ["input_tokens"]
    cost = Decimal(generation["cost"])
    # The gateway's count of this punctuated prompt may pass the hold's: capped at the hold.
    assert cost == min(Decimal(generation["hold"]), generation["input_tokens"] + 2 * 5)
    assert _balance(api, user)["balance"] == str(100 - cost)
    assert _balance(api, user)["held"] == "0"


def test_an_output_count_beyond_max_tokens_is_replaced_by_the_deltas(
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    user = make_user(credits=1000)
    response = _ask(
        api, user, test_models["openai"], "hi [[fake:chunks=3,usage_output=999]]", max_tokens=10
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "tok0 tok1 tok2"
    generation = _generation(api, user)
    assert generation["usage_replaced"] == ["output_tokens"]
    # Counted from the three deltas the upstream sent ("tok", "0"... two tokens a word), far
    # below its claim of 999.
    assert 3 <= generation["output_tokens"] <= 6
    assert (
        Decimal(generation["cost"]) == generation["input_tokens"] + 2 * generation["output_tokens"]
    )
