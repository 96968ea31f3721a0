"""The web console at /console: server-rendered pages for clients and admins.

`install_console(app)` adds its routes, its static files (CSS and one script, from this
package: nothing is fetched from elsewhere) and the answers for a missing session or a refused
page.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from tollgate_server.api.errors import envelope, request_id_of
from tollgate_server.console import admin_pages, pages, playground, signin
from tollgate_server.console.errors import ConsoleError, NotSignedIn
from tollgate_server.console.render import esc, page

STATIC = Path(__file__).parent / "static"

__all__ = ["install_console"]


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/console/api/")


def install_console(app: FastAPI) -> None:
    app.include_router(signin.router)
    app.include_router(pages.router)
    app.include_router(playground.router)
    app.include_router(admin_pages.router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")

    @app.exception_handler(NotSignedIn)
    async def _not_signed_in(request: Request, exc: NotSignedIn) -> Response:
        if _wants_json(request) or request.method not in ("GET", "HEAD"):
            return _refusal(request, ConsoleError(401, "unauthenticated", "Sign in first."))
        return RedirectResponse("/console/login", status_code=303)

    @app.exception_handler(ConsoleError)
    async def _console_error(request: Request, exc: ConsoleError) -> Response:
        return _refusal(request, exc)


def _refusal(request: Request, exc: ConsoleError) -> Response:
    if _wants_json(request):
        return envelope(exc.status, exc.code, exc.message, request_id_of(request))
    body = (
        f'<p class="notice error" role="alert" data-code="{esc(exc.code)}">{esc(exc.message)}</p>'
        '<p><a href="/console/">Back to the console</a></p>'
    )
    return page(title="Not possible", body=body, user=None, status=exc.status)
