"""The ``tollgate`` entry point of tollgate-anthropic: registers `AnthropicProvider`."""

from __future__ import annotations

from tollgate_core import hookimpl
from tollgate_core.hookspecs import RegisterProvider

from tollgate_anthropic.provider import AnthropicProvider


@hookimpl
def register_providers(register: RegisterProvider) -> None:
    """Offer the Anthropic provider to Tollgate."""
    register(AnthropicProvider)
