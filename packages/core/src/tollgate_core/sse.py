"""A small decoder for server-sent events.

Providers iterate `iter_events(resp.content)`, which reads the body in network chunks and feeds
its lines to an `SSEDecoder`; the decoder returns an event when a blank line completes one. It
works on bytes so that the ``data`` payload goes straight to ``orjson.loads`` without a decode
step on the hot path.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import NamedTuple

import aiohttp

__all__ = ["SSEDecoder", "SSEEvent", "iter_events"]


class SSEEvent(NamedTuple):
    """One server-sent event: its ``event:`` name (None when unnamed) and its ``data``."""

    event: str | None
    data: bytes


class SSEDecoder:
    """Turns lines of an ``text/event-stream`` body into `SSEEvent`s.

    Follows the WHATWG rules that matter to LLM upstreams: ``data:`` lines accumulate (joined
    by ``\\n``), ``event:`` names the event, lines starting with ``:`` are comments, and ``id:``
    and ``retry:`` are ignored. Lines may end with ``\\n`` or ``\\r\\n``.
    """

    __slots__ = ("_data", "_event")

    def __init__(self) -> None:
        self._event: str | None = None
        self._data: list[bytes] = []

    def feed(self, line: bytes) -> SSEEvent | None:
        """Feed one line; returns the event it completes, if any."""
        line = line.rstrip(b"\r\n")
        if not line:
            return self.flush()
        if line.startswith(b"data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            self._event = line[6:].strip().decode("utf-8", "replace")
        # Comments (":") and the id/retry fields carry nothing a provider needs.
        return None

    def flush(self) -> SSEEvent | None:
        """Complete the pending event, if any (at a blank line, or leniently at end of body)."""
        if not self._data:
            self._event = None
            return None
        data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        event = SSEEvent(self._event, data)
        self._event = None
        self._data = []
        return event


async def iter_events(content: aiohttp.StreamReader) -> AsyncGenerator[SSEEvent, None]:
    """The events of an SSE body, read in whatever chunks the network delivers.

    One await per network read rather than one per line: an upstream that sends a whole
    answer in one packet costs one read, not forty. A last event without its blank line is
    still delivered at the end of the body.
    """
    decoder = SSEDecoder()
    pending = b""
    async for chunk in content.iter_any():
        if pending:
            chunk = pending + chunk
        lines = chunk.split(b"\n")
        pending = lines.pop()
        for line in lines:
            event = decoder.feed(line)
            if event is not None:
                yield event
    if pending and (event := decoder.feed(pending)) is not None:
        yield event
    if (event := decoder.flush()) is not None:
        yield event
