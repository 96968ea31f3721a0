"""Turning upstream failures into safe `UpstreamError`s, for provider packages.

Every provider reports failures the same way: a short message such as
``"upstream answered 429: Rate limit reached"``, with the configured key and anything shaped like
a key (masked ones included) replaced by ``[redacted]``, cut to a few hundred characters. The
vendor's raw body never reaches the message, so it never reaches a log line; the message itself
is for logs and operators, never for clients (see `tollgate_core.errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from email.utils import parsedate_to_datetime

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

from tollgate_core.errors import (
    UpstreamBadRequest,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    error_for_status,
)

__all__ = [
    "MAX_VENDOR_MESSAGE",
    "REDACTED",
    "TRANSPORT_ERRORS",
    "check_extras",
    "end_response",
    "incomplete_stream_error",
    "parse_retry_after",
    "post",
    "redact",
    "release_at_end",
    "response_error",
    "safe_message",
    "status_error",
    "stream_error",
    "transport_error",
    "upstream_request_id",
    "vendor_error_message",
]

MAX_VENDOR_MESSAGE = 200
"""Characters of a vendor's error message kept in our message."""

REDACTED = "[redacted]"

TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    HttpProcessingError,  # a malformed or over-long line in the body
    OSError,  # ConnectionResetError and friends, and TimeoutError
)
"""What a provider catches around its HTTP calls and turns into `transport_error`.

Never `asyncio.CancelledError`: cancellation (the gateway's timeouts, a client that left) must
pass through untouched."""

_KEY_LIKE = re.compile(
    # A key as vendors show it masked, such as OpenAI's "sk-abcde****wxyz" (its first eight and
    # last four characters): the ends of a real key, and too short for the next pattern.
    r"(?<![A-Za-z0-9_-])(?:sk-|tg-|AIza)[A-Za-z0-9_-]*(?:\*+|\.{3}|…)[A-Za-z0-9_-]*"
    # The look-behind keeps ordinary words such as "task-runner" intact.
    r"|(?<![A-Za-z0-9_-])(?:sk-|tg-)[A-Za-z0-9_-]{8,}"  # OpenAI, Anthropic (sk-ant-), Tollgate
    r"|(?<![A-Za-z0-9_-])AIza[A-Za-z0-9_-]{10,}"  # Google API keys
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}"  # any bearer token, whatever its shape
)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Replace each of `secrets` and anything shaped like an API key with ``[redacted]``.

    Args:
        text: The text to clean, such as a vendor's error message.
        secrets: Exact values to remove wherever they appear (the configured API key);
            ``None`` and empty values are skipped.

    Returns:
        The text with no secret and no key-shaped token left in it.
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    if not may_hold_a_key(text):
        return text
    return _KEY_LIKE.sub(REDACTED, text)


def may_hold_a_key(text: str) -> bool:
    """Whether `_KEY_LIKE` could match in `text`: each of its patterns starts with ``sk-``,
    ``tg-``, ``AIza`` or ``bearer`` in any case. Most text (a log line, a vendor's message)
    has none of them, and this check costs about a tenth of the pattern's scan.

    (Every character that ``(?i:bearer)`` matches lower-cases to that letter of ``bearer``, so
    the lower-cased text holds ``bearer`` wherever the pattern would match it.)
    """
    return "sk-" in text or "tg-" in text or "AIza" in text or "bearer" in text.lower()


def safe_message(prefix: str, vendor_message: str, secrets: Iterable[str | None] = ()) -> str:
    """``"<prefix>: <vendor message>"``, redacted first, then cut to `MAX_VENDOR_MESSAGE`.

    Redacting before cutting matters: a cut through the middle of a key could leave a prefix
    too short to be recognised as one.
    """
    cleaned = " ".join(redact(vendor_message, secrets).split())
    if len(cleaned) > MAX_VENDOR_MESSAGE:
        cleaned = cleaned[: MAX_VENDOR_MESSAGE - 1] + "…"
    return f"{prefix}: {cleaned}" if cleaned else prefix


