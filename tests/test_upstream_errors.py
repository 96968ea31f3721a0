"""What a client learns of an upstream failure: a fixed message per class, and no more.

Upstreams have been seen to put in their error texts the key masked as OpenAI shows it
(``sk-canar****cdef``: first eight and last four characters), internal hosts and organisation
ids; a connection failure names the host and port the gateway tried. None of it may reach a
client, streaming or not, before or after the first token. It goes, redacted, to the log and to
the admin view of the generation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from conftest import UPSTREAM_KEYS, User, make_settings
from support import ServerThread, free_port
from tollgate_core.fake_upstream.server import LEAKED_HOST, LEAKED_ORGANISATION
from tollgate_server.app import create_app
from tollgate_server.errors import UPSTREAM_MESSAGES
from tollgate_server.settings import Settings

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

PROVIDERS = ["openai", "gemini", "anthropic"]
REQUEST_ID_SENT = {"openai": True, "gemini": False, "anthropic": True}
"""Whether the vendor (and so the fake) names the request in a header of its error answer."""


def _masked(key: str) -> str:
    return f"{key[:8]}****{key[-4:]}"


def _leaks(provider: str) -> list[str]:
    key = UPSTREAM_KEYS[provider]
    host = LEAKED_HOST.split(":")[0]
    return [_masked(key), key[:8], "****", host, LEAKED_ORGANISATION, "fake upstream"]


def _assert_told_only(error: dict[str, Any], code: str, provider: str, text: str) -> None:
    assert error["code"] == code
    fixed = UPSTREAM_MESSAGES[code]
    if REQUEST_ID_SENT[provider]:
        assert error["message"].startswith(f"{fixed} (upstream request id req_fake")
    else:
        assert error["message"] == fixed
    for leak in _leaks(provider):
        assert leak not in text, f"{leak!r} reached the client"


def _admin_view(api: httpx.Client, admin: dict[str, str], generation_id: str) -> dict[str, Any]:
    response = api.get(f"/v1/admin/generations/{generation_id}", headers=admin)
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_upstream_error_text_reaches_only_the_log_and_the_admin(
    provider: str,
    stream: bool,
    api: httpx.Client,
    make_user: Callable[..., User],
    admin_headers: dict[str, str],
    test_models: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    user = make_user(credits=1000)
    access = logging.getLogger("tollgate.access")
    caplog.set_level(logging.INFO, logger="tollgate.access")
    # Listen on the logger itself, whatever another test configured above it.
    access.addHandler(caplog.handler)
    try:
        response = api.post(
            "/v1/chat/completions",
            headers=user.headers,
            json={
                "model": test_models[provider],
                "stream": stream,
                "messages": [{"role": "user", "content": "hi [[fake:status=500,leak]]"}],
            },
        )
    finally:
        access.removeHandler(caplog.handler)
    assert response.status_code == 502, response.text
    _assert_told_only(response.json()["error"], "upstream_error", provider, response.text)
    generation_id = response.headers["x-tollgate-generation-id"]
    # The owner's view has no detail either.
    own = api.get(f"/v1/generations/{generation_id}", headers=user.headers).json()
    assert "error_detail" not in own and own["error_code"] == "upstream_error"
    # The admin's view and the log have it, without the key in any form.
    detail = _admin_view(api, admin_headers, generation_id)["error_detail"]
    assert LEAKED_HOST in detail and LEAKED_ORGANISATION in detail
    assert "[redacted]" in detail
    logged = list(
        {
            r.getMessage()
            for r in caplog.records
            if f'"generation_id":"{generation_id}"' in r.getMessage()
        }
    )
    assert len(logged) == 1 and LEAKED_HOST in json.loads(logged[0])["error_detail"]
    for text in (detail, logged[0]):
        assert _masked(UPSTREAM_KEYS[provider]) not in text
        assert UPSTREAM_KEYS[provider] not in text


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_upstream_error_mid_stream_tells_the_client_only_the_fixed_message(
    provider: str,
    api: httpx.Client,
    make_user: Callable[..., User],
    admin_headers: dict[str, str],
    test_models: dict[str, str],
) -> None:
    user = make_user(credits=1000)
    body = {
        "model": test_models[provider],
        "stream": True,
        "messages": [{"role": "user", "content": "hi [[fake:error_after=2,leak]]"}],
    }
    with api.stream("POST", "/v1/chat/completions", headers=user.headers, json=body) as response:
        assert response.status_code == 200
        text = response.read().decode()
        generation_id = response.headers["x-tollgate-generation-id"]
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    error = events[-1]["error"]
    _assert_told_only(error, "upstream_error", provider, text)
    detail = _admin_view(api, admin_headers, generation_id)["error_detail"]
    assert LEAKED_HOST in detail and _masked(UPSTREAM_KEYS[provider]) not in detail


@pytest.fixture(scope="module")
def unreachable_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, settings: Settings
) -> Iterator[ServerThread]:
    """The app with every upstream on a loopback port where nothing listens."""
    closed = f"http://127.0.0.1:{free_port()}"
    env = {
        "OPENAI_BASE_URL": f"{closed}/v1",
        "OPENAI_API_KEY": UPSTREAM_KEYS["openai"],
        "GEMINI_BASE_URL": closed,
        "GEMINI_API_KEY": UPSTREAM_KEYS["gemini"],
        "ANTHROPIC_BASE_URL": closed,
        "ANTHROPIC_API_KEY": UPSTREAM_KEYS["anthropic"],
    }
    app = create_app(
        make_settings(database_url, tmp_path_factory.mktemp("unreachable")), provider_env=env
    )
    with ServerThread(app) as running:
        running.closed_url = closed  # type: ignore[attr-defined]
        yield running


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_connection_failure_does_not_name_the_host_to_the_client(
    provider: str,
    unreachable_server: ServerThread,
    make_user: Callable[..., User],
    admin_headers: dict[str, str],
    test_models: dict[str, str],
) -> None:
    user = make_user(credits=1000)
    port = unreachable_server.closed_url.rsplit(":", 1)[1]  # type: ignore[attr-defined]
    with httpx.Client(base_url=unreachable_server.url, timeout=30) as client:
        for stream in (False, True):
            response = client.post(
                "/v1/chat/completions",
                headers=user.headers,
                json={
                    "model": test_models[provider],
                    "stream": stream,
                    "messages": [{"role": "user", "content": "hi"}],
                },
            )
            assert response.status_code == 502, response.text
            error = response.json()["error"]
            assert error == {**error, "code": "upstream_error"}
            assert error["message"] == UPSTREAM_MESSAGES["upstream_error"]
            for leak in ("127.0.0.1", port, "Cannot connect", "host"):
                assert leak not in response.text
        generation_id = response.headers["x-tollgate-generation-id"]
        detail = _admin_view(client, admin_headers, generation_id)["error_detail"]
    assert port in detail  # the operator learns where it tried
