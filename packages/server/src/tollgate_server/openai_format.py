"""Tollgate's own wire format: OpenAI's chat completions, in and out.

Requests are validated by `ChatCompletionCreate` (unknown fields refused with 422, never
dropped). Responses and stream chunks are built here as bytes; stream chunks are spliced from
pre-encoded parts so a delta costs one `orjson.dumps` of its text.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)
from tollgate_core import (
    ContentPart,
    Message,
    TextDelta,
    TokenLogprob,
    ToolCallDelta,
    Usage,
    format_credits,
)
from tollgate_core import ImagePart as CoreImagePart
from tollgate_core import TextPart as CoreTextPart
from tollgate_core import ToolCall as CoreToolCall

from tollgate_server.openai_request import (
    ContentPart as ContentPartParam,
)
from tollgate_server.openai_request import (
    FunctionTool,
    ImagePart,
    ResponseFormatParam,
    TextPart,
    ToolCall,
    ToolChoiceParam,
)
from tollgate_server.services.answers import AnswerChoice

_IF = ", when the model's provider carries it (else 422 unsupported_parameter)"
"""The end of the description of every parameter that a provider may or may not carry."""


class ChatMessage(BaseModel):
    """One message of the conversation, in OpenAI's format."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool"] = Field(
        description="Who speaks: system or developer (instructions), user, assistant, or tool "
        "(a tool call's result)"
    )
    content: str | list[ContentPartParam] | None = Field(
        description="Text, or a list of parts (text; images in user messages); null only in "
        "an assistant message with tool_calls"
    )
    name: str | None = Field(None, max_length=64, description="The speaker's name, if any")
    tool_calls: list[ToolCall] | None = Field(
        None, max_length=128, description="In an assistant message: the tools it called"
    )
    tool_call_id: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="In a tool message (and only there): the id of the call it answers",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content may be null only in an assistant message with tool_calls")
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only assistant messages have tool_calls")
        if (self.tool_call_id is not None) != (self.role == "tool"):
            raise ValueError("a tool message, and only a tool message, has a tool_call_id")
        if self.role != "user" and isinstance(self.content, list):
            if any(isinstance(part, ImagePart) for part in self.content):
                raise ValueError("only user messages may hold images")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))

    def has_images(self) -> bool:
        return isinstance(self.content, list) and any(
            isinstance(part, ImagePart) for part in self.content
        )


class StreamOptions(BaseModel):
    """Options of a streamed answer."""

    model_config = ConfigDict(extra="forbid")
    include_usage: StrictBool = Field(
        True, description="Accepted for compatibility: the usage chunk is always sent"
    )


