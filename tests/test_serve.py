"""`tollgate serve` as a person runs it: a real process, the embedded database, bad settings."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

CLI = [sys.executable, "-c", "from tollgate_cli.main import app; app()"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    env.update({"TOLLGATE_DATA_DIR": str(data_dir), **extra})
    return env


def _wait_ready(url: str, process: subprocess.Popen[bytes], seconds: float = 60) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if process.poll() is not None:
            out = process.stdout.read().decode() if process.stdout else ""
            raise AssertionError(f"serve exited early: {out}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("serve did not become ready")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


@pytest.mark.e2e
def test_serve_on_embedded_postgres_keeps_data_across_restarts(tmp_path: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = _env(tmp_path / "data")
    email = "keeper@example.com"
    first = subprocess.Popen(
        [*CLI, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_ready(url, first)
        created = httpx.post(
            f"{url}/v1/auth/register", json={"email": email, "password": "password-123"}
        )
        assert created.status_code == 201
    finally:
        _stop(first)
    assert first.returncode == 0
    banner = first.stdout.read().decode() if first.stdout else ""
    assert f"http://127.0.0.1:{port}/docs" in banner

    second = subprocess.Popen(
        [*CLI, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        seconds = _wait_ready(url, second)
        assert seconds < 30
        login = httpx.post(
            f"{url}/v1/auth/login", json={"email": email, "password": "password-123"}
        )
        assert login.status_code == 200, "the account did not survive the restart"
    finally:
        _stop(second)


def _run_serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "serve", *args],
        env=_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [
        line
        for line in result.stderr.splitlines()
        if line.strip()
        and "RuntimeDirWarning" not in line
        and "return Path(self.user_runtime_dir)" not in line
    ]
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    result = _run_serve(
        tmp_path,
        "--port",
        str(_free_port()),
        TOLLGATE_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:1/none",
    )
    assert "TOLLGATE_DATABASE_URL" in _one_line(result)


def test_short_jwt_secret_is_one_line(tmp_path: Path) -> None:
    result = _run_serve(tmp_path, TOLLGATE_JWT_SECRET="too-short")
    assert "TOLLGATE_JWT_SECRET" in _one_line(result)


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run_serve(
            tmp_path,
            "--port",
            str(port),
            TOLLGATE_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:1/x",
        )
    assert "--port" in _one_line(result)
