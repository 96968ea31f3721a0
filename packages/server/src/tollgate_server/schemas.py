"""Request and response bodies. `XCreate`/`XUpdate` come in, `XPublic` goes out.

Amounts are decimal strings of credits (up to six decimal places); inputs refuse unknown fields
(``extra="forbid"``) so that a field such as ``role`` in a registration is an error, never
silently ignored.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    Strict,
    StrictBool,
    WithJsonSchema,
    field_validator,
)
from tollgate_core import AmountError, parse_credits

from tollgate_server.model_defaults import DEFAULT_CONTEXT_WINDOW, DEFAULT_MAX_OUTPUT_TOKENS

T = TypeVar("T")

# Shared by the examples of the OpenAPI document.
ACCOUNT_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
CREATED_AT = "2026-11-27T09:30:00Z"


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


# Inputs take JSON's own types: pydantic's lax mode would also take 0 for false, "5" for 5 and
# a number of seconds for a time, which the OpenAPI document does not offer and a client
# sending them has most likely made a mistake.
Flag = StrictBool
Count = Annotated[int, Strict()]


def _no_nul(value: str) -> str:
    # PostgreSQL stores no NUL character, in text or in JSONB: refused here rather than a 500.
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (\\u0000)")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
"""Any text that reaches the database."""

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _check_timestamp(value: object) -> object:
    if isinstance(value, datetime) or (isinstance(value, str) and _RFC3339.fullmatch(value)):
        return value
    raise ValueError("must be a date and time with a time zone, such as 2030-01-01T00:00:00Z")


Timestamp = Annotated[datetime, BeforeValidator(_check_timestamp)]
"""An RFC 3339 date-time with its offset, as the document's `format: date-time` says."""

AMOUNT_DIGITS = 9
"""Digits before the decimal point: an amount or a price is below a billion credits, far above
any real top-up or price, and far enough below the ledger's 64-bit micro-credits that no sum of
them overflows."""
_LIMIT = 10**AMOUNT_DIGITS
_DECIMAL = rf"[0-9]{{1,{AMOUNT_DIGITS}}}(\.[0-9]{{1,6}})?"
_ZERO = r"^-?0+(\.0+)?$"


