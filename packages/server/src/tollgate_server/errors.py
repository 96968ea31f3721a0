"""The errors the server raises on purpose: one tree, with no HTTP in it.

Every error Tollgate raises on purpose is a `tollgate_core.TollgateError`: core's
(`UpstreamError` and its classes, `ConfigurationError`, `PluginError`) and, here, the server's
refusals (`Refused` and its classes). A refusal carries a stable `code` for programs, a
`message` for people, when to retry (`retry_after`) and optional extra fields; its class says
what kind of refusal it is. Which HTTP status (and which envelope: Tollgate's or Anthropic's)
answers it is the API layer's business, decided in one place: `tollgate_server.api.errors`.
Services, the CLI and the console raise and catch these classes and never name a status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tollgate_core import TollgateError, UpstreamError, UpstreamRateLimited

from tollgate_server.logs import scrub


class Refused(TollgateError):
    """A request the server refuses on purpose: its class says why, `code` names the case."""

    code = "refused"

    def __init__(
        self,
        code: str | None,
        message: str,
        *,
        retry_after: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.retry_after = retry_after
        """Seconds after which the same request may succeed (None: no advice)."""
        self.extra = dict(extra or {})
        """More fields for the error's JSON (``param``, ``fields``, ...)."""


class InvalidRequest(Refused):
    """The request cannot be carried out as it stands (the prompt is too long, an image is
    refused, ...)."""

    code = "bad_request"


class InvalidParameters(Refused):
    """A parameter is malformed, out of range or not supported by the model."""

    code = "validation_error"


class Unauthenticated(Refused):
    """No credentials, or credentials that name no one."""

    code = "unauthenticated"


class InsufficientCredits(Refused):
    """The account's credits do not cover the request."""

    code = "insufficient_balance"


class Forbidden(Refused):
    """The caller is known but may not do this."""

    code = "forbidden"


class NotFound(Refused):
    """What the request names does not exist (or is not the caller's to see)."""

    code = "not_found"


class Conflict(Refused):
    """The request contradicts the state it would change (a duplicate, a limit, a replay with
    another body)."""

    code = "conflict"


class RateLimited(Refused):
    """Too many requests, or too much at once: retry after `retry_after`."""

    code = "rate_limited"


class Unavailable(Refused):
    """The gateway cannot serve now (shutting down, the database or the model's provider is
    unavailable): retry after `retry_after`."""

    code = "service_unavailable"


class TimedOut(Refused):
    """The generation ran past its time limit."""

    code = "generation_timeout"


class InternalError(Refused):
    """Tollgate's own failure; the request id finds it in the log."""

    code = "internal_error"


class UpstreamFailed(Refused):
    """An upstream failure as a client is told of it: the fixed message of its code (see
    `client_error`), never what the upstream said."""

    code = "upstream_error"


def unauthenticated(message: str = "missing or invalid credentials") -> Unauthenticated:
    return Unauthenticated(None, message)


def forbidden(message: str = "you may not do this") -> Forbidden:
    return Forbidden(None, message)


def not_found(what: str = "object") -> NotFound:
    return NotFound(None, f"no such {what}")


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


def client_error(exc: UpstreamError) -> UpstreamFailed:
    """The client-facing form of an upstream failure: the fixed message of its class, and the
    upstream's request id when it sent one (a checked plain token, see `upstream_request_id`)."""
    retry_after = None
    if isinstance(exc, UpstreamRateLimited):
        retry_after = max(1, int(exc.retry_after or 1))
    message = UPSTREAM_MESSAGES.get(exc.code, UPSTREAM_MESSAGES["upstream_error"])
    if exc.request_id:
        message += f" (upstream request id {exc.request_id})"
    code = exc.code if exc.code in UPSTREAM_MESSAGES else "upstream_error"
    return UpstreamFailed(code, message, retry_after=retry_after)


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