def vendor_error_message(body: bytes) -> str:
    """The human message inside a vendor's error body, or ``""`` when there is none.

    Understands the shapes OpenAI, Anthropic and Gemini use (``{"error": {"message": ...}}``),
    Gemini's streaming list of those, and the ``{"error": "..."}``, ``{"message": ...}`` and
    ``{"detail": ...}`` shapes of OpenAI-compatible servers. Anything else (HTML from a proxy,
    say) yields ``""`` rather than the raw body.
    """
    try:
        data: object = json.loads(body)
    except ValueError:
        return ""
    if isinstance(data, list) and data:
        data = data[0]
    if not isinstance(data, dict):
        return ""
    error = data.get("error", data)
    if isinstance(error, str):
        return error
    if isinstance(error, dict):
        for key in ("message", "detail"):
            value = error.get(key)
            if isinstance(value, str):
                return value
    return ""


_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
REQUEST_ID_HEADERS = ("x-request-id", "request-id")
"""Where OpenAI (and compatible servers) and Anthropic put their id of a request."""


def upstream_request_id(headers: Mapping[str, str]) -> str | None:
    """The upstream's id of the request, when it sent one that is a plain token.

    It is the one piece of an upstream's answer a client is shown (to quote to the operator),
    so anything else in that header (spaces, markup, a line of text) is dropped, not cleaned.
    """
    for name in REQUEST_ID_HEADERS:
        value = headers.get(name)
        if value is not None:
            value = value.strip()
            return value if _REQUEST_ID.fullmatch(value) else None
    return None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.

    Returns None when the header is absent or unreadable, and never a negative number.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def status_error(
    status: int,
    vendor_message: str,
    *,
    secrets: Iterable[str | None] = (),
    retry_after: float | None = None,
    request_id: str | None = None,
) -> UpstreamError:
    """The core error for an upstream HTTP status, with a safe message.

    Args:
        status: The upstream's HTTP status (or the status its error event stands for).
        vendor_message: The vendor's own message, from `vendor_error_message`; redacted here.
        secrets: Exact values to redact, such as the configured API key.
        retry_after: Seconds from ``Retry-After``, kept on `UpstreamRateLimited`.
        request_id: The upstream's id of the request, from `upstream_request_id`.
    """
    message = safe_message(f"upstream answered {status}", vendor_message, secrets)
    return error_for_status(status, message, retry_after=retry_after, request_id=request_id)


def stream_error(
    status: int, vendor_message: str, *, secrets: Iterable[str | None] = ()
) -> UpstreamError:
    """The core error for a vendor error event in the middle of a stream.

    `status` is the HTTP status the event stands for (from its ``code`` or its type).
    """
    message = safe_message(f"upstream failed mid-stream ({status})", vendor_message, secrets)
    return error_for_status(status, message)


def check_extras(extra: Iterable[str], supported: frozenset[str], *, upstream: str) -> None:
    """Refuse request extras a provider cannot carry.

    Raises:
        UpstreamBadRequest: naming the unsupported fields.
    """
    unknown = sorted(set(extra) - supported)
    if unknown:
        raise UpstreamBadRequest(f"{upstream} upstreams do not support: {', '.join(unknown)}")


def transport_error(exc: BaseException, *, secrets: Iterable[str | None] = ()) -> UpstreamError:
    """The core error for a failure below HTTP: a timeout, a refused or reset connection.

    `TimeoutError` (which aiohttp's own timeout errors subclass) becomes `UpstreamTimeout`;
    everything else becomes `UpstreamUnavailable`. The message names the exception class and
    its redacted text, which for aiohttp names the host but never a header.
    """
    detail = safe_message(type(exc).__name__, str(exc), secrets)
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(f"upstream timed out ({detail})")
    return UpstreamUnavailable(f"upstream connection failed ({detail})")


async def post(
    http: aiohttp.ClientSession,
    url: str,
    *,
    body: bytes,
    headers: Mapping[str, str],
    secrets: Iterable[str | None] = (),
) -> aiohttp.ClientResponse:
    """POST `body` on the server's session and return the response, whatever its status.

    No timeout is added (the gateway times the whole generation) and nothing is retried.

    Raises:
        UpstreamTimeout: the connection timed out.
        UpstreamUnavailable: the upstream could not be reached or dropped the connection.
    """
    try:
        return await http.post(url, data=body, headers=headers, raise_for_status=False)
    except TRANSPORT_ERRORS as exc:
        raise transport_error(exc, secrets=secrets) from exc


