"""Schemathesis against a live server: the API does what its OpenAPI document says.

`schemathesis run` (its command line, so the run is the one a developer reproduces by hand)
fetches the published document and sends every operation its examples, the coverage phase's
boundary values, random valid and invalid requests, and stateful sequences along the links it
infers (create a key, then revoke it), over real sockets with an admin's access token. No
answer may be a 500, and each must match the document: a documented status, content type,
headers and body. Invalid requests must be refused, a request without credentials must not get
through, and methods the document does not list must answer 405 with a right Allow header.

The server is the session's app (same settings, same fake upstream, same PostgreSQL cluster)
on a database of its own: as an admin, the fuzzer learns real account ids and model names
from the answers and changes them (it disables accounts, repoints models), which would break the
rest of the session's tests. The ledger's invariants are checked on that database afterwards.

Figures and the JUnit and JSON reports of the run are kept under `artifacts/schemathesis/`.

The tests after it pin what earlier runs found, so that each fix stays fixed even if a run
with another seed would not visit it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD, User, make_settings
from sqlalchemy.ext.asyncio import create_async_engine
from support import ServerThread, fresh_database
from tollgate_server.app import create_app
from tollgate_server.services.invariants import find_violations, pending_generations

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts" / "schemathesis"
MAX_EXAMPLES = int(os.environ.get("TOLLGATE_SCHEMATHESIS_EXAMPLES", "25"))
SEED = int(os.environ.get("TOLLGATE_SCHEMATHESIS_SEED", "20261127"))

# Every check is on but two, and two operations skip one check each:
# * positive_data_acceptance expects every schema-valid request to succeed, but some rules span
#   fields or state and a JSON Schema cannot say them (a zero price needs `free: true`;
#   default_max_tokens may not exceed max_output_tokens; a cursor is one the list gave out);
#   those answer 422, as documented.
# * not_a_server_error accepts 503: the documented answer when a model's provider is not
#   configured, which the fuzzer causes itself by repointing a model to a made-up provider.
CONFIG = """
[cache]
enabled = false

[checks]
positive_data_acceptance.enabled = false
not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", 503]

[generation]
database = "none"
"""


@pytest.fixture(scope="module")
def fuzz_database(database_url: str) -> Iterator[str]:
    """A migrated database of its own, in the session's PostgreSQL."""
    with fresh_database(database_url, prefix="tollgate_fuzz") as url:
        yield url


