"""`POST /v1/chat/completions` without the framework's routing and dependency solving.

The generation endpoint is the one that must add almost nothing to a request (issue 9), and
FastAPI's path to it (route matching over every route, dependency solving, exception and
exit-stack middleware) cost about a fifth of the gateway's CPU per request. This middleware sits
just inside `RequestContextMiddleware` (request id, body limit, access log) and serves the
well-formed request itself, with the same pieces the FastAPI route uses: `caller_from_token`,
`ChatCompletionCreate`, `plan_generation` and `api.generation_response.GenerationResponse`.

Anything else is handed to the FastAPI route with the body it has read, so that every refusal
of a malformed request (no or bad credentials' scheme, a body that is not JSON, a field that does
not validate, a body over the limit) is answered by the one documented path. The route stays in
the OpenAPI document and in Swagger UI, and answers exactly the same requests.
"""

from __future__ import annotations

import orjson
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import ValidationError
from starlette.datastructures import State
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tollgate_core import TollgateError

from tollgate_server.api.deps import caller_from_token
from tollgate_server.api.errors import error_response
from tollgate_server.api.routes.chat import caller_generation
from tollgate_server.openai_format import ChatCompletionCreate
from tollgate_server.runtime import Runtime

PATH = "/v1/chat/completions"


class ChatCompletionsFastPath:
    def __init__(self, app: ASGIApp, *, state: State) -> None:
        self.app = app
        self.state = state
        """The application's state: `runtime` is set there when the lifespan starts."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or _path(scope) != PATH:
            await self.app(scope, receive, send)
            return
        body, stop = await _read_body(receive)
        if stop is None:
            runtime: Runtime = self.state.runtime
            response: Response | None
            try:
                response = await _generation(runtime, scope, body)
            except TollgateError as exc:
                # A refusal before admission (no such model, a parameter the model cannot
                # carry, ...): answered by the mapping the routes' handlers use.
                request_id = str(scope.get("state", {}).get("request_id", ""))
                response = error_response(exc, request_id)
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, _replay(body, stop, receive), send)


def _path(scope: Scope) -> str:
    """The path within the application (servers put a ``--root-path`` in front of it)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


async def _generation(runtime: Runtime, scope: Scope, body: bytes) -> Response | None:
    """The generation's response, or None when the request is for the framework to refuse."""
    token, content_type = _headers(scope)
    if token is None or not _is_json(content_type):
        return None
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    # Authentication before validation, in the route's order: a stranger learns nothing from
    # how their body would have been judged.
    caller = await caller_from_token(runtime, token)
    try:
        request = ChatCompletionCreate.model_validate(payload)
    except ValidationError:
        return None
    return await caller_generation(runtime, caller, request)


def _headers(scope: Scope) -> tuple[str | None, str | None]:
    """The bearer token (as `HTTPBearer` reads it) and the content type.

    Like Starlette's `Headers.get`, the first of a repeated header counts: a second
    Authorization must not authenticate a request the route would refuse (or bill another
    account than the route would).
    """
    authorization = content_type = None
    for name, value in scope["headers"]:
        if name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
        elif name == b"content-type" and content_type is None:
            content_type = value.decode("latin-1")
    if authorization is None:
        return None, content_type
    scheme, credentials = get_authorization_scheme_param(authorization)
    token = credentials if scheme.lower() == "bearer" and credentials else None
    return token, content_type


def _is_json(content_type: str | None) -> bool:
    # Only a declared JSON body: FastAPI's strict_content_type (on by default, a CSRF guard)
    # refuses a body without a content type, and the route gives that refusal.
    if content_type is None:
        return False
    return content_type.partition(";")[0].strip().lower() == "application/json"


async def _read_body(receive: Receive) -> tuple[bytes, Message | Exception | None]:
    """The whole body, or what was read of it and what stopped the reading: a disconnect
    message, or the body limit's 413 raised by `RequestContextMiddleware`'s receive."""
    parts: list[bytes] = []
    try:
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(parts), message
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(parts), None
    except Exception as exc:
        return b"".join(parts), exc


def _replay(body: bytes, stop: Message | Exception | None, receive: Receive) -> Receive:
    """A `receive` that gives the framework what was read here (the body, or what stopped the
    reading), then the rest of the connection's messages."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if not pending:
            return await receive()
        pending = False
        if isinstance(stop, Exception):
            raise stop
        return stop or {"type": "http.request", "body": body, "more_body": False}

    return replay
