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

    data: list[T]
    next_cursor: str | None = Field(None, description="null on the last page", examples=["42"])


# --- accounts and auth ---------------------------------------------------------------------


class AccountCreate(Input):
    email: Email = Field(examples=["ada@example.com"])
    password: Password


class AccountPublic(BaseModel):
    id: uuid.UUID = Field(examples=[ACCOUNT_ID])
    email: str = Field(examples=["ada@example.com"])
    role: Role = Field(description="client, or admin", examples=["client"])
    disabled: bool = Field(description="A disabled account cannot log in or generate")
    created_at: datetime = Field(examples=[CREATED_AT])
    balance: str = Field(description="Credits, decimal string", examples=["100"])


class AccountPage(Page[AccountPublic]):
    """Accounts ordered by email."""


class AccountUpdate(Input):
    model_config = ConfigDict(json_schema_extra={"examples": [{"role": "admin"}]})

    role: Role | None = Field(None, description="Leave out to keep the role")
    disabled: Flag | None = Field(
        None, description="true disables the account and revokes its refresh tokens"
    )


class LoginRequest(Input):
    email: Email = Field(examples=["ada@example.com"])
    password: Annotated[str, Field(min_length=1, max_length=1024, examples=["correct horse 42"])]


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
        examples=["correct horse 42"],
        json_schema_extra={"format": "password"},
    )
    scope: str = Field("", max_length=1000, description="Ignored: Tollgate has no scopes")
    client_id: str = Field("", max_length=200, description="Ignored")
    client_secret: str = Field(
        "", max_length=200, description="Ignored", json_schema_extra={"format": "password"}
    )


class TokenPair(BaseModel):
    access_token: str = Field(
        description="Send it as `Authorization: Bearer <access_token>`",
        examples=["eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOi...c2lnbmF0dXJl"],
    )
    refresh_token: str = Field(
        description="Single use: exchange it at /v1/auth/refresh for a new pair",
        examples=["eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0eXAiOi...cmVmcmVzaA"],
    )
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires", examples=[900])


class RefreshRequest(Input):
    refresh_token: str = Field(
        min_length=1,
        max_length=4096,
        examples=["eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0eXAiOi...cmVmcmVzaA"],
    )


# --- API keys ------------------------------------------------------------------------------


class ApiKeyCreate(Input):
    name: Text = Field(min_length=1, max_length=200, examples=["my script"])
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
    spend_limit: SpendLimit | None = None
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

    spend_limit: SpendLimit | None = None
    spend_period: SpendPeriod | None = None
    rpm: PerMinute | None = None
    tpm: PerMinute | None = None


class AllowanceSet(Input):
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
    period_start: datetime
    amount: str = Field(description="Credits granted for that period (0: already at the floor)")
    ledger_entry_id: int | None


class AllowancePublic(BaseModel):
    account_id: uuid.UUID
    amount: str = Field(examples=["100"])
    period: SpendPeriod
    mode: Literal["grant", "floor"]
    starts_at: datetime = Field(description="The first period granted is the one this is in")
    updated_at: datetime
    grants: list[AllowanceGrantPublic] = Field(description="The last twelve periods granted")


def _webhook_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", value):
        raise ValueError("must be an http:// or https:// URL")
    return value


class WebhookEndpointSet(Input):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"url": "https://example.com/tollgate", "secret": "a long random secret"}]
        }
    )

    url: Annotated[Text, AfterValidator(_webhook_url), Field(max_length=2000)]
    secret: Text = Field(
        min_length=16,
        max_length=200,
        description="Signs every body (HMAC-SHA256); stored to sign, never shown back",
    )


class WebhookEndpointPublic(BaseModel):
    url: str
    secret_set: bool = Field(description="Always true: the secret is never shown back")
    updated_at: datetime


class BalanceAlertSet(Input):
    threshold: Price = Field(
        description="A `balance.low` event is sent when the available balance falls below this "
        "(once, until a top-up lifts it back)"
    )


