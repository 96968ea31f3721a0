"""tollgate-gemini: the Tollgate provider for Google Gemini upstreams."""

from tollgate_gemini.provider import GeminiProvider
from tollgate_gemini.wire import DEFAULT_BASE_URL, SUPPORTED_EXTRAS, UNSUPPORTED_FIELDS

__all__ = ["DEFAULT_BASE_URL", "SUPPORTED_EXTRAS", "UNSUPPORTED_FIELDS", "GeminiProvider"]
