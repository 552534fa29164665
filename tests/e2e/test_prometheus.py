"""A real Prometheus (Debian's `prometheus`) scrapes a running `switchboard serve`: the counters
and a latency quantile are read back through Prometheus' HTTP API, and the shipped hand-off alert
(k8s/monitoring/rules.yml, its expression as shipped) fires for a customer waiting for an agent
longer than its threshold, and stops once an agent takes the conversation."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from bots.events import BOT, PAUSE, USER, Event
from bots.handoff import bot_turn
from bots.store.factory import SQLITE_FILE
from bots.store.sqlite import SQLiteStore
from tests.conftest import ADMIN_TOKEN
from tests.fixtures.server import ServeProcess, free_port

RULES = Path(__file__).resolve().parents[2] / "k8s" / "monitoring" / "rules.yml"


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


@contextlib.contextmanager
def prometheus(binary: str, tmp_path: Path, targets: list[str], rules: Path | None = None) -> Iterator[str]:
    """A Prometheus scraping ``targets`` (and evaluating ``rules``) every second; yields its URL."""
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        **({"rule_files": [str(rules)]} if rules else {}),
        "scrape_configs": [{"job_name": "switchboard", "static_configs": [{"targets": targets}]}],
    }))
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_prometheus_scrapes_counters_and_latency_quantile(served: ServeProcess, prometheus_binary: str,
                                                          tmp_path: Path) -> None:
    with prometheus(prometheus_binary, tmp_path, [f"127.0.0.1:{served.port}"]) as prom:
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


def _handoff_rule_for_the_test(tmp_path: Path) -> Path:
    """rules.yml's hand-off alert with its expression exactly as shipped; only ``for`` is shortened
    (a test cannot wait the shipped 5 minutes)."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    shipped = next(r for g in groups for r in g["rules"] if r.get("alert") == "SwitchboardHandoffQueueStale")
    assert "switchboard_handoff_oldest_seconds" in shipped["expr"] and "> 900" in shipped["expr"]
    rule = {**shipped, "for": "1s"}
    assert rule["expr"] == shipped["expr"]
    path = tmp_path / "handoff-rule.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "handoff-test", "rules": [rule]}]}))
    return path


async def _customer_handed_off_at(data_dir: Path, conversation_id: str, at: float) -> None:
    """A conversation the bot handed off at ``at``, stored as the runtime stores a hand-off turn."""
    store = SQLiteStore(data_dir / SQLITE_FILE)
    await store.start()
    try:
        await store.enqueue("tiny", conversation_id, "web", "", {}, "m1", Event(USER, {"text": "zxq"}, at))
        events = [Event(BOT, {"text": "Handing you over", "source": "system"}, at), Event(PAUSE, {"reason": "x"}, at)]
        await store.complete("tiny", conversation_id, 1, events, bot_turn(events, at))
    finally:
        await store.aclose()


def _firing(prom: str) -> list[dict]:  # type: ignore[type-arg]
    return query(prom, 'ALERTS{alertname="SwitchboardHandoffQueueStale", alertstate="firing"}')


def test_handoff_alert_fires_for_a_customer_waiting_too_long(tiny_bot_dir: Path, prometheus_binary: str,
                                                             tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    asyncio.run(_customer_handed_off_at(data_dir, "waited", time.time() - 20 * 60))
    rules = _handoff_rule_for_the_test(tmp_path)
    with ServeProcess([tiny_bot_dir], data_dir=data_dir, env={"SWITCHBOARD_ADMIN_TOKEN": ADMIN_TOKEN}) as served, \
            prometheus(prometheus_binary, tmp_path, [f"127.0.0.1:{served.port}"], rules) as prom:
        # a customer handed off just now (two messages the bot does not understand): waiting, not too long
        for i in range(2):
            r = httpx.post(f"{served.url}/bots/tiny/webhooks/web",
                           json={"conversation_id": "fresh", "message_id": f"m{i}", "text": "zxq vbnm qwpo"})
            assert r.status_code == 200, r.text
        wait_for(prom, 'switchboard_handoff_queue{bot="tiny"}', lambda r: r and float(r[0]["value"][1]) == 2)
        firing = wait_for(prom, 'ALERTS{alertname="SwitchboardHandoffQueueStale", alertstate="firing"}',
                          lambda r: bool(r))
        assert [(a["metric"]["bot"], a["metric"]["severity"]) for a in firing] == [("tiny", "warning")]
        # an agent takes the long-waiting conversation: the fresh one alone is under the threshold
        r = httpx.post(f"{served.url}/review/api/bots/tiny/conversations/waited/takeover",
                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert r.status_code == 200, r.text
        oldest = wait_for(prom, 'switchboard_handoff_oldest_seconds{bot="tiny"}',
                          lambda r: r and float(r[0]["value"][1]) < 900)
        assert float(oldest[0]["value"][1]) < 60
        wait_for(prom, 'switchboard_handoff_queue{bot="tiny"}', lambda r: r and float(r[0]["value"][1]) == 1)
        deadline = time.monotonic() + 20
        while _firing(prom):
            assert time.monotonic() < deadline, "the alert kept firing after the agent took over"
            time.sleep(0.5)
