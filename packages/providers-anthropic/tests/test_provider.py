"""tollgate_anthropic.provider: configuration from the environment, and what goes on the wire."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from tollgate_anthropic import DEFAULT_BASE_URL, AnthropicProvider
from tollgate_core import GenerationRequest, Message, ProviderConfig, UsageReport
from tollgate_core.fake_upstream import FakeUpstream

pytestmark = pytest.mark.anyio

KEY = "sk-ant-provider-test-0123456789"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_configs_from_env() -> None:
    [config] = AnthropicProvider.configs_from_env({})
    assert (config.name, config.base_url, config.api_key) == ("anthropic", DEFAULT_BASE_URL, None)
    env = {"ANTHROPIC_API_KEY": "k", "ANTHROPIC_BASE_URL": "http://x.test/"}
    [config] = AnthropicProvider.configs_from_env(env)
    assert (config.base_url, config.api_key) == ("http://x.test", "k")


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


REQUEST = GenerationRequest(
    model="claude-sonnet-4-5",
    messages=(Message("system", "Be brief."), Message("user", "Hi")),
    max_tokens=3,
    user="u-1",
)


@pytest.mark.parametrize("suffix", ["", "/v1", "/"])
async def test_stream_url_and_headers(
    upstream: FakeUpstream, http: aiohttp.ClientSession, suffix: str
) -> None:
    config = ProviderConfig(name="anthropic", base_url=upstream.url + suffix, api_key=KEY)
    provider = AnthropicProvider(config=config, http=http)
    events = [event async for event in provider.stream(REQUEST)]
    record = upstream.last_record
    # message_start's exact prompt count comes first, then three deltas and the end.
    assert len(events) == 5
    assert isinstance(events[0], UsageReport) and record.usage is not None
    assert events[0].usage.input_tokens == record.usage.input_tokens
    assert record.path == "/v1/messages"
    assert record.headers["x-api-key"] == KEY
    assert record.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in record.headers
    assert record.body["system"] == "Be brief."
    assert record.body["metadata"] == {"user_id": "u-1"}
    assert record.body["stream"] is True


async def test_generate_uses_the_non_streaming_call(
    upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    config = ProviderConfig(name="anthropic", base_url=upstream.url, api_key=KEY)
    completion = await AnthropicProvider(config=config, http=http).generate(REQUEST)
    assert completion.text == "tok0 tok1 tok2" and completion.finish_reason == "length"
    assert upstream.last_record.stream is False
