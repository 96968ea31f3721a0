"""The three wire formats the fake upstream speaks: OpenAI chat, Gemini and Anthropic messages.

Each dialect turns one planned `Reply` into the vendor's JSON body, or into the frames of its
event stream, and knows the vendor's error shapes. The shapes follow the vendors' documented
responses closely enough to validate against their official SDK types.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

from tollgate_core.types import Usage

ProtocolName = Literal["openai", "gemini", "anthropic"]


def dumps(value: object) -> bytes:
    """Compact JSON, as the vendors send it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class ToolCallPlan:
    """The call the fake makes: the arguments are the JSON of `Reply.deltas` joined."""

    id: str
    name: str


@dataclass(slots=True)
class Reply:
    """What the fake is about to answer, before it is put into a vendor's format."""

    id: str
    model: str
    created: int
    deltas: list[str]
    """The text, one element per chunk: ``["tok0", " tok1", ...]``."""
    finish: str
    """Tollgate's finish reason, already adjusted to one the dialect can express."""
    usage: Usage | None
    """The usage reported, in Tollgate's inclusive buckets; None with ``no_usage``."""
    cache_write: int = 0
    tool_call: ToolCallPlan | None = None
    """A function call instead of text (then `deltas` are its arguments' pieces)."""
    choices: int = 1
    """How many answers the request asked for (``n``, ``candidateCount``)."""
    top_logprobs: int | None = None
    """None when the request asked for no log-probabilities; else how many alternatives."""
    thinking: tuple[str, ...] = ()
    """Anthropic: pieces of thinking, streamed in a block before the answer's."""

    @property
    def text(self) -> str:
        return "".join(self.deltas)

    def choice_deltas(self, choice: int) -> list[str]:
        """Choice `choice`'s text pieces: the first answer's, marked with the choice's number
        where that keeps them valid (plain text, not a call's or a schema's JSON)."""
        if choice == 0 or self.tool_call is not None or self.deltas[:1] != ["tok0"]:
            return self.deltas
        return [f"c{choice}{text}" if i == 0 else text for i, text in enumerate(self.deltas)]

    def logprobs(self, text: str) -> list[tuple[str, float, list[tuple[str, float]]]]:
        """A piece's tokens (one per piece) with a fixed log-probability and alternatives."""
        alternatives = [(text, -0.25)] + [(f"alt{i}", -1.0 - i) for i in range(1, 20)]
        return [(text, -0.25, alternatives[: self.top_logprobs or 0])]


class Frame(NamedTuple):
    """One write of an event stream."""

    data: bytes
    text: str | None = None
    """The text delta this frame carries, if it is a delta frame."""
    usage: bool = False
    """True for the frame that carries the final usage."""
    thought: bool = False
    """True for a frame that carries a piece of thinking: paced by ``delay_ms`` like a delta,
    not part of the text."""


