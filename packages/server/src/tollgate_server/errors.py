"""The error envelope every failure is answered with.

``{"error": {"code": "snake_case_code", "message": "...", "request_id": "..."}}``: a stable
`code` for programs, a `message` for people, and the request id that is also in the
`X-Request-Id` header and the logs. Nothing else leaks: no stack trace, no upstream body, no key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tollgate_core import UpstreamError, UpstreamRateLimited


class ApiError(Exception):
    """An error the API answers with on purpose: a status, a stable code and a message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def unauthenticated(message: str = "missing or invalid credentials") -> ApiError:
    return ApiError(401, "unauthenticated", message, headers={"WWW-Authenticate": "Bearer"})


def forbidden(message: str = "you may not do this") -> ApiError:
    return ApiError(403, "forbidden", message)


def not_found(what: str = "object") -> ApiError:
    return ApiError(404, "not_found", f"no such {what}")


def upstream_api_error(exc: UpstreamError) -> ApiError:
    """The client-facing form of an upstream failure. `exc.message` is already safe to show."""
    headers: dict[str, str] = {}
    if isinstance(exc, UpstreamRateLimited):
        headers["Retry-After"] = str(max(1, int(exc.retry_after or 1)))
    return ApiError(exc.status, exc.code, exc.message, headers=headers)


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means the database cannot be reached right now (answer 503, not 500)."""
    import asyncpg
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if isinstance(exc, OperationalError | InterfaceError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, DBAPIError):
        exc = exc.orig or exc
    return isinstance(
        exc,
        ConnectionError
        | TimeoutError
        | asyncpg.exceptions.CannotConnectNowError
        | asyncpg.exceptions.ConnectionDoesNotExistError
        | asyncpg.exceptions.AdminShutdownError
        | asyncpg.exceptions.InterfaceError,
    ) or (isinstance(exc, OSError) and exc.errno is not None)
