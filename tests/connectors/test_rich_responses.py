"""Rich responses (buttons, link buttons, images, attachments, custom payloads) from the response to every
channel: ``BotResponse``'s fields and their stored shape, the engine filling them from a Rasa domain
(tests/data/rasa/rich), a rasa-sdk action and a bot.yml (tests/data/rich_bot), and each channel's rendering
through its real client against the fake Slack and Telegram servers (the web widget in a browser:
tests/e2e/test_browser_rich.py). What a channel cannot show arrives as text (docs/channels.md)."""

from __future__ import annotations

import base64
import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest
from fastapi.testclient import TestClient

from bots.artifact import Manifest, write_manifest
from bots.botspec import BotSpec
from bots.errors import ConfigError
from bots.events import BOT, Event
from bots.loader import load_bot_folder
from bots.settings import Settings
from bots.store.base import SummaryUpdate
from bots.types import BotResponse, Button, ConversationRef
from connectors.app import create_app
from connectors.base import ChannelFactory
from connectors.rich import data_image, http_url, plan
from tests.bots.lookup_model import LookupModel, project
from tests.connectors.test_slack import click, dm, slack_channel
from tests.connectors.test_slack import deliver as slack_deliver
from tests.connectors.test_telegram import deliver as telegram_deliver
from tests.connectors.test_telegram import telegram_channel
from tests.fixtures.fake_slack import FakeSlack, event_body
from tests.fixtures.fake_slack import fake_slack as fake_slack  # the fixture
from tests.fixtures.fake_telegram import TOKEN, FakeTelegram, callback_update, text_update
from tests.fixtures.fake_telegram import fake_telegram as fake_telegram  # the fixture

RICH_BOT = Path(__file__).resolve().parents[1] / "data" / "rich_bot"
MENU_TEXT = "Today's menu <b>fresh</b> & hot."
PIZZA = '/order{"dish": "pizza"}'
MENU_BUTTONS = (Button("Pizza <i>", PIZZA), Button("Opening hours", "", "https://example.com/hours"))
MENU_CUSTOM = {"kind": "menu_card", "dishes": ["pizza", "soup"]}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


def lookup(artifact: Path, spec: BotSpec, settings: Settings) -> LookupModel:
    return LookupModel(spec, {})


def bot_yml_bot(tmp_path: Path) -> Path:
    """tests/data/rich_bot with a (fake) artifact: its NLU is ``LookupModel``."""
    bot_dir = tmp_path / "rich_bot"
    shutil.copytree(RICH_BOT, bot_dir)
    artifact = bot_dir / "models" / "lookup-1"
    artifact.mkdir(parents=True)
    write_manifest(artifact, Manifest(bot="rich", version="lookup-1", data_hash="0" * 16, base_model="lookup",
                                      labels=(), created_at="2026-01-01T00:00:00Z"))
    return bot_dir


def _ready(client: TestClient) -> None:
    deadline = time.monotonic() + 30
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").text
        time.sleep(0.05)


def serve(settings: Settings, bot_dir: Path, *channels: ChannelFactory) -> TestClient:
    return TestClient(create_app(settings, [bot_dir], channels=list(channels), model_loader=lookup))


@pytest.fixture
def rasa_bot(tmp_path: Path) -> Path:
    return project(tmp_path, "rich")


# -- the shape ---------------------------------------------------------------------------------------------
def test_rich_fields_round_trip_and_stored_replies_keep_loading() -> None:
    full = BotResponse("Menu", MENU_BUTTONS, "template", {"response": "utter_menu"}, image="https://e.x/m.png",
                       attachment="https://e.x/m.pdf", custom=MENU_CUSTOM)
    stored = json.loads(json.dumps(full.to_dict()))
    assert stored["buttons"][1] == {"title": "Opening hours", "payload": "", "url": "https://example.com/hours"}
    assert stored["image"] == "https://e.x/m.png" and stored["custom"] == MENU_CUSTOM
    assert BotResponse.from_dict(stored) == full
    # A reply stored before the rich fields: the same shape back, byte for byte.
    old = {"text": "Hi", "buttons": [{"title": "A", "payload": "/a"}], "source": "template", "metadata": {"x": 1}}
    assert BotResponse.from_dict(old).to_dict() == old
    # ... and one the engine stored with its rich parts in the metadata: they load as the fields.
    engine_era = {"text": "Look", "buttons": [], "source": "template",
                  "metadata": {"response": "utter_x", "image": "https://e.x/i.png", "attachment": "https://e.x/f.pdf",
                               "custom": {"blocks": []}}}
    loaded = BotResponse.from_dict(engine_era)
    assert (loaded.image, loaded.attachment, loaded.custom) == ("https://e.x/i.png", "https://e.x/f.pdf",
                                                                {"blocks": []})
    assert loaded.metadata == {"response": "utter_x"}
    # Rasa passes a custom payload that is not an object through: it is kept, wrapped, never dropped.
    assert BotResponse.from_dict({"text": "", "custom": ["a", 1]}).custom == {"payload": ["a", 1]}


