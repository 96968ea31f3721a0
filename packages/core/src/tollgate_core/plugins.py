"""Discovery and loading of provider plugins.

Plugins come from the ``tollgate`` entry-point group. A plugin that fails to import, or that
registers a provider kind already taken, is reported by name and skipped: one broken plugin must
never take the server down with it.
"""

from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import dataclass, field
from types import ModuleType

import pluggy
from pluggy import HookImpl

from tollgate_core import hookspecs
from tollgate_core.provider import Provider

logger = logging.getLogger("tollgate.plugins")

ENTRY_POINT_GROUP = "tollgate"


@dataclass(slots=True)
class PluginReport:
    """What plugin loading found: provider classes by kind, and problems by plugin name."""

    providers: dict[str, type[Provider]] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    """Provider kind -> the plugin (entry point or module) that registered it."""
    problems: dict[str, str] = field(default_factory=dict)
    """Plugin name -> one line saying why it was skipped."""


def build_plugin_manager() -> pluggy.PluginManager:
    """A plugin manager with Tollgate's hookspecs and no plugin registered yet.

    Tests fill it with ``pm.register(...)``; `load_entrypoint_plugins` adds the installed ones.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    return pm


def load_entrypoint_plugins(pm: pluggy.PluginManager) -> dict[str, str]:
    """Register every plugin of the ``tollgate`` entry-point group on `pm`.

    Returns:
        Plugin name -> one line saying why it was skipped, for each plugin that failed to
        import or implements a hook that does not exist.
    """
    problems: dict[str, str] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
            # Unknown hook names are a bug in the plugin: refuse it now, not at call time.
            pm.check_pending()
        except Exception as exc:  # any failure of third-party code is reported, not raised
            _unregister_quietly(pm, ep.name)
            problems[ep.name] = f"{type(exc).__name__}: {exc}"
            logger.error("plugin %s skipped: %s", ep.name, problems[ep.name])
    return problems


def _unregister_quietly(pm: pluggy.PluginManager, name: str) -> None:
    plugin = pm.get_plugin(name)
    if plugin is not None:
        pm.unregister(plugin)


def _call_with_declared_args(impl: HookImpl, **kwargs: object) -> object:
    """Call one hook implementation with only the arguments it declares, as pluggy's own
    caller does: a hook can gain arguments without breaking the plugins written before."""
    return impl.function(*(kwargs[name] for name in impl.argnames))


def collect_providers(
    pm: pluggy.PluginManager, *, problems: dict[str, str] | None = None
) -> PluginReport:
    """Call `register_providers` on every plugin and gather the provider classes.

    Each implementation is called on its own, so one that raises is reported by name and the
    others still register; `problems` (from `load_entrypoint_plugins`) start the report's list.
    """
    report = PluginReport(problems=dict(problems or {}))
    for impl in pm.hook.register_providers.get_hookimpls():
        plugin_name = impl.plugin_name

        def register(cls: type[Provider], _plugin: str = plugin_name) -> None:
            kind = getattr(cls, "kind", None)
            if not isinstance(cls, type) or not issubclass(cls, Provider) or not kind:
                raise TypeError(f"{cls!r} is not a Provider subclass with a `kind`")
            if kind in report.providers and report.providers[kind] is not cls:
                raise ValueError(
                    f"provider kind {kind!r} is already registered by {report.origins[kind]}"
                )
            report.providers[kind] = cls
            report.origins[kind] = _plugin

        try:
            _call_with_declared_args(impl, register=register)
        except Exception as exc:  # third-party code: report and go on
            report.problems[plugin_name] = f"{type(exc).__name__}: {exc}"
            logger.error("plugin %s skipped: %s", plugin_name, report.problems[plugin_name])
    return report


def load_providers(*, plugins: list[ModuleType | object] | None = None) -> PluginReport:
    """Load provider classes from entry points, or only from `plugins` when given (tests)."""
    pm = build_plugin_manager()
    problems = load_entrypoint_plugins(pm) if plugins is None else {}
    for plugin in plugins or ():
        pm.register(plugin)
    return collect_providers(pm, problems=problems)
