"""Checking what the operator typed before anything touches the database."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from tollgate_cli.errors import CliError

T = TypeVar("T")


def positive_amount(text: str, *, name: str = "AMOUNT") -> str:
    """A positive amount of credits, normalised (``"100.50"`` -> ``"100.5"``).

    Read by the API's own rule (`tollgate_server.schemas.check_credits`), so the CLI refuses
    what the API refuses: non-numbers, exponents (``1e3``), surrounding spaces, more than six
    decimal places (never rounded: money that was mistyped stays an error). Zero and negative
    amounts are refused too.
    """
    from tollgate_core import format_credits, parse_credits
    from tollgate_server.schemas import check_credits

    try:
        micro = parse_credits(check_credits(text, negative=True))
    except ValueError as exc:
        raise CliError(f"{name}: {exc}") from None
    if micro <= 0:
        raise CliError(f"{name} must be a positive number of credits, not {text}")
    return format_credits(micro)


def negated(amount: str) -> str:
    """`amount` (a decimal string of credits) with the opposite sign."""
    from tollgate_core import format_credits, parse_credits

    return format_credits(-parse_credits(amount))


def parse_id(text: str, *, name: str = "ID") -> uuid.UUID:
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        raise CliError(f"{name}: {text!r} is not an id (a UUID, as `keys list` shows)") from None


def validated(schema: type[T], **values: Any) -> T:
    """`schema(**values)`, with a pydantic refusal turned into one line that names the field."""
    from pydantic import ValidationError

    from tollgate_cli.errors import validation_message

    try:
        return schema(**values)
    except ValidationError as exc:
        raise CliError(validation_message(exc)) from None
