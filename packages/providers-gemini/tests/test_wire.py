"""tollgate_gemini.wire: request translation and the parsing edge cases, as pure functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.genai import types as genai_types
from tollgate_core import (
    GenerationRequest,
    Message,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    UpstreamAuthenticationError,
    UpstreamBadRequest,
    UpstreamRateLimited,
    Usage,
)
from tollgate_core.sse import SSEDecoder
from tollgate_core.upstream import status_error, vendor_error_message
from tollgate_gemini import wire

FIXTURES = Path(__file__).parent / "fixtures"


def request(*messages: Message, **fields: object) -> GenerationRequest:
    base: dict[str, object] = {
        "model": "gemini-2.5-flash",
        "messages": messages or (Message("user", "Hi"),),
        "max_tokens": 64,
    }
    return GenerationRequest(**(base | fields))  # type: ignore[arg-type]


def replay(name: str) -> tuple[list[str], wire.ChunkParser]:
    decoder, parser, texts = SSEDecoder(), wire.ChunkParser(), []
    for line in (FIXTURES / name).read_bytes().splitlines(keepends=True):
        event = decoder.feed(line)
        if event is not None and (text := _feed(parser, event.data)):
            texts.append(text)
    return texts, parser


# -- request bodies --------------------------------------------------------------------------


def test_system_developer_and_assistant_messages_are_translated() -> None:
    body = wire.build_body(
        request(
            Message("system", "Be brief."),
            Message("user", "Hi", name="dropped"),
            Message("assistant", "Hello."),
            Message("developer", "Answer in French."),
            Message("user", "How are you?"),
        )
    )
    assert body["systemInstruction"] == {
        "parts": [{"text": "Be brief."}, {"text": "Answer in French."}]
    }
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Hi"}]},
        {"role": "model", "parts": [{"text": "Hello."}]},
        {"role": "user", "parts": [{"text": "How are you?"}]},
    ]
    assert body["generationConfig"] == {"maxOutputTokens": 64}


def test_generation_config_and_extras() -> None:
    body = wire.build_body(
        request(
            temperature=0.3,
            top_p=0.8,
            stop=("END", "STOP"),
            user="ignored",
            extra={"seed": 3, "top_k": 40, "response_format": {"type": "json_object"}},
        )
    )
    assert body["generationConfig"] == {
        "maxOutputTokens": 64,
        "temperature": 0.3,
        "topP": 0.8,
        "stopSequences": ["END", "STOP"],
        "seed": 3,
        "topK": 40,
        "responseMimeType": "application/json",
    }
    assert "user" not in body  # Gemini has nowhere to put it
    genai_types.GenerateContentConfig.model_validate(body["generationConfig"])


def test_json_schema_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    config = wire.build_body(request(extra={"response_format": fmt}))["generationConfig"]
    assert config["responseJsonSchema"] == schema


@pytest.mark.parametrize(
    "bad",
    [
        request(Message("tool", "42")),
        request(Message("system", "only a system prompt")),
        request(extra={"logit_bias": {}}),
        request(extra={"response_format": {"type": "xml"}}),
    ],
)
def test_requests_gemini_cannot_carry_are_refused(bad: GenerationRequest) -> None:
    with pytest.raises(UpstreamBadRequest):
        wire.build_body(bad)


def test_model_path_accepts_the_models_prefix() -> None:
    assert wire.model_path("models/gemini-2.5-flash") == "gemini-2.5-flash"
    assert wire.model_path("gemini-2.5-flash") == "gemini-2.5-flash"


# -- usage -----------------------------------------------------------------------------------


def test_thoughts_are_output_and_reasoning_and_cached_is_inside_input() -> None:
    usage = wire.parse_usage(
        {
            "promptTokenCount": 12,
            "candidatesTokenCount": 3,
            "cachedContentTokenCount": 8,
            "thoughtsTokenCount": 44,
            "toolUsePromptTokenCount": 5,
            "totalTokenCount": 64,
        }
    )
    assert usage == Usage(
        input_tokens=17,
        output_tokens=47,
        cached_input_tokens=8,
        reasoning_tokens=44,
        details={"tool_use_prompt_tokens": 5},
    )


def test_absent_usage_is_none() -> None:
    assert wire.parse_usage(None) is None


# -- finish reasons --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vendor", "ours"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("OTHER", "stop"),
        ("FINISH_REASON_UNSPECIFIED", "stop"),
    ],
)
def test_finish_reasons(vendor: str, ours: str) -> None:
    assert wire.map_finish_reason(vendor) == ours


# -- streams ---------------------------------------------------------------------------------


def test_recorded_stream_skips_thoughts_and_keeps_the_last_usage() -> None:
    texts, parser = replay("stream_thinking.sse")
    assert texts == ["Hello", " there!"]
    end = parser.end()
    assert end.finish_reason == "stop"
    assert end.usage == Usage(
        input_tokens=12, output_tokens=3 + 44, cached_input_tokens=8, reasoning_tokens=44
    )


def test_recorded_stream_matches_the_sdk_types() -> None:
    decoder = SSEDecoder()
    for line in (FIXTURES / "stream_thinking.sse").read_bytes().splitlines(keepends=True):
        if (event := decoder.feed(line)) is not None:
            genai_types.GenerateContentResponse.model_validate_json(event.data)


def test_usage_on_several_chunks_takes_the_last() -> None:
    parser = wire.ChunkParser()
    _feed(
        parser,
        b'{"candidates":[{"content":{"parts":[{"text":"a"}]}}],'
        b'"usageMetadata":{"promptTokenCount":4,"totalTokenCount":4}}',
    )
    _feed(
        parser,
        b'{"candidates":[{"content":{"parts":[{"text":"b"}]},"finishReason":"STOP"}],'
        b'"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":2}}',
    )
    assert parser.end().usage == Usage(input_tokens=4, output_tokens=2)


def test_stream_without_finish_reason_is_not_finished() -> None:
    parser = wire.ChunkParser()
    _feed(parser, b'{"candidates":[{"content":{"parts":[{"text":"a"}]}}]}')
    assert not parser.finished


def test_error_payload_mid_stream_is_mapped_and_redacted() -> None:
    parser = wire.ChunkParser(secrets=["AIzaMine0123456789abcdef"])
    payload = (
        b'{"error":{"code":429,"message":"quota for AIzaMine0123456789abcdef",'
        b'"status":"RESOURCE_EXHAUSTED"}}'
    )
    with pytest.raises(UpstreamRateLimited) as caught:
        _feed(parser, payload)
    assert "AIza" not in str(caught.value)


# -- non-streaming and errors ----------------------------------------------------------------


def test_blocked_prompt_is_a_content_filter_finish() -> None:
    data = (FIXTURES / "blocked_prompt.json").read_bytes()
    genai_types.GenerateContentResponse.model_validate_json(data)
    completion = wire.parse_completion(data)
    assert (completion.text, completion.finish_reason) == ("", "content_filter")
    assert completion.usage == Usage(input_tokens=7, output_tokens=0)


def test_invalid_key_400_is_reported_as_an_authentication_error() -> None:
    body = (FIXTURES / "error_api_key_invalid.json").read_bytes()
    status = wire.error_status(400, body)
    error = status_error(status, vendor_error_message(body))
    assert isinstance(error, UpstreamAuthenticationError)
    assert error.upstream_status == 401
    assert wire.error_status(400, b'{"error":{"code":400,"message":"bad"}}') == 400


# -- tools (issue 14) ------------------------------------------------------------------------


def test_a_function_call_arrives_whole_and_finishes_as_tool_calls() -> None:
    parser = wire.ChunkParser()
    call = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
    chunk = {
        "candidates": [
            {"content": {"role": "model", "parts": [call]}, "finishReason": "STOP", "index": 0}
        ]
    }
    events = parser.read(None, json.dumps(chunk).encode())
    assert events == (ToolCallDelta(0, "call_0", "get_weather", '{"city":"Paris"}'),)
    assert parser.end().finish_reason == "tool_calls"


def test_a_tool_result_names_the_function_it_answers() -> None:
    call = ToolCall(id="c1", name="get_weather", arguments='{"city": "Paris"}')
    body = wire.build_body(
        request(
            Message("user", "Weather?"),
            Message("assistant", "", tool_calls=(call,)),
            Message("tool", "sunny", tool_call_id="c1"),
        )
    )
    assert body["contents"][1:] == [
        {
            "role": "model",
            "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}}
            ],
        },
    ]
    for content in body["contents"]:
        genai_types.Content.model_validate(content)


def _feed(parser: wire.ChunkParser, data: bytes) -> str | None:
    """The text of one payload's deltas (None: none)."""
    events = parser.read(None, data)
    return "".join(e.text for e in events if isinstance(e, TextDelta)) or None


