"""The fake upstream: its wire formats validate against the vendors' own SDK types, the
official SDK clients can talk to it, and its directives and records behave as documented."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import aiohttp
import anthropic
import httpx
import openai
import pytest
from anthropic.types import ErrorResponse, Message, RawMessageStreamEvent
from google import genai
from google.genai import types as genai_types
from openai.types import ErrorObject
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter
from tollgate_core import Usage
from tollgate_core.fake_upstream import (
    DirectiveError,
    Directives,
    FakeUpstream,
    fake_vector,
    parse_directives,
)

OPENAI_KEY = "sk-fake-test-0123456789"
GEMINI_KEY = "AIzaFakeTest0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-fake-test-0123456789"

STREAM_EVENT = TypeAdapter(RawMessageStreamEvent)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream.in_thread() as upstream:
        yield upstream


@pytest.fixture
def client(upstream: FakeUpstream) -> Iterator[httpx.Client]:
    upstream.clear()
    with httpx.Client(base_url=upstream.url, timeout=10) as client:
        yield client


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) pairs of an SSE body."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = None, []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            events.append((name, "\n".join(data)))
    return events


def openai_post(client: httpx.Client, text: str, **body: Any) -> httpx.Response:
    payload = {"model": "gpt-fake", "messages": [{"role": "user", "content": text}], **body}
    return client.post(
        "/v1/chat/completions", json=payload, headers={"Authorization": f"Bearer {OPENAI_KEY}"}
    )


def anthropic_post(client: httpx.Client, text: str, **body: Any) -> httpx.Response:
    payload = {
        "model": "claude-fake",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": text}],
        **body,
    }
    headers = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
    return client.post("/v1/messages", json=payload, headers=headers)


def gemini_post(client: httpx.Client, text: str, *, stream: bool = False) -> httpx.Response:
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    payload = {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": text}]}],
        "generationConfig": {"maxOutputTokens": 100},
    }
    return client.post(
        f"/v1beta/models/gemini-fake:{method}", json=payload, headers={"x-goog-api-key": GEMINI_KEY}
    )


# -- the wire formats against the vendors' types ---------------------------------------------


@pytest.mark.parametrize("directives", ["", "[[fake:cached=2,reasoning=3]]", "[[fake:chunks=2]]"])
def test_openai_completion_validates(client: httpx.Client, directives: str) -> None:
    response = openai_post(client, f"say hi {directives}")
    completion = ChatCompletion.model_validate(response.json())
    assert completion.choices[0].message.content.startswith("tok0")  # type: ignore[union-attr]
    assert completion.usage is not None


def test_openai_stream_validates_and_ends_with_usage(client: httpx.Client) -> None:
    response = openai_post(
        client,
        "hi [[fake:cached=1,reasoning=2]]",
        stream=True,
        stream_options={"include_usage": True},
    )
    events = sse_events(response.text)
    assert events[-1] == (None, "[DONE]")
    chunks = [ChatCompletionChunk.model_validate_json(data) for _, data in events[:-1]]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 tok3 tok4"
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == 5 + 2
    assert usage_chunk.usage.prompt_tokens_details is not None
    assert usage_chunk.usage.prompt_tokens_details.cached_tokens == 1
    assert all(c.usage is None for c in chunks[:-1])


def test_openai_stream_without_include_usage_sends_none(client: httpx.Client) -> None:
    response = openai_post(client, "hi", stream=True)
    assert all('"usage":null' in data for _, data in sse_events(response.text)[:-1])


def test_openai_error_body_validates(client: httpx.Client) -> None:
    response = openai_post(client, "hi [[fake:status=429,retry_after=3]]")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    error = ErrorObject.model_validate(response.json()["error"])
    assert OPENAI_KEY in error.message  # echoed on purpose: providers must redact it


@pytest.mark.parametrize("directives", ["", "[[fake:cached=2,cache_write=3,reasoning=4]]"])
def test_anthropic_message_validates(client: httpx.Client, directives: str) -> None:
    message = Message.model_validate(anthropic_post(client, f"hi {directives}").json())
    assert message.content[0].type == "text"
    assert message.stop_reason == "end_turn"


def test_anthropic_stream_has_the_real_event_sequence(client: httpx.Client) -> None:
    response = anthropic_post(client, "hi [[fake:chunks=2,cached=1]]", stream=True)
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    for name, data in events:
        if name == "ping":
            assert json.loads(data) == {"type": "ping"}
            continue
        event = STREAM_EVENT.validate_json(data)
        assert event.type == name


def test_anthropic_error_event_validates(client: httpx.Client) -> None:
    response = anthropic_post(client, "hi [[fake:error_after=1,error_status=529]]", stream=True)
    name, data = sse_events(response.text)[-1]
    assert name == "error"
    error = ErrorResponse.model_validate_json(data)
    assert error.error.type == "overloaded_error"


def test_anthropic_requires_its_version_header(client: httpx.Client) -> None:
    response = client.post(
        "/v1/messages",
        json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-api-key": ANTHROPIC_KEY},
    )
    assert response.status_code == 400
    ErrorResponse.model_validate(response.json())


@pytest.mark.parametrize(
    "directives", ["", "[[fake:cached=2,reasoning=3]]", "[[fake:finish=content_filter]]"]
)
def test_gemini_response_validates(client: httpx.Client, directives: str) -> None:
    # google-genai's models forbid unknown fields, so a misspelt key fails here.
    body = gemini_post(client, f"hi {directives}").json()
    response = genai_types.GenerateContentResponse.model_validate(body)
    assert response.candidates and response.usage_metadata


def test_gemini_stream_validates_and_reports_usage_last(client: httpx.Client) -> None:
    response = gemini_post(client, "hi [[fake:reasoning=3]]", stream=True)
    assert "\r\n\r\n" in response.text  # Gemini frames its events with CRLF
    chunks = [
        genai_types.GenerateContentResponse.model_validate_json(data)
        for _, data in sse_events(response.text)
    ]
    assert len(chunks) == 6  # five words, then the finish reason and the complete usage
    assert all(c.candidates and c.candidates[0].finish_reason is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.candidates and last.candidates[0].finish_reason == genai_types.FinishReason.STOP
    assert last.usage_metadata is not None
    assert last.usage_metadata.candidates_token_count == 5
    assert last.usage_metadata.thoughts_token_count == 3


# -- the official SDK clients against the fake -----------------------------------------------


def test_openai_sdk_streams_from_the_fake(upstream: FakeUpstream) -> None:
    client = openai.OpenAI(base_url=upstream.openai_base_url, api_key=OPENAI_KEY, max_retries=0)
    stream = client.chat.completions.create(
        model="gpt-fake",
        messages=[{"role": "user", "content": "hi [[fake:chunks=3]]"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "tok0 tok1 tok2"
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="gpt-fake", messages=[{"role": "user", "content": "[[fake:status=429]]"}]
        )


def test_anthropic_sdk_streams_from_the_fake(upstream: FakeUpstream) -> None:
    client = anthropic.Anthropic(base_url=upstream.url, api_key=ANTHROPIC_KEY, max_retries=0)
    with client.messages.stream(
        model="claude-fake",
        max_tokens=3,
        messages=[{"role": "user", "content": "hi [[fake:chunks=8]]"}],
    ) as stream:
        message = stream.get_final_message()
    assert message.content[0].type == "text" and message.content[0].text == "tok0 tok1 tok2"
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3  # cumulative, not added to message_start's count


def test_genai_sdk_streams_from_the_fake(upstream: FakeUpstream) -> None:
    client = genai.Client(
        api_key=GEMINI_KEY, http_options=genai_types.HttpOptions(base_url=upstream.url)
    )
    upstream.clear()
    text = "".join(
        chunk.text or ""
        for chunk in client.models.generate_content_stream(
            model="gemini-fake", contents="hi [[fake:chunks=3]]"
        )
    )
    assert text == "tok0 tok1 tok2"
    record = upstream.last_record
    assert record.api_key == GEMINI_KEY and GEMINI_KEY not in record.url
    response = client.models.generate_content(model="gemini-fake", contents="hi")
    assert response.text == "tok0 tok1 tok2 tok3 tok4"


def test_openai_sdk_embeds_with_the_fake(upstream: FakeUpstream) -> None:
    client = openai.OpenAI(base_url=upstream.openai_base_url, api_key=OPENAI_KEY, max_retries=0)
    upstream.clear()
    # The SDK's default asks for base64 and decodes it: float32 values come back exact.
    result = client.embeddings.create(model="embed-fake", input=["one two", "three"])
    assert [d.embedding for d in result.data] == [fake_vector("one two"), fake_vector("three")]
    assert (result.usage.prompt_tokens, upstream.last_record.usage) == (7, Usage(input_tokens=7))
    ids = client.embeddings.create(model="embed-fake", input=[5, 6, 7], dimensions=3)
    assert ids.data[0].embedding == fake_vector([5, 6, 7], 3)
    assert ids.usage.prompt_tokens == 3
    with pytest.raises(openai.RateLimitError):
        client.embeddings.create(model="embed-fake", input="[[fake:status=429]]")


def test_genai_sdk_embeds_with_the_fake(upstream: FakeUpstream) -> None:
    """google-genai sends ``batchEmbedContents`` itself: the fake answers what it parses."""
    client = genai.Client(
        api_key=GEMINI_KEY, http_options=genai_types.HttpOptions(base_url=upstream.url)
    )
    upstream.clear()
    # One Content per text: a list of strings would be one content of two parts (one vector).
    response = client.models.embed_content(
        model="gemini-embedding-fake",
        contents=[
            genai_types.Content(parts=[genai_types.Part(text="one two")]),
            genai_types.Content(parts=[genai_types.Part(text="three")]),
        ],
        config=genai_types.EmbedContentConfig(output_dimensionality=4),
    )
    assert response.embeddings is not None
    assert [e.values for e in response.embeddings] == [
        fake_vector("one two", 4),
        fake_vector("three", 4),
    ]
    record = upstream.last_record
    assert record.path.endswith("/models/gemini-embedding-fake:batchEmbedContents")
    assert record.api_key == GEMINI_KEY and record.usage is None


# -- behaviour and records -------------------------------------------------------------------


def test_records_capture_the_request(client: httpx.Client, upstream: FakeUpstream) -> None:
    openai_post(client, "one two three", max_tokens=2)
    record = upstream.last_record
    assert (record.protocol, record.model, record.stream) == ("openai", "gpt-fake", False)
    assert record.path == "/v1/chat/completions"
    assert record.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert record.api_key == OPENAI_KEY
    assert record.body["max_tokens"] == 2
    assert record.text == "tok0 tok1" and record.finish_reason == "length"
    # 3 words + 2 for the one message; one output token per chunk.
    assert record.usage == Usage(input_tokens=5, output_tokens=2)
    assert record.completed and not record.disconnected and record.finished


def test_openai_routes_under_any_prefix(client: httpx.Client, upstream: FakeUpstream) -> None:
    response = client.post(
        "/api/v2/openai/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": "Bearer x"},
    )
    assert response.status_code == 200


def test_missing_key_is_refused(client: httpx.Client) -> None:
    response = client.post(
        "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]}
    )
    assert response.status_code == 401


def test_unknown_directive_is_a_loud_400(client: httpx.Client) -> None:
    response = openai_post(client, "hi [[fake:chunkz=3]]")
    assert response.status_code == 400
    assert "chunkz" in response.json()["error"]["message"]


def test_stop_after_ends_cleanly_without_terminal_event(
    client: httpx.Client, upstream: FakeUpstream
) -> None:
    response = openai_post(client, "hi [[fake:stop_after=2]]", stream=True)
    events = sse_events(response.text)
    assert (None, "[DONE]") not in events
    assert upstream.last_record.outcome == "stopped"
    assert upstream.last_record.text == "tok0 tok1"


def test_reset_after_resets_the_connection(client: httpx.Client, upstream: FakeUpstream) -> None:
    with pytest.raises(httpx.HTTPError):
        openai_post(client, "hi [[fake:reset_after=1]]", stream=True)
    assert upstream.last_record.outcome == "reset"
    assert not upstream.last_record.disconnected


def test_client_disconnect_is_recorded(upstream: FakeUpstream) -> None:
    upstream.clear()
    body = {
        "model": "m",
        "stream": True,
        "messages": [{"role": "user", "content": "hi [[fake:chunks=500,delay_ms=20]]"}],
    }
    with (
        httpx.Client(base_url=upstream.url) as client,
        client.stream(
            "POST", "/v1/chat/completions", json=body, headers={"Authorization": "Bearer k"}
        ) as response,
    ):
        lines = response.iter_lines()
        next(lines)
        next(lines)
    record = upstream.last_record
    assert record.wait_disconnected(2.0), record.outcome
    assert not record.completed


def test_stall_first_then_hang_up_is_recorded(upstream: FakeUpstream) -> None:
    upstream.clear()
    with (
        httpx.Client(base_url=upstream.url, timeout=0.3) as client,
        pytest.raises(httpx.TimeoutException),
    ):
        openai_post(client, "hi [[fake:stall_first_s=30]]")
    assert upstream.last_record.wait_disconnected(2.0)


@pytest.mark.anyio
async def test_async_mode_and_disconnect_wait() -> None:
    async with FakeUpstream() as upstream, aiohttp.ClientSession() as http:
        response = await http.post(
            f"{upstream.openai_base_url}/chat/completions",
            json={
                "model": "m",
                "stream": True,
                "messages": [{"role": "user", "content": "[[fake:stall_after=1,stall_s=30]]"}],
            },
            headers={"Authorization": "Bearer k"},
        )
        await response.content.readline()
        response.close()
        assert await upstream.wait_for_disconnect(upstream.last_record, 2.0)
    assert upstream.url.startswith("http://127.0.0.1:")


def test_port_is_chosen_by_the_os_and_freed_on_exit() -> None:
    with FakeUpstream.in_thread() as upstream:
        port = upstream.port
        assert port != 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # free again


def test_parse_directives() -> None:
    d = parse_directives("x [[fake:status=429,retry_after=2.5]] y [[fake:no_usage, chunks=3]]")
    assert d == Directives(status=429, retry_after=2.5, no_usage=True, chunks=3)
    assert parse_directives("no directive") == Directives()
    with pytest.raises(DirectiveError):
        parse_directives("[[fake:status=abc]]")
    with pytest.raises(DirectiveError):
        parse_directives("[[fake:finish=exploded]]")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
