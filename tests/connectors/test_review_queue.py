"""The live queue through the app: waiting customers longest wait first with the customer's name and their
last message as stored (pseudonymised and redacted for a bot with ``pii:``), "assign to me" that one of
two agents wins (409 naming who has it), unassign / reassign (admins), roles, CSRF, audit, escaping."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from fastapi.testclient import TestClient

from bots.pii import PSEUDONYM_PREFIX
from bots.settings import Settings
from connectors.review.live import TYPING_S
from tests.bots.test_pii_runtime import PII_KEY, bot_with_pii
from tests.connectors.test_review_api import XSS, add_users, serving, sign_in
from tests.connectors.test_review_api import review as review
from tests.fixtures.web_widget import widget_socket

UNSURE = "zxq vbnm qwpo"  # below the tiny bot's threshold: twice in a row hands the conversation off


def _say(client: TestClient, conversation_id: str, text: str, *, bot: str = "tiny", user: str = "") -> None:
    r = client.post(f"/bots/{bot}/webhooks/web", json={"conversation_id": conversation_id, "user_id": user,
                                                        "message_id": f"m{time.monotonic_ns()}", "text": text})
    assert r.status_code == 200, r.text


def _hand_off(client: TestClient, conversation_id: str, then: str = "", **kwargs: str) -> None:
    """Handed off (two messages the bot does not understand), then the customer writes ``then`` while waiting."""
    _say(client, conversation_id, UNSURE, **kwargs)
    _say(client, conversation_id, UNSURE, **kwargs)
    if then:
        _say(client, conversation_id, then, **kwargs)


def test_the_queue_shows_who_waits_longest_first_with_a_preview(review: TestClient) -> None:
    _hand_off(review, "first", "I need a person " + XSS)
    time.sleep(0.02)
    _hand_off(review, "second")
    _say(review, "bot-has-it", "hello")
    h = {"X-CSRF-Token": sign_in(review, "ann")}
    q = review.get("/review/api/queue").json()
    assert [c["conversation_id"] for c in q["items"]] == ["first", "second"]
    assert (q["total"], q["waiting"], q["unassigned"]) == (2, 2, 2)
    first = q["items"][0]
    assert first["preview"] == "I need a person " + XSS  # JSON: the page inserts it as text
    assert first["customer"].startswith("Customer") and first["waiting_since"] <= q["items"][1]["waiting_since"]
    assert first["assignee"] is None and first["channel"] == "web"
    # taken over: no longer waiting, listed after the waiting customers, assigned to the agent
    assert review.post("/review/api/bots/tiny/conversations/first/takeover", headers=h).status_code == 200
    q = review.get("/review/api/queue").json()
    assert [(c["conversation_id"], c["assignee"], c["waiting_since"]) for c in q["items"]] == [
        ("second", None, q["items"][0]["waiting_since"]), ("first", "ann", None)]
    assert (q["waiting"], q["unassigned"]) == (1, 1)
    page = review.get("/review/queue")
    assert page.status_code == 200 and XSS not in page.text


def test_one_of_two_agents_claiming_wins_and_the_other_sees_who(review: TestClient, settings: Settings) -> None:
    add_users(settings.data_dir, bob="agent")
    _hand_off(review, "c1")
    base = "/review/api/bots/tiny/conversations/c1"
    ann = {"X-CSRF-Token": sign_in(review, "ann")}
    r = review.post(f"{base}/claim", headers=ann)
    assert r.status_code == 200 and r.json()["assignee"] == "ann"
    assert review.post(f"{base}/claim", headers=ann).status_code == 200  # again: still hers
    assert review.get("/review/api/queue").json()["unassigned"] == 0
    bob = {"X-CSRF-Token": sign_in(review, "bob")}
    r = review.post(f"{base}/claim", headers=bob)
    assert r.status_code == 409 and r.json()["detail"] == "ann has this conversation already"
    assert review.post(f"{base}/takeover", headers=bob).status_code == 409
    r = review.post(f"{base}/reply", json={"text": "Bob here"}, headers=bob)
    assert r.status_code == 409
    r = review.post(f"{base}/unassign", headers=bob)
    assert r.status_code == 409 and "only they or an admin" in r.json()["detail"]
    assert review.post(f"{base}/reassign", json={"to": "bob"}, headers=bob).status_code == 403  # admins only
    ada = {"X-CSRF-Token": sign_in(review, "ada")}
    r = review.post(f"{base}/reassign", json={"to": "bob", "expected": None}, headers=ada)
    assert r.status_code == 409 and "ann has this conversation now, not nobody" in r.json()["detail"]
    r = review.post(f"{base}/reassign", json={"to": "vic", "expected": "ann"}, headers=ada)
    assert r.status_code == 422 and "not an agent or admin" in r.json()["detail"]
    r = review.post(f"{base}/reassign", json={"to": "bob", "expected": "ann"}, headers=ada)
    assert r.status_code == 200 and r.json()["assignee"] == "bob"
    r = review.post(f"{base}/unassign", headers=ada)
    assert r.status_code == 200 and r.json()["assignee"] is None
    actions = [(e["actor"], e["action"], e["detail"]) for e in review.get("/review/api/audit").json()["items"]
               if e["action"] in ("assign", "reassign", "unassign")]
    assert ("ann", "assign", "-> ann") in actions and ("ada", "reassign", "ann -> bob") in actions
    assert ("ada", "unassign", "") in actions
    assert review.post("/review/api/bots/tiny/conversations/nope/claim", headers=ada).status_code == 404


def test_viewers_cannot_assign_and_claims_need_the_csrf_token(review: TestClient) -> None:
    _hand_off(review, "c1")
    base = "/review/api/bots/tiny/conversations/c1"
    vic = {"X-CSRF-Token": sign_in(review, "vic")}
    for action in ("claim", "unassign"):
        r = review.post(f"{base}/{action}", headers=vic)
        assert r.status_code == 403 and "needs 'agent'" in r.json()["detail"]
    assert review.get("/review/api/queue").status_code == 403
    csrf = sign_in(review, "ann")
    assert review.post(f"{base}/claim").status_code == 403
    assert review.post(f"{base}/claim", headers={"X-CSRF-Token": "guess"}).status_code == 403
    r = review.post(f"{base}/claim", headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"})
    assert r.status_code == 403
    assert review.get("/review/api/queue").json()["unassigned"] == 1


def test_a_pii_bot_queue_shows_the_pseudonym_and_the_redacted_preview(tiny_bot_dir: Path, tmp_path: Path,
                                                                      settings: Settings) -> None:
    bot = bot_with_pii(tiny_bot_dir, tmp_path, "pii: true\n")
    settings = dataclasses.replace(settings, pii_key=PII_KEY)
    add_users(settings.data_dir, ann="agent")
    with serving(settings, [bot]) as client:
        _hand_off(client, "p1", "my card is 4111 1111 1111 1111, mail jo@example.com", user="jo@example.com")
        sign_in(client, "ann")
        [item] = client.get("/review/api/queue").json()["items"]
        assert "4111" not in item["preview"] and "jo@example.com" not in item["preview"]
        assert "jo@example.com" not in item["customer"] and PSEUDONYM_PREFIX in item["customer"]


def test_an_agent_typing_shows_in_the_customers_web_chat_until_they_stop(tiny_bot_dir: Path,
                                                                         settings: Settings) -> None:
    """Through the store (as another replica's widget sees it, at its poll): on, then off once it expires,
    and a viewer cannot make it show."""
    shop = "https://shop.example"
    add_users(settings.data_dir, ann="agent", vic="viewer")
    with serving(dataclasses.replace(settings, widget_origins=(shop,)), [tiny_bot_dir]) as client, \
            widget_socket(client, settings, "w1", headers={"origin": shop}) as ws:
        ws.send_json({"type": "message", "id": "m1", "text": "I want to talk to a human"})
        while ws.receive_json()["type"] != "reply":
            pass
        base = "/review/api/bots/tiny/conversations/w1"
        vic = {"X-CSRF-Token": sign_in(client, "vic")}
        assert client.post(f"{base}/typing", headers=vic).status_code == 403
        ann = {"X-CSRF-Token": sign_in(client, "ann")}
        assert client.post(f"{base}/typing").status_code == 403  # no CSRF token
        assert client.post("/review/api/bots/tiny/conversations/nope/typing", headers=ann).status_code == 404
        started = time.monotonic()
        assert client.post(f"{base}/typing", headers=ann).status_code == 204
        assert ws.receive_json() == {"type": "typing", "id": "agent", "on": True}
        assert ws.receive_json() == {"type": "typing", "id": "agent", "on": False}  # no keystroke since
        assert time.monotonic() - started >= TYPING_S - 0.5
