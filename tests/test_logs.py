"""Log lines: one per request, and no secret in any of them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from conftest import JWT_SECRET, UPSTREAM_KEYS, User

pytestmark = [pytest.mark.postgres]


def test_upstream_errors_that_echo_the_key_are_logged_redacted(
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    user = make_user(credits=1000)
    caplog.set_level(logging.DEBUG)
    # The fake upstream echoes the key it was sent in its error body.
    response = api.post(
        "/v1/chat/completions",
        headers=user.headers,
        json={
            "model": test_models["openai"],
            "messages": [{"role": "user", "content": "hi [[fake:status=500]]"}],
        },
    )
    assert response.status_code == 502
    logging.getLogger("tollgate.test").warning(
        "an upstream said: bad key %s; token %s", UPSTREAM_KEYS["openai"], user.token
    )
    text = caplog.text
    assert "an upstream said" in text
    for secret in (*UPSTREAM_KEYS.values(), user.token, JWT_SECRET):
        assert secret not in text


def test_one_structured_line_per_request(
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    import orjson

    user = make_user(credits=1000)
    access = logging.getLogger("tollgate.access")
    caplog.set_level(logging.INFO, logger="tollgate.access")
    # Listen on the logger itself: whatever another test configured above it.
    access.addHandler(caplog.handler)
    response = api.post(
        "/v1/chat/completions",
        headers=user.headers,
        json={"model": test_models["gemini"], "messages": [{"role": "user", "content": "hi"}]},
    )
    request_id = response.headers["x-request-id"]
    lines: list[dict[str, Any]] = []
    for _ in range(100):  # the line is written just after the last byte is sent
        lines = [
            orjson.loads(r.getMessage())
            # The same record may reach caplog twice (this logger and the root).
            for r in {id(record): record for record in caplog.records}.values()
            if r.name == "tollgate.access" and request_id in r.getMessage()
        ]
        if lines:
            break
        time.sleep(0.02)
    access.removeHandler(caplog.handler)
    assert len(lines) == 1
    line = lines[0]
    assert line["status"] == "completed" or line["status"] == 200
    assert line["account"] == user.id and line["model"] == test_models["gemini"]
    assert line["output_tokens"] == 5 and line["cost"] > 0
