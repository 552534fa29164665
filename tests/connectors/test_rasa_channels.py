"""A Rasa project's form over Slack and Telegram, end to end: the real app, slack-bolt and aiogram, the fake
Slack and Telegram servers on 127.0.0.1, requests signed (Slack) and carrying the secret token (Telegram).

The forms fixture (tests/data/rasa/forms) asks for a table booking: its rasa-sdk ``FormValidationAction``
refuses a number of people that is not a number (its message, then the question again), ``utter_ask_*`` and
the ``action_ask_feedback`` action ask with buttons, and ``utter_submit`` has a conditional variation (by the
``outdoor_seating`` slot). Each channel shows the replies its own way (Slack: Block Kit sections and an
actions block of buttons; Telegram: messages with an inline keyboard), and a click on a button (Slack's
interactivity payload, Telegram's callback query) is the customer's next message: the form goes on with it.
The NLU is the fixture's own examples (tests/bots/lookup_model.py); tests/e2e/test_rasa_replicas.py has the
same bot on two replicas.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bots.botspec import BotSpec
from bots.dialogue.state import State
from bots.settings import Settings
from connectors.app import create_app
from connectors.base import ChannelFactory
from tests.bots.lookup_model import LookupModel
from tests.conftest import ADMIN_TOKEN
from tests.connectors.test_slack import click, dm, section_texts, slack_channel
from tests.connectors.test_slack import deliver as slack_deliver
from tests.connectors.test_telegram import SECRET as TELEGRAM_SECRET
from tests.connectors.test_telegram import deliver as telegram_deliver
from tests.connectors.test_telegram import telegram_channel
from tests.e2e.test_rasa_replicas import BAD, GREAT, OVERRIDES, forms_project
from tests.e2e.test_rasa_replicas import refused_port as refused_port  # the fixture
from tests.fixtures.fake_slack import Call, FakeSlack, event_body
from tests.fixtures.fake_slack import fake_slack as fake_slack  # the fixture
from tests.fixtures.fake_telegram import TOKEN, FakeTelegram, callback_update, text_update
from tests.fixtures.fake_telegram import fake_telegram as fake_telegram  # the fixture

SLACK = "/bots/forms/webhooks/slack"
TELEGRAM = "/bots/forms/webhooks/telegram"
REFUSED = ["Please give the number of people as a number.", "For how many people?"]  # validate_num_people


def lookup(artifact: Path, spec: BotSpec, settings: Settings) -> LookupModel:
    return LookupModel(spec, OVERRIDES)


@pytest.fixture
def forms(tmp_path: Path, refused_port: int) -> Path:
    return forms_project(tmp_path, refused_port)


def serve(settings: Settings, bot_dir: Path, channel: ChannelFactory) -> TestClient:
    return TestClient(create_app(settings, [bot_dir], channels=[channel], model_loader=lookup))


def ready(client: TestClient) -> None:
    deadline = time.monotonic() + 30
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").text
        time.sleep(0.05)


def slots(client: TestClient, conversation_id: str) -> tuple[dict[str, Any], str | None]:
    """The conversation's slots and active form, rebuilt from what the store holds."""
    async def load() -> tuple[dict[str, Any], str | None]:
        loaded = await client.app.state.runtime.store.load("forms", conversation_id)  # type: ignore[attr-defined]
        assert loaded is not None
        state = State.from_events(loaded.events, sender_id=conversation_id)
        return dict(state.slots), state.active_form

    result: tuple[dict[str, Any], str | None] = client.portal.call(load)  # type: ignore[union-attr]
    return result


# -- Slack -------------------------------------------------------------------------------------------------
@pytest.fixture
def slack(forms: Path, settings: Settings, fake_slack: FakeSlack) -> Iterator[TestClient]:
    with serve(settings, forms, slack_channel(fake_slack, default_token="xoxb-team-two")) as client:
        ready(client)
        yield client


