"""A fast mock of OpenAI's chat completions endpoint, for benchmarks.

``POST /v1/chat/completions`` answers at once with a fixed text of N tokens (``tok0 tok1 ...``)
and a usage object, as JSON or, with ``"stream": true``, as server-sent events in OpenAI's chunk
format (one HTTP chunk per event, usage in its own chunk when
``stream_options.include_usage`` is true, then ``data: [DONE]``). ``GET /health`` answers 200.

It is a bare asyncio protocol on uvloop (when installed) that answers from pre-encoded bytes, so
it costs a few tens of microseconds a request and is never the bottleneck of a benchmark.

The model name may override the defaults per request, so one mock serves every workload:
``mock-t20-p10`` streams 20 tokens paced 10 ms apart; ``mock-t16`` answers 16 tokens at once.
With pacing, the role chunk and the first token leave at once and each later token ``pace``
milliseconds after the one before it; the finish, usage and ``[DONE]`` events follow the last
token immediately.

Usage::

    python bench/mock_upstream.py --port 9100 --tokens 16 --pace-ms 0 --cpu 0
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
import time
from typing import Any

try:
    import orjson

    def _dumps(value: Any) -> bytes:
        return orjson.dumps(value)

    _loads = orjson.loads
except ImportError:  # pragma: no cover - the workspace has orjson
    import json

    def _dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()

    _loads = json.loads

PROMPT_TOKENS = 12
"""The prompt size the mock reports in its usage, whatever the prompt."""

_DIRECTIVE = re.compile(r"-(t|p)(\d+(?:\.\d+)?)")


class Script:
    """The pre-encoded answers for one (model, tokens, pace) triple."""

    def __init__(self, model: str, tokens: int, pace_ms: float) -> None:
        self.pace = pace_ms / 1000.0
        created = int(time.time())
        words = [f"tok{i}" if i == 0 else f" tok{i}" for i in range(tokens)]
        usage = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": tokens,
            "total_tokens": PROMPT_TOKENS + tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }
        ident = "chatcmpl-mock"
        body = _dumps(
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(words)},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": usage,
            }
        )
        self.completion = (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        head = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model}

        def event(extra: dict[str, Any]) -> bytes:
            return _chunk(b"data: " + _dumps({**head, **extra}) + b"\n\n")

        role = event(
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                    }
                ]
            }
        )
        self.deltas = [
            event({"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]})
            for w in words
        ]
        finish = event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        usage_event = event({"choices": [], "usage": usage})
        done = _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
        self.stream_head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n" + role
        )
        self.tail_with_usage = finish + usage_event + done
        self.tail_without_usage = finish + done
        # Unpaced streams go out in one write.
        self.stream_with_usage = self.stream_head + b"".join(self.deltas) + self.tail_with_usage
        self.stream_without_usage = (
            self.stream_head + b"".join(self.deltas) + self.tail_without_usage
        )


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
)
HEALTH = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 57\r\n\r\n"
    b'{"error":{"message":"mock: unreadable body","type":"x"}}\n'
)


class MockUpstream:
    """Shared state: the defaults and the cache of scripts, plus a request counter."""

    def __init__(self, tokens: int, pace_ms: float) -> None:
        self.tokens = tokens
        self.pace_ms = pace_ms
        self.scripts: dict[str, Script] = {}
        self.requests = 0

    def script(self, model: str) -> Script:
        script = self.scripts.get(model)
        if script is None:
            tokens, pace = self.tokens, self.pace_ms
            for kind, value in _DIRECTIVE.findall(model):
                if kind == "t":
                    tokens = int(float(value))
                else:
                    pace = float(value)
            script = self.scripts[model] = Script(model, tokens, pace)
        return script


class MockProtocol(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection. Requests on it are answered in order."""

    def __init__(self, mock: MockUpstream) -> None:
        self.mock = mock
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False
        """A paced stream is being written: later requests wait in the buffer."""
        self.handles: list[asyncio.TimerHandle] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        for handle in self.handles:
            handle.cancel()
        self.handles.clear()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._process()

    def _process(self) -> None:
        buffer = self.buffer
        while not self.busy and self.transport is not None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end])
            length = 0
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = lower.find(b"\r\n", at + 2)
                length = int(lower[at + 17 : stop if stop >= 0 else None].strip())
            total = end + 4 + length
            if len(buffer) < total:
                return
            body = bytes(buffer[end + 4 : total])
            del buffer[:total]
            self._answer(head, body)

    def _answer(self, head: bytes, body: bytes) -> None:
        transport = self.transport
        assert transport is not None
        line_end = head.find(b"\r\n")
        request_line = head[: line_end if line_end >= 0 else None]
        parts = request_line.split(b" ")
        method, path = (parts[0], parts[1]) if len(parts) >= 2 else (b"", b"")
        if method == b"GET" and path == b"/health":
            transport.write(HEALTH)
            return
        if method != b"POST" or not path.endswith(b"/chat/completions"):
            transport.write(NOT_FOUND)
            return
        self.mock.requests += 1
        try:
            request = _loads(body)
            model = str(request.get("model", "mock"))
        except Exception:
            transport.write(BAD_REQUEST)
            return
        script = self.mock.script(model)
        if not request.get("stream"):
            transport.write(script.completion)
            return
        options = request.get("stream_options") or {}
        with_usage = bool(options.get("include_usage"))
        if script.pace <= 0:
            transport.write(script.stream_with_usage if with_usage else script.stream_without_usage)
            return
        self._paced(script, with_usage)

    def _paced(self, script: Script, with_usage: bool) -> None:
        """Head, role and first token now; each later token `pace` after the one before."""
        transport = self.transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        deltas = script.deltas
        tail = script.tail_with_usage if with_usage else script.tail_without_usage
        if not deltas:
            transport.write(script.stream_head + tail)
            return
        transport.write(script.stream_head + deltas[0])
        self.busy = True
        start = loop.time()

        def send(index: int) -> None:
            if self.transport is None:
                return
            if index + 1 < len(deltas):
                self.transport.write(deltas[index])
                self.handles = [loop.call_at(start + (index + 1) * script.pace, send, index + 1)]
                return
            self.transport.write(deltas[index] + tail)
            self.handles = []
            self.busy = False
            self._process()  # a request that arrived meanwhile

        if len(deltas) == 1:
            transport.write(tail)
            self.busy = False
            return
        self.handles = [loop.call_at(start + script.pace, send, 1)]


async def serve(host: str, port: int, tokens: int, pace_ms: float) -> None:
    mock = MockUpstream(tokens, pace_ms)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: MockProtocol(mock), host, port, reuse_address=True, backlog=1024
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"mock upstream on http://{host}:{port}/v1 (tokens={tokens}, pace={pace_ms} ms)")
    sys.stdout.flush()
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--tokens", type=int, default=16, help="output tokens per answer")
    parser.add_argument("--pace-ms", type=float, default=0.0, help="delay between stream tokens")
    parser.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    try:
        import uvloop

        run = uvloop.run
    except ImportError:  # pragma: no cover - the workspace has uvloop
        run = asyncio.run
    run(serve(args.host, args.port, args.tokens, args.pace_ms))


if __name__ == "__main__":
    main()
