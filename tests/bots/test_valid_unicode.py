"""Text that is not valid Unicode (lone surrogates, e.g. from the JSON escape ``\\ud800``) is stored
with U+FFFD in their place, by one rule (bots.types.valid_text), identically on both stores: the
customer's text, button payloads, user ids, conversation ids, bot replies that repeat the text, and
agent replies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bots.events import AGENT, BOT, USER, Event
from bots.runtime import Runtime
from bots.settings import Settings
from bots.store.base import SummaryUpdate, TranscriptQuery
from bots.types import BotResponse, Button, ConversationRef, UserMessage, valid_text, valid_unicode
from tests.bots.keyword_model import copy_bot, keyword_loader
from tests.bots.test_store_contract import open_store as open_store  # the fixture (both stores)


@pytest.mark.parametrize(("given", "stored"), [
    ("plain ascii", "plain ascii"),
    ("caf\u00e9 \U0001f600", "caf\u00e9 \U0001f600"),  # valid non-ASCII text stays as it is
    ("a\ud800b", "a\ufffdb"),  # a lone high surrogate
    ("a\udc00", "a\ufffd"),  # a lone low surrogate
    ("\ud800\ud800", "\ufffd\ufffd"),  # two high ones: each replaced
    ("x\ud83d\ude00y", "x\U0001f600y"),  # a high and a low one: the character they encode
    ("\udc00\ud800", "\ufffd\ufffd"),  # low before high: not a pair
])
def test_valid_text_replaces_each_lone_surrogate(given: str, stored: str) -> None:
    assert valid_text(given) == stored
    stored.encode("utf-8")  # always encodable


def test_valid_unicode_walks_json_like_values_and_keeps_valid_ones_as_they_are() -> None:
    value = {"text": "ok", "n": 1.5, "flag": True, "none": None, "list": ["a", ("b",)]}
    assert valid_unicode(value) is value  # nothing to replace: not copied
    assert valid_unicode({"k\ud800": ["\udc00", ("x\ud800", 3)], "n": 1}) == {
        "k\ufffd": ["\ufffd", ("x\ufffd", 3)], "n": 1}


def test_the_shapes_that_carry_text_make_it_valid_when_built() -> None:
    ref = ConversationRef("shop", "web", "c\ud800", {"chat": "\udc00"})
    message = UserMessage(ref, "m\ud800", "hi \ud800", user_id="u\udc00", payload="/greet\ud800",
                          metadata={"name": "\ud800"})
    assert (ref.conversation_id, dict(ref.address)) == ("c\ufffd", {"chat": "\ufffd"})
    assert (message.message_id, message.text, message.user_id, message.payload, dict(message.metadata)) == (
        "m\ufffd", "hi \ufffd", "u\ufffd", "/greet\ufffd", {"name": "\ufffd"})
    reply = BotResponse("agent \udc00", (Button("B\ud800", "/x\ud800"),), metadata={"m": "\ud800"})
    assert (reply.text, reply.buttons[0], dict(reply.metadata)) == (
        "agent \ufffd", Button("B\ufffd", "/x\ufffd"), {"m": "\ufffd"})
    assert Event(BOT, {"text": "\ud800", "nested": [{"v": "\udc00"}]}).data == {
        "text": "\ufffd", "nested": [{"v": "\ufffd"}]}


async def test_invalid_unicode_is_stored_replaced_on_both_stores(open_store: Any, tmp_path: Path) -> None:
    """Before the rule, SQLite failed with UnicodeEncodeError and MongoDB could not encode the BSON."""
    store = await open_store()
    runtime = Runtime(Settings(data_dir=tmp_path, nlu_max_wait_ms=0.0), store, model_loader=keyword_loader)
    await runtime.load_bot(copy_bot(tmp_path))
    try:
        ref = ConversationRef("shop", "web", "conv-\ud800", {"chat": "x\udc00"})
        texts = ["I want to change my order \ud800", "12345", "3", "gift wrap \udc00"]
        answers = []
        for i, text in enumerate(texts):
            message = UserMessage(ref, f"m{i}", text, user_id="visitor-\ud800")
            answers.append([r.text for r in await runtime.handle(message)])
        # a button payload whose JSON carries an escaped surrogate: any entity taken from it is valid text
        payload = '/track_order{"order_id": "12\\ud800"}'
        answers.append([r.text for r in await runtime.handle(UserMessage(ref, "m4", "Track", payload=payload))])
        agent = BotResponse("an agent writes \udc00")
        await store.append("shop", "conv-\ufffd", [Event(AGENT, agent.to_dict())], SummaryUpdate(handoff=True))
    finally:
        await runtime.bots["shop"].understand.aclose()

    # the bot's reply repeats the customer's text: replaced as well
    assert answers[3] == ["Thanks! I've passed the change to order 12345 (3 items, gift wrap \ufffd) to our team."]
    conversation = await store.load("shop", "conv-\ufffd")
    assert conversation is not None
    summary = conversation.summary
    assert (summary.conversation_id, summary.user_id, dict(summary.address)) == (
        "conv-\ufffd", "visitor-\ufffd", {"chat": "x\ufffd"})
    users = [e.data for e in conversation.events if e.kind == USER]
    assert [u["text"] for u in users] == ["I want to change my order \ufffd", "12345", "3", "gift wrap \ufffd", "Track"]
    assert users[-1]["payload"] == '/track_order{"order_id": "12\\ud800"}'  # valid text: kept as written
    assert [e.data["text"] for e in conversation.events if e.kind == AGENT] == ["an agent writes \ufffd"]
    # everything stored encodes (entities from the payload too): a JSON answer (ensure_ascii=False, as
    # Starlette writes it) is possible
    json.dumps([e.to_dict() for e in conversation.events], ensure_ascii=False).encode("utf-8")
    page = await store.search(TranscriptQuery(bot="shop", text="gift wrap"))  # and is found by its words
    assert [s.conversation_id for s in page.items] == ["conv-\ufffd"]
