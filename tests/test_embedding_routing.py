"""Routing for embedding models, as for chat: deployments tried by priority, a retryable
failure retried on the next one, fallbacks of the same kind, one hold and one charge.

Two fake upstreams on their own ports are the deployments, scripted apart with `fault`."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal

import httpx
import pytest
from conftest import User, make_settings
from support import ServerThread, add_deployment, balance, routed_generation
from tollgate_core.fake_upstream import FakeUpstream, fake_vector
from tollgate_server.app import create_app

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.e2e,
    # The routed server's fixtures are conftest's, as for tests/test_routing.py.
    pytest.mark.usefixtures("calm", "no_deployments_left"),
]

TEXTS = ["route this text", "and this one"]
INPUT_TOKENS = sum(len(text.split()) + 2 for text in TEXTS)
"""What the fake OpenAI upstream counts for `TEXTS`."""


@pytest.fixture(scope="module")
def routed(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, provider_env: dict[str, str]
) -> Iterator[ServerThread]:
    settings = make_settings(
        database_url,
        tmp_path_factory.mktemp("embedding-routing"),
        route_deadline_seconds=2.0,
        route_backoff_seconds=0.01,
    )
    with ServerThread(create_app(settings, provider_env=provider_env)) as running:
        yield running


def add_model(api: httpx.Client, admin: dict[str, str], *, price: str = "1000000") -> str:
    name = f"embed-routed-{uuid.uuid4().hex[:10]}"
    response = api.post(
        "/v1/admin/models",
        json={
            "name": name,
            "provider": "openai",
            "kind": "embedding",
            "upstream_model": "embed-routed",
            "context_window": 2000,
            "max_output_tokens": 1,
            "input_price": price,
            "output_price": "0",
        },
        headers=admin,
    )
    assert response.status_code == 201, response.text
    return name


def embed(api: httpx.Client, user: User, model: str) -> httpx.Response:
    return api.post(
        "/v1/embeddings",
        json={"model": model, "input": TEXTS, "encoding_format": "float"},
        headers=user.headers,
    )


@pytest.mark.parametrize("status", [429, 503])
def test_a_failing_deployment_is_retried_on_the_next_and_charged_once(
    rapi: httpx.Client,
    radmin: dict[str, str],
    ruser: Callable[[str], User],
    fakes: list[FakeUpstream],
    status: int,
) -> None:
    model = add_model(rapi, radmin)
    first = add_deployment(rapi, radmin, model, fakes[0], priority=1)
    second = add_deployment(rapi, radmin, model, fakes[1], priority=0)
    fakes[0].fault = f"status={status}"
    user = ruser("1000")

    response = embed(rapi, user, model)

    assert response.status_code == 200, response.text
    assert [d["embedding"] for d in response.json()["data"]] == [fake_vector(t) for t in TEXTS]
    assert len(fakes[0].records) == 1 and len(fakes[1].records) == 1
    found = routed_generation(rapi, radmin, response)
    assert (found["endpoint"], found["status"]) == ("embeddings", "completed")
    assert found["deployment_id"] == second["id"]
    assert [
        (a["deployment_id"], a["outcome"], a["upstream_status"]) for a in found["attempts"]
    ] == [(first["id"], "error", status), (second["id"], "ok", None)]
    assert balance(rapi, user) == Decimal(1000 - INPUT_TOKENS)


def test_a_bad_request_is_not_retried(
    rapi: httpx.Client,
    radmin: dict[str, str],
    ruser: Callable[[str], User],
    fakes: list[FakeUpstream],
) -> None:
    model = add_model(rapi, radmin)
    add_deployment(rapi, radmin, model, fakes[0], priority=1)
    add_deployment(rapi, radmin, model, fakes[1], priority=0)
    fakes[0].fault = "status=400"
    user = ruser("1000")

    response = embed(rapi, user, model)

    assert response.status_code == 400, response.text
    assert len(fakes[1].records) == 0
    assert balance(rapi, user) == Decimal(1000)


def test_a_fallback_embedding_model_serves_at_its_own_price(
    rapi: httpx.Client,
    radmin: dict[str, str],
    ruser: Callable[[str], User],
    fakes: list[FakeUpstream],
) -> None:
    model = add_model(rapi, radmin)
    fallback = add_model(rapi, radmin, price="3000000")
    add_deployment(rapi, radmin, model, fakes[0])
    add_deployment(rapi, radmin, fallback, fakes[1])
    patched = rapi.patch(
        f"/v1/admin/models/{model}", json={"fallbacks": [fallback]}, headers=radmin
    )
    assert patched.status_code == 200, patched.text
    fakes[0].fault = "status=503"
    user = ruser("1000")

    response = embed(rapi, user, model)

    assert response.status_code == 200, response.text
    found = routed_generation(rapi, radmin, response)
    assert found["served_model"] == fallback
    # The fallback's price: 3 credits an input token.
    assert balance(rapi, user) == Decimal(1000 - 3 * INPUT_TOKENS)