def check_credits(value: object, *, negative: bool) -> str:
    """Check an amount of credits: a plain decimal string (a Python int or Decimal also does).

    The one reading of an amount a person typed, for the API's schemas and the CLI alike, so
    what one refuses (``"1e3"``, ``" 5"``) the other refuses too. Raises ValueError.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ValueError('must be a decimal string such as "12.5"')
    try:
        micro = parse_credits(value)
    except AmountError as exc:
        raise ValueError(str(exc)) from None
    if micro < 0 and not negative:
        raise ValueError("prices cannot be negative")
    if abs(micro) >= parse_credits(_LIMIT):
        raise ValueError(f"must be less than {_LIMIT} credits")
    if isinstance(value, str) and not re.fullmatch(f"-?{_DECIMAL}", value):
        raise ValueError('write it as a plain decimal, such as "12.5" or "-3"')
    return str(value)


def _credits_schema(*, negative: bool, zero: bool) -> dict[str, Any]:
    sign = "-?" if negative else ""
    text: dict[str, Any] = {"type": "string", "pattern": f"^{sign}{_DECIMAL}$"}
    number: dict[str, Any] = {
        "type": "integer",
        "minimum": -(_LIMIT - 1) if negative else 0,
        "maximum": _LIMIT - 1,
    }
    if not zero:
        text["not"] = {"pattern": _ZERO}
        number["not"] = {"const": 0}
    return {"anyOf": [text, number]}


Amount = Annotated[
    str,
    BeforeValidator(partial(check_credits, negative=True)),
    WithJsonSchema(_credits_schema(negative=True, zero=False)),
    Field(
        description="Credits as a decimal string (or an integer): at most 6 decimal places, "
        "less than a billion either way, never zero",
        examples=["12.5"],
    ),
]
Price = Annotated[
    str,
    BeforeValidator(partial(check_credits, negative=False)),
    WithJsonSchema(_credits_schema(negative=False, zero=True)),
    Field(
        description="Credits per million tokens as a decimal string (or an integer): at most 6 "
        "decimal places, from 0 to less than a billion",
        examples=["0.15"],
    ),
]


def _positive_credits(value: object) -> str:
    checked = check_credits(value, negative=False)
    if parse_credits(checked) == 0:
        raise ValueError("must be more than zero; send null for no limit")
    return checked


SpendLimit = Annotated[
    str,
    BeforeValidator(_positive_credits),
    WithJsonSchema(_credits_schema(negative=False, zero=False)),
    Field(
        description="Credits the key may spend per `spend_period` (its holds count until they "
        "settle), as a decimal string; null for no limit",
        examples=["25"],
    ),
]
SpendPeriod = Literal["day", "week", "month"]
PerMinute = Annotated[int, Strict(), Field(gt=0, le=1_000_000_000)]
Role = Literal["client", "admin"]

ModelKind = Literal["chat", "embedding"]
"""What a model does: ``chat`` models serve `/v1/chat/completions`, ``embedding`` models
`/v1/embeddings`."""


def _normalise_email(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


Email = Annotated[EmailStr, BeforeValidator(_normalise_email)]
Password = Annotated[str, Field(min_length=8, max_length=1024, examples=["correct horse 42"])]


class Page(BaseModel, Generic[T]):
    """A page of a list. Pass `next_cursor` as `cursor` to get the next page."""

    data: list[T] = Field(description="The items of this page, in the list's order")
    next_cursor: str | None = Field(None, description="null on the last page", examples=["42"])


# --- accounts and auth ---------------------------------------------------------------------


class AccountCreate(Input):
    """A new account: its email and password. It starts as a client, with the signup grant."""

    email: Email = Field(
        description="The login; stored trimmed and in lower case", examples=["ada@example.com"]
    )
    password: Password = Field(description="8 to 1024 characters")


class AccountPublic(BaseModel):
    """An account: who it is, its role and state, and its balance."""

    id: uuid.UUID = Field(description="The account's id", examples=[ACCOUNT_ID])
    email: str = Field(description="The login, in lower case", examples=["ada@example.com"])
    role: Role = Field(description="client, or admin", examples=["client"])
    disabled: bool = Field(description="A disabled account cannot log in or generate")
    created_at: datetime = Field(description="When it registered", examples=[CREATED_AT])
    balance: str = Field(description="Credits, decimal string", examples=["100"])


class AccountPage(Page[AccountPublic]):
    """Accounts ordered by email."""


class AccountUpdate(Input):
    """An admin's change to an account; only the fields you send change."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"role": "admin"}]})

    role: Role | None = Field(None, description="Leave out to keep the role")
    disabled: Flag | None = Field(
        None, description="true disables the account and revokes its refresh tokens"
    )


class LoginRequest(Input):
    """Email and password, exchanged for a token pair."""

    email: Email = Field(description="The account's email", examples=["ada@example.com"])
    password: Annotated[
        str,
        Field(
            min_length=1,
            max_length=1024,
            description="The account's password",
            examples=["correct horse 42"],
        ),
    ]


class TokenRequest(BaseModel):
    """OAuth2's password grant, as a form: what Swagger UI's Authorize dialog sends.

    Unknown fields are ignored here, unlike in JSON bodies: OAuth2 clients add their own.
    """

    grant_type: Literal["password"] = Field(
        "password", description="`password` (the default)", examples=["password"]
    )
    username: Text = Field(
        min_length=1, max_length=320, description="Your email", examples=["ada@example.com"]
    )
    password: str = Field(
        min_length=1,
        max_length=1024,
        description="Your password",
        examples=["correct horse 42"],
        json_schema_extra={"format": "password"},
    )
    scope: str = Field("", max_length=1000, description="Ignored: Tollgate has no scopes")
    client_id: str = Field("", max_length=200, description="Ignored")
    client_secret: str = Field(
        "", max_length=200, description="Ignored", json_schema_extra={"format": "password"}
    )


