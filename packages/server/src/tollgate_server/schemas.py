"""Request and response bodies. `XCreate`/`XUpdate` come in, `XPublic` goes out.

Amounts are decimal strings of credits (up to six decimal places); inputs refuse unknown fields
(``extra="forbid"``) so that a field such as ``role`` in a registration is an error, never
silently ignored.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, EmailStr, Field, field_validator
from tollgate_core import AmountError, parse_credits

T = TypeVar("T")


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


def _check_amount(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ValueError('must be a decimal string such as "12.5"')
    try:
        parse_credits(value)
    except AmountError as exc:
        raise ValueError(str(exc)) from None
    return str(value)


Amount = Annotated[
    str,
    BeforeValidator(_check_amount),
    Field(description="Credits as a decimal string, at most 6 decimal places", examples=["12.5"]),
]
Role = Literal["client", "admin"]


def _normalise_email(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


Email = Annotated[EmailStr, BeforeValidator(_normalise_email)]
Password = Annotated[str, Field(min_length=8, max_length=1024, examples=["correct horse 42"])]


class Page(BaseModel, Generic[T]):
    """A page of a list, newest first. Pass `next_cursor` as `cursor` to get the next page."""

    data: list[T]
    next_cursor: str | None = Field(None, description="Absent on the last page")


# --- accounts and auth ---------------------------------------------------------------------


class AccountCreate(Input):
    email: Email = Field(examples=["ada@example.com"])
    password: Password


class AccountPublic(BaseModel):
    id: uuid.UUID
    email: str
    role: Role
    disabled: bool
    created_at: datetime
    balance: str = Field(description="Credits, decimal string", examples=["100"])


class AccountUpdate(Input):
    role: Role | None = None
    disabled: bool | None = None


class LoginRequest(Input):
    email: Email = Field(examples=["ada@example.com"])
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires")


class RefreshRequest(Input):
    refresh_token: str = Field(min_length=1, max_length=4096)


# --- API keys ------------------------------------------------------------------------------


class ApiKeyCreate(Input):
    name: str = Field(min_length=1, max_length=200, examples=["my script"])
    models: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        None, max_length=100, description="Models the key may use; omit for every model"
    )
    expires_at: datetime | None = None

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("expires_at needs a time zone, such as 2030-01-01T00:00:00Z")
        return value


class ApiKeyPublic(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str = Field(description="The first characters of the key, to recognise it")
    models: list[str] | None
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    created_at: datetime


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="The secret. Shown once: store it now.")


# --- credits -------------------------------------------------------------------------------


class BalancePublic(BaseModel):
    balance: str = Field(description="Credits on the account", examples=["100"])
    held: str = Field(description="Credits held by generations still running", examples=["0.2"])
    available: str = Field(description="balance - held", examples=["99.8"])


LedgerKind = Literal["grant", "topup", "adjustment", "hold", "charge", "release"]


class LedgerEntryPublic(BaseModel):
    id: int
    kind: LedgerKind
    amount: str = Field(description="Change to the balance")
    held_delta: str = Field(description="Change to the held credits")
    balance_after: str
    held_after: str
    generation_id: uuid.UUID | None
    actor_id: uuid.UUID | None
    reason: str | None
    created_at: datetime


class CreditsCreate(Input):
    amount: Amount = Field(
        description="Positive tops up, negative deducts", examples=["100", "-2.5"]
    )
    reason: str = Field(min_length=1, max_length=500, examples=["monthly top-up"])

    @field_validator("amount")
    @classmethod
    def _not_zero(cls, value: str) -> str:
        if parse_credits(value) == 0:
            raise ValueError("amount must not be zero")
        return value


class CreditsResult(BaseModel):
    entry: LedgerEntryPublic
    balance: BalancePublic


class UsageDayPublic(BaseModel):
    day: str = Field(examples=["2026-11-27"])
    model: str
    generations: int
    input_tokens: int
    output_tokens: int
    cost: str


class UsagePublic(BaseModel):
    data: list[UsageDayPublic]


# --- models --------------------------------------------------------------------------------


class ModelCreate(Input):
    name: str = Field(
        min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:/-]+$", examples=["gpt-4o-mini"]
    )
    provider: str = Field(min_length=1, max_length=100, examples=["openai"])
    upstream_model: str = Field(min_length=1, max_length=200, examples=["gpt-4o-mini"])
    enabled: bool = True
    free: bool = Field(False, description="Only a free model may have a zero price")
    context_window: int = Field(gt=0, le=100_000_000, examples=[128000])
    max_output_tokens: int = Field(gt=0, le=10_000_000, examples=[16384])
    default_max_tokens: int | None = Field(
        None, gt=0, le=10_000_000, description="max_tokens when a request names none"
    )
    input_price: Amount = Field(description="Credits per million input tokens")
    output_price: Amount = Field(description="Credits per million output tokens")


class ModelUpdate(Input):
    provider: str | None = Field(None, min_length=1, max_length=100)
    upstream_model: str | None = Field(None, min_length=1, max_length=200)
    enabled: bool | None = None
    free: bool | None = None
    context_window: int | None = Field(None, gt=0, le=100_000_000)
    max_output_tokens: int | None = Field(None, gt=0, le=10_000_000)
    default_max_tokens: int | None = Field(None, gt=0, le=10_000_000)
    input_price: Amount | None = None
    output_price: Amount | None = None


class ModelPublic(BaseModel):
    name: str
    provider: str
    upstream_model: str
    enabled: bool
    free: bool
    available: bool = Field(description="Enabled, priced, and its provider is configured")
    context_window: int
    max_output_tokens: int
    default_max_tokens: int
    input_price: str | None = Field(description="Credits per million input tokens")
    output_price: str | None = Field(description="Credits per million output tokens")
    price_effective_from: datetime | None
