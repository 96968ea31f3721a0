"""The real tools: a Prometheus server scraping a live Tollgate, and promtool on the alert rules
and the scraped text. Debian's ``prometheus`` package provides both (CI installs it)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import User, make_settings
from support import ServerThread, free_port
from tollgate_server.app import create_app

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "tollgate.json"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
METRICS_TOKEN = "prometheus-scraper-" + "t" * 32

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)"
)


@needs_promtool
def test_promtool_checks_and_tests_the_alert_rules() -> None:
    assert PROMTOOL is not None
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout
    # Each alert fires on the situation it names (deploy/prometheus/alerts.test.yml).
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts.test.yml"],
        cwd=RULES.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


@pytest.fixture
def tollgate(
    database_url: str, provider_env: dict[str, str], tmp_path: Path
) -> Iterator[ServerThread]:
    settings = make_settings(
        database_url,
        tmp_path / "data",
        metrics="token",
        metrics_token=METRICS_TOKEN,
        db_pool_size=2,  # it shares the test database server with everything else
    )
    with ServerThread(create_app(settings, provider_env=provider_env)) as running:
        yield running


class Prometheus:
    """A prometheus process of the test's own: temporary config and data, a free loopback
    port, stopped at the end (never the distribution's service)."""

    def __init__(self, folder: Path, target: str) -> None:
        assert PROMETHEUS is not None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = folder / "prometheus.yml"
        shutil.copy(RULES, folder / "alerts.yml")
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "rule_files: [alerts.yml]\n"
            "scrape_configs:\n"
            "  - job_name: tollgate\n"
            "    authorization: {type: Bearer, credentials: " + METRICS_TOKEN + "}\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self.log = folder / "prometheus.log"
        with self.log.open("w") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={folder / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = answer.json()
        assert answer.status_code == 200 and body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(self, check: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if check():
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{what}: {self.log.read_text()[-2000:]}"
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@pytest.mark.postgres
@pytest.mark.e2e
@pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="prometheus is not installed (apt-get install prometheus)",
)
def test_a_real_prometheus_scrapes_tollgate(
    tollgate: ServerThread,
    make_user: Callable[..., User],
    test_models: dict[str, str],
    tmp_path: Path,
) -> None:
    assert PROMTOOL is not None
    user = make_user(credits=100)
    answer = httpx.post(
        f"{tollgate.url}/v1/chat/completions",
        headers=user.headers,
        json={"model": test_models["openai"], "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text

    prometheus = Prometheus(tmp_path, f"127.0.0.1:{tollgate.port}")
    try:
        prometheus.wait_for(
            lambda: httpx.get(f"{prometheus.url}/-/ready", timeout=2).status_code == 200, "ready"
        )
        # A scrape has happened, and it succeeded (with the bearer token).
        prometheus.wait_for(
            lambda: [r["value"][1] for r in prometheus.query('up{job="tollgate"}')] == ["1"],
            "a successful scrape",
        )
        names = httpx.get(f"{prometheus.url}/api/v1/label/__name__/values", timeout=10).json()
        tollgate_names = {name for name in names["data"] if name.startswith("tollgate_")}
        for expected in (
            "tollgate_http_requests_total",
            "tollgate_http_request_duration_seconds_bucket",
            "tollgate_generations_total",
            "tollgate_input_tokens_total",
            "tollgate_output_tokens_total",
            "tollgate_credits_charged_microcredits_total",
            "tollgate_credits_held_microcredits",
            "tollgate_generations_in_flight",
            "tollgate_upstream_first_token_seconds_bucket",
            "tollgate_upstream_duration_seconds_bucket",
            "tollgate_db_pool_connections_in_use",
            "tollgate_settlements_waiting",
        ):
            assert expected in tollgate_names, (expected, sorted(tollgate_names))
        completed = prometheus.query(
            f'tollgate_generations_total{{model="{test_models["openai"]}",status="completed"}}'
        )
        assert completed and float(completed[0]["value"][1]) >= 1
        assert completed[0]["metric"]["job"] == "tollgate"
        # The alert rules load and evaluate in this Prometheus.
        rules = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()
        loaded = [rule["name"] for group in rules["data"]["groups"] for rule in group["rules"]]
        assert "TollgateSettlementsWaiting" in loaded and len(loaded) == 6
        # Every query of the Grafana dashboard is valid PromQL over these series.
        dashboard = json.loads(DASHBOARD.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                prometheus.query(target["expr"].replace("$__rate_interval", "1m"))
    finally:
        prometheus.stop()

    # promtool lints the exposition as it is served.
    scraped = httpx.get(
        f"{tollgate.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    assert scraped.status_code == 200
    linted = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=scraped.text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr
