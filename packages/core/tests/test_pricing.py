"""The cached input price (issue 14): cached tokens cost it when a price names one."""

from __future__ import annotations

from decimal import Decimal

import pytest
from tollgate_core import Price, Usage, hold_amount, price_usage

USAGE = Usage(input_tokens=10, output_tokens=4, cached_input_tokens=6)


def test_without_a_cached_price_cached_tokens_cost_the_input_price() -> None:
    price = Price(input_per_million=1_000_000, output_per_million=2_000_000)
    assert price_usage(USAGE, price) == Decimal(10 + 8)


def test_with_a_cached_price_cached_tokens_cost_it() -> None:
    price = Price(
        input_per_million=1_000_000, output_per_million=2_000_000, cached_input_per_million=250_001
    )
    # 4 uncached at 1, 6 cached at 0.250001, 4 output at 2: exact, not yet rounded.
    assert price_usage(USAGE, price) == Decimal(4) + Decimal("1.500006") + Decimal(8)


def test_the_hold_never_counts_on_the_cache() -> None:
    cheap = Price(input_per_million=10, output_per_million=10, cached_input_per_million=1)
    dear = Price(input_per_million=10, output_per_million=10, cached_input_per_million=30)
    plain = Price(input_per_million=10, output_per_million=10)
    million = 1_000_000
    assert hold_amount(prompt_tokens=million, max_tokens=0, price=plain) == 10
    assert hold_amount(prompt_tokens=million, max_tokens=0, price=cheap) == 10
    # A cached price above the input price (a misconfiguration) is held at that price.
    assert hold_amount(prompt_tokens=million, max_tokens=0, price=dear) == 30


def test_a_negative_cached_price_is_refused() -> None:
    with pytest.raises(ValueError):
        Price(input_per_million=1, output_per_million=1, cached_input_per_million=-1)
