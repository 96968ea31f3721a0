"""Other gateways measured beside Tollgate (issue 23): Portkey's gateway and LiteLLM's proxy.

`bench/run.py --peers portkey,litellm` installs them outside the repository (under
``--peers-dir``, default ``~/.cache/tollgate-bench``), starts each in front of the same mock
upstream as Tollgate, pinned to the CPU Tollgate's worker runs on, and sends them the same
workloads, one after another with Tollgate's in the same run. Nothing of theirs is vendored.

- **Portkey** ``@portkey-ai/gateway`` (Node), started as its package's ``bin``
  (``build/start-server.js --port=N --headless``). It has no model table: each request names
  the provider and the upstream's base URL in headers (``x-portkey-provider: openai``,
  ``x-portkey-custom-host: http://127.0.0.1:PORT/v1``) and its ``Authorization`` is passed
  on to the upstream. Its dependency ``@hono/node-server`` is held at 1.13.5 (an npm
  ``overrides`` entry): from 1.14 on, Portkey's streaming answers fail with
  ``TypeError: immutable`` (Portkey-AI/gateway issue 1389); 1.13.5 is the version Portkey's
  repository carries a patch for.
- **LiteLLM** ``litellm[proxy]`` (Python) in its own virtual environment, with
  ``opentelemetry-sdk`` (see `OPENTELEMETRY_SDK_VERSION`), started as
  ``litellm --config FILE --port N --num_workers 1`` with one model per mock workload
  (``openai/mock-t16``, ``openai/mock-t20-p10``, ``api_base`` = the mock). No database; it
  refuses to start without a master key, so it has one and every request carries it.
  ``LITELLM_LOCAL_MODEL_COST_MAP=True`` keeps it from fetching its price list at start-up.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

PORTKEY_VERSION = "1.15.2"
HONO_NODE_SERVER_VERSION = "1.13.5"
"""Portkey's streaming path needs it; see the module's docstring."""
LITELLM_VERSION = "1.108.7"
OPENTELEMETRY_SDK_VERSION = "1.45.2"
"""Installed beside LiteLLM, which `litellm[proxy]` does not pull in but its key check imports on
every request (`_seed_request_destinations`): without it the failing import is retried each
time, about 30 % of LiteLLM's CPU per request here (py-spy). LiteLLM is measured with it."""
PEERS = ("portkey", "litellm")
TITLES = {"portkey": "Portkey", "litellm": "LiteLLM"}
LITELLM_MASTER_KEY = "sk-bench-litellm-master-key-0123456789abcdef"
UPSTREAM_KEY = "sk-bench-mock-upstream"
"""The mock accepts any key; Portkey passes the client's on, LiteLLM sends this one."""


class PeerError(Exception):
    """A peer could not be installed or started; the message says what ran and what failed."""


def _run(command: Sequence[str], **kwargs: Any) -> None:
    done = subprocess.run(list(command), capture_output=True, text=True, check=False, **kwargs)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip()[-2000:]
        raise PeerError(f"`{' '.join(command)}` failed ({done.returncode}):\n{tail}")


