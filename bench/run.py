"""Tollgate's performance benchmark: the same workloads straight at a mock upstream and through
Tollgate, side by side, with billing on.

One command (from the repository root)::

    uv run python bench/run.py            # full run, a few minutes
    uv run python bench/run.py --quick    # smoke run, about a minute

What it does: creates a fresh database (``tollgate_bench`` on the local PostgreSQL, or on the
server named by ``--database-url`` / ``TOLLGATE_DATABASE_URL``) and migrates it; starts the
mock upstream (``bench/mock_upstream.py``) and ``tollgate serve`` as subprocesses, Tollgate
pinned to one CPU and the mock and the load generator to another; creates real accounts with
large balances, a priced model and API keys through the admin API; runs each workload against
the mock directly and through Tollgate; measures requests/s, latency percentiles, the server
processes' CPU time per request, their resident memory, streaming time to first and last
chunk, two-worker scaling and start-up time; then checks the ledger's invariants. Every
process it starts is stopped at the end, also on Ctrl-C or an error.

Closed-loop throughput uses ``wrk`` when it is on the PATH (with a small Lua script), and
otherwise a Python asyncio load generator (which tops out at a few thousand requests/s, so the
*direct* figures it gives are the load generator's limit, not the mock's). One-at-a-time
latencies always come from a blocking-socket Python client that times each request.

See ``python bench/run.py --help`` for the options and ``bench/README.md`` for the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from peers import Peer  # bench/peers.py

HERE = Path(__file__).resolve().parent
DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
CHAT_PATH = "/v1/chat/completions"
PROMPT = "Say hello to the benchmark, in sixteen tokens or so."
ADMIN_EMAIL = "bench-admin@example.com"
PASSWORD = "bench-password-1234"
FIRST_TOKEN = b'"tok0"'
"""Every answer's first token; in a stream, the first chunk with text contains it."""


# --- HTTP: one incremental response parser, a blocking client, an asyncio load generator ---


