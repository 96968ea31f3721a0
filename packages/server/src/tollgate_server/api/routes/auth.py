"""Registration, login, tokens, and the caller's own account."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, status

from tollgate_server.api.deps import RuntimeDep, SessionDep, UserDep
from tollgate_server.api.json_body import StrictJsonRoute
from tollgate_server.api.responses import Failure, errors
from tollgate_server.schemas import (
    AccountCreate,
    AccountPublic,
    LoginRequest,
    RefreshRequest,
    TokenPair,
    TokenRequest,
)
from tollgate_server.services import accounts, auth

router = APIRouter(prefix="/v1", tags=["auth"], route_class=StrictJsonRoute)

LOGIN_FAILURES: dict[int, str | Failure] = {
    401: Failure(
        "Wrong email or password, or a disabled account (the same answer for each)",
        "unauthenticated",
        "wrong email or password",
    ),
    429: "Too many failed logins for this account or address; wait for Retry-After",
}


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.post(
    "/auth/register",
    status_code=status.HTTP_201_CREATED,
    response_model=AccountPublic,
    summary="Create an account",
    responses=errors(
        409,
        413,
        429,
        notes={
            409: "An account with this email exists (`email_taken`)",
            429: "Too many registrations of this email, or too many `email_taken` answers to "
            "this address (`rate_limited`); wait for Retry-After",
        },
    ),
)
async def register(
    data: AccountCreate, request: Request, session: SessionDep, runtime: RuntimeDep
) -> Any:
    """Create a `client` account. The email is normalised (trimmed, lower-cased) and unique.

    Fields other than `email` and `password` (such as `role` or `balance`) are refused with 422.
    An email that has an account is answered 409, so that a person learns at once that they
    must log in instead; to keep that from listing who has an account, an email can be tried
    only a few times an hour, and an address told only a few times an hour that an email is
    taken (429 with Retry-After, before the email is looked up).
    """
    row = await auth.register(
        session=session,
        data=data,
        client_address=_client_address(request),
        settings=runtime.settings,
    )
    return accounts.account_public(row)


@router.post(
    "/auth/login",
    response_model=TokenPair,
    summary="Log in with email and password",
    responses=errors(401, 413, 429, notes=LOGIN_FAILURES),
)
async def login(
    data: LoginRequest, request: Request, session: SessionDep, runtime: RuntimeDep
) -> Any:
    """Exchange email and password for an access token (short-lived) and a refresh token.

    A wrong password and an unknown email get the same answer. Repeated failures lock the
    account and the client address out for a while (429 with Retry-After).
    """
    return await auth.login(
        session=session,
        email=data.email,
        password=data.password,
        client_address=_client_address(request),
        settings=runtime.settings,
        secret=runtime.jwt_secret,
    )


@router.post(
    "/auth/token",
    response_model=TokenPair,
    summary="Log in (OAuth2 password form, for Swagger UI)",
    responses=errors(401, 413, 429, notes=LOGIN_FAILURES),
)
async def token(
    form: Annotated[TokenRequest, Form()],
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
) -> Any:
    """The same as `/v1/auth/login`, as an OAuth2 password-flow token endpoint: `username` is
    the email. Swagger UI's Authorize dialog uses it."""
    return await auth.login(
        session=session,
        email=form.username,
        password=form.password,
        client_address=_client_address(request),
        settings=runtime.settings,
        secret=runtime.jwt_secret,
    )


@router.post(
    "/auth/refresh",
    response_model=TokenPair,
    summary="Exchange a refresh token for a new pair",
    responses=errors(
        401,
        413,
        notes={
            401: Failure(
                "Invalid, expired, revoked or already used refresh token",
                "unauthenticated",
                "invalid refresh token",
            )
        },
    ),
)
async def refresh(data: RefreshRequest, session: SessionDep, runtime: RuntimeDep) -> Any:
    """Refresh tokens are single use. Presenting one a second time revokes its whole family:
    whoever holds a copy must log in again."""
    return await auth.refresh(
        session=session,
        token=data.refresh_token,
        settings=runtime.settings,
        secret=runtime.jwt_secret,
    )


@router.post(
    "/auth/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke a refresh token",
    responses=errors(
        401,
        413,
        notes={
            401: Failure(
                "Not a refresh token this server issued", "unauthenticated", "invalid refresh token"
            )
        },
    ),
)
async def logout(data: RefreshRequest, session: SessionDep, runtime: RuntimeDep) -> None:
    """Revoke the refresh token and every token refreshed from the same login."""
    await auth.logout(
        session=session,
        token=data.refresh_token,
        settings=runtime.settings,
        secret=runtime.jwt_secret,
    )


@router.get("/me", response_model=AccountPublic, summary="Your account", responses=errors(401, 403))
async def me(user: UserDep, session: SessionDep) -> Any:
    """The account behind the access token."""
    row = await accounts.get_account(session=session, account_id=user.account_id)
    return accounts.account_public(row)
