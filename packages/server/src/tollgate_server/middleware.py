"""Pure ASGI middleware: request ids, the last-resort error envelope, one log line a request.

Written against raw ASGI rather than `BaseHTTPMiddleware`: it costs a few microseconds a request
and never buffers a streaming body.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tollgate_server.errors import database_unavailable

logger = logging.getLogger("tollgate.access")

_VALID_ID = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            # Accept a caller's id only when it is short and plain, so logs cannot be forged.
            if 0 < len(text) <= 64 and set(text) <= _VALID_ID:
                return text
    return None


class RequestContextMiddleware:
    """Gives every request an id, answers what escaped every handler, and logs the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())
        started = time.perf_counter()
        status_holder = [0]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if status_holder[0]:
                raise  # the response has begun; nothing better can be sent now
            status, code, message, headers = _describe_unexpected(exc, request_id)
            body = orjson.dumps(
                {"error": {"code": code, "message": message, "request_id": request_id}}
            )
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"application/json"), *headers],
                }
            )
            await send_with_id({"type": "http.response.body", "body": body})
        finally:
            _log_request(scope, state, status_holder[0], started)


def _describe_unexpected(
    exc: Exception, request_id: str
) -> tuple[int, str, str, list[tuple[bytes, bytes]]]:
    if database_unavailable(exc):
        logger.warning("database unavailable (request %s): %s", request_id, type(exc).__name__)
        return (
            503,
            "service_unavailable",
            "the database is unavailable; retry shortly",
            [(b"retry-after", b"2")],
        )
    logger.error("unhandled error (request %s)", request_id, exc_info=exc)
    return 500, "internal_error", "internal error; quote the request id", []


def _log_request(scope: Scope, state: dict[str, Any], status: int, started: float) -> None:
    if not logger.isEnabledFor(logging.INFO):
        return
    record = {
        "request_id": state.get("request_id"),
        "method": scope.get("method"),
        "path": scope.get("path"),
        "status": status,
        "ms": round((time.perf_counter() - started) * 1000, 2),
    }
    # The gateway adds account, model, tokens and cost for generations; never a secret.
    record.update(state.get("log", {}))
    logger.info("%s", orjson.dumps(record).decode())