class BalanceAlertPublic(BaseModel):
    account_id: uuid.UUID
    threshold: str
    alerted: bool = Field(description="Below the threshold, alert sent, waiting for a top-up")


class WebhookDeliveryPublic(BaseModel):
    id: uuid.UUID = Field(description="The event's id, in its body: receivers drop repeats by it")
    type: Literal["balance.low", "key.budget_80", "key.budget_100"]
    account_id: uuid.UUID | None
    data: dict[str, Any]
    created_at: datetime
    status: Literal["pending", "delivered", "given_up"]
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None
    gave_up_at: datetime | None
    last_status: int | None = Field(description="The receiver's last HTTP status, if it answered")
    last_error: str | None


class WebhookDeliveryPage(BaseModel):
    data: list[WebhookDeliveryPublic]


class ApiKeyPublic(BaseModel):
    id: uuid.UUID = Field(examples=["0b5e2f4c-7d1a-4c3e-9f60-2a8d5e7b1c94"])
    name: str = Field(examples=["my script"])
    prefix: str = Field(
        description="The first characters of the key, to recognise it", examples=["tg-4fQx9"]
    )
    models: list[str] | None = Field(
        description="The models the key may use; null for every model", examples=[["gpt-4o-mini"]]
    )
    expires_at: datetime | None = Field(examples=["2030-01-01T00:00:00Z"])
    revoked_at: datetime | None = Field(examples=[None])
    last_used_at: datetime | None = Field(examples=[None])
    created_at: datetime = Field(examples=[CREATED_AT])
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
    key: str = Field(
        description="The secret. Shown once: store it now.",
        examples=["tg-4fQx9...(43 characters)"],
    )


# --- credits -------------------------------------------------------------------------------


class BalancePublic(BaseModel):
    balance: str = Field(description="Credits on the account", examples=["100"])
    held: str = Field(description="Credits held by generations still running", examples=["0.2"])
    available: str = Field(description="balance - held", examples=["99.8"])


LedgerKind = Literal["grant", "topup", "adjustment", "hold", "charge", "release", "late_charge"]


class LedgerEntryPublic(BaseModel):
    id: int = Field(examples=[42])
    kind: LedgerKind = Field(
        description="grant, topup and adjustment change the balance; a generation's hold "
        "changes `held`, then its one charge (or release) settles it; a late_charge charges an "
        "answer whose settlement arrived after its hold had been released",
        examples=["topup"],
    )
    amount: str = Field(description="Change to the balance", examples=["100"])
    held_delta: str = Field(description="Change to the held credits", examples=["0"])
    balance_after: str = Field(examples=["200"])
    held_after: str = Field(examples=["0"])
    generation_id: uuid.UUID | None = Field(
        description="The generation a hold, charge or release belongs to", examples=[None]
    )
    actor_id: uuid.UUID | None = Field(
        description="The admin who granted or adjusted", examples=[ACCOUNT_ID]
    )
    reason: str | None = Field(examples=["monthly top-up"])
    created_at: datetime = Field(examples=[CREATED_AT])


class LedgerEntryPage(Page[LedgerEntryPublic]):
    """Ledger entries, newest first."""


class CreditsCreate(Input):
    amount: Amount = Field(
        description="Positive tops up, negative deducts", examples=["100", "-2.5"]
    )
    reason: Text = Field(min_length=1, max_length=500, examples=["monthly top-up"])

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
    day: str = Field(description="UTC day", examples=["2026-11-27"])
    model: str = Field(examples=["gpt-4o-mini"])
    generations: int = Field(examples=[12])
    input_tokens: int = Field(examples=[3400])
    output_tokens: int = Field(examples=[5100])
    cost: str = Field(description="Credits", examples=["0.00357"])


class UsagePublic(BaseModel):
    data: list[UsageDayPublic]


class AdminUsageDayPublic(UsageDayPublic):
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
    data: list[AdminUsageDayPublic]


# --- models --------------------------------------------------------------------------------


