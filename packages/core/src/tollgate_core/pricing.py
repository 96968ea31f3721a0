"""Price arithmetic: what a usage costs under a price, before rounding.

Prices are credits per one million tokens, input and output apart, held as integer micro-credits
per million tokens. The brief's examples: gpt-4 at 20 credits per 100 tokens is 200,000 credits
per million; gemini-flash at 10 credits per 100 tokens is 100,000 credits per million.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from tollgate_core.types import Usage

TOKENS_PER_PRICE_UNIT = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """A model's price, in micro-credits per million tokens.

    `id` names the stored price row so a charge can say which price it used; it is None for
    prices that were never stored (tests, estimates).
    """

    input_per_million: int
    output_per_million: int
    id: int | None = None
    cached_input_per_million: int | None = None
    """What an input token read from the vendor's prompt cache costs; None: the input price."""

    def __post_init__(self) -> None:
        if self.input_per_million < 0 or self.output_per_million < 0:
            raise ValueError("prices cannot be negative")
        if self.cached_input_per_million is not None and self.cached_input_per_million < 0:
            raise ValueError("prices cannot be negative")


def price_usage(usage: Usage, price: Price) -> Decimal:
    """The exact cost of `usage` under `price`, in micro-credits, not yet rounded.

    Cached input tokens are priced at the cached input price when the price has one, else as
    input tokens; reasoning tokens are priced as output tokens (the buckets are inclusive). The
    division is by a power of ten, so the `Decimal` is exact.
    """
    numerator = (
        usage.input_tokens * price.input_per_million
        + usage.output_tokens * price.output_per_million
    )
    cached_price = price.cached_input_per_million
    if cached_price is not None and usage.cached_input_tokens:
        numerator += usage.cached_input_tokens * (cached_price - price.input_per_million)
    return Decimal(numerator).scaleb(-6)


def round_charge(cost: Decimal) -> int:
    """THE rounding rule: a charge is rounded up to the next whole micro-credit, once.

    Rounding up means a generation is never free because it was small, and the gateway never
    gives away a fraction of a micro-credit. It is applied once per generation, at settlement
    (and to the hold at admission), never per token or per chunk.
    """
    whole = int(cost.to_integral_value(rounding="ROUND_CEILING"))
    return whole
