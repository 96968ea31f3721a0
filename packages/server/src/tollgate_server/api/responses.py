"""OpenAPI descriptions of the error envelope, so every endpoint documents its failures.

A route lists the failures particular to it: ``responses=errors(401, 403, 404)``. Two are added
to every list: 422 (the OpenAPI document drops it again from operations that take no input, see
`tollgate_server.api.openapi`) and 503, because every route that uses `errors` reads the database
and answers 503 while it is unreachable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

REQUEST_ID_EXAMPLE = "9f1c2a7be0d84c1e8a44c0a9d2f3b6e1"


class ErrorBody(BaseModel):
    """What went wrong: a stable code, a message and the request's id."""

    code: str = Field(description="Stable snake_case code for programs", examples=["not_found"])
    message: str = Field(description="What went wrong, for people", examples=["no such key"])
    request_id: str = Field(
        description="Also in the X-Request-Id header and the logs", examples=[REQUEST_ID_EXAMPLE]
    )


class ErrorEnvelope(BaseModel):
    """Every failure: `{"error": {"code", "message", "request_id"}}`."""

    error: ErrorBody = Field(description="The failure")


class FieldError(BaseModel):
    """One field of a request that did not match its schema."""

    field: str = Field(description="Where: body.<name>, query.<name>, path.<name> or header")
    message: str = Field(description="What is wrong with it, for people")
    type: str = Field(description="Pydantic's error type, such as missing or string_too_short")


class ValidationErrorBody(ErrorBody):
    """A 422's failure: its code and, when the request did not match its schema, the fields."""

    model_config = ConfigDict(title="ValidationErrorBody")

    fields: list[FieldError] | None = Field(
        None,
        description="Every offending field, when the request did not match its schema; absent "
        "when the request was well formed but refused (such as max_tokens above the model's).",
    )


class ValidationErrorEnvelope(BaseModel):
    """A 422: the envelope, with code `validation_error` and the offending fields."""

    error: ValidationErrorBody = Field(description="The failure and its fields")


def _example(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "request_id": REQUEST_ID_EXAMPLE, **extra}}


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 0},
    }
}

_ERRORS: dict[int, tuple[str, dict[str, Any], dict[str, Any]]] = {
    400: (
        "Bad request: the upstream refused the request, or the prompt is longer than the model's "
        "context window",
        _example(
            "context_length_exceeded", "the prompt is about 130000 tokens; gpt-4o-mini takes 128000"
        ),
        {},
    ),
    401: (
        "Missing, invalid or expired credentials",
        _example("unauthenticated", "missing or invalid credentials"),
        {
            "WWW-Authenticate": {
                "description": "`Bearer`: send `Authorization: Bearer <token>`",
                "schema": {"type": "string"},
            }
        },
    ),
    402: (
        "Not enough available credits for this request (`insufficient_balance`)",
        _example("insufficient_balance", "available balance is 0 credits"),
        {},
    ),
    403: (
        "Authenticated, but not allowed: a disabled account (`account_disabled`, on every "
        "authenticated endpoint), an API key on an endpoint that takes only access tokens, "
        "a role that is not admin, or a key limited to other models",
        _example("forbidden", "API keys are accepted only on the generation endpoints"),
        {},
    ),
    404: (
        "No such object (or not yours)",
        _example("not_found", "no such object"),
        {},
    ),
    409: (
        "Conflicts with the current state",
        _example("email_taken", "an account with this email exists"),
        {},
    ),
    413: (
        "Request body too large (`request_too_large`)",
        _example("request_too_large", "the request body is larger than 1048576 bytes"),
        {},
    ),
    422: (
        "Invalid input (`validation_error`, with the offending fields)",
        _example(
            "validation_error",
            "body.email: value is not a valid email address",
            fields=[
                {
                    "field": "body.email",
                    "message": "value is not a valid email address",
                    "type": "value_error",
                }
            ],
        ),
        {},
    ),
    429: (
        "Rate limited; wait for Retry-After seconds",
        _example("rate_limited", "too many failed logins; try again later"),
        _RETRY_AFTER,
    ),
    502: (
        "The upstream failed (`upstream_error`); nothing was charged beyond what it produced",
        _example("upstream_error", "the upstream failed or could not be reached"),
        {},
    ),
    503: (
        "The database is unavailable, or the server is shutting down; retry after Retry-After",
        _example("service_unavailable", "the database is unavailable; retry shortly"),
        _RETRY_AFTER,
    ),
    504: (
        "The upstream, or the whole generation, took too long (`upstream_timeout`, "
        "`generation_timeout`)",
        _example("upstream_timeout", "the upstream did not answer in time"),
        {},
    ),
}

STREAM_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "ServerSentEvent",
    "description": "One event of the stream (the schema of `text/event-stream` describes each "
    "event, as OpenAPI 3.2's `itemSchema` does): `data` is a `chat.completion.chunk` as JSON; "
    "the last chunk carries `usage` with `cost`; a failure after the first byte is an event "
    'whose data is `{"error": {...}}`; the stream ends with `[DONE]`. Lines starting with `:` '
    "are keep-alive comments, not events.",
    "required": ["data"],
    "properties": {"data": {"type": "string", "examples": ["[DONE]"]}},
}
"""For `text/event-stream` responses: validators such as Schemathesis read an OpenAPI 3.1
`schema` there as the schema of each event."""

ALWAYS = (422, 503)
"""Added to every route's list: input is validated, and the database may be down."""


@dataclass(frozen=True, slots=True)
class Failure:
    """A route's own account of one status: when it happens, and an example of its envelope."""

    description: str
    code: str
    message: str


def errors(
    *statuses: int, notes: Mapping[int, str | Failure] | None = None
) -> dict[int | str, Any]:
    """`responses=` for a route: each status with the envelope as its schema and an example.

    Args:
        statuses: the failures particular to the route; 422 and 503 are always added.
        notes: the route's own description of a status (which codes, and why), replacing the
            generic one; a `Failure` replaces the example too.
    """
    notes = notes or {}
    documented: dict[int | str, Any] = {}
    for status in sorted({*statuses, *ALWAYS}):
        description, example, headers = _ERRORS[status]
        note = notes.get(status)
        if isinstance(note, Failure):
            description, example = note.description, _example(note.code, note.message)
        elif note is not None:
            description = note
        response: dict[str, Any] = {
            "model": ValidationErrorEnvelope if status == 422 else ErrorEnvelope,
            "description": description,
            "content": {"application/json": {"example": example}},
        }
        if headers:
            response["headers"] = headers
        documented[status] = response
    return documented
