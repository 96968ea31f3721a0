"""OpenAI chat completions on the wire: request bodies, chunks, usage, finish reasons, errors.

Pure functions and a small stream parser, no I/O, so every edge case is testable without a
network. Requests are already OpenAI-shaped; the work here is mostly in reading the answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from tollgate_core import (
    Completion,
    ContentPart,
    FinishReason,
    GenerationRequest,
    Message,
    ResponseFormat,
    StreamEnd,
    StreamEvent,
    TextDelta,
    TextPart,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolCallDelta,
    UpstreamError,
    UpstreamUnavailable,
    Usage,
)
from tollgate_core.metering import token_count
from tollgate_core.streaming import NO_EVENTS, choice_index, finish_reason, log_probability
from tollgate_core.upstream import check_extras, stream_error

DEFAULT_BASE_URL = "https://bothub.chat/api/v2/openai/v1"

MAX_TOKENS_FIELDS = ("max_tokens", "max_completion_tokens")
"""How an upstream is told the output limit. OpenAI's reasoning models accept only
``max_completion_tokens``; many compatible servers accept only ``max_tokens`` (the default)."""

SUPPORTED_EXTRAS = frozenset(
    {
        "frequency_penalty",
        "presence_penalty",
        "seed",
        "logit_bias",
        "service_tier",
        "metadata",
        "store",
        "verbosity",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
        "prediction",
    }
)
"""OpenAI request fields carried through `GenerationRequest.extra` unchanged."""

SUPPORTED_PARAMETERS = frozenset(
    {
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "reasoning_effort",
        "image_url",
        "n",
        "logprobs",
        "top_logprobs",
    }
)
"""OpenAI request parameters carried by `GenerationRequest`'s own fields, sent as they came."""

UNSUPPORTED_FIELDS = (
    "functions",
    "function_call",
    "audio",
    "modalities",
    "web_search_options",
    "moderation",
    "prompt_cache_options",
)
"""OpenAI request fields this provider does not carry: Tollgate's answers hold text and tool
calls, with no audio or search annotations, and no legacy function calls."""

_FINISH_REASONS: Mapping[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}

_ERROR_TYPE_STATUS: Mapping[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "invalid_api_key": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "requests": 429,
    "tokens": 429,
}


def build_body(
    request: GenerationRequest, *, stream: bool, max_tokens_field: str = "max_tokens"
) -> dict[str, Any]:
    """The JSON body of a chat completions request.

    Raises:
        UpstreamBadRequest: when `request.extra` holds a field this provider cannot carry.
    """
    if request.extra:
        check_extras(request.extra, SUPPORTED_EXTRAS, upstream="OpenAI")
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [_message(message) for message in request.messages],
        max_tokens_field: request.max_tokens,
    }
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop"] = list(request.stop)
    if request.user is not None:
        body["user"] = request.user
    if request.tools:
        body["tools"] = [_tool(tool) for tool in request.tools]
    if (choice := request.tool_choice) is not None:
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice.name}}
            if choice.mode == "function"
            else choice.mode
        )
    if request.parallel_tool_calls is not None:
        body["parallel_tool_calls"] = request.parallel_tool_calls
    if (fmt := request.response_format) is not None:
        body["response_format"] = response_format(fmt)
    if request.reasoning_effort is not None:
        body["reasoning_effort"] = request.reasoning_effort
    if request.n != 1:
        body["n"] = request.n
    if request.logprobs:
        body["logprobs"] = True
        if request.top_logprobs is not None:
            body["top_logprobs"] = request.top_logprobs
    if request.extra:
        body.update(request.extra)
    if stream:
        body["stream"] = True
        # Without this OpenAI sends no usage at all in a stream.
        body["stream_options"] = {"include_usage": True}
    return body


