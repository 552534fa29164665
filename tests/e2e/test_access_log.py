"""What a real `switchboard serve` writes to its log about the web widget: never the conversation id
or its token. uvicorn logs each WebSocket handshake with the URL's query string
(``"WebSocket /bots/tiny/webhooks/web/ws?conversation_id=..."``); bots/logs.py strips query
strings from uvicorn's records, so a log reader cannot learn which conversation to ask for.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from websockets.sync.client import connect

from tests.fixtures.server import ServeProcess


def test_the_log_of_a_widget_conversation_holds_no_conversation_id(tiny_bot_dir: Path, tmp_path: Path) -> None:
    with ServeProcess([tiny_bot_dir], data_dir=tmp_path / "data", env={"SWITCHBOARD_LOG_LEVEL": "DEBUG"}) as server:
        started = httpx.post(f"{server.url}/bots/tiny/webhooks/web/conversations", timeout=10)
        assert started.status_code == 201, started.text
        cid, token = started.json()["conversation_id"], started.json()["token"]
        ws_url = server.url.replace("http", "ws") + f"/bots/tiny/webhooks/web/ws?conversation_id={cid}&after=0"
        with connect(ws_url, open_timeout=10) as ws:
            ws.send(json.dumps({"type": "auth", "token": token}))
            ws.send(json.dumps({"type": "message", "id": "m1", "text": "hello"}))
            while json.loads(ws.recv(timeout=20))["type"] != "reply":
                pass
        history = httpx.get(f"{server.url}/bots/tiny/webhooks/web/history?conversation_id={cid}",
                            headers={"X-Conversation-Token": token}, timeout=10)
        assert history.status_code == 200 and history.json()["messages"][0]["text"] == "hello"
    log = server.log_path.read_text(errors="replace")
    messages = [json.loads(line)["msg"] for line in log.splitlines() if line.startswith("{")]
    # The handshake was logged (so this test reads the right lines), without its query string; at
    # DEBUG the request line too.
    assert any(m.endswith(' - "WebSocket /bots/tiny/webhooks/web/ws" [accepted]') for m in messages), log[-3000:]
    assert "< GET /bots/tiny/webhooks/web/ws HTTP/1.1" in messages
    assert cid not in log and token not in log
