"""tollgate-echo: an example Tollgate provider that echoes the last user message."""

from tollgate_echo.provider import EchoProvider

__all__ = ["EchoProvider"]
