"""tollgate_anthropic.wire: request translation and the parsing edge cases, as pure functions."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from anthropic.types import ErrorResponse, RawMessageStreamEvent
from anthropic.types import Message as AnthropicMessage
from pydantic import TypeAdapter
from tollgate_anthropic import wire
from tollgate_core import (
    GenerationRequest,
    Message,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    UpstreamBadRequest,
    UpstreamRateLimited,
    UpstreamUnavailable,
    Usage,
)
from tollgate_core.sse import SSEDecoder

FIXTURES = Path(__file__).parent / "fixtures"


def request(*messages: Message, **fields: object) -> GenerationRequest:
    base: dict[str, object] = {
        "model": "claude-sonnet-4-5",
        "messages": messages or (Message("user", "Hi"),),
        "max_tokens": 64,
    }
    return GenerationRequest(**(base | fields))  # type: ignore[arg-type]


def replay(name: str) -> tuple[list[str], wire.EventParser]:
    decoder, parser, texts = SSEDecoder(), wire.EventParser(), []
    for line in (FIXTURES / name).read_bytes().splitlines(keepends=True):
        event = decoder.feed(line)
        if event is not None and (text := parser.feed(event.event, event.data)):
            texts.append(text)
    return texts, parser


def feed(parser: wire.EventParser, payload: Mapping[str, object]) -> str | None:
    return parser.feed(str(payload["type"]), json.dumps(payload).encode())


# -- request bodies --------------------------------------------------------------------------


def test_system_prompts_are_joined_and_same_roles_merged() -> None:
    body = wire.build_body(
        request(
            Message("system", "Be brief."),
            Message("user", "Hi"),
            Message("developer", "Answer in French."),
            Message("user", "How are you?"),
            Message("assistant", "Bien."),
            Message("assistant", "Et vous ?"),
            Message("user", "Good."),
        ),
        stream=True,
    )
    assert body["system"] == "Be brief.\n\nAnswer in French."
    assert body["messages"] == [
        {"role": "user", "content": "Hi\n\nHow are you?"},
        {"role": "assistant", "content": "Bien.\n\nEt vous ?"},
        {"role": "user", "content": "Good."},
    ]
    assert (body["model"], body["max_tokens"], body["stream"]) == ("claude-sonnet-4-5", 64, True)


def test_sampling_fields_user_and_extras() -> None:
    body = wire.build_body(
        request(temperature=0.4, top_p=0.9, stop=("END",), user="u-7", extra={"top_k": 5}),
        stream=False,
    )
    assert body["temperature"] == 0.4 and body["top_p"] == 0.9
    assert body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "u-7"}
    assert body["top_k"] == 5
    assert "stream" not in body and "system" not in body


@pytest.mark.parametrize(
    "bad",
    [
        request(Message("tool", "42")),
        request(Message("system", "only a system prompt")),
        request(extra={"seed": 1}),
    ],
)
def test_requests_anthropic_cannot_carry_are_refused(bad: GenerationRequest) -> None:
    with pytest.raises(UpstreamBadRequest):
        wire.build_body(bad, stream=True)


# -- usage -----------------------------------------------------------------------------------


def test_cache_reads_and_writes_are_input_and_reads_are_cached() -> None:
    usage = wire.parse_usage(
        {
            "input_tokens": 25,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 2000,
            "output_tokens": 15,
            "output_tokens_details": {"thinking_tokens": 9},
            "server_tool_use": {"web_search_requests": 2},
        }
    )
    assert usage == Usage(
        input_tokens=2125,
        output_tokens=15,
        cached_input_tokens=2000,
        reasoning_tokens=9,
        details={"cache_creation_input_tokens": 100, "web_search_requests": 2},
    )


def test_cumulative_output_is_counted_once() -> None:
    parser = wire.EventParser()
    start = {"id": "m", "usage": {"input_tokens": 10, "output_tokens": 1}}
    feed(parser, {"type": "message_start", "message": start})
    usage_5 = {"output_tokens": 5}
    feed(parser, {"type": "message_delta", "delta": {"stop_reason": None}, "usage": usage_5})
    usage_15 = {"output_tokens": 15, "input_tokens": None}
    feed(parser, {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage_15})
    feed(parser, {"type": "message_stop"})
    assert parser.end().usage == Usage(input_tokens=10, output_tokens=15)


def test_message_delta_may_update_input_counts() -> None:
    parser = wire.EventParser()
    feed(parser, {"type": "message_start", "message": {"usage": {"input_tokens": 10}}})
    delta_usage = {"input_tokens": 12, "cache_read_input_tokens": 3, "output_tokens": 4}
    feed(parser, {"type": "message_delta", "delta": {}, "usage": delta_usage})
    assert parser.usage == Usage(input_tokens=15, output_tokens=4, cached_input_tokens=3)


def test_stream_without_usage_reports_none() -> None:
    parser = wire.EventParser()
    feed(parser, {"type": "message_start", "message": {"id": "m"}})
    feed(parser, {"type": "message_stop"})
    assert parser.finished and parser.end().usage is None


# -- finish reasons --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vendor", "ours"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        (None, "stop"),
    ],
)
def test_finish_reasons(vendor: str | None, ours: str) -> None:
    assert wire.map_finish_reason(vendor) == ours


# -- streams ---------------------------------------------------------------------------------


def test_recorded_stream_skips_thinking_and_counts_output_once() -> None:
    texts, parser = replay("stream_cache.sse")
    assert texts == ["Hello", " there!"]
    assert parser.finished
    end = parser.end()
    assert end.finish_reason == "stop"
    assert end.usage == Usage(
        input_tokens=25 + 100 + 2000,
        output_tokens=15,
        cached_input_tokens=2000,
        details={"cache_creation_input_tokens": 100},
    )


def test_thinking_is_handed_over_apart_from_the_answer() -> None:
    """read() (what the provider's stream yields) gives the recorded thinking as
    `ReasoningDelta`s and the answer as `TextDelta`s; signatures are dropped."""
    decoder, parser = SSEDecoder(), wire.EventParser()
    events: list[StreamEvent] = []
    for line in (FIXTURES / "stream_cache.sse").read_bytes().splitlines(keepends=True):
        event = decoder.feed(line)
        if event is not None:
            events += parser.read(event.event, event.data)
    thoughts = [e.text for e in events if isinstance(e, ReasoningDelta)]
    assert thoughts and all(thoughts)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hello", " there!"]


def test_recorded_stream_matches_the_sdk_types() -> None:
    adapter: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)
    decoder = SSEDecoder()
    for line in (FIXTURES / "stream_cache.sse").read_bytes().splitlines(keepends=True):
        event = decoder.feed(line)
        if event is not None and event.event != "ping":
            adapter.validate_json(event.data)


def test_ping_is_skipped_without_parsing() -> None:
    assert wire.EventParser().feed("ping", b"not even json") is None


@pytest.mark.parametrize(
    ("error_type", "error_class", "status"),
    [
        ("overloaded_error", UpstreamUnavailable, 529),
        ("rate_limit_error", UpstreamRateLimited, 429),
        ("invalid_request_error", UpstreamBadRequest, 400),
        ("api_error", UpstreamUnavailable, 500),
    ],
)
def test_error_event_raises_the_mapped_error(
    error_type: str, error_class: type[Exception], status: int
) -> None:
    parser = wire.EventParser(secrets=["sk-ant-api03-mine0123456789"])
    payload = {
        "type": "error",
        "error": {"type": error_type, "message": "key sk-ant-api03-mine0123456789 says no"},
    }
    ErrorResponse.model_validate(payload)
    with pytest.raises(error_class) as caught:
        feed(parser, payload)
    assert getattr(caught.value, "upstream_status", None) == status
    assert "sk-ant" not in str(caught.value)


# -- non-streaming ---------------------------------------------------------------------------


def test_recorded_message() -> None:
    data = (FIXTURES / "message.json").read_bytes()
    AnthropicMessage.model_validate_json(data)
    completion = wire.parse_completion(data)
    assert completion.text == "Hello there!"
    assert completion.finish_reason == "length"
    assert completion.usage == Usage(input_tokens=42, output_tokens=40, cached_input_tokens=30)


def test_error_body_raises() -> None:
    with pytest.raises(UpstreamUnavailable):
        wire.parse_completion((FIXTURES / "error_overloaded.json").read_bytes())


# -- tools (issue 14) ------------------------------------------------------------------------


def test_a_streamed_tool_use_becomes_openai_tool_call_pieces() -> None:
    parser = wire.EventParser()
    block = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
    events: list[dict[str, Any]] = [
        {"type": "content_block_start", "index": 0, "content_block": block},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": '{"city": '},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'},
        },
    ]
    read = [e for event in events for e in parser.read(event["type"], json.dumps(event).encode())]
    assert read == [
        ToolCallDelta(0, "toolu_1", "get_weather", ""),
        ToolCallDelta(0, None, None, '{"city": '),
        ToolCallDelta(0, None, None, '"Paris"}'),
    ]


def test_tool_messages_become_tool_result_blocks_in_alternating_turns() -> None:
    call = ToolCall(id="toolu_1", name="get_weather", arguments='{"city": "Paris"}')
    body = wire.build_body(
        request(
            Message("user", "Weather?"),
            Message("assistant", "", tool_calls=(call,)),
            Message("tool", "21", tool_call_id="toolu_1"),
            Message("user", "Thanks"),
            tools=(Tool(name="get_weather", parameters={"type": "object"}),),
            tool_choice=ToolChoice(mode="required"),
            parallel_tool_calls=False,
        ),
        stream=True,
    )
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "21"},
                {"type": "text", "text": "Thanks"},
            ],
        },
    ]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["tools"] == [{"name": "get_weather", "input_schema": {"type": "object"}}]
