"""`tollgate providers list`: upstreams from the environment, and never a key."""

from __future__ import annotations

import json

from tollgate_cli.main import app
from tollgate_cli.providers import safe_url, scrub, secret_values, survey
from typer.testing import CliRunner

SECRET = "sk-test-do-not-print-0123456789"


def test_safe_url_hides_credentials_and_queries() -> None:
    assert safe_url("https://api.example.com/v1") == "https://api.example.com/v1"
    assert safe_url("https://user:pw@host:8443/v1") == "https://***@host:8443/v1"
    assert safe_url("https://host/v1?key=abc") == "https://host/v1?***"


def test_secret_values_are_scrubbed() -> None:
    env = {"OPENAI_API_KEY": SECRET, "HOME": "/root", "MY_TOKEN": "abc"}
    secrets = secret_values(env)
    assert secrets == [SECRET]  # too short to be worth scrubbing: "abc"
    assert scrub(f"bad key {SECRET}!", secrets) == "bad key ***!"


def test_survey_lists_upstreams_and_whether_a_key_is_set() -> None:
    found = survey({"OPENAI_API_KEY": SECRET})
    upstreams = {u["name"]: u for u in found.upstreams}
    assert upstreams["openai"]["key_set"] is True
    assert upstreams["gemini"]["key_set"] is False
    assert SECRET not in json.dumps(found.__dict__)


def test_a_broken_configuration_is_a_problem_not_a_crash() -> None:
    found = survey({"TOLLGATE_OPENAI_UPSTREAMS": "local", "OPENAI_API_KEY": SECRET})
    assert "TOLLGATE_UPSTREAM_LOCAL_BASE_URL" in found.problems["openai"]
    assert "openai" not in {u["provider"] for u in found.upstreams}


def test_the_command_never_prints_the_key() -> None:
    env = {"OPENAI_API_KEY": SECRET, "GEMINI_API_KEY": SECRET + "-g"}
    for args in (["providers", "list"], ["providers", "list", "--json"]):
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code == 0, result.output
        assert SECRET not in result.output
    data = json.loads(CliRunner().invoke(app, ["providers", "list", "--json"], env=env).stdout)
    assert {u["name"]: u["key_set"] for u in data["upstreams"]}["openai"] is True


def test_a_provider_that_needs_no_key_is_configured_and_served_without_one() -> None:
    from tollgate_core import load_providers
    from tollgate_server.services.providers import build_providers

    found = {u["name"]: u for u in survey({}).upstreams}
    assert found["echo"]["key_set"] is False and found["echo"]["configured"] is True
    assert found["openai"]["configured"] is False
    served = build_providers(load_providers(), {}, http=None)  # type: ignore[arg-type]
    assert "echo" in served and "openai" not in served
    table = CliRunner().invoke(app, ["providers", "list"], env={}).output
    assert any(line.startswith("echo") and "not needed" in line for line in table.splitlines())
