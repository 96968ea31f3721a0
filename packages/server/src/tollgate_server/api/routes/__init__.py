"""Every router of the API, in the order they appear in the documentation."""

from fastapi import APIRouter

from tollgate_server.api.routes import (
    admin,
    allowances,
    auth,
    billing,
    chat,
    deployments,
    embeddings,
    generations,
    health,
    keys,
    messages,
    webhooks,
)

ROUTERS: list[APIRouter] = [
    chat.router,
    embeddings.router,
    messages.router,
    generations.router,
    auth.router,
    billing.router,
    keys.router,
    admin.router,
    deployments.router,
    allowances.router,
    webhooks.router,
    health.router,
]
