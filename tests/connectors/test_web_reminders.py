"""A reminder in the web chat, through the real app: the bot's answer to it is pushed to the open widget
(a ``bot`` frame: no request of the widget's waits for it), the widget's history shows the answer and
not the firing as something the customer wrote, and the review transcript has both."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from bots.settings import Settings
from connectors.app import create_app
from tests.bots.keyword_model import keyword_loader
from tests.bots.test_reminders import ANSWER, REMIND_AFTER_S, reminder_bot
from tests.conftest import ADMIN_TOKEN
from tests.fixtures.web_widget import history, widget_socket


def frames_until_reply(ws: Any, message_id: str) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = ws.receive_json()
        frames.append(frame)
        if frame["type"] == "reply" and frame["id"] == message_id:
            return frames


def test_the_answer_to_a_reminder_is_pushed_to_the_widget(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", admin_token=ADMIN_TOKEN, nlu_max_wait_ms=0.0,
                        reminder_poll_s=0.1, model_poll_s=0)
    app = create_app(settings, [reminder_bot(tmp_path)], model_loader=keyword_loader)
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").text
            time.sleep(0.05)
        with widget_socket(client, settings, "c1", bot="shop") as ws:
            ws.send_json({"type": "message", "id": "m1", "text": "remind me", "payload": "/remind_me_keep"})
            first = frames_until_reply(ws, "m1")
            assert [r["text"] for r in first[-1]["responses"]] == ["I'll remind you in a second."]
            deadline = time.monotonic() + REMIND_AFTER_S + 5
            while not any(m["role"] == "bot" and m["text"] == ANSWER
                          for m in history(client, settings, "c1", bot="shop").json()["messages"]):
                assert time.monotonic() < deadline, "the reminder did not fire"
                time.sleep(0.05)
            time.sleep(0.5)  # the push follows the answer being stored at once
            ws.send_json({"type": "message", "id": "m2", "text": "hello"})
            later = frames_until_reply(ws, "m2")
        pushed = [f for f in later if f["type"] == "bot"]
        assert [[r["text"] for r in f["responses"]] for f in pushed] == [[ANSWER]]
        assert pushed[0]["seq"] == first[-1]["seq"] + 1

        messages = history(client, settings, "c1", bot="shop").json()["messages"]
        assert [(m["role"], m.get("text")) for m in messages] == [
            ("user", "remind me"), ("bot", "I'll remind you in a second."), ("bot", ANSWER),
            ("user", "hello"), ("bot", "Hello! How can I help you today?")]
        transcript = client.get("/bots/shop/conversations/c1", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        firing = transcript.json()["turns"][1]
        assert firing["message_id"].startswith("reminder:check:")
        assert firing["events"][0]["data"]["text"] == "reminder check fired"
