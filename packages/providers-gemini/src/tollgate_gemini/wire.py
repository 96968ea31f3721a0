"""Gemini's generateContent API on the wire: request bodies, chunks, usage, finish reasons.

Pure functions and a small stream parser, no I/O. Requests arrive OpenAI-shaped and are
translated: system and developer messages become ``systemInstruction``, assistant messages
become role ``model``, and the sampling fields go into ``generationConfig``.
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

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
API_VERSION = "v1beta"

SUPPORTED_EXTRAS = frozenset(
    {"seed", "presence_penalty", "frequency_penalty", "top_k", "response_format"}
)
"""Extras carried into ``generationConfig`` (``response_format`` only as ``text``,
``json_object`` or ``json_schema``)."""

UNSUPPORTED_FIELDS = (
    "user",
    "messages[].name",
    "tool messages",
    "n",
    "logprobs",
    "top_logprobs",
    "logit_bias",
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
"""OpenAI request fields Gemini cannot carry. ``user`` and message names are dropped (Gemini
has no such fields); the others are refused."""

_FINISH_REASONS: Mapping[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "MODEL_ARMOR": "content_filter",
}

_SIMPLE_EXTRAS: Mapping[str, str] = {
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
    "top_k": "topK",
}


def model_path(model: str) -> str:
    """The model's segment of the URL: Gemini ids may arrive as ``models/<id>``."""
    return model.removeprefix("models/")


def build_body(request: GenerationRequest) -> dict[str, Any]:
    """The JSON body of a generateContent (or streamGenerateContent) request.

    Raises:
        UpstreamBadRequest: for tool messages, a conversation with only system messages, or
            an extra this provider cannot carry.
    """
    if request.extra:
        check_extras(request.extra, SUPPORTED_EXTRAS, upstream="Gemini")
    system: list[dict[str, str]] = []
    contents: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role in ("system", "developer"):
            system.append({"text": message.content})
        elif message.role == "tool":
            raise UpstreamBadRequest("Gemini upstreams do not take tool messages")
        else:
            role = "model" if message.role == "assistant" else "user"
            contents.append({"role": role, "parts": [{"text": message.content}]})
    if not contents:
        raise UpstreamBadRequest("a Gemini request needs at least one user message")
    config: dict[str, Any] = {"maxOutputTokens": request.max_tokens}
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.stop:
        config["stopSequences"] = list(request.stop)
    for name, value in request.extra.items():
        if name == "response_format":
            config.update(_response_format(value))
        else:
            config[_SIMPLE_EXTRAS[name]] = value
    body: dict[str, Any] = {"contents": contents, "generationConfig": config}
    if system:
        body["systemInstruction"] = {"parts": system}
    return body


