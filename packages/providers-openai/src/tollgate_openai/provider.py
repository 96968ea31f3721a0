"""`OpenAIProvider`: OpenAI and OpenAI-compatible chat completions over the server's session."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Mapping
from typing import ClassVar

import aiohttp
import orjson
from tollgate_core import (
    Completion,
    ConfigurationError,
    EmbeddingRequest,
    EmbeddingResult,
    GenerationRequest,
    Provider,
    ProviderConfig,
    StreamEvent,
)
from tollgate_core.streaming import stream_events
from tollgate_core.upstream import post_for_body

from tollgate_openai import wire
from tollgate_openai.embedding_wire import build_embedding_body, parse_embeddings

_UPSTREAM_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


class OpenAIProvider(Provider):
    """Chat completions on any OpenAI-compatible upstream.

    One config is always named ``openai`` (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``); more
    compatible upstreams are listed in ``TOLLGATE_OPENAI_UPSTREAMS`` (see `configs_from_env`).
    """

    kind: ClassVar[str] = "openai"
    env_vars: ClassVar[tuple[str, ...]] = (
        "OPENAI_API_KEY",
        "TOLLGATE_OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "TOLLGATE_OPENAI_MAX_TOKENS_FIELD",
        "TOLLGATE_OPENAI_UPSTREAMS",
        "TOLLGATE_UPSTREAM_<NAME>_BASE_URL",
        "TOLLGATE_UPSTREAM_<NAME>_API_KEY",
        "TOLLGATE_UPSTREAM_<NAME>_MAX_TOKENS_FIELD",
    )
    supported_extras: ClassVar[frozenset[str]] = wire.SUPPORTED_EXTRAS
    supported_parameters: ClassVar[frozenset[str]] = wire.SUPPORTED_PARAMETERS
    supports_embeddings: ClassVar[bool] = True
    image_tokens: ClassVar[int] = 1445
    """A high-detail image of OpenAI's largest tiling (2048 x 768 after scaling): 8 tiles of
    170 tokens and 85 more."""

    def __init__(self, *, config: ProviderConfig, http: aiohttp.ClientSession) -> None:
        super().__init__(config=config, http=http)
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        self._embeddings_url = config.base_url.rstrip("/") + "/embeddings"
        headers = {"Content-Type": "application/json"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        self._headers = headers
        self._stream_headers = {**headers, "Accept": "text/event-stream"}
        self._secrets = (config.api_key,)
        self._max_tokens_field = config.options.get("max_tokens_field", "max_tokens")

    @classmethod
    def configs_from_env(cls, env: Mapping[str, str]) -> list[ProviderConfig]:
        """The ``openai`` upstream, then each named upstream of ``TOLLGATE_OPENAI_UPSTREAMS``.

        ``openai`` reads ``OPENAI_BASE_URL`` (default: the brief's endpoint) and
        ``TOLLGATE_OPENAI_API_KEY`` or else ``OPENAI_API_KEY``.
        ``TOLLGATE_OPENAI_UPSTREAMS="groq,local"`` adds upstreams named ``groq`` and ``local``,
        each read from ``TOLLGATE_UPSTREAM_<NAME>_BASE_URL`` (required) and
        ``TOLLGATE_UPSTREAM_<NAME>_API_KEY`` (optional; a local server may need none), where
        ``<NAME>`` is the name upper-cased with ``-`` as ``_``.
        ``..._MAX_TOKENS_FIELD=max_completion_tokens`` suits OpenAI's reasoning models.

        Raises:
            ConfigurationError: for a malformed or repeated name, a missing base URL, or an
                unknown max-tokens field; the message names the variable to fix.
        """
        configs = [
            ProviderConfig(
                name="openai",
                base_url=(env.get("OPENAI_BASE_URL") or wire.DEFAULT_BASE_URL).rstrip("/"),
                api_key=env.get("TOLLGATE_OPENAI_API_KEY") or env.get("OPENAI_API_KEY") or None,
                options=_options(env, "TOLLGATE_OPENAI_MAX_TOKENS_FIELD"),
            )
        ]
        for raw in env.get("TOLLGATE_OPENAI_UPSTREAMS", "").split(","):
            name = raw.strip().lower()
            if not name:
                continue
            if not _UPSTREAM_NAME.fullmatch(name):
                raise ConfigurationError(
                    f"TOLLGATE_OPENAI_UPSTREAMS: {name!r} is not a valid upstream name "
                    "(use letters, digits, '-' and '_')"
                )
            if any(config.name == name for config in configs):
                raise ConfigurationError(
                    f"TOLLGATE_OPENAI_UPSTREAMS: the upstream name {name!r} is used twice"
                )
            prefix = f"TOLLGATE_UPSTREAM_{name.upper().replace('-', '_')}_"
            base_url = env.get(prefix + "BASE_URL")
            if not base_url:
                raise ConfigurationError(
                    f"set {prefix}BASE_URL for the upstream {name!r} "
                    "listed in TOLLGATE_OPENAI_UPSTREAMS"
                )
            configs.append(
                ProviderConfig(
                    name=name,
                    base_url=base_url.rstrip("/"),
                    api_key=env.get(prefix + "API_KEY") or None,
                    options=_options(env, prefix + "MAX_TOKENS_FIELD"),
                )
            )
        return configs

    def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        """Stream a chat completion: text deltas, then one `StreamEnd` with the usage."""
        body = wire.build_body(request, stream=True, max_tokens_field=self._max_tokens_field)
        return stream_events(
            self.http,
            self._url,
            body=orjson.dumps(body),
            headers=self._stream_headers,
            parser=wire.ChunkParser(self._secrets),
            secrets=self._secrets,
        )

    async def generate(self, request: GenerationRequest) -> Completion:
        """One non-streaming chat completion (``stream: false``)."""
        data = await post_for_body(
            self.http,
            self._url,
            body=orjson.dumps(
                wire.build_body(request, stream=False, max_tokens_field=self._max_tokens_field)
            ),
            headers=self._headers,
            secrets=self._secrets,
        )
        return wire.parse_completion(data, self._secrets)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """One ``POST {base}/embeddings`` call for every input of `request`."""
        data = await post_for_body(
            self.http,
            self._embeddings_url,
            body=orjson.dumps(build_embedding_body(request)),
            headers=self._headers,
            secrets=self._secrets,
        )
        return parse_embeddings(data, request, self._secrets)


def _options(env: Mapping[str, str], variable: str) -> dict[str, str]:
    field = env.get(variable)
    if not field:
        return {}
    if field not in wire.MAX_TOKENS_FIELDS:
        raise ConfigurationError(f"{variable} must be one of {', '.join(wire.MAX_TOKENS_FIELDS)}")
    return {"max_tokens_field": field}
