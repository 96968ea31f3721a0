"""Answering every error with the envelope: the one place where errors get HTTP statuses.

``{"error": {"code": "snake_case_code", "message": "...", "request_id": "..."}}``: a stable
`code` for programs, a `message` for people, and the request id that is also in the
`X-Request-Id` header and the logs. Nothing else leaks: no stack trace, no upstream body, no key.

The services raise the classes of `tollgate_server.errors` (and core's `TollgateError`s);
`status_of` and `headers_of` say how each is answered over HTTP, for the routes' handlers, the
chat fast path and the generation responses alike.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from tollgate_core import TollgateError, UpstreamError

from tollgate_server.errors import (
    Conflict,
    Forbidden,
    InsufficientCredits,
    InternalError,
    InvalidParameters,
    InvalidRequest,
    NotFound,
    RateLimited,
    Refused,
    TimedOut,
    Unauthenticated,
    Unavailable,
    UpstreamFailed,
    client_error,
    upstream_detail,
)

logger = logging.getLogger("tollgate.errors")

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "service_unavailable",
}


STATUS: Mapping[type[Refused], int] = {
    InvalidRequest: 400,
    Unauthenticated: 401,
    InsufficientCredits: 402,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    InvalidParameters: 422,
    RateLimited: 429,
    InternalError: 500,
    Unavailable: 503,
    TimedOut: 504,
}
"""The HTTP status of each kind of refusal."""

UPSTREAM_STATUS: Mapping[str, int] = {
    "upstream_bad_request": 400,
    "upstream_rate_limited": 429,
    "upstream_timeout": 504,
}
"""The status of an upstream failure by its code; any other is a 502 (bad gateway)."""


def status_of(exc: TollgateError) -> int:
    """The HTTP status that answers `exc`."""
    if isinstance(exc, UpstreamFailed):
        return UPSTREAM_STATUS.get(exc.code, 502)
    if isinstance(exc, Refused):
        for kind in type(exc).__mro__:
            if (status := STATUS.get(kind)) is not None:
                return status
        return 400
    # Core's own errors that reach a request (a plugin's configuration problem, ...).
    return 400


def headers_of(exc: TollgateError) -> dict[str, str]:
    """The HTTP headers that go with `exc`'s answer: when to retry, how to authenticate."""
    headers: dict[str, str] = {}
    if isinstance(exc, Refused) and exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    return headers


def error_response(exc: TollgateError, request_id: str) -> Response:
    """The envelope that answers `exc`; an upstream failure is first told as a client may
    hear it (`client_error`)."""
    if isinstance(exc, UpstreamError):
        exc = client_error(exc)
    extra = exc.extra if isinstance(exc, Refused) else None
    return envelope(
        status_of(exc), exc.code, exc.message, request_id, headers=headers_of(exc), extra=extra
    )


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method some route of `app` answers on `path`, for a 405's Allow header."""
    methods: set[str] = set()
    for route in iter_route_contexts(app.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path) and route.methods:
            methods |= route.methods
    return sorted(methods)


def request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def envelope(
    status: int,
    code: str,
    message: str,
    request_id: str,
    *,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    body: dict[str, Any] = {"code": code, "message": message, "request_id": request_id}
    if extra:
        body.update(extra)
    return Response(
        orjson.dumps({"error": body}),
        status_code=status,
        media_type="application/json",
        headers=dict(headers or {}),
    )


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error with the envelope, FastAPI's own validation errors included."""

    @app.exception_handler(TollgateError)
    async def _tollgate(request: Request, exc: TollgateError) -> Response:
        if isinstance(exc, UpstreamError):
            logger.warning(
                "upstream failed (request %s): %s", request_id_of(request), upstream_detail(exc)
            )
        return error_response(exc, request_id_of(request))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        fields = [
            {
                "field": _field_path(tuple(err.get("loc", ()))),
                "message": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
            for err in exc.errors()
        ]
        first = fields[0] if fields else {"field": "", "message": "invalid request"}
        message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
        return envelope(
            422, "validation_error", message, request_id_of(request), extra={"fields": fields}
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400:
            # Only the framework raises these, for a body it could not decode (not UTF-8, a
            # multipart form without its boundary): the same 422 as a body that is text but not
            # JSON, so that a client has one case to handle, and 400 keeps its one meaning.
            detail = exc.detail if isinstance(exc.detail, str) else "could not be parsed"
            return envelope(
                422,
                "validation_error",
                f"body: {detail}",
                request_id_of(request),
                extra={"fields": [{"field": "body", "message": detail, "type": "body_unparsable"}]},
            )
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            message = "no such endpoint"
        if exc.status_code == 405:
            # Starlette names only the methods of the first route whose path matched.
            headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
        return envelope(exc.status_code, code, message, request_id_of(request), headers=headers)
