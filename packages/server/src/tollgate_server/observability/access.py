"""Who may read `GET /metrics`: the ``TOLLGATE_METRICS`` setting.

* ``off``: nothing is recorded and there is no endpoint.
* ``open``: anyone who reaches the port may scrape (a private network, a sidecar).
* ``token``: a bearer token: ``TOLLGATE_METRICS_TOKEN``, or an access token or API key of an
  account that is an admin now.
* ``listen:HOST:PORT``: a second listener of its own (open; bind it to a private address), and
  no endpoint on the API's port.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Literal

from tollgate_server.db.raw import raw_connection
from tollgate_server.errors import forbidden, unauthenticated
from tollgate_server.runtime import Runtime
from tollgate_server.security.tokens import API_KEY_PREFIX, InvalidToken

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


ADMIN_SQL = "SELECT role, disabled FROM accounts WHERE id = $1"


async def check_scraper(runtime: Runtime, token: str | None) -> None:
    """Raise the API's 401 or 403 unless `token` may read the metrics."""
    if not token:
        raise unauthenticated()
    dedicated = runtime.settings.metrics_token
    if dedicated is not None and hmac.compare_digest(
        token.encode(), dedicated.get_secret_value().encode()
    ):
        return
    if token.startswith(API_KEY_PREFIX):
        identity = await runtime.keys.identify(token)
        if identity is None:
            raise unauthenticated("invalid, revoked or expired API key")
        account_id = identity.account_id
    else:
        try:
            account_id = runtime.access_tokens.verify(token).subject
        except InvalidToken:
            raise unauthenticated("invalid or expired access token") from None
    async with raw_connection(runtime.hot_pool) as conn:
        row = await conn.fetchrow(ADMIN_SQL, account_id)
    if row is None or row["disabled"]:
        raise unauthenticated("this account no longer exists or is disabled")
    if row["role"] != "admin":
        raise forbidden("reading the metrics needs the admin role or the metrics token")
