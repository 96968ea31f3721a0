"""The console's sign-in: a session cookie, CSRF tokens, and who is signed in.

The session cookie holds a refresh token issued by `services.auth.login`, so signing in goes
through the API's own path (its lockout, its disabled-account rule) and a session is a row in
`refresh_tokens`: logging out revokes it, and disabling the account revokes it too. The console
never exchanges the token, it only checks that it is still valid on each request.

Cookies are `HttpOnly` and `SameSite=Strict`, and `Secure` unless the console is reached on a
loopback address (a developer's plain http://127.0.0.1). Every state-changing request must carry
a CSRF token bound to the session (an HMAC of the refresh token's id, in a hidden form field or
the ``X-CSRF-Token`` header) and, when the browser sends one, an ``Origin`` of this very host.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tollgate_server.api.deps import RuntimeDep, SessionDep
from tollgate_server.console.errors import NotSignedIn, admin_only, csrf_refused
from tollgate_server.runtime import Runtime
from tollgate_server.security.tokens import InvalidToken, decode_token

SESSION_COOKIE = "tollgate_console"
LOGIN_CSRF_COOKIE = "tollgate_console_login"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    account_id: uuid.UUID
    email: str
    role: str
    token_id: uuid.UUID
    csrf: str
    """The CSRF token of this session, put into every form and the page's meta tag."""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def csrf_for(runtime: Runtime, token_id: uuid.UUID) -> str:
    message = b"tollgate-console-csrf:" + token_id.bytes
    return hmac.new(runtime.jwt_secret.encode(), message, hashlib.sha256).hexdigest()


def cookie_secure(request: Request) -> bool:
    """Secure everywhere except on loopback, where browsers speak plain http."""
    return (request.url.hostname or "") not in LOOPBACK_HOSTS


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/console",
        httponly=True,
        secure=cookie_secure(request),
        samesite="strict",
    )


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name, path="/console", httponly=True, secure=cookie_secure(request), samesite="strict"
    )


def new_login_csrf() -> str:
    return secrets.token_urlsafe(32)


async def current_user(request: Request, runtime: Runtime, session: AsyncSession) -> ConsoleUser:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise NotSignedIn
    try:
        claims = decode_token(
            token, settings=runtime.settings, secret=runtime.jwt_secret, expected="refresh"
        )
    except InvalidToken:
        raise NotSignedIn from None
    row = (
        await session.execute(
            text(
                "SELECT a.id, a.email, a.role FROM refresh_tokens t JOIN accounts a "
                "ON a.id = t.account_id WHERE t.id = :id AND t.revoked_at IS NULL "
                "AND t.expires_at > now() AND NOT a.disabled"
            ),
            {"id": claims.token_id},
        )
    ).one_or_none()
    if row is None:
        raise NotSignedIn
    return ConsoleUser(
        account_id=row.id,
        email=row.email,
        role=row.role,
        token_id=claims.token_id,
        csrf=csrf_for(runtime, claims.token_id),
    )


def check_origin(request: Request) -> None:
    """A browser names the page a POST came from; it must be this host."""
    origin = request.headers.get("origin")
    if origin is None:
        return  # not a browser, or one that names no origin: the CSRF token still decides
    # "null" (a sandboxed frame, a redirect across sites) never matches a host.
    if origin.split("://", 1)[-1] != request.headers.get("host", ""):
        raise csrf_refused()


async def check_csrf(request: Request, user: ConsoleUser) -> None:
    """Refuse a state-changing request without this session's CSRF token."""
    check_origin(request)
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    # As bytes: compare_digest refuses str with non-ASCII characters (a 500, not a 403).
    if not sent or not hmac.compare_digest(sent.encode(), user.csrf.encode()):
        raise csrf_refused()


async def _viewer(request: Request, runtime: RuntimeDep, session: SessionDep) -> ConsoleUser:
    changes = request.method not in ("GET", "HEAD")
    if changes:
        # Before the session: a cross-site POST (which SameSite=Strict sends without the
        # cookie) is refused as forged, not redirected to the sign-in page.
        check_origin(request)
    user = await current_user(request, runtime, session)
    if changes:
        await check_csrf(request, user)
    return user


async def _admin(user: Annotated[ConsoleUser, Depends(_viewer)]) -> ConsoleUser:
    if not user.is_admin:
        raise admin_only()
    return user


ViewerDep = Annotated[ConsoleUser, Depends(_viewer)]
"""Someone signed in (any role); POSTs have passed the CSRF check."""
ConsoleAdminDep = Annotated[ConsoleUser, Depends(_admin)]
"""An admin signed in now (the role is read on every request)."""
