"""The customer's display name on both stores (issue 18 item 1): written with the message's own write
(``enqueue``) or, learnt later, only when it changed (``set_customer_name``); kept when a message brings none;
pseudonymised exactly like the user id for a ``pii:`` bot (never stored raw); the conversation list searched by
it, literally."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bots.events import USER, Event
from bots.pii import PSEUDONYM_PREFIX
from bots.store.base import ConversationStore, TranscriptQuery
from bots.store.mongo import MongoStore, conversation_key
from bots.store.sqlite import _SCHEMA
from bots.types import UserMessage, display_name, name_problem
from tests.bots.test_pii_store import everything_stored, privacy
from tests.bots.test_store_contract import older_sqlite_file
from tests.bots.test_store_contract import open_store as open_store  # the fixture (both stores)
from tests.fixtures.mongo import mongo_uri as mongo_uri
from tests.fixtures.mongo import secantus as secantus


@pytest_asyncio.fixture
async def store(open_store: Any) -> ConversationStore:
    return await open_store()  # type: ignore[no-any-return]


async def _say(store: ConversationStore, conv: str, mid: str, name: str | None, *, bot: str = "shop") -> None:
    await store.enqueue(bot, conv, "telegram", "u-1", {}, mid, Event(USER, {"text": "hello"}), customer_name=name)


async def _name(store: ConversationStore, conv: str, bot: str = "shop") -> str | None:
    summary = await store.summary(bot, conv)
    assert summary is not None
    return summary.customer_name


async def test_the_name_comes_with_the_message_and_stays_when_a_message_brings_none(store: ConversationStore) -> None:
    await _say(store, "c1", "m1", None)
    assert await _name(store, "c1") is None
    await _say(store, "c1", "m2", "Ada Lovelace")
    assert await _name(store, "c1") == "Ada Lovelace"
    await _say(store, "c1", "m3", None)  # e.g. a button click: the name stays
    assert await _name(store, "c1") == "Ada Lovelace"
    await _say(store, "c1", "m4", "Ada King")  # renamed in the channel
    loaded = await store.load("shop", "c1")
    assert loaded is not None and loaded.summary.customer_name == "Ada King"
    assert loaded.summary.to_dict()["customer_name"] == "Ada King"
    await _say(store, "c2", "m1", "Grace Hopper")  # a new conversation created with its name
    assert await _name(store, "c2") == "Grace Hopper"


async def test_a_name_learnt_later_is_written_only_when_it_changed(store: ConversationStore) -> None:
    await _say(store, "c1", "m1", None)
    assert await store.set_customer_name("shop", "c1", "Ada Lovelace") is True
    assert await store.set_customer_name("shop", "c1", "Ada Lovelace") is False  # unchanged: nothing written
    assert await _name(store, "c1") == "Ada Lovelace"
    assert await store.set_customer_name("shop", "nobody", "Ada") is False
    assert await store.summary("shop", "nobody") is None  # never creates a conversation


async def test_the_list_is_searched_by_name_literally(store: ConversationStore) -> None:
    for conv, name in (("c1", "Ada Lovelace"), ("c2", "Grace Hopper"), ("c3", "100% Ada_fan"), ("c4", None)):
        await _say(store, conv, "m1", name)
    await _say(store, "faq1", "m1", "Ada Other", bot="faq")

    async def found(text: str, bot: str | None = None) -> list[str]:
        page = await store.search(TranscriptQuery(customer=text, bot=bot, sort="started_at", descending=False))
        return sorted(s.conversation_id for s in page.items)

    assert await found("ada") == ["c1", "c3", "faq1"]  # any case, anywhere in the name
    assert await found("ada", bot="shop") == ["c1", "c3"]
    assert await found("HOPPER") == ["c2"]
    assert await found("100%") == ["c3"]  # '%' is a character here, not a wildcard
    assert await found("%") == ["c3"]
    assert await found("a_f") == ["c3"]  # '_' too
    assert await found(".*") == []  # nor a regular expression
    assert await found('{"$gt": ""}') == []


async def test_a_pii_bot_stores_the_names_pseudonym_and_finds_it_by_the_whole_name(
        open_store: Any, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    store: ConversationStore = await open_store()
    store.set_privacy("shop", privacy())
    await _say(store, "c1", "m1", "Zelda Quux")
    await _say(store, "c2", "m1", None)
    assert await store.set_customer_name("shop", "c2", "Otto Vexler") is True
    first, second = await _name(store, "c1"), await _name(store, "c2")
    # the same keyed pseudonym as a user id would get: stable, never the name
    assert first == privacy().user_id("Zelda Quux") and first.startswith(PSEUDONYM_PREFIX)
    assert second == privacy().user_id("Otto Vexler")
    assert await store.set_customer_name("shop", "c2", "Otto Vexler") is False  # the same pseudonym: unchanged
    stored = everything_stored(store, request, tmp_path)
    for raw in ("Zelda", "Quux", "Otto", "Vexler"):
        assert raw not in stored
    page = await store.search(TranscriptQuery(bot="shop", customer="Zelda Quux"))
    assert [s.conversation_id for s in page.items] == ["c1"]
    assert (await store.search(TranscriptQuery(bot="shop", customer="Zelda"))).total == 0  # a part is not enough


async def test_conversations_stored_before_names_read_and_get_one(open_store: Any, tmp_path: Path) -> None:
    store = await open_store()
    await _say(store, "c1", "m1", "Ada")
    if isinstance(store, MongoStore):  # a document written before the field existed
        await store._convs.update_one({"_id": conversation_key("shop", "c1")}, {"$unset": {"customer_name": ""}})
        assert await _name(store, "c1") is None
        assert await store.set_customer_name("shop", "c1", "Ada") is True
        assert await _name(store, "c1") == "Ada"
        return
    path = tmp_path / "old.db"
    old = _SCHEMA  # the first files had none of the columns added since (customer_name among them)
    row = ("INSERT INTO conversations (bot, conversation_id, channel, started_at, last_activity)"
           " VALUES ('shop', 'c1', 'web', 1.0, 2.0)")
    async with older_sqlite_file(path, old, row) as (first, second):
        assert await _name(second, "c1") is None
        await _say(first, "c1", "m1", "Ada")
        assert await _name(second, "c1") == "Ada"


def test_display_names_are_one_printable_line() -> None:
    assert display_name("  Ada \n Lovelace\u200b ") == "Ada Lovelace"
    assert display_name("\x00\t ") is None
    assert display_name(None) is None
    assert display_name("x" * 200) == "x" * 80
    assert UserMessage.__dataclass_fields__["customer_name"].default is None
    assert name_problem("<img src=x onerror=alert(1)>") is None  # shown escaped, never refused for its characters
    assert name_problem("x" * 81) == "name: at most 80 characters, got 81"
    assert name_problem("Ada\nLovelace") is not None
    assert name_problem("Ada\u202eecalevol") is not None  # a right-to-left override would disguise it