def test_as_text_keeps_every_part_but_the_custom_payload() -> None:
    r = BotResponse(MENU_TEXT, MENU_BUTTONS, image="https://e.x/m.png", attachment="https://e.x/m.pdf",
                    custom=MENU_CUSTOM)
    assert r.as_text() == (f"{MENU_TEXT}\n1. Pizza <i>\n2. Opening hours: https://example.com/hours\n"
                           "Image: https://e.x/m.png\nAttachment: https://e.x/m.pdf")
    assert "menu_card" not in r.as_text()


def test_urls_a_channel_takes_and_the_degraded_text() -> None:
    for url in ("https://example.com/a.png", "http://127.0.0.1:8000/x?y=1#z"):
        assert http_url(url)
    bad: tuple[str | None, ...] = ("javascript:alert(1)", "//example.com/a", "https://", "https://exa mple.com",
                                   "ftp://e.x/f", "data:image/png;base64,AAAA", "https://user@evil.example/", None,
                                   "https://e.x/" + "a" * 3000)
    for odd in bad:
        assert not http_url(odd), odd
    assert data_image(f"data:image/png;base64,{PNG}") == (base64.b64decode(PNG), "png")
    assert data_image("data:image/svg+xml;base64,PHN2Zz4=") is None
    assert data_image("data:image/png;base64,@@@") is None

    r = BotResponse("Pick", (Button("Go", "/go"), Button("Docs", "", "javascript:alert(1)")),
                    image="data:image/png;base64,AAAA", attachment="ftp://e.x/f")
    shown = plan(r, image_ok=False, attachment_ok=False)
    assert [b.title for _, b in shown.buttons] == ["Go"]
    assert shown.text == ("Pick\nDocs: javascript:alert(1)\nImage: (inline data, not shown on this channel)\n"
                          "Attachment: ftp://e.x/f")


# -- what the engine produces ------------------------------------------------------------------------------
def test_a_rasa_domain_an_action_and_a_bot_yml_give_the_same_rich_reply(rasa_bot: Path, tmp_path: Path,
                                                                       settings: Settings) -> None:
    menu = BotResponse(MENU_TEXT, MENU_BUTTONS, "template", {"response": "utter_show_menu"},
                       image="https://example.com/menu.png", attachment="https://example.com/menu.pdf",
                       custom=MENU_CUSTOM)
    with serve(settings, rasa_bot) as client:
        _ready(client)
        replies = _web(client, "rich", "c1", payload="/show_menu")
        assert replies == [{**_out(menu)}]
        # The rasa-sdk action: utter_message's text, buttons, image, attachment, json_message; then a domain
        # response with the call's own image laid over it.
        card, greet = _web(client, "rich", "c1", text="show my card")
        assert card == {"text": "Your loyalty card.", "source": "action", "image": "https://example.com/card.png",
                        "attachment": "https://example.com/card.pdf", "custom": {"card": {"number": 7, "points": 120}},
                        "buttons": [{"title": "Show the menu", "payload": "/show_menu", "url": None},
                                    {"title": "Terms", "payload": "", "url": "https://example.com/terms"}]}
        assert (greet["text"], greet["image"], greet["custom"]) == ("Hi! What would you like?",
                                                                    "https://example.com/wave.png", None)
    with serve(settings, bot_yml_bot(tmp_path)) as client:
        _ready(client)
        assert _web(client, "rich", "c1", payload="/show_menu") == [_out(menu)]
        assert _web(client, "rich", "c1", payload=PIZZA) == [
            {"text": "One pizza, coming up.", "buttons": [], "image": None, "attachment": None, "custom": None,
             "source": "template"}]


def _out(r: BotResponse) -> dict[str, Any]:
    return {"text": r.text, "source": r.source, "image": r.image, "attachment": r.attachment, "custom": r.custom,
            "buttons": [{"title": b.title, "payload": b.payload, "url": b.url} for b in r.buttons]}


def _web(client: TestClient, bot: str, conversation: str, *, text: str = "", payload: str | None = None) -> Any:
    r = client.post(f"/bots/{bot}/webhooks/web", json={"conversation_id": conversation,
                                                       "message_id": f"m{time.monotonic_ns()}", "text": text,
                                                       "payload": payload})
    assert r.status_code == 200, r.text
    return r.json()["responses"]


