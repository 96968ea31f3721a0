"""The billing policy: hold size, admission rule and settlement amount.

This is the one place the rules live. The server's ledger repository carries them out
atomically in PostgreSQL (one guarded statement to admit, one transaction to settle); its SQL
mirrors `admits` and `settlement_charge` exactly, and the property tests compare the two.

The rules:

* **Hold.** At admission the gateway holds the worst case: the prompt's estimated tokens at the
  input price plus the effective ``max_tokens`` at the output price, rounded up.
* **Admission.** ``available = balance - held`` (held: the holds of generations still running).
  In the default mode a generation is admitted while ``available > 0``; in strict mode only when
  ``available >= hold``. A refused generation takes no hold and makes no upstream call.
* **Settlement.** Exactly one charge per generation, from its real usage at the price captured at
  admission, rounded up, and never more than its hold; the hold is released in the same
  transaction. A charge is never negative: no generation raises a balance. So a balance goes
  below zero only through the settlement of an admitted generation, and by less than that
  generation's hold, whatever the concurrency.
"""

from __future__ import annotations

from dataclasses import dataclass

from tollgate_core.pricing import Price, price_usage, round_charge
from tollgate_core.types import Usage


def hold_amount(*, prompt_tokens: int, max_tokens: int, price: Price) -> int:
    """Worst-case cost of a generation, in micro-credits, rounded up."""
    # No cached tokens: the worst case whenever a cache read costs at most an input token;
    # a dearer cached price (a misconfiguration) is held at that price.
    cached = prompt_tokens if (price.cached_input_per_million or 0) > price.input_per_million else 0
    worst = Usage(input_tokens=prompt_tokens, output_tokens=max_tokens, cached_input_tokens=cached)
    return round_charge(price_usage(worst, price))


def admits(*, balance: int, held: int, hold: int, strict: bool) -> bool:
    """Whether a generation needing `hold` is admitted against this balance."""
    available = balance - held
    if strict:
        return available >= hold
    return available > 0


@dataclass(frozen=True, slots=True)
class Settlement:
    """What settling one generation does to the ledger."""

    charge: int
    """Micro-credits taken from the balance (0 when nothing was generated)."""
    uncapped: int
    """The charge before the cap at the hold; larger only when the upstream used more than the
    worst case the hold allowed for (an estimate that was too low, or an upstream ignoring
    max_tokens). The difference is not charged: the hold is the most a client agreed to."""


def settlement_charge(*, usage: Usage | None, price: Price, hold: int) -> Settlement:
    """The charge for a finished generation. No usage (nothing reached the upstream) is free."""
    if usage is None:
        return Settlement(charge=0, uncapped=0)
    cost = round_charge(price_usage(usage, price))
    # Never below zero: a generation may cost nothing, but it never raises a balance (usage
    # is checked before it gets here; this is the last line of defence).
    return Settlement(charge=max(0, min(cost, hold)), uncapped=cost)
