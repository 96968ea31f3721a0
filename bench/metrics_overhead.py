"""What recording metrics adds to a request, measured alone: the request-context middleware
around a trivial app that fills the log dict as the gateway does, with metrics off and on, in
alternating rounds (so that a busy machine weighs on both alike). Prints CPU microseconds per
request; compare with the server's CPU per request from `bench/run.py`.

    uv run python bench/metrics_overhead.py [--requests 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
from typing import Any

from tollgate_server.middleware import RequestContextMiddleware
from tollgate_server.observability.metrics import get_metrics

LOG = {
    "account": "6f1c2a7b-e0d8-4c1e-8a44-c0a9d2f3b6e1",
    "model": "gpt-4o-mini",
    "generation_id": "9f1c2a7b-e0d8-4c1e-8a44-c0a9d2f3b6e1",
    "provider": "openai",
    "status": "completed",
    "cost": 1234,
    "input_tokens": 12,
    "output_tokens": 16,
    "estimated": False,
    "ttft_ms": 2,
    "cached_input_tokens": 0,
    "reasoning_tokens": 0,
    "error_code": None,
    "duration_ms": 3,
}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    scope["state"]["log"] = dict(LOG)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: dict[str, Any]) -> None:
    return None


async def cpu_per_request(middleware: RequestContextMiddleware, requests: int) -> float:
    started = time.process_time()
    for _ in range(requests):
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/chat/completions",
            "headers": [(b"content-type", b"application/json")],
        }
        await middleware(scope, receive, send)
    return (time.process_time() - started) * 1e6 / requests


async def main(requests: int, rounds: int) -> None:
    logging.getLogger("tollgate.access").setLevel(logging.WARNING)  # as bench/run.py serves
    off = RequestContextMiddleware(app, max_body_bytes=1 << 20, metrics=None)
    on = RequestContextMiddleware(app, max_body_bytes=1 << 20, metrics=get_metrics())
    await cpu_per_request(on, 1000)  # warm up: the labelled children are created once
    results: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(rounds):
        results["off"].append(await cpu_per_request(off, requests))
        results["on"].append(await cpu_per_request(on, requests))
    off_us, on_us = statistics.median(results["off"]), statistics.median(results["on"])
    print(f"middleware, metrics off: {off_us:.1f} us CPU per request (median of {rounds})")
    print(f"middleware, metrics on:  {on_us:.1f} us CPU per request")
    print(f"recording adds {on_us - off_us:.1f} us per generation request")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds))
