"""Customer satisfaction (bot.yml ``handoff: satisfaction``): asked with buttons when an agent hands the
conversation back, answered by a button, stored once per conversation (a second answer is recorded, not
counted), thanked, never understood as text, shown in the transcript, filterable, and counted per bot on
/metrics; bot.yml mistakes are reported at their line."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bots.botspec import load_bot
from bots.dialogue.spec import SatisfactionSpec, parse_dialogue
from bots.errors import ConfigError
from bots.handoff import rating_of, satisfaction_question
from bots.settings import Settings
from tests.connectors.test_review_api import add_users, serving, sign_in
from tests.connectors.test_slack import click, deliver, dm, section_texts, slack_channel
from tests.connectors.test_telegram import deliver as telegram_deliver
from tests.connectors.test_telegram import telegram_channel
from tests.fixtures.fake_slack import FakeSlack, event_body
from tests.fixtures.fake_slack import fake_slack as fake_slack
from tests.fixtures.fake_telegram import FakeTelegram, callback_update, text_update
from tests.fixtures.fake_telegram import fake_telegram as fake_telegram

UNSURE = "zxq vbnm qwpo"  # below the tiny bot's threshold: twice in a row hands the conversation off
THANKS = "Thanks, that helps us!"


@pytest.mark.parametrize(("yaml", "problem"), [
    ("handoff:\n  satisfaction:\n    scale: 1-5\n", "'handoff: satisfaction' needs 'question'"),
    ("handoff:\n  satisfaction:\n    question: How did we do?\n    scale: stars\n",
     "'handoff: satisfaction: scale' must be '1-5' or 'thumbs', got 'stars'"),
    ("handoff:\n  satisfaction:\n    question: How did we do?\n    colour: red\n", "unknown key 'colour'"),
    ("handoff:\n  satisfaction: yes\n", "'handoff: satisfaction' must be a mapping"),
])
def test_satisfaction_mistakes_are_reported_at_their_line(tmp_path: Path, yaml: str, problem: str) -> None:
    (tmp_path / "bot.yml").write_text(
        "name: mini\nchannels: [web]\nintents:\n  greet: {examples: [hi, hello], response: Hello!}\n"
        "  goodbye: {examples: [bye, see you], response: Bye!}\n" + yaml,
        encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        parse_dialogue(load_bot(tmp_path))
    assert any(problem in p and re.search(r"bot\.yml:\d+", p) for p in raised.value.problems), raised.value.problems


def test_the_question_has_a_button_per_answer_and_only_its_scores_count() -> None:
    five = SatisfactionSpec("How did we do?")
    thumbs = SatisfactionSpec("Happy?", scale="thumbs")
    assert [b.title for b in satisfaction_question(five).buttons] == ["1", "2", "3", "4", "5"]
    assert [b.title for b in satisfaction_question(thumbs).buttons] == ["\N{THUMBS UP SIGN}", "\N{THUMBS DOWN SIGN}"]
    payloads = [b.payload for b in satisfaction_question(five).buttons]
    assert [rating_of(p, five) for p in payloads] == [1, 2, 3, 4, 5]
    assert [rating_of(b.payload, thumbs) for b in satisfaction_question(thumbs).buttons] == [5, 1]
    for forged in ('/_csat{"score": 9}', '/_csat{"score": true}', '/_csat{"score": "5"}', "/_csat{oops", "/greet",
                   '/_csat["score"]'):
        assert rating_of(forged, five) is None
    assert rating_of(payloads[0], None) is None  # the bot asks nothing: a payload is just a payload
    assert rating_of('/_csat{"score": 3}', thumbs) is None


@pytest.fixture
def served(tiny_bot_dir: Path, tmp_path: Path, settings: Settings) -> Iterator[TestClient]:
    bot = tmp_path / "tiny"
    shutil.copytree(tiny_bot_dir, bot)
    with (bot / "bot.yml").open("a") as out:
        out.write(f"handoff:\n  satisfaction:\n    question: How did we do?\n    thanks: {THANKS}\n")
    add_users(settings.data_dir, ann="agent")
    with serving(settings, [bot]) as client:
        yield client


def _send(client: TestClient, conversation_id: str, text: str, payload: str | None = None) -> list[dict[str, Any]]:
    r = client.post("/bots/tiny/webhooks/web", json={"conversation_id": conversation_id, "text": text,
                                                      "payload": payload, "message_id": f"m{time.monotonic_ns()}"})
    assert r.status_code == 200, r.text
    return list(r.json()["responses"])


def _rated(client: TestClient) -> float:
    found = re.search(r'^switchboard_csat_ratings_total\{bot="tiny",score="4"\} (\S+)$', client.get("/metrics").text,
                      re.MULTILINE)
    return 0.0 if found is None else float(found.group(1))


def test_asked_at_the_hand_back_answered_once_shown_filtered_and_counted(served: TestClient) -> None:
    _send(served, "c1", UNSURE)
    _send(served, "c1", UNSURE)
    h = {"X-CSRF-Token": sign_in(served, "ann")}
    base = "/review/api/bots/tiny/conversations/c1"
    assert served.post(f"{base}/reply", json={"text": "Ann here, sorted!"}, headers=h).status_code == 200
    assert served.post(f"{base}/handback", headers=h).status_code == 200
    turns = served.get(base).json()["turns"]
    [question] = [e["data"] for e in turns[-1]["events"] if e["kind"] == "bot"]
    assert question["text"] == "How did we do?"
    assert [b["title"] for b in question["buttons"]] == ["1", "2", "3", "4", "5"]

    assert [r["text"] for r in _send(served, "c1", "4", question["buttons"][3]["payload"])] == [THANKS]
    summary = served.get(base).json()["summary"]
    assert summary["csat"] == 4 and summary["last_intent"] != "csat"
    assert _rated(served) == 1.0
    # a second answer is thanked and recorded in the transcript, the first rating stays and counts once
    assert [r["text"] for r in _send(served, "c1", "2", question["buttons"][1]["payload"])] == [THANKS]
    assert served.get(base).json()["summary"]["csat"] == 4 and _rated(served) == 1.0
    ratings = [e["data"] for t in served.get(base).json()["turns"] for e in t["events"] if e["kind"] == "csat"]
    assert ratings == [{"score": 4, "scale": "1-5", "counted": True}, {"score": 2, "scale": "1-5", "counted": False}]
    # a forged score is a message like any other: understood, not stored
    assert _send(served, "c1", "hello", '/_csat{"score": 7}')[0]["text"] != THANKS
    assert served.get(base).json()["summary"]["csat"] == 4

    _send(served, "c2", "hello")  # never rated
    found = lambda q: [c["conversation_id"] for c in served.get(f"/review/api/conversations?{q}").json()["items"]]  # noqa: E731
    assert found("csat_at_most=4") == ["c1"] and found("csat_at_most=3") == []
    assert served.get("/review/api/conversations?csat_at_most=9").status_code == 422
    page = served.get("/review?csat_at_most=5")
    assert "rated 4/5" in page.text
    # asked once: a conversation already rated is not asked again at the next hand back
    assert served.post(f"{base}/handback", headers=h).status_code == 200
    last = served.get(base).json()["turns"][-1]
    assert not any(e["kind"] == "bot" and e["data"].get("text") == "How did we do?" for e in last["events"])


def test_slack_customers_rate_with_block_kit_buttons(tiny_bot_dir: Path, tmp_path: Path, settings: Settings,
                                                      fake_slack: FakeSlack) -> None:
    bot = tmp_path / "tiny"
    shutil.copytree(tiny_bot_dir, bot)
    with (bot / "bot.yml").open("a") as out:
        out.write(f"handoff:\n  satisfaction:\n    question: Happy with our help?\n    scale: thumbs\n"
                  f"    thanks: {THANKS}\n")
    add_users(settings.data_dir, ann="agent")
    with serving(settings, [bot], channels=[slack_channel(fake_slack)]) as client:
        assert deliver(client, event_body(dm("I need a live agent"))).status_code == 200
        fake_slack.wait_for("chat.postMessage")
        h = {"X-CSRF-Token": sign_in(client, "ann")}
        base = "/review/api/bots/tiny/conversations/slack:T1:D1"
        assert client.post(f"{base}/handback", headers=h).status_code == 200
        question = fake_slack.wait_for("chat.postMessage", 2)[-1]
        [actions] = [b for b in question.params["blocks"] if b["type"] == "actions"]
        buttons = {b["text"]["text"]: b["value"] for b in actions["elements"]}
        assert list(buttons) == ["\N{THUMBS UP SIGN}", "\N{THUMBS DOWN SIGN}"]
        r = deliver(client, click(buttons["\N{THUMBS UP SIGN}"], "\N{THUMBS UP SIGN}"),
                    content_type="application/x-www-form-urlencoded")
        assert r.status_code == 200, r.text
        assert section_texts(fake_slack.wait_for("chat.postMessage", 3)[-1]) == [THANKS]
        assert client.get(base).json()["summary"]["csat"] == 5


def test_telegram_customers_rate_with_an_inline_keyboard(tiny_bot_dir: Path, tmp_path: Path, settings: Settings,
                                                         fake_telegram: FakeTelegram) -> None:
    bot = tmp_path / "tiny"
    shutil.copytree(tiny_bot_dir, bot)
    with (bot / "bot.yml").open("a") as out:
        out.write(f"handoff:\n  satisfaction:\n    question: How did we do?\n    thanks: {THANKS}\n")
    add_users(settings.data_dir, ann="agent")
    with serving(settings, [bot], channels=[telegram_channel(fake_telegram)]) as client:
        assert telegram_deliver(client, text_update(1, "I need a live agent")).status_code == 200
        fake_telegram.wait_for("sendMessage")
        h = {"X-CSRF-Token": sign_in(client, "ann")}
        base = "/review/api/bots/tiny/conversations/telegram:1001"
        assert client.post(f"{base}/handback", headers=h).status_code == 200
        question = fake_telegram.wait_for("sendMessage", 2)[-1]
        assert question.params["text"] == "How did we do?"
        buttons = [b for row in question.params["reply_markup"]["inline_keyboard"] for b in row]
        assert [b["text"] for b in buttons] == ["1", "2", "3", "4", "5"]
        r = telegram_deliver(client, callback_update(2, buttons[1]["callback_data"], buttons, query_id="q-1"))
        assert r.status_code == 200
        assert fake_telegram.wait_for("sendMessage", 3)[-1].params["text"] == THANKS
        assert client.get(base).json()["summary"]["csat"] == 2
