"""Serve Tollgate in this process under cProfile, for a deterministic profile of the hot path.

Reads the same ``TOLLGATE_*`` / ``OPENAI_*`` environment as ``tollgate serve`` (the database must
already be migrated). Profiling starts when the first request arrives after ``--skip`` requests
and ends on SIGTERM or SIGINT, when the statistics are written to ``--out`` (pstats format) and
the top functions are printed. cProfile slows Python code down, so read the shares, not the
absolute times; ``bench/run.py --profile`` drives it (and py-spy) for you.

Usage::

    python bench/cprofile_server.py --port 8000 --out nonstream.pstats
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import signal
import sys
from pathlib import Path
from typing import Any


class ProfileMiddleware:
    """Turns the profiler on after `skip` requests (so start-up and warm-up are left out)."""

    def __init__(self, app: Any, profiler: cProfile.Profile, skip: int) -> None:
        self.app = app
        self.profiler = profiler
        self.skip = skip
        self.seen = 0
        self.requests = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.seen += 1
            if self.seen == self.skip + 1:
                self.profiler.enable()
            if self.seen > self.skip:
                self.requests += 1
        await self.app(scope, receive, send)


def top(stats_path: Path, limit: int = 30) -> str:
    out = io.StringIO()
    stats = pstats.Stats(str(stats_path), stream=out)
    stats.sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit)
    return out.getvalue()


def _ignore(signum: int, frame: object) -> None:
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--skip", type=int, default=200, help="requests served before profiling")
    args = parser.parse_args()

    import uvicorn
    from tollgate_server.app import create_app

    profiler = cProfile.Profile()
    app = ProfileMiddleware(create_app(), profiler, args.skip)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)

    # uvicorn re-raises the signal that stopped it once it has shut down, under the handler
    # that was installed before it ran: make that one return, so the statistics get written.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _ignore)
    server.run()
    profiler.disable()
    profiler.dump_stats(str(args.out))
    print(f"profiled {app.requests} requests; statistics in {args.out}", flush=True)
    sys.stdout.write(top(args.out))


if __name__ == "__main__":
    main()