class ChatCompletionCreate(BaseModel):
    """OpenAI's chat completion request. Fields not listed here are refused with 422."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": "Say hello"}],
                    "max_tokens": 64,
                    "stream": False,
                }
            ]
        },
    )

    model: str = Field(min_length=1, max_length=200, description="A model of `GET /v1/models`")
    messages: list[ChatMessage] = Field(
        min_length=1, max_length=2048, description="The conversation so far, oldest first"
    )
    # Strict types: JSON's own, as the OpenAI API takes them ("5" is not 5, 0 is not false).
    max_tokens: StrictInt | None = Field(None, ge=1, description="Deprecated alias of the next")
    max_completion_tokens: StrictInt | None = Field(
        None,
        ge=1,
        description="The most tokens to generate; unset: the model's default. The hold is "
        "taken for this many",
    )
    temperature: StrictFloat | StrictInt | None = Field(
        None, ge=0, le=2, description="Sampling temperature"
    )
    top_p: StrictFloat | StrictInt | None = Field(
        None, ge=0, le=1, description="Nucleus sampling: the probability mass sampled from"
    )
    stop: (
        Annotated[str, Field(max_length=200)]
        | list[Annotated[str, Field(min_length=1, max_length=200)]]
        | None
    ) = Field(None, description="Up to 4 stop sequences")
    stream: StrictBool = Field(
        False, description="true: the answer as server-sent events, ending with `[DONE]`"
    )
    stream_options: StreamOptions | None = Field(None, description="Options of a stream")
    user: str | None = Field(None, max_length=256, description="Your id for the end user")
    # The rest of OpenAI's reference. Each is carried out by the model's provider or refused
    # with 422 unsupported_parameter (`tollgate_server.services.chat_request`).
    tools: list[FunctionTool] | None = Field(
        None, min_length=1, max_length=128, description=f"Functions the model may call{_IF}"
    )
    tool_choice: ToolChoiceParam | None = Field(
        None, description=f"none, auto, required, or the one function to call{_IF}"
    )
    parallel_tool_calls: StrictBool | None = Field(
        None, description=f"Whether the model may call several tools in one turn{_IF}"
    )
    response_format: ResponseFormatParam | None = Field(
        None, description=f"Text, any JSON object, or JSON following a schema{_IF}"
    )
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = (
        Field(None, description=f"How much a reasoning model thinks{_IF}")
    )
    n: StrictInt | None = Field(None, ge=1, le=128, description=f"Choices to generate{_IF}")
    seed: StrictInt | None = Field(None, description=f"For repeatable sampling{_IF}")
    presence_penalty: StrictFloat | StrictInt | None = Field(
        None, ge=-2, le=2, description=f"Penalty for tokens already present{_IF}"
    )
    frequency_penalty: StrictFloat | StrictInt | None = Field(
        None, ge=-2, le=2, description=f"Penalty by how often a token appeared{_IF}"
    )
    logit_bias: dict[str, Annotated[StrictInt, Field(ge=-100, le=100)]] | None = Field(
        None, max_length=1024, description=f"Token id to a bias from -100 to 100{_IF}"
    )
    logprobs: StrictBool | None = Field(
        None, description=f"Whether to return the tokens' log probabilities{_IF}"
    )
    top_logprobs: StrictInt | None = Field(
        None, ge=0, le=20, description=f"Most likely tokens returned at each position{_IF}"
    )
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(
        None, max_length=16, description=f"Up to 16 key-value pairs for the upstream{_IF}"
    )
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast"] | None = Field(
        None, description=f"The upstream's processing tier{_IF}"
    )
    store: StrictBool | None = Field(
        None, description=f"Whether the upstream keeps the completion{_IF}"
    )
    verbosity: Literal["low", "medium", "high"] | None = Field(
        None, description=f"How long the answer is{_IF}"
    )
    prompt_cache_key: str | None = Field(
        None, max_length=1024, description=f"Groups requests for the upstream's cache{_IF}"
    )
    prompt_cache_retention: Literal["in_memory", "24h"] | None = Field(
        None, description=f"How long the upstream keeps the prompt cached{_IF}"
    )
    safety_identifier: str | None = Field(
        None, max_length=256, description=f"A stable id of the end user for the upstream{_IF}"
    )
    prediction: dict[str, Any] | None = Field(
        None, description=f"Predicted output, to speed up the answer{_IF}"
    )
    audio: dict[str, Any] | None = Field(None, description=f"Audio output settings{_IF}")
    modalities: list[Literal["text", "audio"]] | None = Field(
        None, description=f"Kinds of output wanted{_IF}"
    )
    functions: list[dict[str, Any]] | None = Field(
        None, description=f"Deprecated: `tools` replaces it{_IF}"
    )
    function_call: str | dict[str, Any] | None = Field(
        None, description=f"Deprecated: `tool_choice` replaces it{_IF}"
    )
    web_search_options: dict[str, Any] | None = Field(None, description=f"Web search settings{_IF}")
    moderation: dict[str, Any] | None = Field(None, description=f"Moderation settings{_IF}")
    prompt_cache_options: dict[str, Any] | None = Field(
        None, description=f"Prompt cache settings{_IF}"
    )

    @model_validator(mode="after")
    def _tool_results_answer_calls(self) -> ChatCompletionCreate:
        # As OpenAI requires: a tool message answers a call of an earlier assistant message.
        called: set[str] = set()
        for message in self.messages:
            if message.tool_calls:
                called.update(call.id for call in message.tool_calls)
            elif message.tool_call_id is not None and message.tool_call_id not in called:
                raise ValueError(
                    f"the tool message for {message.tool_call_id} answers no earlier tool call"
                )
        return self

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def core_messages(self) -> tuple[Message, ...]:
        return tuple(
            Message(role=m.role, content=m.content, name=m.name)
            if isinstance(m.content, str) and m.tool_calls is None and m.tool_call_id is None
            else core_message(m)
            for m in self.messages
        )

    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


def core_message(message: ChatMessage) -> Message:
    """The core `Message` for a validated message, with its parts and tool calls."""
    parts: tuple[ContentPart, ...] = ()
    if isinstance(message.content, list) and message.has_images():
        parts = tuple(
            CoreTextPart(part.text)
            if isinstance(part, TextPart)
            else CoreImagePart(part.image_url.url, part.image_url.detail)
            for part in message.content
        )
    return Message(
        role=message.role,
        content=message.text(),
        name=message.name,
        parts=parts,
        tool_calls=tuple(
            CoreToolCall(id=call.id, name=call.function.name, arguments=call.function.arguments)
            for call in message.tool_calls or ()
        ),
        tool_call_id=message.tool_call_id,
    )


def usage_body(usage: Usage, cost: int) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "cost": format_credits(cost),
        "estimated": usage.estimated,
    }


def completion_id(generation_id: uuid.UUID) -> str:
    return f"chatcmpl-{generation_id.hex}"


def completion_body(
    *,
    generation_id: uuid.UUID,
    model: str,
    choices: tuple[AnswerChoice, ...],
    usage: Usage,
    cost: int,
) -> bytes:
    return orjson.dumps(
        {
            "id": completion_id(generation_id),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": index,
                    "message": _message_body(choice),
                    "finish_reason": choice.finish_reason,
                    "logprobs": None if choice.logprobs is None else logprobs_body(choice.logprobs),
                }
                for index, choice in enumerate(choices)
            ],
            "usage": usage_body(usage, cost),
            "generation_id": str(generation_id),
        }
    )


def _message_body(choice: AnswerChoice) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": choice.text}
    if choice.tool_calls:
        message["content"] = choice.text or None
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in choice.tool_calls
        ]
    return message


def logprobs_body(tokens: tuple[TokenLogprob, ...]) -> dict[str, Any]:
    """OpenAI's ``logprobs`` object of a choice (or of one chunk of it)."""
    return {
        "content": [
            {
                "token": token.token,
                "logprob": token.logprob,
                "bytes": list(token.token.encode()),
                "top_logprobs": [
                    {"token": text, "logprob": logprob, "bytes": list(text.encode())}
                    for text, logprob in token.top
                ],
            }
            for token in tokens
        ],
        "refusal": None,
    }


