"""The one upstream stream loop every provider runs, and the small wire helpers they share.

A provider's `stream()` is a call to `stream_events` with its request body and a parser for
its vendor's events: the loop POSTs, maps an error status and transport failures to core
errors (as `tollgate_core.upstream` does for every call), reads the server-sent events, hands
each to the parser, and closes (never merely releases) the connection when the stream stops
early, so the upstream stops generating for a client that left.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from contextlib import aclosing
from typing import Protocol

import aiohttp

from tollgate_core.errors import UpstreamError
from tollgate_core.metering import INVALID_COUNT
from tollgate_core.sse import iter_events
from tollgate_core.types import FinishReason, StreamEnd, StreamEvent
from tollgate_core.upstream import (
    TRANSPORT_ERRORS,
    end_response,
    incomplete_stream_error,
    post,
    release_at_end,
    response_error,
    transport_error,
    upstream_request_id,
)

__all__ = ["NO_EVENTS", "StreamParser", "count_sum", "finish_reason", "stream_events"]

NO_EVENTS: tuple[StreamEvent, ...] = ()
"""What a parser returns for an event that carries nothing to forward (one shared tuple)."""


class StreamParser(Protocol):
    """Reads one vendor's stream events; `stream_events` drives it."""

    @property
    def done(self) -> bool:
        """True once the protocol's terminal event arrived: the loop stops reading."""
        ...

    @property
    def finished(self) -> bool:
        """Whether the stream reached its end (a stream that did not is a failure)."""
        ...

    def read(self, event: str | None, data: bytes) -> tuple[StreamEvent, ...]:
        """The events one server-sent event carries (`NO_EVENTS` for none).

        Raises:
            UpstreamError: for a vendor error event.
        """
        ...

    def end(self) -> StreamEnd:
        """The last event: the finish reason and the usage seen."""
        ...


async def stream_events(
    http: aiohttp.ClientSession,
    url: str,
    *,
    body: bytes,
    headers: Mapping[str, str],
    parser: StreamParser,
    secrets: Iterable[str | None] = (),
    status_of: Callable[[int, bytes], int] | None = None,
) -> AsyncGenerator[StreamEvent, None]:
    """POST `body` and yield the parser's events, then its `StreamEnd`, last.

    Args:
        http: The server's pooled session.
        url: The streaming endpoint.
        body: The JSON request body, already serialised.
        headers: The request headers (with the key; never logged).
        parser: A fresh parser for this stream.
        secrets: Exact values to redact from error messages (the configured key).
        status_of: See `tollgate_core.upstream.response_error`.

    Raises:
        UpstreamError: an error status, an error event (with the upstream's request id from
            the headers the stream began with), a transport failure, or a stream that ended
            before its terminal event.
    """
    secrets = tuple(secrets)
    response = await post(http, url, body=body, headers=headers, secrets=secrets)
    complete = terminated = False
    try:
        if response.status >= 300:
            error = await response_error(response, secrets=secrets, status_of=status_of)
            complete = True
            raise error
        async with aclosing(iter_events(response.content)) as events:
            async for event in events:
                for item in parser.read(event.event, event.data):
                    yield item
                if parser.done:
                    break
        # After the terminal event the body is normally over too: the connection goes back to
        # the pool. When the body's last bytes are a packet behind, they are waited for in the
        # background (`release_at_end`), not here.
        complete = response.content.is_eof()
        terminated = parser.done
    except UpstreamError as exc:
        exc.request_id = exc.request_id or upstream_request_id(response.headers)
        raise
    except TRANSPORT_ERRORS as exc:
        raise transport_error(exc, secrets=secrets) from exc
    finally:
        if terminated and not complete:
            release_at_end(response)
        else:
            end_response(response, complete=complete)
    if not parser.finished:
        raise incomplete_stream_error()
    yield parser.end()


def count_sum(*counts: int) -> int:
    """The sum of counts read by `token_count`; unreadable if any part is.

    A sum with an unreadable part must not hide inside a plausible total.
    """
    return INVALID_COUNT if any(count < 0 for count in counts) else sum(counts)


def finish_reason(table: Mapping[str, FinishReason], value: object) -> FinishReason:
    """A vendor's finish reason through its `table`; unknown or missing ones read as ``stop``."""
    if isinstance(value, str):
        return table.get(value, "stop")
    return "stop"


MAX_CHOICES = 128
"""The most answers one request may ask for (OpenAI's limit on ``n``)."""


def choice_index(value: object) -> int:
    """A choice's index as an upstream sent it; anything but a small non-negative integer
    reads as 0 (the events of an impossible index must not open a new answer)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_CHOICES:
        return value
    return 0


def log_probability(value: object) -> float | None:
    """A log-probability as an upstream sent it: a finite number at most 0, else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
        if math.isfinite(number) and number <= 0:
            return number
    return None
