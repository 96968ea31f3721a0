"""What the console answers with when a page cannot be shown."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tollgate_server.api.errors import status_of
from tollgate_server.errors import Refused


class NotSignedIn(Exception):
    """No valid session: a page redirects to the sign-in page."""


class ConsoleError(Exception):
    """A refusal shown as an HTML page (or, under /console/api, the API's JSON envelope).

    `code` is the same stable code the API would answer with.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def csrf_refused() -> ConsoleError:
    return ConsoleError(403, "csrf_failed", "This form is stale or came from another site.")


def admin_only() -> ConsoleError:
    return ConsoleError(403, "forbidden", "This page needs the admin role.")


@contextlib.contextmanager
def shown_on_page() -> Iterator[None]:
    """A service's refusal (a `Refused`: insufficient balance, ...) as a console page."""
    try:
        yield
    except Refused as exc:
        raise ConsoleError(status_of(exc), exc.code, exc.message) from None
