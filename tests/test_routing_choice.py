"""Routing's pure rules, without a database or a network: the weighted choice, priorities,
cooldowns with their one probe, per-minute limits, and which failures are retried."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from tollgate_core import Price
from tollgate_core.errors import (
    UpstreamAuthenticationError,
    UpstreamBadRequest,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
    error_for_status,
)
from tollgate_server.services.catalogue import CatalogueModel
from tollgate_server.services.credentials import CredentialBox
from tollgate_server.services.routing import Route, Router, RouteState, retryable
from tollgate_server.settings import Settings

MODEL = CatalogueModel(
    id=1,
    name="m",
    provider="openai",
    upstream_model="m",
    enabled=True,
    free=False,
    context_window=1000,
    max_output_tokens=100,
    default_max_tokens=10,
    created_at=datetime.now(UTC),
    price=Price(1, 1, id=1),
    price_effective_from=None,
)


def router(**settings: Any) -> Router:
    return Router(
        settings=Settings(**settings),
        classes={},
        defaults={},
        env={},
        http=None,  # type: ignore[arg-type]
        box=CredentialBox("unit"),
        engine=None,  # type: ignore[arg-type]
        rng=random.Random(20261129),
    )


def route(deployment_id: int, *, weight: int = 1, priority: int = 0, **limits: Any) -> Route:
    return Route(
        deployment_id=deployment_id,
        label=f"deployment-{deployment_id}",
        model=MODEL,
        provider=None,  # type: ignore[arg-type]
        upstream_model="m",
        weight=weight,
        priority=priority,
        state=RouteState(),
        **limits,
    )


def test_a_weighted_split_over_1000_requests_is_within_5_percent() -> None:
    choose = router().choose
    routes = [route(1, weight=1), route(2, weight=3), route(3, weight=6)]
    picks = Counter(choose([routes], set()).deployment_id for _ in range(1000))  # type: ignore[union-attr]
    for r in routes:
        share = picks[r.deployment_id] / 1000
        assert abs(share - r.weight / 10) <= 0.05, picks


def test_the_highest_priority_is_served_while_it_is_available() -> None:
    choose = router().choose
    high, low = route(1, priority=5), route(2, priority=0, weight=100)
    assert {choose([[low, high]], set()) for _ in range(50)} == {high}
    assert choose([[low, high]], {id(high)}) is low
    assert choose([[low, high]], {id(high), id(low)}) is None


def test_a_fallback_model_is_tried_only_after_the_model_s_own_deployments() -> None:
    choose = router().choose
    own, fallback = route(1), route(2, priority=99)
    assert choose([[own], [fallback]], set()) is own
    assert choose([[own], [fallback]], {id(own)}) is fallback


def test_a_cooldown_grows_and_ends_with_one_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("tollgate_server.services.routing.time.monotonic", lambda: now[0])
    r = router(cooldown_after_failures=2, cooldown_seconds=10.0)
    a, b = route(1, priority=1), route(2)
    failure = UpstreamUnavailable("x", upstream_status=503)
    r.failed(a, failure)
    assert r.choose([[a, b]], set()) is a, "one failure is not a cooldown"
    r.failed(a, failure)
    assert r.choose([[a, b]], set()) is b
    now[0] += 10.5
    assert r.choose([[a, b]], set()) is a, "the cooldown ended: the probe"
    assert r.choose([[a, b]], set()) is b, "nothing else while the probe runs"
    r.failed(a, failure)  # the probe failed: a longer cooldown
    now[0] += 15
    assert r.choose([[a, b]], set()) is b
    now[0] += 6
    assert r.choose([[a, b]], set()) is a
    r.succeeded(a, 120)
    assert r.choose([[a, b]], set()) is a and r.choose([[a, b]], set()) is a
    assert a.state.stats(now[0])["cooldown_seconds"] is None


def test_a_single_cooling_deployment_still_serves() -> None:
    r = router(cooldown_after_failures=1)
    only = route(1)
    r.failed(only, UpstreamUnavailable("x", upstream_status=502))
    assert r.choose([[only]], set()) is only


def test_retry_after_keeps_traffic_away_for_that_long(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [50.0]
    monkeypatch.setattr("tollgate_server.services.routing.time.monotonic", lambda: now[0])
    r = router(cooldown_after_failures=5)
    a, b = route(1, priority=1), route(2)
    r.failed(a, UpstreamRateLimited("slow down", retry_after=30))
    now[0] += 29
    assert r.choose([[a, b]], set()) is b
    now[0] += 2
    assert r.choose([[a, b]], set()) is a


def test_per_minute_limits_move_traffic_on(monkeypatch: pytest.MonkeyPatch) -> None:
    # One fixed minute throughout, so that the test cannot straddle two windows.
    monkeypatch.setattr("tollgate_server.services.routing.time.time", lambda: 600.0)
    choose = router().choose
    limited, other = route(1, priority=1, requests_per_minute=2), route(2)
    assert [choose([[limited, other]], set()) for _ in range(3)] == [limited, limited, other]
    tokens = route(3, priority=1, tokens_per_minute=100)
    assert choose([[tokens, other]], set(), tokens=60) is tokens
    assert choose([[tokens, other]], set(), tokens=60) is other


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 529])
def test_these_statuses_are_retried(status: int) -> None:
    assert retryable(error_for_status(status, "x"))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_these_statuses_are_never_retried(status: int) -> None:
    assert not retryable(error_for_status(status, "x"))


def test_connect_errors_and_first_token_timeouts_are_retried() -> None:
    assert retryable(UpstreamUnavailable("connection refused"))
    assert retryable(UpstreamTimeout("no first token"))
    assert not retryable(UpstreamBadRequest("bad"))
    assert not retryable(UpstreamAuthenticationError("key"))


def test_a_key_encrypted_for_one_deployment_does_not_decrypt_for_another() -> None:
    from tollgate_core import ConfigurationError

    box = CredentialBox("k" * 40)
    blob = box.encrypt("sk-secret-value-1234", deployment_id=1)
    assert b"sk-secret" not in blob
    assert box.decrypt(blob, deployment_id=1) == "sk-secret-value-1234"
    with pytest.raises(ConfigurationError):
        box.decrypt(blob, deployment_id=2)
    with pytest.raises(ConfigurationError, match="TOLLGATE_SECRET_KEY"):
        CredentialBox("other").decrypt(blob, deployment_id=1)


def test_a_spooled_settlement_keeps_the_serving_model_and_its_price() -> None:
    import uuid

    import orjson
    from tollgate_core import Usage
    from tollgate_server.services.ledger import Outcome
    from tollgate_server.services.spool import decode_outcome, encode_outcome

    outcome = Outcome(
        status="completed",
        usage=Usage(input_tokens=3, output_tokens=4),
        charge=77,
        served_model="dear",
        deployment_id=9,
        served_price=Price(5_000_000, 7_000_000, id=42),
    )
    generation_id = uuid.uuid4()
    decoded_id, decoded = decode_outcome(orjson.loads(encode_outcome(generation_id, outcome)))
    assert decoded_id == generation_id
    assert (decoded.served_model, decoded.deployment_id) == ("dear", 9)
    assert decoded.served_price == Price(5_000_000, 7_000_000, id=42)


def test_a_short_secret_key_is_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="TOLLGATE_SECRET_KEY"):
        Settings(secret_key="too-short")