def _response_format(value: object) -> dict[str, Any]:
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema" and isinstance(value, dict):
        schema = (value.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            return {"responseMimeType": "application/json", "responseJsonSchema": schema}
    raise UpstreamBadRequest("response_format must be text, json_object or json_schema")


def parse_usage(meta: object) -> Usage | None:
    """Normalise ``usageMetadata``; None when it is absent.

    ``promptTokenCount`` already includes ``cachedContentTokenCount``. Thinking tokens are
    reported apart from the candidates' (``thoughtsTokenCount``) and billed as output, so they
    are added to the output and also kept as reasoning tokens. Tool-use prompt tokens are
    input too.
    """
    if not isinstance(meta, dict):
        return None
    thoughts = token_count(meta.get("thoughtsTokenCount"))
    tool_prompt = token_count(meta.get("toolUsePromptTokenCount"))
    details = {"tool_use_prompt_tokens": tool_prompt} if tool_prompt else {}
    return Usage(
        input_tokens=count_sum(token_count(meta.get("promptTokenCount")), tool_prompt),
        output_tokens=count_sum(token_count(meta.get("candidatesTokenCount")), thoughts),
        cached_input_tokens=token_count(meta.get("cachedContentTokenCount")),
        reasoning_tokens=thoughts,
        details=details,
    )


def map_finish_reason(value: object) -> FinishReason:
    """Gemini's finish reason as Tollgate's; unknown reasons (``OTHER``…) read as ``stop``."""
    return finish_reason(_FINISH_REASONS, value)


def error_status(status: int, body: bytes) -> int:
    """The status to report for a Gemini error answer.

    Gemini answers an invalid key with a 400 whose details say ``API_KEY_INVALID``: that is
    our configuration's fault, not the client's, so it is reported as a 401.
    """
    if status == 400 and b"API_KEY_INVALID" in body:
        return 401
    return status


def error_from_object(error: object, secrets: Iterable[str | None]) -> UpstreamError:
    """The core error for an ``{"error": {...}}`` object inside a stream."""
    if not isinstance(error, dict):
        return stream_error(500, "", secrets=secrets)
    code = error.get("code")
    status = code if isinstance(code, int) and 400 <= code <= 599 else 500
    message = error.get("message")
    return stream_error(status, message if isinstance(message, str) else "", secrets=secrets)


def loads(data: bytes) -> Any:
    """Parse JSON from the upstream; malformed JSON is an upstream failure."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamUnavailable("upstream sent malformed JSON") from None


def _candidate_text(candidate: Mapping[str, Any]) -> str:
    content = candidate.get("content")
    if not isinstance(content, dict):
        return ""
    # Thought summaries (`thought: true`) are not part of the answer.
    return "".join(
        part["text"]
        for part in content.get("parts") or ()
        if isinstance(part, dict) and isinstance(part.get("text"), str) and not part.get("thought")
    )


class ChunkParser:
    """Reads the ``data:`` payloads of a streamGenerateContent (``alt=sse``) stream."""

    __slots__ = ("_reported", "_secrets", "finish_reason", "usage")

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets = tuple(secrets)
        self.finish_reason: FinishReason | None = None
        self.usage: Usage | None = None
        self._reported = False

    @property
    def done(self) -> bool:
        """Never: Gemini has no terminal event, and usage may still come after the chunk with
        the finish reason, so the stream is read to its end."""
        return False

    @property
    def finished(self) -> bool:
        """Whether a finish reason arrived: Gemini's streams have no other terminal event."""
        return self.finish_reason is not None

    def read(self, event: str | None, data: bytes) -> tuple[StreamEvent, ...]:
        """The events of one payload, for `tollgate_core.streaming.stream_events`."""
        text = self.feed(data)
        if not self._reported and self.usage is not None:
            # Every chunk may carry usageMetadata; the first already has the exact prompt
            # count: hand it over once, so a cut stream is charged by it.
            self._reported = True
            report = UsageReport(self.usage)
            return (report, TextDelta(text)) if text else (report,)
        return (TextDelta(text),) if text else NO_EVENTS

    def feed(self, data: bytes) -> str | None:
        """Parse one payload; returns its text, if any.

        Raises:
            UpstreamError: for an ``{"error": ...}`` payload.
        """
        chunk = loads(data)
        if not isinstance(chunk, dict):
            return None
        if (error := chunk.get("error")) is not None:
            raise error_from_object(error, self._secrets)
        # Every chunk may carry usageMetadata; only the last one is complete.
        if (meta := chunk.get("usageMetadata")) is not None:
            self.usage = parse_usage(meta)
        candidates = chunk.get("candidates")
        if not candidates:
            feedback = chunk.get("promptFeedback")
            if isinstance(feedback, dict) and feedback.get("blockReason"):
                self.finish_reason = "content_filter"
            return None
        candidate = candidates[0]
        if reason := candidate.get("finishReason"):
            self.finish_reason = map_finish_reason(reason)
        return _candidate_text(candidate) or None

    def end(self) -> StreamEnd:
        return StreamEnd(finish_reason=self.finish_reason or "stop", usage=self.usage)


def parse_completion(data: bytes, secrets: Iterable[str | None] = ()) -> Completion:
    """Parse a non-streaming generateContent body."""
    body = loads(data)
    if not isinstance(body, dict):
        raise UpstreamUnavailable("upstream sent an unexpected answer")
    if (error := body.get("error")) is not None:
        raise error_from_object(error, secrets)
    usage = parse_usage(body.get("usageMetadata"))
    candidates = body.get("candidates")
    if not candidates:
        # A blocked prompt has no candidate at all, only promptFeedback.blockReason.
        feedback = body.get("promptFeedback")
        blocked = isinstance(feedback, dict) and bool(feedback.get("blockReason"))
        return Completion(
            text="", finish_reason="content_filter" if blocked else "stop", usage=usage
        )
    candidate = candidates[0]
    return Completion(
        text=_candidate_text(candidate),
        finish_reason=map_finish_reason(candidate.get("finishReason")),
        usage=usage,
    )
