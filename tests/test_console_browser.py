"""The web console in a real browser: Debian's Chromium driven by Playwright, as in
`test_browser.py`, with every request off the test server refused (the console needs no CDN).

A client signs in, sees the balance, creates a key, streams in the playground and stops midway,
then finds the partial charge in the generations and the ledger; an admin grants credits and the
client's page shows them; a client gets 403 on an admin page; a forged cross-site POST is
refused; and axe-core (bundled by axe-playwright-python, run inside the page) finds no serious
violation on any page, on a laptop screen and on a phone's. Screenshots go to
`artifacts/console/`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, User, grant
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Route,
    ViewportSize,
    expect,
    sync_playwright,
)
from support import ServerThread
from test_browser import CHROMIUM_ARGS, TIMEOUT_MS, chromium_path

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "console"
LAPTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
ATTACKER = "http://attacker.test"
SLOW_STREAM = "Tell me a long story [[fake:chunks=200,delay_ms=50]]"
"""100 words (the test model's default max tokens) at 50 ms each: five seconds to stop it in."""


@pytest.fixture
def browser() -> Iterator[Browser]:
    # Per test, not per module: the ledger check after each test runs its own event loop,
    # which cannot start while Playwright's is running in this thread.
    import os

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


class Watched:
    """A browser context that reaches only the test server and records console errors."""

    def __init__(self, browser: Browser, server: ServerThread, viewport: ViewportSize) -> None:
        self.server = server
        self.context: BrowserContext = browser.new_context(viewport=viewport)
        self.context.set_default_timeout(TIMEOUT_MS)
        self.off_machine: list[str] = []
        self.errors: list[str] = []
        self.expected: list[str] = []
        """Console errors a test provokes on purpose (a 403 document logs one)."""
        self.pages: dict[str, str] = {}
        self.context.route("**/*", self._only_the_test_server)
        self.page = self.new_page()

    def new_page(self) -> Page:
        page = self.context.new_page()
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        return page

    def _only_the_test_server(self, route: Route) -> None:
        url = route.request.url
        if urlsplit(url).netloc == urlsplit(self.server.url).netloc:
            route.continue_()
        elif url.startswith(ATTACKER) and url in self.pages:
            route.fulfill(status=200, content_type="text/html", body=self.pages[url])
        else:
            self.off_machine.append(url)
            route.abort()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def watched(browser: Browser, server: ServerThread) -> Iterator[Callable[..., Watched]]:
    opened: list[Watched] = []

    def open_(viewport: ViewportSize = LAPTOP) -> Watched:
        opened.append(Watched(browser, server, viewport))
        return opened[-1]

    yield open_
    for each in opened:
        each.close()
    for each in opened:
        assert each.off_machine == [], f"the console reached off the machine: {each.off_machine}"
        unexpected = [e for e in each.errors if not any(x in e for x in each.expected)]
        assert unexpected == [], f"errors in the browser console: {unexpected}"


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, base: str, email: str, password: str) -> None:
    page.goto(f"{base}/console/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Overview")


AXE = Axe()


def serious_violations(page: Page) -> list[str]:
    results = AXE.run(page)
    return [
        f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_client_streams_in_the_playground_stops_it_and_finds_the_partial_charge(
    watched: Callable[..., Watched],
    server: ServerThread,
    api: httpx.Client,
    make_user: Callable[..., User],
    test_models: dict[str, str],
) -> None:
    user = make_user(credits="50")
    browser = watched()
    page = browser.page
    sign_in(page, server.url, user.email, user.password)
    expect(page.locator("#figure-balance")).to_have_text("50")
    expect(page.locator("#figure-available")).to_have_text("50")
    shot(page, "client-overview")

    # A key: the secret shown once, with a copy button.
    page.get_by_role("link", name="API keys").click()
    page.get_by_label("Name").fill("my script")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("Secret")
    expect(secret).to_have_value(re.compile(r"^tg-"))
    browser.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name="Copy", exact=True).click()
    expect(page.locator(".copied")).to_have_text("Copied.")
    shot(page, "client-key-created")
    page.get_by_role("link", name="API keys").click()
    expect(page.get_by_label("Secret")).to_have_count(0)

    # The playground: a short answer to the end shows its cost...
    page.get_by_role("link", name="Playground").click()
    page.get_by_label("Model").select_option(test_models["openai"])
    page.get_by_label("Prompt").fill("Say hello")
    page.get_by_role("button", name="Send").click()
    finished = page.locator("#pg-status")
    expect(finished).to_have_text(
        re.compile(r"^Done: \d+ tokens in, \d+ out, cost [0-9.]+ credits")
    )
    completed = api.get("/v1/generations", headers=user.headers).json()["data"][0]
    assert completed["status"] == "completed"
    expect(finished).to_contain_text(f"cost {completed['cost']} credits")

    # ...and a slow one is stopped midway.
    page.get_by_label("Prompt").fill(SLOW_STREAM)
    page.get_by_role("button", name="Send").click()
    answer = page.locator("#pg-answer")
    expect(answer).to_have_text(re.compile(r"(\S+\s+){5}"))
    page.get_by_role("button", name="Stop").click()
    status = page.locator("#pg-status")
    expect(status).to_have_text(re.compile(r"^Stopped: \d+ tokens out, charged [0-9.]+ credits"))
    shot(page, "client-playground-stopped")

    generations = api.get("/v1/generations", headers=user.headers).json()["data"]
    assert len(generations) == 2
    stopped = generations[0]
    assert stopped["status"] == "client_disconnected"
    assert 0 < stopped["output_tokens"] < 100
    assert stopped["cost"] not in (None, "0")
    expect(status).to_contain_text(f"charged {stopped['cost']} credits")

    page.get_by_role("link", name="Generations").click()
    row = page.locator("tbody tr").first
    expect(row).to_contain_text("client_disconnected")
    expect(row).to_contain_text(stopped["cost"])
    shot(page, "client-generations")
    row.get_by_role("link").click()
    expect(page.locator("#generation")).to_contain_text(stopped["cost"])

    page.get_by_role("link", name="Ledger").click()
    charge = page.locator("tbody tr", has_text="charge").first
    expect(charge).to_contain_text(f"-{stopped['cost']}")
    shot(page, "client-ledger")

    page.get_by_role("link", name="Overview").click()
    balance = api.get("/v1/balance", headers=user.headers).json()["balance"]
    expect(page.locator("#figure-balance")).to_have_text(balance)
    expect(page.locator(".chart rect")).not_to_have_count(0)


