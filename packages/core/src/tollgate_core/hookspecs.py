"""The pluggy hooks a Tollgate plugin may implement.

A plugin module declares module-level functions decorated with `hookimpl` and is found through
the ``tollgate`` entry-point group.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from tollgate_core.provider import Provider

PROJECT_NAME = "tollgate"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

RegisterProvider = Callable[[type[Provider]], None]


@hookspec
def register_providers(register: RegisterProvider) -> None:
    """Called once at start-up (server and CLI) to collect provider classes.

    Call ``register(SomeProvider)`` once for each provider class the plugin offers. The return
    value is ignored. Two classes with the same `kind` are a conflict: the second is refused
    and reported by plugin name.
    """
