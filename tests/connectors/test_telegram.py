"""The Telegram channel end to end: the real app and aiogram, a trained tiny bot, the embedded
store, and a fake Telegram Bot API on 127.0.0.1. Webhook requests carry the secret header."""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bots.events import BOT, Event
from bots.settings import Settings
from bots.store.base import SummaryUpdate
from bots.types import BotResponse, Button, ConversationRef
from connectors.app import create_app
from connectors.base import ChannelFactory
from connectors.cli import main as cli_main
from connectors.outgoing import RetryPolicy, split_text, utf16_len
from connectors.telegram import TelegramChannel, poll_until
from tests.conftest import ADMIN_TOKEN
from tests.connectors.test_slack import FAST, RESPONSES, FlakyStore, _ready, shared_model
from tests.connectors.test_slack import SECRET as SLACK_SECRET
from tests.connectors.test_web import metric
from tests.fixtures.fake_telegram import OTHER_TOKEN, TOKEN, FakeTelegram, callback_update, text_update
from tests.fixtures.fake_telegram import fake_telegram as fake_telegram  # the fixture

SECRET = "s3cr3t-token_for-telegram"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
URL = "/bots/tiny/webhooks/telegram"
SPECIAL = "Hi_there *bold* [link](x) ~strike~ `code` > quote #1 +2 -3 =4 |5| {6}. Done!"


def telegram_channel(fake: FakeTelegram, tokens: dict[str, str] | None = None) -> ChannelFactory:
    """The Telegram channel on the fake Bot API (the tiny bot's token unless ``tokens`` says otherwise)."""
    return functools.partial(TelegramChannel, tokens=tokens if tokens is not None else {"tiny": TOKEN},
                             secret=SECRET, api_url=fake.base_url, policy=FAST)


def _client(settings: Settings, bot_dir: Path, fake: FakeTelegram, store: Any = None,
            tokens: dict[str, str] | None = None) -> tuple[TestClient, TelegramChannel]:
    channel = telegram_channel(fake, tokens)
    app = create_app(settings, [bot_dir], store=store, channels=[channel], model_loader=shared_model)
    return TestClient(app), app.state.channels["telegram"]


@pytest.fixture
def store(settings: Settings) -> FlakyStore:
    return FlakyStore(settings.data_dir / "conversations.db")


@pytest.fixture
def telegram(tiny_bot_dir: Path, settings: Settings, fake_telegram: FakeTelegram,
             store: FlakyStore) -> Iterator[TestClient]:
    client, _ = _client(settings, tiny_bot_dir, fake_telegram, store)
    with client:
        _ready(client)
        yield client


def deliver(client: TestClient, update: dict[str, Any], *, secret: str | None = SECRET, url: str = URL) -> Any:
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
    return client.post(url, json=update, headers=headers)


