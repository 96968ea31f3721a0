"""`GET /metrics`: Prometheus' text format (see `tollgate_server.observability`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.security import HTTPAuthorizationCredentials
from starlette.responses import Response

from tollgate_server.api.deps import RuntimeDep, bearer_scheme, oauth2_scheme
from tollgate_server.api.responses import errors
from tollgate_server.observability.access import MetricsAccess, check_scraper
from tollgate_server.observability.metrics import CONTENT_TYPE, get_metrics
from tollgate_server.runtime import Runtime

SUMMARY = "Prometheus metrics"
EXAMPLE = (
    "# HELP tollgate_generations_total Generations settled, by model, provider, endpoint and "
    "final status\n# TYPE tollgate_generations_total counter\n"
    'tollgate_generations_total{endpoint="/v1/chat/completions",model="gpt-4o-mini",'
    'provider="openai",status="completed"} 42.0\n'
)
OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The text exposition format 0.0.4: counters, gauges and histograms "
        "named `tollgate_*`, summed over every worker",
        "content": {"text/plain": {"schema": {"type": "string"}, "example": EXAMPLE}},
    }
}


class MetricsResponse(Response):
    """What the document names; each answer carries the full `CONTENT_TYPE` (`_answer`)."""

    media_type = "text/plain"


async def _answer(runtime: Runtime) -> Response:
    return Response(await get_metrics().render(runtime), media_type=CONTENT_TYPE)


def _json_errors(*statuses: int) -> dict[int | str, Any]:
    """`errors()`, with each envelope's schema named under application/json: FastAPI would put
    a `model` under this route's own media type (text/plain)."""
    documented = errors(*statuses)
    for response in documented.values():
        model = response.pop("model")
        response["content"]["application/json"]["schema"] = {
            "$ref": f"#/components/schemas/{model.__name__}"
        }
    return documented


def metrics_router(access: MetricsAccess) -> APIRouter:
    """The route as `access` wants it: open, or behind a bearer token."""
    router = APIRouter(tags=["health"])
    if access.mode == "open":

        @router.get(
            "/metrics",
            summary=SUMMARY,
            response_class=MetricsResponse,
            responses={**OK, **_json_errors()},
        )
        async def metrics(runtime: RuntimeDep) -> Response:
            """Requests, generations, tokens, credits charged and held, upstream latency and
            errors, database pools; open to anyone who reaches the port
            (`TOLLGATE_METRICS=open`)."""
            return await _answer(runtime)

    else:

        @router.get(
            "/metrics",
            summary=SUMMARY,
            response_class=MetricsResponse,
            responses={**OK, **_json_errors(401, 403)},
        )
        async def metrics_for_scrapers(
            runtime: RuntimeDep,
            bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
            oauth: Annotated[str | None, Depends(oauth2_scheme)],
        ) -> Response:
            """Requests, generations, tokens, credits charged and held, upstream latency and
            errors, database pools. Send `TOLLGATE_METRICS_TOKEN`, or an access token (or API
            key) of an admin, as a bearer token."""
            token = bearer.credentials if bearer is not None else oauth
            await check_scraper(runtime, token)
            return await _answer(runtime)

    return router