class TokenPair(BaseModel):
    """A short-lived access token and the single-use refresh token that renews it."""

    access_token: str = Field(
        description="Send it as `Authorization: Bearer <access_token>`",
        examples=["eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOi...c2lnbmF0dXJl"],
    )
    refresh_token: str = Field(
        description="Single use: exchange it at /v1/auth/refresh for a new pair",
        examples=["eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0eXAiOi...cmVmcmVzaA"],
    )
    token_type: Literal["bearer"] = Field(
        "bearer", description="Always `bearer` (OAuth2's token type)"
    )
    expires_in: int = Field(description="Seconds until the access token expires", examples=[900])


class RefreshRequest(Input):
    """A refresh token to exchange for a new pair (or to revoke, at logout)."""

    refresh_token: str = Field(
        min_length=1,
        max_length=4096,
        description="The refresh token of the last pair; it is used up by this call",
        examples=["eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0eXAiOi...cmVmcmVzaA"],
    )


# --- API keys ------------------------------------------------------------------------------


class ApiKeyCreate(Input):
    """A new API key, with optional limits: models, expiry, spend, requests and tokens."""

    name: Text = Field(
        min_length=1, max_length=200, description="Your name for the key", examples=["my script"]
    )
    models: list[Annotated[Text, Field(min_length=1, max_length=200)]] | None = Field(
        None,
        max_length=100,
        description="Models the key may use; omit for every model",
        examples=[["gpt-4o-mini"]],
    )
    expires_at: Timestamp | None = Field(
        None,
        description="When the key stops working, with a time zone; omit for never",
        examples=["2030-01-01T00:00:00Z"],
    )
    spend_limit: SpendLimit | None = Field(
        None,
        description="Credits the key may spend per `spend_period` (its holds count until they "
        "settle), as a decimal string; null for no limit",
    )
    spend_period: SpendPeriod | None = Field(
        None,
        description="day, week or month: calendar periods in UTC (a week starts on Monday); "
        "null for the key's whole lifetime",
    )
    rpm: PerMinute | None = Field(None, description="Requests per minute; null for no limit")
    tpm: PerMinute | None = Field(
        None,
        description="Tokens per minute, counted at admission as the prompt's estimate plus "
        "max_tokens; null for no limit",
    )

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("expires_at needs a time zone, such as 2030-01-01T00:00:00Z")
        return value


class ApiKeyUpdate(Input):
    """Only the fields you send change; null removes a limit."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"spend_limit": "25", "spend_period": "month"}]}
    )

    spend_limit: SpendLimit | None = Field(
        None, description="Credits per `spend_period`, as a decimal string; null: no limit"
    )
    spend_period: SpendPeriod | None = Field(
        None, description="day, week or month (UTC); null: the key's whole lifetime"
    )
    rpm: PerMinute | None = Field(None, description="Requests per minute; null: no limit")
    tpm: PerMinute | None = Field(None, description="Tokens per minute; null: no limit")


class AllowanceSet(Input):
    """An account's recurring allowance: credits granted, or a floor topped up to, each period."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"amount": "100", "period": "month", "mode": "grant"}]}
    )

    amount: Annotated[
        str,
        BeforeValidator(_positive_credits),
        WithJsonSchema(_credits_schema(negative=False, zero=False)),
        Field(
            description="Credits: granted every period (mode grant), or the floor the available "
            "balance is topped up to (mode floor)",
            examples=["100"],
        ),
    ]
    period: SpendPeriod = Field(description="day, week (from Monday) or month, in UTC")
    mode: Literal["grant", "floor"] = Field(
        "grant", description="grant: add `amount` each period; floor: top up to `amount`"
    )


class AllowanceGrantPublic(BaseModel):
    """One period's grant of an allowance."""

    period_start: datetime = Field(description="The start of the period (UTC)")
    amount: str = Field(description="Credits granted for that period (0: already at the floor)")
    ledger_entry_id: int | None = Field(
        description="The ledger entry of the grant; null when nothing was granted"
    )


