"""OpenAI-compatible embeddings: `/v1/embeddings`."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from tollgate_server.api.deps import CallerDep, RuntimeDep
from tollgate_server.api.embedding_response import EmbeddingResponse
from tollgate_server.api.json_body import StrictJsonRoute
from tollgate_server.api.responses import errors
from tollgate_server.embedding_format import EmbeddingCreate, EmbeddingListPublic
from tollgate_server.services.embeddings import plan_embedding

router = APIRouter(prefix="/v1", tags=["generation"], route_class=StrictJsonRoute)

EMBEDDINGS_EXAMPLE = {
    "object": "list",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.0023, -0.0091, 0.0154]}],
    "model": "text-embedding-3-small",
    "usage": {"prompt_tokens": 8, "total_tokens": 8, "cost": "0.00016", "estimated": False},
    "generation_id": "5f0c2d9e-8b1a-4e7f-a3c6-19d2b4e6f801",
}


@router.post(
    "/embeddings",
    summary="Embed texts (OpenAI-compatible)",
    response_class=Response,
    responses={
        200: {
            "model": EmbeddingListPublic,
            "description": "One vector per input, in the inputs' order",
            "headers": {
                "X-Tollgate-Generation-Id": {
                    "description": "The generation's id",
                    "schema": {"type": "string"},
                }
            },
            "content": {"application/json": {"example": EMBEDDINGS_EXAMPLE}},
        },
        **errors(400, 401, 402, 403, 404, 413, 422, 429, 502, 503, 504),
    },
)
async def create_embeddings(
    body: EmbeddingCreate, caller: CallerDep, runtime: RuntimeDep
) -> Response:
    """Embed `input` (a text, a list of texts, or token ids) with an embedding `model`,
    billed in credits per million input tokens.

    The request is admitted with a hold of its inputs' worst-case cost (402
    `insufficient_balance` when no credits are available), then charged once from the
    upstream's count (Gemini counts nothing: Tollgate's estimate, with `usage.estimated`).
    Refused before any hold: a chat model (400 `not_an_embedding_model`), an empty input (400
    `empty_input`), more inputs or tokens than a request may carry (400 `too_many_inputs`,
    `too_many_tokens`), an input longer than the model takes (400 `context_length_exceeded`).
    A request that ends in an error, or whose client hangs up first, is not charged. It is
    listed in `/v1/generations` with `endpoint: "embeddings"`.
    """
    plan = await plan_embedding(
        runtime,
        account_id=caller.account_id,
        api_key_id=caller.key.key_id if caller.key else None,
        allowed_models=caller.key.models if caller.key else None,
        body=body,
    )
    return EmbeddingResponse(runtime, plan)
