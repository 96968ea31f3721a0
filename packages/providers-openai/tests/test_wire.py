"""tollgate_openai.wire: request bodies and the parsing edge cases, as pure functions."""

from __future__ import annotations

from pathlib import Path

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from tollgate_core import (
    GenerationRequest,
    Message,
    TextDelta,
    UpstreamBadRequest,
    UpstreamRateLimited,
    UpstreamUnavailable,
    Usage,
)
from tollgate_core.sse import SSEDecoder
from tollgate_core.upstream import status_error, vendor_error_message
from tollgate_openai import wire

FIXTURES = Path(__file__).parent / "fixtures"


def request(**fields: object) -> GenerationRequest:
    base: dict[str, object] = {
        "model": "gpt-4o-mini",
        "messages": (Message("system", "Be brief."), Message("user", "Hi", name="ann")),
        "max_tokens": 50,
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


def test_stream_body_asks_for_usage() -> None:
    body = wire.build_body(request(), stream=True)
    assert body == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi", "name": "ann"},
        ],
        "max_tokens": 50,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_optional_fields_are_sent_only_when_set() -> None:
    body = wire.build_body(
        request(temperature=0.2, top_p=0.9, stop=("END",), user="u-1", extra={"seed": 7}),
        stream=False,
        max_tokens_field="max_completion_tokens",
    )
    assert body["temperature"] == 0.2 and body["top_p"] == 0.9
    assert body["stop"] == ["END"] and body["user"] == "u-1" and body["seed"] == 7
    assert body["max_completion_tokens"] == 50 and "max_tokens" not in body
    assert "stream" not in body


def test_unsupported_extra_is_refused_by_name() -> None:
    with pytest.raises(UpstreamBadRequest, match="tools"):
        wire.build_body(request(extra={"tools": [], "seed": 1}), stream=True)


def test_documents_what_it_cannot_carry() -> None:
    # Issue 14: tools, n > 1 and log-probabilities are carried; legacy functions are not.
    assert "functions" in wire.UNSUPPORTED_FIELDS and "tools" in wire.SUPPORTED_PARAMETERS
    assert {"n", "logprobs", "top_logprobs"} <= wire.SUPPORTED_PARAMETERS
    assert not set(wire.UNSUPPORTED_FIELDS) & wire.SUPPORTED_EXTRAS


# -- usage -----------------------------------------------------------------------------------


def test_usage_is_inclusive_with_cached_and_reasoning() -> None:
    usage = wire.parse_usage(
        {
            "prompt_tokens": 1210,
            "completion_tokens": 131,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 5},
            "completion_tokens_details": {"reasoning_tokens": 128, "rejected_prediction_tokens": 2},
        }
    )
    assert usage == Usage(
        input_tokens=1210,
        output_tokens=131,
        cached_input_tokens=1024,
        reasoning_tokens=128,
        details={"input_audio_tokens": 5, "rejected_prediction_tokens": 2},
    )


@pytest.mark.parametrize("value", [None, {}, "garbage"])
def test_absent_usage_is_none(value: object) -> None:
    assert wire.parse_usage(value) is None


def test_usage_without_details_or_with_nulls() -> None:
    usage = wire.parse_usage(
        {"prompt_tokens": 3, "completion_tokens": 4, "prompt_tokens_details": None}
    )
    assert usage == Usage(input_tokens=3, output_tokens=4)


# -- finish reasons --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vendor", "ours"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("content_filter", "content_filter"),
        ("tool_calls", "tool_calls"),
        ("function_call", "tool_calls"),
        ("something_new", "stop"),
        (None, "stop"),
    ],
)
def test_finish_reasons(vendor: str | None, ours: str) -> None:
    assert wire.map_finish_reason(vendor) == ours


# -- streams ---------------------------------------------------------------------------------


def test_recorded_stream() -> None:
    texts, parser = replay("stream_with_usage.sse")
    assert texts == ["Hello", " there", "!"]
    assert parser.done and parser.finished
    end = parser.end()
    assert end.finish_reason == "stop"
    assert end.usage is not None
    assert (end.usage.input_tokens, end.usage.cached_input_tokens) == (1210, 1024)
    assert (end.usage.output_tokens, end.usage.reasoning_tokens) == (131, 128)


def test_recorded_stream_matches_the_sdk_types() -> None:
    decoder = SSEDecoder()
    for line in (FIXTURES / "stream_with_usage.sse").read_bytes().splitlines(keepends=True):
        event = decoder.feed(line)
        if event is not None and event.data != b"[DONE]":
            ChatCompletionChunk.model_validate_json(event.data)


def test_stream_without_done_is_finished_by_its_finish_reason() -> None:
    parser = wire.ChunkParser()
    _feed(parser, b'{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}')
    assert not parser.finished
    _feed(parser, b'{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}')
    assert parser.finished and parser.end().usage is None


