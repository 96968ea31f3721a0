"""Anthropic's Messages API on the wire: request bodies, stream events, usage, finish reasons.

Pure functions and a small event parser, no I/O. Requests arrive OpenAI-shaped and are
translated: system and developer messages are joined into the top-level ``system``, and
consecutive messages of the same role are merged, because Anthropic requires user and
assistant turns to alternate.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from tollgate_core import (
    Completion,
    ContentPart,
    FinishReason,
    GenerationRequest,
    Message,
    ReasoningDelta,
    StreamEnd,
    StreamEvent,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamUnavailable,
    Usage,
    UsageReport,
)
from tollgate_core.images import ImageRefused, parse_data_url
from tollgate_core.metering import token_count
from tollgate_core.streaming import NO_EVENTS, count_sum, finish_reason
from tollgate_core.tool_calls import tool_arguments
from tollgate_core.upstream import check_extras, stream_error

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"

SUPPORTED_EXTRAS = frozenset({"top_k"})
"""Extras carried as Anthropic fields of the same name."""

SUPPORTED_PARAMETERS = frozenset(
    {
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "reasoning_effort",
        "image_url",
    }
)
"""OpenAI parameters translated: tools and tool_choice (``tool_use`` / ``tool_result``
blocks), images (``base64`` or ``url`` sources), JSON output (``output_config.format``),
thinking from ``reasoning_effort``."""

THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}
"""Thinking tokens for each ``reasoning_effort`` (Anthropic's least is 1024); above ``high``
the largest the output limit allows."""

UNSUPPORTED_FIELDS = (
    "messages[].name",
    "n",
    "seed",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "presence_penalty",
    "frequency_penalty",
    "functions",
    "function_call",
    "service_tier",
    "audio",
    "modalities",
)
"""OpenAI request fields Anthropic cannot carry. Message names are dropped; the others are
refused."""

_FINISH_REASONS: Mapping[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_ERROR_TYPE_STATUS: Mapping[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "gateway_timeout_error": 504,
    "overloaded_error": 529,
}

_SYSTEM_ROLES = ("system", "developer")


def build_body(request: GenerationRequest, *, stream: bool) -> dict[str, Any]:
    """The JSON body of a Messages API request.

    Raises:
        UpstreamBadRequest: for tool messages, a conversation with only system messages, or
            an extra this provider cannot carry.
    """
    if request.extra:
        check_extras(request.extra, SUPPORTED_EXTRAS, upstream="Anthropic")
    system = [m.content for m in request.messages if m.role in _SYSTEM_ROLES]
    messages: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role in _SYSTEM_ROLES:
            continue
        role = "assistant" if message.role == "assistant" else "user"
        content = _content(message)
        if messages and messages[-1]["role"] == role:
            # Anthropic requires turns to alternate: same-role messages become one.
            last = messages[-1]
            if isinstance(last["content"], str) and isinstance(content, str):
                last["content"] += "\n\n" + content
            else:
                last["content"] = _blocks(last["content"]) + _blocks(content)
        else:
            messages.append({"role": role, "content": content})
    if not messages:
        raise UpstreamBadRequest("an Anthropic request needs at least one user message")
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": messages,
    }
    if system:
        body["system"] = "\n\n".join(system)
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.user is not None:
        body["metadata"] = {"user_id": request.user}
    if request.tools:
        body["tools"] = [_tool(tool) for tool in request.tools]
    choice = _tool_choice(request)
    if choice is not None:
        body["tool_choice"] = choice
    if (fmt := request.response_format) is not None and fmt.type != "text":
        schema = fmt.schema if fmt.type == "json_schema" and fmt.schema else {"type": "object"}
        body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    if request.reasoning_effort not in (None, "none"):
        body["thinking"] = _thinking(request)
    if request.extra:
        body.update(request.extra)
    if stream:
        body["stream"] = True
    return body


def _content(message: Message) -> str | list[dict[str, Any]]:
    if message.role == "tool":
        if message.tool_call_id is None:
            raise UpstreamBadRequest("a tool message needs the tool_call_id it answers")
        result = {"type": "tool_result", "tool_use_id": message.tool_call_id}
        result["content"] = message.content
        return [result]
    if not message.parts and not message.tool_calls:
        return message.content
    blocks: list[dict[str, Any]] = []
    if message.parts:
        blocks += [_part(part) for part in message.parts]
    elif message.content:
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        blocks.append(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": tool_arguments(call)}
        )
    return blocks


def _blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _part(part: ContentPart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if part.url[:5].lower() == "data:":
        try:
            image = parse_data_url(part.url)
        except ImageRefused as exc:
            raise UpstreamBadRequest(exc.message) from None
        data = base64.b64encode(image.data).decode()
        source = {"type": "base64", "media_type": image.mime_type, "data": data}
        return {"type": "image", "source": source}
    return {"type": "image", "source": {"type": "url", "url": part.url}}


def _tool(tool: Tool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": tool.name,
        "input_schema": tool.parameters or {"type": "object", "properties": {}},
    }
    if tool.description is not None:
        data["description"] = tool.description
    if tool.strict is not None:
        data["strict"] = tool.strict
    return data


def _tool_choice(request: GenerationRequest) -> dict[str, Any] | None:
    choice = request.tool_choice
    if choice is None and request.parallel_tool_calls is None:
        return None
    mode = choice.mode if choice is not None else "auto"
    data: dict[str, Any] = {
        "none": {"type": "none"},
        "auto": {"type": "auto"},
        "required": {"type": "any"},
    }.get(mode) or {"type": "tool", "name": choice.name if choice else ""}
    if request.parallel_tool_calls is False and mode != "none":
        data["disable_parallel_tool_use"] = True
    return data


def _thinking(request: GenerationRequest) -> dict[str, Any]:
    # The budget must be at least 1024 and below max_tokens.
    most = request.max_tokens - 1
    budget = min(THINKING_BUDGETS.get(request.reasoning_effort or "", most), most)
    if budget < 1024:
        raise UpstreamBadRequest("reasoning_effort on Anthropic needs max_tokens above 1024")
    return {"type": "enabled", "budget_tokens": budget}


def parse_usage(raw: object) -> Usage | None:
    """Normalise an Anthropic ``usage`` object; None when it is absent.

    Anthropic's ``input_tokens`` excludes the tokens read from and written to the prompt
    cache; both are input, so they are added in. ``output_tokens`` includes any thinking.
    """
    if not isinstance(raw, dict):
        return None
    cache_read = token_count(raw.get("cache_read_input_tokens"))
    cache_write = token_count(raw.get("cache_creation_input_tokens"))
    output_details = raw.get("output_tokens_details")
    thinking = (
        token_count(output_details.get("thinking_tokens"))
        if isinstance(output_details, dict)
        else 0
    )
    details: dict[str, int] = {}
    if cache_write:
        details["cache_creation_input_tokens"] = cache_write
    server_tools = raw.get("server_tool_use")
    if isinstance(server_tools, dict):
        for name, count in server_tools.items():
            if count := token_count(count):
                details[name] = count
    return Usage(
        input_tokens=count_sum(token_count(raw.get("input_tokens")), cache_read, cache_write),
        output_tokens=token_count(raw.get("output_tokens")),
        cached_input_tokens=cache_read,
        reasoning_tokens=thinking,
        details=details,
    )


def map_finish_reason(value: object) -> FinishReason:
    """Anthropic's stop reason as Tollgate's; unknown reasons read as ``stop``."""
    return finish_reason(_FINISH_REASONS, value)


def error_from_object(error: object, secrets: Iterable[str | None]) -> UpstreamError:
    """The core error for an ``error`` event's ``{"type": ..., "message": ...}`` object."""
    if not isinstance(error, dict):
        return stream_error(500, "", secrets=secrets)
    status = _ERROR_TYPE_STATUS.get(str(error.get("type")), 500)
    message = error.get("message")
    return stream_error(status, message if isinstance(message, str) else "", secrets=secrets)


def loads(data: bytes) -> Any:
    """Parse JSON from the upstream; malformed JSON is an upstream failure."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamUnavailable("upstream sent malformed JSON") from None


class EventParser:
    """Reads the events of a Messages API stream.

    Usage comes in two parts: ``message_start`` has the input counts (and a small running
    output count), ``message_delta`` the final output count. Both are CUMULATIVE: a later value
    replaces an earlier one and is never added to it.
    """

    __slots__ = (
        "_call",
        "_calls",
        "_reported",
        "_secrets",
        "_thought",
        "_usage",
        "done",
        "stop_reason",
    )

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets = tuple(secrets)
        self._usage: dict[str, Any] | None = None
        self.stop_reason: str | None = None
        self._reported = False
        self._calls = 0
        """Tool calls begun so far: the next one's OpenAI index."""
        self._call: ToolCallDelta | None = None
        """The piece of a tool call the event just fed carries, for `read`."""
        self._thought: str | None = None
        """The piece of thinking the event just fed carries, for `read`."""
        self.done = False
        """True once ``message_stop`` arrived."""

    @property
    def finished(self) -> bool:
        return self.done

    def read(self, event: str | None, data: bytes) -> tuple[StreamEvent, ...]:
        """The events of one stream event, for `tollgate_core.streaming.stream_events`."""
        if text := self.feed(event, data):
            return (TextDelta(text),)
        if self._call is not None:
            call, self._call = self._call, None
            return (call,)
        if self._thought is not None:
            thought, self._thought = self._thought, None
            return (ReasoningDelta(thought),)
        if not self._reported and (usage := self.usage) is not None:
            # message_start carries the exact prompt count: hand it over at once, so a stream
            # cut short is charged the vendor's count.
            self._reported = True
            return (UsageReport(usage),)
        return NO_EVENTS

    def feed(self, event: str | None, data: bytes) -> str | None:
        """Parse one event; returns its text delta, if any.

        Raises:
            UpstreamError: for an ``error`` event.
        """
        if event == "ping":
            return None
        payload = loads(data)
        if not isinstance(payload, dict):
            return None
        kind = payload.get("type", event)
        if kind == "content_block_delta":
            delta = payload.get("delta") or {}
            # thinking_delta is handed over apart from the answer; signature_delta is dropped.
            kind = delta.get("type")
            if kind == "text_delta":
                text = delta.get("text")
                return text if isinstance(text, str) and text else None
            if kind == "thinking_delta":
                thought = delta.get("thinking")
                if isinstance(thought, str) and thought:
                    self._thought = thought
                return None
            if kind == "input_json_delta" and self._calls:
                fragment = delta.get("partial_json")
                if isinstance(fragment, str) and fragment:
                    self._call = ToolCallDelta(self._calls - 1, None, None, fragment)
            return None
        if kind == "content_block_start":
            block = payload.get("content_block") or {}
            if block.get("type") == "tool_use":
                call_id, name = block.get("id"), block.get("name")
                self._call = ToolCallDelta(
                    self._calls,
                    call_id if isinstance(call_id, str) else "",
                    name if isinstance(name, str) else "",
                    "",
                )
                self._calls += 1
            return None
        if kind == "message_start":
            message = payload.get("message") or {}
            self._merge_usage(message.get("usage"))
        elif kind == "message_delta":
            delta = payload.get("delta") or {}
            if reason := delta.get("stop_reason"):
                self.stop_reason = reason
            self._merge_usage(payload.get("usage"))
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            raise error_from_object(payload.get("error"), self._secrets)
        return None

    def _merge_usage(self, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        if self._usage is None:
            self._usage = {}
        # Later counts replace earlier ones (they are running totals); nulls change nothing.
        self._usage.update((key, value) for key, value in usage.items() if value is not None)

    @property
    def usage(self) -> Usage | None:
        return parse_usage(self._usage)

    def end(self) -> StreamEnd:
        return StreamEnd(finish_reason=map_finish_reason(self.stop_reason), usage=self.usage)


def parse_completion(data: bytes, secrets: Iterable[str | None] = ()) -> Completion:
    """Parse a non-streaming Messages API body."""
    body = loads(data)
    if not isinstance(body, dict):
        raise UpstreamUnavailable("upstream sent an unexpected answer")
    if body.get("type") == "error":
        raise error_from_object(body.get("error"), secrets)
    blocks = [block for block in body.get("content") or () if isinstance(block, dict)]
    text = "".join(
        block["text"]
        for block in blocks
        if block.get("type") == "text" and isinstance(block.get("text"), str)
    )
    calls = tuple(
        ToolCall(
            id=str(block.get("id") or ""),
            name=str(block.get("name") or ""),
            arguments=orjson.dumps(block.get("input") or {}).decode(),
        )
        for block in blocks
        if block.get("type") == "tool_use"
    )
    return Completion(
        text=text,
        finish_reason=map_finish_reason(body.get("stop_reason")),
        usage=parse_usage(body.get("usage")),
        tool_calls=calls,
    )
