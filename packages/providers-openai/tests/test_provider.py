"""tollgate_openai.provider: configuration from the environment, and what goes on the wire."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from tollgate_core import ConfigurationError, GenerationRequest, Message, ProviderConfig
from tollgate_core.fake_upstream import FakeUpstream
from tollgate_openai import DEFAULT_BASE_URL, OpenAIProvider

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- configs_from_env ------------------------------------------------------------------------


def test_default_upstream_without_key_is_still_listed() -> None:
    [config] = OpenAIProvider.configs_from_env({})
    assert (config.name, config.base_url, config.api_key) == ("openai", DEFAULT_BASE_URL, None)


def test_openai_variables() -> None:
    [config] = OpenAIProvider.configs_from_env(
        {"OPENAI_API_KEY": "sk-a", "OPENAI_BASE_URL": "https://example.test/v1/"}
    )
    assert (config.base_url, config.api_key) == ("https://example.test/v1", "sk-a")


def test_tollgate_key_wins_over_the_generic_one() -> None:
    env = {"OPENAI_API_KEY": "sk-generic", "TOLLGATE_OPENAI_API_KEY": "sk-gateway"}
    assert OpenAIProvider.configs_from_env(env)[0].api_key == "sk-gateway"
    assert OpenAIProvider.configs_from_env({"TOLLGATE_OPENAI_API_KEY": "sk-g"})[0].api_key == "sk-g"


def test_named_compatible_upstreams() -> None:
    env = {
        "TOLLGATE_OPENAI_UPSTREAMS": " groq, Local-LLM ,",
        "TOLLGATE_UPSTREAM_GROQ_BASE_URL": "https://api.groq.test/openai/v1",
        "TOLLGATE_UPSTREAM_GROQ_API_KEY": "gsk-1",
        "TOLLGATE_UPSTREAM_LOCAL_LLM_BASE_URL": "http://127.0.0.1:8000/v1",
        "TOLLGATE_UPSTREAM_LOCAL_LLM_MAX_TOKENS_FIELD": "max_completion_tokens",
    }
    configs = OpenAIProvider.configs_from_env(env)
    assert [(c.name, c.base_url, c.api_key) for c in configs] == [
        ("openai", DEFAULT_BASE_URL, None),
        ("groq", "https://api.groq.test/openai/v1", "gsk-1"),
        ("local-llm", "http://127.0.0.1:8000/v1", None),
    ]
    assert configs[2].options == {"max_tokens_field": "max_completion_tokens"}


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"TOLLGATE_OPENAI_UPSTREAMS": "groq"}, "TOLLGATE_UPSTREAM_GROQ_BASE_URL"),
        ({"TOLLGATE_OPENAI_UPSTREAMS": "openai"}, "used twice"),
        ({"TOLLGATE_OPENAI_UPSTREAMS": "a b"}, "not a valid upstream name"),
        ({"TOLLGATE_OPENAI_MAX_TOKENS_FIELD": "max"}, "TOLLGATE_OPENAI_MAX_TOKENS_FIELD"),
    ],
)
def test_configuration_errors_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigurationError, match=names):
        OpenAIProvider.configs_from_env(env)


# -- the wire --------------------------------------------------------------------------------


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
async def provider(upstream: FakeUpstream) -> AsyncIterator[OpenAIProvider]:
    async with aiohttp.ClientSession() as http:
        config = ProviderConfig(name="openai", base_url=upstream.openai_base_url, api_key="sk-k1")
        yield OpenAIProvider(config=config, http=http)


REQUEST = GenerationRequest(
    model="gpt-4o-mini",
    messages=(Message("developer", "Be brief."), Message("user", "Hi")),
    max_tokens=7,
    temperature=0.5,
)


async def test_stream_request_on_the_wire(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    events = [event async for event in provider.stream(REQUEST)]
    assert len(events) == 6
    record = upstream.last_record
    assert record.path == "/v1/chat/completions"
    assert record.headers["authorization"] == "Bearer sk-k1"
    assert record.headers["content-type"] == "application/json"
    assert record.body["stream"] is True
    assert record.body["stream_options"] == {"include_usage": True}
    assert record.body["messages"][0] == {"role": "developer", "content": "Be brief."}
    assert (record.body["max_tokens"], record.body["temperature"]) == (7, 0.5)


async def test_generate_uses_the_non_streaming_call(
    provider: OpenAIProvider, upstream: FakeUpstream
) -> None:
    completion = await provider.generate(REQUEST)
    assert completion.text == "tok0 tok1 tok2 tok3 tok4"
    assert upstream.last_record.stream is False
    assert "stream_options" not in upstream.last_record.body
