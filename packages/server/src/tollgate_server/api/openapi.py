"""The OpenAPI document, Swagger UI and ReDoc, served from Tollgate itself (no CDN: they work
offline).

FastAPI builds the document from the routes; `finish_document` then adds what dependencies
cannot say:

* which credentials each operation takes. `CallerDep` and `UserDep` read the same
  ``Authorization: Bearer`` header, so FastAPI declares the same schemes for both; here an
  operation that depends on `get_caller` also lists the `apiKey` scheme, the others only the
  access-token schemes (`password`, the login flow of Swagger's Authorize dialog, and `bearer`);
* the tags' descriptions and order, readable operation ids, and the `X-Request-Id` header that
  every response carries;
* no 422 on operations that take no input (`errors()` adds it to every route).
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from fastapi.staticfiles import StaticFiles
from starlette.routing import BaseRoute

from tollgate_server.api.anthropic_errors import AnthropicRoute
from tollgate_server.api.deps import get_caller, get_messages_caller

ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSET_PREFIX = "/docs-assets"
TOKEN_URL = "/v1/auth/token"

TAGS = [
    {
        "name": "generation",
        "description": "OpenAI-compatible chat completions and models, and the record of each "
        "generation. These take an access token or an API key, so the OpenAI SDKs work with "
        "`base_url` set to this server's `/v1`.",
    },
    {
        "name": "auth",
        "description": "Accounts and access tokens. To try the API here: register, then "
        "**Authorize** with your email as username and your password (leave client_id and "
        "client_secret empty).",
    },
    {"name": "billing", "description": "Your credits: balance, ledger and usage."},
    {
        "name": "keys",
        "description": "API keys (`tg-...`) for programs. Managed with an access token: a key "
        "cannot manage keys.",
    },
    {"name": "admin", "description": "Accounts, credits and the model catalogue. Admins only."},
    {"name": "health", "description": "Liveness and readiness probes for orchestrators."},
]

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "password": {
        "type": "oauth2",
        "description": "Log in with your email (as username) and password; Swagger UI keeps "
        "the access token. Leave client_id and client_secret empty.",
        "flows": {"password": {"tokenUrl": TOKEN_URL, "scopes": {}}},
    },
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An access token: the `access_token` that `POST /v1/auth/login` "
        "answers. Paste the token alone.",
    },
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "tg-...",
        "description": "An API key (`tg-...`) from `POST /v1/keys`. Paste the key alone; it is "
        "sent as `Authorization: Bearer tg-...`. Accepted only by /v1/models, "
        "/v1/chat/completions, /v1/messages, /v1/embeddings, /v1/balance and "
        "/v1/generations.",
    },
    "xApiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "An API key (`tg-...`) in the `x-api-key` header, as Anthropic's SDKs "
        "and Claude Code send it. Accepted only by /v1/messages.",
    },
}
ACCESS_TOKEN: list[dict[str, list[str]]] = [{"password": []}, {"bearer": []}]
ACCESS_TOKEN_OR_API_KEY: list[dict[str, list[str]]] = [*ACCESS_TOKEN, {"apiKey": []}]
ANY_CREDENTIAL: list[dict[str, list[str]]] = [*ACCESS_TOKEN_OR_API_KEY, {"xApiKey": []}]

REQUEST_ID = {
    "description": "The request's id (or the one you sent): quote it when reporting a problem",
    "required": True,
    "schema": {"type": "string"},
}


def accepts_api_key(dependant: Dependant | None, caller: object = get_caller) -> bool:
    """Whether the route authenticates its caller with `caller` (by default `get_caller`:
    access token or API key)."""
    if dependant is None:
        return False
    return any(dep.call is caller or accepts_api_key(dep, caller) for dep in dependant.dependencies)


def _takes_input(operation: dict[str, Any]) -> bool:
    return bool(operation.get("parameters")) or "requestBody" in operation


def _documented_routes(routes: Sequence[BaseRoute]) -> list[RouteContext]:
    """The API routes in the document, routers included (FastAPI nests included routers)."""
    return [
        context
        for context in iter_route_contexts(routes)
        if isinstance(context.original_route, APIRoute) and context.include_in_schema
    ]


def _operation_ids(routes: list[RouteContext]) -> list[str]:
    """Each route function's name, prefixed with its first tag when two routes share it."""
    names = [str(route.name) for route in routes]
    counts = Counter(names)
    return [
        f"{route.tags[0]}_{name}" if counts[name] > 1 and route.tags else name
        for route, name in zip(routes, names, strict=True)
    ]


def finish_document(document: dict[str, Any], routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """Complete FastAPI's document in place (see the module's docstring) and return it."""
    documented = _documented_routes(routes)
    for route, operation_id in zip(documented, _operation_ids(documented), strict=True):
        for method in sorted(route.methods or ()):
            operation = document["paths"][route.path_format][method.lower()]
            operation["operationId"] = operation_id
            if operation.get("security"):
                api_key = accepts_api_key(route.dependant)
                schemes = ACCESS_TOKEN_OR_API_KEY if api_key else ACCESS_TOKEN
                if accepts_api_key(route.dependant, get_messages_caller):
                    schemes = ANY_CREDENTIAL
                operation["security"] = copy.deepcopy(schemes)
            if not _takes_input(operation) or isinstance(route.original_route, AnthropicRoute):
                # Anthropic's API answers invalid input with a 400, never a 422.
                operation["responses"].pop("422", None)
            for response in operation["responses"].values():
                # A new dict: FastAPI's copy of `responses=` is shallow, and routes share theirs.
                response["headers"] = {**response.get("headers", {}), "X-Request-Id": REQUEST_ID}
    components = document.setdefault("components", {})
    schemas = components.get("schemas", {})
    if "HTTPValidationError" in schemas and '/HTTPValidationError"' not in json.dumps(
        document["paths"]
    ):
        # FastAPI's own 422 schema, left behind by the routes that answer invalid input with 400.
        schemas.pop("HTTPValidationError")
        schemas.pop("ValidationError", None)
    if any(op.get("security") for ops in document["paths"].values() for op in ops.values()):
        components["securitySchemes"] = copy.deepcopy(SECURITY_SCHEMES)
    document["tags"] = copy.deepcopy(TAGS)
    return document


def install_docs(app: FastAPI) -> None:
    """Serve /docs and /redoc from packaged assets, and finish the OpenAPI document.

    Call it after every router is included: the document is built once, on first request.
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = finish_document(FastAPI.openapi(app), app.routes)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount(ASSET_PREFIX, StaticFiles(directory=ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="Tollgate - Swagger UI",
            swagger_js_url=f"{ASSET_PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSET_PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{ASSET_PREFIX}/favicon.png",
            swagger_ui_parameters={
                "persistAuthorization": True,
                "displayRequestDuration": True,
            },
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="Tollgate - ReDoc",
            redoc_js_url=f"{ASSET_PREFIX}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSET_PREFIX}/favicon.png",
            with_google_fonts=False,
        )
