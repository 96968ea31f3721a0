"""One error tree: services raise refusals with no HTTP in them; the API layer alone maps each
kind to its status and headers (issue 20)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from tollgate_core import TollgateError, UpstreamRateLimited, UpstreamTimeout
from tollgate_server import errors
from tollgate_server.api.errors import STATUS, headers_of, status_of
from tollgate_server.errors import Refused, UpstreamFailed, client_error

SERVICES = Path(errors.__file__).parent / "services"


def _kinds() -> list[type[Refused]]:
    return [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, Refused) and value is not Refused
    ]


@pytest.mark.parametrize("kind", _kinds(), ids=lambda kind: kind.__name__)
def test_every_kind_of_refusal_has_its_own_status(kind: type[Refused]) -> None:
    assert issubclass(kind, TollgateError)
    assert kind in STATUS or kind is UpstreamFailed, f"{kind.__name__} has no status"


def test_each_status_is_said_once() -> None:
    assert len(set(STATUS.values())) == len(STATUS)


def test_upstream_failures_keep_their_status_and_retry_advice() -> None:
    limited = client_error(UpstreamRateLimited("slow down", retry_after=7.5))
    assert (status_of(limited), headers_of(limited)) == (429, {"Retry-After": "7"})
    assert status_of(client_error(UpstreamTimeout("no first token"))) == 504
    assert status_of(UpstreamFailed(None, "x")) == 502
    assert "slow down" not in limited.message  # the upstream's words stay in the log


def test_no_service_names_an_http_status_or_a_framework_exception() -> None:
    for path in sorted(SERVICES.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else ""
            assert name not in ("HTTPException", "ApiError"), f"{path.name}:{node.lineno}"
            first = node.args[0] if node.args else None
            # The shape of the old `ApiError(422, ...)`: a status as a call's first argument.
            assert not (
                isinstance(first, ast.Constant)
                and isinstance(first.value, int)
                and 400 <= first.value <= 599
            ), f"{path.name}:{node.lineno}"