def test_candidates_become_choices_with_their_logprobs() -> None:
    parser = wire.ChunkParser()
    events = parser.read(
        None,
        b'{"candidates":['
        b'{"index":0,"content":{"parts":[{"text":"a"}]},"logprobsResult":'
        b'{"chosenCandidates":[{"token":"a","logProbability":-0.5}],'
        b'"topCandidates":[{"candidates":[{"token":"a","logProbability":-0.5},'
        b'{"token":"b","logProbability":"x"}]}]}},'
        b'{"index":1,"content":{"parts":[{"functionCall":{"name":"f","args":{}}}]}}]}',
    )
    text, call = events
    assert isinstance(text, TextDelta) and (text.text, text.choice) == ("a", 0)
    assert [(t.token, t.logprob, t.top) for t in text.logprobs] == [("a", -0.5, (("a", -0.5),))]
    assert isinstance(call, ToolCallDelta) and (call.choice, call.index, call.name) == (1, 0, "f")
    parser.read(
        None,
        b'{"candidates":[{"index":0,"content":{"parts":[]},"finishReason":"STOP"},'
        b'{"index":1,"content":{"parts":[]},"finishReason":"STOP"}]}',
    )
    end = parser.end()
    # A candidate that called a function ends with tool_calls, as OpenAI's clients expect.
    assert (end.finish_reason, end.finish_reasons) == ("stop", ("stop", "tool_calls"))


def test_n_and_logprobs_become_the_generation_config() -> None:
    config = wire.build_body(request(n=2, logprobs=True, top_logprobs=3))["generationConfig"]
    assert (config["candidateCount"], config["responseLogprobs"], config["logprobs"]) == (
        2,
        True,
        3,
    )
    plain = wire.build_body(request())["generationConfig"]
    assert not {"candidateCount", "responseLogprobs", "logprobs"} & set(plain)