@pytest.mark.parametrize(("variant", "problem"), [
    ("{text: Hi, image: 'javascript:alert(1)'}", "'image' must be an http(s) URL"),
    ("{text: Hi, buttons: [{title: Go}]}", "needs a 'payload' (sent back when clicked) or a 'url'"),
    ("{text: Hi, buttons: [{title: Go, payload: /go, url: 'https://e.x'}]}", "or a 'url' (a link), one of them"),
    ("{text: Hi, buttons: [{title: Go, url: 'ftp://e.x'}]}", "'url' must be an http(s) URL"),
    ("{text: Hi, custom: [1, 2]}", "'custom' must be a mapping"),
    ("{text: Hi, imgae: 'https://e.x/a.png'}", "unknown response key 'imgae'"),
    ("{image: 'https://e.x/a.png'}", "a response needs 'text'"),
])
def test_a_bad_rich_response_in_bot_yml_names_its_line(tmp_path: Path, variant: str, problem: str) -> None:
    bot_dir = tmp_path / "bad"
    bot_dir.mkdir()
    (bot_dir / "bot.yml").write_text("name: bad\nintents:\n  greet:\n    examples: [hello, hi]\n"
                                     f"    response:\n      - {variant}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_bot_folder(bot_dir)
    assert "bot.yml:6: intent 'greet': " in str(err.value) and problem in str(err.value), str(err.value)


# -- Slack -------------------------------------------------------------------------------------------------
@pytest.fixture
def slack(rasa_bot: Path, settings: Settings, fake_slack: FakeSlack) -> Iterator[TestClient]:
    with serve(settings, rasa_bot, slack_channel(fake_slack, default_token="xoxb-team-two")) as client:
        _ready(client)
        yield client


SLACK = "/bots/rich/webhooks/slack"


def test_slack_blocks_image_buttons_and_the_custom_blocks_as_given(slack: TestClient, fake_slack: FakeSlack) -> None:
    assert slack_deliver(slack, event_body(dm("show me the menu")), url=SLACK).status_code == 200
    reply, custom = fake_slack.wait_for("chat.postMessage", 2)
    blocks = reply.params["blocks"]
    assert [b["type"] for b in blocks] == ["section", "image", "actions"]
    assert blocks[0]["text"] == {"type": "plain_text", "text": MENU_TEXT, "emoji": True}  # as written, not mrkdwn
    assert blocks[1] == {"type": "image", "image_url": "https://example.com/menu.png", "alt_text": MENU_TEXT}
    pizza, hours = blocks[2]["elements"]
    assert (pizza["value"], pizza["text"]["text"], "url" in pizza) == (PIZZA, "Pizza <i>", False)
    assert (hours["url"], hours["text"]["text"], "value" in hours) == ("https://example.com/hours", "Opening hours",
                                                                       False)
    # The notification text (mrkdwn, escaped) carries the options, the link and the image.
    assert reply.params["text"] == ("Today's menu &lt;b&gt;fresh&lt;/b&gt; &amp; hot.\n1. Pizza &lt;i&gt;\n"
                                    "2. Opening hours: https://example.com/hours\nImage: https://example.com/menu.png")
    # Rasa's Slack custom payload: the blocks as given, in a message of their own, with a notification text.
    assert custom.params["blocks"] == [
        {"type": "section", "text": {"type": "mrkdwn", "text": "*Specials* today: soup"}}]
    assert custom.params["text"] == "Today's menu &lt;b&gt;fresh&lt;/b&gt; &amp; hot."
    assert custom.params["channel"] == "D1"

    # A payload button's click is the customer's next message; a link button's click is only acknowledged.
    body = click(PIZZA, "Pizza <i>")
    assert slack_deliver(slack, body, url=SLACK, content_type="application/x-www-form-urlencoded").status_code == 200
    answer = fake_slack.wait_for("chat.postMessage", 3)[2]
    assert answer.params["blocks"][0]["text"]["text"] == "One pizza, coming up."
    link_click = json.loads(parse_qs(click("x", "Opening hours", action_ts="1700000100.000001").decode())["payload"][0])
    del link_click["actions"][0]["value"]
    link_click["actions"][0]["url"] = "https://example.com/hours"
    form = urlencode({"payload": json.dumps(link_click)}).encode()
    assert slack_deliver(slack, form, url=SLACK, content_type="application/x-www-form-urlencoded").status_code == 200
    time.sleep(0.3)
    assert len(fake_slack.calls_to("chat.postMessage")) == 3


def test_slack_refusing_the_blocks_gets_the_reply_as_text(slack: TestClient, fake_slack: FakeSlack) -> None:
    """Slack answers invalid_blocks when it cannot fetch an image: the reply is sent again as text."""
    fake_slack.fail_next("chat.postMessage", 200, body='{"ok": false, "error": "invalid_blocks"}')
    slack_deliver(slack, event_body(dm("show me the menu")), url=SLACK)
    refused, again, custom = fake_slack.wait_for("chat.postMessage", 3)
    assert any(b["type"] == "image" for b in refused.params["blocks"])
    assert [b["type"] for b in again.params["blocks"]] == ["section"]
    assert again.params["blocks"][0]["text"]["text"] == (
        f"{MENU_TEXT}\n- Pizza <i>\nOpening hours: https://example.com/hours\nImage: https://example.com/menu.png")
    assert "blocks" in custom.params  # the custom payload still goes out after


def test_slack_shows_a_foreign_custom_payload_as_nothing_and_bad_links_as_text(
        rasa_bot: Path, tmp_path: Path, settings: Settings, fake_slack: FakeSlack,
        caplog: pytest.LogCaptureFixture) -> None:
    """The bot.yml bot's menu has a custom payload for the web page (no blocks): not sent to Slack (logged);
    its attachment is a link section. A reply with a link Block Kit would refuse shows it as text."""
    with serve(settings, bot_yml_bot(tmp_path), slack_channel(fake_slack, default_token="xoxb-team-two")) as client:
        _ready(client)
        with caplog.at_level(logging.WARNING, logger="switchboard.slack"):
            slack_deliver(client, event_body(dm("show me the menu")), url=SLACK)
            [reply] = fake_slack.wait_for("chat.postMessage")
            time.sleep(0.3)
        assert len(fake_slack.calls_to("chat.postMessage")) == 1
        assert "custom payload without Slack blocks" in caplog.text
        assert [b["type"] for b in reply.params["blocks"]] == ["section", "section", "image", "actions"]
        assert reply.params["blocks"][1]["text"] == {"type": "mrkdwn", "text": "<https://example.com/menu.pdf|menu.pdf>"}
        assert reply.params["text"].endswith("Attachment: https://example.com/menu.pdf")

        channel = client.app.state.channels["slack"]  # type: ignore[attr-defined]
        ref = ConversationRef("rich", "slack", "slack:T1:D1", {"team": "T1", "channel": "D1"})
        odd = BotResponse("See", (Button("Docs", "", "javascript:alert(1)"), Button("Go", "/go")),
                          image="data:image/png;base64,AAAA", attachment="ftp://e.x/f.pdf")
        client.portal.call(channel.send, ref, [odd])  # type: ignore[union-attr]
        sent = fake_slack.wait_for("chat.postMessage", 2)[1]
        assert [b["type"] for b in sent.params["blocks"]] == ["section", "actions"]
        assert sent.params["blocks"][0]["text"]["text"] == (
            "See\nDocs: javascript:alert(1)\nImage: (inline data, not shown on this channel)\n"
            "Attachment: ftp://e.x/f.pdf")
        assert [e["value"] for e in sent.params["blocks"][1]["elements"]] == ["/go"]


# -- Telegram ----------------------------------------------------------------------------------------------
@pytest.fixture
def telegram(rasa_bot: Path, settings: Settings, fake_telegram: FakeTelegram) -> Iterator[TestClient]:
    factory = telegram_channel(fake_telegram, {"rich": TOKEN})
    with serve(settings, rasa_bot, factory) as client:
        _ready(client)
        yield client


TELEGRAM = "/bots/rich/webhooks/telegram"
KEYBOARD = [[{"text": "Pizza <i>", "callback_data": PIZZA}], [{"text": "Opening hours",
                                                                 "url": "https://example.com/hours"}]]


def test_telegram_photo_with_caption_keyboard_document_and_a_click(telegram: TestClient,
                                                                   fake_telegram: FakeTelegram) -> None:
    assert telegram_deliver(telegram, text_update(1, "show me the menu"), url=TELEGRAM).status_code == 200
    [photo] = fake_telegram.wait_for("sendPhoto")
    [document] = fake_telegram.wait_for("sendDocument")
    assert photo.params["photo"] == "https://example.com/menu.png"
    assert photo.params["caption"] == MENU_TEXT and "parse_mode" not in photo.params
    assert photo.params["reply_markup"] == {"inline_keyboard": KEYBOARD}
    assert document.params["document"] == "https://example.com/menu.pdf" and "reply_markup" not in document.params
    assert photo.at <= document.at
    assert fake_telegram.calls_to("sendMessage") == []  # the text went as the caption
    time.sleep(0.2)  # the custom payload (for the web page) has no Telegram method: nothing else is sent
    assert {c.method for c in fake_telegram.calls} == {"sendChatAction", "sendPhoto", "sendDocument"}

    telegram_deliver(telegram, callback_update(2, PIZZA, [b for row in KEYBOARD for b in row]), url=TELEGRAM)
    [answer] = fake_telegram.wait_for("sendMessage")
    assert answer.params["text"] == "One pizza, coming up."


def test_telegram_custom_payload_is_the_bot_api_method_rasa_calls(telegram: TestClient,
                                                                  fake_telegram: FakeTelegram) -> None:
    telegram_deliver(telegram, text_update(1, "where are you"), url=TELEGRAM)
    [text] = fake_telegram.wait_for("sendMessage")
    [location] = fake_telegram.wait_for("sendLocation")
    assert text.params["text"] == "We are here:"  # the telegram variation of utter_where
    assert (location.params["latitude"], location.params["longitude"], location.params["chat_id"]) == (
        "52.52", "13.405", "1001")


def test_telegram_image_it_cannot_fetch_and_an_inline_image(telegram: TestClient, fake_telegram: FakeTelegram) -> None:
    fake_telegram.fail_with("sendPhoto", 400)  # "wrong file identifier/HTTP URL specified"
    telegram_deliver(telegram, text_update(1, "show me the menu"), url=TELEGRAM)
    [instead] = fake_telegram.wait_for("sendMessage")
    assert instead.params["text"] == f"{MENU_TEXT}\nImage: https://example.com/menu.png"
    assert instead.params["reply_markup"] == {"inline_keyboard": KEYBOARD}
    fake_telegram.wait_for("sendDocument")

    channel = telegram.app.state.channels["telegram"]  # type: ignore[attr-defined]
    ref = ConversationRef("rich", "telegram", "telegram:1001", {"chat_id": "1001"})
    long_text = "word " * 300  # over the 1024 caption limit: the text first, the photo after
    inline = BotResponse(long_text.strip(), (Button("Docs", "", "javascript:x"),),
                         image=f"data:image/png;base64,{PNG}")
    telegram.portal.call(channel.send, ref, [inline])  # type: ignore[union-attr]
    upload = fake_telegram.wait_for("sendPhoto", 2)[1]
    assert upload.params["photo"]["data"] == base64.b64decode(PNG)
    assert upload.params["photo"]["filename"] == "image.png" and "caption" not in upload.params
    text = fake_telegram.wait_for("sendMessage", 2)[1]
    assert text.params["text"].endswith("\nDocs: javascript:x") and "reply_markup" not in text.params
    assert text.at <= upload.at


def test_telegram_long_payload_next_to_a_link_button_is_resolved(rasa_bot: Path, settings: Settings,
                                                                  fake_telegram: FakeTelegram) -> None:
    long_payload = '/order{"dish": "' + "p" * 70 + '"}'
    response = BotResponse("Pick", buttons=(Button("Hours", "", "https://example.com/hours"),
                                            Button("Bad link", "", "nope"), Button("Long", long_payload)))
    ref = ConversationRef("rich", "telegram", "telegram:1001", {"chat_id": "1001"})
    factory = telegram_channel(fake_telegram, {"rich": TOKEN})
    with serve(settings, rasa_bot, factory) as client:
        _ready(client)
        channel = client.app.state.channels["telegram"]  # type: ignore[attr-defined]
        telegram_deliver(client, text_update(1, "hello"), url=TELEGRAM)  # the conversation starts
        fake_telegram.wait_for("sendMessage")

        async def store_and_send() -> None:
            store = client.app.state.runtime.store  # type: ignore[attr-defined]
            await store.append("rich", "telegram:1001", [Event(BOT, response.to_dict())], SummaryUpdate())
            await channel.send(ref, [response])

        client.portal.call(store_and_send)  # type: ignore[union-attr]
        sent = fake_telegram.wait_for("sendMessage", 2)[1]
        keyboard = [row[0] for row in sent.params["reply_markup"]["inline_keyboard"]]
        assert keyboard == [{"text": "Hours", "url": "https://example.com/hours"},
                            {"text": "Long", "callback_data": "#2"}]
        assert sent.params["text"] == "Pick\nBad link: nope"
        telegram_deliver(client, callback_update(3, "#2", keyboard), url=TELEGRAM)
        answer = fake_telegram.wait_for("sendMessage", 3)[2]
    assert answer.params["text"] == f"One {'p' * 70}, coming up."