async def response_error(
    response: aiohttp.ClientResponse,
    *,
    secrets: Iterable[str | None] = (),
    status_of: Callable[[int, bytes], int] | None = None,
) -> UpstreamError:
    """Read an error response's body and build the core error for it.

    Args:
        response: A response with an error status; its body is read here.
        secrets: Exact values to redact from the vendor's message.
        status_of: For vendors whose status says less than their body (Gemini answers a bad
            key with a 400): maps ``(status, body)`` to the status to report.
    """
    body = await response.read()
    status = status_of(response.status, body) if status_of else response.status
    message = vendor_error_message(body) or (response.reason or "")
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    return status_error(
        status,
        message,
        secrets=secrets,
        retry_after=retry_after,
        request_id=upstream_request_id(response.headers),
    )


async def post_for_body(
    http: aiohttp.ClientSession,
    url: str,
    *,
    body: bytes,
    headers: Mapping[str, str],
    secrets: Iterable[str | None] = (),
    status_of: Callable[[int, bytes], int] | None = None,
) -> bytes:
    """One non-streaming call: POST, map an error status to its core error, return the body.

    The connection goes back to the pool only after a complete body (see `end_response`).
    """
    response = await post(http, url, body=body, headers=headers, secrets=secrets)
    complete = False
    try:
        if response.status >= 300:
            error = await response_error(response, secrets=secrets, status_of=status_of)
            complete = True
            raise error
        data = await response.read()
        complete = True
    except TRANSPORT_ERRORS as exc:
        raise transport_error(exc, secrets=secrets) from exc
    finally:
        end_response(response, complete=complete)
    return data


def end_response(response: aiohttp.ClientResponse, *, complete: bool) -> None:
    """Hand the connection back to the pool after a complete body; otherwise close it at once.

    Closing matters: `release()` may keep a half-read socket, and only a closed connection
    tells the upstream to stop generating (and stop billing) for a client that left.
    """
    if complete:
        response.release()
    else:
        response.close()


BODY_END_GRACE_SECONDS = 1.0
"""How long `release_at_end` waits for the rest of a body after the protocol's terminal event."""
MAX_TRAILING_BYTES = 65536
"""What `release_at_end` reads after the terminal event before it gives up on the connection."""
_ENDING: set[asyncio.Task[None]] = set()
"""Responses waiting for their last bytes (the loop keeps only weak references to tasks)."""


def release_at_end(response: aiohttp.ClientResponse) -> None:
    """Hand the connection back to the pool once the body has ended, in the background.

    For a stream whose terminal event (``data: [DONE]``, ``message_stop``) has arrived but not
    yet the body's last bytes: a server that writes the chunked encoding's last chunk on its
    own (aiohttp's ``write_eof``, most frameworks) sends it a packet later, often a TLS record
    later. Closing the connection then would cost the next request a new connection (a TCP and
    a TLS handshake); waiting for the bytes here would hold up the end of the answer. The rest
    is read for at most `BODY_END_GRACE_SECONDS` (and `MAX_TRAILING_BYTES`); then the connection
    is released if the body ended, closed otherwise. The upstream has finished generating, so
    nothing is generated, or billed, meanwhile.
    """
    task = asyncio.ensure_future(_release_at_end(response))
    _ENDING.add(task)
    task.add_done_callback(_ENDING.discard)


async def _release_at_end(response: aiohttp.ClientResponse) -> None:
    complete = False
    try:
        # The grace running out, a failed connection, a closed session: the connection is
        # closed below, and nothing waits for this task.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(BODY_END_GRACE_SECONDS):
                left = MAX_TRAILING_BYTES
                while left > 0 and not response.content.is_eof():
                    data = await response.content.readany()
                    if not data:
                        break
                    left -= len(data)
            complete = response.content.is_eof()
    finally:
        end_response(response, complete=complete)


def incomplete_stream_error() -> UpstreamUnavailable:
    """The error for a stream that ended before the protocol's terminal event."""
    return UpstreamUnavailable("upstream stream ended before it finished")
