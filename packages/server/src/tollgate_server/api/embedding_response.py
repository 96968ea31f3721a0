"""The ASGI response that carries one embedding request to a client in OpenAI's format.

The chat response (`api.generation_response.GenerationResponse`) already admits, runs the
engine and watches for the client hanging up; an embedding differs only in its engine
(`services.embeddings.EmbeddingGeneration`) and in the body it writes at the end.
"""

from __future__ import annotations

from tollgate_server.api.generation_response import GenerationResponse
from tollgate_server.embedding_format import embeddings_body
from tollgate_server.runtime import Runtime
from tollgate_server.services.answers import Answer
from tollgate_server.services.embeddings import EmbeddingGeneration, EmbeddingPlan


class EmbeddingResponse(GenerationResponse):
    """Admits, runs and answers one embedding request; its sink writes the vectors."""

    def __init__(self, runtime: Runtime, plan: EmbeddingPlan) -> None:
        self.embedding = EmbeddingGeneration(runtime, plan)
        super().__init__(runtime, plan, self.embedding)
        self.encoding_format = plan.encoding_format

    def ending(self, answer: Answer) -> bytes:
        result = self.embedding.result
        assert result is not None  # the engine finishes only after the upstream answered
        return embeddings_body(
            generation_id=self.plan.generation_id,
            model=self.plan.model.name,
            vectors=result.vectors,
            encoding_format=self.encoding_format,
            usage=answer.usage,
            cost=answer.charge,
        )
