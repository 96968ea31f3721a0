"""Issue 15, embeddings: `POST /v1/embeddings` end to end, through the official `openai` SDK and
LangChain's `OpenAIEmbeddings`, on an OpenAI-compatible and a Gemini model.

Each request is admitted, settled once and listed in `/v1/generations` with ``endpoint:
"embeddings"``; its charge is the upstream's input count at the model's input price (Gemini
counts nothing: the gateway's calibrated estimate, flagged ``estimated``). What the fake upstream
received is checked against the vendor SDKs' own request types, and every refusal is a 4xx with
a stable code that charges nothing.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from conftest import TEST_EMBEDDING_MODELS, TEST_MODELS, User
from google.genai import types as genai_types
from pydantic import TypeAdapter
from support import balance
from tollgate_core import estimate_embedding_tokens
from tollgate_core.fake_upstream import FakeUpstream, fake_vector

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

PROVIDERS = ["openai", "gemini"]
TEXTS = ["hello embedding world", "a second text to embed"]


def sdk(api: httpx.Client, key: str) -> openai.OpenAI:
    base = str(api.base_url).rstrip("/")
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=30)


def generations(api: httpx.Client, user: User) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = api.get("/v1/generations", headers=user.headers).json()["data"]
    return data


def fake_input_tokens(texts: list[str]) -> int:
    """What the fake's OpenAI endpoint reports: words + 2 per input."""
    return sum(len(text.split()) + 2 for text in texts)


def check_recorded_body(provider: str, body: dict[str, Any], texts: list[str]) -> None:
    """What the upstream received is a request the vendor's own SDK types accept."""
    if provider == "openai":
        checked = TypeAdapter(openai.types.EmbeddingCreateParams).validate_python(body)
        assert checked["input"] == texts
        assert checked["model"] == "openai-embed-upstream"
        return
    assert [r["model"] for r in body["requests"]] == ["models/gemini-embed-upstream"] * len(texts)
    for request, text in zip(body["requests"], texts, strict=True):
        content = genai_types.Content.model_validate(request["content"])
        assert content.parts is not None and content.parts[0].text == text
        config = {k: v for k, v in request.items() if k not in ("model", "content")}
        genai_types.EmbedContentConfig.model_validate(config)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_sdk_float_vectors_charged_at_usage_times_price(
    provider: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    upstream: FakeUpstream,
    test_models: dict[str, str],
) -> None:
    model = TEST_EMBEDDING_MODELS[provider]
    user = make_user("1000")
    before = balance(api, user)
    upstream.clear()
    result = sdk(api, user.token).embeddings.create(
        model=model, input=TEXTS, encoding_format="float"
    )
    assert [d.index for d in result.data] == [0, 1]
    assert [d.embedding for d in result.data] == [fake_vector(t) for t in TEXTS]
    assert result.model == model
    check_recorded_body(provider, upstream.last_record.body, TEXTS)
    expected = fake_input_tokens(TEXTS) if provider == "openai" else estimate_embedding_tokens(TEXTS)
    assert result.usage.prompt_tokens == expected
    # 1 credit an input token.
    assert before - balance(api, user) == Decimal(expected)
    [generation] = generations(api, user)
    assert generation["endpoint"] == "embeddings"
    assert generation["status"] == "completed"
    assert generation["input_tokens"] == expected
    assert generation["output_tokens"] == 0
    assert generation["estimated"] is (provider == "gemini")
    assert Decimal(generation["cost"]) == Decimal(expected)