def install_portkey(root: Path) -> tuple[list[str], str]:
    """npm-installs the gateway under `root`/portkey-VERSION (once); the command and version."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        raise PeerError("Portkey needs node and npm on the PATH")
    prefix = root / f"portkey-{PORTKEY_VERSION}"
    package = prefix / "node_modules" / "@portkey-ai" / "gateway"
    manifest = {
        "private": True,
        "dependencies": {"@portkey-ai/gateway": PORTKEY_VERSION},
        "overrides": {"@hono/node-server": HONO_NODE_SERVER_VERSION},
    }
    wanted = json.dumps(manifest, indent=2) + "\n"
    package_json = prefix / "package.json"
    if not (package / "package.json").exists() or package_json.read_text() != wanted:
        prefix.mkdir(parents=True, exist_ok=True)
        package_json.write_text(wanted)
        _run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund"])
    installed = json.loads((package / "package.json").read_text())["version"]
    hono = json.loads(
        (prefix / "node_modules" / "@hono" / "node-server" / "package.json").read_text()
    )["version"]
    # The package's `bin` is build/start-server.js.
    return [node, str(package / "build" / "start-server.js")], (
        f"@portkey-ai/gateway {installed} (@hono/node-server {hono}), node "
        f"{subprocess.run([node, '--version'], capture_output=True, text=True).stdout.strip()}"
    )


def install_litellm(root: Path) -> tuple[list[str], str]:
    """A virtual environment with litellm[proxy] under `root` (once); the command and version."""
    uv = shutil.which("uv")
    if uv is None:
        raise PeerError("LiteLLM is installed with uv, which is not on the PATH")
    venv = root / f"litellm-{LITELLM_VERSION}"
    python = venv / "bin" / "python"
    if not python.exists():
        _run([uv, "venv", "--quiet", str(venv)])
    # Pinned: a no-op once installed (uv checks the environment first).
    requirements = [
        f"litellm[proxy]=={LITELLM_VERSION}",
        f"opentelemetry-sdk=={OPENTELEMETRY_SDK_VERSION}",
    ]
    _run([uv, "pip", "install", "--quiet", "--python", str(python), *requirements])
    versions = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m; "
            "print(m.version('litellm'), m.version('opentelemetry-sdk'))",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    litellm, otel = [*versions, "unknown", "unknown"][:2]
    return [str(venv / "bin" / "litellm")], f"litellm[proxy] {litellm} (opentelemetry-sdk {otel})"


@dataclass
class Peer:
    """One started peer gateway: where to send requests, and its processes' figures.

    Duck-types what `run.py`'s measuring code reads from its `Server`: `cpu()`,
    `worker_processes()` (for the RSS sampler) and `rss()`.
    """

    name: str
    version: str
    port: int
    headers: dict[str, str]
    key: str
    model: str
    paced_model: str
    proc: subprocess.Popen[bytes] | None = None
    started_at: float | None = None
    """time.monotonic() when its start command ran."""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def processes(self) -> list[psutil.Process]:
        try:
            parent = psutil.Process(self.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.Error:
            return []

    def worker_processes(self) -> list[psutil.Process]:
        return self.processes()

    def cpu(self) -> float:
        total = 0.0
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def rss(self) -> list[float]:
        out = []
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                out.append(proc.memory_info().rss / 2**20)
        return out


@dataclass
class Launch:
    """How to start one peer: the command, its environment and the Peer it becomes."""

    command: list[str]
    env: dict[str, str]
    peer: Peer


def prepare(
    name: str, root: Path, *, port: int, mock_port: int, workdir: Path, tokens: int
) -> Launch:
    """Installs `name` if needed and says how to start it in front of the mock."""
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    upstream = f"http://127.0.0.1:{mock_port}/v1"
    if name == "portkey":
        command, version = install_portkey(root)
        return Launch(
            [*command, f"--port={port}", "--headless"],
            # production: no log console routes; headless: no browser page.
            {**base_env, "NODE_ENV": "production"},
            Peer(
                name="portkey",
                version=version,
                port=port,
                headers={"x-portkey-provider": "openai", "x-portkey-custom-host": upstream},
                key=UPSTREAM_KEY,
                model=f"mock-t{tokens}",
                paced_model="mock-t20-p10",
            ),
        )
    if name == "litellm":
        command, version = install_litellm(root)
        config = workdir / "litellm.yaml"
        config.write_text(_litellm_config(upstream, tokens))
        return Launch(
            [
                *command,
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--num_workers",
                "1",
            ],
            {
                **base_env,
                "LITELLM_MASTER_KEY": LITELLM_MASTER_KEY,
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_LOG": "ERROR",
            },
            Peer(
                name="litellm",
                version=version,
                port=port,
                headers={},
                key=LITELLM_MASTER_KEY,
                model="bench-model",
                paced_model="bench-paced",
            ),
        )
    raise PeerError(f"unknown peer {name!r} (known: {', '.join(PEERS)})")


def _litellm_config(upstream: str, tokens: int) -> str:
    # JSON is YAML: no YAML writer needed.
    models = [
        {
            "model_name": name,
            "litellm_params": {
                "model": f"openai/{upstream_model}",
                "api_base": upstream,
                "api_key": UPSTREAM_KEY,
            },
        }
        for name, upstream_model in (
            ("bench-model", f"mock-t{tokens}"),
            ("bench-paced", "mock-t20-p10"),
        )
    ]
    return json.dumps({"model_list": models}, indent=2) + "\n"


def parse_peers(value: str | None) -> list[str]:
    names = [n.strip().lower() for n in (value or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise PeerError(f"unknown peer(s) {', '.join(unknown)} (known: {', '.join(PEERS)})")
    return list(dict.fromkeys(names))


def wait_ready(peer: Peer, body: bytes, timeout: float, client_factory: Any) -> float:
    """Seconds until the peer answers a chat completion with 200 (start-up included)."""
    assert peer.proc is not None
    started = time.monotonic()
    deadline = started + timeout
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {peer.key}",
        **peer.headers,
    }
    last = ""
    while time.monotonic() < deadline:
        if peer.proc.poll() is not None:
            raise PeerError(f"{peer.name} exited with {peer.proc.returncode}")
        client = client_factory("127.0.0.1", peer.port)
        try:
            reply = client.request("POST", "/v1/chat/completions", body, headers, timeout=10)
            if reply.status == 200:
                return time.monotonic() - started
            last = f"{reply.status} {reply.body[:300]!r}"
        except OSError as exc:
            last = str(exc)
        finally:
            client.close()
        time.sleep(0.2)
    raise PeerError(f"{peer.name} did not answer a chat completion in {timeout:g} s ({last})")


# --- the comparison table ------------------------------------------------------------------


def _ratio(tollgate: float | None, peer: float | None) -> str:
    if tollgate is None or peer is None or not peer or tollgate != tollgate or peer != peer:
        return "n/a"
    return f"{tollgate / peer:.2f}"


def _with_db(figures: dict[str, Any] | None) -> float | None:
    if not figures or figures.get("server_cpu_ms_per_request") is None:
        return None
    return float(figures["server_cpu_ms_per_request"] + (figures.get("db_cpu_ms_per_request") or 0))


def _num(value: float | None, unit: str, digits: int = 2) -> str:
    if value is None or value != value:
        return "n/a"
    if unit == "req/s":
        return f"{value:,.0f} req/s"
    return f"{value:.{digits}f} {unit}"


def comparison_table(
    r: dict[str, Any], names: Sequence[str], *, connections: int, tokens: int
) -> list[str]:
    """Each figure for direct, Tollgate and every peer, and Tollgate's ratio to each peer.

    Ratio = Tollgate's figure / the peer's. For req/s above 1 means Tollgate is faster; for
    CPU and latency below 1 means Tollgate costs less.
    """
    ns1, ns, s1, sp, s16 = (
        r["nonstream_1c"],
        r["nonstream_16c"],
        r["stream_1c"],
        r["stream_paced_1c"],
        r["stream_16c"],
    )

    def added(group: dict[str, Any], who: str, key: str) -> float | None:
        if who not in group:
            return None
        return float(group[who][key] - group["direct"][key])

    def get(group: dict[str, Any], who: str, key: str) -> float | None:
        value = group.get(who, {}).get(key)
        return None if value is None else float(value)

    rows: list[tuple[str, str, Any]] = [
        (
            f"non-stream, {connections} concurrent (higher is better)",
            "req/s",
            lambda who: get(ns, who, "rps"),
        ),
        (
            f"gateway CPU per non-stream request ({connections} concurrent)",
            "ms",
            lambda who: get(ns, who, "server_cpu_ms_per_request"),
        ),
        (
            "the same plus its database's CPU (Tollgate's PostgreSQL; the peers have none)",
            "ms",
            lambda who: _with_db(ns.get(who)),
        ),
        (
            "non-stream, 1 at a time: added median latency",
            "ms",
            lambda who: added(ns1, who, "p50_ms"),
        ),
        (
            f"stream {tokens} chunks, {connections} concurrent (higher is better)",
            "req/s",
            lambda who: get(s16, who, "rps"),
        ),
        (
            f"gateway CPU per {tokens}-chunk stream ({connections} concurrent)",
            "ms",
            lambda who: get(s16, who, "server_cpu_ms_per_request"),
        ),
        (
            "stream, 1 at a time: added time to first chunk (p50)",
            "ms",
            lambda who: added(s1, who, "first_p50_ms"),
        ),
        (
            "stream 20 tokens paced 10 ms: end later than direct (p50)",
            "ms",
            lambda who: added(sp, who, "p50_ms"),
        ),
        (
            f"peak RSS under load (non-stream, {connections} concurrent)",
            "MB",
            lambda who: get(ns, who, "peak_rss_mb"),
        ),
    ]
    titles = [TITLES.get(n, n) for n in names]
    header = ["workload", "direct", "Tollgate", *titles, *[f"Tollgate:{t}" for t in titles]]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, unit, value in rows:
        direct = value("direct") if unit == "req/s" else None
        tollgate = value("tollgate")
        peers = [value(n) for n in names]
        cells = [
            label,
            _num(direct, unit) if direct is not None else "",
            _num(tollgate, unit),
            *[_num(p, unit) for p in peers],
            *[_ratio(tollgate, p) for p in peers],
        ]
        out.append("| " + " | ".join(cells) + " |")
    # A closed loop ends with up to `connections` requests in flight: their CPU is in the
    # figure but they are not counted, which matters only when few requests completed.
    thin = [
        f"{who} {label}: {group[who]['requests']} requests"
        for label, group in ((f"non-stream {connections}c", ns), (f"stream {connections}c", s16))
        for who in ("tollgate", *names)
        if who in group and group[who]["requests"] < 10 * connections
    ]
    if thin:
        out.append("")
        out.append(
            f"Fewer than {10 * connections} requests completed in these closed loops, so the "
            f"CPU of up to {connections} requests still in flight at the end overstates their "
            "CPU per request (use longer runs, --seconds): " + "; ".join(thin)
        )
    failures = []
    for key in ("nonstream_1c", "nonstream_16c", "stream_1c", "stream_paced_1c", "stream_16c"):
        for who in names:
            got = r[key].get(who, {})
            bad = got.get("errors") or got.get("failures")
            if bad:
                failures.append(f"{who} {key}: {bad}")
    if failures:
        out.append("")
        out.append("Failed requests (the figures above count only the good ones): ")
        out.extend(f"  - {f}" for f in failures)
    return out
