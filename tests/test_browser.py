"""Swagger UI in a real browser: log in through Authorize, try `GET /v1/balance`, see the 200.

Headless Chromium (Debian's `chromium`; Playwright drives it, no browser is downloaded) opens
/docs of the live test server with every request off this machine refused, so the page also
proves it needs no CDN. The screenshots (the balance's answer, the streaming answer's example)
are kept in `artifacts/browser/`.

Without Chromium the test is skipped on a developer's machine; in CI (``CI`` set) a missing
browser is a failure, since `.ci/run` installs it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import User
from playwright.sync_api import Browser, Route, expect, sync_playwright
from support import ServerThread

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "browser"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TIMEOUT_MS = 20_000


def chromium_path() -> str | None:
    """Debian's Chromium, or the one TOLLGATE_CHROMIUM names."""
    named = os.environ.get("TOLLGATE_CHROMIUM")
    if named:
        return named if os.path.exists(named) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    if executable is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail("chromium is missing: .ci/run installs it with apt-get")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def test_swagger_ui_logs_in_and_tries_the_balance(
    browser: Browser, server: ServerThread, make_user: Callable[..., User]
) -> None:
    user = make_user(credits="12.5")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "swagger-balance.png"
    off_machine: list[str] = []

    def only_the_test_server(route: Route) -> None:
        if urlsplit(route.request.url).netloc == urlsplit(server.url).netloc:
            route.continue_()
        else:
            off_machine.append(route.request.url)
            route.abort()

    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.route("**/*", only_the_test_server)
    try:
        page.goto(f"{server.url}/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("Tollgate")

        # Authorize: the OAuth2 password flow, against /v1/auth/token.
        page.locator(".swagger-ui .auth-wrapper button.authorize").click()
        dialog = page.locator(".swagger-ui .dialog-ux .modal-ux")
        login = dialog.locator(".auth-container").filter(has_text="OAuth2, password")
        login.locator("#oauth_username").fill(user.email)
        login.locator("#oauth_password").fill(user.password)
        with page.expect_response(lambda r: r.url.endswith("/v1/auth/token")) as token:
            login.locator("button.authorize").click()
        assert token.value.status == 200
        expect(login.locator("button.authorize")).to_have_text("Logout")
        dialog.locator("button.btn-done").first.click()
        expect(dialog).to_have_count(0)

        # Try it out on GET /v1/balance.
        operation = page.locator("#operations-billing-balance")
        operation.locator(".opblock-summary").click()
        operation.locator("button.try-out__btn").click()
        with page.expect_response(lambda r: r.url.endswith("/v1/balance")) as answer:
            operation.locator("button.execute").click()
        assert answer.value.status == 200
        assert answer.value.request.headers["authorization"].startswith("Bearer ")
        live = operation.locator(".live-responses-table")
        expect(live.locator(".response .response-col_status").first).to_have_text("200")
        expect(live.locator(".response-col_description pre").first).to_contain_text('"12.5"')
        # The operation's title at the top, the live answer below it.
        operation.evaluate("element => element.scrollIntoView({block: 'start'})")
        page.screenshot(path=str(screenshot))
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "failure.png"), full_page=True)
        raise
    finally:
        context.close()
    assert off_machine == [], f"the page reached off the machine: {off_machine}"
    assert screenshot.stat().st_size > 10_000


def test_swagger_ui_shows_the_event_stream_next_to_the_json_answer(
    browser: Browser, server: ServerThread
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto(f"{server.url}/docs")
        operation = page.locator("#operations-generation-chat_completions")
        operation.locator(".opblock-summary").click()
        ok = operation.locator("tr.response[data-code='200']")
        example = ok.locator(".example, .highlight-code").first
        expect(example).to_contain_text('"object": "chat.completion"')
        ok.locator("select").first.select_option("text/event-stream")
        expect(ok.locator(".highlight-code").first).to_contain_text("data: [DONE]")
        ok.evaluate("element => element.scrollIntoView({block: 'start'})")
        page.screenshot(path=str(ARTIFACTS / "swagger-stream.png"))
    finally:
        context.close()
