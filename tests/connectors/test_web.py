"""The web connector end to end: a trained tiny bot, the embedded store, the real app."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def post(client, text="I want to cancel my order 123", conversation_id="c1", message_id="m1", **extra):  # type: ignore[no-untyped-def]
    body = {"conversation_id": conversation_id, "message_id": message_id, "text": text, **extra}
    return client.post("/bots/tiny/webhooks/web", json=body)


def metric(client, name: str, **labels: str) -> float:  # type: ignore[no-untyped-def]
    text = client.get("/metrics").text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_cancel_order_answered_and_transcript_stored(web_client) -> None:  # type: ignore[no-untyped-def]
    r = post(web_client)
    assert r.status_code == 200, r.text
    reply = r.json()
    assert reply["responses"][0]["text"] == "Order 123 is being cancelled."
    assert reply["responses"][0]["source"] == "template"

    t = web_client.get("/bots/tiny/conversations/c1", headers=AUTH)
    assert t.status_code == 200, t.text
    transcript = t.json()
    assert transcript["summary"]["channel"] == "web"
    assert transcript["summary"]["last_intent"] == "cancel_order"
    [turn] = transcript["turns"]
    kinds = [e["kind"] for e in turn["events"]]
    assert kinds[0] == "user" and [k for k in kinds if k != "action"][-1] == "bot"
    assert turn["events"][-1]["data"] == {"name": "action_listen"}  # the engine records each action it ran
    user, nlu = turn["events"][0], turn["events"][1]
    assert user["data"]["text"] == "I want to cancel my order 123"
    assert nlu["data"]["intent"] == "cancel_order"
    assert 0.3 <= nlu["data"]["confidence"] <= 1.0
    assert {"entity": "order_id", "value": "123"}.items() <= nlu["data"]["entities"][0].items()
    assert [e["data"]["text"] for e in turn["events"] if e["kind"] == "bot"] == ["Order 123 is being cancelled."]


def test_repeated_message_id_is_answered_once(web_client) -> None:  # type: ignore[no-untyped-def]
    first = post(web_client, message_id="dup").json()
    again = post(web_client, message_id="dup").json()
    assert first == again
    turns = web_client.get("/bots/tiny/conversations/c1", headers=AUTH).json()["turns"]
    assert len(turns) == 1
    assert metric(web_client, "switchboard_messages_total", bot="tiny", channel="web", direction="in") == 1
    assert metric(web_client, "switchboard_duplicate_messages_total", bot="tiny", channel="web") == 1


def test_low_confidence_falls_back_with_top_intents(web_client) -> None:  # type: ignore[no-untyped-def]
    r = post(web_client, text="zxq vbnm qwpo")
    assert r.status_code == 200
    [resp] = r.json()["responses"]
    if resp["source"] != "fallback":
        pytest.fail(f"gibberish was answered confidently: {resp}")
    assert resp["text"].startswith("Sorry, I didn't understand")
    assert 1 <= len(resp["buttons"]) <= 3
    assert all(b["payload"].startswith("/") for b in resp["buttons"])
    assert metric(web_client, "switchboard_fallbacks_total", bot="tiny", channel="web") == 1


def test_button_payload_selects_intent(web_client) -> None:  # type: ignore[no-untyped-def]
    r = post(web_client, text="track order", payload='/track_order{"order_id": "77"}')
    assert r.json()["responses"][0]["text"] == "Order 77 is on its way."


def test_a_payload_sets_only_the_bots_entities(web_client, caplog) -> None:  # type: ignore[no-untyped-def]
    # Buttons are the bot's, but the payload is whatever the client sends: an entity the bot does not
    # declare is dropped (logged), never stored, templated or handed to actions.
    payload = '/track_order{"order_id": "77", "is_admin": "true", "refund_to": "XX-ATTACKER"}'
    with caplog.at_level("WARNING", logger="switchboard.runtime"):
        r = post(web_client, text="track order", payload=payload, conversation_id="p1")
    assert r.status_code == 200 and r.json()["responses"][0]["text"] == "Order 77 is on its way."
    [turn] = web_client.get("/bots/tiny/conversations/p1", headers=AUTH).json()["turns"]
    nlu = next(e for e in turn["events"] if e["kind"] == "nlu")
    assert [(e["entity"], e["value"]) for e in nlu["data"]["entities"]] == [("order_id", "77")]
    dropped = sorted(r.entity for r in caplog.records if r.getMessage() == "button payload entity dropped")
    assert dropped == ["is_admin", "refund_to"]


def test_payload_values_pass_the_slots_checks(caplog: pytest.LogCaptureFixture) -> None:
    from pathlib import Path

    from bots.botspec import load_bot
    from bots.dialogue.spec import parse_dialogue
    from bots.runtime import parse_payload

    bot = load_bot(Path(__file__).resolve().parents[1] / "data" / "dialogue_bot")
    dialogue = parse_dialogue(bot)  # order_id: text, regex \d{3,12}; quantity: integer 1-10, not from entities

    def entities(payload: str) -> list[tuple[str, str]]:
        understood = parse_payload(payload, bot, dialogue)
        assert understood is not None and understood.intent == "track_order"
        return [(e.entity, str(e.value)) for e in understood.entities]

    assert entities('/track_order{"order_id": "12345"}') == [("order_id", "12345")]
    assert entities('/track_order{"order_id": 4411}') == [("order_id", "4411")]
    with caplog.at_level("WARNING", logger="switchboard.runtime"):
        assert entities('/track_order{"order_id": "12; DROP TABLE"}') == []
        # a list is one entity per item (Rasa's unpack_regex_message), each item checked on its own
        assert entities('/track_order{"order_id": ["12345", {"x": 1}]}') == [("order_id", "12345")]
        assert entities('/track_order{"quantity": 3}') == []  # the slot is not filled from entities
    reasons = [r.reason for r in caplog.records if r.getMessage() == "button payload entity dropped"]
    assert reasons == ["the value does not pass slot 'order_id''s checks", "the value is not text or a number",
                       "not an entity of this bot"]


def test_metrics_count_messages_and_latency(web_client) -> None:  # type: ignore[no-untyped-def]
    post(web_client, message_id="a")
    post(web_client, text="hello", message_id="b")
    assert metric(web_client, "switchboard_messages_total", bot="tiny", channel="web", direction="in") == 2
    assert metric(web_client, "switchboard_messages_total", bot="tiny", channel="web", direction="out") == 2
    assert metric(web_client, "switchboard_message_seconds_count", bot="tiny", channel="web") == 2
    assert metric(web_client, "switchboard_nlu_seconds_count", bot="tiny") >= 1
    assert metric(web_client, "switchboard_model_info", bot="tiny") == 1


@pytest.mark.parametrize(
    ("kwargs", "status", "reason"),
    [
        ({"text": ""}, 422, "text is empty"),
        ({"text": "   "}, 422, "text is empty"),
        ({"text": "x" * 5000}, 422, "the limit is 4000"),
        ({"text": "x" * 100_000}, 413, "larger than"),
        ({"conversation_id": "../etc"}, 422, "conversation_id"),
        ({"message_id": ""}, 422, "message_id"),
        ({"colour": "red"}, 422, "colour"),
    ],
)
def test_bad_input_rejected_with_reason_and_nothing_stored(web_client, kwargs, status, reason) -> None:  # type: ignore[no-untyped-def]
    r = post(web_client, **kwargs)
    assert r.status_code == status, r.text
    assert reason in r.json()["detail"]
    listing = web_client.get("/bots/tiny/conversations", headers=AUTH).json()
    assert listing["total"] == 0
    assert metric(web_client, "switchboard_messages_total", direction="in") == 0


def test_malformed_json_and_unknown_bot(web_client) -> None:  # type: ignore[no-untyped-def]
    r = web_client.post("/bots/tiny/webhooks/web", content=b'{"conversation_id": "c1", "text": ',
                        headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert "JSON" in r.json()["detail"]
    r = web_client.post("/bots/nope/webhooks/web", json={"conversation_id": "c", "message_id": "m", "text": "hi"})
    assert r.status_code == 404
    assert "no bot named 'nope'" in r.json()["detail"]
    assert web_client.get("/bots/tiny/conversations", headers=AUTH).json()["total"] == 0


def test_admin_api_requires_the_token(web_client) -> None:  # type: ignore[no-untyped-def]
    post(web_client)
    assert web_client.get("/bots/tiny/conversations/c1").status_code == 401
    wrong = web_client.get("/bots/tiny/conversations/c1", headers={"Authorization": "Bearer wrong-token"})
    assert wrong.status_code == 401
    assert wrong.json()["detail"] == "wrong admin token"
    assert web_client.get("/bots/tiny/conversations/nope", headers=AUTH).status_code == 404


def test_probes_and_chat_page(web_client) -> None:  # type: ignore[no-untyped-def]
    assert web_client.get("/healthz").text == "ok"
    assert web_client.get("/readyz").status_code == 200
    page = web_client.get("/", follow_redirects=True)
    assert page.status_code == 200
    assert 'const bot = "tiny"' in page.text
    assert "textContent" in page.text


def test_the_chat_page_may_be_framed_only_by_allowed_origins(web_client, tiny_bot_dir, settings) -> None:  # type: ignore[no-untyped-def]
    import time
    from dataclasses import replace

    from fastapi.testclient import TestClient

    from connectors.app import create_app

    def csp(client: TestClient) -> str:
        deadline = time.monotonic() + 30
        while (page := client.get("/bots/tiny/chat")).status_code == 503:  # the model is loading
            assert time.monotonic() < deadline
            time.sleep(0.05)
        return str(page.headers["content-security-policy"])

    assert "frame-ancestors 'self';" in csp(web_client)  # by default only this server's own pages
    shops = replace(settings, widget_origins=("https://shop.example", "http://127.0.0.1:8080"))
    with TestClient(create_app(shops, [tiny_bot_dir])) as client:
        assert "frame-ancestors 'self' http://127.0.0.1:8080 https://shop.example;" in csp(client)
    with TestClient(create_app(replace(settings, widget_origins=("*",)), [tiny_bot_dir])) as client:
        assert "frame-ancestors *;" in csp(client)


# ---------------------------------------------------------------- conversation tokens (issue 16, item 9)
def test_history_needs_the_token_of_its_conversation(web_client, settings) -> None:  # type: ignore[no-untyped-def]
    """Knowing a conversation id alone (it was in access logs) no longer reads its transcript."""
    from connectors.web_tokens import ConversationTokens

    first = web_client.post("/bots/tiny/webhooks/web/conversations")
    second = web_client.post("/bots/tiny/webhooks/web/conversations")
    assert first.status_code == second.status_code == 201 and first.headers["cache-control"] == "no-store"
    cid, token = first.json()["conversation_id"], first.json()["token"]
    assert re.fullmatch(r"[0-9a-f]{32}", cid) and cid != second.json()["conversation_id"]
    assert post(web_client, conversation_id=cid).status_code == 200
    url = f"/bots/tiny/webhooks/web/history?conversation_id={cid}"
    for headers in ({}, {"X-Conversation-Token": "0" * 64}, {"X-Conversation-Token": second.json()["token"]},
                    {"X-Conversation-Token": token[:-1]}, {"X-Conversation-Token": "x" * 10_000}):
        refused = web_client.get(url, headers=headers)
        assert refused.status_code == 403 and "X-Conversation-Token" in refused.json()["detail"], headers
    shown = web_client.get(url, headers={"X-Conversation-Token": token})
    assert shown.status_code == 200
    assert [m["text"] for m in shown.json()["messages"] if m["role"] == "user"] == ["I want to cancel my order 123"]
    # A token is bound to its bot and is an HMAC under the server key (kept 0600 in the data folder).
    assert ConversationTokens(settings.web_secret, settings.data_dir).token("tiny", cid) == token
    assert ConversationTokens(settings.web_secret, settings.data_dir).token("other", cid) != token
    assert (settings.data_dir / "web-secret").stat().st_mode & 0o777 == 0o600
    assert web_client.post("/bots/nope/webhooks/web/conversations").status_code == 404


def test_history_token_refusal_is_readable_by_the_widget(web_client) -> None:  # type: ignore[no-untyped-def]
    """The 403 carries the CORS headers (a widget on another site reads it and starts a new
    conversation) and the preflight allows the token header. The server's own origin is allowed."""
    origin = "http://testserver"
    started = web_client.post("/bots/tiny/webhooks/web/conversations", headers={"origin": origin})
    assert started.status_code == 201 and started.headers["access-control-allow-origin"] == origin
    preflight = web_client.options("/bots/tiny/webhooks/web/history", headers={
        "origin": origin, "access-control-request-method": "GET",
        "access-control-request-headers": "x-conversation-token"})
    assert "X-Conversation-Token" in preflight.headers["access-control-allow-headers"]
    refused = web_client.get("/bots/tiny/webhooks/web/history?conversation_id=abc", headers={"origin": origin})
    assert refused.status_code == 403 and refused.headers["access-control-allow-origin"] == origin