def _message(message: Message) -> dict[str, Any]:
    content: Any = message.content
    if message.parts:
        content = [_part(part) for part in message.parts]
    elif message.tool_calls and not content:
        content = None  # an assistant turn that only called tools
    data: dict[str, Any] = {"role": message.role, "content": content}
    if message.name is not None:
        data["name"] = message.name
    if message.tool_calls:
        data["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        data["tool_call_id"] = message.tool_call_id
    return data


def _part(part: ContentPart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    image: dict[str, Any] = {"url": part.url}
    if part.detail is not None:
        image["detail"] = part.detail
    return {"type": "image_url", "image_url": image}


def _tool(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    if tool.parameters is not None:
        function["parameters"] = tool.parameters
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def response_format(fmt: ResponseFormat) -> dict[str, Any]:
    """OpenAI's ``response_format`` object for `fmt`."""
    if fmt.type != "json_schema":
        return {"type": fmt.type}
    schema: dict[str, Any] = {"name": fmt.name or "response"}
    if fmt.description is not None:
        schema["description"] = fmt.description
    if fmt.schema is not None:
        schema["schema"] = fmt.schema
    if fmt.strict is not None:
        schema["strict"] = fmt.strict
    return {"type": "json_schema", "json_schema": schema}


def tool_call_deltas(raw: object, *, choice: int = 0) -> tuple[ToolCallDelta, ...]:
    """The `ToolCallDelta`s of a chunk's ``delta.tool_calls`` (malformed items are skipped)."""
    if not isinstance(raw, list):
        return ()
    deltas: list[ToolCallDelta] = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        index = item.get("index", 0)
        function = item.get("function")
        if not isinstance(function, dict):
            function = {}
        call_id, name, arguments = item.get("id"), function.get("name"), function.get("arguments")
        deltas.append(
            ToolCallDelta(
                index=index if isinstance(index, int) and not isinstance(index, bool) else 0,
                id=call_id if isinstance(call_id, str) else None,
                name=name if isinstance(name, str) else None,
                arguments=arguments if isinstance(arguments, str) else "",
                choice=choice,
            )
        )
    return tuple(deltas)


def tool_calls(raw: object) -> tuple[ToolCall, ...]:
    """The whole calls of a non-streaming ``message.tool_calls``."""
    return tuple(
        ToolCall(id=delta.id or "", name=delta.name or "", arguments=delta.arguments)
        for delta in tool_call_deltas(raw)
    )


def parse_usage(data: object) -> Usage | None:
    """Normalise an OpenAI ``usage`` object; None when it is absent or null.

    OpenAI's buckets are already inclusive: ``prompt_tokens`` includes the cached tokens and
    ``completion_tokens`` the reasoning tokens.
    """
    if not isinstance(data, dict) or (
        "prompt_tokens" not in data and "completion_tokens" not in data
    ):
        return None
    prompt_details = data.get("prompt_tokens_details") or {}
    completion_details = data.get("completion_tokens_details") or {}
    details: dict[str, int] = {}
    for source, key, name in (
        (prompt_details, "audio_tokens", "input_audio_tokens"),
        (completion_details, "audio_tokens", "output_audio_tokens"),
        (completion_details, "accepted_prediction_tokens", "accepted_prediction_tokens"),
        (completion_details, "rejected_prediction_tokens", "rejected_prediction_tokens"),
    ):
        if isinstance(source, dict) and (count := token_count(source.get(key))):
            details[name] = count
    return Usage(
        input_tokens=token_count(data.get("prompt_tokens")),
        output_tokens=token_count(data.get("completion_tokens")),
        cached_input_tokens=token_count(prompt_details.get("cached_tokens"))
        if isinstance(prompt_details, dict)
        else 0,
        reasoning_tokens=token_count(completion_details.get("reasoning_tokens"))
        if isinstance(completion_details, dict)
        else 0,
        details=details,
    )


def map_finish_reason(value: object) -> FinishReason:
    """OpenAI's finish reason as Tollgate's; unknown or missing reasons read as ``stop``."""
    return finish_reason(_FINISH_REASONS, value)


def error_status(error: Mapping[str, Any]) -> int:
    """The HTTP status an OpenAI error object stands for (mid-stream errors carry none)."""
    code = error.get("code")
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    if isinstance(code, int) and 400 <= code <= 599:
        return code
    for key in (error.get("type"), code):
        if isinstance(key, str) and key in _ERROR_TYPE_STATUS:
            return _ERROR_TYPE_STATUS[key]
    return 500


def error_from_object(error: object, secrets: Iterable[str | None]) -> UpstreamError:
    """The core error for an ``{"error": ...}`` object sent inside a 200 answer or a stream."""
    if isinstance(error, dict):
        message = error.get("message")
        return stream_error(
            error_status(error), message if isinstance(message, str) else "", secrets=secrets
        )
    return stream_error(500, error if isinstance(error, str) else "", secrets=secrets)


def loads(data: bytes) -> Any:
    """Parse JSON from the upstream; malformed JSON is an upstream failure, not our bug."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamUnavailable("upstream sent malformed JSON") from None


class ChunkParser:
    """Reads the ``data:`` payloads of a chat completions stream, one at a time."""

    __slots__ = ("_reasons", "_secrets", "done", "finish_reason", "usage")

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets = tuple(secrets)
        self.done = False
        """True once ``data: [DONE]`` arrived."""
        self.finish_reason: str | None = None
        """The vendor's finish reason of the first choice that reported one."""
        self.usage: Usage | None = None
        self._reasons: dict[int, object] = {}
        """Each choice's finish reason, by index."""

    @property
    def finished(self) -> bool:
        """Whether the stream reached its end: ``[DONE]``, or at least a finish reason (some
        compatible servers end the body without ``[DONE]``)."""
        return self.done or self.finish_reason is not None

    def read(self, event: str | None, data: bytes) -> tuple[StreamEvent, ...]:
        """The events of one payload, for `tollgate_core.streaming.stream_events`.

        Raises:
            UpstreamError: for an ``{"error": ...}`` chunk.
        """
        if data == b"[DONE]":
            self.done = True
            return NO_EVENTS
        chunk = loads(data)
        if not isinstance(chunk, dict):
            return NO_EVENTS
        if (error := chunk.get("error")) is not None:
            raise error_from_object(error, self._secrets)
        if (usage := parse_usage(chunk.get("usage"))) is not None:
            self.usage = usage
        choices = chunk.get("choices")
        if not choices or not isinstance(choices, list):
            return NO_EVENTS
        if len(choices) == 1:  # the common case: one choice per chunk
            return self._choice(choices[0])
        return tuple(event for choice in choices for event in self._choice(choice))

    def _choice(self, choice: object) -> tuple[StreamEvent, ...]:
        if not isinstance(choice, dict):
            return NO_EVENTS
        index = choice_index(choice.get("index", 0))
        if reason := choice.get("finish_reason"):
            if self.finish_reason is None:
                self.finish_reason = reason
            self._reasons[index] = reason
        delta = choice.get("delta")
        if not delta or not isinstance(delta, dict):
            return NO_EVENTS
        # A refusal (structured outputs) is the only text the model produced: pass it on.
        text = delta.get("content") or delta.get("refusal")
        events: tuple[StreamEvent, ...] = NO_EVENTS
        if isinstance(text, str) and text:
            raw_logprobs = choice.get("logprobs")
            if index or raw_logprobs:
                events = (TextDelta(text, index, token_logprobs(raw_logprobs)),)
            else:
                events = (TextDelta(text),)
        if (calls := delta.get("tool_calls")) is not None:
            events += tool_call_deltas(calls, choice=index)
        return events

    def end(self) -> StreamEnd:
        """The `StreamEnd` for what was parsed."""
        reasons: tuple[FinishReason, ...] = ()
        if self._reasons and max(self._reasons) > 0:
            reasons = tuple(
                map_finish_reason(self._reasons.get(i)) for i in range(max(self._reasons) + 1)
            )
        return StreamEnd(
            finish_reason=map_finish_reason(self._reasons.get(0, self.finish_reason)),
            usage=self.usage,
            finish_reasons=reasons,
        )


def token_logprobs(raw: object) -> tuple[TokenLogprob, ...]:
    """The tokens of a choice's ``logprobs.content`` (malformed items are skipped)."""
    content = raw.get("content") if isinstance(raw, dict) else None
    if not isinstance(content, list):
        return ()
    tokens: list[TokenLogprob] = []
    for item in content:
        if not isinstance(item, dict):
            continue
        token, logprob = item.get("token"), log_probability(item.get("logprob"))
        if not isinstance(token, str) or logprob is None:
            continue
        top: list[tuple[str, float]] = []
        for alternative in item.get("top_logprobs") or ():
            if isinstance(alternative, dict):
                alt_token = alternative.get("token")
                alt_logprob = log_probability(alternative.get("logprob"))
                if isinstance(alt_token, str) and alt_logprob is not None:
                    top.append((alt_token, alt_logprob))
        tokens.append(TokenLogprob(token, logprob, tuple(top[:MAX_TOP_LOGPROBS])))
    return tuple(tokens)


MAX_TOP_LOGPROBS = 20
"""OpenAI's limit on ``top_logprobs``: an upstream that sends more is cut to it."""


def parse_completion(data: bytes, secrets: Iterable[str | None] = ()) -> Completion:
    """Parse a non-streaming chat completion body.

    Raises:
        UpstreamError: for an ``{"error": ...}`` body sent with a 200 status.
    """
    body = loads(data)
    if not isinstance(body, dict):
        raise UpstreamUnavailable("upstream sent an unexpected answer")
    if (error := body.get("error")) is not None:
        raise error_from_object(error, secrets)
    choices = body.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    text = message.get("content") or message.get("refusal") or ""
    return Completion(
        text=text if isinstance(text, str) else "",
        finish_reason=map_finish_reason(choice.get("finish_reason")),
        usage=parse_usage(body.get("usage")),
        tool_calls=tool_calls(message.get("tool_calls")),
    )
