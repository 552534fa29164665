"""Property tests: whatever a (correctly signed) Slack or Telegram request carries, the webhook
answers without a 5xx, every 4xx says why, and nothing malformed is stored."""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bots.settings import Settings
from tests.connectors import test_slack, test_telegram
from tests.fixtures.fake_slack import FakeSlack, event_body, sign
from tests.fixtures.fake_slack import fake_slack as fake_slack  # the fixture
from tests.fixtures.fake_telegram import FakeTelegram, callback_update, text_update
from tests.fixtures.fake_telegram import fake_telegram as fake_telegram  # the fixture

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
