"""The ``tollgate`` entry point of tollgate-echo."""

from __future__ import annotations

from tollgate_core import hookimpl
from tollgate_core.hookspecs import RegisterProvider

from tollgate_echo.provider import EchoProvider


@hookimpl
def register_providers(register: RegisterProvider) -> None:
    """Offer the echo provider to Tollgate."""
    register(EchoProvider)