class AllowancePublic(BaseModel):
    """An account's allowance and its recent grants."""

    account_id: uuid.UUID = Field(description="The account it belongs to")
    amount: str = Field(
        description="Credits granted each period (grant), or the floor (floor)", examples=["100"]
    )
    period: SpendPeriod = Field(description="day, week (from Monday) or month, in UTC")
    mode: Literal["grant", "floor"] = Field(
        description="grant: add `amount` each period; floor: top up to `amount`"
    )
    starts_at: datetime = Field(description="The first period granted is the one this is in")
    updated_at: datetime = Field(description="When an admin last set it")
    grants: list[AllowanceGrantPublic] = Field(description="The last twelve periods granted")


def _webhook_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", value):
        raise ValueError("must be an http:// or https:// URL")
    return value


class WebhookEndpointSet(Input):
    """The one endpoint that receives webhook events, and the secret that signs them."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"url": "https://example.com/tollgate", "secret": "a long random secret"}]
        }
    )

    url: Annotated[Text, AfterValidator(_webhook_url), Field(max_length=2000)] = Field(
        description="An http:// or https:// URL; each event is POSTed to it"
    )
    secret: Text = Field(
        min_length=16,
        max_length=200,
        description="Signs every body (HMAC-SHA256); stored to sign, never shown back",
    )


class WebhookEndpointPublic(BaseModel):
    """The webhook endpoint; its secret is never shown back."""

    url: str = Field(description="Where events are POSTed")
    secret_set: bool = Field(description="Always true: the secret is never shown back")
    updated_at: datetime = Field(description="When an admin last set it")


class BalanceAlertSet(Input):
    """An account's low-balance threshold."""

    threshold: Price = Field(
        description="A `balance.low` event is sent when the available balance falls below this "
        "(once, until a top-up lifts it back)"
    )


class BalanceAlertPublic(BaseModel):
    """An account's low-balance threshold and whether its alert has been sent."""

    account_id: uuid.UUID = Field(description="The account it watches")
    threshold: str = Field(description="Credits: the alert fires below this available balance")
    alerted: bool = Field(description="Below the threshold, alert sent, waiting for a top-up")


class WebhookDeliveryPublic(BaseModel):
    """One webhook event and the state of its delivery."""

    id: uuid.UUID = Field(description="The event's id, in its body: receivers drop repeats by it")
    type: Literal["balance.low", "key.budget_80", "key.budget_100"] = Field(
        description="What happened: a low balance, or a key at 80 % or 100 % of its spend limit"
    )
    account_id: uuid.UUID | None = Field(description="The account it is about")
    data: dict[str, Any] = Field(description="The event's details, as in the body sent")
    created_at: datetime = Field(description="When the event happened")
    status: Literal["pending", "delivered", "given_up"] = Field(
        description="pending (not yet answered with 2xx), delivered, or given_up after retrying"
    )
    attempts: int = Field(description="Deliveries tried so far")
    next_attempt_at: datetime = Field(description="When the next delivery is due, if pending")
    delivered_at: datetime | None = Field(description="When the receiver answered 2xx")
    gave_up_at: datetime | None = Field(description="When retrying stopped, if it did")
    last_status: int | None = Field(description="The receiver's last HTTP status, if it answered")
    last_error: str | None = Field(
        description="Why the last delivery failed (no answer, or the status), if it did"
    )


class WebhookDeliveryPage(BaseModel):
    """Webhook events, newest first."""

    data: list[WebhookDeliveryPublic] = Field(description="The events")


class ApiKeyPublic(BaseModel):
    """An API key without its secret: its limits and what it has spent."""

    id: uuid.UUID = Field(
        description="The key's id", examples=["0b5e2f4c-7d1a-4c3e-9f60-2a8d5e7b1c94"]
    )
    name: str = Field(description="Your name for the key", examples=["my script"])
    prefix: str = Field(
        description="The first characters of the key, to recognise it", examples=["tg-4fQx9"]
    )
    models: list[str] | None = Field(
        description="The models the key may use; null for every model", examples=[["gpt-4o-mini"]]
    )
    expires_at: datetime | None = Field(
        description="When it stops working; null for never", examples=["2030-01-01T00:00:00Z"]
    )
    revoked_at: datetime | None = Field(
        description="When it was revoked; null while it works", examples=[None]
    )
    last_used_at: datetime | None = Field(
        description="When it was last accepted; null if never", examples=[None]
    )
    created_at: datetime = Field(description="When it was made", examples=[CREATED_AT])
    spend_limit: str | None = Field(
        description="Credits per spend_period; null for no limit", examples=["25"]
    )
    spend_period: SpendPeriod | None = Field(
        description="day, week, month (UTC); null for the key's lifetime", examples=["month"]
    )
    rpm: int | None = Field(description="Requests per minute; null for no limit", examples=[60])
    tpm: int | None = Field(description="Tokens per minute; null for no limit", examples=[None])
    spend: str = Field(
        description="Credits spent in the current period: charges plus the holds of "
        "generations still running",
        examples=["3.5"],
    )


