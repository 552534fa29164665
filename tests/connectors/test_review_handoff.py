"""Hand-off through the app: the review routes only translate bots/handoff.py (its errors become
status codes in connectors/app.py's one handler), the hand-off gauges on /metrics follow a customer
waiting for an agent, and the web history and the review transcript give the same answer to "is a
person on this conversation"."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from bots.settings import Settings
from connectors.app import create_app
from connectors.web import history_json
from tests.connectors.test_review_api import add_users, sign_in
from tests.connectors.test_review_api import review as review

UNSURE = "zxq vbnm qwpo"  # below the tiny bot's threshold: twice in a row hands the conversation off


def _gauge(client: TestClient, name: str) -> float | None:
    found = re.search(rf'^{name}{{bot="tiny"}} (\S+)$', client.get("/metrics").text, re.MULTILINE)
    return None if found is None else float(found.group(1))


def _until(client: TestClient, name: str, check: Any, timeout: float = 5.0) -> float | None:
    """The gauge once ``check`` holds (a scrape reads the store at most once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        value = _gauge(client, name)
        if check(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def _say(client: TestClient, conversation_id: str, text: str) -> list[str]:
    r = client.post("/bots/tiny/webhooks/web", json={"conversation_id": conversation_id,
                                                      "message_id": f"m{time.monotonic_ns()}", "text": text})
    assert r.status_code == 200, r.text
    return [x["text"] for x in r.json()["responses"]]


def test_a_waiting_customer_shows_on_metrics_until_an_agent_takes_over(review: TestClient) -> None:
    assert _until(review, "switchboard_handoff_queue", lambda v: v == 0) == 0
    conversation_id = "h1"
    _say(review, conversation_id, UNSURE)
    _say(review, conversation_id, UNSURE)  # handed off: the customer waits for an agent
    assert _until(review, "switchboard_handoff_queue", lambda v: v == 1) == 1
    time.sleep(0.05)
    oldest = _gauge(review, "switchboard_handoff_oldest_seconds")
    assert oldest is not None and 0 < oldest < 60
    h = {"X-CSRF-Token": sign_in(review, "ann")}
    r = review.post(f"/review/api/bots/tiny/conversations/{conversation_id}/takeover", headers=h)
    assert r.status_code == 200 and r.json() == {"paused": True}
    assert _until(review, "switchboard_handoff_queue", lambda v: v == 0) == 0
    assert _gauge(review, "switchboard_handoff_oldest_seconds") == 0
    # still in the live queue (a person has it), no longer waiting
    assert [c["conversation_id"] for c in review.get("/review/api/queue").json()["items"]] == [conversation_id]


def test_web_history_and_review_transcript_agree_who_has_the_conversation(review: TestClient) -> None:
    """Both ask bots.handoff: the review transcript's ``paused`` and the widget history's."""
    runtime = review.app.state.runtime  # type: ignore[attr-defined]
    _say(review, "w1", "hello")
    h = {"X-CSRF-Token": sign_in(review, "ann")}
    base = "/review/api/bots/tiny/conversations/w1"

    def paused() -> tuple[bool, bool]:
        conversation = review.portal.call(runtime.store.load, "tiny", "w1")  # type: ignore[union-attr]
        return history_json(conversation)["paused"], review.get(base).json()["paused"]

    assert paused() == (False, False)
    assert review.post(f"{base}/reply", json={"text": "Ann here"}, headers=h).status_code == 200
    assert paused() == (True, True)
    assert _say(review, "w1", "hello") == []
    assert review.post(f"{base}/handback", headers=h).json() == {"paused": False}
    assert paused() == (False, False)


def test_domain_errors_become_status_codes_with_their_reason(review: TestClient) -> None:
    conversation_id = "e1"
    _say(review, conversation_id, "hello")
    h = {"X-CSRF-Token": sign_in(review, "ann")}
    base = "/review/api/bots/tiny/conversations"
    for action in ("takeover", "handback"):
        r = review.post(f"{base}/nope/{action}", headers=h)
        assert r.status_code == 404 and r.json()["detail"] == "no conversation 'nope' for bot 'tiny'"
    r = review.post(f"{base}/nope/reply", json={"text": "hi"}, headers=h)
    assert r.status_code == 404
    r = review.post(f"{base}/{conversation_id}/reply", json={"text": "   "}, headers=h)
    assert r.status_code == 422 and r.json()["detail"] == "text is empty: type the reply to send"
    r = review.post(f"{base}/{conversation_id}/corrections", json={"seq": 9, "intent": "greet"}, headers=h)
    assert r.status_code == 422 and r.json()["detail"] == "seq: the conversation has no turn 9"
    r = review.post(f"{base}/nope/corrections", json={"seq": 1, "intent": "greet"}, headers=h)
    assert r.status_code == 404
    assert review.get(f"{base}/nope").status_code == 404
    assert review.get(f"{base}/nope/download").status_code == 404


def test_a_reply_the_channel_cannot_take_is_502_and_kept(tiny_bot_dir: Path, settings: Settings) -> None:
    add_users(settings.data_dir, ann="agent")
    with TestClient(create_app(settings, [tiny_bot_dir], channels=[])) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        client.portal.call(_enqueue_slack_conversation, runtime)  # type: ignore[union-attr]
        h = {"X-CSRF-Token": sign_in(client, "ann")}
        r = client.post("/review/api/bots/tiny/conversations/s1/reply", json={"text": "Ann here"}, headers=h)
        assert r.status_code == 502
        assert r.json()["detail"] == ("the reply is saved in the transcript but did not reach the customer: "
                                      "the 'slack' channel is not served here")
        turns = client.get("/review/api/bots/tiny/conversations/s1").json()["turns"]
        assert [e["kind"] for e in turns[-1]["events"]] == ["pause", "agent"]
        audit = client.get("/review/api/audit", headers={"Authorization": f"Bearer {settings.admin_token}"}).json()
        assert "reply" in [e["action"] for e in audit["items"]]


async def _enqueue_slack_conversation(runtime: Any) -> None:
    from bots.events import USER, Event

    await runtime.store.enqueue("tiny", "s1", "slack", "U1", {"channel": "D1"}, "m1", Event(USER, {"text": "hi"}))
