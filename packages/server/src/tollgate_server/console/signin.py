"""Signing in to the console and out of it, through the API's own login.

The sign-in form has no session to bind a CSRF token to: its token is a double submit (a
random value in the form and in a `SameSite=Strict` cookie set with it), and the `Origin` must
be this host.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from tollgate_server.api.deps import RuntimeDep, SessionDep
from tollgate_server.api.errors import status_of
from tollgate_server.console.errors import ConsoleError, csrf_refused
from tollgate_server.console.forms import read_form, validate
from tollgate_server.console.render import esc, notice, page
from tollgate_server.console.session import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    ViewerDep,
    check_origin,
    clear_cookie,
    new_login_csrf,
    set_cookie,
)
from tollgate_server.errors import Refused
from tollgate_server.schemas import LoginRequest
from tollgate_server.services import auth

router = APIRouter(prefix="/console", include_in_schema=False)


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _login_page(request: Request, *, error: str | None = None, status: int = 200) -> Response:
    token = new_login_csrf()
    body = (
        f"{notice(error, error=True)}"
        '<form method="post" action="/console/login" class="card narrow">'
        f'<input type="hidden" name="csrf" value="{esc(token)}">'
        '<label for="email">Email</label>'
        '<input id="email" name="email" type="email" autocomplete="username" required>'
        '<label for="password">Password</label>'
        '<input id="password" name="password" type="password" '
        'autocomplete="current-password" required>'
        '<button type="submit">Sign in</button></form>'
    )
    response = page(title="Sign in", body=body, user=None, status=status)
    set_cookie(request, response, LOGIN_CSRF_COOKIE, token, max_age=3600)
    return response


@router.get("/login")
async def login_form(request: Request) -> Response:
    return _login_page(request)


@router.post("/login")
async def login(request: Request, session: SessionDep, runtime: RuntimeDep) -> Response:
    # Before a session there is nothing to bind a token to: the form's token must match the
    # cookie set with it (double submit), and the Origin must be this host.
    check_origin(request)
    form = await read_form(request)
    expected = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not expected or not hmac.compare_digest(form.get("csrf", "").encode(), expected.encode()):
        raise csrf_refused()
    try:
        # The API's own rules for the fields (an email, no NUL, lengths), then its login.
        data = validate(
            LoginRequest, {"email": form.get("email", ""), "password": form.get("password", "")}
        )
    except ConsoleError:
        return _login_page(request, error="Enter an email address and a password.", status=422)
    try:
        pair = await auth.login(
            session=session,
            email=data.email,
            password=data.password,
            client_address=_client_address(request),
            settings=runtime.settings,
            secret=runtime.jwt_secret,
        )
    except Refused as exc:
        return _login_page(request, error=exc.message.capitalize() + ".", status=status_of(exc))
    response = RedirectResponse("/console/", status_code=303)
    set_cookie(
        request,
        response,
        SESSION_COOKIE,
        pair["refresh_token"],
        max_age=runtime.settings.refresh_token_ttl_seconds,
    )
    clear_cookie(request, response, LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout")
async def logout(
    request: Request, user: ViewerDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    token = request.cookies.get(SESSION_COOKIE, "")
    await auth.logout(
        session=session, token=token, settings=runtime.settings, secret=runtime.jwt_secret
    )
    response = RedirectResponse("/console/login", status_code=303)
    clear_cookie(request, response, SESSION_COOKIE)
    return response