def test_error_chunk_raises_the_mapped_error_redacted() -> None:
    parser = wire.ChunkParser(secrets=["sk-mine-0123456789"])
    chunk = (
        b'{"error":{"message":"Rate limit for sk-mine-0123456789","type":"rate_limit_error",'
        b'"param":null,"code":null}}'
    )
    with pytest.raises(UpstreamRateLimited) as caught:
        _feed(parser, chunk)
    assert "sk-mine" not in str(caught.value) and "[redacted]" in str(caught.value)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        ({"code": 429}, 429),
        ({"code": "503"}, 503),
        ({"type": "invalid_request_error"}, 400),
        ({"code": "rate_limit_exceeded"}, 429),
        ({"type": "server_error", "code": None}, 500),
        ({}, 500),
    ],
)
def test_error_status(error: dict[str, object], status: int) -> None:
    assert wire.error_status(error) == status


def test_refusal_is_passed_on_as_text() -> None:
    parser = wire.ChunkParser()
    assert _feed(parser, b'{"choices":[{"index":0,"delta":{"refusal":"No."}}]}') == "No."


def test_malformed_json_is_unavailable() -> None:
    with pytest.raises(UpstreamUnavailable):
        wire.ChunkParser().read(None, b"{not json")


# -- non-streaming ---------------------------------------------------------------------------


def test_recorded_completion() -> None:
    data = (FIXTURES / "completion.json").read_bytes()
    ChatCompletion.model_validate_json(data)
    completion = wire.parse_completion(data)
    assert completion.text == "Hello there!"
    assert completion.finish_reason == "length"
    assert completion.usage == Usage(input_tokens=19, output_tokens=3)


def test_error_body_with_status_200_raises() -> None:
    with pytest.raises(UpstreamUnavailable):
        wire.parse_completion(b'{"error":{"message":"boom","type":"server_error"}}')


def test_recorded_401_message_is_redacted() -> None:
    body = (FIXTURES / "error_401.json").read_bytes()
    error = status_error(401, vendor_error_message(body), secrets=["not-this-one"])
    assert "sk-proj" not in str(error)
    assert str(error).startswith("upstream answered 401: Incorrect API key provided: [redacted]")


def _feed(parser: wire.ChunkParser, data: bytes) -> str | None:
    """The text of one payload's deltas (None: none)."""
    events = parser.read(None, data)
    return "".join(e.text for e in events if isinstance(e, TextDelta)) or None


def test_several_choices_are_told_apart_with_their_own_finish_reasons() -> None:
    parser = wire.ChunkParser()
    events = parser.read(
        None,
        b'{"choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":"b"}}]}',
    )
    assert [(e.text, e.choice) for e in events if isinstance(e, TextDelta)] == [("a", 0), ("b", 1)]
    parser.read(None, b'{"choices":[{"index":1,"delta":{},"finish_reason":"length"}]}')
    parser.read(None, b'{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}')
    end = parser.end()
    assert (end.finish_reason, end.finish_reasons) == ("stop", ("stop", "length"))


def test_an_impossible_choice_index_reads_as_the_first() -> None:
    for index in (b"-1", b"500", b'"1"', b"true"):
        chunk = b'{"choices":[{"index":' + index + b',"delta":{"content":"a"}}]}'
        (event,) = wire.ChunkParser().read(None, chunk)
        assert isinstance(event, TextDelta) and event.choice == 0


def test_logprobs_are_read_and_malformed_ones_skipped() -> None:
    logprobs = (
        b'{"content":[{"token":"a","logprob":-0.5,"top_logprobs":[{"token":"b","logprob":-1}]},'
        b'{"token":"x","logprob":"high"},{"token":"y","logprob":1.5},{"logprob":-1},'
        b'{"token":"z","logprob":-2,"top_logprobs":[{"token":"w","logprob":"nan"}]}]}'
    )
    chunk = b'{"choices":[{"index":0,"delta":{"content":"az"},"logprobs":' + logprobs + b"}]}"
    (event,) = wire.ChunkParser().read(None, chunk)
    assert isinstance(event, TextDelta)
    assert [(t.token, t.logprob, t.top) for t in event.logprobs] == [
        ("a", -0.5, (("b", -1.0),)),
        ("z", -2.0, ()),
    ]


def test_n_and_logprobs_are_sent_as_they_came() -> None:
    body = wire.build_body(
        request(n=3, logprobs=True, top_logprobs=4), stream=True, max_tokens_field="max_tokens"
    )
    assert (body["n"], body["logprobs"], body["top_logprobs"]) == (3, True, 4)
    plain = wire.build_body(request(), stream=True)
    assert not {"n", "logprobs", "top_logprobs"} & set(plain)
