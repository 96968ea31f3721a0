"""Answering every error with the envelope (see `tollgate_server.errors`)."""

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

from tollgate_server.errors import ApiError, upstream_api_error, upstream_detail

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

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return envelope(
            exc.status,
            exc.code,
            exc.message,
            request_id_of(request),
            headers=exc.headers,
            extra=exc.extra,
        )

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

    @app.exception_handler(UpstreamError)
    async def _upstream(request: Request, exc: UpstreamError) -> Response:
        err = upstream_api_error(exc)
        logger.warning(
            "upstream failed (request %s): %s", request_id_of(request), upstream_detail(exc)
        )
        return envelope(
            err.status, err.code, err.message, request_id_of(request), headers=err.headers
        )

    @app.exception_handler(TollgateError)
    async def _tollgate(request: Request, exc: TollgateError) -> Response:
        return envelope(400, exc.code, exc.message, request_id_of(request))
