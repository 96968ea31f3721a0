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


class VerifiedAccessTokens:
    """Access tokens already verified, kept until they expire.

    A JWT cannot change: once its signature, audience, issuer, type and dates have passed,
    only its expiry can end its validity, and that is checked on every use. Verifying costs
    about 50 microseconds of PyJWT a request; a look-up here, under one. Access tokens are
    never revoked one by one (logout and disabling revoke refresh tokens, and every route
    asks `AccountStates` whether the account may still act), so a cached token is accepted
    exactly when a decoded one would be.
    """

    MAX_ENTRIES = 4096
    MAX_TOKEN_CHARS = 1024
    """Tokens this server issues are about 400 characters. A longer one is still verified, but
    not remembered: a cache keyed on what a client sends must not grow with it."""

    def __init__(self, settings: Settings, secret: str) -> None:
        self._settings = settings
        self._secret = secret
        self._leeway = settings.jwt_leeway_seconds
        self._claims: dict[str, TokenClaims] = {}

    def verify(self, token: str) -> TokenClaims:
        """The token's claims; raises InvalidToken as `decode_token` does."""
        claims = self._claims.get(token)
        if claims is not None:
            if time.time() < claims.expires_at + self._leeway:
                return claims
            del self._claims[token]
        claims = decode_token(
            token, settings=self._settings, secret=self._secret, expected="access"
        )
        if len(token) <= self.MAX_TOKEN_CHARS:
            if len(self._claims) >= self.MAX_ENTRIES:
                self._claims.clear()
            self._claims[token] = claims
        return claims


def new_api_key() -> tuple[str, str, bytes]:
    """A fresh API key: (the secret shown once, its display prefix, the hash stored)."""
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return secret, secret[:10], hash_api_key(secret)


def hash_api_key(secret: str) -> bytes:
    # Keys carry 256 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(secret.encode()).digest()
