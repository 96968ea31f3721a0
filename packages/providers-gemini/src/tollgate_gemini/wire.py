"""Gemini's generateContent API on the wire: request bodies, chunks, usage, finish reasons.

Pure functions and a small stream parser, no I/O. Requests arrive OpenAI-shaped and are
translated: system and developer messages become ``systemInstruction``, assistant messages
become role ``model``, and the sampling fields go into ``generationConfig``.
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
    ResponseFormat,
    StreamEnd,
    StreamEvent,
    TextDelta,
    TextPart,
    TokenLogprob,
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
from tollgate_core.streaming import (
    NO_EVENTS,
    choice_index,
    count_sum,
    finish_reason,
    log_probability,
)
from tollgate_core.tool_calls import tool_arguments
from tollgate_core.upstream import check_extras, stream_error

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
API_VERSION = "v1beta"

SUPPORTED_EXTRAS = frozenset(
    {"seed", "presence_penalty", "frequency_penalty", "top_k", "response_format"}
)
"""Extras carried into ``generationConfig`` (``response_format`` only as ``text``,
``json_object`` or ``json_schema``)."""

SUPPORTED_PARAMETERS = frozenset(
    {
        "tools",
        "tool_choice",
        "response_format",
        "reasoning_effort",
        "image_url",
        "n",
        "logprobs",
        "top_logprobs",
    }
)
"""OpenAI parameters translated: ``functionDeclarations`` (with the JSON Schema as
``parametersJsonSchema``), ``toolConfig``, ``functionCall`` / ``functionResponse`` parts,
``inlineData`` for ``data:`` images, a thinking budget from ``reasoning_effort``,
``candidateCount`` from ``n``, and ``responseLogprobs`` / ``logprobs`` from ``logprobs`` /
``top_logprobs``."""

THINKING_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576}
"""Thinking tokens for each ``reasoning_effort``; above ``high``, Gemini's dynamic budget."""

