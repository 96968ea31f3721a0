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
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tollgate_server.errors import database_unavailable
from tollgate_server.observability import tracing
from tollgate_server.observability.logformat import (
    FIELDS_ATTRIBUTE,
    request_id_var,
    trace_id_var,
)
from tollgate_server.observability.metrics import Metrics, route_template

logger = logging.getLogger("tollgate.access")

_VALID_ID = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            # Accept a caller's id only when it is short and plain, so logs cannot be forged.
            if 0 < len(text) <= 64 and set(text) <= _VALID_ID:
                return text
    return None


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a body without (or with a false) Content-Length passes the
    limit; FastAPI lets HTTPExceptions through, so it is answered as a 413 envelope."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class RequestContextMiddleware:
    """Gives every request an id, enforces the body size limit, answers what escaped every
    handler, and logs the request."""

    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, metrics: Metrics | None = None
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        """None when ``TOLLGATE_METRICS=off``: nothing is recorded."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        traced = tracing.start_request(scope["method"], scope.get("headers", ()))
        trace_id = tracing.trace_id(traced)
        # While tracing, an id of our own is the trace id: one id finds the logs and the trace.
        request_id = _incoming_request_id(scope) or trace_id or uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["trace_id"] = trace_id
        state["span"] = traced
        request_id_var.set(request_id)
        trace_id_var.set(trace_id)
        header = (b"x-request-id", request_id.encode())
        started = time.perf_counter()
        status_holder = [0]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        limit = self.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            # Refused before a byte of the body is read into memory.
            await _send_error(
                send_with_id, 413, "request_too_large", BodyTooLarge(limit).detail, request_id
            )
            self._finished(scope, state, 413, started)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        try:
            await self.app(scope, limited_receive, send_with_id)
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
            self._finished(scope, state, status_holder[0], started)

    def _finished(self, scope: Scope, state: dict[str, Any], status: int, started: float) -> None:
        """Everything observed of an answered request: metrics, span, access log line."""
        seconds = time.perf_counter() - started
        try:
            if self.metrics is not None:
                self.metrics.record_request(scope, state, status, seconds)
            if state.get("span") is not None:
                _end_span(scope, state, status)
        except Exception:  # observing a request must never fail it
            logger.exception("recording request %s failed", state.get("request_id"))
        _log_request(scope, state, status, seconds)


def _end_span(scope: Scope, state: dict[str, Any], status: int) -> None:
    log = state.get("log", {})
    route = route_template(scope)
    tracing.end_request(
        state["span"],
        f"{scope.get('method')} {route}",
        {
            "http.request.method": scope.get("method"),
            "http.route": route,
            "http.response.status_code": status,
            "tollgate.request_id": state.get("request_id"),
            "tollgate.account_id": log.get("account"),
            "tollgate.generation_id": log.get("generation_id"),
            "tollgate.model": log.get("model"),
            "tollgate.provider": log.get("provider"),
            "tollgate.status": log.get("status"),
            "tollgate.cost_microcredits": log.get("cost"),
            "tollgate.input_tokens": log.get("input_tokens"),
            "tollgate.output_tokens": log.get("output_tokens"),
        },
    )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    request_id: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = orjson.dumps({"error": {"code": code, "message": message, "request_id": request_id}})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


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


def _log_request(scope: Scope, state: dict[str, Any], status: int, seconds: float) -> None:
    if not logger.isEnabledFor(logging.INFO):
        return
    record = {
        "request_id": state.get("request_id"),
        "method": scope.get("method"),
        "path": scope.get("path"),
        "status": status,
        "ms": round(seconds * 1000, 2),
    }
    if state.get("trace_id"):
        record["trace_id"] = state["trace_id"]
    # The gateway adds account, model, tokens and cost for generations; never a secret.
    record.update(state.get("log", {}))
    # The record is made here rather than by `logger.info`, which would search the stack for
    # its caller and %-format the line: a third of the line's cost. It still goes through the
    # record factory (the redaction) and every handler, as any record does.
    logger.handle(
        logger.makeRecord(
            logger.name,
            logging.INFO,
            __file__,
            0,
            orjson.dumps(record).decode(),
            (),
            None,
            "_log_request",
            {FIELDS_ATTRIBUTE: record},
        )
    )