def transcript(client: TestClient, conversation_id: str) -> dict[str, Any]:
    r = client.get(f"/bots/tiny/conversations/{conversation_id}", headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()


def conversations(client: TestClient) -> int:
    return int(client.get("/bots/tiny/conversations", headers=AUTH).json()["total"])


def test_conversation_with_typing_feedback(telegram: TestClient, fake_telegram: FakeTelegram) -> None:
    assert deliver(telegram, text_update(1, "I want to cancel my order 123")).status_code == 200
    [reply] = fake_telegram.wait_for("sendMessage")
    assert reply.token == TOKEN
    assert reply.params["chat_id"] == "1001"
    assert reply.params["text"] == "Order 123 is being cancelled."
    assert "parse_mode" not in reply.params  # plain text: shown exactly as written
    [typing] = fake_telegram.calls_to("sendChatAction")
    assert typing.params == {"chat_id": "1001", "action": "typing"}
    assert typing.at <= reply.at

    deliver(telegram, text_update(2, "hello"))
    replies = fake_telegram.wait_for("sendMessage", 2)
    assert replies[1].params["text"] == RESPONSES["greet"]
    t = transcript(telegram, "telegram:1001")
    assert t["summary"]["channel"] == "telegram"
    assert [turn["events"][0]["data"]["text"] for turn in t["turns"]] == ["I want to cancel my order 123", "hello"]


@pytest.mark.parametrize("secret", [None, "", "wrong-secret", SECRET + "x", SECRET.upper()])
def test_wrong_or_missing_secret_is_refused(telegram: TestClient, fake_telegram: FakeTelegram,
                                            secret: str | None) -> None:
    r = deliver(telegram, text_update(1, "hello"), secret=secret)
    assert r.status_code == 401
    assert "X-Telegram-Bot-Api-Secret-Token" in r.json()["detail"]
    assert conversations(telegram) == 0
    assert metric(telegram, "switchboard_rejected_requests_total", channel="telegram", reason="secret") == 1
    time.sleep(0.1)
    assert fake_telegram.calls == []


def test_redelivered_update_is_answered_once(telegram: TestClient, fake_telegram: FakeTelegram) -> None:
    update = text_update(7, "hello")
    assert deliver(telegram, update).status_code == 200
    assert deliver(telegram, update).status_code == 200
    fake_telegram.wait_for("sendMessage")
    assert deliver(telegram, update).status_code == 200
    time.sleep(0.3)
    assert len(fake_telegram.calls_to("sendMessage")) == 1
    assert len(transcript(telegram, "telegram:1001")["turns"]) == 1
    assert metric(telegram, "switchboard_duplicate_messages_total", channel="telegram") == 2


def test_inline_keyboard_and_callback_query(telegram: TestClient, fake_telegram: FakeTelegram) -> None:
    deliver(telegram, text_update(1, "zxq vbnm qwpo"))
    [fallback] = fake_telegram.wait_for("sendMessage")
    rows = fallback.params["reply_markup"]["inline_keyboard"]
    assert 1 <= len(rows) <= 3
    buttons = [row[0] for row in rows]
    assert all(b["callback_data"].startswith("/") for b in buttons)

    chosen = buttons[0]
    r = deliver(telegram, callback_update(2, chosen["callback_data"], buttons, query_id="q-77"))
    assert r.status_code == 200
    replies = fake_telegram.wait_for("sendMessage", 2)
    assert replies[1].params["text"] == RESPONSES[chosen["callback_data"].lstrip("/")]
    [answered] = fake_telegram.calls_to("answerCallbackQuery")
    assert answered.params["callback_query_id"] == "q-77"
    turn = transcript(telegram, "telegram:1001")["turns"][1]
    assert turn["events"][0]["data"]["payload"] == chosen["callback_data"]
    assert turn["events"][0]["data"]["text"] == chosen["text"]


def test_payload_longer_than_callback_data_is_resolved(tiny_bot_dir: Path, settings: Settings,
                                                       fake_telegram: FakeTelegram) -> None:
    """An agent's (stored) reply with a long button payload: the click still carries that payload."""
    long_payload = '/track_order{"order_id": "' + "7" * 70 + '"}'
    response = BotResponse("Pick one", buttons=(Button("Track it", long_payload), Button("Hello", "/greet")))
    ref = ConversationRef("tiny", "telegram", "telegram:1001", {"chat_id": "1001"})
    client, channel = _client(settings, tiny_bot_dir, fake_telegram)
    with client:
        _ready(client)
        deliver(client, text_update(1, "hello"))
        fake_telegram.wait_for("sendMessage")

        async def store_and_send() -> None:
            store = client.app.state.runtime.store  # type: ignore[attr-defined]
            await store.append("tiny", "telegram:1001", [Event(BOT, response.to_dict())], SummaryUpdate())
            await channel.send(ref, [response])

        client.portal.call(store_and_send)  # type: ignore[union-attr]
        sent = fake_telegram.wait_for("sendMessage", 2)[1]
        buttons = [row[0] for row in sent.params["reply_markup"]["inline_keyboard"]]
        assert buttons == [{"text": "Track it", "callback_data": "#0"}, {"text": "Hello", "callback_data": "/greet"}]
        deliver(client, callback_update(3, "#0", buttons))
        replies = fake_telegram.wait_for("sendMessage", 3)
    assert replies[2].params["text"] == "Order " + "7" * 70 + " is on its way."


@pytest.mark.parametrize("update", [
    {"update_id": 1, "edited_message": text_update(1, "hello")["message"]},
    text_update(1, "hello", **{"from": {"id": 9, "is_bot": True, "first_name": "OtherBot"}}),
    {"update_id": 1, "message": {k: v for k, v in text_update(1, "x")["message"].items() if k != "text"}
     | {"sticker": {"file_id": "f", "file_unique_id": "u", "type": "regular", "width": 1, "height": 1,
                    "is_animated": False, "is_video": False}}},
    {"update_id": 1, "channel_post": {"message_id": 1, "date": 0, "chat": {"id": -100, "type": "channel"},
                                      "text": "hello"}},
])
def test_edits_bots_stickers_and_channel_posts_are_ignored(telegram: TestClient, fake_telegram: FakeTelegram,
                                                           update: dict[str, Any]) -> None:
    assert deliver(telegram, update).status_code == 200
    time.sleep(0.2)
    assert fake_telegram.calls_to("sendMessage") == []
    assert conversations(telegram) == 0


def test_bad_body_and_unknown_bot(telegram: TestClient) -> None:
    r = telegram.post(URL, content=b'{"update_id": ', headers={"X-Telegram-Bot-Api-Secret-Token": SECRET,
                                                               "Content-Type": "application/json"})
    assert r.status_code == 400
    assert "not a Telegram update" in r.json()["detail"]
    assert deliver(telegram, {"update_id": "x"}).status_code == 400
    r = deliver(telegram, text_update(1, "hello"), url="/bots/nope/webhooks/telegram")
    assert r.status_code == 404
    assert conversations(telegram) == 0


def test_rate_limit_and_server_errors_are_retried(telegram: TestClient, fake_telegram: FakeTelegram) -> None:
    fake_telegram.fail_with("sendMessage", 429, retry_after=1)
    fake_telegram.fail_with("sendMessage", 502)
    deliver(telegram, text_update(1, "hello"))
    calls = fake_telegram.wait_for("sendMessage", 3)
    assert calls[1].at - calls[0].at >= 0.95  # retry_after honoured
    assert metric(telegram, "switchboard_outgoing_retries_total", channel="telegram", reason="rate_limited") == 1
    assert metric(telegram, "switchboard_outgoing_retries_total", channel="telegram", reason="server_error") == 1
    assert metric(telegram, "switchboard_outgoing_failures_total", channel="telegram") == 0


def test_failed_send_keeps_the_turn_and_bad_requests_are_not_retried(telegram: TestClient,
                                                                     fake_telegram: FakeTelegram) -> None:
    fake_telegram.fail_with("sendMessage", 403)  # blocked by the user: retrying cannot help
    deliver(telegram, text_update(1, "hello"))
    fake_telegram.wait_for("sendMessage")
    deadline = time.monotonic() + 5
    while metric(telegram, "switchboard_outgoing_failures_total", channel="telegram") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert len(fake_telegram.calls_to("sendMessage")) == 1
    [turn] = transcript(telegram, "telegram:1001")["turns"]
    assert turn["status"] == "done"
    assert [e["data"]["text"] for e in turn["events"] if e["kind"] == "bot"] == [RESPONSES["greet"]]


def test_typing_failure_does_not_stop_the_answer(telegram: TestClient, fake_telegram: FakeTelegram) -> None:
    fake_telegram.fail_with("sendChatAction", 500)
    deliver(telegram, text_update(1, "hello"))
    [reply] = fake_telegram.wait_for("sendMessage")
    assert reply.params["text"] == RESPONSES["greet"]
    assert len(fake_telegram.calls_to("sendChatAction")) == 1  # best effort: one try
    assert metric(telegram, "switchboard_outgoing_failures_total", channel="telegram") == 1


def test_network_failure_is_retried_and_keeps_the_turn(telegram: TestClient, fake_telegram: FakeTelegram) -> None:
    fake_telegram.stop()  # connections refused from now on
    assert deliver(telegram, text_update(1, "hello")).status_code == 200
    deadline = time.monotonic() + 10
    while metric(telegram, "switchboard_outgoing_failures_total", channel="telegram") < 2:  # typing, then send
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert metric(telegram, "switchboard_outgoing_retries_total", channel="telegram", reason="network") == 2
    [turn] = transcript(telegram, "telegram:1001")["turns"]
    assert turn["status"] == "done"
    assert [e["data"]["text"] for e in turn["events"] if e["kind"] == "bot"] == [RESPONSES["greet"]]


async def test_retry_after_beyond_the_cap_fails_at_once_and_bad_requests_are_not_retried() -> None:
    from aiogram.exceptions import TelegramBadRequest, TelegramRetryAfter
    from aiogram.methods import SendMessage

    from bots.metrics import Metrics
    from connectors.outgoing import call_with_retry
    from connectors.telegram import _classify

    method = SendMessage(chat_id=1, text="x")
    metrics = Metrics()
    calls = 0

    async def flood() -> None:
        nonlocal calls
        calls += 1
        raise TelegramRetryAfter(method=method, message="Flood control", retry_after=3600)

    async def bad() -> None:
        nonlocal calls
        calls += 1
        raise TelegramBadRequest(method=method, message="chat not found")

    policy = RetryPolicy(attempts=4, base_delay_s=0.01, max_delay_s=30)
    for call in (flood, bad):
        calls = 0
        started = time.monotonic()
        with pytest.raises((TelegramRetryAfter, TelegramBadRequest)):
            await call_with_retry(call, channel="telegram", what="sendMessage", classify=_classify,
                                  metrics=metrics, policy=policy)
        assert calls == 1 and time.monotonic() - started < 1
    assert metrics.outgoing_failures.labels("telegram")._value.get() == 2


def test_store_outage_answers_503_then_the_redelivery_is_answered(telegram: TestClient, fake_telegram: FakeTelegram,
                                                                  store: FlakyStore) -> None:
    store.down = True
    r = deliver(telegram, text_update(1, "hello"))
    assert r.status_code == 503 and r.headers["Retry-After"]
    store.down = False
    assert deliver(telegram, text_update(1, "hello")).status_code == 200
    [reply] = fake_telegram.wait_for("sendMessage")
    assert reply.params["text"] == RESPONSES["greet"]


def test_long_answer_is_split_and_special_characters_arrive_unchanged(
        tmp_path: Path, tiny_bot_dir: Path, settings: Settings, fake_telegram: FakeTelegram) -> None:
    bot_dir = tmp_path / "tiny"
    shutil.copytree(tiny_bot_dir, bot_dir)
    paragraphs = [SPECIAL] + [f"Paragraph {i} 😀: " + "lorem ipsum dolor sit amet " * 14 for i in range(26)]
    long_text = "\n\n".join(p.strip() for p in paragraphs)
    assert len(long_text) >= 10_000
    spec = (bot_dir / "bot.yml").read_text()
    quoted = json.dumps(long_text, ensure_ascii=False)  # PyYAML would not join escaped surrogate pairs
    (bot_dir / "bot.yml").write_text(
        spec.replace('response: "Hello! How can I help you today?"', f"response: {quoted}"), encoding="utf-8")
    client, _ = _client(settings, bot_dir, fake_telegram)
    with client:
        _ready(client)
        deliver(client, text_update(1, "hello"))
        sent = fake_telegram.wait_for("sendMessage", 3)
        time.sleep(0.2)
    pieces = [c.params["text"] for c in fake_telegram.calls_to("sendMessage")]
    assert len(pieces) == 3
    assert all(utf16_len(p) <= 4096 for p in pieces)
    assert pieces[0].startswith(SPECIAL + "\n\n")
    assert all(p.startswith(("Hi_there", "Paragraph ")) for p in pieces)  # cut on paragraph boundaries
    assert "\n\n".join(pieces) == long_text
    assert all("parse_mode" not in c.params for c in sent)


def test_split_counts_utf16_and_falls_back_to_lines_and_words() -> None:
    assert [utf16_len(p) for p in split_text("😀" * 3000, 4096, utf16_len)] == [4096, 1904]
    lines = "\n".join(f"line {i:04d}" for i in range(1000))  # no paragraph breaks
    pieces = split_text(lines, 4096)
    assert all(len(p) <= 4096 and p.startswith("line ") and p.endswith(tuple("0123456789")) for p in pieces)
    assert "\n".join(pieces) == lines
    words = " ".join(["word"] * 3000)
    assert all(p.startswith("word") and p.endswith("word") for p in split_text(words, 4096))
    assert split_text("x" * 5000, 4096) == ["x" * 4096, "x" * 904]


def test_cli_sets_the_webhook_once_with_the_secret(tiny_bot_dir: Path, fake_telegram: FakeTelegram,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SWITCHBOARD_TELEGRAM_TOKENS", json.dumps({"tiny": OTHER_TOKEN}))
    monkeypatch.setenv("SWITCHBOARD_TELEGRAM_SECRET", SECRET)
    monkeypatch.setenv("SWITCHBOARD_TELEGRAM_API_URL", fake_telegram.base_url)
    assert cli_main(["telegram", "set-webhook", str(tiny_bot_dir), "--url", "https://bots.example.com/"]) == 0
    [call] = fake_telegram.calls_to("setWebhook")
    assert call.token == OTHER_TOKEN
    assert call.params["url"] == "https://bots.example.com/bots/tiny/webhooks/telegram"
    assert call.params["secret_token"] == SECRET
    assert call.params["allowed_updates"] == ["message", "callback_query"]
    assert "https://bots.example.com/bots/tiny/webhooks/telegram" in capsys.readouterr().out

    assert cli_main(["telegram", "set-webhook", str(tiny_bot_dir), "--url", "bots.example.com"]) == 2
    assert "expected the server's public base URL" in capsys.readouterr().err
    monkeypatch.delenv("SWITCHBOARD_TELEGRAM_SECRET")
    assert cli_main(["telegram", "set-webhook", str(tiny_bot_dir), "--url", "https://x.example"]) == 2
    assert "SWITCHBOARD_TELEGRAM_SECRET" in capsys.readouterr().err
    assert len(fake_telegram.calls_to("setWebhook")) == 1


def test_cli_set_webhook_skips_cleanly_without_a_token_when_asked(tiny_bot_dir: Path, fake_telegram: FakeTelegram,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The Kubernetes Job (k8s/base/telegram-webhook-job.yaml) runs on installs without Telegram: it
    must succeed with a message, not fail and retry; without the flag a missing token stays an error."""
    for name in ("SWITCHBOARD_TELEGRAM_TOKEN", "SWITCHBOARD_TELEGRAM_TOKENS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SWITCHBOARD_TELEGRAM_API_URL", fake_telegram.base_url)
    args = ["telegram", "set-webhook", str(tiny_bot_dir), "--url", "https://bots.example.com"]
    assert cli_main([*args, "--skip-without-token"]) == 0
    assert "Telegram is off, no webhook registered" in capsys.readouterr().out
    assert cli_main(args) == 2
    assert "SWITCHBOARD_TELEGRAM_TOKEN" in capsys.readouterr().err
    monkeypatch.setenv("SWITCHBOARD_TELEGRAM_TOKEN", TOKEN)
    monkeypatch.setenv("SWITCHBOARD_TELEGRAM_SECRET", SECRET)
    assert cli_main([*args, "--skip-without-token"]) == 0  # with a token the flag changes nothing
    assert len(fake_telegram.calls_to("setWebhook")) == 1
    assert "webhook set" in capsys.readouterr().out


async def test_long_polling_answers_and_acknowledges_updates(tiny_bot_dir: Path, settings: Settings,
                                                             fake_telegram: FakeTelegram) -> None:
    settings = replace(settings, telegram_token=TOKEN, telegram_api_url=fake_telegram.base_url)
    fake_telegram.updates += [text_update(10, "I want to cancel my order 123"), text_update(11, "hello")]
    stop = asyncio.Event()
    task = asyncio.create_task(poll_until(settings, tiny_bot_dir, stop, timeout_s=1))
    replies = await asyncio.to_thread(fake_telegram.wait_for, "sendMessage", 2, 30.0)
    assert [r.params["text"] for r in replies] == ["Order 123 is being cancelled.", RESPONSES["greet"]]
    await asyncio.to_thread(fake_telegram.wait_for, "getUpdates", 1, 5.0, lambda c: c.params.get("offset") == "12")
    stop.set()
    await asyncio.wait_for(task, 10)
    assert len(fake_telegram.calls_to("sendMessage")) == 2  # offset 12 acknowledged both: none answered twice


async def test_polling_while_a_webhook_is_set_says_what_to_do(tiny_bot_dir: Path, settings: Settings,
                                                             fake_telegram: FakeTelegram) -> None:
    from bots.errors import SwitchboardError

    settings = replace(settings, telegram_token=TOKEN, telegram_api_url=fake_telegram.base_url)
    fake_telegram.fail_with("getUpdates", 409)
    with pytest.raises(SwitchboardError, match="webhook is set"):
        await asyncio.wait_for(poll_until(settings, tiny_bot_dir, timeout_s=1), 30)


def test_serve_mounts_the_configured_channels(tiny_bot_dir: Path, tmp_path: Path) -> None:
    from bots.errors import ConfigError

    env = {"SWITCHBOARD_DATA_DIR": str(tmp_path), "SWITCHBOARD_SLACK_SIGNING_SECRET": SLACK_SECRET,
           "SWITCHBOARD_SLACK_TOKENS": json.dumps({"T1": "xoxb-team-one"}),
           "SWITCHBOARD_TELEGRAM_TOKEN": "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",
           "SWITCHBOARD_TELEGRAM_SECRET": "secret-1"}
    app = create_app(Settings.from_env(env), [tiny_bot_dir])
    paths = set(app.openapi()["paths"])
    assert {"/bots/{bot}/webhooks/web", "/bots/{bot}/webhooks/slack", "/bots/{bot}/webhooks/telegram"} <= paths
    plain = create_app(Settings(data_dir=tmp_path), [tiny_bot_dir])
    assert "/bots/{bot}/webhooks/slack" not in plain.openapi()["paths"]

    for missing, named in [("SWITCHBOARD_SLACK_SIGNING_SECRET", "SWITCHBOARD_SLACK_SIGNING_SECRET"),
                           ("SWITCHBOARD_SLACK_TOKENS", "SWITCHBOARD_SLACK_BOT_TOKEN"),
                           ("SWITCHBOARD_TELEGRAM_SECRET", "SWITCHBOARD_TELEGRAM_SECRET")]:
        with pytest.raises(ConfigError, match=named):
            create_app(Settings.from_env({k: v for k, v in env.items() if k != missing}), [tiny_bot_dir])
    with pytest.raises(ConfigError, match="SWITCHBOARD_TELEGRAM_TOKEN: not a bot token"):
        create_app(Settings.from_env(env | {"SWITCHBOARD_TELEGRAM_TOKEN": "nope"}), [tiny_bot_dir])
