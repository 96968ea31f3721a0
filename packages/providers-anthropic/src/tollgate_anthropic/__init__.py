"""tollgate-anthropic: the Tollgate provider for Anthropic Claude upstreams."""

from tollgate_anthropic.provider import AnthropicProvider
from tollgate_anthropic.wire import DEFAULT_BASE_URL, SUPPORTED_EXTRAS, UNSUPPORTED_FIELDS

__all__ = ["DEFAULT_BASE_URL", "SUPPORTED_EXTRAS", "UNSUPPORTED_FIELDS", "AnthropicProvider"]