@pytest.fixture(scope="module")
def fuzz_server(
    fuzz_database: str, provider_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    settings = make_settings(fuzz_database, tmp_path_factory.mktemp("fuzz-data"))
    with ServerThread(create_app(settings, provider_env=provider_env)) as running:
        yield running


def _fuzzing_admin(base_url: str) -> str:
    """A fresh admin with some credits, so that generations are admitted; its access token."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        root = client.post(
            "/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        )
        root_headers = {"Authorization": f"Bearer {root.json()['access_token']}"}
        email = f"fuzzer-{uuid.uuid4().hex[:8]}@example.com"
        created = client.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
        account = created.json()["id"]
        promoted = client.patch(
            f"/v1/admin/users/{account}", json={"role": "admin"}, headers=root_headers
        )
        granted = client.post(
            f"/v1/admin/users/{account}/credits",
            json={"amount": "5", "reason": "schemathesis"},
            headers={**root_headers, "Idempotency-Key": uuid.uuid4().hex},
        )
        assert (created.status_code, promoted.status_code, granted.status_code) == (201, 200, 201)
        login = client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        return str(login.json()["access_token"])


async def _ledger_state(url: str) -> tuple[dict[str, list[tuple[object, ...]]], int]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await find_violations(conn), await pending_generations(conn)
    finally:
        await engine.dispose()


def test_the_api_conforms_to_its_document(fuzz_server: ServerThread, fuzz_database: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    token = _fuzzing_admin(fuzz_server.url)
    with tempfile.TemporaryDirectory() as work:
        config = Path(work) / "schemathesis.toml"
        config.write_text(CONFIG)
        report = ARTIFACTS / "report.json"
        command = [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(config),
            "run",
            f"{fuzz_server.url}/openapi.json",
            "--phases=examples,coverage,fuzzing,stateful",
            f"--max-examples={MAX_EXAMPLES}",
            f"--seed={SEED}",
            "--workers=1",
            "--request-timeout=30",
            f"--header=Authorization: Bearer {token}",
            "--report=json,junit",
            f"--report-json-path={report}",
            f"--report-junit-path={ARTIFACTS / 'junit.xml'}",
        ]
        # Its own folder: nothing of the run's is left in the checkout but its reports.
        run = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=600)
    (ARTIFACTS / "output.txt").write_text(run.stdout + run.stderr)
    summary = json.loads(report.read_text())
    operations, cases = summary["operations"], summary["test_cases"]
    print(
        f"schemathesis: {operations['tested']}/{operations['total']} operations, "
        f"{cases['generated']} cases, {len(summary['failures'])} kinds of failure, "
        f"{len(summary['errors'])} errors, {summary['running_time']:.0f} s"
    )
    output = run.stdout[-6000:]
    assert summary["failures"] == [] and summary["errors"] == [], output
    assert run.returncode == 0, output
    assert summary["complete"] and operations["tested"] == operations["total"] >= 26, output
    assert all(phase["status"] == "success" for phase in summary["phases"].values()), output
    assert cases["generated"] >= operations["total"] * 10, output
    violations, pending = asyncio.run(_ledger_state(fuzz_database))
    assert violations == {} and pending == 0, (violations, pending)


# --- what the runs found, pinned -------------------------------------------------------------


def test_text_the_database_cannot_store_is_refused(
    api: httpx.Client, make_user: Callable[..., User], admin_headers: dict[str, str]
) -> None:
    """NUL characters reached PostgreSQL and came back as 500s."""
    user = make_user()
    key = api.post("/v1/keys", json={"name": "a", "models": ["x\x00"]}, headers=user.headers)
    token = api.post("/v1/auth/token", data={"username": "a\x00b", "password": "x"})
    users = api.get("/v1/admin/users", params={"email": "a\x00"}, headers=admin_headers)
    model = api.patch("/v1/admin/models/a%00b", json={"enabled": True}, headers=admin_headers)
    for response in (key, token, users, model):
        assert response.status_code == 422, response.text
        assert "NUL" in response.json()["error"]["message"]


def test_cursors_that_no_list_gave_out_are_a_422(
    api: httpx.Client, make_user: Callable[..., User], admin_headers: dict[str, str]
) -> None:
    """A superscript digit passed `str.isdigit()` and failed `int()`: a 500."""
    user = make_user()
    ledgers = ["\u00b3", "12\x00", "1" * 19]
    for path, headers, cursors in [
        ("/v1/ledger", user.headers, ledgers),
        (f"/v1/admin/users/{user.id}/ledger", admin_headers, ledgers),
        ("/v1/generations", user.headers, ["\u00b3", "12\x00", "x" * 401]),
        ("/v1/admin/users", admin_headers, ["a@example.com\x00", "x" * 401]),
    ]:
        for cursor in cursors:
            response = api.get(path, params={"cursor": cursor}, headers=headers)
            assert response.status_code == 422, (path, cursor, response.text)


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe{}", b"{", b""],
    ids=["not-utf-8", "not-json", "empty"],
)
def test_a_body_that_cannot_be_read_is_a_422(
    api: httpx.Client, make_user: Callable[..., User], body: bytes
) -> None:
    """Undecodable bytes were a 400 that no operation documents."""
    user = make_user()
    response = api.post(
        "/v1/keys", content=body, headers={**user.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error" and error["fields"][0]["field"].startswith("body")


def test_inputs_take_json_types_only(
    api: httpx.Client, make_user: Callable[..., User], admin_headers: dict[str, str]
) -> None:
    """0 was taken for false, "5" for 5 and 0.5 for a date; the document promises none."""
    user = make_user()
    refused = [
        api.patch(f"/v1/admin/users/{user.id}", json={"disabled": 0}, headers=admin_headers),
        api.patch("/v1/admin/models/nope", json={"context_window": "5"}, headers=admin_headers),
        api.post("/v1/keys", json={"name": "a", "expires_at": 1900000000}, headers=user.headers),
        api.get("/v1/usage", params={"since": "0.5"}, headers=user.headers),
        api.get("/v1/usage", params={"since": "2026-11-01"}, headers=user.headers),
    ]
    assert [r.status_code for r in refused] == [422] * len(refused)
    me = api.get("/v1/me", headers=user.headers).json()
    assert me["disabled"] is False
    assert (
        api.get(
            "/v1/usage", params={"since": "2026-11-01T00:00:00Z"}, headers=user.headers
        ).status_code
        == 200
    )


@pytest.mark.parametrize(
    ("amount", "status"),
    [("12.5", 201), (3, 201), ("1e3", 422), ("+5", 422), (" 5", 422), ("1000000000", 422)],
)
def test_amounts_are_plain_decimals_below_a_billion(
    api: httpx.Client,
    make_user: Callable[..., User],
    admin_headers: dict[str, str],
    amount: str | int,
    status: int,
) -> None:
    """ "1e3" and "+5" passed although the document's pattern refuses them; a billion credits
    and more could overflow the ledger's 64-bit sums."""
    user = make_user()
    response = api.post(
        f"/v1/admin/users/{user.id}/credits",
        json={"amount": amount, "reason": "test"},
        headers={**admin_headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == status, response.text


def test_405_lists_every_method_of_the_path(
    api: httpx.Client, admin_headers: dict[str, str]
) -> None:
    """Allow named only the methods of the first route whose path matched."""
    for path, methods in {
        "/v1/keys": {"GET", "POST"},
        "/v1/admin/models": {"GET", "POST"},
        f"/v1/admin/users/{uuid.uuid4()}": {"GET", "PATCH"},
    }.items():
        response = api.put(path, json={}, headers=admin_headers)
        assert response.status_code == 405
        allowed = {m.strip() for m in response.headers["allow"].split(",")}
        assert methods <= allowed <= methods | {"HEAD"}, (path, allowed)
        assert response.json()["error"]["code"] == "method_not_allowed"


def test_chat_completions_refuse_lax_types(
    api: httpx.Client, make_user: Callable[..., User], test_models: dict[str, str]
) -> None:
    user = make_user(credits=100)
    base: dict[str, Any] = {
        "model": test_models["openai"],
        "messages": [{"role": "user", "content": "hi"}],
    }
    for extra in (
        {"stream_options": {"include_usage": 0}},
        {"stream": 0},
        {"max_tokens": "5"},
        {"temperature": "0.5"},
    ):
        response = api.post("/v1/chat/completions", json={**base, **extra}, headers=user.headers)
        assert response.status_code == 422, (extra, response.status_code)
