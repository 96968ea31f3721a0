"""Settings read from the environment (`TOLLGATE_` prefix).

Vendor keys keep the names users already export (`OPENAI_API_KEY`, `GEMINI_API_KEY`, ...); the
provider plugins read those themselves from `provider_env()`, so adding a provider adds no field
here.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from tollgate_core import ConfigurationError

MIN_JWT_SECRET_BYTES = 32


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("tollgate", appauthor=False))


# The TOLLGATE_METRICS setting (see tollgate_server.observability.access), parsed here so
# that reading settings imports nothing of the server.
Mode = Literal["off", "open", "token", "listen"]


@dataclass(frozen=True, slots=True)
class MetricsAccess:
    mode: Mode
    host: str | None = None
    port: int | None = None

    @property
    def recording(self) -> bool:
        return self.mode != "off"

    @property
    def on_api_port(self) -> bool:
        return self.mode in ("open", "token")


def parse_metrics_access(value: str) -> MetricsAccess:
    """Read ``off``, ``open``, ``token`` or ``listen:HOST:PORT``; ValueError says what is
    expected."""
    text = value.strip()
    if text in ("off", "open", "token"):
        return MetricsAccess(mode=text)  # type: ignore[arg-type]
    if text.startswith("listen:"):
        host, sep, port = text.removeprefix("listen:").rpartition(":")
        host = host.strip("[]")
        if sep and host and port.isdigit() and 0 < int(port) < 65536:
            return MetricsAccess(mode="listen", host=host, port=int(port))
    raise ValueError(
        "expected off, open, token or listen:HOST:PORT (such as listen:127.0.0.1:9464)"
    )


class Settings(BaseSettings):
    """Every knob of the server. Each has a default fit for a single machine."""

    model_config = SettingsConfigDict(env_prefix="TOLLGATE_", extra="ignore")

    environment: Literal["development", "production", "test"] = "development"
    database_url: str | None = None
    """PostgreSQL URL (``postgresql+asyncpg://...``). Unset: an embedded server in `data_dir`."""
    data_dir: Path = Field(default_factory=default_data_dir)
    """Where the embedded database, the generated JWT secret and the settlement spool live."""
    db_pool_size: int = 20
    """The hot pool of each serving process; the SQLAlchemy engine gets a quarter of it (and as
    much overflow). `tollgate serve` lowers it when its workers would exceed the database's
    ``max_connections`` (see `tollgate_server.db.pool_budget`)."""

    jwt_secret: SecretStr | None = None
    """HMAC key for tokens; at least 32 bytes. Unset: generated once and kept in `data_dir`."""
    secret_key: SecretStr | None = None
    """Encrypts the upstream keys stored with deployments (AES-GCM, on its SHA-256). Unset:
    generated once and kept in `data_dir`. Losing it makes those keys unreadable: the server
    then refuses to start (see `tollgate_server.services.credentials`)."""
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwt_issuer: str = "tollgate"
    jwt_audience: str = "tollgate-api"
    access_token_ttl_seconds: int = Field(900, ge=30, le=86_400)
    refresh_token_ttl_seconds: int = Field(30 * 86_400, ge=300)
    jwt_leeway_seconds: int = Field(10, ge=0, le=30)

    admin_email: str | None = None
    admin_password: SecretStr | None = None

    signup_grant: str = "0"
    """Credits granted to every new account, as a decimal string."""
    strict_balance: bool = False
    """Admit only when the available balance covers the whole hold (no negative balances)."""

    login_max_failures: int = 5
    """Failed logins for one account within the lockout window before it is locked."""
    login_max_failures_per_address: int = 50
    """Failed logins from one client address (any account) before the address is locked:
    higher, since many people may share an address."""
    login_lockout_seconds: int = 300
    register_max_per_email: int = 5
    """Registrations of one email (whatever the answer) within `register_window_seconds`."""
    register_max_taken_per_address: int = 10
    """``email_taken`` answers to one client address within `register_window_seconds` before
    the address may not register for a while: each one tells that an email has an account."""
    register_window_seconds: int = 3600

    max_body_bytes: int = 1_048_576
    header_timeout: float = Field(10.0, gt=0, le=300)
    """Seconds a client has to send a request's line and headers (from connecting, or from the
    first byte of the next request) before the connection is answered 408 and closed."""
    max_page_size: int = 100
    max_concurrent_generations: int = 16
    """Generations one account may run at once."""
    requests_per_minute: int = 600
    """Generation requests per minute per account, counted across all its API keys and access
    tokens (one counter, inside the admission statement); 0 turns the limit off."""
    period_clock_offset_seconds: float = 0.0
    """Seconds added to the database's clock when computing an API key's spend period (day,
    week, month in UTC), and nothing else: for tests that stand on either side of a period
    boundary. Leave it at 0."""
    max_api_keys_per_account: int = 50
    """Live (unrevoked, unexpired) API keys one account may hold; creating one more is refused
    with 409 ``too_many_api_keys``."""

    upstream_connect_timeout: float = 10.0
    upstream_first_token_timeout: float = 60.0
    upstream_idle_timeout: float = 60.0
    max_generation_seconds: float = 600.0
    embedding_max_inputs: int = Field(2048, ge=1)
    """Inputs one ``/v1/embeddings`` request may carry (OpenAI's own limit): more is a 400
    ``too_many_inputs``."""
    embedding_max_tokens: int = Field(300_000, ge=1)
    """Input tokens one ``/v1/embeddings`` request may carry, counted on the safe side (the
    hold's estimate): more is a 400 ``too_many_tokens``."""
    keepalive_seconds: float = 15.0
    """Seconds of upstream silence after which a stream gets an SSE comment."""
    route_max_attempts: int = Field(3, ge=1, le=10)
    """Upstream calls one client request may make, each to another deployment (routing)."""
    route_deadline_seconds: float = Field(30.0, gt=0)
    """Overall time for a request's attempts to reach a first token; no retry starts after it."""
    route_backoff_seconds: float = Field(0.05, ge=0)
    """Base of the jittered back-off between two attempts (doubled each attempt)."""
    cooldown_after_failures: int = Field(3, ge=1)
    """Consecutive failures that put a deployment in cooldown."""
    cooldown_seconds: float = Field(5.0, gt=0)
    """First cooldown; each repeat doubles it (at most five minutes). It ends with one probe."""
    allowance_interval_seconds: float = Field(60.0, gt=0)
    """How often each process grants the periodic allowances owed (each period once, whichever
    process is first)."""
    webhook_deliver: bool = True
    """Whether this process delivers webhooks (every process may: they never send one event at
    once)."""
    webhook_poll_seconds: float = Field(1.0, gt=0)
    """How often each process looks for webhook events due."""
    webhook_backoff_seconds: float = Field(10.0, gt=0)
    """The wait after a failed delivery, doubled after each further failure (at most an hour)."""
    webhook_retry_hours: float = Field(26.0, gt=0)
    """How long a failing delivery is retried before it is given up (more than a day)."""
    webhook_timeout_seconds: float = Field(10.0, gt=0)
    sweep_interval_seconds: float = 30.0
    heartbeat_seconds: float = 5.0
    instance_stale_seconds: float = 30.0
    """A server process whose heartbeat is older than this is taken for dead, and the holds of
    its generations are released."""
    shutdown_grace_seconds: float = 20.0
    embedded_restart_seconds: float = Field(60.0, gt=0)
    """How long `tollgate serve` keeps restarting an embedded PostgreSQL that died before it
    gives up, shuts down (spooling what it could not settle) and exits with status 1."""

    # Observability (issue 19): see tollgate_server.observability.
    metrics: str = "token"
    """Who may read GET /metrics: ``off`` (nothing recorded), ``open``, ``token`` (the metrics
    token, or an admin's access token or API key) or ``listen:HOST:PORT`` (a listener of its
    own)."""
    metrics_token: SecretStr | None = None
    """A bearer token for Prometheus when ``metrics=token``, so no admin credential is needed."""
    log_format: Literal["text", "json"] = "text"
    """``json``: one JSON object a line (applied by `tollgate serve`)."""

    @field_validator("database_url")
    @classmethod
    def _asyncpg_url(cls, value: str | None) -> str | None:
        """Every connection goes through asyncpg: a plain ``postgresql://`` URL means it."""
        value = (value or "").strip()
        if not value:
            return None  # unset: the embedded server
        scheme, sep, rest = value.partition("://")
        if not sep:
            raise ValueError("expected a URL such as postgresql+asyncpg://user@host/database")
        scheme = scheme.lower()
        if scheme in ("postgresql", "postgres"):
            return f"postgresql+asyncpg://{rest}"
        if scheme != "postgresql+asyncpg":
            raise ValueError(f"the driver must be asyncpg (postgresql+asyncpg://), not {scheme}")
        return f"{scheme}://{rest}"

    @field_validator("metrics")
    @classmethod
    def _metrics_access(cls, value: str) -> str:
        parse_metrics_access(value)  # raises with what is expected
        return value.strip()

    @field_validator("jwt_secret")
    @classmethod
    def _secret_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < MIN_JWT_SECRET_BYTES:
            raise ValueError(
                f"TOLLGATE_JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes long"
            )
        return value

    @field_validator("secret_key")
    @classmethod
    def _key_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # Hashed into the AES key: a short one would be guessed, whatever the hash.
        if value is not None and len(value.get_secret_value().encode()) < MIN_JWT_SECRET_BYTES:
            raise ValueError(
                f"TOLLGATE_SECRET_KEY must be at least {MIN_JWT_SECRET_BYTES} bytes long"
            )
        return value

    def provider_env(self) -> dict[str, str]:
        """The environment the provider plugins read their upstreams and keys from."""
        return dict(os.environ)

    def resolved_secret_key(self) -> str:
        """The configured credentials key, or the one generated and kept in the data directory."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        return self._generated_secret("secret-key")

    def resolved_jwt_secret(self) -> str:
        """The configured secret, or the one generated and kept in the data directory."""
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        return self._generated_secret("jwt-secret")

    def _generated_secret(self, name: str) -> str:
        path = self.data_dir / name
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        # Created with 0600 so other users of the machine cannot mint tokens.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secret)
        return secret


def load_settings() -> Settings:
    """Read the settings, turning a validation failure into a one-line `ConfigurationError`."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise ConfigurationError(f"TOLLGATE_{where.upper()}: {message}") from None