UNSUPPORTED_FIELDS = (
    "user",
    "messages[].name",
    "logit_bias",
    "functions",
    "function_call",
    "parallel_tool_calls",
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
    names: dict[str, str] = {}
    """The function each earlier tool call named, by the call's id."""
    for message in request.messages:
        if message.role in ("system", "developer"):
            system.append({"text": message.content})
        elif message.role == "tool":
            part = _function_response(message, names)
            if (
                contents
                and contents[-1]["role"] == "user"
                and "functionResponse" in (contents[-1]["parts"][0])
            ):
                # The answers to parallel calls go back together, in one turn.
                contents[-1]["parts"].append(part)
            else:
                contents.append({"role": "user", "parts": [part]})
        else:
            role = "model" if message.role == "assistant" else "user"
            parts: list[dict[str, Any]]
            if message.parts:
                parts = [_part(part) for part in message.parts]
            else:
                parts = [{"text": message.content}] if message.content else []
            for call in message.tool_calls:
                names[call.id] = call.name
                parts.append({"functionCall": {"name": call.name, "args": tool_arguments(call)}})
            contents.append({"role": role, "parts": parts or [{"text": ""}]})
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
    if (fmt := request.response_format) is not None:
        config.update(_response_format(openai_response_format(fmt)))
    if request.reasoning_effort is not None:
        budget = THINKING_BUDGETS.get(request.reasoning_effort, -1)
        config["thinkingConfig"] = {"thinkingBudget": budget}
    if request.n != 1:
        config["candidateCount"] = request.n
    if request.logprobs:
        config["responseLogprobs"] = True
        if request.top_logprobs:
            config["logprobs"] = request.top_logprobs
    body: dict[str, Any] = {"contents": contents, "generationConfig": config}
    if system:
        body["systemInstruction"] = {"parts": system}
    if request.tools:
        body["tools"] = [{"functionDeclarations": [_declaration(t) for t in request.tools]}]
    if (choice := request.tool_choice) is not None:
        calling: dict[str, Any] = {"mode": {"none": "NONE", "auto": "AUTO"}.get(choice.mode, "ANY")}
        if choice.mode == "function" and choice.name:
            calling["allowedFunctionNames"] = [choice.name]
        body["toolConfig"] = {"functionCallingConfig": calling}
    return body


def openai_response_format(fmt: ResponseFormat) -> dict[str, Any]:
    """The OpenAI ``response_format`` object of `fmt` (read by `_response_format`)."""
    if fmt.type != "json_schema":
        return {"type": fmt.type}
    return {"type": "json_schema", "json_schema": {"name": fmt.name, "schema": fmt.schema}}


def _part(part: ContentPart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"text": part.text}
    if part.url[:5].lower() != "data:":
        # Gemini takes no image URL: the gateway fetched it into a data: URL at planning
        # (`Provider.accepts_image_urls`), so only a caller that skipped that gets here.
        raise UpstreamBadRequest("Gemini models take images as data: URLs only")
    try:
        image = parse_data_url(part.url)
    except ImageRefused as exc:
        raise UpstreamBadRequest(exc.message) from None
    data = base64.b64encode(image.data).decode()
    return {"inlineData": {"mimeType": image.mime_type, "data": data}}


def _function_response(message: Message, names: Mapping[str, str]) -> dict[str, Any]:
    name = names.get(message.tool_call_id or "")
    if name is None:
        raise UpstreamBadRequest("a tool message must answer a tool call of an earlier message")
    try:
        result = orjson.loads(message.content)
    except orjson.JSONDecodeError:
        result = None
    # Gemini's response is an object: other results are wrapped.
    response = result if isinstance(result, dict) else {"result": message.content}
    return {"functionResponse": {"name": name, "response": response}}


def _declaration(tool: Tool) -> dict[str, Any]:
    data: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        data["description"] = tool.description
    if tool.parameters is not None:
        data["parametersJsonSchema"] = tool.parameters
    return data


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

    __slots__ = ("_calls", "_reasons", "_reported", "_secrets", "finish_reason", "usage")

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets = tuple(secrets)
        self.finish_reason: FinishReason | None = None
        """The finish reason of the first candidate that reported one."""
        self.usage: Usage | None = None
        self._reported = False
        self._calls: dict[int, int] = {}
        """Function calls seen so far in each candidate: its next call's OpenAI index."""
        self._reasons: dict[int, FinishReason] = {}
        """Each candidate's finish reason, by index."""

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
        """The events of one payload, for `tollgate_core.streaming.stream_events`.

        Raises:
            UpstreamError: for an ``{"error": ...}`` payload.
        """
        chunk = loads(data)
        if not isinstance(chunk, dict):
            return NO_EVENTS
        if (error := chunk.get("error")) is not None:
            raise error_from_object(error, self._secrets)
        events: list[StreamEvent] = []
        # Every chunk may carry usageMetadata; only the last one is complete.
        if (meta := chunk.get("usageMetadata")) is not None:
            self.usage = parse_usage(meta)
            if not self._reported and self.usage is not None:
                # The first already has the exact prompt count: hand it over once, so that a
                # cut stream is charged by it.
                self._reported = True
                events.append(UsageReport(self.usage))
        candidates = chunk.get("candidates")
        if not candidates or not isinstance(candidates, list):
            feedback = chunk.get("promptFeedback")
            if isinstance(feedback, dict) and feedback.get("blockReason"):
                self.finish_reason = self._reasons[0] = "content_filter"
            return tuple(events)
        for candidate in candidates:
            if isinstance(candidate, dict):
                self._candidate(candidate, events)
        return tuple(events)

    def _candidate(self, candidate: Mapping[str, Any], events: list[StreamEvent]) -> None:
        index = choice_index(candidate.get("index", 0))
        if reason := candidate.get("finishReason"):
            mapped = self._reasons[index] = map_finish_reason(reason)
            if self.finish_reason is None:
                self.finish_reason = mapped
        if text := _candidate_text(candidate):
            logprobs = candidate.get("logprobsResult")
            if index or logprobs:
                events.append(TextDelta(text, index, token_logprobs(logprobs)))
            else:
                events.append(TextDelta(text))
        first = self._calls.get(index, 0)
        if calls := function_calls(candidate, first=first):
            self._calls[index] = first + len(calls)
            events.extend(
                ToolCallDelta(number, call.id, call.name, call.arguments, index)
                for number, call in enumerate(calls, start=first)
            )

    def end(self) -> StreamEnd:
        def reason(index: int) -> FinishReason:
            found = self._reasons.get(index, self.finish_reason or "stop")
            # Gemini says STOP after a function call; OpenAI's clients expect tool_calls.
            return "tool_calls" if found == "stop" and self._calls.get(index) else found

        reasons: tuple[FinishReason, ...] = ()
        if max(self._reasons, default=0) > 0 or max(self._calls, default=0) > 0:
            last = max(max(self._reasons, default=0), max(self._calls, default=0))
            reasons = tuple(reason(index) for index in range(last + 1))
        return StreamEnd(finish_reason=reason(0), usage=self.usage, finish_reasons=reasons)


def token_logprobs(raw: object) -> tuple[TokenLogprob, ...]:
    """A candidate's ``logprobsResult`` as token log-probabilities (malformed items are
    skipped): ``chosenCandidates[i]`` is the token chosen at step i, ``topCandidates[i]`` the
    most likely ones at that step."""
    if not isinstance(raw, dict):
        return ()
    chosen, top = raw.get("chosenCandidates"), raw.get("topCandidates")
    if not isinstance(chosen, list):
        return ()
    steps = top if isinstance(top, list) else []
    tokens: list[TokenLogprob] = []
    for step, item in enumerate(chosen):
        pair = _token_pair(item)
        if pair is None:
            continue
        alternatives: list[tuple[str, float]] = []
        at_step = steps[step] if step < len(steps) else None
        if isinstance(at_step, dict) and isinstance(at_step.get("candidates"), list):
            for alternative in at_step["candidates"][:MAX_TOP_LOGPROBS]:
                if (alt := _token_pair(alternative)) is not None:
                    alternatives.append(alt)
        tokens.append(TokenLogprob(pair[0], pair[1], tuple(alternatives)))
    return tuple(tokens)


MAX_TOP_LOGPROBS = 20
"""The most alternatives per token passed on, whatever the upstream sent."""


def _token_pair(item: object) -> tuple[str, float] | None:
    if not isinstance(item, dict):
        return None
    token, logprob = item.get("token"), log_probability(item.get("logProbability"))
    if not isinstance(token, str) or logprob is None:
        return None
    return token, logprob


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
    calls = function_calls(candidate, first=0)
    reason = map_finish_reason(candidate.get("finishReason"))
    return Completion(
        text=_candidate_text(candidate),
        finish_reason="tool_calls" if calls and reason == "stop" else reason,
        usage=usage,
        tool_calls=calls,
    )


def function_calls(candidate: Mapping[str, Any], *, first: int) -> tuple[ToolCall, ...]:
    """The ``functionCall`` parts of a candidate as whole tool calls; a call without an id
    gets one from its place in the answer (Gemini's ids are optional)."""
    content = candidate.get("content")
    if not isinstance(content, dict):
        return ()
    calls: list[ToolCall] = []
    for part in content.get("parts") or ():
        call = part.get("functionCall") if isinstance(part, dict) else None
        if not isinstance(call, dict):
            continue
        name, call_id = call.get("name"), call.get("id")
        calls.append(
            ToolCall(
                id=call_id
                if isinstance(call_id, str) and call_id
                else f"call_{first + len(calls)}",
                name=name if isinstance(name, str) else "",
                arguments=orjson.dumps(call.get("args") or {}).decode(),
            )
        )
    return tuple(calls)