class ApiKeyCreated(ApiKeyPublic):
    """A key just made: the only answer that carries its secret."""

    key: str = Field(
        description="The secret. Shown once: store it now.",
        examples=["tg-4fQx9...(43 characters)"],
    )


# --- credits -------------------------------------------------------------------------------


class BalancePublic(BaseModel):
    """An account's credits: its balance, what running generations hold, what is left."""

    balance: str = Field(description="Credits on the account", examples=["100"])
    held: str = Field(description="Credits held by generations still running", examples=["0.2"])
    available: str = Field(description="balance - held", examples=["99.8"])


LedgerKind = Literal["grant", "topup", "adjustment", "hold", "charge", "release", "late_charge"]


class LedgerEntryPublic(BaseModel):
    """One entry of an account's ledger: every change to its balance or held credits."""

    id: int = Field(description="The entry's number, increasing with time", examples=[42])
    kind: LedgerKind = Field(
        description="grant, topup and adjustment change the balance; a generation's hold "
        "changes `held`, then its one charge (or release) settles it; a late_charge charges an "
        "answer whose settlement arrived after its hold had been released",
        examples=["topup"],
    )
    amount: str = Field(description="Change to the balance", examples=["100"])
    held_delta: str = Field(description="Change to the held credits", examples=["0"])
    balance_after: str = Field(description="The balance after this entry", examples=["200"])
    held_after: str = Field(description="The held credits after this entry", examples=["0"])
    generation_id: uuid.UUID | None = Field(
        description="The generation a hold, charge or release belongs to", examples=[None]
    )
    actor_id: uuid.UUID | None = Field(
        description="The admin who granted or adjusted", examples=[ACCOUNT_ID]
    )
    reason: str | None = Field(
        description="The admin's reason for a grant or adjustment", examples=["monthly top-up"]
    )
    created_at: datetime = Field(description="When it was written", examples=[CREATED_AT])


class LedgerEntryPage(Page[LedgerEntryPublic]):
    """Ledger entries, newest first."""


class CreditsCreate(Input):
    """An admin's top-up or deduction, with its reason (kept in the ledger)."""

    amount: Amount = Field(
        description="Positive tops up, negative deducts", examples=["100", "-2.5"]
    )
    reason: Text = Field(
        min_length=1,
        max_length=500,
        description="Why, for the ledger and the account's owner",
        examples=["monthly top-up"],
    )

    @field_validator("amount")
    @classmethod
    def _not_zero(cls, value: str) -> str:
        if parse_credits(value) == 0:
            raise ValueError("amount must not be zero")
        return value


class CreditsResult(BaseModel):
    """The ledger entry a top-up or deduction wrote, and the balance it left."""

    entry: LedgerEntryPublic = Field(description="The entry written")
    balance: BalancePublic = Field(description="The account's credits after it")


class UsageDayPublic(BaseModel):
    """One day's use of one model: generations, tokens and cost."""

    day: str = Field(description="UTC day", examples=["2026-11-27"])
    model: str = Field(description="The model asked for", examples=["gpt-4o-mini"])
    generations: int = Field(description="Generations settled that day", examples=[12])
    input_tokens: int = Field(description="Input tokens charged", examples=[3400])
    output_tokens: int = Field(description="Output tokens charged", examples=[5100])
    cost: str = Field(description="Credits", examples=["0.00357"])


class UsagePublic(BaseModel):
    """Usage by day and model."""

    data: list[UsageDayPublic] = Field(description="One row per day and model")


