"""Credits as exact integers.

Every amount is stored and computed in micro-credits (1 credit = 1,000,000 micro-credits), the
minor unit. `Decimal` appears only at the edges, where amounts are parsed from or shown as decimal
strings; `float` never appears.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

MICRO_PER_CREDIT = 1_000_000
SCALE = 6
"""Decimal places of the minor unit."""

_QUANTUM = Decimal(1).scaleb(-SCALE)

MAX_BALANCE = 10**18
"""The largest balance an account may hold, in micro-credits (a trillion credits). Balances are
PostgreSQL BIGINTs (at most about 9.2e18): a cap well below that leaves room for holds and
keeps repeated legal top-ups from overflowing the column."""


class AmountError(ValueError):
    """An amount that is not a finite decimal with at most six decimal places."""


def parse_credits(value: str | int | Decimal) -> int:
    """Parse a decimal amount of credits into micro-credits, exactly.

    Refuses more than six decimal places rather than rounding: an operator who typed
    ``0.0000001`` made a mistake, and silently rounding money hides it.
    """
    if isinstance(value, bool):
        raise AmountError("an amount must be a decimal number, not a boolean")
    try:
        number = Decimal(value) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError) as exc:
        raise AmountError(f"{value!r} is not a decimal number") from exc
    if not number.is_finite():
        raise AmountError(f"{value!r} is not a finite number")
    scaled = number.scaleb(SCALE)
    if scaled != scaled.to_integral_value():
        raise AmountError(f"{value} has more than {SCALE} decimal places")
    return int(scaled)


def format_credits(micro: int) -> str:
    """Show micro-credits as a decimal string of credits, such as ``"12.5"`` or ``"-0.000001"``."""
    text = format(Decimal(micro).scaleb(-SCALE).quantize(_QUANTUM).normalize(), "f")
    return text


def to_decimal(micro: int) -> Decimal:
    """Micro-credits as a `Decimal` number of credits."""
    return Decimal(micro).scaleb(-SCALE)
