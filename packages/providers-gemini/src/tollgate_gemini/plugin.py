"""The ``tollgate`` entry point of tollgate-gemini: registers `GeminiProvider`."""

from __future__ import annotations

from tollgate_core import hookimpl
from tollgate_core.hookspecs import RegisterProvider

from tollgate_gemini.provider import GeminiProvider


@hookimpl
def register_providers(register: RegisterProvider) -> None:
    """Offer the Gemini provider to Tollgate."""
    register(GeminiProvider)
