"""HTML for the console: escaping, the page frame, and the security headers every page gets.

Pages are built from f-strings in which every value from a request or the database goes
through `esc` (text already built here is `Html` and passes through unchanged). No template
engine: the server package gains no dependency, and the pages are small.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from fastapi.responses import HTMLResponse

if TYPE_CHECKING:
    from tollgate_server.console.session import ConsoleUser

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
"""No inline script or style anywhere (no `unsafe-inline`): styles are classes in
console.css, behaviour is console.js, and charts are SVG drawn on the server."""

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Html(str):
    """Markup built by the console itself: `esc` leaves it as it is."""


def esc(value: object) -> Html:
    if isinstance(value, Html):
        return value
    if value is None:
        return Html("")
    return Html(html.escape(str(value), quote=True))


def join(parts: Iterable[str]) -> Html:
    return Html("".join(parts))


def when(value: datetime | None) -> Html:
    """A timestamp as UTC to the second, in a <time> element."""
    if value is None:
        return Html("")
    return Html(
        f'<time datetime="{esc(value.isoformat())}">'
        f"{esc(value.strftime('%Y-%m-%d %H:%M:%S'))}</time>"
    )


CLIENT_NAV = (
    ("overview", "/console/", "Overview"),
    ("usage", "/console/usage", "Usage"),
    ("generations", "/console/generations", "Generations"),
    ("ledger", "/console/ledger", "Ledger"),
    ("keys", "/console/keys", "API keys"),
    ("playground", "/console/playground", "Playground"),
)
ADMIN_NAV = (
    ("admin-users", "/console/admin/users", "Users"),
    ("admin-models", "/console/admin/models", "Models"),
    ("admin-usage", "/console/admin/usage", "All usage"),
)


def _nav(user: ConsoleUser, active: str) -> Html:
    def links(items: tuple[tuple[str, str, str], ...]) -> Html:
        current = ' aria-current="page"'
        return join(
            f'<li><a href="{href}"{current if key == active else ""}>{label}</a></li>'
            for key, href, label in items
        )

    admin = (
        Html(f'<p class="nav-heading">Admin</p><ul>{links(ADMIN_NAV)}</ul>')
        if user.is_admin
        else Html("")
    )
    return Html(
        '<nav class="sidebar" aria-label="Console">'
        f"<ul>{links(CLIENT_NAV)}</ul>{admin}"
        '<form method="post" action="/console/logout" class="logout">'
        f"{csrf_field(user)}"
        f'<p class="who">{esc(user.email)}</p>'
        '<button type="submit" class="secondary">Sign out</button></form></nav>'
    )


def csrf_field(user: ConsoleUser) -> Html:
    return Html(f'<input type="hidden" name="csrf" value="{esc(user.csrf)}">')


def page(
    *,
    title: str,
    body: str,
    user: ConsoleUser | None,
    active: str = "",
    status: int = 200,
) -> HTMLResponse:
    """A whole console page: head, navigation (when signed in), and `body` in <main>."""
    meta = f'<meta name="csrf-token" content="{esc(user.csrf)}">' if user else ""
    nav = _nav(user, active) if user else ""
    document = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · Tollgate</title>{meta}"
        '<link rel="stylesheet" href="/console/static/console.css">'
        '<script src="/console/static/console.js" defer></script></head><body>'
        '<a class="skip" href="#main">Skip to content</a>'
        '<header class="top"><a class="brand" href="/console/">Tollgate</a></header>'
        f'<div class="frame">{nav}<main id="main" tabindex="-1">'
        f"<h1>{esc(title)}</h1>{body}</main></div></body></html>"
    )
    return HTMLResponse(document, status_code=status, headers=SECURITY_HEADERS)


def notice(message: str | None, *, error: bool = False) -> Html:
    """A status line announced to screen readers (an error as an alert)."""
    if not message:
        return Html("")
    if error:
        return Html(f'<p class="notice error" role="alert">{esc(message)}</p>')
    return Html(f'<p class="notice" role="status">{esc(message)}</p>')


def table(caption: str, headers: Iterable[str], rows: Iterable[Iterable[object]]) -> Html:
    """A data table in a scrolling box (phones scroll it sideways, not the page)."""
    names = list(headers)
    head = join(f'<th scope="col">{esc(h)}</th>' for h in names)
    body = join("<tr>" + join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    if not body:
        body = Html(f'<tr><td colspan="{len(names) or 1}">Nothing yet.</td></tr>')
    return Html(
        f'<div class="scroll" role="region" aria-label="{esc(caption)}" tabindex="0">'
        f"<table><caption>{esc(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table></div>"
    )


def link(href: str, label: object) -> Html:
    return Html(f'<a href="{esc(href)}">{esc(label)}</a>')
