"""The distributions as an index would serve them: built as wheels, installed into a fresh
virtual environment outside the workspace, with a third-party plugin (the example) next to them.

Tollgate's own packages come from the built wheels only (they are on no index); third-party
dependencies at the lock file's versions, from uv's cache when it has them, else from the index.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import free_port, fresh_database

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTIONS = ["tollgate-cli", "tollgate-server", "tollgate-core", "tollgate-openai"]
PLUGIN = "tollgate-echo"

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]


def _uv() -> str:
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "uv is not on PATH"
    return uv


def _outside_env(**values: str) -> dict[str, str]:
    """The environment without the workspace's: no virtual environment, no TOLLGATE_ settings."""
    drop = ("VIRTUAL_ENV", "PYTHONPATH", "UV_PROJECT_ENVIRONMENT")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("TOLLGATE_")}
    env.update(values)
    return env


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment outside the workspace with the server, the CLI and the plugin."""
    uv = _uv()
    where = tmp_path_factory.mktemp("wheels")
    wheels = where / "dist"
    subprocess.run(
        [uv, "build", "--all-packages", "--wheel", "--out-dir", str(wheels), "-q"],
        cwd=ROOT,
        check=True,
    )
    constraints = where / "constraints.txt"
    subprocess.run(
        [
            *(uv, "export", "-q", "--locked", "--no-hashes", "--no-emit-workspace"),
            *("--all-packages", "--no-dev", "--format", "requirements-txt", "-o", str(constraints)),
        ],
        cwd=ROOT,
        check=True,
    )
    env = _outside_env()
    venv = where / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], cwd=where, env=env)
    install = [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python")]
    install += ["--find-links", str(wheels), "-c", str(constraints), *DISTRIBUTIONS, PLUGIN]
    offline = subprocess.run([*install, "--offline"], cwd=where, env=env, capture_output=True)
    if offline.returncode != 0:
        subprocess.run(install, cwd=where, env=env, check=True)
    return venv


def test_the_installed_packages_are_the_built_wheels(venv: Path) -> None:
    probe = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import json, importlib.metadata as m, tollgate_server;"
            "print(json.dumps([tollgate_server.__file__,"
            f" {{d: m.metadata(d).json for d in {[*DISTRIBUTIONS, PLUGIN]!r}}}]))",
        ],
        env=_outside_env(),
        capture_output=True,
        text=True,
        check=True,
        cwd=venv.parent,
    )
    where, metadata = json.loads(probe.stdout)
    assert Path(where).is_relative_to(venv), where
    for name, fields in metadata.items():
        assert fields["version"] == "0.1.0", name
        # What an index shows: a summary, the README, the Python versions, who publishes it.
        assert fields["summary"] and fields["description"] and fields["requires_python"], name
        assert fields["author"] == "Tollgate maintainers", name
        assert "Typing :: Typed" in fields["classifier"], name


@pytest.fixture
def served(venv: Path, database_url: str, tmp_path: Path) -> Iterator[str]:
    """The installed `tollgate serve` on a database of its own, which it migrates itself."""
    with fresh_database(database_url, prefix="tollgate_wheels", migrate=False) as url:
        port = free_port()
        process = subprocess.Popen(
            [
                str(venv / "bin" / "tollgate"),
                "serve",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=_outside_env(
                TOLLGATE_DATABASE_URL=url,
                TOLLGATE_DATA_DIR=str(tmp_path / "data"),
                TOLLGATE_ADMIN_EMAIL="admin@example.com",
                TOLLGATE_ADMIN_PASSWORD="admin-password-1",
            ),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                try:
                    if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the installed server did not start"
                time.sleep(0.1)
            yield base
        finally:
            process.terminate()
            process.wait(timeout=30)
            if process.stdout is not None:
                process.stdout.close()


def test_the_plugin_installed_from_its_wheel_is_listed_and_serves(venv: Path, served: str) -> None:
    listed = subprocess.run(
        [str(venv / "bin" / "tollgate"), "providers", "list", "--json"],
        env=_outside_env(),
        capture_output=True,
        text=True,
        check=True,
        cwd=venv.parent,
    )
    assert "echo" in listed.stdout

    with httpx.Client(base_url=served, timeout=10) as api:
        login = api.post(
            "/v1/auth/login", json={"email": "admin@example.com", "password": "admin-password-1"}
        )
        admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
        added = api.post(
            "/v1/admin/models",
            json={
                "name": "echo-1",
                "provider": "echo",
                "upstream_model": "echo",
                "input_price": "1",
                "output_price": "1",
            },
            headers=admin,
        )
        assert added.status_code == 201, added.text
        assert added.json()["available"] is True
        me = api.get("/v1/me", headers=admin).json()
        granted = api.post(
            f"/v1/admin/users/{me['id']}/credits",
            json={"amount": "10", "reason": "try the plugin"},
            headers={**admin, "Idempotency-Key": "wheels-test"},
        )
        assert granted.status_code == 201, granted.text
        reply = api.post(
            "/v1/chat/completions",
            json={"model": "echo-1", "messages": [{"role": "user", "content": "hello wheels"}]},
            headers=admin,
        )
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == "hello wheels"