class ChunkWriter:
    """Encodes one stream's SSE events, reusing the parts every chunk shares."""

    def __init__(self, *, generation_id: uuid.UUID, model: str) -> None:
        self.generation_id = generation_id
        head = {
            "id": completion_id(generation_id),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        self._head = orjson.dumps(head)[:-1]  # without the closing brace
        self._delta_prefix = b"data: " + self._head + b',"choices":[{"index":0,"delta":{"content":'
        self._delta_suffix = b'},"finish_reason":null}]}\n\n'

    def role(self, choices: int = 1) -> bytes:
        """The first chunk of each choice: the assistant's role."""
        return b"".join(
            b"data: "
            + self._head
            + b',"choices":[{"index":'
            + str(index).encode()
            + b',"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
            for index in range(choices)
        )

    def delta(self, delta: TextDelta) -> bytes:
        if not delta.choice and not delta.logprobs:
            return self._delta_prefix + orjson.dumps(delta.text) + self._delta_suffix
        choice: dict[str, Any] = {
            "index": delta.choice,
            "delta": {"content": delta.text},
            "finish_reason": None,
        }
        if delta.logprobs:
            choice["logprobs"] = logprobs_body(delta.logprobs)
        return self._chunk([choice])

    def tool_call(self, delta: ToolCallDelta) -> bytes:
        """A chunk with one piece of a tool call, as OpenAI streams them: the first piece of a
        call has its id and name, the later ones only more arguments."""
        call: dict[str, Any] = {"index": delta.index}
        if delta.id is not None:
            call["id"] = delta.id
            call["type"] = "function"
        function: dict[str, str] = {"arguments": delta.arguments}
        if delta.name is not None:
            function["name"] = delta.name
        call["function"] = function
        return self._chunk(
            [{"index": delta.choice, "delta": {"tool_calls": [call]}, "finish_reason": None}]
        )

    def finish(self, choices: tuple[AnswerChoice, ...]) -> bytes:
        """The last chunk of each choice, with its finish reason."""
        return b"".join(
            self._chunk([{"index": index, "delta": {}, "finish_reason": choice.finish_reason}])
            for index, choice in enumerate(choices)
        )

    def _chunk(self, choices: list[dict[str, Any]]) -> bytes:
        return b"data: " + self._head + b',"choices":' + orjson.dumps(choices) + b"}\n\n"

    def usage(self, usage: Usage, cost: int) -> bytes:
        tail = orjson.dumps(
            {
                "choices": [],
                "usage": usage_body(usage, cost),
                "generation_id": str(self.generation_id),
            }
        )
        return b"data: " + self._head + b"," + tail[1:] + b"\n\n"

    @staticmethod
    def error(code: str, message: str, request_id: str) -> bytes:
        body = {"error": {"code": code, "message": message, "request_id": request_id, "type": code}}
        return b"data: " + orjson.dumps(body) + b"\n\n"

    DONE = b"data: [DONE]\n\n"
    KEEPALIVE = b": keep-alive\n\n"
