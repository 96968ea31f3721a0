"""`tollgate providers`: the provider plugins installed here and the upstreams they configure.

Needs no database. Keys are never printed: only whether one is set.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import typer

from tollgate_cli.output import JsonFlag, echo_json, note, table

app = typer.Typer(help="Provider plugins and their upstreams.", no_args_is_help=True)

SECRET_MARKERS = ("KEY", "SECRET", "TOKEN", "PASSWORD")
"""Environment variables whose names contain one of these hold secrets: their values are
scrubbed from anything printed, in case a plugin's error message quotes one."""


@dataclass
class Survey:
    """What the installed plugins offer, read from an environment."""

    providers: list[dict[str, Any]] = field(default_factory=list)
    upstreams: list[dict[str, Any]] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)


def survey(env: Mapping[str, str]) -> Survey:
    """Load the plugins and read each provider's upstreams from `env`; never raises for a
    broken plugin or configuration, which lands in `problems` by plugin name."""
    from tollgate_core import load_providers

    # Problems are part of the output; without this, logging's last resort would print each
    # one to stderr a second time.
    logging.getLogger("tollgate.plugins").addHandler(logging.NullHandler())
    report = load_providers()
    result = Survey(problems=dict(report.problems))
    for kind in sorted(report.providers):
        cls = report.providers[kind]
        plugin = report.origins.get(kind, kind)
        result.providers.append(
            {"kind": kind, "plugin": plugin, "env_vars": list(getattr(cls, "env_vars", ()))}
        )
        try:
            configs = cls.configs_from_env(env)
        except Exception as exc:  # third-party code: report it, like the server does
            result.problems[plugin] = f"{type(exc).__name__}: {exc}"
            continue
        for config in configs:
            result.upstreams.append(
                {
                    "name": config.name,
                    "provider": kind,
                    "base_url": safe_url(config.base_url),
                    "key_set": bool(config.api_key),
                    "configured": bool(config.api_key) or not cls.needs_key,
                }
            )
    secrets = secret_values(env)
    result.problems = {name: scrub(text, secrets) for name, text in result.problems.items()}
    for upstream in result.upstreams:
        upstream["base_url"] = scrub(upstream["base_url"], secrets)
    return result


def _key_state(upstream: dict[str, Any]) -> str:
    if upstream["key_set"]:
        return "set"
    return "unset" if not upstream["configured"] else "not needed"


def upstream_names(env: Mapping[str, str] | None = None) -> set[str]:
    """The names of the upstreams configured in `env` (default: this process's environment)."""
    return {u["name"] for u in survey(os.environ if env is None else env).upstreams}


def safe_url(url: str) -> str:
    """`url` without a user name or password, and with any query string hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparsable URL)"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def secret_values(env: Mapping[str, str]) -> list[str]:
    return sorted(
        (
            value
            for name, value in env.items()
            if any(marker in name.upper() for marker in SECRET_MARKERS) and len(value) >= 4
        ),
        key=len,
        reverse=True,
    )


def scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


@app.command("list")
def list_providers(json_output: JsonFlag = False) -> None:
    """List installed provider plugins, the upstreams they read from this environment, and
    plugins that failed to load. Shows whether a key is set, never the key.

    Example: OPENAI_API_KEY=sk-... tollgate providers list
    """
    found = survey(os.environ)
    if json_output:
        echo_json(
            {
                "providers": found.providers,
                "upstreams": found.upstreams,
                "problems": found.problems,
            }
        )
        return
    if found.upstreams:
        typer.echo(
            table(
                ["UPSTREAM", "PROVIDER", "BASE_URL", "KEY"],
                [(u["name"], u["provider"], u["base_url"], _key_state(u)) for u in found.upstreams],
            )
        )
    else:
        note("no upstreams: install a provider plugin such as tollgate-openai")
    if found.providers:
        typer.echo("\nEnvironment read by each provider:")
        for provider in found.providers:
            names = ", ".join(provider["env_vars"]) or "(none listed)"
            typer.echo(f"  {provider['kind']} (plugin {provider['plugin']}): {names}")
    if found.problems:
        typer.echo("\nPlugin problems:")
        for name, problem in sorted(found.problems.items()):
            typer.echo(f"  {name}: {problem}")
