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
)
from tollgate_core import Message, Usage, format_credits


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] = Field(description="Text, or a list of text parts")
    name: str | None = Field(None, max_length=64)

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
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

    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=2048)
    # Strict types: JSON's own, as the OpenAI API takes them ("5" is not 5, 0 is not false).
    max_tokens: StrictInt | None = Field(None, ge=1, description="Deprecated alias of the next")
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    temperature: StrictFloat | StrictInt | None = Field(None, ge=0, le=2)
    top_p: StrictFloat | StrictInt | None = Field(None, ge=0, le=1)
    stop: (
        Annotated[str, Field(max_length=200)]
        | list[Annotated[str, Field(min_length=1, max_length=200)]]
        | None
    ) = Field(None, description="Up to 4 stop sequences")
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def core_messages(self) -> tuple[Message, ...]:
        return tuple(Message(role=m.role, content=m.text(), name=m.name) for m in self.messages)

    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


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
    text: str,
    finish_reason: str,
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
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": usage_body(usage, cost),
            "generation_id": str(generation_id),
        }
    )


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

    def role(self) -> bytes:
        return (
            b"data: "
            + self._head
            + b',"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
            b'"finish_reason":null}]}\n\n'
        )

    def delta(self, text: str) -> bytes:
        return self._delta_prefix + orjson.dumps(text) + self._delta_suffix

    def finish(self, finish_reason: str) -> bytes:
        return (
            b"data: "
            + self._head
            + b',"choices":[{"index":0,"delta":{},"finish_reason":'
            + orjson.dumps(finish_reason)
            + b"}]}\n\n"
        )

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
