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


def build_plugin_manager(*, load_entrypoints: bool = True) -> pluggy.PluginManager:
    """A plugin manager with Tollgate's hookspecs.

    Tests pass ``load_entrypoints=False`` to get a clean manager and `register` their own
    plugins. Entry points that fail to import are recorded on ``pm.tollgate_problems``.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    problems: dict[str, str] = {}
    if load_entrypoints:
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
    pm.tollgate_problems = problems  # type: ignore[attr-defined]
    return pm


def _unregister_quietly(pm: pluggy.PluginManager, name: str) -> None:
    plugin = pm.get_plugin(name)
    if plugin is not None:
        pm.unregister(plugin)


def collect_providers(pm: pluggy.PluginManager) -> PluginReport:
    """Call `register_providers` on every plugin and gather the provider classes."""
    report = PluginReport(problems=dict(getattr(pm, "tollgate_problems", {})))
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
            impl.function(register=register)
        except Exception as exc:  # third-party code: report and go on
            report.problems[plugin_name] = f"{type(exc).__name__}: {exc}"
            logger.error("plugin %s skipped: %s", plugin_name, report.problems[plugin_name])
    return report


def load_providers(*, plugins: list[ModuleType | object] | None = None) -> PluginReport:
    """Load provider classes from entry points, or only from `plugins` when given (tests)."""
    pm = build_plugin_manager(load_entrypoints=plugins is None)
    for plugin in plugins or ():
        pm.register(plugin)
    return collect_providers(pm)
