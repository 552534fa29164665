from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from fastapi.testclient import TestClient

from connectors.app import create_app
from connectors.limits import RateLimiter
from tests.fixtures.web_widget import widget_socket


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


def _ready(client: TestClient) -> None:
    import time

    deadline = time.monotonic() + 30
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_per_conversation_limit_on_the_webhook(tiny_bot_dir: Path, settings) -> None:  # type: ignore[no-untyped-def]
    limited = replace(settings, rate_per_ip=0.0, rate_per_conversation=0.2, rate_per_conversation_burst=2.0)
    with TestClient(create_app(limited, [tiny_bot_dir])) as client:
        _ready(client)

        def say(cid: str, mid: str) -> int:
            return client.post("/bots/tiny/webhooks/web",
                               json={"conversation_id": cid, "message_id": mid, "text": "hello"}).status_code

        assert [say("one", f"m{i}") for i in range(3)] == [200, 200, 429]
        assert say("two", "m0") == 200  # another conversation is not held back


def test_websocket_frames_are_bounded_and_idle_sockets_closed(tiny_bot_dir: Path, settings) -> None:  # type: ignore[no-untyped-def]
    from starlette.websockets import WebSocketDisconnect

    small = replace(settings, max_body_bytes=2048, ws_idle_timeout_s=1.0)
    with TestClient(create_app(small, [tiny_bot_dir])) as client:
        _ready(client)
        with widget_socket(client, small, "ws1") as ws:
            ws.send_text('{"type": "message", "id": "m1", "text": "' + "x" * 4000 + '"}')
            try:
                while True:
                    ws.receive_json()
            except WebSocketDisconnect as exc:
                assert exc.code == 1009
        with widget_socket(client, small, "ws1") as ws:
            try:
                while True:
                    ws.receive_json()  # say nothing: the server closes the idle socket
            except WebSocketDisconnect as exc:
                assert exc.code == 1000


def test_a_chunked_body_over_the_limit_is_413_like_a_declared_one(tiny_bot_dir: Path, settings) -> None:  # type: ignore[no-untyped-def]
    app = create_app(replace(settings, max_body_bytes=2048), [tiny_bot_dir])

    def chunks() -> Iterator[bytes]:  # no Content-Length: the size is known only while reading
        yield b'{"conversation_id": "c1", "message_id": "m1", "text": "'
        for _ in range(4):
            yield b"x" * 1000
        yield b'"}'

    with TestClient(app) as client:
        r = client.post("/bots/tiny/webhooks/web", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.request.headers.get("transfer-encoding") == "chunked" and "content-length" not in r.request.headers
        assert r.status_code == 413, r.text
        assert r.json() == {"detail": "request body is larger than 2048 bytes"}
        declared = client.post("/bots/tiny/webhooks/web", content=b"x" * 3000,
                               headers={"Content-Type": "application/json"})
        assert (declared.status_code, declared.json()) == (413, r.json())
