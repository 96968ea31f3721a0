"""tollgate_openai.embedding_wire and `OpenAIProvider.embed`: bodies, answers and their edge
cases as pure functions, then the call over real HTTP to the fake upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import openai
import orjson
import pytest
from pydantic import TypeAdapter
from tollgate_core import (
    EmbeddingRequest,
    ProviderConfig,
    UpstreamAuthenticationError,
    UpstreamBadRequest,
    UpstreamRateLimited,
    UpstreamUnavailable,
    Usage,
)
from tollgate_core.fake_upstream import FakeUpstream, fake_vector
from tollgate_openai import OpenAIProvider
from tollgate_openai.embedding_wire import build_embedding_body, parse_embeddings

KEY = "sk-embedding-test-0123456789abcdef"
REQUEST = EmbeddingRequest(model="text-embedding-3-small", inputs=("a b", "c"), user="u-1")


def answer(*entries: object, usage: object = None) -> bytes:
    body: dict[str, object] = {"object": "list", "data": list(entries), "model": "m"}
    if usage is not None:
        body["usage"] = usage
    return orjson.dumps(body)


def test_body_is_an_sdk_request_and_asks_for_floats() -> None:
    body = build_embedding_body(EmbeddingRequest(model="m", inputs=((1, 2), (3,)), dimensions=8))
    # The SDK's type takes input as a lazily validated Iterable (whose union cannot tell token
    # lists apart): the input is compared as sent, the rest validated.
    checked = TypeAdapter(openai.types.EmbeddingCreateParams).validate_python(
        {**body, "input": ["x"]}
    )
    assert body["input"] == [[1, 2], [3]]
    assert (checked["encoding_format"], checked["dimensions"]) == ("float", 8)
    assert "user" not in body
    assert build_embedding_body(REQUEST)["user"] == "u-1"


def test_vectors_come_back_in_the_inputs_order_whatever_the_answers() -> None:
    data = answer(
        {"object": "embedding", "index": 1, "embedding": [3, 4.5]},
        {"object": "embedding", "index": 0, "embedding": [1.0, 2.0]},
        usage={"prompt_tokens": 3, "total_tokens": 3},
    )
    result = parse_embeddings(data, REQUEST)
    assert result.vectors == ((1.0, 2.0), (3.0, 4.5))
    assert result.usage == Usage(input_tokens=3)


def test_no_usage_is_estimated_and_flagged() -> None:
    data = answer({"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [2.0]})
    usage = parse_embeddings(data, REQUEST).usage
    assert usage.estimated and usage.input_tokens > 0


@pytest.mark.parametrize(
    "data",
    [
        answer({"index": 0, "embedding": [1.0]}),  # one vector for two inputs
        answer({"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [2.0]}),
        answer({"index": 0, "embedding": [1.0]}, {"index": 5, "embedding": [2.0]}),
        answer({"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": ["x"]}),
        answer({"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": []}),
        answer({"index": 0, "embedding": [1.0]}, {"index": True, "embedding": [1.0]}),
        b'{"data": [{"index": 0, "embedding": [1e999]}, {"index": 1, "embedding": [1]}]}',
        b"not json",
        b"[]",
    ],
)
def test_a_malformed_answer_is_an_upstream_failure(data: bytes) -> None:
    with pytest.raises(UpstreamUnavailable):
        parse_embeddings(data, REQUEST)


def test_vectors_of_the_wrong_length_are_refused() -> None:
    request = EmbeddingRequest(model="m", inputs=("a",), dimensions=3)
    with pytest.raises(UpstreamUnavailable):
        parse_embeddings(answer({"index": 0, "embedding": [1.0, 2.0]}), request)


def test_an_error_object_in_a_200_is_an_upstream_error() -> None:
    data = orjson.dumps({"error": {"message": f"bad key {KEY}", "type": "invalid_request_error"}})
    with pytest.raises(UpstreamBadRequest) as caught:
        parse_embeddings(data, REQUEST, (KEY,))
    assert KEY not in caught.value.message


# --- over HTTP ----------------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def provider() -> AsyncIterator[tuple[OpenAIProvider, FakeUpstream]]:
    async with FakeUpstream() as upstream, aiohttp.ClientSession() as http:
        config = ProviderConfig(name="openai", base_url=upstream.openai_base_url, api_key=KEY)
        yield OpenAIProvider(config=config, http=http), upstream


@pytest.mark.anyio
async def test_embed_posts_to_embeddings_with_the_key_header(
    provider: tuple[OpenAIProvider, FakeUpstream],
) -> None:
    openai_provider, upstream = provider
    result = await openai_provider.embed(REQUEST)
    record = upstream.last_record
    assert record.path == "/v1/embeddings" and record.api_key == KEY and KEY not in record.url
    assert record.body == build_embedding_body(REQUEST)
    assert result.vectors == tuple(tuple(fake_vector(t)) for t in REQUEST.inputs)
    assert result.usage == record.usage


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "error"),
    [(400, UpstreamBadRequest), (401, UpstreamAuthenticationError), (429, UpstreamRateLimited)],
)
async def test_embed_maps_error_statuses_and_redacts_the_key(
    provider: tuple[OpenAIProvider, FakeUpstream], status: int, error: type[Exception]
) -> None:
    openai_provider, _ = provider
    request = EmbeddingRequest(model="m", inputs=(f"[[fake:status={status}]]",))
    with pytest.raises(error) as caught:
        await openai_provider.embed(request)
    assert KEY not in str(caught.value)
