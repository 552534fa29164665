"""The customer's display name from each channel (issue 18 item 1), through the real app and channel
libraries: Telegram's ``from`` (first and last name, else @username), Slack's ``users.info`` on the fake Web
API (looked up once per user, after the message is stored, never holding up the answer; a failed lookup
changes nothing else and is not retried at once), and the web widget's ``name`` (validated: 422 naming the
field). The name is stored on the conversation (the admin API's summary shows it)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from bots.pii import PSEUDONYM_PREFIX
from bots.settings import Settings
from bots.types import ConversationRef
from connectors.review.canned import fill
from tests.bots.keyword_model import copy_bot, start_runtime
from tests.bots.test_pii_runtime import bot_with_pii
from tests.bots.test_pii_runtime import pii_settings as pii_settings  # the fixture (both stores)
from tests.bots.test_pii_store import everything_stored
from tests.conftest import ADMIN_TOKEN
from tests.connectors.test_review_api import review as review  # the fixture
from tests.connectors.test_review_api import serving, sign_in
from tests.connectors.test_slack import FlakyStore, _ready, dm, event_body
from tests.connectors.test_slack import _client as slack_client
from tests.connectors.test_slack import deliver as slack_deliver
from tests.connectors.test_telegram import _client as telegram_client
from tests.connectors.test_telegram import deliver as telegram_deliver
from tests.fixtures.fake_slack import FakeSlack
from tests.fixtures.fake_slack import fake_slack as fake_slack  # the fixture
from tests.fixtures.fake_telegram import FakeTelegram, callback_update, text_update
from tests.fixtures.fake_telegram import fake_telegram as fake_telegram  # the fixture
from tests.fixtures.mongo import mongo_uri as mongo_uri
from tests.fixtures.mongo import secantus as secantus
from tests.fixtures.web_widget import widget_socket

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
XSS_NAME = '<img src=x onerror="window.pwned=3"> Zoë'


def customer_name(client: TestClient, conversation_id: str) -> str | None:
    r = client.get(f"/bots/tiny/conversations/{conversation_id}", headers=AUTH)
    assert r.status_code == 200, r.text
    name = r.json()["summary"]["customer_name"]
    return None if name is None else str(name)


# -- Telegram ----------------------------------------------------------------------------------
def sent_by(update: dict[str, Any], sender: dict[str, Any]) -> dict[str, Any]:
    update["message"]["from"] = sender
    return update


@pytest.fixture
def telegram(tiny_bot_dir: Path, settings: Settings, fake_telegram: FakeTelegram) -> Iterator[TestClient]:
    client, _ = telegram_client(settings, tiny_bot_dir, fake_telegram)
    with client:
        _ready(client)
        yield client


def test_telegram_names_the_customer_from_the_sender(telegram: TestClient, fake_telegram: FakeTelegram) -> None:
    ada = {"id": 42, "is_bot": False, "first_name": "Ada", "last_name": "Lovelace", "username": "ada"}
    telegram_deliver(telegram, sent_by(text_update(1, "hello"), ada))
    fake_telegram.wait_for("sendMessage")
    assert customer_name(telegram, "telegram:1001") == "Ada Lovelace"
    # a button click names them too (its own sender)
    keyboard = [{"text": "Greet", "callback_data": "/greet"}]
    renamed = {"id": 42, "is_bot": False, "first_name": "Ada", "last_name": "King"}
    update = callback_update(2, "/greet", keyboard)
    update["callback_query"]["from"] = renamed
    telegram_deliver(telegram, update)
    fake_telegram.wait_for("sendMessage", 2)
    assert customer_name(telegram, "telegram:1001") == "Ada King"
    # someone with only a username, in another chat
    zed = {"id": 7, "is_bot": False, "first_name": " ", "username": "zed"}
    telegram_deliver(telegram, sent_by(text_update(3, "hello", chat_id=2002), zed))
    fake_telegram.wait_for("sendMessage", 3)
    assert customer_name(telegram, "telegram:2002") == "@zed"


# -- Slack --------------------------------------------------------------------------------------
@pytest.fixture
def slack(tiny_bot_dir: Path, settings: Settings, fake_slack: FakeSlack) -> Iterator[TestClient]:
    with slack_client(settings, tiny_bot_dir, fake_slack, FlakyStore(settings.data_dir / "conversations.db")) as c:
        _ready(c)
        yield c


def _eventually_named(client: TestClient, conversation_id: str, name: str | None) -> None:
    deadline = time.monotonic() + 10
    while customer_name(client, conversation_id) != name:
        assert time.monotonic() < deadline, customer_name(client, conversation_id)
        time.sleep(0.02)


def test_slack_looks_the_user_up_once_and_names_the_conversation(slack: TestClient, fake_slack: FakeSlack) -> None:
    fake_slack.users["U42"] = {"id": "U42", "name": "ada", "real_name": "Ada Lovelace",
                               "profile": {"display_name": "Ada L.", "real_name": "Ada Lovelace"}}
    assert slack_deliver(slack, event_body(dm("hello"))).status_code == 200
    fake_slack.wait_for("chat.postMessage")
    _eventually_named(slack, "slack:T1:D1", "Ada L.")  # what Slack shows: the display name
    [lookup] = fake_slack.calls_to("users.info")
    assert lookup.params["user"] == "U42" and lookup.token == "xoxb-team-one"
    # the next messages carry the cached name: no second lookup
    for i in (2, 3):
        slack_deliver(slack, event_body(dm("hello", ts=f"170000000{i}.000100"), event_id=f"Ev{i}"))
    fake_slack.wait_for("chat.postMessage", 3)
    assert len(fake_slack.calls_to("users.info")) == 1
    assert customer_name(slack, "slack:T1:D1") == "Ada L."


def test_a_failed_slack_lookup_never_stops_the_answer_and_is_not_repeated_at_once(
        slack: TestClient, fake_slack: FakeSlack) -> None:
    fake_slack.fail_next("users.info", 500, body="oops", content_type="text/plain")
    slack_deliver(slack, event_body(dm("hello")))
    fake_slack.wait_for("chat.postMessage")  # answered
    fake_slack.wait_for("users.info")
    slack_deliver(slack, event_body(dm("hello", ts="1700000002.000100"), event_id="Ev2"))
    fake_slack.wait_for("chat.postMessage", 2)
    time.sleep(0.2)
    assert len(fake_slack.calls_to("users.info")) == 1  # not asked again for a while
    assert customer_name(slack, "slack:T1:D1") is None
    # an unknown user (user_not_found) in another workspace: answered, unnamed
    body = event_body({**dm("hello", ts="1700000003.000100"), "user": "U99"}, team="T2", event_id="Ev3")
    slack_deliver(slack, body)
    fake_slack.wait_for("chat.postMessage", 3)
    fake_slack.wait_for("users.info", 2)
    assert customer_name(slack, "slack:T2:D1") is None


def test_a_token_without_the_users_read_scope_is_not_asked_again(slack: TestClient, fake_slack: FakeSlack) -> None:
    fake_slack.fail_next("users.info", 200, body='{"ok": false, "error": "missing_scope", "needed": "users:read"}',
                         content_type="application/json")
    fake_slack.users["U7"] = {"id": "U7", "name": "seven", "profile": {"display_name": "Seven"}}
    slack_deliver(slack, event_body(dm("hello")))
    fake_slack.wait_for("users.info")
    fake_slack.wait_for("chat.postMessage")
    # another user of the same workspace (token): not asked, whatever Slack would say now
    slack_deliver(slack, event_body({**dm("hello", ts="1700000002.000100"), "user": "U7", "channel": "D7"},
                                    event_id="Ev2"))
    fake_slack.wait_for("chat.postMessage", 2)
    time.sleep(0.2)
    assert len(fake_slack.calls_to("users.info")) == 1
    assert customer_name(slack, "slack:T1:D7") is None
    # the other workspace's token is asked
    slack_deliver(slack, event_body({**dm("hello", ts="1700000003.000100"), "user": "U7"}, team="T2",
                                    event_id="Ev3"))
    _eventually_named(slack, "slack:T2:D1", "Seven")


# -- web ----------------------------------------------------------------------------------------
def _post(client: TestClient, mid: str, **extra: Any) -> Any:
    return client.post("/bots/tiny/webhooks/web",
                       json={"conversation_id": "c1", "message_id": mid, "text": "hello", **extra})


def test_the_web_widget_names_the_customer_and_bad_names_are_refused(web_client: TestClient,
                                                                     settings: Settings) -> None:
    assert _post(web_client, "m1", name="  Grace   Hopper ").status_code == 200
    assert customer_name(web_client, "c1") == "Grace Hopper"
    assert _post(web_client, "m2").status_code == 200  # no name: kept
    assert customer_name(web_client, "c1") == "Grace Hopper"
    for bad, why in (("x" * 81, "80 characters"), ("Grace\nHopper", "one line"), ("Ada\u202eecalevol", "one line")):
        r = _post(web_client, "m3", name=bad)
        assert r.status_code == 422 and "name" in r.text and why in r.text, r.text
        r = web_client.post("/bots/tiny/webhooks/web/conversations", json={"name": bad})
        assert r.status_code == 422 and "name" in r.text and why in r.text, r.text
    assert web_client.post("/bots/tiny/webhooks/web/conversations", json={"nick": "x"}).status_code == 422
    assert customer_name(web_client, "c1") == "Grace Hopper"

    # the widget: the conversation started with the name, the name sent with each message
    started = web_client.post("/bots/tiny/webhooks/web/conversations", json={"name": "Zoë <b>"})
    assert started.status_code == 201, started.text
    cid = started.json()["conversation_id"]
    with widget_socket(web_client, settings, cid) as ws:
        ws.send_json({"type": "message", "id": "w1", "text": "hello", "name": "Zoë <b>"})
        frames = [ws.receive_json() for _ in range(3)]
        assert frames[-1]["type"] == "reply"
        ws.send_json({"type": "message", "id": "w2", "text": "hello", "name": "bad\x00name"})
        error = ws.receive_json()
        assert error["type"] == "error" and error["id"] == "w2" and "name" in error["detail"]
    assert customer_name(web_client, cid) == "Zoë <b>"  # stored as given; every page escapes it


# -- the review UI --------------------------------------------------------------------------------
def test_agents_see_and_search_the_name_and_canned_replies_fall_back_to_it(review: TestClient) -> None:
    """``{customer_name}``: the slot first, else the channel's name, never a ``pii:`` pseudonym; the queue, the
    list (searched by it) and the transcript show it, escaped; the CSV export has it (formula-safe)."""
    assert _post(review, "m1", name=XSS_NAME).status_code == 200
    r = review.post("/bots/tiny/webhooks/web", json={"conversation_id": "c2", "message_id": "m1", "text": "hi"})
    assert r.status_code == 200
    ada = {"X-CSRF-Token": sign_in(review, "ada")}
    assert review.put("/review/api/canned", json={"name": "hi", "text": "Hi {customer_name}!"},
                      headers=ada).status_code == 200
    sign_in(review, "ann")
    filled = review.get("/review/api/bots/tiny/conversations/c1/canned").json()["items"]
    assert [r["text"] for r in filled] == [f"Hi {XSS_NAME}!"]  # text for the composer (never HTML)
    filled = review.get("/review/api/bots/tiny/conversations/c2/canned").json()["items"]
    assert [r["text"] for r in filled] == ["Hi {customer_name}!"]  # no name: left for the agent
    assert fill("Hi {customer_name}", {}, "anon-0123456789abcdef0123456789abcdef") == "Hi {customer_name}"
    assert fill("Hi {customer_name}", {"name": "Jo"}, "Ada") == "Hi Jo"

    page = review.get("/review?customer=ONERROR")  # any case, part of the name
    assert page.status_code == 200 and page.text.count('<td class="customer">') == 1
    assert str(escape(XSS_NAME)) in page.text and XSS_NAME not in page.text
    assert review.get("/review?customer=" + "x" * 81).status_code == 422
    transcript = review.get("/review/bots/tiny/conversations/c1")
    assert str(escape(XSS_NAME)) in transcript.text and XSS_NAME not in transcript.text
    csv = review.get("/review/api/conversations/export?format=csv").text
    assert "customer_name" in csv.splitlines()[0] and "'=HYPERLINK" not in csv
    review.post("/bots/tiny/webhooks/web", json={"conversation_id": "c3", "message_id": "m1", "text": "hi",
                                                 "name": "=HYPERLINK(1)"})
    assert "'=HYPERLINK(1)" in review.get("/review/api/conversations/export?format=csv").text


async def test_the_welcome_stores_the_name_the_widget_opened_with(tmp_path: Path) -> None:
    """A bot with a web ``welcome:`` stores the conversation when the chat opens: with the customer's name."""
    runtime = await start_runtime(copy_bot(tmp_path, extra_yaml='welcome:\n  web: "Hi there!"\n'),
                                  tmp_path / "data" / "conversations.db")
    try:
        ref = ConversationRef(bot="shop", channel="web", conversation_id="w1")
        assert [r.text for r in await runtime.open(ref, customer_name="Ada  Lovelace")] == ["Hi there!"]
        summary = await runtime.summary("shop", "w1")
        assert summary is not None and summary.customer_name == "Ada Lovelace"
    finally:
        await runtime.aclose()


