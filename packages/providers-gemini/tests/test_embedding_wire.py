"""tollgate_gemini.embedding_wire and `GeminiProvider.embed`: ``batchEmbedContents`` bodies and
answers as pure functions, then the call over real HTTP to the fake upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from google.genai import types as genai_types
from tollgate_core import (
    EmbeddingRequest,
    ProviderConfig,
    UpstreamAuthenticationError,
    UpstreamBadRequest,
    UpstreamUnavailable,
    estimate_embedding_tokens,
)
from tollgate_core.fake_upstream import FakeUpstream, fake_vector
from tollgate_gemini import GeminiProvider
from tollgate_gemini.embedding_wire import build_embedding_body, parse_embeddings

KEY = "AIzaEmbeddingTest0123456789abcdef"
REQUEST = EmbeddingRequest(model="models/gemini-embedding-001", inputs=("a b", "c"), dimensions=2)


def test_body_names_the_model_per_request_and_the_dimensions() -> None:
    body = build_embedding_body(REQUEST)
    assert [r["model"] for r in body["requests"]] == ["models/gemini-embedding-001"] * 2
    for request, text in zip(body["requests"], REQUEST.inputs, strict=True):
        content = genai_types.Content.model_validate(request["content"])
        assert content.parts is not None and content.parts[0].text == text
        assert request["outputDimensionality"] == 2


def test_token_ids_are_refused() -> None:
    with pytest.raises(UpstreamBadRequest):
        build_embedding_body(EmbeddingRequest(model="m", inputs=((1, 2),)))


def test_the_usage_is_the_flagged_estimate() -> None:
    data = orjson.dumps({"embeddings": [{"values": [1.0, 2.0]}, {"values": [3, 4]}]})
    result = parse_embeddings(data, REQUEST)
    assert result.vectors == ((1.0, 2.0), (3.0, 4.0))
    assert result.usage.estimated
    assert result.usage.input_tokens == estimate_embedding_tokens(REQUEST.inputs)


@pytest.mark.parametrize(
    "data",
    [
        b'{"embeddings": [{"values": [1, 2]}]}',
        b'{"embeddings": [{"values": [1, 2]}, {"values": [1, 2, 3]}]}',
        b'{"embeddings": [{"values": [1, 2]}, {}]}',
        b'{"embeddings": [{"values": [1, 2]}, "x"]}',
        b"{}",
        b"oops",
    ],
)
def test_a_malformed_answer_is_an_upstream_failure(data: bytes) -> None:
    with pytest.raises(UpstreamUnavailable):
        parse_embeddings(data, REQUEST)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def provider() -> AsyncIterator[tuple[GeminiProvider, FakeUpstream]]:
    async with FakeUpstream() as upstream, aiohttp.ClientSession() as http:
        config = ProviderConfig(name="gemini", base_url=upstream.url, api_key=KEY)
        yield GeminiProvider(config=config, http=http), upstream


@pytest.mark.anyio
async def test_embed_calls_batch_embed_contents_with_the_key_in_a_header(
    provider: tuple[GeminiProvider, FakeUpstream],
) -> None:
    gemini, upstream = provider
    result = await gemini.embed(REQUEST)
    record = upstream.last_record
    assert record.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert record.api_key == KEY and KEY not in record.url
    assert result.vectors == tuple(tuple(fake_vector(t, 2)) for t in REQUEST.inputs)
    assert result.usage.estimated


@pytest.mark.anyio
async def test_a_refused_key_is_an_authentication_error_without_the_key(
    provider: tuple[GeminiProvider, FakeUpstream],
) -> None:
    gemini, _ = provider
    with pytest.raises(UpstreamAuthenticationError) as caught:
        await gemini.embed(EmbeddingRequest(model="m", inputs=("[[fake:status=401]]",)))
    assert KEY not in str(caught.value)
