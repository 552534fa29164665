"""The Slack channel end to end: the real app and slack-bolt, a trained tiny bot, the embedded
store, and a fake Slack Web API on 127.0.0.1. Requests are signed the way Slack signs them."""

from __future__ import annotations

import functools
import json
import shutil
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bots.botspec import BotSpec
from bots.errors import StoreUnavailable
from bots.runtime import IntentModel, load_onnx_model
from bots.settings import Settings
from bots.store.sqlite import SQLiteStore
from connectors.app import create_app
from connectors.base import ChannelFactory
from connectors.outgoing import RetryPolicy
from connectors.slack import SlackChannel
from tests.conftest import ADMIN_TOKEN
from tests.connectors.test_web import metric
from tests.fixtures.fake_slack import BOT_USER_ID, FakeSlack, event_body, sign
from tests.fixtures.fake_slack import fake_slack as fake_slack  # the fixture

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
URL = "/bots/tiny/webhooks/slack"
FAST = RetryPolicy(attempts=3, base_delay_s=0.01)
RESPONSES = {
    "cancel_order": "Which order would you like to cancel?",
    "track_order": "Your order is on its way.",
    "greet": "Hello! How can I help you today?",
    "contact_human_agent": "Let me get a colleague for you.",
}


class FlakyStore(SQLiteStore):
    """The embedded store, with an outage switch (a fault to inject, not a stand-in)."""

    down = False

    async def enqueue(self, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            raise StoreUnavailable("store is down (test)")
        return await super().enqueue(*args, **kwargs)


_MODELS: dict[tuple[str, str], IntentModel] = {}


def shared_model(artifact: Path, spec: BotSpec, settings: Settings) -> IntentModel:
    """The ONNX model loaded once per test session and artifact (apps here are many and short-lived)."""
    key = (str(artifact), repr(sorted(spec.synonyms.items())))
    if key not in _MODELS:
        _MODELS[key] = load_onnx_model(artifact, spec, settings)
    return _MODELS[key]


def slack_channel(fake: FakeSlack, *, default_token: str | None = None, policy: RetryPolicy = FAST,
                  api_url: str | None = None) -> ChannelFactory:
    """The Slack channel on the fake Web API: workspace T1 has its own token, others the default one."""
    return functools.partial(SlackChannel, signing_secret=SECRET, tokens={"T1": "xoxb-team-one"},
                             default_token=default_token, api_url=api_url or fake.base_url, policy=policy)


def _client(settings: Settings, bot_dir: Path, fake: FakeSlack, store: SQLiteStore | None = None,
            default_token: str | None = "xoxb-team-two", policy: RetryPolicy = FAST,
            api_url: str | None = None) -> TestClient:
    channel = slack_channel(fake, default_token=default_token, policy=policy, api_url=api_url)
    app = create_app(settings, [bot_dir], store=store, channels=[channel], model_loader=shared_model)
    return TestClient(app)


def _ready(client: TestClient) -> None:
    deadline = time.monotonic() + 30
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").text
        time.sleep(0.05)


@pytest.fixture
def store(settings: Settings) -> FlakyStore:
    return FlakyStore(settings.data_dir / "conversations.db")


@pytest.fixture
def slack(tiny_bot_dir: Path, settings: Settings, fake_slack: FakeSlack, store: FlakyStore) -> Iterator[TestClient]:
    with _client(settings, tiny_bot_dir, fake_slack, store) as client:
        _ready(client)
        yield client


def deliver(client: TestClient, body: bytes, *, retry: int | None = None, timestamp: int | None = None,
            content_type: str = "application/json", url: str = URL, secret: str = SECRET) -> Any:
    headers = {"Content-Type": content_type, **sign(secret, body, timestamp)}
    if retry is not None:
        headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
    return client.post(url, content=body, headers=headers)


def dm(text: str, ts: str = "1700000001.000100", **extra: Any) -> dict[str, Any]:
    return {"type": "message", "channel": "D1", "channel_type": "im", "user": "U42", "text": text, "ts": ts,
            "event_ts": ts, **extra}


def click(value: str, title: str, *, channel: str = "D1", thread_ts: str | None = None,
          action_ts: str = "1700000099.000001", team: str = "T1", response_url: str | None = None) -> bytes:
    message: dict[str, Any] = {"type": "message", "ts": "1700000050.000100", "bot_id": "BBOT0001"}
    if thread_ts:
        message["thread_ts"] = thread_ts
    payload = {
        "type": "block_actions", "team": {"id": team, "domain": "acme"}, "user": {"id": "U42", "team_id": team},
        "api_app_id": "A1", "container": {"type": "message", "message_ts": "1700000050.000100",
                                          "channel_id": channel, "is_ephemeral": False},
        "channel": {"id": channel, "name": "directmessage"}, "message": message,
        "actions": [{"type": "button", "action_id": "switchboard_button_0", "block_id": "switchboard_buttons",
                     "value": value, "text": {"type": "plain_text", "text": title}, "action_ts": action_ts}],
    }
    if response_url is not None:
        payload["response_url"] = response_url
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


def section_texts(call: Any) -> list[str]:
    return [b["text"]["text"] for b in call.params["blocks"] if b["type"] == "section"]


def transcript(client: TestClient, conversation_id: str) -> dict[str, Any]:
    r = client.get(f"/bots/tiny/conversations/{urllib.parse.quote(conversation_id)}", headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()


def test_direct_message_conversation(slack: TestClient, fake_slack: FakeSlack) -> None:
    r = deliver(slack, event_body(dm("I want to cancel my order 123")))
    assert r.status_code == 200, r.text
    [reply] = fake_slack.wait_for("chat.postMessage")
    assert reply.token == "xoxb-team-one"  # the workspace's own token
    assert reply.params["channel"] == "D1"
    assert "thread_ts" not in reply.params
    assert section_texts(reply) == ["Order 123 is being cancelled."]
    assert reply.params["text"] == "Order 123 is being cancelled."

    deliver(slack, event_body(dm("hello", ts="1700000002.000100"), event_id="Ev2"))
    replies = fake_slack.wait_for("chat.postMessage", 2)
    assert section_texts(replies[1]) == [RESPONSES["greet"]]

    t = transcript(slack, "slack:T1:D1")
    assert t["summary"]["channel"] == "slack"
    assert [turn["events"][0]["data"]["text"] for turn in t["turns"]] == ["I want to cancel my order 123", "hello"]
    # The bot's identity: looked up once per configured token, at start-up, then cached.
    assert sorted(c.token or "" for c in fake_slack.calls_to("auth.test")) == ["xoxb-team-one", "xoxb-team-two"]


def test_other_workspace_uses_its_token(slack: TestClient, fake_slack: FakeSlack) -> None:
    deliver(slack, event_body(dm("hello &lt;3 &amp; see <https://shop.example/faq|the FAQ>"), team="T2"))
    [reply] = fake_slack.wait_for("chat.postMessage")
    assert reply.token == "xoxb-team-two"
    [turn] = transcript(slack, "slack:T2:D1")["turns"]
    assert turn["events"][0]["data"]["text"] == "hello <3 & see the FAQ"  # Slack's escaping undone


def test_workspace_without_a_token_is_not_answered(tiny_bot_dir: Path, settings: Settings,
                                                   fake_slack: FakeSlack) -> None:
    with _client(settings, tiny_bot_dir, fake_slack, default_token=None) as client:
        _ready(client)
        r = deliver(client, event_body(dm("hello"), team="T9"))
        assert r.status_code == 200  # acknowledged (Slack would only retry), logged, not stored
        r = deliver(client, click("/greet", "Hello", team="T9", response_url=f"{fake_slack.base_url}response_url"),
                    content_type="application/x-www-form-urlencoded")
        assert r.status_code == 200  # and nothing is posted to Slack before the ack (no apology either)
        assert client.get("/bots/tiny/conversations", headers=AUTH).json()["total"] == 0
    assert [c.method for c in fake_slack.calls if c.method != "auth.test"] == []  # auth.test: at start-up


def test_url_verification_answers_the_challenge(slack: TestClient) -> None:
    body = json.dumps({"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                       "type": "url_verification"}).encode()
    r = deliver(slack, body)
    assert r.status_code == 200
    assert r.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}
    assert slack.post(URL, content=body, headers={"Content-Type": "application/json"}).status_code == 401


@pytest.mark.parametrize("tamper", ["wrong_secret", "stale", "future", "unsigned", "body_changed"])
def test_bad_or_stale_signatures_are_refused(slack: TestClient, fake_slack: FakeSlack, tamper: str) -> None:
    body = event_body(dm("I want to cancel my order 123"))
    if tamper == "wrong_secret":
        r = deliver(slack, body, secret="not-the-signing-secret")
    elif tamper == "stale":
        r = deliver(slack, body, timestamp=int(time.time()) - 6 * 60)
    elif tamper == "future":
        r = deliver(slack, body, timestamp=int(time.time()) + 6 * 60)
    elif tamper == "unsigned":
        r = slack.post(URL, content=body, headers={"Content-Type": "application/json"})
    else:
        headers = sign(SECRET, body) | {"Content-Type": "application/json"}
        r = slack.post(URL, content=body.replace(b"123", b"999"), headers=headers)
    assert r.status_code == 401, r.text
    assert slack.get("/bots/tiny/conversations", headers=AUTH).json()["total"] == 0
    assert metric(slack, "switchboard_rejected_requests_total", channel="slack", reason="signature") == 1
    time.sleep(0.1)
    assert [c.method for c in fake_slack.calls if c.method != "auth.test"] == []  # auth.test: at start-up


def test_recent_timestamp_within_the_window_is_accepted(slack: TestClient, fake_slack: FakeSlack) -> None:
    assert deliver(slack, event_body(dm("hello")), timestamp=int(time.time()) - 4 * 60).status_code == 200
    fake_slack.wait_for("chat.postMessage")


def test_retries_are_answered_once(slack: TestClient, fake_slack: FakeSlack) -> None:
    body = event_body(dm("hello"))
    assert deliver(slack, body).status_code == 200
    assert deliver(slack, body, retry=1).status_code == 200  # while the first is in flight, or after
    fake_slack.wait_for("chat.postMessage")
    assert deliver(slack, body, retry=2).status_code == 200  # after it was answered: from the store
    time.sleep(0.3)
    assert len(fake_slack.calls_to("chat.postMessage")) == 1
    assert len(transcript(slack, "slack:T1:D1")["turns"]) == 1
    assert metric(slack, "switchboard_duplicate_messages_total", channel="slack") == 2


def test_mention_in_thread_is_answered_in_the_thread(slack: TestClient, fake_slack: FakeSlack) -> None:
    thread = "1700000000.000001"
    text = f"<@{BOT_USER_ID}> where is my order 8080"
    mention = {"type": "app_mention", "channel": "C7", "user": "U42", "text": text, "ts": "1700000003.000100",
               "thread_ts": thread, "event_ts": "1700000003.000100"}
    # Slack sends the message event too (channels:history), with another event_id: answered once.
    message = dict(mention, type="message", channel_type="channel")
    deliver(slack, event_body(mention, event_id="EvMention"))
    deliver(slack, event_body(message, event_id="EvMessage"))
    [reply] = fake_slack.wait_for("chat.postMessage")
    assert reply.params["channel"] == "C7"
    assert reply.params["thread_ts"] == thread
    assert section_texts(reply) == ["Order 8080 is on its way."]
    t = transcript(slack, f"slack:T1:C7:{thread}")
    assert t["turns"][0]["events"][0]["data"]["text"] == "where is my order 8080"  # mention stripped

    # A follow-up in that thread needs no mention; a top-level channel message without one is not ours.
    follow = {"type": "message", "channel": "C7", "channel_type": "channel", "user": "U42", "text": "hello",
              "ts": "1700000004.000100", "thread_ts": thread}
    deliver(slack, event_body(follow, event_id="EvFollow"))
    replies = fake_slack.wait_for("chat.postMessage", 2)
    assert section_texts(replies[1]) == [RESPONSES["greet"]] and replies[1].params["thread_ts"] == thread
    other = {"type": "message", "channel": "C7", "channel_type": "channel", "user": "U42", "text": "hello",
             "ts": "1700000005.000100"}
    stranger = dict(other, thread_ts="1600000000.000001", ts="1700000006.000100")
    assert deliver(slack, event_body(other, event_id="EvOther")).status_code == 200
    assert deliver(slack, event_body(stranger, event_id="EvStranger")).status_code == 200
    time.sleep(0.3)
    assert len(fake_slack.calls_to("chat.postMessage")) == 2
    assert slack.get("/bots/tiny/conversations", headers=AUTH).json()["total"] == 1


@pytest.mark.parametrize("event", [
    dm("hello", bot_id="B999", subtype="bot_message"),
    dm("hello", bot_id=BOT_USER_ID),
    dm("hello", subtype="message_changed"),
    dm("hello", subtype="message_deleted"),
    dm("hello", subtype="channel_join"),
    {"type": "reaction_added", "user": "U42", "reaction": "thumbsup", "item": {"type": "message"}},
])
def test_bot_messages_edits_and_other_events_are_ignored(slack: TestClient, fake_slack: FakeSlack,
                                                         event: dict[str, Any]) -> None:
    assert deliver(slack, event_body(event)).status_code == 200
    time.sleep(0.2)
    assert fake_slack.calls_to("chat.postMessage") == []
    assert slack.get("/bots/tiny/conversations", headers=AUTH).json()["total"] == 0


def test_buttons_are_block_kit_and_clicks_come_back_as_messages(slack: TestClient, fake_slack: FakeSlack) -> None:
    deliver(slack, event_body(dm("zxq vbnm qwpo")))
    [fallback] = fake_slack.wait_for("chat.postMessage")
    [actions] = [b for b in fallback.params["blocks"] if b["type"] == "actions"]
    buttons = actions["elements"]
    assert 1 <= len(buttons) <= 3
    assert all(b["type"] == "button" and b["value"].startswith("/") for b in buttons)
    # The notification text keeps the options (rich parts degrade to text).
    assert all(b["text"]["text"] in fallback.params["text"] for b in buttons)

    chosen = buttons[0]
    r = deliver(slack, click(chosen["value"], chosen["text"]["text"]),
                content_type="application/x-www-form-urlencoded")
    assert r.status_code == 200, r.text
    replies = fake_slack.wait_for("chat.postMessage", 2)
    intent = chosen["value"].lstrip("/")
    assert section_texts(replies[1]) == [RESPONSES[intent]]
    turns = transcript(slack, "slack:T1:D1")["turns"]
    assert turns[1]["events"][0]["data"]["payload"] == chosen["value"]


def test_click_in_a_thread_answers_in_the_thread(slack: TestClient, fake_slack: FakeSlack) -> None:
    body = click("/greet", "Say hello", channel="C7", thread_ts="1700000000.000001")
    assert deliver(slack, body, content_type="application/x-www-form-urlencoded").status_code == 200
    [reply] = fake_slack.wait_for("chat.postMessage")
    assert reply.params["thread_ts"] == "1700000000.000001"
    assert section_texts(reply) == [RESPONSES["greet"]]


def test_rate_limit_and_server_errors_are_retried(slack: TestClient, fake_slack: FakeSlack) -> None:
    fake_slack.fail_next("chat.postMessage", 429, body='{"ok": false, "error": "ratelimited"}',
                         headers={"Retry-After": "2"})
    fake_slack.fail_next("chat.postMessage", 503, body="upstream unavailable", content_type="text/plain")
    started = time.monotonic()
    assert deliver(slack, event_body(dm("hello"))).status_code == 200
    assert time.monotonic() - started < 1.8  # acknowledged at once: the reply is made after the ack
    calls = fake_slack.wait_for("chat.postMessage", 3)
    assert calls[1].at - calls[0].at >= 1.95  # Retry-After honoured
    assert metric(slack, "switchboard_outgoing_retries_total", channel="slack", reason="rate_limited") == 1
    assert metric(slack, "switchboard_outgoing_retries_total", channel="slack", reason="server_error") == 1
    assert metric(slack, "switchboard_outgoing_failures_total", channel="slack") == 0


def test_a_failed_send_keeps_the_stored_turn(slack: TestClient, fake_slack: FakeSlack) -> None:
    fake_slack.fail_next("chat.postMessage", 500, body="oops", content_type="text/plain", times=3)
    deliver(slack, event_body(dm("hello")))
    fake_slack.wait_for("chat.postMessage", 3)
    deadline = time.monotonic() + 5
    while metric(slack, "switchboard_outgoing_failures_total", channel="slack") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    [turn] = transcript(slack, "slack:T1:D1")["turns"]
    assert turn["status"] == "done"
    assert [e["data"]["text"] for e in turn["events"] if e["kind"] == "bot"] == [RESPONSES["greet"]]


def test_store_outage_answers_503_and_the_redelivery_is_answered(slack: TestClient, fake_slack: FakeSlack,
                                                                 store: FlakyStore) -> None:
    body = event_body(dm("hello"))
    store.down = True
    r = deliver(slack, body)
    assert r.status_code == 503
    assert r.headers["Retry-After"]
    store.down = False
    assert deliver(slack, body, retry=1).status_code == 200
    [reply] = fake_slack.wait_for("chat.postMessage")
    assert section_texts(reply) == [RESPONSES["greet"]]


def test_unknown_bot_and_disabled_channel(slack: TestClient, fake_slack: FakeSlack) -> None:
    r = deliver(slack, event_body(dm("hello")), url="/bots/nope/webhooks/slack")
    assert r.status_code == 404
    assert "no bot named 'nope'" in r.text


def test_long_answer_is_split_into_sections(tmp_path: Path, tiny_bot_dir: Path, settings: Settings,
                                            fake_slack: FakeSlack) -> None:
    bot_dir = tmp_path / "tiny"
    shutil.copytree(tiny_bot_dir, bot_dir)
    paragraphs = [f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 14 for i in range(26)]
    long_text = "\n\n".join(p.strip() for p in paragraphs)
    assert 9_900 <= len(long_text) <= 10_500
    spec = (bot_dir / "bot.yml").read_text()
    spec = spec.replace('response: "Hello! How can I help you today?"', f"response: {json.dumps(long_text)}")
    (bot_dir / "bot.yml").write_text(spec)
    with _client(settings, bot_dir, fake_slack) as client:
        _ready(client)
        deliver(client, event_body(dm("hello")))
        [reply] = fake_slack.wait_for("chat.postMessage")
    sections = section_texts(reply)
    assert len(sections) == 4
    assert all(len(s) <= 3000 for s in sections)
    assert all(s.startswith("Paragraph ") for s in sections)  # cut on paragraph boundaries
    assert "\n\n".join(sections) == long_text


def test_shutdown_waits_for_replies_in_progress(tiny_bot_dir: Path, settings: Settings,
                                                fake_slack: FakeSlack) -> None:
    fake_slack.fail_next("chat.postMessage", 429, body='{"ok": false}', headers={"Retry-After": "1"})
    with _client(settings, tiny_bot_dir, fake_slack) as client:
        _ready(client)
        assert deliver(client, event_body(dm("hello"))).status_code == 200
    # The app has shut down: the reply (retried after 1 s) was posted before it finished.
    assert len(fake_slack.calls_to("chat.postMessage")) == 2



def test_redelivery_to_another_replica_is_not_answered_twice(tiny_bot_dir: Path, settings: Settings,
                                                             fake_slack: FakeSlack) -> None:
    """Two replicas sharing one store: Slack's retry lands on the replica that did not answer."""
    body = event_body(dm("hello"))
    with _client(settings, tiny_bot_dir, fake_slack) as first, _client(settings, tiny_bot_dir, fake_slack) as second:
        _ready(first)
        _ready(second)
        assert deliver(first, body).status_code == 200
        fake_slack.wait_for("chat.postMessage")
        assert deliver(second, body, retry=1).status_code == 200
        time.sleep(0.3)
        assert metric(second, "switchboard_duplicate_messages_total", channel="slack") == 1
    assert len(fake_slack.calls_to("chat.postMessage")) == 1


# -- Slack's Web API unreachable: the ack never waits for it ------------------------------------------
def _timed_delivery(client: TestClient, body: bytes) -> tuple[Any, float]:
    started = time.monotonic()
    r = deliver(client, body)
    return r, time.monotonic() - started


def test_api_outage_still_stores_and_acks_in_time_and_replies_when_it_is_back(
        tiny_bot_dir: Path, settings: Settings, fake_slack: FakeSlack) -> None:
    """Slack's Web API answers 503 from start-up on. A signed event is stored and acknowledged within
    Slack's 3-second window (the channel's default retry policy, as served); the answer is posted once
    the API is back, and the bot's identity (auth.test) is resolved in the background meanwhile."""
    fake_slack.down = True
    with _client(settings, tiny_bot_dir, fake_slack, policy=RetryPolicy()) as client:
        _ready(client)
        r, took = _timed_delivery(client, event_body(dm("hello")))
        assert r.status_code == 200, r.text
        assert took < 3.0
        [turn] = transcript(client, "slack:T1:D1")["turns"]  # stored before the ack
        assert turn["events"][0]["data"]["text"] == "hello"
        fake_slack.wait_for("chat.postMessage")  # tried while the API was down
        tried = len(fake_slack.calls_to("auth.test"))
        assert tried >= 2  # at start-up, for both tokens, and still retrying
        fake_slack.down = False
        calls = fake_slack.wait_for("chat.postMessage", 2)
        assert section_texts(calls[-1]) == [RESPONSES["greet"]] and calls[-1].token == "xoxb-team-one"
        # The identity lookups go on in the background and succeed once the API is back.
        deadline = time.monotonic() + 30
        while {c.token for c in fake_slack.calls_to("auth.test")[tried:]} != {"xoxb-team-one", "xoxb-team-two"}:
            assert time.monotonic() < deadline, fake_slack.calls_to("auth.test")
            time.sleep(0.05)
    assert len(fake_slack.calls_to("chat.postMessage")) == 2  # one failed try, then the answer


def test_unreachable_api_does_not_delay_the_ack(tiny_bot_dir: Path, settings: Settings,
                                                fake_slack: FakeSlack) -> None:
    """No network to Slack (connections refused): acknowledged in time, stored, never a 5xx."""
    closed = f"http://127.0.0.1:{_closed_port()}/api/"
    with _client(settings, tiny_bot_dir, fake_slack, policy=RetryPolicy(), api_url=closed) as client:
        _ready(client)
        r, took = _timed_delivery(client, event_body(dm("I want to cancel my order 123")))
        assert r.status_code == 200, r.text
        assert took < 3.0
        [turn] = transcript(client, "slack:T1:D1")["turns"]
        assert turn["events"][0]["data"]["text"] == "I want to cancel my order 123"


def test_revoked_token_does_not_lose_the_message(tiny_bot_dir: Path, settings: Settings,
                                                 fake_slack: FakeSlack) -> None:
    """auth.test says invalid_auth (a revoked or mistyped token): the message is still stored and
    acknowledged; the reply fails (logged and counted) and the answer stays in the transcript."""
    with _client(settings, tiny_bot_dir, fake_slack, default_token="xoxb-revoked") as client:
        _ready(client)
        r = deliver(client, event_body(dm("hello"), team="T2"))
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 5
        while metric(client, "switchboard_outgoing_failures_total", channel="slack") < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        [turn] = transcript(client, "slack:T2:D1")["turns"]
        assert turn["events"][0]["data"]["text"] == "hello"
    assert [c.params.get("channel") for c in fake_slack.calls_to("chat.postMessage")] == ["D1"]


@pytest.mark.parametrize("case", ["unknown_bot", "bad_signature"])
def test_refusals_do_not_depend_on_the_api(tiny_bot_dir: Path, settings: Settings, fake_slack: FakeSlack,
                                           case: str) -> None:
    fake_slack.down = True
    with _client(settings, tiny_bot_dir, fake_slack, policy=RetryPolicy()) as client:
        _ready(client)
        started = time.monotonic()
        if case == "unknown_bot":
            r = deliver(client, event_body(dm("hello")), url="/bots/nope/webhooks/slack")
            assert r.status_code == 404, r.text
            assert "no bot named 'nope'" in r.json()["detail"]
        else:
            r = deliver(client, event_body(dm("hello")), secret="not-the-signing-secret")
            assert r.status_code == 401, r.text
        assert time.monotonic() - started < 3.0
        assert client.get("/bots/tiny/conversations", headers=AUTH).json()["total"] == 0


def test_bot_identity_is_resolved_at_start_up_and_retried_in_the_background(
        tiny_bot_dir: Path, settings: Settings, fake_slack: FakeSlack) -> None:
    fake_slack.fail_next("auth.test", 503, body="upstream unavailable", content_type="text/plain", times=3)
    with _client(settings, tiny_bot_dir, fake_slack) as client:
        _ready(client)
        # Before any event: one successful auth.test per configured token, after the failures.
        deadline = time.monotonic() + 10
        while len(fake_slack.calls_to("auth.test")) < 5:
            assert time.monotonic() < deadline, fake_slack.calls
            time.sleep(0.02)
        assert metric(client, "switchboard_outgoing_retries_total", channel="slack", reason="server_error") == 3
        thread = "1700000000.000001"
        mention = {"type": "app_mention", "channel": "C7", "user": "U42", "ts": "1700000003.000100",
                   "text": f"<@{BOT_USER_ID}> hello", "thread_ts": thread}
        deliver(client, event_body(mention, event_id="EvMention"))
        fake_slack.wait_for("chat.postMessage")
    # 3 failures, then one success per token; none since (cached), the event included.
    assert len(fake_slack.calls_to("auth.test")) == 5
    assert {c.token for c in fake_slack.calls_to("auth.test")} == {"xoxb-team-one", "xoxb-team-two"}


def test_the_signature_is_checked_once(slack: TestClient, fake_slack: FakeSlack,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from slack_sdk.signature import SignatureVerifier

    checks: list[bytes] = []
    original = SignatureVerifier.is_valid

    def counting(self: SignatureVerifier, body: str | bytes, timestamp: str, signature: str) -> bool:
        checks.append(body if isinstance(body, bytes) else body.encode())
        return original(self, body, timestamp, signature)

    monkeypatch.setattr(SignatureVerifier, "is_valid", counting)
    assert deliver(slack, event_body(dm("hello"))).status_code == 200
    fake_slack.wait_for("chat.postMessage")
    assert len(checks) == 1


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
