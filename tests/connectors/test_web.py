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
    assert kinds[0] == "user" and kinds[-1] == "bot"
    user, nlu = turn["events"][0], turn["events"][1]
    assert user["data"]["text"] == "I want to cancel my order 123"
    assert nlu["data"]["intent"] == "cancel_order"
    assert 0.3 <= nlu["data"]["confidence"] <= 1.0
    assert {"entity": "order_id", "value": "123"}.items() <= nlu["data"]["entities"][0].items()
    assert turn["events"][-1]["data"]["text"] == "Order 123 is being cancelled."


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
        assert entities('/track_order{"order_id": ["12345"]}') == []
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
