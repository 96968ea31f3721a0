"""JWT access and refresh tokens, and API key secrets.

Hardening: one algorithm pinned by configuration; `exp`, `iat`, `iss`, `aud`, `sub`, `jti` and
`typ` required; a refresh token is never accepted as an access token or the other way round.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Literal

import jwt

from tollgate_server.settings import Settings

TokenType = Literal["access", "refresh"]
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "jti", "typ"]
API_KEY_PREFIX = "tg-"


class InvalidToken(Exception):
    """Any reason a token is refused; the API answers 401 without saying which."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    subject: uuid.UUID
    token_id: uuid.UUID
    token_type: TokenType
    expires_at: int
    family_id: uuid.UUID | None = None


def issue_token(
    *,
    settings: Settings,
    secret: str,
    subject: uuid.UUID,
    token_type: TokenType,
    token_id: uuid.UUID | None = None,
    family_id: uuid.UUID | None = None,
) -> tuple[str, TokenClaims]:
    now = int(time.time())
    ttl = (
        settings.access_token_ttl_seconds
        if token_type == "access"
        else settings.refresh_token_ttl_seconds
    )
    claims = TokenClaims(
        subject=subject,
        token_id=token_id or uuid.uuid4(),
        token_type=token_type,
        expires_at=now + ttl,
        family_id=family_id,
    )
    payload: dict[str, object] = {
        "sub": str(subject),
        "jti": str(claims.token_id),
        "typ": token_type,
        "iat": now,
        "exp": claims.expires_at,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
    }
    if family_id is not None:
        payload["fam"] = str(family_id)
    return jwt.encode(payload, secret, algorithm=settings.jwt_algorithm), claims


def decode_token(
    token: str, *, settings: Settings, secret: str, expected: TokenType
) -> TokenClaims:
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[settings.jwt_algorithm],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway_seconds,
            options={"require": REQUIRED_CLAIMS, "verify_iat": True},
        )
        if payload["typ"] != expected:
            raise InvalidToken("wrong token type")
        # A token dated in the future was not minted by this server's clock.
        if int(payload["iat"]) > time.time() + settings.jwt_leeway_seconds:
            raise InvalidToken("issued in the future")
        family = payload.get("fam")
        return TokenClaims(
            subject=uuid.UUID(str(payload["sub"])),
            token_id=uuid.UUID(str(payload["jti"])),
            token_type=expected,
            expires_at=int(payload["exp"]),
            family_id=uuid.UUID(str(family)) if family else None,
        )
    except (jwt.PyJWTError, ValueError, KeyError, TypeError) as exc:
        raise InvalidToken(str(exc)) from None


def new_api_key() -> tuple[str, str, bytes]:
    """A fresh API key: (the secret shown once, its display prefix, the hash stored)."""
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return secret, secret[:10], hash_api_key(secret)


def hash_api_key(secret: str) -> bytes:
    # Keys carry 256 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(secret.encode()).digest()
