from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from fastapi.testclient import TestClient

from connectors.app import create_app
from connectors.limits import RateLimiter


def test_token_bucket_allows_bursts_then_paces() -> None:
    limiter = RateLimiter(rate=2.0, burst=3.0)
    assert [limiter.allow("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.allow("a", now=0.0) == 0.5  # the 4th must wait half a second at 2/s
    assert limiter.allow("b", now=0.0) == 0.0  # other keys are independent
    assert limiter.allow("a", now=0.6) == 0.0


def test_memory_is_bounded() -> None:
    limiter = RateLimiter(rate=1.0, burst=1.0, max_keys=100)
    for i in range(10_000):
        limiter.allow(f"k{i}", now=0.0)
    assert len(limiter._buckets) == 100


def test_disabled_limiter_allows_everything() -> None:
    limiter = RateLimiter(rate=0.0, burst=1.0)
    assert all(limiter.allow("a", now=0.0) == 0.0 for _ in range(1000))


def test_web_connector_answers_429_with_retry_after_per_client(tiny_bot_dir: Path, settings) -> None:  # type: ignore[no-untyped-def]
    app = create_app(replace(settings, rate_per_ip=0.5, rate_per_ip_burst=3.0), [tiny_bot_dir])
    with TestClient(app) as client:
        statuses = []
        for i in range(5):
            r = client.post("/bots/tiny/webhooks/web", json={"conversation_id": f"c{i}", "message_id": "m",
                                                               "text": "hello"})
            statuses.append(r.status_code)
        assert statuses[3:] == [429, 429]
        assert int(r.headers["Retry-After"]) >= 1
        assert "too many messages" in r.json()["detail"]
        assert client.get("/healthz").status_code == 200  # probes and metrics are never limited
