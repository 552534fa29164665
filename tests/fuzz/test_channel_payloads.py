"""Property tests: whatever a (correctly signed) Slack or Telegram request carries, the webhook
answers without a 5xx, every 4xx says why, and nothing malformed is stored; text that is not valid
Unicode (lone surrogates) is stored with U+FFFD in their place, whichever channel brought it."""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bots.settings import Settings
from tests.connectors import test_slack, test_telegram
from tests.connectors.test_web_socket_failures import until
from tests.fixtures.fake_slack import FakeSlack, event_body, sign
from tests.fixtures.fake_slack import fake_slack as fake_slack  # the fixture
from tests.fixtures.fake_telegram import FakeTelegram, callback_update, text_update
from tests.fixtures.fake_telegram import fake_telegram as fake_telegram  # the fixture
from tests.fixtures.web_widget import start_conversation

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))

junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(string.ascii_lowercase + "_", max_size=12), inner, max_size=4)),
    max_leaves=10,
)


def mutate(base: dict[str, Any], paths: list[tuple[str, ...]]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid payload with some of its fields replaced by junk or removed."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        doc = json.loads(json.dumps(base))
        for path in draw(st.lists(st.sampled_from(paths), max_size=3, unique=True)):
            node = doc
            for key in path[:-1]:
                node = node.get(key) if isinstance(node, dict) else None
                if not isinstance(node, dict):
                    break
            else:
                if draw(st.booleans()):
                    node.pop(path[-1], None)
                else:
                    node[path[-1]] = draw(junk)
        return doc

    return build()


def check(response: Any) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json().get("detail"), response.text


@pytest.fixture(name="settings")
def settings_without_flood_limits(settings: Settings) -> Settings:
    """The web channel's flood limits off: one test client sends every example."""
    return replace(settings, rate_per_ip=0.0, rate_per_conversation=0.0)


@pytest.fixture
def slack(tiny_bot_dir: Path, settings: Settings, fake_slack: FakeSlack) -> Iterator[TestClient]:
    with test_slack._client(settings, tiny_bot_dir, fake_slack) as client:
        test_slack._ready(client)
        yield client


@pytest.fixture
def telegram(tiny_bot_dir: Path, settings: Settings, fake_telegram: FakeTelegram) -> Iterator[TestClient]:
    client, _ = test_telegram._client(settings, tiny_bot_dir, fake_telegram)
    with client:
        test_slack._ready(client)
        yield client


SLACK_EVENT = {"type": "message", "channel": "D1", "channel_type": "im", "user": "U42", "text": "hello",
               "ts": "1700000001.000100", "thread_ts": "1700000000.000100"}
SLACK_PATHS = [(k,) for k in SLACK_EVENT]


def test_signed_slack_events_with_junk_fields_never_fail(slack: TestClient) -> None:
    @FUZZ
    @given(mutate(SLACK_EVENT, SLACK_PATHS), st.integers(0, 10**6))
    def run(event: dict[str, Any], n: int) -> None:
        body = event_body(event, event_id=f"Ev{n}")
        check(slack.post(test_slack.URL, content=body, headers={"Content-Type": "application/json",
                                                                  **sign(test_slack.SECRET, body)}))

    run()


def test_signed_slack_bodies_of_any_shape_never_fail(slack: TestClient) -> None:
    @FUZZ
    @given(st.one_of(junk.map(lambda j: json.dumps(j).encode()), st.binary(max_size=200)),
           st.sampled_from(["application/json", "application/x-www-form-urlencoded"]))
    def run(body: bytes, content_type: str) -> None:
        check(slack.post(test_slack.URL, content=body, headers={"Content-Type": content_type,
                                                                  **sign(test_slack.SECRET, body)}))

    run()


TELEGRAM_PATHS = [("update_id",), ("message",), ("message", "text"), ("message", "chat"), ("message", "from"),
                  ("message", "date"), ("message", "message_id"), ("message", "message_thread_id")]


def test_telegram_updates_with_junk_fields_never_fail(telegram: TestClient) -> None:
    @FUZZ
    @given(mutate(text_update(7, "hello"), TELEGRAM_PATHS)
           | mutate(callback_update(8, "/greet", [{"text": "Greet", "callback_data": "/greet"}]),
                    [("update_id",), ("callback_query",), ("callback_query", "data"), ("callback_query", "message")])
           | junk)
    def run(update: Any) -> None:
        check(test_telegram.deliver(telegram, update, secret=test_telegram.SECRET))

    run()


# -- invalid Unicode: the same texts over every channel ------------------------------------------------
SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)
TEXT_CHARS = st.one_of(st.sampled_from(string.ascii_letters + string.digits + " .,?!"),
                       st.sampled_from(["é", "€", "ß", "漢", "😀", "\ufffd"]), SURROGATES)


