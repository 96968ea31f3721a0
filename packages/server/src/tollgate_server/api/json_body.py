"""JSON request bodies read by a strict parser: text that is not Unicode is refused.

JSON's grammar lets a string hold a lone surrogate (``"\\ud800"``), which the standard library's
parser turns into a Python `str` that no UTF-8 encoder accepts: PostgreSQL, orjson, the token
estimate and the upstream's body would each fail on it later, as a 500. orjson refuses such a
string while parsing, so every field of every body is refused at one place, with the 422 of any
other malformed body. The chat fast path parses with orjson already and hands such a body here.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            # orjson's JSONDecodeError is json.JSONDecodeError: FastAPI answers it as an invalid
            # body (422 validation_error, type json_invalid).
            self._json = orjson.loads(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """Every route of the API: its body is parsed by `StrictJsonRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict_handler
