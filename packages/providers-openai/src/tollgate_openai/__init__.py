"""tollgate-openai: the Tollgate provider for OpenAI and OpenAI-compatible upstreams."""

from tollgate_openai.provider import OpenAIProvider
from tollgate_openai.wire import DEFAULT_BASE_URL, SUPPORTED_EXTRAS, UNSUPPORTED_FIELDS

__all__ = ["DEFAULT_BASE_URL", "SUPPORTED_EXTRAS", "UNSUPPORTED_FIELDS", "OpenAIProvider"]