class ResponseReader:
    """Parses one HTTP/1.1 response fed in pieces: Content-Length or chunked bodies.

    Records when `mark` first appears in the raw bytes (for time to first chunk).
    """

    __slots__ = (
        "body",
        "buf",
        "chunk_left",
        "chunked",
        "done",
        "headers",
        "mark",
        "mark_at",
        "remaining",
        "seen",
        "status",
    )

    def __init__(self, mark: bytes | None = None) -> None:
        self.buf = bytearray()
        self.body = bytearray()
        self.headers: dict[str, str] | None = None
        self.status = 0
        self.chunked = False
        self.remaining = 0
        self.chunk_left: int | None = None
        self.done = False
        self.mark = mark
        self.mark_at: float | None = None
        self.seen = b""

    def feed(self, data: bytes, now: float = 0.0) -> bool:
        """Feed received bytes; True once the response is complete."""
        if self.mark is not None and self.mark_at is None:
            window = self.seen + data
            if self.mark in window:
                self.mark_at = now
            self.seen = window[-len(self.mark) :]
        buf = self.buf
        buf += data
        if self.headers is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[: end + 4]
            self.status = int(lines[0].split(" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            self.headers = headers
            if "content-length" in headers:
                self.remaining = int(headers["content-length"])
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                self.chunked = True
        if not self.chunked:
            if len(buf) >= self.remaining:
                self.body += buf[: self.remaining]
                del buf[: self.remaining]
                self.done = True
            return self.done
        while True:
            if self.chunk_left is None:
                line_end = buf.find(b"\r\n")
                if line_end < 0:
                    return False
                size = int(bytes(buf[:line_end]).split(b";")[0], 16)
                del buf[: line_end + 2]
                self.chunk_left = size if size else -1
            if self.chunk_left == -1:  # the last chunk; no trailers are expected
                line_end = buf.find(b"\r\n")
                if line_end < 0:
                    return False
                del buf[: line_end + 2]
                self.done = True
                return True
            if len(buf) < self.chunk_left + 2:
                return False
            self.body += buf[: self.chunk_left]
            del buf[: self.chunk_left + 2]
            self.chunk_left = None


def build_request(
    method: str, host: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float
    """From the first byte sent to the last byte of the body."""
    mark_seconds: float | None = None
    """From the first byte sent to the arrival of the mark (the first token)."""

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """A blocking HTTP/1.1 keep-alive client on one socket: the least overhead to time with."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.sock: socket.socket | None = None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        mark: bytes | None = None,
        timeout: float = 30.0,
    ) -> Reply:
        raw = build_request(method, f"{self.host}:{self.port}", path, body, headers)
        if self.sock is None:
            self.sock = socket.create_connection((self.host, self.port), timeout=timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = self.sock
        reader = ResponseReader(mark)
        perf = time.perf_counter
        try:
            started = perf()
            sock.sendall(raw)
            while True:
                data = sock.recv(262144)
                now = perf()
                if not data:
                    raise ConnectionError("the server closed the connection")
                if reader.feed(data, now):
                    break
        except BaseException:
            self.close()
            raise
        assert reader.headers is not None
        if reader.headers.get("connection", "").lower() == "close":
            self.close()
        return Reply(
            status=reader.status,
            headers=reader.headers,
            body=bytes(reader.body),
            seconds=now - started,
            mark_seconds=None if reader.mark_at is None else reader.mark_at - started,
        )

    def json(
        self,
        method: str,
        path: str,
        payload: Any = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        expect: int | tuple[int, ...] = (200, 201),
    ) -> Any:
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        body = json.dumps(payload).encode() if payload is not None else b""
        reply = self.request(method, path, body, all_headers)
        wanted = (expect,) if isinstance(expect, int) else expect
        if reply.status not in wanted:
            text = reply.body[:300].decode("utf-8", "replace")
            raise BenchError(f"{method} {path} answered {reply.status}: {text}")
        return reply.json() if reply.body else None


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


@dataclass
class LoadResult:
    """One closed-loop run."""

    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: dict[str, int]
    generator: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


WRK_SCRIPT = """
local path = "{path}"
local body = [==[{body}]==]
local keys = {{ {keys} }}
local extra = {{ {extra} }}
local reqs = {{}}
local i = 0
function init(args)
  for k = 1, #keys do
    local headers = {{ ["Content-Type"] = "application/json" }}
    for name, value in pairs(extra) do headers[name] = value end
    if keys[k] ~= "" then headers["Authorization"] = "Bearer " .. keys[k] end
    reqs[k] = wrk.format("POST", path, headers, body)
  end
end
function request()
  i = i % #reqs + 1
  return reqs[i]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, '
    .. '"status": %d, "timeout": %d, "p50": %.0f, "p90": %.0f, "p99": %.0f}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


def run_wrk(
    wrk: str,
    *,
    host: str,
    port: int,
    body: bytes,
    keys: Sequence[str],
    connections: int,
    seconds: float,
    cpus: set[int] | None,
    workdir: Path,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    script = workdir / f"load-{uuid.uuid4().hex[:8]}.lua"
    script.write_text(
        WRK_SCRIPT.format(
            path=CHAT_PATH,
            body=body.decode(),
            keys=", ".join(f'"{k}"' for k in (keys or [""])),
            extra=", ".join(f'["{k}"] = "{v}"' for k, v in (headers or {}).items()),
        )
    )
    command = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"http://{host}:{port}{CHAT_PATH}",
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        preexec_fn=_pin(cpus),
        check=False,
        timeout=seconds + 60,
    )
    line = next(
        (x for x in done.stdout.splitlines() if x.startswith("BENCHJSON ")),
        None,
    )
    if line is None:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stdout} {done.stderr}")
    data = json.loads(line.removeprefix("BENCHJSON "))
    return LoadResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50"] / 1000,
        p90_ms=data["p90"] / 1000,
        p99_ms=data["p99"] / 1000,
        errors={k: data[k] for k in ("connect", "read", "write", "status", "timeout") if data[k]},
        generator="wrk",
    )


def run_python_load(
    *,
    host: str,
    port: int,
    body: bytes,
    keys: Sequence[str],
    connections: int,
    seconds: float,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """The fallback closed-loop generator: asyncio streams, one request in flight per socket."""
    requests = []
    for key in keys or [""]:
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if key:
            all_headers["Authorization"] = f"Bearer {key}"
        requests.append(build_request("POST", f"{host}:{port}", CHAT_PATH, body, all_headers))
    latencies: list[float] = []
    errors: dict[str, int] = {}

    async def worker(index: int, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        perf = time.perf_counter
        reader = writer = None
        position = index
        while loop.time() < deadline:
            if writer is None:
                try:
                    reader, writer = await asyncio.open_connection(host, port)
                except OSError:
                    errors["connect"] = errors.get("connect", 0) + 1
                    await asyncio.sleep(0.05)
                    continue
            assert reader is not None
            raw = requests[position % len(requests)]
            position += connections
            parser = ResponseReader()
            started = perf()
            writer.write(raw)
            try:
                while True:
                    data = await reader.read(262144)
                    if not data:
                        raise ConnectionError
                    if parser.feed(data):
                        break
            except (OSError, ConnectionError):
                errors["read"] = errors.get("read", 0) + 1
                writer.close()
                reader = writer = None
                continue
            latencies.append(perf() - started)
            if parser.status >= 400:
                errors["status"] = errors.get("status", 0) + 1
        if writer is not None:
            writer.close()

    async def main() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(*(worker(i, started + seconds) for i in range(connections)))
        return loop.time() - started

    elapsed = _run_async(main())
    ordered = sorted(latencies) or [0.0]
    return LoadResult(
        requests=len(latencies),
        seconds=elapsed,
        p50_ms=_percentile(ordered, 50) * 1000,
        p90_ms=_percentile(ordered, 90) * 1000,
        p99_ms=_percentile(ordered, 99) * 1000,
        errors=errors,
        generator="python",
    )


def _run_async(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover - the workspace has uvloop
        return asyncio.run(coro)


def _percentile(ordered: Sequence[float], pct: float) -> float:
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


# --- processes -----------------------------------------------------------------------------


def _pin(cpus: set[int] | None) -> Callable[[], None] | None:
    if not cpus:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, cpus)

    return pin


class Processes:
    """Every subprocess the benchmark starts, so that all of them are stopped at the end."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        command: list[str],
        *,
        env: dict[str, str] | None = None,
        cpus: set[int] | None = None,
        log: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        out = (
            open(log, "ab") if log else subprocess.DEVNULL
        )  # closed below, once Popen has its copy
        try:
            proc = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_pin(cpus),
                start_new_session=True,  # its own process group: stopped as a group
            )
        finally:
            if log:
                out.close()  # type: ignore[union-attr]
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
        """SIGTERM, wait for a graceful exit, then SIGKILL whatever is left of its group."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group is ours: start_new_session above
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.running)):
            self.stop(proc, grace=10.0)


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (every core, every process)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def tree(pid: int) -> list[psutil.Process]:
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.Error:
        return []


def cpu_seconds(processes: Sequence[psutil.Process]) -> float:
    total = 0.0
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def rss_mb(proc: psutil.Process) -> float:
    try:
        return float(proc.memory_info().rss) / 2**20
    except psutil.Error:
        return float("nan")


def postgres_processes(database: str) -> list[psutil.Process]:
    """The local PostgreSQL backends serving `database`, when this user may read them.

    Only those: other databases on the same server (other people's tests) are left out, and
    so are the server's shared background processes (WAL writer, checkpointer).
    """
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if proc.info["name"] in ("postgres", "postmaster") and f" {database} " in cmdline:
            found.append(proc)
    return found


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{proc.args[0]} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.02)
    raise BenchError(f"nothing listened on {host}:{port} within {timeout:g} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the database --------------------------------------------------------------------------


def bench_urls(base: str, name: str) -> tuple[str, str, str]:
    """(SQLAlchemy URL of the bench database, asyncpg DSN of it, asyncpg DSN of the server's
    maintenance database)."""
    from sqlalchemy.engine import make_url

    url = make_url(base)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+asyncpg")
    bench = url.set(database=name)
    maintenance = url.set(database="postgres", drivername="postgresql")
    return (
        bench.render_as_string(hide_password=False),
        bench.set(drivername="postgresql").render_as_string(hide_password=False),
        maintenance.render_as_string(hide_password=False),
    )


def recreate_database(maintenance_dsn: str, name: str) -> None:
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(maintenance_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(go())


def drop_database(maintenance_dsn: str, name: str) -> None:
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(maintenance_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(go())


def analyze(dsn: str) -> None:
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("ANALYZE")
        finally:
            await conn.close()

    asyncio.run(go())


def wal_position(dsn: str) -> int:
    """Bytes of WAL written so far by the whole server: a precise count of database writes."""
    import asyncpg

    async def go() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))
        finally:
            await conn.close()

    return int(asyncio.run(go()))


def ledger_report(url: str) -> dict[str, Any]:
    """The invariants' violations, and the generations by status, after the run."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from tollgate_server.services.invariants import find_violations, pending_generations

    async def go() -> dict[str, Any]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                violations = await find_violations(conn)
                pending = await pending_generations(conn)
                rows = (
                    await conn.execute(
                        text(
                            "SELECT status, count(*), coalesce(sum(cost), 0) FROM generations "
                            "GROUP BY status ORDER BY 2 DESC"
                        )
                    )
                ).all()
                entries = int(
                    (await conn.execute(text("SELECT count(*) FROM ledger_entries"))).scalar_one()
                )
        finally:
            await engine.dispose()
        return {
            "violations": {rule: [list(map(str, r)) for r in v] for rule, v in violations.items()},
            "pending": pending,
            "statuses": {r[0]: {"count": int(r[1]), "cost_micro": int(r[2])} for r in rows},
            "ledger_entries": entries,
        }

    return dict(asyncio.run(go()))


# --- the benchmark -------------------------------------------------------------------------


def chat_body(model: str, *, stream: bool, max_tokens: int = 64) -> bytes:
    payload: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
    }
    if stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    return json.dumps(payload, separators=(",", ":")).encode()


@dataclass
class Target:
    """Where a workload is sent: the mock directly, or Tollgate."""

    name: str
    host: str
    port: int
    model: str
    paced_model: str
    keys: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    """Sent with every request besides the key (a peer's routing headers)."""


@dataclass
class Options:
    quick: bool
    seconds: float
    connections: int
    latency_requests: int
    stream_requests: int
    paced_requests: int
    soak_requests: int
    accounts: int
    tokens: int
    scaling: bool
    profile_dir: Path | None
    key_limits: bool = False
    """Give every API key a spend limit (per month) and rpm/tpm limits too high to refuse, to
    measure what the key guards of the admission statement cost."""


class Server:
    """`tollgate serve` as a subprocess, and the figures read from its process tree."""

    def __init__(
        self,
        bench: Bench,
        *,
        workers: int,
        cpus: set[int] | None,
        command: list[str] | None = None,
        log: str = "server.log",
    ) -> None:
        self.bench = bench
        self.workers = workers
        self.cpus = cpus
        self.command = command
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.listening_after: float | None = None
        """Seconds from the start command until the port accepted a connection."""

    def start(self) -> None:
        bench = self.bench
        command = self.command or [
            *bench.tollgate_command,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(bench.port),
            "--workers",
            str(self.workers),
            "--log-level",
            bench.args.server_log_level,
        ]
        self.started_at = time.perf_counter()
        self.proc = bench.processes.start(
            command, env=bench.server_env, cpus=self.cpus, log=bench.workdir / self.log
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.bench.processes.stop(self.proc)
            self.proc = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def processes(self) -> list[psutil.Process]:
        return tree(self.pid)

    def worker_processes(self) -> list[psutil.Process]:
        """The processes that serve requests: the serve process itself with one worker, else
        uvicorn's spawned children (not multiprocessing's resource tracker)."""
        procs = self.processes()
        if self.workers == 1:
            return procs[:1]
        found = []
        for proc in procs[1:]:
            with contextlib.suppress(psutil.Error):
                if "spawn_main" in " ".join(proc.cmdline()):
                    found.append(proc)
        return found

    def cpu(self) -> float:
        return cpu_seconds(self.processes())

    def rss(self) -> list[float]:
        return [rss_mb(p) for p in self.worker_processes()]

    def wait_first_success(self, timeout: float = 60.0) -> float:
        """Seconds from the start command to the first successful chat completion."""
        bench = self.bench
        assert self.proc is not None
        body = chat_body("bench-model", stream=False)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {bench.keys[0]}"}
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (bench.workdir / self.log).read_text()[-3000:]
                raise BenchError(f"tollgate serve exited early:\n{log}")
            client = Client("127.0.0.1", bench.port)
            try:
                reply = client.request("POST", CHAT_PATH, body, headers, timeout=5)
                if self.listening_after is None:
                    self.listening_after = time.perf_counter() - self.started_at
                if reply.status == 200:
                    return time.perf_counter() - self.started_at
                last = f"{reply.status} {reply.body[:200]!r}"
            except OSError as exc:
                last = str(exc)
            finally:
                client.close()
            time.sleep(0.01)
        raise BenchError(f"tollgate did not answer a chat completion in {timeout:g} s ({last})")

    def wait_healthy(self, timeout: float = 60.0) -> float:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.bench.workdir / self.log).read_text()[-3000:]
                raise BenchError(f"tollgate serve exited early:\n{log}")
            client = Client("127.0.0.1", self.bench.port)
            try:
                if client.request("GET", "/healthz", timeout=2).status == 200:
                    return time.perf_counter() - self.started_at
            except OSError:
                pass
            finally:
                client.close()
            time.sleep(0.02)
        raise BenchError(f"tollgate did not become healthy in {timeout:g} s")


class RssSampler:
    """Samples the workers' resident memory in the background; keeps the largest figure."""

    def __init__(self, server: Server | Peer, every: float = 0.25) -> None:
        self.server = server
        self.every = every
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        procs = self.server.worker_processes()
        while not self._stop.wait(self.every):
            for proc in procs:
                self.peak = max(self.peak, rss_mb(proc))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Bench:
    def __init__(self, args: argparse.Namespace, options: Options) -> None:
        self.args = args
        self.options = options
        self.processes = Processes()
        self.workdir = Path(tempfile.mkdtemp(prefix="tollgate-bench-"))
        self.port = args.port or free_port()
        self.mock_port = args.mock_port or free_port()
        self.keys: list[str] = []
        self.jwts: list[str] = []
        self.results: dict[str, Any] = {}
        self.served = 0
        """Requests sent through the current server (for memory after many requests)."""
        self.client_completed = 0
        self.wrk = None if args.python_load else shutil.which("wrk")
        cpus = sorted(os.sched_getaffinity(0))
        self.pinned = len(cpus) >= 2 and not args.no_pin
        self.server_cpus = {cpus[-1]} if self.pinned else None
        self.client_cpus = {cpus[0]} if self.pinned else None
        self.all_cpus = set(cpus)
        base = args.database_url or os.environ.get("TOLLGATE_DATABASE_URL") or DEFAULT_DATABASE_URL
        self.db_url, self.db_dsn, self.maintenance_dsn = bench_urls(base, args.db_name)
        self.local_db = any(
            host in self.db_dsn for host in ("@127.0.0.1", "@localhost", "@[::1]", "@/")
        )
        self.tollgate_command: list[str] = []
        """Set by `run`: installing the deployed environment takes a few seconds."""
        jwt_secret = secrets.token_urlsafe(48)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
        # Start-up is timed as on an installed server, whose bytecode is compiled: cached
        # in the work folder, so nothing is written next to the sources.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.update(
            {
                "PYTHONPYCACHEPREFIX": str(self.workdir / "pycache"),
                "TOLLGATE_ENVIRONMENT": "production",
                "TOLLGATE_DATABASE_URL": self.db_url,
                "TOLLGATE_DATA_DIR": str(self.workdir / "data"),
                "TOLLGATE_JWT_SECRET": jwt_secret,
                "TOLLGATE_ADMIN_EMAIL": ADMIN_EMAIL,
                "TOLLGATE_ADMIN_PASSWORD": PASSWORD,
                "TOLLGATE_REQUESTS_PER_MINUTE": "0",
                "TOLLGATE_MAX_CONCURRENT_GENERATIONS": "100000",
                "TOLLGATE_ACCESS_TOKEN_TTL_SECONDS": "86400",
                # Metrics are recorded unless off (issue 19: compare --metrics off and token).
                "TOLLGATE_METRICS": args.metrics,
                "TOLLGATE_LOG_FORMAT": args.server_log_format,
                "OPENAI_BASE_URL": f"http://127.0.0.1:{self.mock_port}/v1",
                "OPENAI_API_KEY": "sk-bench-mock-upstream",
            }
        )
        self.server_env = env
        self.direct = Target(
            "direct",
            "127.0.0.1",
            self.mock_port,
            f"mock-t{options.tokens}",
            "mock-t20-p10",
        )
        self.tollgate = Target("tollgate", "127.0.0.1", self.port, "bench-model", "bench-paced")
        self.peers: list[Peer] = []
        """Other gateways given the same workloads (`--peers`, bench/peers.py)."""
        self.peer_targets: dict[str, Target] = {}

    # --- orchestration ---------------------------------------------------------------------

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    def run(self) -> dict[str, Any]:
        opts = self.options
        if self.client_cpus:
            os.sched_setaffinity(0, self.client_cpus)
        self.results["machine"] = machine_info()
        self.results["load_average_at_start"] = os.getloadavg()
        self.results["load_generator"] = (
            f"wrk ({self.wrk})" if self.wrk else "python asyncio (wrk not found, or --python-load)"
        )
        self.results["pinning"] = (
            f"tollgate on CPU {sorted(self.server_cpus or [])}, mock and load generator on "
            f"CPU {sorted(self.client_cpus or [])}; PostgreSQL unpinned"
            if self.pinned
            else "none"
        )
        self.log(f"work folder {self.workdir}; load generator: {self.results['load_generator']}")
        self.tollgate_command, self.results["server_environment"] = _tollgate_command(
            self.args.server_env, self.workdir
        )
        self.log(f"server installation: {self.results['server_environment']}")
        self.results["server_log"] = (
            f"level {self.args.server_log_level}, format {self.args.server_log_format}"
            + (" (one access line per request)" if self.args.server_log_level == "info" else "")
        )
        self.log(f"database {self.args.db_name} (fresh), migrating")
        recreate_database(self.maintenance_dsn, self.args.db_name)
        from tollgate_server.db.migrate import upgrade

        upgrade(self.db_url)
        mock = self.processes.start(
            [
                sys.executable,
                str(HERE / "mock_upstream.py"),
                "--port",
                str(self.mock_port),
                "--tokens",
                str(opts.tokens),
            ],
            cpus=self.client_cpus,
            log=self.workdir / "mock.log",
        )
        wait_for_port("127.0.0.1", self.mock_port, 15, mock)
        if self.args.peers:
            self.start_peers()

        # First start: the server creates the admin; then accounts, a model and keys.
        server = Server(self, workers=1, cpus=self.server_cpus)
        server.start()
        first_start = server.wait_healthy()
        self.log(f"first start (fresh database) healthy in {first_start:.2f} s; creating accounts")
        self.setup_accounts()
        server.stop()
        # Statistics, as autovacuum keeps them for a database in service: a fresh database's
        # first statements are planned on tables the planner believes empty, which cost the
        # first server measured on it up to half its throughput (the other gateways do not
        # have a database to warm).
        analyze(self.db_dsn)

        # Second start, on the existing database: the start-up figure, idle memory, workloads.
        server = Server(self, workers=1, cpus=self.server_cpus)
        server.start()
        self.results["start_to_first_request_s"] = server.wait_first_success()
        self.results["start_to_listening_s"] = server.listening_after
        self.served = 1
        time.sleep(0.5)
        self.results["rss_idle_mb"] = server.rss()[0]
        self.log(
            f"restart: port open after {server.listening_after or 0:.2f} s, first successful "
            f"request after {self.results['start_to_first_request_s']:.2f} s; idle RSS "
            f"{self.results['rss_idle_mb']:.1f} MB"
        )
        if self.peers:
            self.wait_peers()
        self.workloads(server)
        server.stop()

        if opts.scaling:
            self.scaling()
        if opts.profile_dir is not None:
            self.profile()

        self.results["load_average_at_end"] = os.getloadavg()
        self.log("checking the ledger")
        self.results["ledger"] = ledger_report(self.db_url)
        return self.results

    def setup_accounts(self) -> None:
        admin = Client("127.0.0.1", self.port)
        token = admin.json("POST", "/v1/auth/login", {"email": ADMIN_EMAIL, "password": PASSWORD})[
            "access_token"
        ]
        for name, upstream in (
            ("bench-model", self.direct.model),
            ("bench-paced", self.direct.paced_model),
        ):
            admin.json(
                "POST",
                "/v1/admin/models",
                {
                    "name": name,
                    "provider": "openai",
                    "upstream_model": upstream,
                    "context_window": 128000,
                    "max_output_tokens": 4096,
                    "default_max_tokens": 256,
                    "input_price": "1.5",
                    "output_price": "6",
                },
                token=token,
            )
        for i in range(self.options.accounts):
            email = f"bench-user-{i}@example.com"
            account = admin.json(
                "POST", "/v1/auth/register", {"email": email, "password": PASSWORD}
            )
            admin.json(
                "POST",
                f"/v1/admin/users/{account['id']}/credits",
                {"amount": "2000", "reason": "benchmark"},
                token=token,
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )
            user_token = admin.json(
                "POST", "/v1/auth/login", {"email": email, "password": PASSWORD}
            )["access_token"]
            limits = (
                {"spend_limit": "100000", "spend_period": "month", "rpm": 10**9, "tpm": 10**9}
                if self.options.key_limits
                else {}
            )
            key = admin.json("POST", "/v1/keys", {"name": "bench", **limits}, token=user_token)[
                "key"
            ]
            self.jwts.append(user_token)
            self.keys.append(key)
        admin.close()
        self.tollgate.keys = self.keys

    # --- the peers (bench/peers.py) ----------------------------------------------------------

    def start_peers(self) -> None:
        """Installs the peers outside the repository if needed and starts them in front of the
        mock, pinned like Tollgate's worker; they start while Tollgate's accounts are made."""
        from peers import PeerError, prepare

        root = Path(self.args.peers_dir).expanduser()
        self.results["peers"] = {}
        for name in self.args.peers:
            self.log(f"peer {name}: installing under {root} if needed")
            try:
                launch = prepare(
                    name,
                    root,
                    port=free_port(),
                    mock_port=self.mock_port,
                    workdir=self.workdir,
                    tokens=self.options.tokens,
                )
            except PeerError as exc:
                raise BenchError(f"peer {name}: {exc}") from exc
            peer = launch.peer
            self.log(f"peer {name}: {peer.version}; starting: {' '.join(launch.command)}")
            peer.proc = self.processes.start(
                launch.command,
                env=launch.env,
                cpus=self.server_cpus,
                log=self.workdir / f"{name}.log",
            )
            peer.started_at = time.monotonic()
            self.peers.append(peer)
            self.peer_targets[name] = Target(
                name,
                "127.0.0.1",
                peer.port,
                peer.model,
                peer.paced_model,
                keys=[peer.key],
                headers=peer.headers,
            )
            self.results["peers"][name] = {"version": peer.version, "command": launch.command}

    def wait_peers(self) -> None:
        from peers import PeerError, wait_ready

        for peer in self.peers:
            body = chat_body(peer.model, stream=False)
            try:
                wait_ready(peer, body, 300.0, Client)
            except PeerError as exc:
                log = (self.workdir / f"{peer.name}.log").read_text(errors="replace")[-3000:]
                raise BenchError(f"{exc}\n{log}") from exc
            assert peer.started_at is not None
            ready = time.monotonic() - peer.started_at
            time.sleep(0.5)
            info = self.results["peers"][peer.name]
            info["start_to_first_request_s"] = ready
            info["rss_idle_mb"] = sum(peer.rss())
            self.log(
                f"peer {peer.name}: first successful request {ready:.1f} s after its start "
                f"(started beside Tollgate's set-up); idle RSS {info['rss_idle_mb']:.1f} MB"
            )

    def on_peers(self, measure: Callable[[Target, Peer], dict[str, Any]]) -> dict[str, Any]:
        """The same workload on every peer, run right after Tollgate's: interleaved in one
        run, so what else the machine does hits them all alike."""
        return {peer.name: measure(self.peer_targets[peer.name], peer) for peer in self.peers}

    # --- the workloads ---------------------------------------------------------------------

    def workloads(self, server: Server) -> None:
        opts = self.options
        res = self.results
        direct, tollgate = self.direct, self.tollgate
        n_lat, n_stream = opts.latency_requests, opts.stream_requests

        self.log("warm-up")
        self.closed_loop(direct, stream=False, seconds=1)
        self.closed_loop(tollgate, stream=False, seconds=2 if opts.quick else 4, server=server)
        self.series(tollgate, stream=False, count=100)
        for peer in self.peers:
            target = self.peer_targets[peer.name]
            self.closed_loop(target, stream=False, seconds=2 if opts.quick else 4)
            self.closed_loop(target, stream=True, seconds=2)
            self.series(target, stream=False, count=100)
        time.sleep(0.5)
        res["rss_warm_mb"] = server.rss()[0]
        res["served_at_warm"] = self.served

        self.log("non-streaming, 1 at a time")
        res["nonstream_1c"] = {
            "direct": self.series(direct, stream=False, count=opts.latency_requests),
            "tollgate": self.series(
                tollgate, stream=False, count=opts.latency_requests, server=server
            ),
            "tollgate_jwt": self.series(
                tollgate,
                stream=False,
                count=opts.latency_requests,
                server=server,
                keys=self.jwts[:1],
            ),
            **self.on_peers(lambda t, p: self.series(t, stream=False, count=n_lat, server=p)),
        }

        self.log(f"non-streaming, {opts.connections} concurrent, closed loop")
        res["nonstream_16c"] = {
            "direct": self.closed_loop(direct, stream=False, seconds=opts.seconds),
            "tollgate": self.closed_loop(
                tollgate, stream=False, seconds=opts.seconds, server=server
            ),
            "tollgate_jwt": self.closed_loop(
                tollgate, stream=False, seconds=opts.seconds, server=server, keys=self.jwts
            ),
            "tollgate_one_account": self.closed_loop(
                tollgate,
                stream=False,
                seconds=opts.seconds / (2 if not opts.quick else 1),
                server=server,
                keys=self.keys[:1],
            ),
            **self.on_peers(
                lambda t, p: self.closed_loop(t, stream=False, seconds=opts.seconds, server=p)
            ),
        }

        self.log(f"streaming {opts.tokens} tokens, 1 at a time")
        res["stream_1c"] = {
            "direct": self.series(direct, stream=True, count=opts.stream_requests),
            "tollgate": self.series(
                tollgate, stream=True, count=opts.stream_requests, server=server
            ),
            **self.on_peers(lambda t, p: self.series(t, stream=True, count=n_stream, server=p)),
        }
        self.log("streaming 20 tokens paced 10 ms apart, 1 at a time")
        res["stream_paced_1c"] = {
            "direct": self.series(direct, stream=True, count=opts.paced_requests, paced=True),
            "tollgate": self.series(
                tollgate, stream=True, count=opts.paced_requests, server=server, paced=True
            ),
            **self.on_peers(
                lambda t, p: self.series(
                    t, stream=True, count=opts.paced_requests, server=p, paced=True
                )
            ),
        }
        self.log(f"streaming {opts.tokens} tokens, {opts.connections} concurrent, closed loop")
        res["stream_16c"] = {
            "direct": self.closed_loop(direct, stream=True, seconds=opts.seconds),
            "tollgate": self.closed_loop(
                tollgate, stream=True, seconds=opts.seconds, server=server
            ),
            **self.on_peers(
                lambda t, p: self.closed_loop(t, stream=True, seconds=opts.seconds, server=p)
            ),
        }

        if self.served < opts.soak_requests:
            self.log(f"memory: serving up to {opts.soak_requests} requests in all")
        soak_rounds = []
        while self.served < opts.soak_requests:
            rate = max(res["nonstream_16c"]["tollgate"]["rps"], 100.0)
            seconds = min(60.0, max(2.0, (opts.soak_requests - self.served) / rate + 1))
            soak_rounds.append(
                self.closed_loop(tollgate, stream=False, seconds=seconds, server=server)
            )
        res["soak"] = soak_rounds
        time.sleep(1.0)
        res["rss_after_mb"] = server.rss()[0]
        res["served_at_end"] = self.served
        self.log(
            f"RSS idle {res['rss_idle_mb']:.1f} MB, after warm-up {res['rss_warm_mb']:.1f} MB, "
            f"after {self.served} requests {res['rss_after_mb']:.1f} MB"
        )

    def scaling(self) -> None:
        """One worker and two, both free to use every CPU, under the same load."""
        opts = self.options
        connections = opts.connections * 2
        out: dict[str, Any] = {"connections": connections}
        for workers in (1, 2):
            server = Server(self, workers=workers, cpus=None)
            server.start()
            startup = server.wait_first_success()
            self.served = 1
            time.sleep(0.5)
            idle = server.rss()
            self.log(f"{workers} worker(s), unpinned: started in {startup:.2f} s, load")
            self.closed_loop(self.tollgate, stream=False, seconds=2, server=server)
            serving = server.worker_processes()
            before = [cpu_seconds([p]) for p in serving]
            result = self.closed_loop(
                self.tollgate,
                stream=False,
                seconds=opts.seconds,
                server=server,
                connections=connections,
                client_cpus=None,
            )
            # How evenly the workers shared the load (they accept from one listening socket).
            used = [cpu_seconds([p]) - b for p, b in zip(serving, before, strict=True)]
            total = sum(used)
            out[f"workers_{workers}"] = {
                "start_to_first_request_s": startup,
                "rss_idle_mb": idle,
                "worker_cpu_share": [u / total if total else None for u in used],
                **result,
            }
            server.stop()
        one = out["workers_1"]["rps"]
        out["ratio"] = out["workers_2"]["rps"] / one if one else None
        self.results["scaling"] = out

    def profile(self) -> None:
        """py-spy on the pinned worker while it serves each closed-loop workload."""
        from profile_report import summarise  # bench/profile_report.py

        py_spy = self.args.py_spy or shutil.which("py-spy")
        home_bin = Path.home() / ".local" / "bin" / "py-spy"
        if py_spy is None and home_bin.exists():
            py_spy = str(home_bin)
        if py_spy is None:
            self.log("py-spy not found (install it with `uv tool install py-spy`); no profile")
            return
        folder = self.options.profile_dir
        assert folder is not None
        folder.mkdir(parents=True, exist_ok=True)
        server = Server(self, workers=1, cpus=self.server_cpus)
        server.start()
        server.wait_first_success()
        self.closed_loop(self.tollgate, stream=False, seconds=2, server=server)
        profiles = {}
        for name, stream in (("nonstream", False), ("stream", True)):
            raw = folder / f"{name}.txt"
            seconds = max(5, round(self.options.seconds))
            spy = self.processes.start(
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(server.pid),
                    "--rate",
                    "250",
                    "--duration",
                    str(seconds),
                    "--format",
                    "raw",
                    "--output",
                    str(raw),
                    "--nonblocking",
                ],
                cpus=self.client_cpus,
                log=self.workdir / "py-spy.log",
            )
            time.sleep(0.5)
            self.closed_loop(self.tollgate, stream=stream, seconds=seconds + 1, server=server)
            spy.wait(30)
            self.processes.stop(spy)
            if raw.exists():
                profiles[name] = summarise(raw)
                self.log(f"profile of the {name} path written to {raw}")
        server.stop()
        self.results["profile"] = profiles
        self.cprofile(folder)

    def cprofile(self, folder: Path) -> None:
        """The worker in-process under cProfile (bench/cprofile_server.py), one run a path."""
        from profile_report import summarise_pstats

        for name, stream in (("nonstream", False), ("stream", True)):
            stats = folder / f"{name}.pstats"
            server = Server(
                self,
                workers=1,
                cpus=self.server_cpus,
                command=[
                    sys.executable,
                    str(HERE / "cprofile_server.py"),
                    "--port",
                    str(self.port),
                    "--out",
                    str(stats),
                    "--skip",
                    "300",
                ],
                log=f"cprofile-{name}.log",
            )
            server.start()
            server.wait_first_success()
            self.closed_loop(self.tollgate, stream=stream, seconds=2, server=server)
            self.closed_loop(
                self.tollgate, stream=stream, seconds=max(5, self.options.seconds), server=server
            )
            server.stop()
            if stats.exists():
                self.results["profile"][f"{name} (cProfile)"] = summarise_pstats(stats)
                self.log(f"cProfile of the {name} path written to {stats}")

    # --- measuring -------------------------------------------------------------------------

    def closed_loop(
        self,
        target: Target,
        *,
        stream: bool,
        seconds: float,
        server: Server | Peer | None = None,
        keys: Sequence[str] | None = None,
        connections: int | None = None,
        client_cpus: set[int] | str | None = "default",
    ) -> dict[str, Any]:
        body = chat_body(target.model, stream=stream)
        keys = list(keys if keys is not None else target.keys)
        connections = connections or self.options.connections
        cpus = self.client_cpus if client_cpus == "default" else client_cpus
        measure = server is not None
        # A peer has no database: only Tollgate's runs read PostgreSQL's CPU and the WAL.
        tollgate = isinstance(server, Server)
        if measure:
            assert server is not None
            pg = postgres_processes(self.args.db_name) if self.local_db and tollgate else []
            cpu0, db0 = server.cpu(), cpu_seconds(pg)
            wal0 = wal_position(self.db_dsn) if tollgate else 0
            machine0 = _busy_seconds()
            sampler: contextlib.AbstractContextManager[Any] = RssSampler(server)
        else:
            sampler = contextlib.nullcontext()
        with sampler:
            if self.wrk:
                load = run_wrk(
                    self.wrk,
                    host=target.host,
                    port=target.port,
                    body=body,
                    keys=keys,
                    connections=connections,
                    seconds=seconds,
                    cpus=cpus if isinstance(cpus, set) else None,
                    workdir=self.workdir,
                    headers=target.headers,
                )
            else:
                load = run_python_load(
                    host=target.host,
                    port=target.port,
                    body=body,
                    keys=keys,
                    connections=connections,
                    seconds=seconds,
                    headers=target.headers,
                )
        out: dict[str, Any] = {
            "requests": load.requests,
            "seconds": round(load.seconds, 3),
            "rps": load.rps,
            "p50_ms": load.p50_ms,
            "p90_ms": load.p90_ms,
            "p99_ms": load.p99_ms,
            "errors": load.errors,
            "generator": load.generator,
        }
        if measure:
            assert server is not None
            cpu1, db1 = server.cpu(), cpu_seconds(pg)
            wal1 = wal_position(self.db_dsn) if tollgate else 0
            machine1 = _busy_seconds()
            n = max(load.requests, 1)
            out["server_cpu_ms_per_request"] = (cpu1 - cpu0) * 1000 / n
            out["server_cpu_utilisation"] = (cpu1 - cpu0) / load.seconds if load.seconds else None
            out["machine_busy_cores"] = (
                (machine1 - machine0) / load.seconds if load.seconds else None
            )
            out["machine_cpu_ms_per_request"] = (machine1 - machine0) * 1000 / n
            out["db_cpu_ms_per_request"] = (db1 - db0) * 1000 / n if pg else None
            out["wal_bytes_per_request"] = (wal1 - wal0) / n if tollgate else None
            out["peak_rss_mb"] = sampler.peak if isinstance(sampler, RssSampler) else None
            if tollgate:
                self.served += load.requests
                self.client_completed += load.requests
        if load.errors:
            self.log(f"  {target.name}: errors {load.errors}")
        self.log(
            f"  {target.name:8} {'stream' if stream else 'json':6} {connections:3}c "
            f"{load.rps:9.1f} req/s  p50 {load.p50_ms:7.2f} ms  p99 {load.p99_ms:7.2f} ms"
            + (
                f"  cpu {out['server_cpu_ms_per_request']:.3f} ms/req"
                if "server_cpu_ms_per_request" in out
                else ""
            )
        )
        return out

    def series(
        self,
        target: Target,
        *,
        stream: bool,
        count: int,
        server: Server | Peer | None = None,
        keys: Sequence[str] | None = None,
        paced: bool = False,
    ) -> dict[str, Any]:
        """`count` requests one after another on one connection, each timed by the client."""
        model = target.paced_model if paced else target.model
        body = chat_body(model, stream=stream)
        keys = list(keys if keys is not None else target.keys)
        headers = {"Content-Type": "application/json", **target.headers}
        if keys:
            headers["Authorization"] = f"Bearer {keys[0]}"
        client = Client(target.host, target.port)
        warm = min(20, max(2, count // 10))
        totals, firsts = [], []
        failures: dict[str, int] = {}
        cpu0 = server.cpu() if server else 0.0
        done = 0
        try:
            for i in range(count + warm):
                reply = client.request(
                    "POST", CHAT_PATH, body, headers, mark=FIRST_TOKEN if stream else None
                )
                done += 1
                problem = _check_reply(reply, stream=stream, tokens=20 if paced else None)
                if problem:
                    failures[problem] = failures.get(problem, 0) + 1
                    continue
                if i < warm:
                    continue
                totals.append(reply.seconds)
                if reply.mark_seconds is not None:
                    firsts.append(reply.mark_seconds)
        finally:
            client.close()
        cpu1 = server.cpu() if server else 0.0
        if isinstance(server, Server):
            self.served += done
            self.client_completed += done
        totals.sort()
        firsts.sort()
        out: dict[str, Any] = {
            "requests": len(totals),
            "p50_ms": _percentile(totals, 50) * 1000,
            "p90_ms": _percentile(totals, 90) * 1000,
            "p99_ms": _percentile(totals, 99) * 1000,
            "mean_ms": statistics.fmean(totals) * 1000 if totals else float("nan"),
            "failures": failures,
        }
        if stream:
            out["first_p50_ms"] = _percentile(firsts, 50) * 1000
            out["first_p90_ms"] = _percentile(firsts, 90) * 1000
            out["first_p99_ms"] = _percentile(firsts, 99) * 1000
        if server is not None:
            out["server_cpu_ms_per_request"] = (cpu1 - cpu0) * 1000 / max(done, 1)
        if failures:
            self.log(f"  {target.name}: failures {failures}")
        self.log(
            f"  {target.name:8} {'stream' if stream else 'json':6}   1c "
            f"p50 {out['p50_ms']:7.2f} ms  p99 {out['p99_ms']:7.2f} ms"
            + (f"  first p50 {out['first_p50_ms']:6.2f} ms" if stream else "")
        )
        return out


def _check_reply(reply: Reply, *, stream: bool, tokens: int | None) -> str | None:
    """A short description of what is wrong with an answer, or None."""
    if reply.status != 200:
        return f"status {reply.status}"
    body = reply.body
    if stream:
        if not body.rstrip().endswith(b"data: [DONE]"):
            return "stream without [DONE]"
        if b'"usage"' not in body:
            return "stream without usage"
        if tokens is not None and f'" tok{tokens - 1}"'.encode() not in body:
            return "stream missing tokens"
    elif b'"usage"' not in body or FIRST_TOKEN[:-1] not in body:
        return "completion without text or usage"
    return None


def _tollgate_command(kind: str, workdir: Path) -> tuple[list[str], str]:
    """How to start `tollgate`, and a line saying which installation it runs from.

    "deployed" (the default) installs the workspace as the Dockerfile does (``uv sync --locked
    --no-dev --all-packages``) into a virtual environment in the work folder: the server then
    carries what a deployment carries, and not the test tools of the development environment
    (google-genai alone brings in `cryptography`, which PyJWT then imports: about 8 MB of RSS).
    "current" runs the `tollgate` of the interpreter running this script.
    """
    if kind == "deployed":
        uv = shutil.which("uv")
        if uv is None:
            raise BenchError("--server-env deployed needs uv on the PATH (or --server-env current)")
        venv = workdir / "venv"
        env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)}
        subprocess.run(
            [uv, "sync", "--locked", "--no-dev", "--all-packages", "--quiet"],
            cwd=HERE.parent,
            env=env,
            check=True,
        )
        line = "deployed (uv sync --locked --no-dev --all-packages)"
        return [str(venv / "bin" / "tollgate")], line
    current = "current (the development environment)"
    script = Path(sys.executable).with_name("tollgate")
    if script.exists():
        return [str(script)], current
    found = shutil.which("tollgate")
    if found:
        return [found], current
    return [sys.executable, "-c", "from tollgate_cli.main import main; main()"], current


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    wrk_version = ""
    wrk = shutil.which("wrk")
    if wrk:
        with contextlib.suppress(Exception):
            out = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=5)
            wrk_version = (out.stdout + out.stderr).splitlines()[0]
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "wrk": wrk_version,
        "revision": _revision(),
    }


