"""A server without one of the provider packages starts, and says its models are unavailable."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import tollgate_openai.plugin
from conftest import User, ensure_test_models, make_settings
from support import ServerThread
from tollgate_server.app import create_app

pytestmark = [pytest.mark.postgres]


def test_models_of_a_missing_provider_are_unavailable(
    database_url: str,
    tmp_path: Path,
    provider_env: dict[str, str],
    admin_headers: dict[str, str],
    make_user: Callable[..., User],
) -> None:
    settings = make_settings(database_url, tmp_path)
    # Only the OpenAI plugin "installed": Gemini and Anthropic are absent.
    app = create_app(settings, plugins=[tollgate_openai.plugin], provider_env=provider_env)
    user = make_user(credits=100)
    with ServerThread(app) as server, httpx.Client(base_url=server.url) as client:
        ensure_test_models(client, admin_headers)
        catalogue = {
            m["name"]: m for m in client.get("/v1/admin/models", headers=admin_headers).json()
        }
        assert catalogue["fake-openai"]["available"] is True
        assert catalogue["fake-gemini"]["available"] is False
        listed = {m["id"] for m in client.get("/v1/models", headers=user.headers).json()["data"]}
        assert "fake-openai" in listed and "fake-gemini" not in listed
        refused = client.post(
            "/v1/chat/completions",
            headers=user.headers,
            json={"model": "fake-anthropic", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "model_unavailable"
        assert client.get("/v1/balance", headers=user.headers).json()["held"] == "0"


def test_an_unconfigured_provider_is_unavailable(
    database_url: str,
    tmp_path: Path,
    provider_env: dict[str, str],
    admin_headers: dict[str, str],
) -> None:
    env = {k: v for k, v in provider_env.items() if not k.startswith("ANTHROPIC_API_KEY")}
    app = create_app(make_settings(database_url, tmp_path), provider_env=env)
    with ServerThread(app) as server, httpx.Client(base_url=server.url) as client:
        ensure_test_models(client, admin_headers)
        catalogue = {
            m["name"]: m for m in client.get("/v1/admin/models", headers=admin_headers).json()
        }
        assert catalogue["fake-anthropic"]["available"] is False
        assert catalogue["fake-gemini"]["available"] is True
