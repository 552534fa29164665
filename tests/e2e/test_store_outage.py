"""MongoDB outages seen from a real `switchboard serve`: unreachable at start → the process
starts, /readyz fails, and it becomes ready when MongoDB comes; lost while serving → channel
requests get 503 with Retry-After, and the redelivered message is then answered once."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.conftest import ADMIN_TOKEN
from tests.fixtures.mongo import SecantusServer
from tests.fixtures.server import ServeProcess


def _post(url: str, mid: str) -> httpx.Response:
    return httpx.post(f"{url}/bots/tiny/webhooks/web", timeout=30,
                      json={"conversation_id": "outage", "message_id": mid, "text": "where is my order 42"})


def test_mongodb_down_at_start_then_lost_while_serving(tiny_bot_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    db = SecantusServer(tmp_path / "db")  # not started yet: MongoDB is unreachable
    env = {"SWITCHBOARD_MONGODB_URI": db.uri(), "SWITCHBOARD_ADMIN_TOKEN": ADMIN_TOKEN}
    server = ServeProcess([tiny_bot_dir], data_dir=tmp_path / "s", env=env).launch()
    try:
        deadline = time.monotonic() + 60
        while True:  # the process is up (liveness) but not ready
            try:
                if httpx.get(server.url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        time.sleep(3)  # the model has loaded by now; the store still cannot be reached
        ready = httpx.get(server.url + "/readyz", timeout=10)
        assert ready.status_code == 503 and "store" in ready.text, ready.text
        assert _post(server.url, "m0").status_code == 503

        db.start()
        server.wait_ready()  # ready once MongoDB answers, without a restart
        assert _post(server.url, "m1").status_code == 200

        db.stop()  # lost while serving
        refused = _post(server.url, "m2")
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"]
        assert httpx.get(server.url + "/readyz", timeout=10).status_code == 503

        db.start()
        server.wait_ready()
        first = _post(server.url, "m2")  # the sender redelivers
        again = _post(server.url, "m2")
        assert first.status_code == again.status_code == 200
        assert first.json() == again.json()
        turns = httpx.get(f"{server.url}/bots/tiny/conversations/outage", timeout=10,
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()["turns"]
        assert [t["message_id"] for t in turns if t["message_id"]] == ["m1", "m2"]
        assert all(t["status"] == "done" for t in turns)
    finally:
        server.stop()
        db.stop()
    assert "Traceback" not in server.log(), server.log()
