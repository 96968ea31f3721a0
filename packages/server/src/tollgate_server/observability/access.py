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

from tollgate_server.db.raw import raw_connection
from tollgate_server.errors import forbidden, unauthenticated
from tollgate_server.runtime import Runtime
from tollgate_server.security.tokens import API_KEY_PREFIX, InvalidToken
from tollgate_server.services.account_states import account_disabled
from tollgate_server.settings import MetricsAccess, parse_metrics_access

__all__ = ["MetricsAccess", "check_scraper", "parse_metrics_access"]

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
    # As `get_admin` answers: 401 for an account that is gone, 403 for a disabled one.
    if row is None:
        raise unauthenticated("this account no longer exists")
    if row["disabled"]:
        raise account_disabled()
    if row["role"] != "admin":
        raise forbidden("reading the metrics needs the admin role or the metrics token")
