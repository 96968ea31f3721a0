"""A model's `kind` (chat or embedding): shown by `/v1/models`, the admin API and the CLI, and
set by the admin API and the CLI (issue 15). One catalogue; each route serves its own kind."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import JWT_SECRET, TEST_EMBEDDING_MODELS, TEST_MODELS, User
from tollgate_cli.main import app
from typer.testing import CliRunner, Result

pytestmark = pytest.mark.postgres

Cli = Callable[..., Result]


@pytest.fixture
def cli(database_url: str, tmp_path: Path) -> Cli:
    runner = CliRunner(
        env={
            "TOLLGATE_DATABASE_URL": database_url,
            "TOLLGATE_JWT_SECRET": JWT_SECRET,
            "TOLLGATE_DATA_DIR": str(tmp_path / "data"),
        }
    )

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args))

    return invoke


def ok(result: Result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}"
    return result.stdout


def admin_models(api: httpx.Client, admin_headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    response = api.get("/v1/admin/models", headers=admin_headers)
    assert response.status_code == 200, response.text
    return {m["name"]: m for m in response.json()}


def test_v1_models_shows_each_models_kind(
    api: httpx.Client, make_user: Callable[..., User], test_models: dict[str, str]
) -> None:
    user = make_user()
    cards = {m["id"]: m for m in api.get("/v1/models", headers=user.headers).json()["data"]}
    assert cards[TEST_MODELS["openai"]]["kind"] == "chat"
    assert cards[TEST_EMBEDDING_MODELS["openai"]]["kind"] == "embedding"
    assert cards[TEST_EMBEDDING_MODELS["gemini"]]["kind"] == "embedding"


def test_the_admin_api_sets_and_shows_kind(
    api: httpx.Client, admin_headers: dict[str, str], make_user: Callable[..., User]
) -> None:
    name = f"kind-{uuid.uuid4().hex[:8]}"
    created = api.post(
        "/v1/admin/models",
        json={
            "name": name,
            "provider": "openai",
            "upstream_model": "openai-embed-upstream",
            "kind": "embedding",
            "input_price": "1000000",
            "output_price": "0",
        },
        headers=admin_headers,
    )
    assert created.status_code == 201, created.text
    assert created.json()["kind"] == "embedding"
    assert admin_models(api, admin_headers)[name]["kind"] == "embedding"
    user = make_user("100")
    served = api.post("/v1/embeddings", json={"model": name, "input": "x"}, headers=user.headers)
    assert served.status_code == 200, served.text

    # A chat model priced zero for output must be free; an unknown kind is refused.
    refused = api.patch(f"/v1/admin/models/{name}", json={"kind": "chat"}, headers=admin_headers)
    assert refused.status_code == 422, refused.text
    unknown = api.patch(f"/v1/admin/models/{name}", json={"kind": "rerank"}, headers=admin_headers)
    assert unknown.status_code == 422, unknown.text
    assert unknown.json()["error"]["code"] == "validation_error"

    changed = api.patch(
        f"/v1/admin/models/{name}",
        json={"kind": "chat", "output_price": "2000000"},
        headers=admin_headers,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["kind"] == "chat"
    now_chat = api.post("/v1/embeddings", json={"model": name, "input": "x"}, headers=user.headers)
    assert now_chat.status_code == 400, now_chat.text
    assert now_chat.json()["error"]["code"] == "not_an_embedding_model"


def test_the_cli_sets_and_shows_kind(
    cli: Cli, api: httpx.Client, admin_headers: dict[str, str]
) -> None:
    name = f"cli-kind-{uuid.uuid4().hex[:8]}"
    added = ok(
        cli(
            "models",
            "add",
            name,
            "--kind",
            "embedding",
            "--provider",
            "openai",
            "--upstream-model",
            "openai-embed-upstream",
            "--input-price",
            "0.02",
            "--output-price",
            "0",
            "--json",
        )
    )
    assert json.loads(added)["kind"] == "embedding"
    assert admin_models(api, admin_headers)[name]["kind"] == "embedding"
    table = ok(cli("models", "list")).splitlines()
    assert table[0].split()[:2] == ["NAME", "KIND"]
    assert [line.split()[1] for line in table if line.split()[0] == name] == ["embedding"]

    ok(cli("models", "set-price", name, "--output-price", "1"))
    assert "is a chat model" in ok(cli("models", "set-kind", name, "chat"))
    assert admin_models(api, admin_headers)[name]["kind"] == "chat"
    listed = {m["name"]: m for m in json.loads(ok(cli("models", "list", "--json")))}
    assert listed[name]["kind"] == "chat"

    bad = cli("models", "set-kind", name, "rerank")
    assert bad.exit_code == 1, bad.output
    assert "Traceback" not in bad.output
    assert admin_models(api, admin_headers)[name]["kind"] == "chat"


def test_a_catalogue_file_sets_kind(
    cli: Cli, api: httpx.Client, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    name = f"file-kind-{uuid.uuid4().hex[:8]}"
    entry = {
        "name": name,
        "provider": "gemini",
        "upstream_model": "gemini-embed-upstream",
        "kind": "embedding",
        "input_price": "0.15",
        "output_price": "0",
    }
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps([entry]), encoding="utf-8")
    ok(cli("models", "import", str(path)))
    assert admin_models(api, admin_headers)[name]["kind"] == "embedding"
    # Importing it again changes nothing, kind included.
    assert "0 created, 0 updated, 1 unchanged" in ok(cli("models", "import", str(path)))
