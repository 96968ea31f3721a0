"""Liveness, readiness, request ids and the error envelope on the served app."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

pytestmark = pytest.mark.postgres


def test_healthz_answers(api: httpx.Client) -> None:
    response = api.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_the_schema_at_head(api: httpx.Client) -> None:
    from tollgate_server.db.migrate import head_revision

    response = api.get("/readyz")
    assert response.status_code == 200
    assert response.json()["schema_revision"] == head_revision()


def test_the_schema_head_constant_is_alembics_head() -> None:
    """`SCHEMA_HEAD` spares serving processes Alembic; a new migration must move it."""
    from tollgate_server.db.migrate import head_revision
    from tollgate_server.db.revision import SCHEMA_HEAD

    assert SCHEMA_HEAD == head_revision()


def test_serving_code_does_not_import_alembic() -> None:
    """About 13 MB per worker (issue 9's memory target): only migrating loads Alembic."""
    code = (
        "import sys, tollgate_server.app, tollgate_cli.serve, tollgate_cli.main\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_every_response_has_a_request_id(api: httpx.Client) -> None:
    response = api.get("/healthz")
    assert len(response.headers["x-request-id"]) == 32
    echoed = api.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    forged = api.get("/healthz", headers={"X-Request-Id": "evil id; with spaces"})
    assert forged.headers["x-request-id"] != "evil id; with spaces"


def test_unknown_route_gets_the_envelope(api: httpx.Client) -> None:
    response = api.get("/nope")
    assert response.status_code == 404
    body = response.json()
    assert body["error"]["code"] == "not_found"
    assert body["error"]["request_id"] == response.headers["x-request-id"]


def test_validation_errors_name_the_fields(api: httpx.Client) -> None:
    response = api.post("/v1/auth/register", json={"email": "not-an-email"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    fields = {f["field"] for f in error["fields"]}
    assert {"body.email", "body.password"} <= fields


def test_malformed_json_is_a_422_not_a_500(api: httpx.Client) -> None:
    response = api.post(
        "/v1/auth/register", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


def test_oversized_body_is_refused_before_reading(api: httpx.Client) -> None:
    response = api.post(
        "/v1/auth/register",
        content=b"x" * (2 * 1024 * 1024),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_docs_are_served_without_a_cdn(api: httpx.Client) -> None:
    page = api.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower()
    assert api.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    redoc = api.get("/redoc")
    assert redoc.status_code == 200 and "fonts.googleapis" not in redoc.text