class SlackChat:
    """One direct-message conversation: each message or click is signed and delivered, and its replies are
    the chat.postMessage calls it caused."""

    def __init__(self, client: TestClient, fake: FakeSlack) -> None:
        self.client, self.fake, self.n = client, fake, 0

    def say(self, text: str, replies: int = 1) -> list[Call]:
        seen = len(self.fake.calls_to("chat.postMessage"))
        self.n += 1
        ts = f"17000001{self.n:02d}.000100"
        r = slack_deliver(self.client, event_body(dm(text, ts=ts), event_id=f"Ev{self.n}"), url=SLACK)
        assert r.status_code == 200, r.text
        calls = self.fake.wait_for("chat.postMessage", seen + replies)
        return calls[seen:]

    def click(self, button: dict[str, Any], replies: int = 1) -> list[Call]:
        seen = len(self.fake.calls_to("chat.postMessage"))
        self.n += 1
        body = click(button["value"], button["text"]["text"], action_ts=f"17000002{self.n:02d}.000001")
        r = slack_deliver(self.client, body, url=SLACK, content_type="application/x-www-form-urlencoded")
        assert r.status_code == 200, r.text
        calls = self.fake.wait_for("chat.postMessage", seen + replies)
        return calls[seen:]


def buttons_of(call: Call) -> list[dict[str, Any]]:
    [actions] = [b for b in call.params["blocks"] if b["type"] == "actions"]
    return list(actions["elements"])


def test_slack_form_with_a_refused_value_buttons_and_the_conditional_response(
        slack: TestClient, fake_slack: FakeSlack) -> None:
    chat = SlackChat(slack, fake_slack)
    [ask] = chat.say("I'd like to book a table")
    assert section_texts(ask) == ["What cuisine would you like?"] and ask.params["channel"] == "D1"
    assert [b["type"] for b in ask.params["blocks"]] == ["section"]  # no buttons: no actions block
    [ask] = chat.say("italian food")
    assert section_texts(ask) == ["For how many people?"]

    # The validation action refuses the value: its message, then the form's question again.
    refused = chat.say("two of us", replies=2)
    assert [section_texts(c) for c in refused] == [[text] for text in REFUSED]

    # utter_ask_outdoor_seating's buttons: an actions block; the notification text lists them.
    [ask] = chat.say("5 people")
    assert section_texts(ask) == ["Do you want to sit outside?"]
    seating = buttons_of(ask)
    assert [(b["text"]["text"], b["value"]) for b in seating] == [("Yes, outside", "/affirm"),
                                                                  ("No, inside", "/deny")]
    assert ask.params["text"] == "Do you want to sit outside?\n1. Yes, outside\n2. No, inside"

    # A click is the next message: the form takes its payload as the answer.
    [ask] = chat.click(seating[0])
    assert section_texts(ask) == ["Any other preferences?"]
    [ask] = chat.say("by the window")
    assert section_texts(ask) == ["How was your last visit?"]  # action_ask_feedback (rasa-sdk), with buttons
    feedback = buttons_of(ask)
    assert [(b["text"]["text"], b["value"]) for b in feedback] == [("great", GREAT), ("bad", BAD)]

    done, summary = chat.click(feedback[0], replies=2)
    assert section_texts(done) == ["All done! Your table is outside."]  # the variation for outdoor_seating: true
    assert section_texts(summary) == ["A table for 5 (italian), outside: yes, wishes: by the window."]
    assert slots(slack, "slack:T1:D1") == ({"cuisine": "italian", "num_people": 5.0, "party_size": "small",
                                            "outdoor_seating": True, "preferences": "by the window",
                                            "feedback": ["great"]}, None)
    assert {c.params["channel"] for c in fake_slack.calls_to("chat.postMessage")} == {"D1"}
    time.sleep(0.2)
    assert len(fake_slack.calls_to("chat.postMessage")) == 9  # one a reply, nothing else


# -- Telegram ----------------------------------------------------------------------------------------------
@pytest.fixture
def telegram(forms: Path, settings: Settings, fake_telegram: FakeTelegram) -> Iterator[TestClient]:
    with serve(settings, forms, telegram_channel(fake_telegram, {"forms": TOKEN})) as client:
        ready(client)
        yield client


