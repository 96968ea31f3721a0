"""The default catalogue, written on first start when the catalogue is empty.

Prices are credits per million tokens. The brief's examples come first: gpt-4 at 20 credits per
100 tokens (200,000 per million) and gemini-flash at 10 credits per 100 tokens (100,000 per
million).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeedModel:
    name: str
    provider: str
    upstream_model: str
    context_window: int
    max_output_tokens: int
    default_max_tokens: int
    input_price: str
    output_price: str
    kind: str = "chat"


DEFAULT_CATALOGUE: tuple[SeedModel, ...] = (
    SeedModel("gpt-4", "openai", "gpt-4", 8_192, 4_096, 1_024, "200000", "200000"),
    SeedModel(
        "gemini-flash", "gemini", "gemini-2.5-flash", 1_048_576, 65_536, 2_048, "100000", "100000"
    ),
    SeedModel("gpt-4o-mini", "openai", "gpt-4o-mini", 128_000, 16_384, 2_048, "15000", "60000"),
    SeedModel("gpt-4.1", "openai", "gpt-4.1", 1_047_576, 32_768, 2_048, "200000", "800000"),
    SeedModel(
        "gemini-2.5-pro", "gemini", "gemini-2.5-pro", 1_048_576, 65_536, 2_048, "125000", "1000000"
    ),
    SeedModel(
        "claude-sonnet-4-5",
        "anthropic",
        "claude-sonnet-4-5",
        200_000,
        64_000,
        2_048,
        "300000",
        "1500000",
    ),
    SeedModel(
        "claude-haiku-4-5",
        "anthropic",
        "claude-haiku-4-5",
        200_000,
        64_000,
        2_048,
        "100000",
        "500000",
    ),
    # Embedding models: priced per million input tokens, on the scale of the chat models above
    # (gpt-4o-mini's 15,000); an embedding has no output.
    SeedModel(
        "text-embedding-3-small",
        "openai",
        "text-embedding-3-small",
        8_191,
        1,
        1,
        "2000",
        "0",
        kind="embedding",
    ),
    SeedModel(
        "gemini-embedding-001",
        "gemini",
        "gemini-embedding-001",
        2_048,
        1,
        1,
        "15000",
        "0",
        kind="embedding",
    ),
)
