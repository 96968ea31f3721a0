"""Gemini's ``batchEmbedContents`` on the wire: the request body and the answer, pure functions.

``POST models/{model}:batchEmbedContents`` takes one ``EmbedContentRequest`` per input (its
``model`` as ``models/{model}``, its text as one part, ``outputDimensionality``) and answers
``{"embeddings": [{"values": [...]}, ...]}`` in the same order. It reports no token count, so
the usage is the gateway's calibrated estimate, marked ``estimated``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tollgate_core import (
    EmbeddingRequest,
    EmbeddingResult,
    UpstreamBadRequest,
    UpstreamUnavailable,
    Usage,
    estimate_embedding_tokens,
    read_vector,
)

from tollgate_gemini.wire import error_from_object, loads, model_path


def check_embedding_request(request: EmbeddingRequest) -> None:
    """Refuse what Gemini cannot take: it embeds text, never token ids.

    Raises:
        UpstreamBadRequest: naming what to change.
    """
    if request.has_token_inputs:
        raise UpstreamBadRequest("Gemini embeds text only: send input as strings, not token ids")


def build_embedding_body(request: EmbeddingRequest) -> dict[str, Any]:
    """The JSON body of one ``batchEmbedContents`` call."""
    check_embedding_request(request)
    name = f"models/{model_path(request.model)}"
    requests = []
    for item in request.inputs:
        entry: dict[str, Any] = {"model": name, "content": {"parts": [{"text": item}]}}
        if request.dimensions is not None:
            entry["outputDimensionality"] = request.dimensions
        requests.append(entry)
    return {"requests": requests}


def parse_embeddings(
    data: bytes, request: EmbeddingRequest, secrets: Iterable[str | None] = ()
) -> EmbeddingResult:
    """The vectors, in the request's order, and the estimated usage.

    Raises:
        UpstreamError: for an ``{"error": ...}`` body sent with a 200 status.
        UpstreamUnavailable: for an answer without exactly one vector per input.
    """
    body = loads(data)
    if not isinstance(body, dict):
        raise UpstreamUnavailable("upstream sent an unexpected answer")
    if (error := body.get("error")) is not None:
        raise error_from_object(error, secrets)
    entries = body.get("embeddings")
    if not isinstance(entries, list) or len(entries) != len(request.inputs):
        raise UpstreamUnavailable("upstream sent no vector for some inputs")
    vectors = tuple(
        read_vector(
            entry.get("values") if isinstance(entry, dict) else None,
            dimensions=request.dimensions,
        )
        for entry in entries
    )
    usage = Usage(input_tokens=estimate_embedding_tokens(request.inputs), estimated=True)
    return EmbeddingResult(vectors=vectors, usage=usage)