class TelegramChat:
    """One private chat: each update is delivered with the secret token, and its replies are the
    sendMessage calls it caused."""

    def __init__(self, client: TestClient, fake: FakeTelegram) -> None:
        self.client, self.fake, self.update_id = client, fake, 0

    def _deliver(self, update: dict[str, Any], replies: int) -> list[Call]:
        seen = len(self.fake.calls_to("sendMessage"))
        r = telegram_deliver(self.client, update, url=TELEGRAM)
        assert r.status_code == 200, r.text
        return self.fake.wait_for("sendMessage", seen + replies)[seen:]

    def say(self, text: str, replies: int = 1) -> list[Call]:
        self.update_id += 1
        return self._deliver(text_update(self.update_id, text), replies)

    def click(self, keyboard: list[dict[str, str]], title: str, replies: int = 1) -> list[Call]:
        self.update_id += 1
        [data] = [b["callback_data"] for b in keyboard if b["text"] == title]
        return self._deliver(callback_update(self.update_id, data, keyboard, query_id=f"q-{self.update_id}"),
                             replies)


def keyboard_of(call: Call) -> list[dict[str, str]]:
    rows = call.params["reply_markup"]["inline_keyboard"]
    assert all(len(row) == 1 for row in rows)  # one button a row
    return [row[0] for row in rows]


def test_telegram_form_with_a_refused_value_an_inline_keyboard_and_the_plain_variation(
        telegram: TestClient, fake_telegram: FakeTelegram) -> None:
    chat = TelegramChat(telegram, fake_telegram)
    [ask] = chat.say("I'd like to book a table")
    assert ask.params["text"] == "What cuisine would you like?" and ask.params["chat_id"] == "1001"
    assert "reply_markup" not in ask.params and "parse_mode" not in ask.params
    [ask] = chat.say("italian food")
    assert ask.params["text"] == "For how many people?"

    refused = chat.say("two of us", replies=2)
    assert [c.params["text"] for c in refused] == REFUSED

    [ask] = chat.say("5 people")
    assert ask.params["text"] == "Do you want to sit outside?"
    seating = keyboard_of(ask)
    assert seating == [{"text": "Yes, outside", "callback_data": "/affirm"},
                       {"text": "No, inside", "callback_data": "/deny"}]

    [ask] = chat.click(seating, "No, inside")
    assert ask.params["text"] == "Any other preferences?"
    [answered] = fake_telegram.calls_to("answerCallbackQuery")  # the click's spinner stops
    assert answered.params["callback_query_id"] == f"q-{chat.update_id}"
    [ask] = chat.say("by the window")
    assert ask.params["text"] == "How was your last visit?"
    feedback = keyboard_of(ask)
    assert feedback == [{"text": "great", "callback_data": GREAT}, {"text": "bad", "callback_data": BAD}]

    done, summary = chat.click(feedback, "bad", replies=2)
    assert done.params["text"] == "All done!"  # outdoor_seating is false: the plain variation
    assert summary.params["text"] == "A table for 5 (italian), outside: no, wishes: by the window."
    assert len(fake_telegram.calls_to("answerCallbackQuery")) == 2
    assert slots(telegram, "telegram:1001") == ({"cuisine": "italian", "num_people": 5.0, "party_size": "small",
                                                 "outdoor_seating": False, "preferences": "by the window",
                                                 "feedback": ["bad"]}, None)
    # The clicks are stored as the customer's messages: the button's title, with its payload.
    r = telegram.get("/bots/forms/conversations/telegram:1001", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.status_code == 200, r.text
    users = [t["events"][0]["data"] for t in r.json()["turns"]]
    assert [(u["text"], u.get("payload")) for u in users if u.get("payload")] == [("No, inside", "/deny"),
                                                                                  ("bad", BAD)]


def test_telegram_refuses_an_update_without_the_secret_token(telegram: TestClient,
                                                             fake_telegram: FakeTelegram) -> None:
    r = telegram_deliver(telegram, text_update(1, "I'd like to book a table"), url=TELEGRAM,
                         secret=TELEGRAM_SECRET + "x")
    assert r.status_code == 401
    time.sleep(0.2)
    assert fake_telegram.calls_to("sendMessage") == []