class Dialect:
    """Base of the three wire formats."""

    name: ClassVar[ProtocolName]
    key_header: ClassVar[str]
    """The header that carries the API key, as the vendor spells it."""
    finish_names: ClassVar[Mapping[str, str]]
    """Tollgate finish reason -> the vendor's spelling."""

    def api_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        """The key the request carried in the vendor's header (not anywhere else)."""
        return headers.get(self.key_header.lower()) or None

    def check_headers(self, headers: Mapping[str, str]) -> str | None:
        """A reason to refuse the request with a 400 because a required header is missing."""
        return None

    def effective_finish(self, finish: str) -> str:
        return finish if finish in self.finish_names else "stop"

    def texts(self, body: Mapping[str, Any]) -> tuple[list[str], str]:
        """Every message's text (for the input count) and the last user message's text."""
        raise NotImplementedError

    def max_tokens(self, body: Mapping[str, Any]) -> int | None:
        raise NotImplementedError

    def tool_schema(self, body: Mapping[str, Any], name: str) -> dict[str, Any] | None:
        """The parameters schema of the request's function `name` (None: no such function)."""
        return None

    def ends_with_tool_result(self, body: Mapping[str, Any]) -> bool:
        """Whether the conversation's last message hands back a tool's result."""
        return False

    def response_schema(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """The JSON Schema the answer must follow, if the request gave one."""
        return None

    def choices(self, body: Mapping[str, Any]) -> int:
        """How many answers the request asks for."""
        return 1

    def top_logprobs(self, body: Mapping[str, Any]) -> int | None:
        """None when the request asks for no log-probabilities; else how many alternatives."""
        return None

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        raise NotImplementedError

    def completion(self, reply: Reply) -> dict[str, Any]:
        raise NotImplementedError

    def stream_frames(self, reply: Reply, body: Mapping[str, Any]) -> Iterator[Frame]:
        raise NotImplementedError

    def stream_error(self, status: int, message: str) -> bytes:
        raise NotImplementedError


def _bearer(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None


def _parts_text(content: object, *, key: str = "text") -> str:
    """Text of a content that is a string or a list of text parts/blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get(key, "")) for part in content if isinstance(part, dict) and key in part
        )
    return ""


class OpenAIDialect(Dialect):
    name = "openai"
    key_header = "Authorization"
    finish_names: ClassVar[Mapping[str, str]] = {
        "stop": "stop",
        "length": "length",
        "content_filter": "content_filter",
        "tool_calls": "tool_calls",
    }
    _error_types: ClassVar[Mapping[int, str]] = {
        400: "invalid_request_error",
        401: "invalid_request_error",
        403: "permission_error",
        404: "invalid_request_error",
        429: "rate_limit_error",
    }

    def api_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        return _bearer(headers)

    def texts(self, body: Mapping[str, Any]) -> tuple[list[str], str]:
        texts: list[str] = []
        last_user = ""
        for message in body.get("messages") or ():
            text = _parts_text(message.get("content"))
            texts.append(text)
            if message.get("role") == "user":
                last_user = text
        return texts, last_user

    def max_tokens(self, body: Mapping[str, Any]) -> int | None:
        value = body.get("max_completion_tokens") or body.get("max_tokens")
        return int(value) if value is not None else None

    def tool_schema(self, body: Mapping[str, Any], name: str) -> dict[str, Any] | None:
        for tool in body.get("tools") or ():
            function = tool.get("function") or {}
            if function.get("name") == name:
                return dict(function.get("parameters") or {"type": "object"})
        return None

    def ends_with_tool_result(self, body: Mapping[str, Any]) -> bool:
        messages = body.get("messages") or [{}]
        return bool(messages[-1].get("role") == "tool")

    def response_schema(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            return dict((fmt.get("json_schema") or {}).get("schema") or {"type": "object"})
        return None

    def choices(self, body: Mapping[str, Any]) -> int:
        return int(body.get("n") or 1)

    def top_logprobs(self, body: Mapping[str, Any]) -> int | None:
        return int(body.get("top_logprobs") or 0) if body.get("logprobs") else None

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {
            "error": {
                "message": message,
                "type": self._error_types.get(status, "server_error"),
                "param": None,
                "code": "invalid_api_key" if status == 401 else None,
            }
        }

    def _usage(self, usage: Usage) -> dict[str, Any]:
        return {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
            "prompt_tokens_details": {
                "cached_tokens": usage.cached_input_tokens,
                "audio_tokens": 0,
            },
            "completion_tokens_details": {
                "reasoning_tokens": usage.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def completion(self, reply: Reply) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": reply.id,
            "object": "chat.completion",
            "created": reply.created,
            "model": reply.model,
            "choices": [
                {
                    "index": choice,
                    "message": self._message(reply, choice),
                    "logprobs": self._logprobs(reply, reply.choice_deltas(choice)),
                    "finish_reason": self.finish_names[reply.finish],
                }
                for choice in range(reply.choices)
            ],
            "system_fingerprint": "fp_fake",
        }
        if reply.usage is not None:
            body["usage"] = self._usage(reply.usage)
        return body

    @staticmethod
    def _logprobs(reply: Reply, pieces: list[str]) -> dict[str, Any] | None:
        if reply.top_logprobs is None:
            return None
        content = [
            {
                "token": token,
                "logprob": logprob,
                "bytes": list(token.encode()),
                "top_logprobs": [
                    {"token": alt, "logprob": alt_logprob, "bytes": list(alt.encode())}
                    for alt, alt_logprob in top
                ],
            }
            for piece in pieces
            for token, logprob, top in reply.logprobs(piece)
        ]
        return {"content": content, "refusal": None}

    @staticmethod
    def _message(reply: Reply, choice: int = 0) -> dict[str, Any]:
        call = reply.tool_call
        if call is None:
            text = "".join(reply.choice_deltas(choice))
            return {"role": "assistant", "content": text, "refusal": None}
        function = {"name": call.name, "arguments": reply.text}
        return {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [{"id": call.id, "type": "function", "function": function}],
        }

    def _chunk(
        self, reply: Reply, choices: list[dict[str, Any]], usage: dict[str, Any] | None
    ) -> bytes:
        chunk = {
            "id": reply.id,
            "object": "chat.completion.chunk",
            "created": reply.created,
            "model": reply.model,
            "system_fingerprint": "fp_fake",
            "choices": choices,
            "usage": usage,
        }
        return b"data: " + dumps(chunk) + b"\n\n"

    def stream_frames(self, reply: Reply, body: Mapping[str, Any]) -> Iterator[Frame]:
        def choice(
            delta: dict[str, Any],
            finish: str | None = None,
            index: int = 0,
            logprobs: dict[str, Any] | None = None,
        ) -> list[dict[str, Any]]:
            return [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]

        call = reply.tool_call
        indexes = range(reply.choices)
        if call is not None:
            # As OpenAI streams a call: the id and name first, then the arguments in pieces.
            for index in indexes:
                first = {"index": 0, "id": call.id, "type": "function"}
                first["function"] = {"name": call.name, "arguments": ""}
                delta = {"role": "assistant", "tool_calls": [first]}
                yield Frame(self._chunk(reply, choice(delta, index=index), None))
            for text in reply.deltas:
                for index in indexes:
                    piece = {"index": 0, "function": {"arguments": text}}
                    delta = {"tool_calls": [piece]}
                    yield Frame(self._chunk(reply, choice(delta, index=index), None), text=text)
        else:
            for index in indexes:
                delta = {"role": "assistant", "content": ""}
                yield Frame(self._chunk(reply, choice(delta, index=index), None))
            # Like OpenAI with n > 1: the choices' pieces interleaved, one choice per chunk.
            pieces = [reply.choice_deltas(index) for index in indexes]
            for step in range(len(reply.deltas)):
                for index in indexes:
                    text = pieces[index][step]
                    logprobs = self._logprobs(reply, [text])
                    delta = {"content": text}
                    data = self._chunk(reply, choice(delta, None, index, logprobs), None)
                    yield Frame(data, text=text)
        for index in indexes:
            finish = self.finish_names[reply.finish]
            yield Frame(self._chunk(reply, choice({}, finish, index), None))
        options = body.get("stream_options") or {}
        # Like OpenAI: usage only when asked for, on a last chunk whose `choices` is empty.
        if reply.usage is not None and options.get("include_usage"):
            yield Frame(self._chunk(reply, [], self._usage(reply.usage)), usage=True)
        yield Frame(b"data: [DONE]\n\n")

    def stream_error(self, status: int, message: str) -> bytes:
        # OpenAI-compatible servers (vLLM and friends) put the status in `code`.
        error = self.error_body(status, message)
        error["error"]["code"] = status
        return b"data: " + dumps(error) + b"\n\n"


class GeminiDialect(Dialect):
    name = "gemini"
    key_header = "x-goog-api-key"
    finish_names: ClassVar[Mapping[str, str]] = {
        "stop": "STOP",
        "length": "MAX_TOKENS",
        "content_filter": "SAFETY",
    }
    _statuses: ClassVar[Mapping[int, str]] = {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        429: "RESOURCE_EXHAUSTED",
        500: "INTERNAL",
        503: "UNAVAILABLE",
        504: "DEADLINE_EXCEEDED",
    }

    def texts(self, body: Mapping[str, Any]) -> tuple[list[str], str]:
        texts: list[str] = []
        system = body.get("systemInstruction") or body.get("system_instruction")
        if system:
            texts.append(_parts_text(system.get("parts")))
        last_user = ""
        for content in body.get("contents") or ():
            text = _parts_text(content.get("parts"))
            texts.append(text)
            if content.get("role", "user") == "user":
                last_user = text
        return texts, last_user

    def max_tokens(self, body: Mapping[str, Any]) -> int | None:
        value = (body.get("generationConfig") or {}).get("maxOutputTokens")
        return int(value) if value is not None else None

    def tool_schema(self, body: Mapping[str, Any], name: str) -> dict[str, Any] | None:
        for tool in body.get("tools") or ():
            for declaration in tool.get("functionDeclarations") or ():
                if declaration.get("name") == name:
                    schema = declaration.get("parametersJsonSchema") or declaration.get(
                        "parameters"
                    )
                    return dict(schema or {"type": "object"})
        return None

    def ends_with_tool_result(self, body: Mapping[str, Any]) -> bool:
        contents = body.get("contents") or [{}]
        return any(
            isinstance(part, dict) and "functionResponse" in part
            for part in contents[-1].get("parts") or ()
        )

    def response_schema(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        config = body.get("generationConfig") or {}
        schema = config.get("responseJsonSchema") or config.get("responseSchema")
        return dict(schema) if isinstance(schema, dict) else None

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {
            "error": {
                "code": status,
                "message": message,
                "status": self._statuses.get(status, "UNKNOWN"),
            }
        }

    def _usage(self, usage: Usage) -> dict[str, Any]:
        # Gemini counts thoughts apart from candidates; the cached count is inside the prompt's.
        data: dict[str, Any] = {
            "promptTokenCount": usage.input_tokens,
            "candidatesTokenCount": max(0, usage.output_tokens - usage.reasoning_tokens),
            "totalTokenCount": usage.input_tokens + usage.output_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": usage.input_tokens}],
        }
        if usage.cached_input_tokens:
            data["cachedContentTokenCount"] = usage.cached_input_tokens
        if usage.reasoning_tokens:
            data["thoughtsTokenCount"] = usage.reasoning_tokens
        return data

    def choices(self, body: Mapping[str, Any]) -> int:
        return int((body.get("generationConfig") or {}).get("candidateCount") or 1)

    def top_logprobs(self, body: Mapping[str, Any]) -> int | None:
        config = body.get("generationConfig") or {}
        return int(config.get("logprobs") or 0) if config.get("responseLogprobs") else None

    def _response(
        self, reply: Reply, texts: list[str], *, finish: bool, usage: dict[str, Any] | None
    ) -> dict[str, Any]:
        """A response with one candidate per choice, `texts[k]` the text of candidate k."""
        candidates: list[dict[str, Any]] = []
        for index, text in enumerate(texts):
            part: dict[str, Any] = {"text": text}
            if reply.tool_call is not None and text:
                # Gemini sends a function call whole, in one part, with its arguments parsed.
                call = {"id": reply.tool_call.id, "name": reply.tool_call.name}
                part = {"functionCall": {**call, "args": json.loads(text)}}
            candidate: dict[str, Any] = {
                "content": {"parts": [part], "role": "model"},
                "index": index,
            }
            if finish:
                candidate["finishReason"] = self.finish_names[reply.finish]
            if reply.top_logprobs is not None and text and reply.tool_call is None:
                tokens = reply.logprobs(text)
                candidate["logprobsResult"] = {
                    "chosenCandidates": [
                        {"token": token, "logProbability": logprob} for token, logprob, _ in tokens
                    ],
                    "topCandidates": [
                        {
                            "candidates": [
                                {"token": alt, "logProbability": alt_logprob}
                                for alt, alt_logprob in top
                            ]
                        }
                        for _, _, top in tokens
                    ],
                }
            candidates.append(candidate)
        body: dict[str, Any] = {
            "candidates": candidates,
            "modelVersion": reply.model,
            "responseId": reply.id,
        }
        if usage is not None:
            body["usageMetadata"] = usage
        return body

    def completion(self, reply: Reply) -> dict[str, Any]:
        usage = self._usage(reply.usage) if reply.usage is not None else None
        texts = ["".join(reply.choice_deltas(index)) for index in range(reply.choices)]
        return self._response(reply, texts, finish=True, usage=usage)

    def stream_frames(self, reply: Reply, body: Mapping[str, Any]) -> Iterator[Frame]:
        # Like Gemini: every chunk carries usageMetadata, but only the last one is complete.
        # The finish reason comes on a last chunk of its own (Gemini sometimes puts it on the
        # last text chunk instead), so that "after N chunks" cuts before it in every protocol.
        partial = (
            None
            if reply.usage is None
            else {
                "promptTokenCount": reply.usage.input_tokens,
                "totalTokenCount": reply.usage.input_tokens,
            }
        )
        pieces = [
            reply.choice_deltas(index) if reply.tool_call is None else [reply.text]
            for index in range(reply.choices)
        ]
        for step in range(len(pieces[0])):
            texts = [choice[step] for choice in pieces]
            chunk = self._response(reply, texts, finish=False, usage=partial)
            yield Frame(self._sse(chunk), text=texts[0])
        final = None if reply.usage is None else self._usage(reply.usage)
        chunk = self._response(reply, [""] * reply.choices, finish=True, usage=final)
        yield Frame(self._sse(chunk), usage=final is not None)

    @staticmethod
    def _sse(chunk: Mapping[str, Any]) -> bytes:
        return b"data: " + dumps(chunk) + b"\r\n\r\n"

    def stream_error(self, status: int, message: str) -> bytes:
        return self._sse(self.error_body(status, message))


class AnthropicDialect(Dialect):
    name = "anthropic"
    key_header = "x-api-key"
    finish_names: ClassVar[Mapping[str, str]] = {
        "stop": "end_turn",
        "length": "max_tokens",
        "content_filter": "refusal",
        "tool_calls": "tool_use",
    }
    _error_types: ClassVar[Mapping[int, str]] = {
        400: "invalid_request_error",
        401: "authentication_error",
        402: "billing_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        504: "timeout_error",
        529: "overloaded_error",
    }

    def api_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        # Anthropic takes x-api-key; its newer SDKs send the key as a bearer token instead.
        return headers.get("x-api-key") or _bearer(headers)

    def check_headers(self, headers: Mapping[str, str]) -> str | None:
        if not headers.get("anthropic-version"):
            return "anthropic-version: header is required"
        return None

    def texts(self, body: Mapping[str, Any]) -> tuple[list[str], str]:
        texts: list[str] = []
        if body.get("system"):
            texts.append(_parts_text(body["system"]))
        last_user = ""
        for message in body.get("messages") or ():
            text = _parts_text(message.get("content"))
            texts.append(text)
            if message.get("role") == "user":
                last_user = text
        return texts, last_user

    def max_tokens(self, body: Mapping[str, Any]) -> int | None:
        value = body.get("max_tokens")
        return int(value) if value is not None else None

    def tool_schema(self, body: Mapping[str, Any], name: str) -> dict[str, Any] | None:
        for tool in body.get("tools") or ():
            if tool.get("name") == name:
                return dict(tool.get("input_schema") or {"type": "object"})
        return None

    def ends_with_tool_result(self, body: Mapping[str, Any]) -> bool:
        messages = body.get("messages") or [{}]
        content = messages[-1].get("content")
        return isinstance(content, list) and any(
            isinstance(block, dict) and block.get("type") == "tool_result" for block in content
        )

    def response_schema(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        output_format = (body.get("output_config") or {}).get("format") or {}
        if output_format.get("type") == "json_schema":
            return dict(output_format.get("schema") or {"type": "object"})
        return None

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {
            "type": "error",
            "error": {"type": self._error_types.get(status, "api_error"), "message": message},
            "request_id": "req_fake",
        }

    def _usage(self, reply: Reply, usage: Usage, *, output: int) -> dict[str, Any]:
        # Anthropic's input_tokens excludes the tokens read from or written to the cache.
        data: dict[str, Any] = {
            "input_tokens": usage.input_tokens - usage.cached_input_tokens - reply.cache_write,
            "cache_creation_input_tokens": reply.cache_write,
            "cache_read_input_tokens": usage.cached_input_tokens,
            "output_tokens": output,
        }
        if usage.reasoning_tokens:
            data["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
        return data

    def _message(
        self, reply: Reply, content: list[dict[str, Any]], *, done: bool
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "id": reply.id,
            "type": "message",
            "role": "assistant",
            "model": reply.model,
            "content": content,
            "stop_reason": self.finish_names[reply.finish] if done else None,
            "stop_sequence": None,
        }
        if reply.usage is not None:
            # In message_start, output_tokens is a small running count; message_delta has the
            # cumulative total, which a client must not add to it.
            output = reply.usage.output_tokens if done else min(1, reply.usage.output_tokens)
            message["usage"] = self._usage(reply, reply.usage, output=output)
        return message

    def completion(self, reply: Reply) -> dict[str, Any]:
        thinking: list[dict[str, Any]] = []
        if reply.thinking:
            thought = "".join(reply.thinking)
            thinking = [{"type": "thinking", "thinking": thought, "signature": "sig-fake"}]
        call = reply.tool_call
        if call is not None:
            block = {"type": "tool_use", "id": call.id, "name": call.name}
            block["input"] = json.loads(reply.text)
            return self._message(reply, [*thinking, block], done=True)
        text = {"type": "text", "text": reply.text}
        return self._message(reply, [*thinking, text], done=True)

    @staticmethod
    def _event(name: str, data: Mapping[str, Any]) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + dumps(data) + b"\n\n"

    def stream_frames(self, reply: Reply, body: Mapping[str, Any]) -> Iterator[Frame]:
        event = self._event
        start = self._message(reply, [], done=False)
        yield Frame(event("message_start", {"type": "message_start", "message": start}))
        index = 0
        if reply.thinking:
            thinking = {"type": "thinking", "thinking": "", "signature": ""}
            start_thinking = {"type": "content_block_start", "index": 0, "content_block": thinking}
            yield Frame(event("content_block_start", start_thinking))
            yield Frame(event("ping", {"type": "ping"}))
            for thought in reply.thinking:
                piece = {"type": "thinking_delta", "thinking": thought}
                delta = {"type": "content_block_delta", "index": 0, "delta": piece}
                yield Frame(event("content_block_delta", delta), thought=True)
            signature = {"type": "signature_delta", "signature": "sig-fake"}
            delta = {"type": "content_block_delta", "index": 0, "delta": signature}
            yield Frame(event("content_block_delta", delta))
            yield Frame(event("content_block_stop", {"type": "content_block_stop", "index": 0}))
            index = 1
        call = reply.tool_call
        block: dict[str, Any] = {"type": "text", "text": ""}
        if call is not None:
            block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
        start_block = {"type": "content_block_start", "index": index, "content_block": block}
        yield Frame(event("content_block_start", start_block))
        if not reply.thinking:
            yield Frame(event("ping", {"type": "ping"}))
        for text in reply.deltas:
            # A tool call's input streams as pieces of JSON text, as Anthropic sends them.
            piece = (
                {"type": "text_delta", "text": text}
                if call is None
                else {"type": "input_json_delta", "partial_json": text}
            )
            delta = {"type": "content_block_delta", "index": index, "delta": piece}
            yield Frame(event("content_block_delta", delta), text=text)
        yield Frame(event("content_block_stop", {"type": "content_block_stop", "index": index}))
        message_delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": self.finish_names[reply.finish], "stop_sequence": None},
        }
        if reply.usage is not None:
            message_delta["usage"] = self._usage(
                reply, reply.usage, output=reply.usage.output_tokens
            )
        yield Frame(event("message_delta", message_delta), usage=reply.usage is not None)
        yield Frame(event("message_stop", {"type": "message_stop"}))

    def stream_error(self, status: int, message: str) -> bytes:
        return self._event("error", self.error_body(status, message))


DIALECTS: Mapping[ProtocolName, Dialect] = {
    "openai": OpenAIDialect(),
    "gemini": GeminiDialect(),
    "anthropic": AnthropicDialect(),
}