def test_the_socket_needs_the_conversation_token_first(web_client, settings) -> None:  # type: ignore[no-untyped-def]
    from starlette.websockets import WebSocketDisconnect

    cid = web_client.post("/bots/tiny/webhooks/web/conversations").json()["conversation_id"]
    url = f"/bots/tiny/webhooks/web/ws?conversation_id={cid}"
    for first in ({"type": "message", "id": "m1", "text": "hello"}, {"type": "auth", "token": "0" * 64},
                  {"type": "auth"}, {"type": "auth", "token": 12}):
        with pytest.raises(WebSocketDisconnect) as closed, web_client.websocket_connect(url) as ws:
            ws.send_json(first)
            ws.receive_json()
        assert closed.value.code == 1008 and "token" in closed.value.reason, first
    with web_client.websocket_connect(url) as ws:
        ws.send_text("not json")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1008
    from tests.fixtures.web_widget import widget_socket

    with widget_socket(web_client, settings, cid) as ws:
        ws.send_json({"type": "message", "id": "m1", "text": "hello"})
        frames = [ws.receive_json() for _ in range(3)]
        assert frames[-1]["type"] == "reply" and frames[-1]["responses"][0]["text"].startswith("Hello")


def test_metrics_have_no_created_series(web_client) -> None:  # type: ignore[no-untyped-def]
    post(web_client, message_id="a")
    text = web_client.get("/metrics").text
    assert 'switchboard_messages_total{bot="tiny",channel="web",direction="in"} 1.0' in text
    assert "switchboard_message_seconds_count" in text
    assert "_created" not in text
