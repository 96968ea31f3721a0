"""The README's quickstart, run exactly as written: its blocks, in order, in a shell.

Two substitutions only, so that the run cannot collide with anything on the machine: the port
(a free one instead of 8000) and the upstream (`OPENAI_BASE_URL` points at the fake upstream;
the README leaves it at its default). The data directory is a fresh one, as on a new machine.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from support import free_port, serve_env
from tollgate_core.fake_upstream import FakeUpstream

ROOT = Path(__file__).resolve().parent.parent


def quickstart_blocks() -> list[tuple[str, str]]:
    """(language, code) of every fenced block of the README's Quickstart section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```(\w+)\n(.*?)^```$", section, re.M | re.S)


def as_shell(blocks: list[tuple[str, str]]) -> str:
    parts = ["set -euo pipefail"]
    for language, code in blocks:
        if language == "bash":
            parts.append(code)
        elif language == "python":
            parts.append(f"uv run python - <<'PYTHON'\n{code}PYTHON\n")
        else:
            raise AssertionError(f"a quickstart block in {language} cannot be run")
    return "\n".join(parts)


def on_port(script: str, port: int) -> str:
    script = script.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    return script.replace("uv run tollgate serve", f"uv run tollgate serve --port {port}")


@pytest.mark.e2e
def test_the_readme_quickstart_runs_as_written(upstream: FakeUpstream, tmp_path: Path) -> None:
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "uv is not on PATH (the quickstart's commands start with it)"
    blocks = quickstart_blocks()
    assert [language for language, _ in blocks] == ["bash", "bash", "python", "bash"]
    assert blocks[0][1].strip().endswith("uv run tollgate serve")
    port = free_port()
    env = serve_env(
        TOLLGATE_DATA_DIR=str(tmp_path / "data"),
        OPENAI_BASE_URL=upstream.openai_base_url,
        PATH=f"{Path(uv).parent}{os.pathsep}{os.environ['PATH']}",
    )
    server = subprocess.Popen(
        ["bash", "-c", on_port(as_shell(blocks[:1]), port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # uv, python and uvicorn: one group, stopped together
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server of the quickstart did not start"
            time.sleep(0.2)

        run = subprocess.run(
            ["bash", "-c", on_port(as_shell(blocks[1:]), port)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        if server.stdout is not None:
            server.stdout.close()
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert "data: [DONE]" in run.stdout  # the streamed completion
    # Two completions of 3 prompt and 5 output tokens at the seeded gpt-4o-mini prices (15,000
    # and 60,000 credits per million): 0.345 credits each.
    assert '{"balance":"999.31","held":"0","available":"999.31"}' in run.stdout
    ledger = run.stdout.split('"available"', 1)[-1]
    assert "welcome" in ledger and ledger.count("-0.345") == 2, run.stdout
    assert "error" not in run.stderr.lower(), run.stderr
    # Every completion reached the (fake) upstream as the seeded model's upstream id.
    assert {r.model for r in upstream.records[-2:]} == {"gpt-4o-mini"}
