"""Frustration through the web channel: each typed message scored and stored, the bot handing an angry
customer to a person after ``frustration: {handoff_after: N}``, the review UI's and the admin API's
filters and sorts on it, and the metrics per bot (bots/nlu/sentiment.py)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bots.settings import Settings
from connectors.app import create_app
from tests.bots.keyword_model import copy_bot, keyword_loader
from tests.conftest import ADMIN_TOKEN
from tests.connectors.test_review_api import add_users, sign_in

HANDOFF = "Sorry about this! A colleague takes over now."
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def client(tmp_path: Path, settings: Settings) -> Iterator[TestClient]:
    bot_dir = copy_bot(tmp_path, extra_yaml=f"frustration:\n  handoff_after: 2\n  message: {HANDOFF!r}\n")
    add_users(settings.data_dir, ann="agent")
    with TestClient(create_app(settings, [bot_dir], model_loader=keyword_loader)) as c:
        deadline = time.monotonic() + 30
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield c


def say(client: TestClient, conversation: str, text: str) -> list[str]:
    r = client.post("/bots/shop/webhooks/web", json={"conversation_id": conversation,
                                                      "message_id": f"m-{time.monotonic_ns()}", "text": text})
    assert r.status_code == 200, r.text
    return [x["text"] for x in r.json()["responses"]]


def transcript(client: TestClient, conversation: str) -> dict[str, Any]:
    r = client.get(f"/bots/shop/conversations/{conversation}", headers=ADMIN)
    assert r.status_code == 200, r.text
    return dict(r.json())


def metric(client: TestClient, line: str) -> float | None:
    found = re.search(rf"^{re.escape(line)} (\S+)$", client.get("/metrics").text, re.MULTILINE)
    return None if found is None else float(found.group(1))


def test_the_second_frustrated_message_hands_the_customer_to_a_person(client: TestClient) -> None:
    answer = say(client, "angry", "where is my order 12345")
    assert answer and HANDOFF not in answer
    assert say(client, "angry", "WHERE IS MY ORDER 12345") == answer  # the 1st frustrated message
    # the 2nd frustrated message: the fallback's "did you mean" is replaced by the hand-off
    assert say(client, "angry", "this is a damn joke, I am furious") == [HANDOFF]
    assert say(client, "angry", "hello??") == []  # a person has it now: the bot is silent
    data = transcript(client, "angry")
    moods = [[e["data"] for e in t["events"] if e["kind"] == "sentiment"] for t in data["turns"]]
    assert [(m[0]["frustrated"], m[0]["signals"]) for m in moods] == [
        (False, []), (True, ["repeated_question", "shouting"]), (True, ["negative", "profanity"]), (False, [])]
    assert [e["data"].get("reason") for e in data["turns"][2]["events"] if e["kind"] == "pause"] == ["frustration"]
    summary = data["summary"]
    assert summary["handoff"] and summary["waiting_since"] is not None
    assert summary["frustration"] == 2 and summary["min_sentiment"] == moods[2][0]["score"] < -0.5

    # a calm conversation is not handed off; one frustrated message the bot answers is not enough
    assert say(client, "calm", "hello") == ["Hello! How can I help you today?"]
    assert say(client, "calm", "I am furious, where is my order 12345") != [HANDOFF]
    assert not transcript(client, "calm")["summary"]["handoff"]
    # but one the bot did not understand is handed off at once: never "did you mean" to an angry customer
    assert say(client, "lost", "I am furious") == [HANDOFF]
    assert transcript(client, "lost")["summary"]["handoff"]

    # per bot only: three conversations turned frustrated, seven messages scored
    assert metric(client, 'switchboard_frustrated_conversations_total{bot="shop"}') == 3
    assert metric(client, 'switchboard_sentiment_count{bot="shop"}') == 7
    assert metric(client, 'switchboard_sentiment_bucket{bot="shop",le="-0.5"}') == 3
    assert metric(client, 'switchboard_handoffs_total{bot="shop",channel="web"}') == 2
    # never a conversation or user id
    exported = client.get("/metrics").text
    assert "angry" not in exported and "calm" not in exported and "lost" not in exported


def test_button_clicks_are_not_scored(client: TestClient) -> None:
    r = client.post("/bots/shop/webhooks/web", json={"conversation_id": "clicks", "message_id": "m1",
                                                      "text": "TRACK MY ORDER!!", "payload": "/track_order"})
    assert r.status_code == 200, r.text
    data = transcript(client, "clicks")
    assert [e for t in data["turns"] for e in t["events"] if e["kind"] == "sentiment"] == []
    assert data["summary"]["min_sentiment"] is None and data["summary"]["frustration"] == 0


def test_review_and_admin_api_filter_and_sort_by_frustration(client: TestClient) -> None:
    say(client, "calm", "hello")
    say(client, "cross", "I am furious")
    say(client, "angry", "this is awful, I am furious")
    say(client, "angry", "WHERE IS MY ORDER 12345")
    r = client.get("/bots/shop/conversations?frustrated=true&sort=frustration", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert [(c["conversation_id"], c["frustration"]) for c in r.json()["items"]] == [("angry", 2), ("cross", 1)]
    r = client.get("/bots/shop/conversations?frustrated=false", headers=ADMIN)
    assert [c["conversation_id"] for c in r.json()["items"]] == ["calm"]
    r = client.get("/bots/shop/conversations?sentiment_below=-0.5&sort=min_sentiment&descending=false",
                   headers=ADMIN)
    assert [c["conversation_id"] for c in r.json()["items"]] == ["angry", "cross"]  # lowest first
    assert all(c["min_sentiment"] < -0.5 for c in r.json()["items"])
    assert client.get("/bots/shop/conversations?sentiment_below=2", headers=ADMIN).status_code == 422

    sign_in(client, "ann")
    page = client.get("/review?frustrated=yes&sort=frustration")
    assert page.status_code == 200
    listed = re.findall(r'class="conv-link" href="[^"]+">([^<]+)</a>', page.text)
    assert listed == ["angry", "cross"]
    assert "frustrated \u00d72" in page.text and 'name="sentiment_below"' in page.text
    page = client.get("/review/api/conversations?sentiment_below=-0.5&frustrated=yes")
    assert page.status_code == 200, page.text
    assert sorted(c["conversation_id"] for c in page.json()["items"]) == ["angry", "cross"]
    for bad, field in (("sentiment_below=-3", "sentiment_below"), ("sentiment_below=x", "sentiment_below"),
                       ("frustrated=maybe", "frustrated"), ("sort=frustrated", "sort")):
        r = client.get(f"/review/api/conversations?{bad}")
        assert r.status_code == 422 and r.json()["detail"].startswith(f"{field}:"), (bad, r.text)


OFFER = "If this doesn't help, say 'talk to a person' and a colleague will take over."
TRACKING = ("You can follow every order under My orders on the website, where the carrier's tracking link and the "
            "expected delivery date are shown.")


def test_the_same_answer_twice_is_frustration_and_the_first_frustrated_message_gets_the_offer(
        tmp_path: Path, settings: Settings) -> None:
    bot_dir = copy_bot(tmp_path, extra_yaml=f"frustration:\n  handoff_after: 2\n  message: {HANDOFF!r}\n"
                                            f"  offer: {OFFER!r}\n")
    bot_yml = bot_dir / "bot.yml"
    text = bot_yml.read_text(encoding="utf-8").replace("    action: action_check_order_status\n",
                                                       f"    response: {TRACKING!r}\n")
    bot_yml.write_text(text, encoding="utf-8")  # "where is my order" answered by a (long) template
    with TestClient(create_app(settings, [bot_dir], model_loader=keyword_loader)) as c:
        deadline = time.monotonic() + 30
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert say(c, "again", "track my order") == [TRACKING]
        # asked again in other words, the same answer: the customer was not helped, and is offered a person
        assert say(c, "again", "what is the status of my order") == [TRACKING, OFFER]
        assert say(c, "again", "hello") == ["Hello! How can I help you today?"]
        # the second frustrated message hands off (the offer is said once)
        assert say(c, "again", "what is the status of my order now") == [TRACKING, HANDOFF]
        moods = [[e["data"] for e in t["events"] if e["kind"] == "sentiment"]
                 for t in transcript(c, "again")["turns"]]
        assert [m[0]["signals"] for m in moods] == [[], ["repeated_answer"], [], ["repeated_question",
                                                                                  "repeated_answer"]]
        # an angry first message is answered, then offered a person; a calm one is not
        assert say(c, "cross", "I am furious, where is my order 12345") == [TRACKING, OFFER]
        assert say(c, "calm", "where is my order 12345") == [TRACKING]
