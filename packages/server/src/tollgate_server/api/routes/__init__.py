"""Every router of the API, in the order they appear in the documentation."""

from fastapi import APIRouter

from tollgate_server.api.routes import health

ROUTERS: list[APIRouter] = [health.router]