def _revision() -> str:
    """The checked-out commit, and whether the packages differ from it (read-only git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=HERE,
            timeout=10,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--", "packages"],
            capture_output=True,
            cwd=HERE.parent,
            timeout=10,
            check=False,
        ).returncode
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" + uncommitted changes in packages/" if changed else "")


# --- the report ----------------------------------------------------------------------------


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if value != value:
            return "n/a"
        return f"{value:.{digits}f}"
    return str(value)


def report(results: dict[str, Any], options: Options) -> str:
    r = results
    lines: list[str] = []
    add = lines.append
    m = r["machine"]
    add(
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"Python {m['python']}; load generator: {r['load_generator']}; pinning: {r['pinning']}"
    )
    add(f"Server installation: {r.get('server_environment', 'n/a')}")
    add(f"Server log: {r.get('server_log', 'n/a')}")
    add(f"Code: {m.get('revision', 'unknown')}")
    add(
        "Load average (1, 5, 15 min) at start "
        f"{', '.join(f'{x:.2f}' for x in r.get('load_average_at_start', ()))}, at end "
        f"{', '.join(f'{x:.2f}' for x in r.get('load_average_at_end', ()))}: anything above "
        "about 1.5 on 2 CPUs means other work shared the machine"
    )
    c = options.connections
    add("")
    add(
        "| workload | direct to mock | through Tollgate | added "
        "| Tollgate CPU/req | DB CPU/req | WAL/req |"
    )
    add("|---|---|---|---|---|---|---|")

    def loop_row(label: str, d: dict[str, Any] | None, t: dict[str, Any]) -> None:
        direct = f"{d['rps']:.0f} req/s" if d else ""
        add(
            f"| {label} req/s | {direct} | {t['rps']:.0f} req/s | | "
            f"{_f(t.get('server_cpu_ms_per_request'), 3)} ms | "
            f"{_f(t.get('db_cpu_ms_per_request'), 3)} ms | "
            f"{_f(t.get('wal_bytes_per_request'), 0)} B |"
        )
        dl = f"{d['p50_ms']:.2f} / {d['p90_ms']:.2f} / {d['p99_ms']:.2f}" if d else ""
        added = f"+{t['p50_ms'] - d['p50_ms']:.2f} ms" if d else ""
        add(
            f"| {label} p50/p90/p99 ms | {dl} | "
            f"{t['p50_ms']:.2f} / {t['p90_ms']:.2f} / {t['p99_ms']:.2f} | {added} p50 | | | |"
        )
        if t.get("errors"):
            add(f"| {label} errors | | {t['errors']} | | | | |")

    def series_row(label: str, d: dict[str, Any], t: dict[str, Any], key: str = "") -> None:
        p = f"{key}p50_ms", f"{key}p90_ms", f"{key}p99_ms"
        add(
            f"| {label} p50/p90/p99 ms | {d[p[0]]:.2f} / {d[p[1]]:.2f} / {d[p[2]]:.2f} | "
            f"{t[p[0]]:.2f} / {t[p[1]]:.2f} / {t[p[2]]:.2f} | "
            f"+{t[p[0]] - d[p[0]]:.2f} ms p50 | "
            f"{_f(t.get('server_cpu_ms_per_request'), 3) + ' ms' if not key else ''} | | |"
        )
        if t.get("failures"):
            add(f"| {label} failures | | {t['failures']} | | | | |")

    ns1 = r["nonstream_1c"]
    series_row("non-stream, 1 at a time (API key)", ns1["direct"], ns1["tollgate"])
    series_row("non-stream, 1 at a time (JWT)", ns1["direct"], ns1["tollgate_jwt"])
    ns = r["nonstream_16c"]
    loop_row(
        f"non-stream, {c} concurrent (API key, {options.accounts} accounts)",
        ns["direct"],
        ns["tollgate"],
    )
    loop_row(f"non-stream, {c} concurrent (JWT)", None, ns["tollgate_jwt"])
    loop_row(f"non-stream, {c} concurrent (one account, one key)", None, ns["tollgate_one_account"])
    s1 = r["stream_1c"]
    series_row(
        f"stream {options.tokens} tokens, 1 at a time: first chunk",
        s1["direct"],
        s1["tollgate"],
        "first_",
    )
    series_row(
        f"stream {options.tokens} tokens, 1 at a time: last chunk", s1["direct"], s1["tollgate"]
    )
    sp = r["stream_paced_1c"]
    series_row("stream 20 tokens paced 10 ms: first chunk", sp["direct"], sp["tollgate"], "first_")
    series_row("stream 20 tokens paced 10 ms: last chunk", sp["direct"], sp["tollgate"])
    s16 = r["stream_16c"]
    loop_row(f"stream {options.tokens} tokens, {c} concurrent", s16["direct"], s16["tollgate"])
    add("")
    add(
        f"Memory (RSS of the worker): idle after start {r['rss_idle_mb']:.1f} MB; after warm-up "
        f"({r['served_at_warm']} requests) {r['rss_warm_mb']:.1f} MB; peak under load "
        f"{max(ns['tollgate']['peak_rss_mb'], s16['tollgate']['peak_rss_mb']):.1f} MB; idle after "
        f"{r['served_at_end']} requests {r['rss_after_mb']:.1f} MB "
        f"({(r['rss_after_mb'] / r['rss_warm_mb'] - 1) * 100:+.1f} % since warm-up)."
    )
    add(
        "Start to first successful request (existing database, 1 worker): "
        f"{r['start_to_first_request_s']:.2f} s (port open after "
        f"{_f(r.get('start_to_listening_s'))} s)"
    )
    if "scaling" in r:
        s = r["scaling"]
        w1, w2 = s["workers_1"], s["workers_2"]
        add(
            f"Scaling (unpinned, {s['connections']} connections, shared with mock, load generator "
            f"and PostgreSQL): 1 worker {w1['rps']:.0f} req/s "
            f"({w1['server_cpu_ms_per_request']:.3f} ms CPU/req), 2 workers {w2['rps']:.0f} req/s "
            f"({w2['server_cpu_ms_per_request']:.3f} ms CPU/req): x{s['ratio']:.2f}; the machine "
            f"was {_f(w2.get('machine_busy_cores'))} of {r['machine']['cpus']} cores busy, "
            f"{_f(w2.get('machine_cpu_ms_per_request'))} ms of CPU per request in all "
            "(Tollgate, PostgreSQL, mock, load generator); "
            f"2-worker start to first request "
            f"{w2['start_to_first_request_s']:.2f} s, idle RSS "
            f"{', '.join(f'{x:.1f}' for x in w2['rss_idle_mb'])} MB; the two workers' shares "
            f"of their CPU time: {', '.join(f'{x:.0%}' for x in w2['worker_cpu_share'] if x)}"
        )
    lines.append("")
    lines.extend(targets_table(r, options))
    if r.get("peers"):
        from peers import comparison_table

        lines.append("")
        for name, info in r["peers"].items():
            add(
                f"Peer {name}: {info['version']}; first successful request "
                f"{_f(info.get('start_to_first_request_s'), 1)} s after its start, idle RSS "
                f"{_f(info.get('rss_idle_mb'), 1)} MB"
            )
        add("Ratios are Tollgate's figure / the peer's (CPU and latency: below 1 is cheaper).")
        add("")
        lines.extend(
            comparison_table(
                r, list(r["peers"]), connections=options.connections, tokens=options.tokens
            )
        )
    led = r.get("ledger")
    if led:
        lines.append("")
        statuses = ", ".join(
            f"{k} {v['count']} (cost {v['cost_micro'] / 1e6:.6f})"
            for k, v in led["statuses"].items()
        )
        add(
            f"Generations by status: {statuses}; unsettled {led['pending']}; "
            f"ledger entries {led['ledger_entries']}"
        )
        if led["violations"]:
            add("LEDGER INVARIANT VIOLATIONS:")
            for rule, rows in led["violations"].items():
                add(f"  - {rule}: {rows}")
        else:
            add("Ledger invariants: clean (tollgate_server.services.invariants.find_violations)")
        odd = {
            k: v
            for k, v in led["statuses"].items()
            if k not in ("completed", "client_disconnected")
        }
        if odd:
            add(f"WARNING: generations that did not complete: {odd}")
    return "\n".join(lines)


def targets_table(r: dict[str, Any], options: Options) -> list[str]:
    ns1, ns, s1, sp, s16 = (
        r["nonstream_1c"],
        r["nonstream_16c"],
        r["stream_1c"],
        r["stream_paced_1c"],
        r["stream_16c"],
    )
    rows: list[tuple[str, str, float | None, Callable[[float], bool]]] = [
        (
            "non-stream gateway CPU per request (16 concurrent)",
            "<= 1.2 ms",
            ns["tollgate"]["server_cpu_ms_per_request"],
            lambda v: v <= 1.2,
        ),
        (
            f"non-stream req/s at {options.connections} concurrent on one core",
            ">= 900",
            ns["tollgate"]["rps"],
            lambda v: v >= 900,
        ),
        (
            "non-stream added median latency, 1 at a time",
            "<= 1.5 ms",
            ns1["tollgate"]["p50_ms"] - ns1["direct"]["p50_ms"],
            lambda v: v <= 1.5,
        ),
        (
            "stream added time to first chunk, 1 at a time",
            "<= 1.5 ms",
            s1["tollgate"]["first_p50_ms"] - s1["direct"]["first_p50_ms"],
            lambda v: v <= 1.5,
        ),
        (
            "stream of 20 tokens paced 10 ms: last chunk later than direct",
            "<= 1 ms",
            sp["tollgate"]["p50_ms"] - sp["direct"]["p50_ms"],
            lambda v: v <= 1.0,
        ),
        (
            f"gateway CPU per {options.tokens}-chunk stream",
            "<= 1.5 ms",
            s16["tollgate"]["server_cpu_ms_per_request"],
            lambda v: v <= 1.5,
        ),
        (
            "WAL bytes per stream minus per non-stream request (no write per chunk)",
            "~0",
            s16["tollgate"]["wal_bytes_per_request"] - ns["tollgate"]["wal_bytes_per_request"],
            lambda v: abs(v) < 0.25 * ns["tollgate"]["wal_bytes_per_request"],
        ),
        (
            "idle RSS per worker",
            "<= 100 MB",
            r["rss_idle_mb"],
            lambda v: v <= 100,
        ),
        (
            f"RSS growth after {r['served_at_end']} requests (since warm-up)",
            "within 10 %",
            (r["rss_after_mb"] / r["rss_warm_mb"] - 1) * 100,
            lambda v: abs(v) <= 10,
        ),
        (
            "start to first successful request (existing database)",
            "<= 3 s",
            r["start_to_first_request_s"],
            lambda v: v <= 3,
        ),
    ]
    if "scaling" in r and r["scaling"].get("ratio"):
        rows.append(
            (
                "2 workers / 1 worker req/s (both unpinned, on this machine)",
                ">= 1.7x",
                r["scaling"]["ratio"],
                lambda v: v >= 1.7,
            )
        )
    out = ["| target | goal | measured | |", "|---|---|---|---|"]
    for name, goal, value, ok in rows:
        verdict = "n/a" if value is None else ("met" if ok(value) else "MISSED")
        out.append(f"| {name} | {goal} | {_f(value)} | {verdict} |")
    if r["served_at_end"] < 100_000:
        out.append(
            f"(memory growth measured over {r['served_at_end']} requests, fewer than the "
            "target's 100,000: use the full run)"
        )
    return out


# --- entry point ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, Options]:
    parser = argparse.ArgumentParser(
        description="Benchmark Tollgate against a mock upstream, side by side with direct runs.",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of about a minute")
    parser.add_argument(
        "--database-url",
        help="PostgreSQL server to use (default: TOLLGATE_DATABASE_URL, else "
        "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres); only the database named by "
        "--db-name on it is dropped and created",
    )
    parser.add_argument("--db-name", default="tollgate_bench", help="the bench database's name")
    parser.add_argument("--keep-db", action="store_true", help="keep the bench database after")
    parser.add_argument(
        "--seconds", type=float, help="length of each closed-loop run (15; quick 2)"
    )
    parser.add_argument("--connections", type=int, default=16, help="closed-loop concurrency")
    parser.add_argument("--accounts", type=int, default=16, help="accounts (one API key each)")
    parser.add_argument("--tokens", type=int, default=16, help="output tokens per answer")
    parser.add_argument(
        "--soak-requests",
        type=int,
        help="serve at least this many requests through one server before the last memory "
        "reading (100000; quick 0)",
    )
    parser.add_argument("--no-scaling", action="store_true", help="skip the 2-worker comparison")
    parser.add_argument(
        "--key-limits",
        action="store_true",
        help="API keys with a monthly spend limit and rpm/tpm limits (never reached), to "
        "compare with keys without limits",
    )
    parser.add_argument(
        "--server-env",
        choices=("deployed", "current"),
        default="deployed",
        help="run the server from an installation like the Dockerfile's, made in the work "
        "folder (deployed, the default), or from this interpreter's environment (current)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--metrics",
        default="token",
        choices=["off", "open", "token"],
        help="TOLLGATE_METRICS for the server (default token, the server's default: recorded)",
    )
    parser.add_argument(
        "--server-log-level",
        default="warning",
        choices=["warning", "info"],
        help="the server's --log-level (default warning: no access line; info writes one per "
        "request, to the work folder's server.log)",
    )
    parser.add_argument(
        "--server-log-format",
        default="text",
        choices=["text", "json"],
        help="TOLLGATE_LOG_FORMAT for the server (default text)",
    )
    parser.add_argument(
        "--python-load",
        action="store_true",
        help="use the Python load generator even if wrk is installed",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="also profile the worker with py-spy (raw stacks and a summary into DIR)",
    )
    parser.add_argument("--py-spy", help="path of the py-spy executable")
    parser.add_argument("--port", type=int, help="Tollgate's port (default: a free one)")
    parser.add_argument("--mock-port", type=int, help="the mock's port (default: a free one)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument(
        "--peers",
        default="",
        help="other gateways to give the same workloads in the same run, comma-separated: "
        "portkey, litellm (installed outside the repository; see bench/peers.py)",
    )
    parser.add_argument(
        "--peers-dir",
        default=str(Path("~/.cache/tollgate-bench")),
        help="where the peers are installed (default ~/.cache/tollgate-bench)",
    )
    args = parser.parse_args(argv)
    from peers import PeerError, parse_peers

    try:
        args.peers = parse_peers(args.peers)
    except PeerError as exc:
        parser.error(str(exc))
    quick = args.quick
    options = Options(
        quick=quick,
        seconds=args.seconds or (2.0 if quick else 15.0),
        connections=args.connections,
        latency_requests=300 if quick else 2000,
        stream_requests=200 if quick else 1000,
        paced_requests=15 if quick else 100,
        soak_requests=(0 if quick else 100_000)
        if args.soak_requests is None
        else args.soak_requests,
        accounts=max(1, args.accounts),
        tokens=args.tokens,
        scaling=not args.no_scaling,
        profile_dir=args.profile,
        key_limits=args.key_limits,
    )
    return args, options


def main(argv: Sequence[str] | None = None) -> int:
    args, options = parse_args(argv)
    sys.path.insert(0, str(HERE))
    bench = Bench(args, options)

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    try:
        results = bench.run()
    except KeyboardInterrupt:
        print("interrupted; stopping what the benchmark started", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        bench.processes.stop_all()
        if not args.keep_db:
            with contextlib.suppress(Exception):
                drop_database(bench.maintenance_dsn, args.db_name)
    results["total_seconds"] = round(time.monotonic() - started, 1)
    text = report(results, options)
    print()
    print(text)
    if "profile" in results:
        from profile_report import format_summary

        for name, summary in results["profile"].items():
            print()
            print(format_summary(name, summary))
    print(f"\n(total {results['total_seconds']} s; work folder {bench.workdir})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    led = results.get("ledger", {})
    return 1 if led.get("violations") else 0


if __name__ == "__main__":
    sys.exit(main())
