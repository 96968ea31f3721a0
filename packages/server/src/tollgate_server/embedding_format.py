"""OpenAI's embeddings format: the request `/v1/embeddings` takes and the body it answers.

The gateway asks every upstream for floats and encodes them itself: ``encoding_format:
"base64"`` is each vector's little-endian float32 bytes in base64, as OpenAI sends them (and as
the official SDK asks for by default).
"""

from __future__ import annotations

import base64
import struct
import uuid
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from tollgate_core import EmbeddingInput, Usage, format_credits

TokenId = Annotated[StrictInt, Field(ge=0, le=10_000_000)]


class EmbeddingCreate(BaseModel):
    """OpenAI's embeddings request. Fields not listed here are refused with 422."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"model": "text-embedding-3-small", "input": ["Hello", "world"]}]
        },
    )

    model: str = Field(min_length=1, max_length=200, description="An embedding model's name")
    input: StrictStr | list[StrictStr] | list[TokenId] | list[list[TokenId]] = Field(
        description="The text to embed, a list of texts, one list of token ids, or a list of "
        "them; none of them empty. Each gets one vector, in the same order"
    )
    encoding_format: Literal["float", "base64"] = Field(
        "float",
        description="float: each vector as a list of numbers; base64: its little-endian "
        "float32 bytes in base64",
    )
    dimensions: StrictInt | None = Field(
        None,
        ge=1,
        le=65_536,
        description="The length of each vector, for models that can shorten theirs",
    )
    user: str | None = Field(
        None, max_length=256, description="Your end user's id, passed to the upstream"
    )

    def inputs(self) -> tuple[EmbeddingInput, ...]:
        """Every input as its own item: a text, or a tuple of token ids."""
        raw = self.input
        if isinstance(raw, str):
            return (raw,)
        items: list[EmbeddingInput] = []
        ids: list[int] = []
        for item in raw:
            if isinstance(item, int):
                ids.append(item)  # one list of token ids: a single input
            elif isinstance(item, str):
                items.append(item)
            else:
                items.append(tuple(item))
        return (tuple(ids),) if ids else tuple(items)


class EmbeddingPublic(BaseModel):
    """One input's vector."""

    object: Literal["embedding"] = Field("embedding", description="Always `embedding`")
    index: int = Field(description="The input's place in the request", examples=[0])
    embedding: list[float] | str = Field(
        description="The vector: numbers, or base64 with encoding_format base64"
    )


class EmbeddingUsagePublic(BaseModel):
    """What the request used and cost."""

    prompt_tokens: int = Field(description="The inputs' tokens", examples=[8])
    total_tokens: int = Field(description="The same: embeddings have no output", examples=[8])
    cost: str = Field(description="Credits charged", examples=["0.00016"])
    estimated: bool = Field(
        description="Counted by Tollgate because the upstream reports no count (Gemini)",
        examples=[False],
    )


class EmbeddingListPublic(BaseModel):
    """The answer of `/v1/embeddings`, in OpenAI's format, with the cost."""

    object: Literal["list"] = Field("list", description="Always `list`")
    data: list[EmbeddingPublic] = Field(description="One vector per input, in the inputs' order")
    model: str = Field(description="The model asked for", examples=["text-embedding-3-small"])
    usage: EmbeddingUsagePublic = Field(description="What the request used and cost")
    generation_id: uuid.UUID = Field(description="Look it up in /v1/generations")


def _base64(vector: tuple[float, ...]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def embeddings_body(
    *,
    generation_id: uuid.UUID,
    model: str,
    vectors: tuple[tuple[float, ...], ...],
    encoding_format: str,
    usage: Usage,
    cost: int,
) -> bytes:
    """The JSON body of a successful answer (`EmbeddingListPublic`)."""
    encode = _base64 if encoding_format == "base64" else list
    return orjson.dumps(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": encode(vector)}
                for i, vector in enumerate(vectors)
            ],
            "model": model,
            "usage": {
                "prompt_tokens": usage.input_tokens,
                "total_tokens": usage.input_tokens,
                "cost": format_credits(cost),
                "estimated": usage.estimated,
            },
            "generation_id": str(generation_id),
        }
    )
