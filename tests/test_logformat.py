"""``TOLLGATE_LOG_FORMAT=json``: every line parses as one JSON object with the request's fields,
and the secrets redaction of the text format applies to it too."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from conftest import JWT_SECRET, UPSTREAM_KEYS, User
from tollgate_server.observability.logformat import JsonFormatter

pytestmark = [pytest.mark.postgres]


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What `tollgate serve` sets up with TOLLGATE_LOG_FORMAT=json, on the tollgate loggers."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("tollgate")
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def test_json_lines_parse_and_carry_the_request_and_no_secret(
    json_lines: io.StringIO,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    user = make_user(credits=1000)
    key = api.post("/v1/keys", json={"name": "logs"}, headers=user.headers).json()["key"]
    answer = api.post(
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": test_models["openai"], "messages": [{"role": "user", "content": "hi"}]},
    )
    assert answer.status_code == 200
    failed = api.post(
        "/v1/chat/completions",
        headers=user.headers,
        json={
            "model": test_models["openai"],
            "messages": [{"role": "user", "content": "hi [[fake:status=500]]"}],
        },
    )
    assert failed.status_code == 502
    # Whatever logs a secret (an upstream's echo, a careless message) is redacted.
    logging.getLogger("tollgate.test").warning(
        "an upstream said: bad key %s; token %s; api key %s",
        UPSTREAM_KEYS["openai"],
        user.token,
        key,
    )

    # The access line is written after the last byte left: the client can be faster than it.
    deadline = time.monotonic() + 5
    while True:
        text = json_lines.getvalue()
        lines: list[dict[str, Any]] = [orjson.loads(line) for line in text.splitlines()]
        generations = [
            line
            for line in lines
            if line["logger"] == "tollgate.access" and line.get("path") == "/v1/chat/completions"
        ]
        if len(generations) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert lines and all(isinstance(line, dict) for line in lines)
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line), line
    for secret in (*UPSTREAM_KEYS.values(), user.token, JWT_SECRET, key):
        assert secret not in text

    assert [line["status"] for line in generations] == ["completed", "upstream_error"]
    done = generations[0]
    assert done["level"] == "info"
    assert done["request_id"] == answer.headers["x-request-id"]
    assert done["account"] == user.id
    assert done["generation_id"] == answer.headers["x-tollgate-generation-id"]
    assert done["model"] == test_models["openai"]
    assert done["provider"] == "openai"
    assert done["input_tokens"] > 0 and done["output_tokens"] > 0 and done["cost"] > 0
    assert done["ms"] >= 0 and done["duration_ms"] >= 0 and done["ttft_ms"] is not None
    assert generations[1]["error_code"] == "upstream_error"
    warning = next(line for line in lines if line["logger"] == "tollgate.test")
    assert warning["level"] == "warning" and "[redacted]" in warning["message"]


def test_serve_configures_json_for_every_logger() -> None:
    from tollgate_cli.serve import log_config

    config = log_config("info", "json")
    assert config["formatters"]["json"]["()"].endswith("JsonFormatter")
    assert {handler["formatter"] for handler in config["handlers"].values()} == {"json"}
    assert log_config("info")["handlers"]["tollgate"]["formatter"] == "plain"
