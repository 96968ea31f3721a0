"""The check of an upstream's counts: pure, no network."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tollgate_core import Message, Price, Usage, settlement_charge
from tollgate_core.metering import (
    INVALID_COUNT,
    OUTPUT_SLACK_TOKENS,
    UsageBounds,
    check_usage,
    token_count,
)

BOUNDS = UsageBounds.for_request((Message(role="user", content="hello there"),), max_tokens=10)


def test_sound_usage_is_kept_unchanged() -> None:
    usage = Usage(input_tokens=5, output_tokens=10, cached_input_tokens=2, reasoning_tokens=3)
    checked = check_usage(usage, BOUNDS, input_estimate=9, output_estimate=4)
    assert checked.usage is usage and checked.replaced == ()


@pytest.mark.parametrize("bad", [-1_000_000, -1, 10**23, INVALID_COUNT])
def test_an_input_count_out_of_range_is_replaced_by_the_estimate(bad: int) -> None:
    checked = check_usage(
        Usage(input_tokens=bad, output_tokens=3), BOUNDS, input_estimate=9, output_estimate=4
    )
    assert checked.replaced == ("input_tokens",)
    assert checked.usage.input_tokens == 9 and checked.usage.output_tokens == 3
    assert checked.usage.estimated


def test_output_beyond_max_tokens_and_slack_is_replaced() -> None:
    limit = 10 + OUTPUT_SLACK_TOKENS
    assert (
        check_usage(
            Usage(input_tokens=5, output_tokens=limit), BOUNDS, input_estimate=9, output_estimate=4
        ).replaced
        == ()
    )
    checked = check_usage(
        Usage(input_tokens=5, output_tokens=limit + 1), BOUNDS, input_estimate=9, output_estimate=4
    )
    assert checked.replaced == ("output_tokens",) and checked.usage.output_tokens == 4


def test_inner_buckets_and_details_must_fit_their_side() -> None:
    usage = Usage(
        input_tokens=5,
        output_tokens=3,
        cached_input_tokens=6,
        reasoning_tokens=-2,
        details={"good": 1, "bad": -7},
    )
    checked = check_usage(usage, BOUNDS, input_estimate=9, output_estimate=4)
    assert checked.replaced == ("cached_input_tokens", "reasoning_tokens", "details.bad")
    assert checked.usage.cached_input_tokens == 0 and checked.usage.reasoning_tokens == 0
    assert checked.usage.details == {"good": 1}
    # The main counts were believed, so the usage is not marked as estimated.
    assert not checked.usage.estimated


def test_the_input_bound_follows_the_prompts_bytes() -> None:
    short = UsageBounds.for_request((Message(role="user", content="hi"),), max_tokens=1)
    long = UsageBounds.for_request((Message(role="user", content="привет " * 100),), max_tokens=1)
    assert long.max_input_tokens - short.max_input_tokens == len(("привет " * 100).encode()) - 2


@pytest.mark.parametrize(
    ("value", "count"),
    [
        (None, 0),
        (7, 7),
        (7.0, 7),
        (1e23, 10**23 - 8388608),  # whole, so kept: the range check catches it
        (7.5, INVALID_COUNT),
        ("7", INVALID_COUNT),
        (True, INVALID_COUNT),
        (float("inf"), INVALID_COUNT),
    ],
)
def test_token_count_reads_only_whole_numbers(value: object, count: int) -> None:
    assert token_count(value) == count


def test_a_charge_is_never_negative() -> None:
    # The last line of defence, should an unchecked usage ever reach the price.
    settlement = settlement_charge(
        usage=Usage(input_tokens=-1_000_000), price=Price(1_000_000, 2_000_000), hold=100
    )
    assert settlement.charge == 0


def test_an_estimate_given_as_a_function_is_computed_only_for_a_replaced_count() -> None:
    calls: list[str] = []

    def estimate(name: str, value: int) -> Callable[[], int]:
        def compute() -> int:
            calls.append(name)
            return value

        return compute

    sound = Usage(input_tokens=5, output_tokens=3)
    checked = check_usage(
        sound, BOUNDS, input_estimate=estimate("input", 9), output_estimate=estimate("output", 4)
    )
    assert checked.usage is sound and calls == []
    checked = check_usage(
        Usage(input_tokens=-1, output_tokens=3),
        BOUNDS,
        input_estimate=estimate("input", 9),
        output_estimate=estimate("output", 4),
    )
    assert checked.usage.input_tokens == 9 and calls == ["input"]
