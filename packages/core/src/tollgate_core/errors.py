"""Errors shared by every package.

Upstream failures become `UpstreamError` subclasses (a class per kind of failure, a stable
`code`) with a short message for logs and operators: never the vendor's raw body, never a
key. Even redacted, what an upstream says is not for clients (it names internal hosts,
organisations, masked keys): the server answers a fixed message per class, with the
upstream's request id when it sent one.
"""

from __future__ import annotations


class TollgateError(Exception):
    """Base class of every error Tollgate raises on purpose."""

    code: str = "tollgate_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(TollgateError):
    """A setting is missing or wrong; the message names the setting to fix."""

    code = "configuration_error"


class PluginError(TollgateError):
    """A provider plugin could not be loaded or registered."""

    code = "plugin_error"


class UpstreamError(TollgateError):
    """The upstream failed. Which status the gateway answers with is the server's API layer's
    choice, by `code`."""

    code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status
        self.request_id = request_id
        """The upstream's id for the failed request (its ``x-request-id``), already checked to
        be a plain token: the one thing from the upstream a client may quote to the operator."""


class UpstreamBadRequest(UpstreamError):
    """The upstream refused the request as malformed (its 400/404/422)."""

    code = "upstream_bad_request"


class UpstreamAuthenticationError(UpstreamError):
    """The upstream refused our key: an operator problem, shown to clients as a 502."""

    code = "upstream_authentication_error"


class UpstreamRateLimited(UpstreamError):
    """The upstream asked us to slow down; `retry_after` is in seconds when it said."""

    code = "upstream_rate_limited"

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int | None = 429,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, upstream_status=upstream_status, request_id=request_id)
        self.retry_after = retry_after


class UpstreamTimeout(UpstreamError):
    """The upstream did not connect, start or continue in time."""

    code = "upstream_timeout"


class UpstreamUnavailable(UpstreamError):
    """The upstream answered 5xx, reset the connection, or could not be reached."""

    code = "upstream_error"


def error_for_status(
    status: int,
    message: str,
    *,
    retry_after: float | None = None,
    request_id: str | None = None,
) -> UpstreamError:
    """Map an upstream HTTP status to the core error the gateway understands."""
    if status == 429:
        return UpstreamRateLimited(
            message, upstream_status=status, retry_after=retry_after, request_id=request_id
        )
    kind: type[UpstreamError] = UpstreamUnavailable
    if status in (401, 403):
        kind = UpstreamAuthenticationError
    elif status in (408, 504):
        kind = UpstreamTimeout
    elif 400 <= status < 500:
        kind = UpstreamBadRequest
    return kind(message, upstream_status=status, request_id=request_id)
