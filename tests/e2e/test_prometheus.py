"""A real Prometheus (Debian's `prometheus`) scrapes a running `switchboard serve`; the
counters and a latency quantile are read back through Prometheus' HTTP API."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.server import ServeProcess, free_port


@pytest.fixture
def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.fail("prometheus not found: `bash .ci/setup.sh --test` installs Debian's prometheus package")
    return path


@pytest.fixture
def served(tiny_bot_dir: Path, tmp_path: Path) -> Iterator[ServeProcess]:
    with ServeProcess([tiny_bot_dir], data_dir=tmp_path / "data") as server:
        yield server


def query(prom: str, expr: str) -> list[dict]:  # type: ignore[type-arg]
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=5)
    r.raise_for_status()
    body = r.json()
    assert body["status"] == "success", body
    return body["data"]["result"]  # type: ignore[no-any-return]


def wait_for(prom: str, expr: str, ok, timeout: float = 40.0) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    deadline = time.monotonic() + timeout
    result: list[dict] = []  # type: ignore[type-arg]
    while time.monotonic() < deadline:
        try:
            result = query(prom, expr)
            if ok(result):
                return result
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{expr} never satisfied the check; last result {result}")


def test_prometheus_scrapes_counters_and_latency_quantile(served: ServeProcess, prometheus_binary: str,
                                                          tmp_path: Path) -> None:
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: switchboard
    static_configs:
      - targets: ["127.0.0.1:{served.port}"]
""")
    proc = subprocess.Popen(
        [prometheus_binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    prom = f"http://127.0.0.1:{prom_port}"
    try:
        wait_for(prom, 'up{job="switchboard"}', lambda r: r and r[0]["value"][1] == "1")
        texts = ["I want to cancel my order 123", "hello", "where is my order 9", "zxq vbnm qwpo"]
        for i in range(20):
            r = httpx.post(f"{served.url}/bots/tiny/webhooks/web",
                           json={"conversation_id": f"p{i % 5}", "message_id": f"m{i}", "text": texts[i % 4]})
            assert r.status_code == 200, r.text
        result = wait_for(prom, 'sum(switchboard_messages_total{bot="tiny",channel="web",direction="in"})',
                          lambda r: r and float(r[0]["value"][1]) == 20)
        assert float(result[0]["value"][1]) == 20
        fallbacks = wait_for(prom, 'sum(switchboard_fallbacks_total{bot="tiny"})',
                             lambda r: r and float(r[0]["value"][1]) >= 5)
        assert float(fallbacks[0]["value"][1]) == 5
        # The quantile of the cumulative histogram (a rate() window could hold a single sample).
        p95 = wait_for(prom, 'histogram_quantile(0.95, sum by (le) (switchboard_message_seconds_bucket{bot="tiny"}))',
                       lambda r: r and r[0]["value"][1] not in ("NaN", "+Inf"))
        assert 0 < float(p95[0]["value"][1]) < 5.0
        # No label carries a user or conversation id.
        series = httpx.get(f"{prom}/api/v1/series", params={"match[]": '{job="switchboard"}'}).json()["data"]
        label_names = {k for s in series for k in s}
        assert not label_names & {"user", "user_id", "conversation", "conversation_id", "sender"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