def test_a_pii_bot_never_stores_or_shows_the_raw_name(tiny_bot_dir: Path, tmp_path: Path, pii_settings: Settings,
                                                       request: pytest.FixtureRequest) -> None:
    """Through the web channel on both stores: the name becomes its keyed pseudonym, shown as such in the
    queue, found by the whole name (not by a part), and never written raw."""
    bot = bot_with_pii(tiny_bot_dir, tmp_path, "pii: true\nrules:\n  - intent: contact_human_agent\n"
                                               "    handoff: true\n")
    with serving(pii_settings, [bot]) as client:
        for mid, text in (("m1", "hello"), ("m2", "I want to talk to a human")):
            r = client.post("/bots/tiny/webhooks/web", json={"conversation_id": "p1", "message_id": mid,
                                                             "text": text, "name": "Zelda Quux"})
            assert r.status_code == 200, r.text
        name = customer_name(client, "p1")
        assert name is not None and name.startswith(PSEUDONYM_PREFIX)
        [item] = client.get("/review/api/queue", headers=AUTH).json()["items"]
        assert item["customer"] == name
        found = client.get("/review/api/conversations?bot=tiny&customer=Zelda%20Quux", headers=AUTH).json()["items"]
        assert [c["conversation_id"] for c in found] == ["p1"]
        assert client.get("/review/api/conversations?bot=tiny&customer=Zelda", headers=AUTH).json()["items"] == []
        stored = everything_stored(client.app.state.runtime.store, request, pii_settings.data_dir)  # type: ignore[attr-defined]
    for raw in ("Zelda", "Quux"):
        assert raw not in stored
