"""The fake upstream's embedding endpoints: OpenAI's ``/embeddings`` and Gemini's
``:batchEmbedContents``.

Vectors are deterministic: each input's vector is a function of its text (or token ids) and the
dimensions asked, so a test can compute what it should receive (`fake_vector`). OpenAI's answer
reports ``prompt_tokens`` as the inputs' whitespace-separated words + 2 per input (token ids:
their number); Gemini's, like the real API, reports no usage.

Directives in any input (``[[fake:...]]``) apply: ``status``, ``retry_after``, ``stall_first_s``,
``no_usage`` and ``usage_input`` as for chat.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import Any

from tollgate_core.types import Usage

DEFAULT_DIMENSIONS = 8
"""The length of a vector when the request names none."""


def fake_vector(item: str | Sequence[int], dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """The vector the fake answers for one input: numbers in [-1, 1) drawn from a hash of it,
    exactly representable in float32 (so base64 round-trips compare equal)."""
    seed = item.encode("utf-8") if isinstance(item, str) else repr(list(item)).encode()
    numbers: list[float] = []
    counter = 0
    while len(numbers) < dimensions:
        digest = hashlib.sha256(seed + struct.pack(">I", counter)).digest()
        counter += 1
        for i in range(0, len(digest), 2):
            if len(numbers) == dimensions:
                break
            # 16 bits over 2**15: a multiple of 2**-15, exact in float32.
            numbers.append(int.from_bytes(digest[i : i + 2], "big") / 32768 - 1.0)
    return numbers


def input_count(item: str | list[int]) -> int:
    """The tokens the fake's OpenAI answer reports for one input: a text's words + 2, a token
    list's length (as OpenAI counts token ids: exactly)."""
    return len(item.split()) + 2 if isinstance(item, str) else len(item)


def openai_inputs(body: dict[str, Any]) -> list[str | list[int]] | None:
    """The inputs of an OpenAI embeddings body as a list, or None when ``input`` is malformed."""
    raw = body.get("input")
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw:
        if all(isinstance(x, int) for x in raw):
            return [raw]
        if all(isinstance(x, str) for x in raw):
            return list(raw)
        if all(isinstance(x, list) and all(isinstance(t, int) for t in x) for x in raw):
            return list(raw)
    return None


def gemini_inputs(body: dict[str, Any]) -> list[str] | None:
    """The texts of a ``batchEmbedContents`` body, or None when it is malformed."""
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        return None
    texts = []
    for request in requests:
        parts = (request.get("content") or {}).get("parts") if isinstance(request, dict) else None
        if not isinstance(parts, list) or not parts:
            return None
        texts.append("".join(str(p.get("text", "")) for p in parts if isinstance(p, dict)))
    return texts


def openai_answer(
    inputs: list[str | list[int]], model: str, dimensions: int | None, usage: Usage | None
) -> dict[str, Any]:
    """OpenAI's ``CreateEmbeddingResponse``."""
    answer: dict[str, Any] = {
        "object": "list",
        "data": [
            {
                "object": "embedding",
                "index": i,
                "embedding": fake_vector(item, dimensions or DEFAULT_DIMENSIONS),
            }
            for i, item in enumerate(inputs)
        ],
        "model": model,
    }
    if usage is not None:
        answer["usage"] = {
            "prompt_tokens": usage.input_tokens,
            "total_tokens": usage.input_tokens,
        }
    return answer


def gemini_answer(body: dict[str, Any], texts: list[str]) -> dict[str, Any]:
    """Gemini's ``BatchEmbedContentsResponse``: one ``ContentEmbedding`` per request."""
    requests = body["requests"]
    return {
        "embeddings": [
            {
                "values": fake_vector(
                    text, int(request.get("outputDimensionality") or DEFAULT_DIMENSIONS)
                )
            }
            for text, request in zip(texts, requests, strict=True)
        ]
    }
