"""The ``tollgate`` entry point of tollgate-openai: registers `OpenAIProvider`."""

from __future__ import annotations

from tollgate_core import hookimpl
from tollgate_core.hookspecs import RegisterProvider

from tollgate_openai.provider import OpenAIProvider


@hookimpl
def register_providers(register: RegisterProvider) -> None:
    """Offer the OpenAI-compatible provider to Tollgate."""
    register(OpenAIProvider)
