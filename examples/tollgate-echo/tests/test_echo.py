"""tollgate-echo: found through its entry point, and keeps the stream contract."""

from __future__ import annotations

import pytest
from tollgate_core import (
    GenerationRequest,
    Message,
    StreamEnd,
    TextDelta,
    load_providers,
)
from tollgate_echo import EchoProvider

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def request(text: str, max_tokens: int = 100) -> GenerationRequest:
    return GenerationRequest(
        model="echo-1",
        messages=(Message("system", "ignored"), Message("user", text)),
        max_tokens=max_tokens,
    )


def provider() -> EchoProvider:
    [config] = EchoProvider.configs_from_env({})
    return EchoProvider(config=config, http=None)  # type: ignore[arg-type]  # echo needs no HTTP


def test_load_providers_finds_echo_through_its_entry_point() -> None:
    report = load_providers()
    assert report.providers["echo"] is EchoProvider
    assert report.origins["echo"] == "echo"
    assert "echo" not in report.problems


async def test_echoes_word_by_word_then_one_stream_end() -> None:
    events = [event async for event in provider().stream(request("hello big world"))]
    assert events[:-1] == [TextDelta("hello"), TextDelta(" big"), TextDelta(" world")]
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.finish_reason == "stop"
    assert end.usage is not None and end.usage.output_tokens == 3


async def test_max_tokens_cuts_and_generate_drains_the_stream() -> None:
    completion = await provider().generate(request("one two three four", max_tokens=2))
    assert completion.text == "one two"
    assert completion.finish_reason == "length"
