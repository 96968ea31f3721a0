"""Summarise a py-spy profile (``py-spy record --format raw``): where a worker's CPU time goes.

py-spy's raw format is one collapsed stack a line, ``outer;...;inner count``, each frame written
``function (file:line)``. Idle time is not sampled (py-spy drops idle threads by default), so the
shares are shares of the CPU time the worker spent running.

Also reads cProfile dumps (``.pstats``, from ``bench/cprofile_server.py``).

Usage::

    python bench/profile_report.py PROFILE.txt [--top 25]
    python bench/profile_report.py nonstream.pstats
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")

COMPONENTS = (
    ("tollgate", ("tollgate_",)),
    ("uvicorn (HTTP server)", ("uvicorn/", "httptools/")),
    ("starlette", ("starlette/",)),
    ("fastapi", ("fastapi/",)),
    ("pydantic", ("pydantic/", "pydantic_core/")),
    ("sqlalchemy (pool, connection checkout)", ("sqlalchemy/",)),
    ("asyncpg", ("asyncpg/",)),
    ("aiohttp (upstream client)", ("aiohttp/", "multidict/", "yarl/")),
    ("jwt", ("jwt/",)),
    ("asyncio / uvloop", ("asyncio/", "uvloop/")),
)


SHELL_FRAMES = (
    "<module>",
    "run_forever",
    "_run_once",
    "run (",
    "typer/",
    "tollgate_cli/",
    "cprofile_server.py",
    "uvicorn/server.py",
    "uvicorn/main.py",
    "asyncio/runners.py",
)
"""Frames that enclose everything (the CLI, the event loop): left out of the inclusive list."""


def _frame(text: str) -> tuple[str, str]:
    """(function, file) of one frame; line numbers are dropped so a function counts once."""
    match = _FRAME.match(text.strip())
    if not match:
        return text.strip(), ""
    return match["func"], match["file"]


def short_file(path: str) -> str:
    """The path from the package folder on: ``tollgate_server/services/gateway.py``."""
    for marker in ("site-packages/", "/src/", "lib/python3"):
        at = path.rfind(marker)
        if at >= 0:
            rest = path[at + len(marker) :]
            if marker == "lib/python3":
                rest = "stdlib/" + rest.split("/", 1)[-1]
            return rest
    return path


def component(path: str) -> str:
    short = short_file(path)
    for name, prefixes in COMPONENTS:
        if any(short.startswith(p) or f"/{p}" in short for p in prefixes):
            return name
    if short.startswith("stdlib/"):
        return "stdlib (other)"
    return "other"


def summarise(path: Path) -> dict[str, Any]:
    """Self and inclusive shares by function, and self shares by component."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    components: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        names = [f"{func} ({short_file(file)})" for func, file in frames]
        own[names[-1]] += count
        components[component(frames[-1][1])] += count
        for name in set(names):
            inclusive[name] += count
    return {
        "samples": total,
        "self": own.most_common(40),
        "inclusive": inclusive.most_common(60),
        "components": components.most_common(),
    }


def format_summary(name: str, summary: dict[str, Any], top: int = 20) -> str:
    total = max(summary["samples"], 1)
    unit = summary.get("unit", "samples of CPU time")
    lines = [f"Profile of the {name} path ({summary['samples']} {unit})"]
    lines.append("  self time by component:")
    for comp, count in summary["components"]:
        lines.append(f"    {count / total * 100:5.1f} %  {comp}")
    lines.append(f"  top {top} functions by self time:")
    for func, count in summary["self"][:top]:
        lines.append(f"    {count / total * 100:5.1f} %  {func}")
    lines.append(f"  top {top} functions by inclusive time (tollgate and libraries):")
    shown = 0
    for func, count in summary["inclusive"]:
        if shown >= top:
            break
        if any(skip in func for skip in SHELL_FRAMES):
            continue
        lines.append(f"    {count / total * 100:5.1f} %  {func}")
        shown += 1
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path, help="py-spy raw output, or a .pstats file")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    if args.profile.suffix == ".pstats":
        summary = summarise_pstats(args.profile)
    else:
        summary = summarise(args.profile)
    print(format_summary(args.profile.stem, summary, args.top))


if __name__ == "__main__":
    main()


def summarise_pstats(path: Path) -> dict[str, Any]:
    """The same summary from a cProfile dump: self (tottime) and inclusive (cumtime) shares.

    cProfile's inclusive time double-counts recursive and re-entered coroutine frames, and its
    overhead inflates Python code against C; the self-time ranking is the trustworthy part.
    """
    import pstats

    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    components: Counter[str] = Counter()
    for (file, _line, func), (_cc, _nc, tottime, cumtime, _callers) in stats.items():
        name = f"{func} ({short_file(file)})" if file != "~" else func
        micros = round(tottime * 1e6)
        own[name] += micros
        inclusive[name] = max(inclusive[name], round(cumtime * 1e6))
        components[component(file) if file != "~" else "builtins (C calls)"] += micros
    return {
        "samples": sum(own.values()),
        "unit": "microseconds under cProfile",
        "self": own.most_common(40),
        "inclusive": inclusive.most_common(60),
        "components": components.most_common(),
    }