def test_an_admin_grant_shows_on_the_clients_page(
    watched: Callable[..., Watched], server: ServerThread, make_user: Callable[..., User]
) -> None:
    user = make_user(credits="1")
    client = watched()
    sign_in(client.page, server.url, user.email, user.password)
    expect(client.page.locator("#figure-balance")).to_have_text("1")

    admin = watched().page
    sign_in(admin, server.url, ADMIN_EMAIL, ADMIN_PASSWORD)
    admin.get_by_role("link", name="Users").click()
    admin.get_by_label("Email contains").fill(user.email)
    admin.get_by_role("button", name="Search").click()
    admin.get_by_role("link", name=user.email).click()
    admin.get_by_label("Amount (negative to deduct)").fill("12.5")
    admin.get_by_label("Reason").fill("course credits")
    admin.get_by_role("button", name="Post credits").click()
    expect(admin.get_by_role("status")).to_have_text("The credits are posted.")
    expect(admin.locator("#figure-balance")).to_have_text("13.5")
    shot(admin, "admin-grant")

    client.page.reload()
    expect(client.page.locator("#figure-balance")).to_have_text("13.5")
    shot(client.page, "client-after-grant")


def test_a_client_opening_an_admin_page_gets_403(
    watched: Callable[..., Watched], server: ServerThread, make_user: Callable[..., User]
) -> None:
    user = make_user()
    browser = watched()
    browser.expected.append("status of 403 (Forbidden)")
    page = browser.page
    sign_in(page, server.url, user.email, user.password)
    expect(page.get_by_role("link", name="Users")).to_have_count(0)
    response = page.goto(f"{server.url}/console/admin/users")
    assert response is not None and response.status == 403
    expect(page.get_by_role("alert")).to_have_text("This page needs the admin role.")
    shot(page, "client-admin-403")


def test_a_forged_cross_site_post_is_refused(
    watched: Callable[..., Watched],
    server: ServerThread,
    api: httpx.Client,
    make_user: Callable[..., User],
) -> None:
    user = make_user()
    browser = watched()
    browser.expected.append("status of 403 (Forbidden)")
    sign_in(browser.page, server.url, user.email, user.password)
    forged = f"{ATTACKER}/prize.html"
    browser.pages[forged] = (
        "<!DOCTYPE html><html lang='en'><title>Prize</title>"
        f"<form method='post' action='{server.url}/console/keys'>"
        "<input name='name' value='planted'><button>Claim your prize</button></form></html>"
    )
    evil = browser.new_page()
    evil.goto(forged)
    with evil.expect_response(f"{server.url}/console/keys") as answer:
        evil.get_by_role("button", name="Claim your prize").click()
    assert answer.value.status == 403
    shot(evil, "forged-post-refused")
    evil.close()
    assert api.get("/v1/keys", headers=user.headers).json() == []


def _every_page(base: str, generation_id: str, account_id: str) -> list[str]:
    return [
        f"{base}/console/",
        f"{base}/console/usage",
        f"{base}/console/generations",
        f"{base}/console/generations/{generation_id}",
        f"{base}/console/ledger",
        f"{base}/console/keys",
        f"{base}/console/playground",
        f"{base}/console/admin/users",
        f"{base}/console/admin/users/{account_id}",
        f"{base}/console/admin/models",
        f"{base}/console/admin/usage",
    ]


@pytest.mark.parametrize("screen", ["laptop", "phone"])
def test_every_page_passes_axe_and_fits_the_screen(
    screen: str,
    watched: Callable[..., Watched],
    server: ServerThread,
    api: httpx.Client,
    admin_headers: dict[str, str],
    test_models: dict[str, str],
) -> None:
    me = api.get("/v1/me", headers=admin_headers).json()["id"]
    grant(api, admin_headers, me, "1000")
    made = api.post(
        "/v1/chat/completions",
        json={"model": test_models["openai"], "messages": [{"role": "user", "content": "hi"}]},
        headers=admin_headers,
    )
    assert made.status_code == 200, made.text
    generation_id = made.headers["x-tollgate-generation-id"]
    browser = watched(LAPTOP if screen == "laptop" else PHONE)
    page = browser.page
    page.goto(f"{server.url}/console/login")
    assert serious_violations(page) == []
    sign_in(page, server.url, ADMIN_EMAIL, ADMIN_PASSWORD)
    problems: dict[str, object] = {}
    for url in _every_page(server.url, generation_id, me):
        response = page.goto(url)
        assert response is not None and response.status == 200, url
        found = serious_violations(page)
        if found:
            problems[url] = found
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        if overflow > 0:
            problems[f"{url} (wider than the screen by {overflow}px)"] = overflow
        name = urlsplit(url).path.strip("/").replace("/", "-")[:60] or "console"
        if screen == "phone" or name in ("console", "console-admin-usage"):
            shot(page, f"{screen}-{name}")
    assert problems == {}

    # Keyboard: the skip link comes first and moves focus to the content.
    page.goto(f"{server.url}/console/")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
