"""`tollgate deployments` and `tollgate models set-fallbacks` against the real test database,
checked through the API and a generation served by the deployment the CLI added."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import JWT_SECRET, SECRET_KEY, User
from tollgate_cli.main import app
from tollgate_core.fake_upstream import FakeUpstream
from typer.testing import CliRunner, Result

pytestmark = pytest.mark.postgres


def run(database_url: str, tmp_path: Path, *args: str, **env: str) -> Result:
    runner = CliRunner(
        env={
            "TOLLGATE_DATABASE_URL": database_url,
            "TOLLGATE_JWT_SECRET": JWT_SECRET,
            # The running server's key: it must read what the CLI encrypts.
            "TOLLGATE_SECRET_KEY": SECRET_KEY,
            "TOLLGATE_DATA_DIR": str(tmp_path / "data"),
            **env,
        }
    )
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}"
    return result


def test_deployments_from_the_cli_serve_through_the_api(
    database_url: str,
    tmp_path: Path,
    api: httpx.Client,
    admin_headers: dict[str, str],
    make_user: Any,
    upstream: FakeUpstream,
    test_models: dict[str, str],
) -> None:
    model = f"cli-routed-{uuid.uuid4().hex[:8]}"
    created = api.post(
        "/v1/admin/models",
        json={
            "name": model,
            "provider": "openai",
            "upstream_model": "cli-upstream",
            "input_price": "1",
            "output_price": "1",
        },
        headers=admin_headers,
    )
    assert created.status_code == 201, created.text
    key = "sk-cli-deployment-" + uuid.uuid4().hex
    added = run(
        database_url,
        tmp_path,
        "deployments",
        "add",
        model,
        "--provider",
        "openai",
        "--base-url",
        upstream.openai_base_url,
        "--upstream-model",
        "cli-upstream-2",
        "--json",
        TOLLGATE_DEPLOYMENT_API_KEY=key,
    )
    assert key not in added.output
    shown = json.loads(added.stdout)
    deployment_id = str(shown["id"])
    assert shown["api_key"] == "…" + key[-4:] and shown["model"] == model
    try:
        listed = api.get("/v1/admin/deployments", headers=admin_headers).json()
        assert [d["id"] for d in listed if d["model"] == model] == [shown["id"]]

        user: User = make_user(credits=100)
        answer = api.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            headers=user.headers,
        )
        assert answer.status_code == 200, answer.text
        record = upstream.last_record
        assert record.api_key == key and record.body["model"] == "cli-upstream-2"

        changed = json.loads(
            run(
                database_url,
                tmp_path,
                "deployments",
                "set",
                deployment_id,
                "--weight",
                "4",
                "--json",
            ).stdout
        )
        assert changed["weight"] == 4
        disabled = run(database_url, tmp_path, "deployments", "disable", deployment_id, "--json")
        assert json.loads(disabled.stdout)["enabled"] is False
        enabled = run(database_url, tmp_path, "deployments", "enable", deployment_id, "--json")
        assert json.loads(enabled.stdout)["enabled"] is True
        tested = run(database_url, tmp_path, "deployments", "test", deployment_id)
        assert tested.stdout.startswith("ok in ")
        assert key not in run(database_url, tmp_path, "deployments", "list").output

        fallbacks = run(
            database_url, tmp_path, "models", "set-fallbacks", model, "fake-openai", "--json"
        )
        assert json.loads(fallbacks.stdout)["fallbacks"] == ["fake-openai"]
    finally:
        run(database_url, tmp_path, "deployments", "remove", deployment_id)
    gone = api.get(f"/v1/admin/deployments/{deployment_id}", headers=admin_headers)
    assert gone.status_code == 404
