"""OpenAPI descriptions of the error envelope, so every endpoint documents its failures."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    code: str = Field(description="Stable snake_case code for programs", examples=["not_found"])
    message: str = Field(description="What went wrong, for people")
    request_id: str = Field(description="Also in the X-Request-Id header and the logs")


class ErrorEnvelope(BaseModel):
    error: ErrorBody


_DESCRIPTIONS = {
    400: "Bad request (for generations: the upstream refused the request)",
    401: "Missing, invalid or expired credentials",
    402: "Not enough available credits",
    403: "Authenticated, but not allowed",
    404: "No such object (or not yours)",
    409: "Conflicts with the current state",
    413: "Request body too large",
    422: "Invalid input (code validation_error, with the offending fields)",
    429: "Rate limited; see Retry-After",
    502: "The upstream failed",
    503: "Database unavailable or shutting down; see Retry-After",
    504: "The upstream timed out",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status with the envelope as its schema."""
    return {
        status: {"model": ErrorEnvelope, "description": _DESCRIPTIONS[status]}
        for status in (*statuses, 422)
    }
