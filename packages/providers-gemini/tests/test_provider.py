"""tollgate_gemini.provider: configuration from the environment, and what goes on the wire."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from tollgate_core import GenerationRequest, Message, ProviderConfig, UsageReport
from tollgate_core.fake_upstream import FakeUpstream
from tollgate_gemini import DEFAULT_BASE_URL, GeminiProvider

pytestmark = pytest.mark.anyio

KEY = "AIzaProviderTest0123456789abcdef"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_configs_from_env() -> None:
    [config] = GeminiProvider.configs_from_env({})
    assert (config.name, config.base_url, config.api_key) == ("gemini", DEFAULT_BASE_URL, None)
    env = {"GOOGLE_API_KEY": "g", "GEMINI_API_KEY": "a", "GEMINI_BASE_URL": "http://x.test/"}
    [config] = GeminiProvider.configs_from_env(env)
    assert (config.base_url, config.api_key) == ("http://x.test", "a")
    assert GeminiProvider.configs_from_env({"GOOGLE_API_KEY": "g"})[0].api_key == "g"


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


REQUEST = GenerationRequest(
    model="models/gemini-2.5-flash",
    messages=(Message("system", "Be brief."), Message("user", "Hi")),
    max_tokens=3,
)


@pytest.mark.parametrize("suffix", ["", "/v1beta", "/"])
async def test_stream_url_and_key_header(
    upstream: FakeUpstream, http: aiohttp.ClientSession, suffix: str
) -> None:
    config = ProviderConfig(name="gemini", base_url=upstream.url + suffix, api_key=KEY)
    events = [event async for event in GeminiProvider(config=config, http=http).stream(REQUEST)]
    record = upstream.last_record
    # The first usageMetadata's exact prompt count comes first, then three deltas and the end.
    assert len(events) == 5
    assert isinstance(events[0], UsageReport) and record.usage is not None
    assert events[0].usage.input_tokens == record.usage.input_tokens
    assert record.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert record.query == {"alt": "sse"}
    assert record.headers["x-goog-api-key"] == KEY
    assert KEY not in record.url and "key" not in record.query
    assert record.body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}


async def test_generate_uses_generate_content(
    upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    config = ProviderConfig(name="gemini", base_url=upstream.url, api_key=KEY)
    completion = await GeminiProvider(config=config, http=http).generate(REQUEST)
    assert completion.text == "tok0 tok1 tok2" and completion.finish_reason == "length"
    assert upstream.last_record.path.endswith(":generateContent")
    assert upstream.last_record.stream is False