class AdminUsageDayPublic(UsageDayPublic):
    """One day's use of one model, with the tokens produced that no client paid for."""

    unbilled_input_tokens: int = Field(
        description="Input tokens the upstream may bill the operator for that the client was "
        "not charged (a client pays only for what it received)",
        examples=[120],
    )
    unbilled_output_tokens: int = Field(
        description="Output tokens likewise: produced by the upstream, never delivered",
        examples=[40],
    )


class AdminUsagePublic(BaseModel):
    """Usage of every account by day and model."""

    data: list[AdminUsageDayPublic] = Field(description="One row per day and model")


# --- models --------------------------------------------------------------------------------


class ModelCreate(Input):
    """A model of the catalogue: the name clients ask for, its provider and its prices."""

    name: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._:/-]+$",
        description="The name clients ask for",
        examples=["gpt-4o-mini"],
    )
    provider: Text = Field(
        min_length=1,
        max_length=100,
        description="The provider that serves it (an installed plugin's name)",
        examples=["openai"],
    )
    upstream_model: Text = Field(
        min_length=1,
        max_length=200,
        description="The name the provider knows",
        examples=["gpt-4o-mini"],
    )
    kind: ModelKind = Field(
        "chat",
        description="chat (served by /v1/chat/completions) or embedding (by /v1/embeddings; "
        "priced per million input tokens, its output price may be zero)",
    )
    enabled: Flag = Field(True, description="A disabled model is refused and not listed")
    free: Flag = Field(False, description="Only a free model may have a zero price")
    context_window: Count = Field(
        DEFAULT_CONTEXT_WINDOW,
        gt=0,
        le=100_000_000,
        description="Tokens of prompt and answer together the model takes",
        examples=[128000],
    )
    max_output_tokens: Count = Field(
        DEFAULT_MAX_OUTPUT_TOKENS,
        gt=0,
        le=10_000_000,
        description="The most max_tokens a request may ask for",
        examples=[16384],
    )
    default_max_tokens: Count | None = Field(
        None, gt=0, le=10_000_000, description="max_tokens when a request names none"
    )
    input_price: Price = Field(description="Credits per million input tokens", examples=["0.15"])
    output_price: Price = Field(description="Credits per million output tokens", examples=["0.6"])
    cached_input_price: Price | None = Field(
        None,
        description="Credits per million input tokens read from the prompt cache; "
        "without it they cost the input price",
        examples=["0.075"],
    )


class ModelUpdate(Input):
    """Only the fields you send change."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"input_price": "0.15", "output_price": "0.6"}]}
    )

    provider: Text | None = Field(
        None, min_length=1, max_length=100, description="The provider that serves it"
    )
    upstream_model: Text | None = Field(
        None, min_length=1, max_length=200, description="The name the provider knows"
    )
    kind: ModelKind | None = Field(None, description="chat or embedding")
    enabled: Flag | None = Field(None, description="A disabled model is refused and not listed")
    free: Flag | None = Field(None, description="Only a free model may have a zero price")
    context_window: Count | None = Field(
        None, gt=0, le=100_000_000, description="Tokens of prompt and answer together"
    )
    max_output_tokens: Count | None = Field(
        None, gt=0, le=10_000_000, description="The most max_tokens a request may ask for"
    )
    default_max_tokens: Count | None = Field(
        None, gt=0, le=10_000_000, description="max_tokens when a request names none"
    )
    input_price: Price | None = Field(
        None, description="Credits per million input tokens (a new price applies from now)"
    )
    output_price: Price | None = Field(
        None, description="Credits per million output tokens (a new price applies from now)"
    )
    fallbacks: list[Annotated[Text, Field(min_length=1, max_length=200)]] | None = Field(
        None,
        max_length=5,
        description="Models tried, in this order, when every deployment of this one fails; "
        "[] for none. The hold is taken at the dearest of the model and its fallbacks",
    )
    cached_input_price: Price | None = Field(
        None, description="Sent as null, cached input tokens cost the input price again"
    )


class ModelPublic(BaseModel):
    """A model of the catalogue as an admin sees it: its settings, prices and state."""

    name: str = Field(description="The name clients ask for", examples=["gpt-4o-mini"])
    provider: str = Field(description="The provider that serves it", examples=["openai"])
    upstream_model: str = Field(description="The name the provider knows", examples=["gpt-4o-mini"])
    kind: ModelKind = Field(description="chat or embedding: which route serves it")
    enabled: bool = Field(description="A disabled model is refused and not listed")
    free: bool = Field(description="Only a free model may have a zero price")
    available: bool = Field(description="Enabled, priced, and its provider is configured")
    context_window: int = Field(
        description="Tokens of prompt and answer together", examples=[128000]
    )
    max_output_tokens: int = Field(
        description="The most max_tokens a request may ask for", examples=[16384]
    )
    default_max_tokens: int = Field(
        description="max_tokens when a request names none", examples=[1024]
    )
    input_price: str | None = Field(
        description="Credits per million input tokens", examples=["0.15"]
    )
    output_price: str | None = Field(
        description="Credits per million output tokens", examples=["0.6"]
    )
    cached_input_price: str | None = Field(
        None,
        description="Credits per million cached input tokens (null: the input price)",
        examples=["0.075"],
    )
    price_effective_from: datetime | None = Field(
        description="Since when the current prices apply; null: never priced", examples=[CREATED_AT]
    )
    fallbacks: list[str] = Field(
        default_factory=list, description="Models tried when this one's deployments all fail"
    )


# --- chat completions (for the OpenAPI document; the gateway writes these bodies as bytes) ---


class ChatMessagePublic(BaseModel):
    """The assistant's answer."""

    role: Literal["assistant"] = Field("assistant", description="Always `assistant`")
    content: str = Field(description="The answer's text", examples=["Hello"])


