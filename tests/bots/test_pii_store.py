"""PII in both conversation stores (SQLite, and MongoDB on a real SecantusDB server): with a bot's
``Privacy`` set, what reaches the database is redacted text and pseudonymous user ids, whoever
writes it (customer message, bot reply, agent reply), in turns, summaries and the search index;
and a person's conversations still share one pseudonym, across replicas holding the same key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.uri_parser import parse_uri

from bots.errors import ConfigError
from bots.events import AGENT, BOT, SLOT, USER, Event
from bots.pii import PSEUDONYM_PREFIX, Privacy, Pseudonymiser, Redactor
from bots.store.base import ConversationStore, SummaryUpdate, TranscriptQuery
from tests.bots.test_store_contract import open_store as open_store
from tests.fixtures.mongo import mongo_uri as mongo_uri
from tests.fixtures.mongo import secantus as secantus

KEY = "k" * 32
EMAIL = "zelda.quux@example.org"
OTHER = "otto.vexler@example.net"
PHONE = "+44 20 7946 0958"
CARD = "4111 1111 1111 1111"
# What must never be in the stored bytes. Numbers as they were written and as their digits run together: a part of
# one alone ("7946") can turn up by chance among the digits of the dump's timestamps and random ids (seen once).
RAW = ("zelda", "quux", "example.org", "vexler", "20 7946 0958", "2079460958", "4111 1111", "4111111111111111")


def privacy(key: str = KEY) -> Privacy:
    return Privacy(Redactor(), Pseudonymiser(key))


def everything_stored(store: ConversationStore, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every byte the store wrote, as text: the SQLite file with its WAL, or every document of every
    collection of the MongoDB database (indexes are built from those documents)."""
    if store.name == "sqlite":
        files = sorted(tmp_path.glob("conversations.db*"))
        assert files
        return "".join(f.read_bytes().decode("utf-8", "replace") for f in files)
    uri = request.getfixturevalue("mongo_uri")
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    try:
        db = client[parse_uri(uri)["database"] or "switchboard"]
        return json.dumps({name: list(db[name].find({}, {"_id": 0}))
                           for name in db.list_collection_names()}, default=str)
    finally:
        client.close()


async def test_nothing_a_person_typed_or_sent_as_an_id_is_stored_raw(
        open_store: Any, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    store: ConversationStore = await open_store()
    store.set_privacy("shop", privacy())
    customer = f"mail me at {EMAIL} or call {PHONE}"
    turn = (await store.enqueue("shop", "c1", "web", EMAIL, {}, "m1", Event(USER, {"text": customer}))).turn
    assert turn.user_event is not None and turn.user_event.data["text"] == "mail me at [EMAIL] or call [PHONE]"
    done = await store.complete("shop", "c1", turn.seq, [
        Event(SLOT, {"name": "email", "value": EMAIL}),
        Event(BOT, {"text": f"I'll write to {EMAIL}.", "metadata": {"to": EMAIL}}),
    ], SummaryUpdate(last_intent="contact"))
    assert [e.data for e in done.events[1:]] == [{"name": "email", "value": "[EMAIL]"},
                                                 {"text": "I'll write to [EMAIL].", "metadata": {"to": "[EMAIL]"}}]
    # an agent's reply (live takeover) goes through the same store: redacted in the turn and the index
    agent = await store.append("shop", "c1", [Event(AGENT, {"text": f"Card {CARD} noted; {OTHER} cc'd",
                                                            "source": "human", "metadata": {"agent": "ann"}})],
                               SummaryUpdate(handoff=True))
    assert agent.events[0].data["text"] == "Card [CARD] noted; [EMAIL] cc'd"

    loaded = await store.load("shop", "c1")
    assert loaded is not None
    assert loaded.summary.user_id.startswith(PSEUDONYM_PREFIX) and EMAIL not in loaded.summary.user_id
    texts = [str(e.data.get("text")) for e in loaded.events if e.data.get("text")]
    assert texts == ["mail me at [EMAIL] or call [PHONE]", "I'll write to [EMAIL].", "Card [CARD] noted; [EMAIL] cc'd"]
    for word in ("zelda", "quux", "vexler", "7946", "4111"):  # the search index never saw them
        assert (await store.search(TranscriptQuery(bot="shop", text=word))).total == 0, word
    assert (await store.search(TranscriptQuery(bot="shop", text="card noted"))).total == 1  # the rest is searchable

    stored = everything_stored(store, request, tmp_path)
    assert "[EMAIL]" in stored  # (the dump is the real data)
    for raw in RAW:
        assert raw not in stored, raw


async def test_a_persons_conversations_share_one_pseudonym_across_replicas(open_store: Any) -> None:
    a: ConversationStore = await open_store()
    b: ConversationStore = await open_store()  # a second replica on the same database, same key
    a.set_privacy("shop", privacy())
    b.set_privacy("shop", privacy())
    await a.enqueue("shop", "c1", "web", EMAIL, {}, "m1", Event(USER, {"text": "hi"}))
    await b.enqueue("shop", "c2", "web", EMAIL, {}, "m1", Event(USER, {"text": "again"}))
    await b.enqueue("shop", "c3", "web", OTHER, {}, "m1", Event(USER, {"text": "hello"}))
    await a.enqueue("shop", "c4", "web", "", {}, "m1", Event(USER, {"text": "anonymous"}))
    page = await a.search(TranscriptQuery(bot="shop", sort="started_at"))
    users = {s.conversation_id: s.user_id for s in page.items}
    assert users["c1"] == users["c2"] == privacy().user_id(EMAIL)  # one person, one pseudonym
    assert users["c3"] != users["c1"] and users["c3"].startswith(PSEUDONYM_PREFIX)
    assert users["c4"] == ""  # no id sent: nothing to pseudonymise
    assert privacy("x" * 32).user_id(EMAIL) != users["c1"]  # keyed: another key, another pseudonym


async def test_bots_without_pii_store_what_they_are_given(open_store: Any) -> None:
    store: ConversationStore = await open_store()
    store.set_privacy("shop", privacy())
    store.set_privacy("shop", None)  # e.g. reloaded without `pii:`
    await store.enqueue("shop", "c1", "web", EMAIL, {}, "m1", Event(USER, {"text": f"mail {EMAIL}"}))
    store.set_privacy("other", privacy())  # another bot's privacy does not apply here
    await store.enqueue("shop", "c2", "web", EMAIL, {}, "m1", Event(USER, {"text": f"mail {EMAIL}"}))
    for conversation_id in ("c1", "c2"):
        loaded = await store.load("shop", conversation_id)
        assert loaded is not None and loaded.summary.user_id == EMAIL
        assert loaded.events[0].data["text"] == f"mail {EMAIL}"


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least 32 characters"):
        Pseudonymiser("too-short")
    assert "k" * 32 not in repr(Pseudonymiser("k" * 32))
