"""Live takeover and the web widget's server side: the WebSocket protocol (ack, typing, reply,
idempotent resend, agent messages, streaming hook), the origin allow-list, history, and an
agent's reply reaching a Slack customer through the fake Slack API."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from bots.settings import Settings
from bots.types import BotResponse, Understanding
from connectors.app import create_app
from connectors.outgoing import RetryPolicy
from tests.connectors.test_review_api import add_users, sign_in
from tests.connectors.test_slack import slack_channel
from tests.fixtures.fake_slack import FakeSlack, event_body, sign
from tests.fixtures.fake_slack import fake_slack as fake_slack
from tests.fixtures.web_widget import history, widget_socket

SHOP = "https://shop.example"
WS = "/bots/tiny/webhooks/web/ws"


def _ready(client: TestClient) -> None:
    deadline = time.monotonic() + 30
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.fixture
def web(tiny_bot_dir: Path, settings: Settings) -> Iterator[TestClient]:
    add_users(settings.data_dir, ann="agent")
    app = create_app(replace(settings, widget_origins=(SHOP,)), [tiny_bot_dir])
    with TestClient(app) as client:
        _ready(client)
        yield client


def frames_until(ws: Any, kind: str, limit: int = 10) -> list[dict[str, Any]]:
    seen = []
    for _ in range(limit):
        frame = ws.receive_json()
        seen.append(frame)
        if frame["type"] == kind:
            return seen
    raise AssertionError(f"no {kind!r} frame in {seen}")


def test_message_ack_typing_reply_and_idempotent_resend(web: TestClient, settings: Settings) -> None:
    with widget_socket(web, settings, "w1", headers={"origin": SHOP}) as ws:
        ws.send_json({"type": "message", "id": "m1", "text": "I want to cancel my order 123"})
        frames = frames_until(ws, "reply")
        assert [f["type"] for f in frames] == ["ack", "typing", "reply"]
        reply = frames[-1]
        assert reply["id"] == "m1" and reply["seq"] == 1
        assert reply["responses"][0]["text"] == "Order 123 is being cancelled."
        ws.send_json({"type": "message", "id": "m1", "text": "I want to cancel my order 123"})  # a resend
        again = frames_until(ws, "reply")
        assert again[-1]["responses"] == reply["responses"] and again[-1]["seq"] == 1
        ws.send_json({"type": "message", "id": "m2", "text": "   "})
        assert ws.receive_json() == {"type": "error", "id": "m2", "retry": False,
                                     "detail": "text is empty: send what the customer typed, or a button payload"}
        ws.send_json({"type": "message", "id": "m3", "payload": '/track_order{"order_id": "77"}', "text": "Track"})
        assert frames_until(ws, "reply")[-1]["responses"][0]["text"] == "Order 77 is on its way."
    answer = history(web, settings, "w1", headers={"origin": SHOP})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == SHOP
    body = answer.json()
    assert body["last_seq"] == 2  # the resend was answered from the stored turn, not stored again
    assert [(m["role"], m["text"]) for m in body["messages"]] == [
        ("user", "I want to cancel my order 123"), ("bot", "Order 123 is being cancelled."),
        ("user", "Track"), ("bot", "Order 77 is on its way.")]


def test_origin_allow_list(web: TestClient, settings: Settings) -> None:
    with pytest.raises(WebSocketDisconnect) as closed, \
            web.websocket_connect(f"{WS}?conversation_id=w1", headers={"origin": "https://evil.example"}) as ws:
        ws.receive_json()
    assert closed.value.code == 1008
    with widget_socket(web, settings, "w1", headers={"origin": "http://testserver"}) as ws:
        ws.send_json({"type": "message", "id": "m1", "text": "hello"})  # the server's own pages are allowed
        assert frames_until(ws, "reply")[-1]["responses"][0]["text"] == "Hello! How can I help you today?"
    with pytest.raises(WebSocketDisconnect) as closed, \
            web.websocket_connect(f"{WS}?conversation_id=bad%20id", headers={"origin": SHOP}) as ws:
        ws.receive_json()
    assert closed.value.code == 1008
    r = web.options("/bots/tiny/webhooks/web", headers={"origin": SHOP, "access-control-request-method": "POST"})
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == SHOP
    r = web.options("/bots/tiny/webhooks/web", headers={"origin": "https://evil.example"})
    assert r.status_code == 403 and "SWITCHBOARD_WIDGET_ORIGINS" in r.json()["detail"]
    r = web.post("/bots/tiny/webhooks/web", json={"conversation_id": "p1", "message_id": "m1", "text": "hello"},
                 headers={"origin": "https://evil.example"})
    assert r.status_code == 403
    assert web.get("/widget.js").headers["content-type"].startswith("text/javascript")


def test_bad_origin_setting_stops_start_up(monkeypatch: pytest.MonkeyPatch, tiny_bot_dir: Path,
                                           settings: Settings) -> None:
    from bots.errors import ConfigError

    monkeypatch.setenv("SWITCHBOARD_WIDGET_ORIGINS", "https://ok.example, shop.example")
    with pytest.raises(ConfigError, match=r"SWITCHBOARD_WIDGET_ORIGINS: 'shop\.example' is not an origin"):
        Settings.from_env()
    monkeypatch.setenv("SWITCHBOARD_WIDGET_ORIGINS", "https://ok.example,http://127.0.0.1:8080")
    app = create_app(replace(settings, widget_origins=Settings.from_env().widget_origins), [tiny_bot_dir])
    assert app.state.channels["web"].origins.allows("http://127.0.0.1:8080", "bots.example")


def test_takeover_reply_reaches_the_widget_and_hand_back_resumes_the_bot(web: TestClient, settings: Settings) -> None:
    csrf = sign_in(web, "ann")
    h = {"X-CSRF-Token": csrf}
    base = "/review/api/bots/tiny/conversations/w1"
    with widget_socket(web, settings, "w1", headers={"origin": SHOP}) as ws:
        ws.send_json({"type": "message", "id": "m1", "text": "I want to talk to a human"})
        frames_until(ws, "reply")
        assert web.post(f"{base}/takeover", headers=h).json() == {"paused": True}
        queue = web.get("/review/api/queue").json()
        assert [c["conversation_id"] for c in queue["items"]] == ["w1"]

        r = web.post(f"{base}/reply", json={"text": "Hi, I'm Ann from support <b>here</b>"}, headers=h)
        assert r.status_code == 200 and r.json()["delivered"] is True
        agent = frames_until(ws, "agent")[-1]
        assert agent["responses"][0]["text"] == "Hi, I'm Ann from support <b>here</b>"
        assert agent["responses"][0]["source"] == "human"

        ws.send_json({"type": "message", "id": "m2", "text": "hello"})  # the bot stays silent while paused
        assert frames_until(ws, "reply")[-1]["responses"] == []

        assert web.post(f"{base}/handback", headers=h).json() == {"paused": False}
        ws.send_json({"type": "message", "id": "m3", "text": "hello"})
        assert frames_until(ws, "reply")[-1]["responses"][0]["text"] == "Hello! How can I help you today?"

    t = web.get(base).json()
    kinds = [e["kind"] for turn in t["turns"] for e in turn["events"] if e["kind"] in ("pause", "agent", "resume")]
    assert kinds == ["pause", "agent", "resume"]
    assert t["summary"]["handoff"] is False and t["paused"] is False
    assert web.get("/review/api/queue").json()["total"] == 0
    seen = history(web, settings, "w1").json()
    assert ("agent", "Hi, I'm Ann from support <b>here</b>") in [(m["role"], m["text"]) for m in seen["messages"]]


def test_agent_reply_reaches_a_reconnecting_widget_once(web: TestClient, settings: Settings) -> None:
    csrf = sign_in(web, "ann")
    with widget_socket(web, settings, "w2", headers={"origin": SHOP}) as ws:
        ws.send_json({"type": "message", "id": "m1", "text": "hello"})
        last_seq = frames_until(ws, "reply")[-1]["seq"]
    # the customer is offline while the agent answers; the widget reconnects with what it has seen
    web.post("/review/api/bots/tiny/conversations/w2/reply", json={"text": "Are you still there?"},
             headers={"X-CSRF-Token": csrf})
    with widget_socket(web, settings, "w2", after=last_seq, headers={"origin": SHOP}) as ws:
        agent = frames_until(ws, "agent")[-1]
        assert agent["responses"][0]["text"] == "Are you still there?"
        ws.send_json({"type": "message", "id": "m2", "text": "yes"})
        frames = frames_until(ws, "reply")
        assert not [f for f in frames if f["type"] == "agent"]  # not sent twice


class _StreamingAnswers:
    """An answer provider that writes its answer in three steps, as a generation model does."""

    async def answer(self, kind: str | None, text: str, understanding: Understanding, values: Mapping[str, str],
                     *, partial: Callable[[str], Awaitable[None]] | None = None) -> BotResponse | None:
        if understanding.intent != "track_order":
            return None
        shown = ""
        for piece in ("Your parcel", " left our warehouse", " this morning."):
            shown += piece
            if partial is not None:
                await partial(shown)
        return BotResponse(text=shown, source="generation")


def test_a_generated_answer_streams_to_the_widget_before_the_reply(web: TestClient, settings: Settings) -> None:
    runtime = web.app.state.runtime  # type: ignore[attr-defined]
    runtime.bots["tiny"].answers = _StreamingAnswers()
    with widget_socket(web, settings, "w3", headers={"origin": SHOP}) as ws:
        ws.send_json({"type": "message", "id": "m1", "text": "where is my order 42"})
        frames = frames_until(ws, "reply")
    assert [f["type"] for f in frames] == ["ack", "typing", "partial", "partial", "partial", "reply"]
    assert [f["text"] for f in frames if f["type"] == "partial"] == [
        "Your parcel", "Your parcel left our warehouse", "Your parcel left our warehouse this morning."]
    assert all(f["id"] == "m1" for f in frames[2:])
    assert frames[-1]["responses"][0]["text"] == "Your parcel left our warehouse this morning."
    # the webhook (no socket to stream to) gets the same answer, once, with no partials anywhere
    r = web.post("/bots/tiny/webhooks/web", json={"conversation_id": "w4", "message_id": "m1",
                                                  "text": "where is my order 42"})
    assert r.json()["responses"][0]["text"] == "Your parcel left our warehouse this morning."


def test_agent_reply_reaches_a_slack_customer(tiny_bot_dir: Path, settings: Settings, fake_slack: FakeSlack) -> None:
    secret = "8f742231b10e8888abcd99yyyzzz85a5"
    add_users(settings.data_dir, ann="agent")
    slack = slack_channel(fake_slack, policy=RetryPolicy(attempts=2, base_delay_s=0.01))
    with TestClient(create_app(settings, [tiny_bot_dir], channels=[slack])) as client:
        _ready(client)
        body = event_body({"type": "message", "channel": "D1", "channel_type": "im", "user": "U42",
                           "text": "I need a live agent", "ts": "1700000001.000100", "event_ts": "1700000001.000100"})
        r = client.post("/bots/tiny/webhooks/slack", content=body,
                        headers={"Content-Type": "application/json", **sign(secret, body)})
        assert r.status_code == 200
        fake_slack.wait_for("chat.postMessage")
        csrf = sign_in(client, "ann")
        r = client.post("/review/api/bots/tiny/conversations/slack:T1:D1/reply",
                        json={"text": "Ann here, how can I help?"}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200, r.text
        calls = fake_slack.wait_for("chat.postMessage", 2)
        assert calls[-1].params["channel"] == "D1"
        assert calls[-1].params["text"] == "Ann here, how can I help?"
        assert calls[-1].token == "xoxb-team-one"


def test_socket_messages_are_rate_limited_per_client(tiny_bot_dir: Path, settings: Settings) -> None:
    from dataclasses import replace

    limited = replace(settings, rate_per_ip=0.01, rate_per_ip_burst=2)
    with TestClient(create_app(limited, [tiny_bot_dir])) as client:
        _ready(client)
        with widget_socket(client, limited, "r1") as ws:
            for i in range(2):
                ws.send_json({"type": "message", "id": f"m{i}", "text": "hello"})
                frames_until(ws, "reply")
            ws.send_json({"type": "message", "id": "m9", "text": "hello"})
            error = ws.receive_json()
            assert error["type"] == "error" and error["id"] == "m9" and error["retry"] is True
            assert error["retry_after"] > 1