class ModelCreate(Input):
    name: str = Field(
        min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:/-]+$", examples=["gpt-4o-mini"]
    )
    provider: Text = Field(min_length=1, max_length=100, examples=["openai"])
    upstream_model: Text = Field(min_length=1, max_length=200, examples=["gpt-4o-mini"])
    kind: ModelKind = Field(
        "chat",
        description="chat (served by /v1/chat/completions) or embedding (by /v1/embeddings; "
        "priced per million input tokens, its output price may be zero)",
    )
    enabled: Flag = True
    free: Flag = Field(False, description="Only a free model may have a zero price")
    context_window: Count = Field(DEFAULT_CONTEXT_WINDOW, gt=0, le=100_000_000, examples=[128000])
    max_output_tokens: Count = Field(
        DEFAULT_MAX_OUTPUT_TOKENS, gt=0, le=10_000_000, examples=[16384]
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

    provider: Text | None = Field(None, min_length=1, max_length=100)
    upstream_model: Text | None = Field(None, min_length=1, max_length=200)
    kind: ModelKind | None = Field(None, description="chat or embedding")
    enabled: Flag | None = None
    free: Flag | None = None
    context_window: Count | None = Field(None, gt=0, le=100_000_000)
    max_output_tokens: Count | None = Field(None, gt=0, le=10_000_000)
    default_max_tokens: Count | None = Field(None, gt=0, le=10_000_000)
    input_price: Price | None = None
    output_price: Price | None = None
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
    name: str = Field(description="The name clients ask for", examples=["gpt-4o-mini"])
    provider: str = Field(examples=["openai"])
    upstream_model: str = Field(description="The name the provider knows", examples=["gpt-4o-mini"])
    kind: ModelKind = Field(description="chat or embedding: which route serves it")
    enabled: bool
    free: bool
    available: bool = Field(description="Enabled, priced, and its provider is configured")
    context_window: int = Field(examples=[128000])
    max_output_tokens: int = Field(examples=[16384])
    default_max_tokens: int = Field(examples=[1024])
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
    price_effective_from: datetime | None = Field(examples=[CREATED_AT])
    fallbacks: list[str] = Field(
        default_factory=list, description="Models tried when this one's deployments all fail"
    )


# --- chat completions (for the OpenAPI document; the gateway writes these bodies as bytes) ---


class ChatMessagePublic(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str = Field(examples=["Hello"])


class ChoicePublic(BaseModel):
    index: int = Field(examples=[0])
    message: ChatMessagePublic
    finish_reason: str = Field(
        description="stop, length, or another reason the upstream gave", examples=["stop"]
    )
    logprobs: None = None


class PromptTokensDetails(BaseModel):
    cached_tokens: int = Field(examples=[0])


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int = Field(examples=[0])


class CompletionUsagePublic(BaseModel):
    prompt_tokens: int = Field(description="Includes cached tokens", examples=[9])
    completion_tokens: int = Field(description="Includes reasoning tokens", examples=[1])
    total_tokens: int = Field(examples=[10])
    prompt_tokens_details: PromptTokensDetails
    completion_tokens_details: CompletionTokensDetails
    cost: str = Field(description="Credits charged for this generation", examples=["0.000195"])
    estimated: bool = Field(
        description="true when Tollgate counted the tokens because the upstream did not"
    )


class ChatCompletionPublic(BaseModel):
    """OpenAI's chat completion object, plus `usage.cost` and `generation_id`."""

    id: str = Field(examples=["chatcmpl-5f0c2d9e8b1a4e7fa3c619d2b4e6f801"])
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(description="Unix time", examples=[1764201600])
    model: str = Field(examples=["gpt-4o-mini"])
    choices: list[ChoicePublic]
    usage: CompletionUsagePublic
    generation_id: uuid.UUID = Field(
        description="Look it up at /v1/generations/{generation_id}",
        examples=["5f0c2d9e-8b1a-4e7f-a3c6-19d2b4e6f801"],
    )
