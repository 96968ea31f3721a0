"""Embeddings: the request a provider is asked to embed, what it answers, and their counts.

An embedding is a one-shot call: inputs in, one vector per input out, usage counted on the
input side only. The server resolves the model and checks the limits; a provider translates
`EmbeddingRequest` to its vendor's endpoint and back (`Provider.embed`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tollgate_core.errors import UpstreamUnavailable
from tollgate_core.metering import INPUT_SLACK_TOKENS, UsageBounds
from tollgate_core.tokens import calibrated_text_tokens, estimate_text_tokens
from tollgate_core.types import Usage

INPUT_OVERHEAD_TOKENS = 2
"""Special tokens a server may count per input on top of its text (a BERT-style model's
``[CLS]`` and ``[SEP]``, served by OpenAI-compatible servers): in the hold and the bounds."""

EmbeddingInput = str | tuple[int, ...]
"""One input: a text, or the token ids of one (OpenAI takes either)."""


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """What the gateway asks a provider to embed.

    `model` is the upstream model id, already resolved from the catalogue by the server.
    """

    model: str
    inputs: tuple[EmbeddingInput, ...]
    """In the client's order; the result has one vector per input, in the same order."""
    dimensions: int | None = None
    """The length of each vector, for models that can shorten theirs (None: the model's own)."""
    user: str | None = None
    """The end user's id, passed to vendors that take one (OpenAI)."""

    @property
    def has_token_inputs(self) -> bool:
        """Whether some input is given as token ids, which only some vendors take."""
        return any(not isinstance(item, str) for item in self.inputs)


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    """A provider's answer: one vector per input, in the request's order, and the usage.

    `usage.estimated` is True when the vendor reported no count (Gemini): the provider then
    counts the inputs itself (`estimate_embedding_tokens`).
    """

    vectors: tuple[tuple[float, ...], ...]
    usage: Usage


def input_tokens_upper_bound(item: EmbeddingInput) -> int:
    """The tokens one input may cost at most, on the safe side: for the hold and the limits."""
    if isinstance(item, str):
        return estimate_text_tokens(item) + INPUT_OVERHEAD_TOKENS
    return len(item) + INPUT_OVERHEAD_TOKENS


def estimate_embedding_tokens(inputs: Iterable[EmbeddingInput]) -> int:
    """A close count of the inputs' tokens for a charge, when the vendor reports none: the
    calibrated estimate of each text (`tollgate_core.tokens`), the length of each token list."""
    return sum(
        calibrated_text_tokens(item) if isinstance(item, str) else len(item) for item in inputs
    )


def embedding_bounds(inputs: Sequence[EmbeddingInput]) -> UsageBounds:
    """The largest counts an embedding of `inputs` could report: each text's UTF-8 bytes (a
    byte-level tokenizer makes no more tokens than that) or its token ids, with a vendor's
    slack per input; no output at all."""
    total = 0
    for item in inputs:
        size = len(item.encode("utf-8")) if isinstance(item, str) else len(item)
        total += size + INPUT_OVERHEAD_TOKENS
    return UsageBounds(max_input_tokens=total + INPUT_SLACK_TOKENS, max_output_tokens=0)


def read_vector(value: object, *, dimensions: int | None = None) -> tuple[float, ...]:
    """One vector from an upstream's JSON: a non-empty list of finite numbers (of `dimensions`
    numbers when the request asked for that many). Upstream data is untrusted.

    Raises:
        UpstreamUnavailable: for anything else, without echoing what the upstream sent.
    """
    if not isinstance(value, list) or not value:
        raise UpstreamUnavailable("upstream sent an embedding that is not a list of numbers")
    vector: list[float] = []
    for number in value:
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise UpstreamUnavailable("upstream sent an embedding that is not a list of numbers")
        number = float(number)
        if not math.isfinite(number):
            raise UpstreamUnavailable("upstream sent an embedding with a non-finite number")
        vector.append(number)
    if dimensions is not None and len(vector) != dimensions:
        raise UpstreamUnavailable(
            f"upstream sent an embedding of {len(vector)} numbers; {dimensions} were asked"
        )
    return tuple(vector)
