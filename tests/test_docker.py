"""The Docker files, read as text (CI has no Docker engine; it runs `docker-compose config` and
hadolint on them, see .ci/run). What a newcomer's build trips over must not come back."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_the_image_uses_the_python_the_project_pins() -> None:
    """Another Python in the image makes uv download a second one during the build."""
    wanted = (ROOT / ".python-version").read_text().strip()
    bases = re.findall(r"^FROM\s+python:(\S+?)-slim", (ROOT / "Dockerfile").read_text(), re.M)
    assert bases == [wanted]


def test_the_uv_image_is_pinned_and_the_image_runs_unprivileged() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    uv_image = re.search(r"--from=ghcr\.io/astral-sh/uv:(\S+)", dockerfile)
    assert uv_image is not None and re.fullmatch(r"\d+\.\d+\.\d+", uv_image.group(1))
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # Dependencies are installed before our code is copied in, so their layer is cached.
    assert dockerfile.index("--no-install-workspace") < dockerfile.index("COPY . .")


def test_the_build_context_leaves_out_the_virtual_environment() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "**/__pycache__"} <= set(ignored)


def test_compose_restarts_its_services() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        assert service.get("restart") == "unless-stopped", name
