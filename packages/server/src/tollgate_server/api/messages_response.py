"""The ASGI response that carries one generation to a client in Anthropic's Messages format.

The same response as OpenAI's (`tollgate_server.api.generation_response.GenerationResponse`:
it admits, starts the generation with itself as the sink and cancels it when the client hangs
up); only what it writes differs. A stream is Anthropic's event sequence: ``message_start``,
then for each content block ``content_block_start``, ``content_block_delta``s (``text_delta``,
``input_json_delta`` or ``thinking_delta``) and ``content_block_stop``, a ``ping`` after the
first block's start and during silences, and last ``message_delta`` (stop reason and usage)
and ``message_stop``; a failure after the stream began is an ``error`` event.

Tool calls are written as their pieces come; an upstream streams one call after another (OpenAI
interleaves none in practice), so a call's pieces continue the block that its first piece began.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from tollgate_core import TextDelta, ToolCall, ToolCallDelta, Usage, format_credits

from tollgate_server.api.anthropic_errors import error_body, error_response
from tollgate_server.api.generation_response import GenerationResponse
from tollgate_server.errors import Refused
from tollgate_server.runtime import Runtime
from tollgate_server.services.answers import Answer
from tollgate_server.services.gateway import ClientGone, Plan

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
"""Anthropic's stop reason for each of Tollgate's finish reasons."""


def message_id(generation_id: uuid.UUID) -> str:
    return f"msg_{generation_id.hex}"


def usage_body(usage: Usage, cost: int | None) -> dict[str, Any]:
    """Anthropic's usage: ``input_tokens`` excludes the tokens read from or written to the
    prompt cache (Tollgate's count includes them); Tollgate adds ``cost`` and ``estimated``."""
    cache_write = usage.details.get("cache_creation_input_tokens", 0)
    body: dict[str, Any] = {
        "input_tokens": max(0, usage.input_tokens - usage.cached_input_tokens - cache_write),
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": usage.cached_input_tokens,
    }
    if cost is not None:
        body["cost"] = format_credits(cost)
        body["estimated"] = usage.estimated
    return body


def _tool_input(call: ToolCall) -> dict[str, Any]:
    """A call's arguments as the object Anthropic sends; an upstream's arguments that are not
    a JSON object (untrusted text) are kept whole under ``_raw`` rather than lost."""
    try:
        value = orjson.loads(call.arguments or "{}")
    except orjson.JSONDecodeError:
        return {"_raw": call.arguments}
    return value if isinstance(value, dict) else {"_raw": call.arguments}


def message_body(*, generation_id: uuid.UUID, model: str, answer: Answer) -> bytes:
    """The whole answer of a non-streaming request, as Anthropic's ``message`` object."""
    content: list[dict[str, Any]] = []
    if answer.reasoning:
        # No signature: the gateway does not send earlier thinking back upstream.
        content.append({"type": "thinking", "thinking": answer.reasoning, "signature": ""})
    if answer.text or not answer.tool_calls:
        content.append({"type": "text", "text": answer.text})
    content += [
        {"type": "tool_use", "id": call.id, "name": call.name, "input": _tool_input(call)}
        for call in answer.tool_calls
    ]
    return orjson.dumps(
        {
            "id": message_id(generation_id),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": STOP_REASONS.get(answer.finish_reason, "end_turn"),
            "stop_sequence": None,
            "usage": usage_body(answer.usage, answer.charge),
            "generation_id": str(generation_id),
        }
    )


def event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


PING = event("ping", {"type": "ping"})


class MessagesResponse(GenerationResponse):
    """Admits, runs and answers one generation; Anthropic's Messages format's sink."""

    def __init__(self, runtime: Runtime, plan: Plan) -> None:
        super().__init__(runtime, plan)
        self._block = -1
        """The index of the open content block (-1: none)."""
        self._block_type = ""
        self._pinged = False
        self._started_at = int(time.time())

    # --- the sink -----------------------------------------------------------------------

    async def delta(self, delta: TextDelta) -> None:
        text = delta.text
        async with self._write_lock:
            out = b""
            if self._block_type != "text":
                out = self._open_block({"type": "text", "text": ""})
            out += self._block_delta({"type": "text_delta", "text": text})
            await self._stream_locked(out)

    async def tool_call(self, delta: ToolCallDelta) -> None:
        async with self._write_lock:
            out = b""
            if delta.id is not None or self._block_type != "tool_use":
                call_id = delta.id or f"toolu_{self.plan.generation_id.hex[:20]}_{delta.index}"
                block = {"type": "tool_use", "id": call_id, "name": delta.name or "", "input": {}}
                out = self._open_block(block)
            if delta.arguments:
                piece = {"type": "input_json_delta", "partial_json": delta.arguments}
                out += self._block_delta(piece)
            if out:
                await self._stream_locked(out)

    writes_reasoning = True
    """Anthropic's format carries thinking, in ``thinking`` blocks."""

    async def reasoning(self, text: str) -> None:
        async with self._write_lock:
            out = b""
            if self._block_type != "thinking":
                out = self._open_block({"type": "thinking", "thinking": "", "signature": ""})
            out += self._block_delta({"type": "thinking_delta", "thinking": text})
            await self._stream_locked(out)

    async def keepalive(self) -> None:
        async with self._write_lock:
            await self._stream_locked(PING)

    def ending(self, answer: Answer) -> bytes:
        if not self.plan.stream:
            return message_body(
                generation_id=self.plan.generation_id, model=self.plan.model.name, answer=answer
            )
        out = self._close_block()
        out += event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": STOP_REASONS.get(answer.finish_reason, "end_turn"),
                    "stop_sequence": None,
                },
                "usage": usage_body(answer.usage, answer.charge),
            },
        )
        return out + event("message_stop", {"type": "message_stop"})

    async def fail(self, error: Refused) -> None:
        """A status before the stream began, an ``error`` event after."""
        try:
            if not self.headers_sent:
                await self._send_error(error)
            else:
                body = error_body(error, self.request_id)
                async with self._write_lock:
                    await self._send_body(event("error", body), more=False)
        except ClientGone:
            pass

    # --- writing ------------------------------------------------------------------------

    async def _start(
        self, status: int, content_type: str, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        headers = [*(extra or []), (b"request-id", self.request_id.encode())]
        await super()._start(status, content_type, headers)

    def _opening(self) -> bytes:
        """What a stream says before its first block: ``message_start``."""
        message: dict[str, Any] = {
            "id": message_id(self.plan.generation_id),
            "type": "message",
            "role": "assistant",
            "model": self.plan.model.name,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # The gateway's count of the prompt; message_delta carries the upstream's.
            "usage": {"input_tokens": self.plan.prompt_tokens, "output_tokens": 0},
            "generation_id": str(self.plan.generation_id),
        }
        return event("message_start", {"type": "message_start", "message": message})

    def _open_block(self, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self._block += 1
        self._block_type = str(block["type"])
        out += event(
            "content_block_start",
            {"type": "content_block_start", "index": self._block, "content_block": block},
        )
        if not self._pinged:
            # Where Anthropic sends its first ping: after the first block's start.
            self._pinged = True
            out += PING
        return out

    def _block_delta(self, delta: dict[str, Any]) -> bytes:
        return event(
            "content_block_delta",
            {"type": "content_block_delta", "index": self._block, "delta": delta},
        )

    def _close_block(self) -> bytes:
        if not self._block_type:
            return b""
        self._block_type = ""
        return event("content_block_stop", {"type": "content_block_stop", "index": self._block})

    async def _send_error(self, exc: Refused) -> None:
        answer = error_response(exc, self.request_id)
        # `_start` names the request id itself.
        skip = (b"content-type", b"request-id")
        headers = [(k, v) for k, v in answer.raw_headers if k not in skip]
        try:
            async with self._write_lock:
                await self._start(answer.status_code, "application/json", headers)
                await self._send_body(bytes(answer.body), more=False)
        except ClientGone:
            pass
