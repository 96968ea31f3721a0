"""Dependencies for route signatures: `RuntimeDep`, `SessionDep`, and the principals.

Who is calling:

* `UserDep`: a person with a JWT access token (checked by signature, no database round trip).
* `CallerDep`: a person or a program: a JWT or an API key (``tg-...``). Accepted only on the
  generation endpoints, so a leaked key cannot manage keys or reach admin routes.
* `AdminDep`: a JWT whose account is an admin *now*: the role is read from the database on
  every admin request, so a demotion takes effect at once.

All refuse an account that is disabled (403 ``account_disabled``) or no longer exists (401),
whatever the token or key still says: `AccountStates` answers from memory, emptied on every
change of an account's state.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import (
    APIKeyHeader,
    HTTPAuthorizationCredentials,
    HTTPBearer,
    OAuth2PasswordBearer,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tollgate_server.errors import forbidden, unauthenticated
from tollgate_server.runtime import Runtime
from tollgate_server.security.tokens import API_KEY_PREFIX, InvalidToken
from tollgate_server.services.account_states import account_disabled
from tollgate_server.services.keys import KeyIdentity


async def get_runtime(request: Request) -> Runtime:
    # async on purpose: FastAPI runs a plain `def` dependency in a thread pool, a thread hop
    # on every request.
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    async with runtime.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]

# Declared for the OpenAPI document (Swagger's Authorize dialog); both read the same header.
oauth2_scheme = OAuth2PasswordBearer(
    tokenUrl="/v1/auth/token",
    auto_error=False,
    scheme_name="password",
    description="Log in with email and password; Swagger UI keeps the access token.",
)
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An access token from /v1/auth/login.",
)


x_api_key_scheme = APIKeyHeader(
    name="x-api-key",
    auto_error=False,
    scheme_name="xApiKey",
    description="An API key (`tg-...`) in the `x-api-key` header, as Anthropic's SDKs and "
    "Claude Code send it. Accepted only by /v1/messages.",
)


@dataclass(frozen=True, slots=True)
class Principal:
    account_id: uuid.UUID
    key: KeyIdentity | None = None
    """Set when the caller authenticated with an API key."""

    def may_use(self, model: str) -> bool:
        return self.key is None or self.key.models is None or model in self.key.models


async def _user_from_token(token: str, runtime: Runtime) -> Principal:
    try:
        claims = runtime.access_tokens.verify(token)
    except InvalidToken:
        raise unauthenticated("invalid or expired access token") from None
    await runtime.accounts.check(claims.subject)
    return Principal(account_id=claims.subject)


def _credentials(bearer: HTTPAuthorizationCredentials | None, oauth: str | None) -> str:
    if bearer is not None and bearer.credentials:
        return bearer.credentials
    if oauth:
        return oauth
    raise unauthenticated()


async def get_user(
    runtime: RuntimeDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    oauth: Annotated[str | None, Depends(oauth2_scheme)],
) -> Principal:
    token = _credentials(bearer, oauth)
    if token.startswith(API_KEY_PREFIX):
        raise forbidden("API keys are accepted only on the generation endpoints")
    return await _user_from_token(token, runtime)


async def get_caller(
    runtime: RuntimeDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    oauth: Annotated[str | None, Depends(oauth2_scheme)],
) -> Principal:
    return await caller_from_token(runtime, _credentials(bearer, oauth))


async def get_messages_caller(
    runtime: RuntimeDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(x_api_key_scheme)],
) -> Principal:
    """The caller of Anthropic's Messages API: an API key in ``x-api-key`` (what Anthropic's
    SDKs and Claude Code send), or a key or access token as ``Authorization: Bearer``."""
    if api_key:
        return await caller_from_token(runtime, api_key)
    return await caller_from_token(runtime, _credentials(bearer, None))


async def caller_from_token(runtime: Runtime, token: str) -> Principal:
    """A JWT's or an API key's principal (shared with `tollgate_server.api.chat_fast_path`)."""
    if not token.startswith(API_KEY_PREFIX):
        return await _user_from_token(token, runtime)
    identity = await runtime.keys.identify(token)
    if identity is None:
        raise unauthenticated("invalid, revoked or expired API key")
    await runtime.accounts.check(identity.account_id)
    return Principal(account_id=identity.account_id, key=identity)


async def get_admin(
    user: Annotated[Principal, Depends(get_user)], session: SessionDep
) -> Principal:
    row = (
        await session.execute(
            text("SELECT role, disabled FROM accounts WHERE id = :id"), {"id": user.account_id}
        )
    ).one_or_none()
    # Read again, not from `AccountStates`' memory: the role is wanted fresh anyway.
    if row is None:
        raise unauthenticated("this account no longer exists")
    if row.disabled:
        raise account_disabled()
    if row.role != "admin":
        raise forbidden("this needs the admin role")
    return user


UserDep = Annotated[Principal, Depends(get_user)]
CallerDep = Annotated[Principal, Depends(get_caller)]
MessagesCallerDep = Annotated[Principal, Depends(get_messages_caller)]
AdminDep = Annotated[Principal, Depends(get_admin)]
