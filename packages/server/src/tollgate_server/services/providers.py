"""Turning installed provider classes into configured upstreams."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import aiohttp
from tollgate_core import PluginReport, Provider

logger = logging.getLogger("tollgate.providers")


def build_providers(
    report: PluginReport, env: Mapping[str, str], http: aiohttp.ClientSession
) -> dict[str, Provider]:
    """One `Provider` per configured upstream, by name.

    A provider class whose configuration fails is reported in `report.problems` and skipped;
    the server starts without it and its models answer as unavailable.
    """
    providers: dict[str, Provider] = {}
    for kind, cls in report.providers.items():
        try:
            configs = cls.configs_from_env(env)
        except Exception as exc:  # third-party code: report, do not crash
            report.problems[report.origins.get(kind, kind)] = f"{type(exc).__name__}: {exc}"
            logger.error("provider %s skipped: %s", kind, exc)
            continue
        for config in configs:
            if cls.needs_key and not config.api_key:
                # Installed but not configured: its models answer 503 model_unavailable.
                logger.info(
                    "upstream %s has no key configured; its models are unavailable", config.name
                )
                continue
            if config.name in providers:
                logger.error("upstream name %s is configured twice; keeping the first", config.name)
                continue
            providers[config.name] = cls(config=config, http=http)
    return providers
