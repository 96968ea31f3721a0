"""``TOLLGATE_LOG_FORMAT=json``: one JSON object a line, for machines.

Every line has ``time``, ``level``, ``logger`` and ``message``, the request id (and trace id)
of the request it was written for, and, for the access line, the request's fields at the top
level: method, route, status, ms, account, generation_id, model, cost, tokens, ttft_ms.
The finished line goes through the same redaction as the text format (`tollgate_server.logs`).
"""

from __future__ import annotations

import contextvars
import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from tollgate_server.logs import scrub

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "tollgate_request_id", default=None
)
"""Set by the request-context middleware, so a line logged during a request names it."""
trace_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "tollgate_trace_id", default=None
)

FIELDS_ATTRIBUTE = "tollgate_fields"
"""``logger.info(..., extra={FIELDS_ATTRIBUTE: {...}})``: fields the JSON line carries apart."""


class JsonFormatter(logging.Formatter):
    """A `logging.Formatter` writing one JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, FIELDS_ATTRIBUTE, None)
        if isinstance(fields, dict):
            line["message"] = "request"
            line.update(fields)
        else:
            line["message"] = record.getMessage()
        if "request_id" not in line and (request_id := request_id_var.get()) is not None:
            line["request_id"] = request_id
        if "trace_id" not in line and (trace_id := trace_id_var.get()) is not None:
            line["trace_id"] = trace_id
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return scrub(orjson.dumps(line, default=str).decode())
