"""Every failure of a command becomes one line on stderr and exit status 1.

The root command group catches what the commands raise (`CliError`, the services' refusals and
every other `TollgateError`, `AmountError`, pydantic's `ValidationError`, database errors) in
one place, so no command needs its own try/except and none can leak a traceback.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from tollgate_cli.output import fail, one_line


class CliError(Exception):
    """A mistake in what the operator typed or asked for; the message says what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def validation_message(exc: Any) -> str:
    """A pydantic `ValidationError` as one line: the first problem and where it is."""
    errors = exc.errors()
    if not errors:
        return str(exc)
    first = errors[0]
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    where = ".".join(str(part) for part in first.get("loc", ()))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {message}{more}" if where else f"{message}{more}"


def describe(exc: BaseException) -> str:
    """The one line to show for `exc`.

    Imports lazily: the server's modules are loaded only once a command ran and failed.
    """
    if isinstance(exc, CliError):
        return exc.message
    from pydantic import ValidationError
    from tollgate_core import AmountError, TollgateError

    if isinstance(exc, TollgateError):
        return exc.message
    if isinstance(exc, AmountError):
        return str(exc)
    if isinstance(exc, ValidationError):
        return validation_message(exc)

    from sqlalchemy.exc import SQLAlchemyError
    from tollgate_server.errors import database_unavailable

    reason = one_line(str(exc)) or type(exc).__name__
    if database_unavailable(exc):
        return f"cannot reach the database ({reason})"
    if isinstance(exc, SQLAlchemyError):
        orig = getattr(exc, "orig", None)
        return f"database error: {one_line(str(orig)) if orig is not None else reason}"
    return f"unexpected {type(exc).__name__}: {reason}"


class CliGroup(TyperGroup):
    """The root group: turns any failure below it into one line (Typer's own exits pass)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):
            raise  # Typer's own exits, and usage errors it shows with the usage line
        except Exception as exc:
            fail(describe(exc))
