"""The widget's WebSocket answers every frame that fails with an ``error`` frame, and stays open:
never a task exception nobody retrieves, never a silent drop (the widget would resend forever)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
from fastapi.testclient import TestClient

from bots.settings import Settings
from bots.store.sqlite import SQLiteStore
from connectors.app import create_app
from tests.connectors.test_slack import _ready, shared_model
from tests.fixtures.web_widget import widget_socket


class FaultyStore(SQLiteStore):
    """The embedded store, failing the next write of a reply with an unexpected error (a fault to inject)."""

    fail_next_complete = False

    async def complete(self, *args: Any, **kwargs: Any) -> Any:
        if self.fail_next_complete:
            self.fail_next_complete = False
            raise RuntimeError("injected fault")
        return await super().complete(*args, **kwargs)


def receive_json(ws: Any, timeout_s: float = 10.0) -> Any:
    """``ws.receive_json()`` with a deadline: Starlette's test session waits forever, so a frame the
    server drops would hang the test instead of failing it (its receive stream, read the same way)."""

    async def receive() -> Any:
        with anyio.fail_after(timeout_s):
            return await ws._send_rx.receive()

    message = ws.portal.call(receive)
    assert message["type"] == "websocket.send", f"the server closed the socket: {message}"
    return json.loads(message["text"])


def until(ws: Any, done: Any) -> list[dict[str, Any]]:
    """Frames received until ``done(frame)``, that one included."""
    frames = [receive_json(ws)]
    while not done(frames[-1]):
        frames.append(receive_json(ws))
    return frames


def test_a_frame_whose_answer_fails_gets_an_error_frame(tiny_bot_dir: Path, settings: Settings) -> None:
    store = FaultyStore(settings.data_dir / "conversations.db")
    with TestClient(create_app(settings, [tiny_bot_dir], store=store, model_loader=shared_model)) as client:
        _ready(client)
        with widget_socket(client, settings, "sock1") as ws:
            store.fail_next_complete = True
            ws.send_json({"type": "message", "id": "m1", "text": "hello"})
            frames = until(ws, lambda f: f["type"] == "typing")
            time.sleep(0.5)  # the answer fails meanwhile
            ws.send_json({"type": "message", "id": "m2", "text": "where is my order"})
            frames += until(ws, lambda f: f["type"] == "reply" and f["id"] == "m2")
        errors = [f for f in frames if f["type"] == "error"]
        assert [(f["id"], f["retry"]) for f in errors] == [("m1", False)], frames
        assert "could not be answered" in errors[0]["detail"]
        assert frames[:2] == [{"type": "ack", "id": "m1", "seq": 1}, {"type": "typing", "on": True, "id": "m1"}]
        # the failed message was stored (acknowledged): the next message's turn answered it too
        auth = {"Authorization": f"Bearer {settings.admin_token}"}
        turns = client.get("/bots/tiny/conversations/sock1", headers=auth)
        assert [t["status"] for t in turns.json()["turns"]] == ["done", "done"]
        text = client.get("/metrics").text
        assert 'switchboard_errors_total{bot="tiny",channel="web",stage="internal"} 1.0' in text


def test_a_frame_that_is_not_json_gets_an_error_frame_and_the_socket_stays_open(
        tiny_bot_dir: Path, settings: Settings) -> None:
    with TestClient(create_app(settings, [tiny_bot_dir], model_loader=shared_model)) as client:
        _ready(client)
        with widget_socket(client, settings, "sock1") as ws:
            for bad in ("{not json", "[1, 2]", '"text"', '{"type": "message", "id": "bad id!"}'):
                ws.send_text(bad)
                frame = receive_json(ws)
                assert (frame["type"], frame["id"], frame["retry"]) == ("error", None, False), (bad, frame)
                assert "JSON object" in frame["detail"]
            ws.send_json({"type": "message", "id": "m1", "text": "hello"})
            frames = until(ws, lambda f: f["type"] == "reply")
        assert [f["type"] for f in frames] == ["ack", "typing", "reply"]