class ChoicePublic(BaseModel):
    """One answer of a chat completion (Tollgate makes one)."""

    index: int = Field(description="Always 0: one choice", examples=[0])
    message: ChatMessagePublic = Field(description="The answer")
    finish_reason: str = Field(
        description="stop, length, or another reason the upstream gave", examples=["stop"]
    )
    logprobs: None = Field(None, description="Always null")


class PromptTokensDetails(BaseModel):
    """Parts of the prompt tokens."""

    cached_tokens: int = Field(
        description="Prompt tokens read from the upstream's cache (included in prompt_tokens)",
        examples=[0],
    )


class CompletionTokensDetails(BaseModel):
    """Parts of the completion tokens."""

    reasoning_tokens: int = Field(
        description="Tokens the model spent reasoning (included in completion_tokens)",
        examples=[0],
    )


class CompletionUsagePublic(BaseModel):
    """OpenAI's usage object, plus what the generation cost."""

    prompt_tokens: int = Field(description="Includes cached tokens", examples=[9])
    completion_tokens: int = Field(description="Includes reasoning tokens", examples=[1])
    total_tokens: int = Field(description="prompt_tokens + completion_tokens", examples=[10])
    prompt_tokens_details: PromptTokensDetails = Field(description="Cached prompt tokens")
    completion_tokens_details: CompletionTokensDetails = Field(description="Reasoning tokens")
    cost: str = Field(description="Credits charged for this generation", examples=["0.000195"])
    estimated: bool = Field(
        description="true when Tollgate counted the tokens because the upstream did not"
    )


class ChatCompletionPublic(BaseModel):
    """OpenAI's chat completion object, plus `usage.cost` and `generation_id`."""

    id: str = Field(
        description="The completion's id, from the generation's",
        examples=["chatcmpl-5f0c2d9e8b1a4e7fa3c619d2b4e6f801"],
    )
    object: Literal["chat.completion"] = Field(
        "chat.completion", description="Always `chat.completion`"
    )
    created: int = Field(description="Unix time", examples=[1764201600])
    model: str = Field(description="The model asked for", examples=["gpt-4o-mini"])
    choices: list[ChoicePublic] = Field(description="The answer, as one choice")
    usage: CompletionUsagePublic = Field(description="Tokens used and credits charged")
    generation_id: uuid.UUID = Field(
        description="Look it up at /v1/generations/{generation_id}",
        examples=["5f0c2d9e-8b1a-4e7f-a3c6-19d2b4e6f801"],
    )
