"""Claude Code, Anthropic's own client, runs against Tollgate's `/v1/messages` in print mode.

The `claude` command (npm package ``@anthropic-ai/claude-code``) is found through
``TOLLGATE_CLAUDE_CODE_BIN`` or on PATH; without it the test is skipped, saying how to install
it. It runs with ``ANTHROPIC_BASE_URL`` at the test server, a Tollgate API key as
``ANTHROPIC_API_KEY``, every model name pointed at a catalogue model served by the fake
upstream, HOME in a temporary folder, and the non-essential traffic (telemetry, error reports,
updates) switched off. The answer it prints is the fake upstream's, and the generations are
charged like any other.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from conftest import User
from support import ServerThread, balance
from tollgate_core.fake_upstream import FakeUpstream

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

INSTALL = "npm install --prefix /tmp/claude-code @anthropic-ai/claude-code"


def claude_binary() -> str | None:
    configured = os.environ.get("TOLLGATE_CLAUDE_CODE_BIN")
    if configured:
        return configured if Path(configured).exists() else None
    return shutil.which("claude")


@pytest.fixture(scope="module")
def claude_model(server: ServerThread, admin_headers: dict[str, str]) -> str:
    """A catalogue model big enough for Claude Code's prompt (its system prompt and tools are
    tens of thousands of tokens) and output limit, served by the Anthropic provider."""
    name = "claude-code-fake"
    with httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.post(
            "/v1/admin/models",
            json={
                "name": name,
                "provider": "anthropic",
                "upstream_model": "anthropic-upstream",
                "context_window": 400000,
                "max_output_tokens": 64000,
                "default_max_tokens": 1000,
                "input_price": "1000000",
                "output_price": "2000000",
            },
            headers=admin_headers,
        )
    assert response.status_code in (201, 409), response.text
    return name


def run_claude(
    binary: str, server: ServerThread, key: str, model: str, prompt: str, folder: Path
) -> subprocess.CompletedProcess[str]:
    home = folder / "home"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "ANTHROPIC_BASE_URL": server.url,
        "ANTHROPIC_API_KEY": key,
        # Every model Claude Code may ask for is the test's.
        "ANTHROPIC_MODEL": model,
        "ANTHROPIC_SMALL_FAST_MODEL": model,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,
        "ANTHROPIC_DEFAULT_SONNET_MODEL": model,
        "ANTHROPIC_DEFAULT_OPUS_MODEL": model,
        # Nothing but the API calls: no telemetry, error reports, updates or surveys.
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_BUG_COMMAND": "1",
        "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
        "CI": "1",
    }
    return subprocess.run(
        [binary, "-p", prompt],
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def installed_claude() -> str:
    binary = claude_binary()
    if binary is None:
        pytest.skip(
            "Claude Code is not installed: run `"
            + INSTALL
            + "` and set TOLLGATE_CLAUDE_CODE_BIN=/tmp/claude-code/node_modules/.bin/claude"
        )
    return binary


def test_claude_code_prints_the_answer_and_the_generation_is_charged(
    api: httpx.Client,
    server: ServerThread,
    make_user: Callable[..., User],
    claude_model: str,
    upstream: FakeUpstream,
    tmp_path: Path,
) -> None:
    binary = installed_claude()
    user = make_user(credits=10_000_000)
    created = api.post("/v1/keys", json={"name": "claude-code"}, headers=user.headers)
    assert created.status_code == 201, created.text
    marker = uuid.uuid4().hex
    done = run_claude(
        binary,
        server,
        created.json()["key"],
        claude_model,
        f"Say hello {marker} [[fake:chunks=3]]",
        tmp_path,
    )
    assert done.returncode == 0, f"stdout: {done.stdout}\nstderr: {done.stderr}"
    assert done.stdout.strip() == "tok0 tok1 tok2"
    # Claude Code's request reached the fake upstream through the Anthropic provider.
    asked = [r for r in list(upstream.records) if marker in str(r.body)]
    assert asked and all(r.protocol == "anthropic" for r in asked)
    data = api.get("/v1/generations", headers=user.headers).json()["data"]
    assert data and all(g["status"] == "completed" for g in data)
    charged = sum(Decimal(g["cost"]) for g in data)
    assert charged > 0
    assert balance(api, user) == 10_000_000 - charged


def test_claude_code_runs_a_tool_and_answers_from_its_result(
    api: httpx.Client,
    server: ServerThread,
    make_user: Callable[..., User],
    claude_model: str,
    upstream: FakeUpstream,
    tmp_path: Path,
) -> None:
    """The fake upstream asks for Claude Code's Read tool (with made-up arguments); Claude Code
    runs it and sends its result back as a tool_result; the fake then answers in text."""
    binary = installed_claude()
    user = make_user(credits=10_000_000)
    created = api.post("/v1/keys", json={"name": "claude-code"}, headers=user.headers)
    assert created.status_code == 201, created.text
    marker = uuid.uuid4().hex
    done = run_claude(
        binary,
        server,
        created.json()["key"],
        claude_model,
        f"Read a file {marker} [[fake:tool=Read]]",
        tmp_path,
    )
    assert done.returncode == 0, f"stdout: {done.stdout}\nstderr: {done.stderr}"
    # The fake's answer once the last user turn is a tool result (its directives are gone).
    assert done.stdout.strip() == "tok0 tok1 tok2 tok3 tok4"
    asked = [r for r in list(upstream.records) if marker in str(r.body)]
    # The call, then the same conversation with the tool's result.
    results = [
        block
        for record in asked
        for message in record.body["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]
    assert results, [r.body["messages"][-1] for r in asked]
    data = api.get("/v1/generations", headers=user.headers).json()["data"]
    assert len(data) >= 2 and all(g["status"] == "completed" for g in data)
