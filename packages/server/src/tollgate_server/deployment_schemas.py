"""Input and output shapes of `/v1/admin/deployments` (routing)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from tollgate_server.schemas import Count, Flag, Input, Text


def _http_url(value: str) -> str:
    # Only http(s) to a named host: no file:, no scheme-less value the HTTP client would
    # choke on in the middle of a request.
    parsed = urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return value


BaseUrl = Annotated[Text, AfterValidator(_http_url)]

_EXAMPLE: dict[str, Any] = {
    "model": "my-model",
    "provider": "openai",
    "base_url": "https://api.openai.com/v1",
    "api_key": "<upstream key>",
    "upstream_model": "gpt-4o-mini",
    "weight": 1,
    "priority": 0,
}


WEIGHT = "Its share of the traffic among the deployments of its priority (0: none)"
REQUESTS_PER_MINUTE = "Calls per minute it is sent, in each server process; null: no limit"
TOKENS_PER_MINUTE = (
    "Tokens per minute it is sent (prompt estimate plus max_tokens), in each server process; "
    "null: no limit"
)
FIRST_TOKEN = "Seconds to wait for its first token; null: TOLLGATE_UPSTREAM_FIRST_TOKEN_TIMEOUT"


class DeploymentCreate(Input):
    """One upstream serving a model. `api_key` is stored encrypted and never shown again."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    model: Text = Field(min_length=1, max_length=200, description="The catalogue model served")
    provider: Text = Field(min_length=1, max_length=100, description="The provider kind")
    base_url: BaseUrl | None = Field(
        None, min_length=1, max_length=2000, description="Unset: the provider's configured URL"
    )
    api_key: Text | None = Field(None, min_length=1, max_length=4000, description="Write-only")
    upstream_model: Text | None = Field(
        None, min_length=1, max_length=200, description="Unset: the model's upstream name"
    )
    weight: Count = Field(1, ge=0, le=1_000_000, description=WEIGHT)
    priority: Count = Field(0, ge=-1000, le=1000, description="Higher is tried first")
    requests_per_minute: Count | None = Field(
        None, gt=0, le=100_000_000, description=REQUESTS_PER_MINUTE
    )
    tokens_per_minute: Count | None = Field(
        None, gt=0, le=2_000_000_000, description=TOKENS_PER_MINUTE
    )
    first_token_timeout: float | None = Field(None, gt=0, le=3600, description=FIRST_TOKEN)
    enabled: Flag = Field(True, description="A disabled deployment takes no traffic")


class DeploymentUpdate(Input):
    """Only the fields you send change; `null` clears an optional limit."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"weight": 3, "enabled": True}]})

    base_url: BaseUrl | None = Field(
        None, min_length=1, max_length=2000, description="null: the provider's configured URL"
    )
    api_key: Text | None = Field(None, min_length=1, max_length=4000, description="Write-only")
    upstream_model: Text | None = Field(
        None, min_length=1, max_length=200, description="null: the model's upstream name"
    )
    weight: Count | None = Field(None, ge=0, le=1_000_000, description=WEIGHT)
    priority: Count | None = Field(None, ge=-1000, le=1000, description="Higher is tried first")
    requests_per_minute: Count | None = Field(
        None, gt=0, le=100_000_000, description=REQUESTS_PER_MINUTE
    )
    tokens_per_minute: Count | None = Field(
        None, gt=0, le=2_000_000_000, description=TOKENS_PER_MINUTE
    )
    first_token_timeout: float | None = Field(None, gt=0, le=3600, description=FIRST_TOKEN)
    enabled: Flag | None = Field(
        None, description="true enables it again (also after the gateway disabled it)"
    )


class DeploymentPublic(BaseModel):
    """A deployment, its key shown by its last characters, and its health in this process."""

    id: int = Field(description="The deployment's number", examples=[1])
    model: str = Field(description="The catalogue model served", examples=["gpt-4o-mini"])
    provider: str = Field(description="The provider kind", examples=["openai"])
    base_url: str | None = Field(
        description="null: the provider's configured URL", examples=["https://api.openai.com/v1"]
    )
    api_key: str | None = Field(
        description="The key's last four characters, or null when none is stored",
        examples=["…wxyz"],
    )
    upstream_model: str | None = Field(
        description="null: the model's upstream name", examples=["gpt-4o-mini"]
    )
    weight: int = Field(description=WEIGHT)
    priority: int = Field(description="Higher is tried first")
    requests_per_minute: int | None = Field(description=REQUESTS_PER_MINUTE)
    tokens_per_minute: int | None = Field(description=TOKENS_PER_MINUTE)
    first_token_timeout: float | None = Field(description=FIRST_TOKEN)
    enabled: bool = Field(description="A disabled deployment takes no traffic")
    disabled_reason: str | None = Field(
        description="Why the gateway disabled it (an upstream refused its key)",
        examples=[None],
    )
    created_at: datetime = Field(description="When it was added")
    in_flight: int = Field(0, description="Calls running now, in this server process")
    error_rate: float | None = Field(
        None, description="Failed share of the last 100 calls (this process); null: no calls"
    )
    ttft_ms: int | None = Field(None, description="Median time to first token of recent calls")
    cooldown_seconds: float | None = Field(
        None, description="Seconds left of its cooldown (this process); null: not cooling down"
    )