@st.composite
def invalid_unicode(draw: st.DrawFn, max_size: int = 30) -> str:
    """Text with at least one surrogate (lone, or next to another one) and something visible."""
    before = draw(st.lists(TEXT_CHARS, max_size=max_size // 2))
    after = draw(st.lists(TEXT_CHARS, max_size=max_size // 2))
    return "".join([*before, "w", draw(SURROGATES), *after])


def as_received(text: str) -> str:
    """What a server reads from a JSON body carrying ``text``: ``json.dumps`` writes each surrogate as
    a ``\\udXXX`` escape, and ``json.loads`` joins a high one followed by a low one into one character."""
    return json.loads(json.dumps(text))


def replaced(text: str) -> str:
    """The promised rule, stated independently: each lone surrogate stored as U+FFFD."""
    return re.sub("[\ud800-\udfff]", "\ufffd", as_received(text))


def stored(client: TestClient, conversation_id: str, message_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The conversation's summary and the customer's event of ``message_id``, as the store keeps them."""
    r = client.get(f"/bots/tiny/conversations/{conversation_id}", headers=test_slack.AUTH)
    assert r.status_code == 200, r.text
    [turn] = [t for t in r.json()["turns"] if t["message_id"] == message_id]
    return r.json()["summary"], turn["events"][0]["data"]


def test_invalid_unicode_is_stored_replaced_on_every_channel(slack: TestClient, telegram: TestClient) -> None:
    """Lone surrogates (JSON escapes such as \\ud800) in texts, button payloads, user ids and display
    names, sent alike over web HTTP, the widget's WebSocket, signed Slack events and clicks, and
    Telegram messages and clicks: never a 5xx or a dropped frame, and the text is stored with
    each lone surrogate replaced by U+FFFD. (Two apps on one store file: web and Slack, Telegram.)"""
    client = slack
    count = iter(range(10**6))

    def to_telegram(update: dict[str, Any]) -> Any:  # escaped JSON, as Telegram sends it
        return telegram.post(test_telegram.URL, content=json.dumps(update).encode(), headers={
            "Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": test_telegram.SECRET})

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(invalid_unicode(), invalid_unicode(), invalid_unicode())
    def run(text: str, other: str, name: str) -> None:
        n = next(count)
        expected = replaced(text).strip()

        # web, HTTP: text, button payload and user id
        body = json.dumps({"conversation_id": f"fz-h{n}", "message_id": "m1", "text": text,
                           "payload": other, "user_id": name}).encode()
        r = client.post("/bots/tiny/webhooks/web", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        summary, data = stored(client, f"fz-h{n}", "m1")
        assert (data["text"], data["payload"], summary["user_id"]) == (expected, replaced(other), replaced(name))

        # web, the widget's WebSocket: acknowledged and answered, never dropped
        cid, token = start_conversation(client)
        with client.websocket_connect(f"/bots/tiny/webhooks/web/ws?conversation_id={cid}") as ws:
            ws.send_json({"type": "auth", "token": token})
            ws.send_text(json.dumps({"type": "message", "id": "m1", "text": text, "payload": other}))
            frames = until(ws, lambda f: f["type"] in ("reply", "error"))
        assert [f["type"] for f in frames] == ["ack", "typing", "reply"], frames
        _, data = stored(client, cid, "m1")
        assert (data["text"], data["payload"]) == (expected, replaced(other))

        # Slack, signed: a direct message (its user id too) and a button click
        ts = f"1700000000.{n:06d}"
        event = {"type": "message", "channel": f"D{n}", "channel_type": "im", "user": name, "text": text, "ts": ts}
        check(test_slack.deliver(client, event_body(event, event_id=f"Ev{n}")))
        summary, data = stored(client, f"slack:T1:D{n}", ts)
        assert (data["text"], summary["user_id"]) == (expected, replaced(name))
        check(test_slack.deliver(client, test_slack.click(other, text, channel=f"D{n}", action_ts=f"{n}.5"),
                                 content_type="application/x-www-form-urlencoded"))
        _, data = stored(client, f"slack:T1:D{n}", f"action:{n}.5")
        assert (data["text"], data["payload"]) == (replaced(text), replaced(other))

        # Telegram: a message from a user whose display name is invalid too, and a button click
        sender = {"id": 42, "is_bot": False, "first_name": name, "username": name}
        check(to_telegram(text_update(2 * n + 1, text, chat_id=5000 + n, **{"from": sender})))
        _, data = stored(client, f"telegram:{5000 + n}", str(2 * n + 1))
        assert data["text"] == expected
        click = callback_update(2 * n + 2, other, [{"text": text, "callback_data": other}], chat_id=5000 + n)
        check(to_telegram(click))
        _, data = stored(client, f"telegram:{5000 + n}", str(2 * n + 2))
        assert (data["text"], data["payload"]) == (replaced(text), replaced(other))

    run()
