"""OpenAI's embeddings endpoint on the wire: the request body and the answer, as pure functions.

``POST {base}/embeddings`` takes ``input`` (a string, a list of strings or of token-id lists),
``model``, ``encoding_format``, ``dimensions`` and ``user``; it answers one ``data`` entry per
input, each with its ``index``, and ``usage.prompt_tokens``. The gateway always asks for
floats: it encodes base64 for its own client when asked, so one parser serves every client.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tollgate_core import (
    EmbeddingRequest,
    EmbeddingResult,
    UpstreamUnavailable,
    Usage,
    estimate_embedding_tokens,
    read_vector,
)
from tollgate_core.metering import token_count

from tollgate_openai.wire import error_from_object, loads


def build_embedding_body(request: EmbeddingRequest) -> dict[str, Any]:
    """The JSON body of one embeddings call."""
    body: dict[str, Any] = {
        "model": request.model,
        "input": [item if isinstance(item, str) else list(item) for item in request.inputs],
        "encoding_format": "float",
    }
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    if request.user is not None:
        body["user"] = request.user
    return body


def parse_embeddings(
    data: bytes, request: EmbeddingRequest, secrets: Iterable[str | None] = ()
) -> EmbeddingResult:
    """The vectors, in the request's order, and the usage of an embeddings answer.

    Raises:
        UpstreamError: for an ``{"error": ...}`` body sent with a 200 status.
        UpstreamUnavailable: for an answer without exactly one vector per input.
    """
    body = loads(data)
    if not isinstance(body, dict):
        raise UpstreamUnavailable("upstream sent an unexpected answer")
    if (error := body.get("error")) is not None:
        raise error_from_object(error, secrets)
    entries = body.get("data")
    count = len(request.inputs)
    if not isinstance(entries, list) or len(entries) != count:
        raise UpstreamUnavailable("upstream sent no vector for some inputs")
    vectors: list[tuple[float, ...] | None] = [None] * count
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise UpstreamUnavailable("upstream sent an unexpected answer")
        index = entry.get("index", position)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
            raise UpstreamUnavailable("upstream sent a vector for an input it was not given")
        if vectors[index] is not None:
            raise UpstreamUnavailable("upstream sent two vectors for one input")
        vectors[index] = read_vector(entry.get("embedding"), dimensions=request.dimensions)
    usage = body.get("usage")
    prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    if prompt is None:
        # Some compatible servers count nothing: the gateway counts (and flags) it.
        reported = Usage(input_tokens=estimate_embedding_tokens(request.inputs), estimated=True)
    else:
        reported = Usage(input_tokens=token_count(prompt))
    return EmbeddingResult(vectors=tuple(v for v in vectors if v is not None), usage=reported)
