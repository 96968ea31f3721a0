"""Anthropic's Messages API on the wire: request bodies, stream events, usage, finish reasons.

Pure functions and a small event parser, no I/O. Requests arrive OpenAI-shaped and are
translated: system and developer messages are joined into the top-level ``system``, and
consecutive messages of the same role are merged, because Anthropic requires user and
assistant turns to alternate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from tollgate_core import (
    Completion,
    FinishReason,
    GenerationRequest,
    StreamEnd,
    StreamEvent,
    TextDelta,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamUnavailable,
    Usage,
    UsageReport,
)
from tollgate_core.metering import token_count
from tollgate_core.streaming import NO_EVENTS, count_sum, finish_reason
from tollgate_core.upstream import check_extras, stream_error

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"

SUPPORTED_EXTRAS = frozenset({"top_k"})
"""Extras carried as Anthropic fields of the same name."""

UNSUPPORTED_FIELDS = (
    "messages[].name",
    "tool messages",
    "n",
    "seed",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "parallel_tool_calls",
    "reasoning_effort",
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
        if message.role == "tool":
            raise UpstreamBadRequest("Anthropic upstreams do not take tool messages")
        role = "assistant" if message.role == "assistant" else "user"
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += "\n\n" + message.content
        else:
            messages.append({"role": role, "content": message.content})
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
    if request.extra:
        body.update(request.extra)
    if stream:
        body["stream"] = True
    return body


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

    __slots__ = ("_reported", "_secrets", "_usage", "done", "stop_reason")

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets = tuple(secrets)
        self._usage: dict[str, Any] | None = None
        self.stop_reason: str | None = None
        self._reported = False
        self.done = False
        """True once ``message_stop`` arrived."""

    @property
    def finished(self) -> bool:
        return self.done

    def read(self, event: str | None, data: bytes) -> tuple[StreamEvent, ...]:
        """The events of one stream event, for `tollgate_core.streaming.stream_events`."""
        if text := self.feed(event, data):
            return (TextDelta(text),)
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
            # thinking_delta, signature_delta and input_json_delta carry no answer text.
            if delta.get("type") == "text_delta":
                text = delta.get("text")
                return text if isinstance(text, str) and text else None
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
    text = "".join(
        block["text"]
        for block in body.get("content") or ()
        if isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    )
    return Completion(
        text=text,
        finish_reason=map_finish_reason(body.get("stop_reason")),
        usage=parse_usage(body.get("usage")),
    )
