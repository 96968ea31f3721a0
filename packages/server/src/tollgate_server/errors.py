"""The error envelope every failure is answered with.

``{"error": {"code": "snake_case_code", "message": "...", "request_id": "..."}}``: a stable
`code` for programs, a `message` for people, and the request id that is also in the
`X-Request-Id` header and the logs. Nothing else leaks: no stack trace, no upstream body, no key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tollgate_core import UpstreamError, UpstreamRateLimited

from tollgate_server.logs import scrub


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


UPSTREAM_MESSAGES = {
    "upstream_bad_request": "the upstream refused the request as invalid",
    "upstream_authentication_error": "the upstream refused the gateway's credentials; "
    "the operator has been told",
    "upstream_rate_limited": "the upstream is rate limiting requests; retry after Retry-After",
    "upstream_timeout": "the upstream did not answer in time",
    "upstream_error": "the upstream failed or could not be reached",
}
"""What a client is told of an upstream failure: a fixed text per error class. What the upstream
said, even redacted, names internal hosts, organisations and masked keys; it goes to the log and
to the admin view of the generation (`upstream_detail`)."""

MAX_DETAIL = 1000


def upstream_api_error(exc: UpstreamError) -> ApiError:
    """The client-facing form of an upstream failure: the fixed message of its class, and the
    upstream's request id when it sent one (a checked plain token, see `upstream_request_id`)."""
    headers: dict[str, str] = {}
    if isinstance(exc, UpstreamRateLimited):
        headers["Retry-After"] = str(max(1, int(exc.retry_after or 1)))
    message = UPSTREAM_MESSAGES.get(exc.code, UPSTREAM_MESSAGES["upstream_error"])
    if exc.request_id:
        message += f" (upstream request id {exc.request_id})"
    return ApiError(exc.status, exc.code, message, headers=headers)


def upstream_detail(exc: UpstreamError) -> str:
    """What the upstream said, for the log and admins: redacted by the log's own redaction (a
    provider's message is redacted already; a plugin's might not be), and bounded."""
    detail = scrub(exc.message)
    return detail if len(detail) <= MAX_DETAIL else detail[: MAX_DETAIL - 1] + "…"


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means the database cannot be reached right now (answer 503, not 500).

    Follows the chain of causes: SQLAlchemy wraps the driver's error in its own, and the
    driver's in an adapter's.
    """
    import asyncpg
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    unreachable = (
        ConnectionError,
        TimeoutError,
        asyncpg.exceptions.CannotConnectNowError,
        asyncpg.exceptions.AdminShutdownError,
        asyncpg.exceptions.CrashShutdownError,
        asyncpg.exceptions.ConnectionDoesNotExistError,
        asyncpg.exceptions.ConnectionFailureError,
        asyncpg.exceptions.TooManyConnectionsError,
        asyncpg.exceptions.InterfaceError,
        # A connection left mid-protocol by an outage ("cannot switch to state ..."): it is
        # discarded, and the operation is as retryable as after any other outage.
        asyncpg.exceptions.InternalClientError,
        OperationalError,
        InterfaceError,
    )
    current: BaseException | None = exc
    for _ in range(8):
        if current is None:
            return False
        if isinstance(current, unreachable):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, OSError) and current.errno is not None:
            return True
        following = current.orig if isinstance(current, DBAPIError) else None
        current = following or current.__cause__ or current.__context__
    return False
