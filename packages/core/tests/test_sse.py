"""tollgate_core.sse: the line-fed SSE decoder."""

from __future__ import annotations

from tollgate_core.sse import SSEDecoder, SSEEvent


def decode(body: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [e for line in body.splitlines(keepends=True) if (e := decoder.feed(line))]
    if (last := decoder.flush()) is not None:
        events.append(last)
    return events


def test_data_lines_and_event_names() -> None:
    body = b'event: message_start\ndata: {"a":1}\n\ndata: [DONE]\n\n'
    assert decode(body) == [SSEEvent("message_start", b'{"a":1}'), SSEEvent(None, b"[DONE]")]


def test_crlf_framing() -> None:
    assert decode(b"data: x\r\n\r\ndata: y\r\n\r\n") == [SSEEvent(None, b"x"), SSEEvent(None, b"y")]


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert decode(b"data: a\ndata:b\ndata:  c\n\n") == [SSEEvent(None, b"a\nb\n c")]


def test_comments_ids_and_empty_events_are_ignored() -> None:
    body = b": keep-alive\n\nid: 4\nretry: 10\n\nevent: ping\n\ndata: z\n\n"
    assert decode(body) == [SSEEvent(None, b"z")]


def test_an_event_name_does_not_leak_into_the_next_event() -> None:
    assert decode(b"event: a\ndata: 1\n\ndata: 2\n\n")[1] == SSEEvent(None, b"2")


def test_a_last_event_without_blank_line_is_flushed() -> None:
    assert decode(b"data: tail") == [SSEEvent(None, b"tail")]


async def _events_from(chunks: list[bytes]) -> list[tuple[str | None, bytes]]:
    import asyncio

    import aiohttp
    from tollgate_core.sse import iter_events

    class Protocol:
        _reading_paused = False

        def pause_reading(self, **_: object) -> None: ...
        def resume_reading(self, **_: object) -> None: ...

    reader = aiohttp.StreamReader(Protocol(), 2**16, loop=asyncio.get_running_loop())  # type: ignore[arg-type]
    for chunk in chunks:
        reader.feed_data(chunk)
    reader.feed_eof()
    return [(e.event, e.data) for e in [event async for event in iter_events(reader)]]


def test_iter_events_joins_lines_split_across_network_reads() -> None:
    import asyncio

    body = b'event: a\r\ndata: {"x": 1}\r\n\r\ndata: two\ndata: lines\n\ndata: [DONE]'
    expected = [("a", b'{"x": 1}'), (None, b"two\nlines"), (None, b"[DONE]")]
    for cut in range(1, len(body)):
        chunks = [body[:cut], body[cut:]]
        assert asyncio.run(_events_from(chunks)) == expected, cut
    assert asyncio.run(_events_from([bytes([b]) for b in body])) == expected
