"""`GeminiProvider`: Google's Gemini API (generateContent) over the server's session."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import ClassVar
from urllib.parse import quote

import aiohttp
import orjson
from tollgate_core import (
    Completion,
    EmbeddingRequest,
    EmbeddingResult,
    GenerationRequest,
    Provider,
    ProviderConfig,
    StreamEvent,
)
from tollgate_core.streaming import stream_events
from tollgate_core.upstream import post_for_body

from tollgate_gemini import embedding_wire, wire


class GeminiProvider(Provider):
    """Gemini models through ``generateContent`` and ``streamGenerateContent?alt=sse``.

    The key travels in the ``x-goog-api-key`` header, never in the URL, so it cannot end up in
    a proxy's or a server's access log.
    """

    kind: ClassVar[str] = "gemini"
    accepts_image_urls: ClassVar[bool] = False
    supports_embeddings: ClassVar[bool] = True
    env_vars: ClassVar[tuple[str, ...]] = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GEMINI_BASE_URL")
    supported_extras: ClassVar[frozenset[str]] = wire.SUPPORTED_EXTRAS
    supported_parameters: ClassVar[frozenset[str]] = wire.SUPPORTED_PARAMETERS
    image_tokens: ClassVar[int] = 1290
    """Gemini counts 258 tokens a 768 x 768 tile; at its high media resolution up to 1290 an
    image (counted high, to be safe)."""

    def __init__(self, *, config: ProviderConfig, http: aiohttp.ClientSession) -> None:
        super().__init__(config=config, http=http)
        base = config.base_url.rstrip("/")
        # Accept a base URL given with its API version as well as without.
        if not base.endswith(("/v1beta", "/v1", "/v1alpha")):
            base = f"{base}/{wire.API_VERSION}"
        self._models_url = f"{base}/models/"
        headers = {"Content-Type": "application/json"}
        if config.api_key:
            headers["x-goog-api-key"] = config.api_key
        self._headers = headers
        self._stream_headers = {**headers, "Accept": "text/event-stream"}
        self._secrets = (config.api_key,)

    @classmethod
    def configs_from_env(cls, env: Mapping[str, str]) -> list[ProviderConfig]:
        """One upstream named ``gemini``: ``GEMINI_API_KEY`` or else ``GOOGLE_API_KEY``, and
        ``GEMINI_BASE_URL`` (default ``https://generativelanguage.googleapis.com``)."""
        return [
            ProviderConfig(
                name="gemini",
                base_url=(env.get("GEMINI_BASE_URL") or wire.DEFAULT_BASE_URL).rstrip("/"),
                api_key=env.get("GEMINI_API_KEY") or env.get("GOOGLE_API_KEY") or None,
            )
        ]

    def _url(self, model: str, method: str) -> str:
        return self._models_url + quote(wire.model_path(model), safe="-._~") + method

    def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        """Stream a generation: text deltas, then one `StreamEnd` with the last usage seen."""
        return stream_events(
            self.http,
            self._url(request.model, ":streamGenerateContent?alt=sse"),
            body=orjson.dumps(wire.build_body(request)),
            headers=self._stream_headers,
            parser=wire.ChunkParser(self._secrets),
            secrets=self._secrets,
            status_of=wire.error_status,
        )

    def check_request(self, request: GenerationRequest) -> None:
        """Translate once at planning, so what Gemini cannot take is refused before a hold."""
        wire.build_body(request)

    async def generate(self, request: GenerationRequest) -> Completion:
        """One non-streaming ``generateContent`` call."""
        data = await post_for_body(
            self.http,
            self._url(request.model, ":generateContent"),
            body=orjson.dumps(wire.build_body(request)),
            headers=self._headers,
            secrets=self._secrets,
            status_of=wire.error_status,
        )
        return wire.parse_completion(data, self._secrets)

    def check_embedding(self, request: EmbeddingRequest) -> None:
        """Gemini embeds text only: token ids are refused before a hold."""
        embedding_wire.check_embedding_request(request)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """One ``batchEmbedContents`` call for every input; the usage is estimated (Gemini
        reports none)."""
        data = await post_for_body(
            self.http,
            self._url(request.model, ":batchEmbedContents"),
            body=orjson.dumps(embedding_wire.build_embedding_body(request)),
            headers=self._headers,
            secrets=self._secrets,
            status_of=wire.error_status,
        )
        return embedding_wire.parse_embeddings(data, request, self._secrets)
