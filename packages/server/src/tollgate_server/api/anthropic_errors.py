"""Errors on Anthropic's Messages API, in Anthropic's envelope, so its SDKs raise their own
exception classes: ``{"type": "error", "error": {"type", "message", "code"}, "request_id"}``.

``type`` is Anthropic's error type for the status; ``code`` is Tollgate's stable code, kept for
programs that know Tollgate's. A Tollgate 422 (a request well formed but refused: a parameter
the model's provider cannot carry, ``max_tokens`` above the model's) is Anthropic's 400
``invalid_request_error``. Every response of these routes carries the request id in
``request-id`` (Anthropic's header) as well as ``X-Request-Id``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from tollgate_core import TollgateError, UpstreamError

from tollgate_server.api.errors import headers_of, request_id_of, status_of
from tollgate_server.api.json_body import StrictJsonRoute
from tollgate_server.errors import (
    InvalidParameters,
    Unavailable,
    client_error,
    database_unavailable,
)

ERROR_TYPES: Mapping[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
"""Anthropic's error type for each status this API answers with."""


def anthropic_status(status: int) -> int:
    """The status on this API: Tollgate's 422 (refused, well formed) is Anthropic's 400."""
    return 400 if status == 422 else status


def envelope_body(status: int, code: str, message: str, request_id: str) -> dict[str, Any]:
    """Anthropic's error object for a status (Tollgate's), with Tollgate's `code` beside its
    `type`."""
    return {
        "type": "error",
        "error": {
            "type": ERROR_TYPES.get(anthropic_status(status), "api_error"),
            "message": message,
            "code": code,
        },
        "request_id": request_id,
    }


def _told(exc: TollgateError) -> TollgateError:
    """An upstream failure as a client is told of it; any other error as it is."""
    return client_error(exc) if isinstance(exc, UpstreamError) else exc


def error_body(exc: TollgateError, request_id: str) -> dict[str, Any]:
    """Anthropic's error object for `exc`, with Tollgate's `code` beside its `type`."""
    exc = _told(exc)
    return envelope_body(status_of(exc), exc.code, exc.message, request_id)


def error_response(exc: TollgateError, request_id: str) -> Response:
    """The answer to `exc` on this API: the status the one mapping gives it (a 422 as a 400),
    its headers, and Anthropic's envelope."""
    exc = _told(exc)
    return _response(status_of(exc), exc.code, exc.message, request_id, headers_of(exc))


def _response(
    status: int, code: str, message: str, request_id: str, headers: Mapping[str, str]
) -> Response:
    return Response(
        orjson.dumps(envelope_body(status, code, message, request_id)),
        status_code=anthropic_status(status),
        media_type="application/json",
        headers={**headers, "request-id": request_id},
    )


def _validation_message(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    message = str(first.get("msg", "invalid"))
    return f"{where}: {message}" if where else message


class AnthropicRoute(StrictJsonRoute):
    """A route of Anthropic's Messages API: every error it raises (authentication, validation,
    refusals) is answered in Anthropic's envelope, and every answer names its request id in
    ``request-id``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def anthropic_handler(request: Request) -> Response:
            request_id = request_id_of(request)
            try:
                response = await handler(request)
            except TollgateError as exc:
                return error_response(exc, request_id)
            except RequestValidationError as exc:
                refused = InvalidParameters("validation_error", _validation_message(exc))
                return error_response(refused, request_id)
            except StarletteHTTPException as exc:
                # The framework's own refusals (a body it cannot read, ...) carry a status.
                detail = exc.detail if isinstance(exc.detail, str) else "invalid request"
                return _response(exc.status_code, "bad_request", detail, request_id, {})
            except Exception as exc:
                if not database_unavailable(exc):
                    raise  # a bug: the middleware logs it and answers 500
                unavailable = Unavailable(
                    None, "the database is unavailable; retry shortly", retry_after=2
                )
                return error_response(unavailable, request_id)
            response.headers["request-id"] = request_id
            return response

        return anthropic_handler
