"""Checking the token counts an upstream reports before anything is priced from them.

What an upstream sends is untrusted input: a buggy or hostile OpenAI-compatible server can
report ``prompt_tokens: -1000000`` (a negative charge: a credit) or ``1e23`` (a charge the
ledger's BIGINT cannot hold). Every count is checked here, in one place, for every provider:

* a count is a non-negative integer;
* ``input_tokens`` is at most what the prompt could have produced: byte-level tokenizers
  never make more tokens than the text has UTF-8 bytes, so the bound is the prompt's bytes plus
  the framing of each message plus `INPUT_SLACK_TOKENS` (vendors add a few tokens of their own);
* ``output_tokens`` is at most the request's ``max_tokens`` plus `OUTPUT_SLACK_TOKENS` (an
  end-of-turn token some vendors count);
* ``cached_input_tokens`` fits inside the input, ``reasoning_tokens`` inside the output, and each
  vendor detail is a non-negative integer no larger than the bound of its side.

A count outside its range is replaced by the gateway's own count (the caller supplies it), and
the usage is flagged so the generation records which counts were replaced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from tollgate_core.tokens import MESSAGE_OVERHEAD_TOKENS, REPLY_PRIMING_TOKENS
from tollgate_core.types import Message, Usage

INPUT_SLACK_TOKENS = 64
"""Tokens a vendor may add to a prompt on its own (a system preamble, turn markers)."""
OUTPUT_SLACK_TOKENS = 16
"""Tokens beyond ``max_tokens`` still believed (an end-of-turn token counted by some vendors)."""
INVALID_COUNT = -1
"""What a provider's wire parser returns for a count it could not read as an integer (a
string, a fraction, an infinity): out of range, so the check below replaces it."""


@dataclass(frozen=True, slots=True)
class UsageBounds:
    """The largest counts a request could have produced."""

    max_input_tokens: int
    max_output_tokens: int

    @classmethod
    def for_request(cls, messages: Iterable[Message], *, max_tokens: int) -> UsageBounds:
        """Bounds for a chat request: its prompt's bytes and framing, and its ``max_tokens``."""
        prompt_bytes = 0
        framing = REPLY_PRIMING_TOKENS + INPUT_SLACK_TOKENS
        for message in messages:
            prompt_bytes += len(message.content.encode("utf-8"))
            if message.name:
                prompt_bytes += len(message.name.encode("utf-8"))
            framing += MESSAGE_OVERHEAD_TOKENS
        return cls(
            max_input_tokens=prompt_bytes + framing,
            max_output_tokens=max_tokens + OUTPUT_SLACK_TOKENS,
        )


@dataclass(frozen=True, slots=True)
class CheckedUsage:
    """A usage whose every count is in range, and the names of the counts that were not."""

    usage: Usage
    replaced: tuple[str, ...] = ()
    """Names of the counts replaced, such as ``("input_tokens",)``; empty when all were sound."""


def token_count(value: object) -> int:
    """A count read from an upstream's JSON: the integer, 0 when absent or null, and
    `INVALID_COUNT` for anything that is not a whole number (so the check flags it)."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return INVALID_COUNT
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        # JSON numbers such as 12.0 are whole; 1e23 is whole too, and the range check catches it.
        return int(value) if value.is_integer() else INVALID_COUNT
    return INVALID_COUNT


def _sound(value: object, limit: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit


Estimate = int | Callable[[], int]
"""A count, or what computes it: `check_usage` calls it only for a count it replaces."""


def _value(estimate: Estimate) -> int:
    return estimate if isinstance(estimate, int) else estimate()


def check_usage(
    usage: Usage, bounds: UsageBounds, *, input_estimate: Estimate, output_estimate: Estimate
) -> CheckedUsage:
    """Keep the counts of `usage` that are in range; replace the others by the estimates.

    Args:
        usage: The usage as the upstream reported it (already normalised by the provider).
        bounds: What the request could have produced (`UsageBounds.for_request`).
        input_estimate: The gateway's count of the prompt (a vendor's earlier count when it
            sent one, or the estimate), used when ``input_tokens`` is out of range; or a
            function that computes it, called only then (a sound usage costs no estimate).
        output_estimate: The gateway's count of the output, from the deltas (or a function
            that computes it, likewise).

    Returns:
        The checked usage (marked ``estimated`` when a main count was replaced) and the names of
        the replaced counts.
    """
    replaced: list[str] = []
    input_tokens, output_tokens = usage.input_tokens, usage.output_tokens
    if not _sound(input_tokens, bounds.max_input_tokens):
        replaced.append("input_tokens")
        input_tokens = min(max(0, _value(input_estimate)), bounds.max_input_tokens)
    if not _sound(output_tokens, bounds.max_output_tokens):
        replaced.append("output_tokens")
        output_tokens = min(max(0, _value(output_estimate)), bounds.max_output_tokens)
    cached, reasoning = usage.cached_input_tokens, usage.reasoning_tokens
    if not _sound(cached, input_tokens):
        replaced.append("cached_input_tokens")
        cached = 0
    if not _sound(reasoning, output_tokens):
        replaced.append("reasoning_tokens")
        reasoning = 0
    limit = max(bounds.max_input_tokens, bounds.max_output_tokens)
    details = {k: v for k, v in usage.details.items() if _sound(v, limit)}
    replaced.extend(f"details.{k}" for k in usage.details if k not in details)
    if not replaced:
        return CheckedUsage(usage)
    checked = replace(
        usage,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=cached,
        reasoning_tokens=reasoning,
        details=details,
        estimated=usage.estimated or "input_tokens" in replaced or "output_tokens" in replaced,
    )
    return CheckedUsage(checked, tuple(replaced))
