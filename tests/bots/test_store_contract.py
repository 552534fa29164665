"""ONE contract suite for every ConversationStore: the embedded SQLite store and MongoDB
(a real SecantusDB server started by tests/fixtures/mongo.py)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bots.errors import ConversationNotFound
from bots.events import BOT, USER, Event
from bots.store.base import ConversationStore, SummaryUpdate, TranscriptQuery, Waiting
from bots.store.mongo import MongoStore
from bots.store.sqlite import SQLiteStore

StoreFactory = Callable[..., ConversationStore]


@pytest_asyncio.fixture(params=["sqlite", "mongodb"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Opens (and starts) stores sharing one database, like replicas do; closes them afterwards."""
    opened: list[ConversationStore] = []
    if request.param == "mongodb":
        uri = request.getfixturevalue("mongo_uri")

        def make(**kwargs: Any) -> ConversationStore:
            return MongoStore(uri, **kwargs)
    else:
        def make(**kwargs: Any) -> ConversationStore:
            return SQLiteStore(tmp_path / "conversations.db", **kwargs)

    async def started(**kwargs: Any) -> ConversationStore:
        store = make(**kwargs)
        await store.start()
        opened.append(store)
        return store

    yield started  # type: ignore[misc]
    for store in opened:
        await store.aclose()


@pytest_asyncio.fixture
async def store(open_store: Any) -> ConversationStore:
    return await open_store()


def user(text: str, at: float | None = None) -> Event:
    return Event(USER, {"text": text}, at if at is not None else time.time())


async def say(store: ConversationStore, conv: str, mid: str, text: str, *, bot: str = "shop",
              channel: str = "web", at: float | None = None) -> int:
    result = await store.enqueue(bot, conv, channel, "u-1", {"chat": conv}, mid, user(text, at))
    assert result.created
    return result.turn.seq


async def answer(store: ConversationStore, conv: str, seq: int, text: str, *, bot: str = "shop",
                 summary: SummaryUpdate | None = None) -> None:
    await store.complete(bot, conv, seq, [Event(BOT, {"text": text})], summary or SummaryUpdate())


async def test_enqueue_numbers_turns_and_creates_the_conversation(store: ConversationStore) -> None:
    first = await store.enqueue("shop", "c1", "slack", "U42", {"channel": "C1", "thread_ts": "1.2"}, "m1",
                                user("hello", 1000.0))
    second = await store.enqueue("shop", "c1", "slack", "U42", {"channel": "C1"}, "m2", user("again", 1001.0))
    other = await store.enqueue("shop", "c2", "web", "", {}, "m1", user("other", 1002.0))
    assert (first.created, second.created, other.created) == (True, True, True)
    assert (first.turn.seq, second.turn.seq, other.turn.seq) == (1, 2, 1)
    assert first.turn.status == "pending" and first.turn.user_event == user("hello", 1000.0)
    summary = await store.summary("shop", "c1")
    assert summary is not None
    assert (summary.channel, summary.user_id, dict(summary.address)) == ("slack", "U42",
                                                                         {"channel": "C1", "thread_ts": "1.2"})
    assert (summary.started_at, summary.last_activity, summary.turns) == (1000.0, 1001.0, 0)
    assert await store.summary("shop", "nope") is None
    assert await store.summary("other-bot", "c1") is None


async def test_a_redelivered_message_returns_the_stored_turn(store: ConversationStore) -> None:
    seq = await say(store, "c1", "m1", "hi")
    again = await store.enqueue("shop", "c1", "web", "u-1", {}, "m1", user("hi (redelivered)"))
    assert not again.created
    assert again.turn.seq == seq and again.turn.user_event is not None
    assert again.turn.user_event.data["text"] == "hi"
    assert [t.seq for t in await store.pending("shop", "c1")] == [seq]
    await answer(store, "c1", seq, "hello!")
    done = await store.enqueue("shop", "c1", "web", "u-1", {}, "m1", user("hi"))
    assert not done.created and done.turn.status == "done"
    assert done.turn.responses() == [{"text": "hello!"}]


async def test_complete_stores_the_reply_once_in_order(store: ConversationStore) -> None:
    s1 = await say(store, "c1", "m1", "one")
    s2 = await say(store, "c1", "m2", "two")
    assert [t.seq for t in await store.pending("shop", "c1")] == [s1, s2]
    turn = await store.complete("shop", "c1", s1, [Event(BOT, {"text": "first"}), Event("slot", {"k": "v"})],
                                SummaryUpdate(last_intent="greet", confidence=0.9))
    assert turn.status == "done" and turn.completed_at is not None
    assert [e.kind for e in turn.events] == [USER, BOT, "slot"]
    again = await store.complete("shop", "c1", s1, [Event(BOT, {"text": "duplicate"})], SummaryUpdate())
    assert again.responses() == [{"text": "first"}]
    assert [t.seq for t in await store.pending("shop", "c1")] == [s2]
    await answer(store, "c1", s2, "second")
    conv = await store.load("shop", "c1")
    assert conv is not None
    assert [e.data.get("text") for e in conv.events] == ["one", "first", None, "two", "second"]
    assert conv.summary.turns == 2
    with pytest.raises(ConversationNotFound):
        await store.complete("shop", "c1", 99, [], SummaryUpdate())


async def test_append_adds_a_turn_without_a_customer_message(store: ConversationStore) -> None:
    seq = await say(store, "c1", "m1", "I need a human")
    await answer(store, "c1", seq, "connecting you", summary=SummaryUpdate(handoff=True))
    turn = await store.append("shop", "c1", [Event("agent", {"text": "Hi, Ana here"})],
                              SummaryUpdate(add_tags=("vip",)))
    assert (turn.seq, turn.message_id, turn.status) == (seq + 1, None, "done")
    nxt = await say(store, "c1", "m2", "thanks")
    assert nxt == seq + 2
    summary = await store.summary("shop", "c1")
    assert summary is not None and summary.handoff and summary.tags == ("vip",) and summary.turns == 1
    with pytest.raises(ConversationNotFound):
        await store.append("shop", "missing", [Event("agent", {"text": "x"})], SummaryUpdate())


async def test_get_turn_and_load_last_n(store: ConversationStore) -> None:
    for i in range(5):
        await answer(store, "c1", await say(store, "c1", f"m{i}", f"q{i}"), f"a{i}")
    turn = await store.get_turn("shop", "c1", "m3")
    assert turn is not None and turn.seq == 4 and turn.responses() == [{"text": "a3"}]
    assert await store.get_turn("shop", "c1", "m9") is None
    assert await store.get_turn("shop", "c2", "m3") is None
    last = await store.load("shop", "c1", last_n=2)
    assert last is not None and [t.seq for t in last.turns] == [4, 5]
    full = await store.load("shop", "c1")
    assert full is not None and [t.seq for t in full.turns] == [1, 2, 3, 4, 5]
    none = await store.load("shop", "c1", last_n=0)
    assert none is not None and none.turns == () and none.summary.turns == 5
    assert await store.load("shop", "nope") is None
    after = await store.load("shop", "c1", after_seq=2)
    assert after is not None and [t.seq for t in after.turns] == [3, 4, 5] and after.summary.turns == 5
    first_after = await store.load("shop", "c1", after_seq=2, last_n=2)
    assert first_after is not None and [t.seq for t in first_after.turns] == [3, 4]
    nothing_new = await store.load("shop", "c1", after_seq=5)
    assert nothing_new is not None and nothing_new.turns == ()


async def test_summary_folds_intent_confidence_flags_and_tags(store: ConversationStore) -> None:
    s1 = await say(store, "c1", "m1", "a", at=100.0)
    await answer(store, "c1", s1, "x", summary=SummaryUpdate(last_intent="greet", confidence=0.8,
                                                             add_tags=("a", "b")))
    s2 = await say(store, "c1", "m2", "b", at=101.0)
    await answer(store, "c1", s2, "y", summary=SummaryUpdate(last_intent="refund", confidence=0.3, fallback=True,
                                                             add_tags=("c", "a"), remove_tags=("b",)))
    s3 = await say(store, "c1", "m3", "c", at=102.0)
    await answer(store, "c1", s3, "z", summary=SummaryUpdate(confidence=0.95))
    summary = await store.summary("shop", "c1")
    assert summary is not None
    assert (summary.last_intent, summary.min_confidence, summary.fallback) == ("refund", 0.3, True)
    assert summary.tags == ("a", "c") and summary.turns == 3
    assert not summary.handoff and not summary.flagged and not summary.reviewed


async def test_update_summary_by_agents(store: ConversationStore) -> None:
    seq = await say(store, "c1", "m1", "hi", at=500.0)
    await answer(store, "c1", seq, "hello")
    before = await store.summary("shop", "c1")
    assert before is not None
    after = await store.update_summary("shop", "c1", SummaryUpdate(flagged=True, reviewed=True,
                                                                   add_tags=("$where", "needs.fix")))
    assert after.flagged and after.reviewed and after.tags == ("$where", "needs.fix")
    assert after.last_activity == before.last_activity and after.turns == before.turns
    after = await store.update_summary("shop", "c1", SummaryUpdate(reviewed=False, remove_tags=("$where",)))
    assert not after.reviewed and after.flagged and after.tags == ("needs.fix",)
    with pytest.raises(ConversationNotFound):
        await store.update_summary("shop", "missing", SummaryUpdate(flagged=True))


async def _seed_search(store: ConversationStore) -> None:
    rows = [
        ("c1", "shop", "web", 100.0, "Where is my ORDER 123?", "refund", 0.9, SummaryUpdate(add_tags=("vip",))),
        ("c2", "shop", "slack", 200.0, "cancel please", "cancel", 0.2, SummaryUpdate(fallback=True)),
        ("c3", "shop", "telegram", 300.0, "price of a.c adapter", "pricing", 0.5, SummaryUpdate(handoff=True)),
        ("c4", "bank", "web", 400.0, "my order is late", "refund", 0.4, SummaryUpdate()),
        ("c5", "shop", "web", 500.0, 'literally {"$gt": ""} here', '{"$gt": ""}', 0.7, SummaryUpdate()),
    ]
    for conv, bot, channel, at, text, intent, conf, extra in rows:
        seq = await say(store, conv, f"{conv}-m1", text, bot=bot, channel=channel, at=at)
        summary = SummaryUpdate(last_intent=intent, confidence=conf, fallback=extra.fallback,
                                handoff=extra.handoff, add_tags=extra.add_tags)
        await answer(store, conv, seq, f"answer to {conv}", bot=bot, summary=summary)


def _ids(page: Any) -> list[str]:
    return [s.conversation_id for s in page.items]


async def test_search_filters(store: ConversationStore) -> None:
    await _seed_search(store)
    assert _ids(await store.search(TranscriptQuery(bot="shop"))) == ["c5", "c3", "c2", "c1"]
    assert _ids(await store.search(TranscriptQuery(bot="shop", channel="web"))) == ["c5", "c1"]
    assert _ids(await store.search(TranscriptQuery(intent="refund"))) == ["c4", "c1"]
    assert _ids(await store.search(TranscriptQuery(bot="shop", confidence_below=0.6))) == ["c3", "c2"]
    assert _ids(await store.search(TranscriptQuery(fallback=True))) == ["c2"]
    assert _ids(await store.search(TranscriptQuery(handoff=True))) == ["c3"]
    assert _ids(await store.search(TranscriptQuery(bot="shop", handoff=False, fallback=False))) == ["c5", "c1"]
    assert _ids(await store.search(TranscriptQuery(tag="vip"))) == ["c1"]
    assert _ids(await store.search(TranscriptQuery(until=250.0))) == ["c2", "c1"]  # started before
    assert _ids(await store.search(TranscriptQuery(since=time.time() + 60))) == []  # active since
    assert _ids(await store.search(TranscriptQuery(text="order"))) == ["c4", "c1"]
    assert _ids(await store.search(TranscriptQuery(bot="shop", text="ANSWER TO C2"))) == ["c2"]
    page = await store.search(TranscriptQuery(text="answer", sort="min_confidence", descending=False, offset=1,
                                              limit=2))
    assert (_ids(page), page.total) == (["c4", "c3"], 5)  # text + sort + page
    page = await store.search(TranscriptQuery(text="answer", sort="started_at", descending=True, limit=2))
    assert (_ids(page), page.total) == (["c5", "c4"], 5)
    assert _ids(await store.search(TranscriptQuery(bot="shop", text="answer", fallback=True))) == ["c2"]
    assert _ids(await store.search(TranscriptQuery(flagged=True))) == []


async def test_search_matches_values_literally(store: ConversationStore) -> None:
    await _seed_search(store)
    # search text is words (bots/store/text.py): punctuation separates, nothing is an operator or a regex
    assert _ids(await store.search(TranscriptQuery(text="a.c adapter"))) == ["c3"]
    dotted = _ids(await store.search(TranscriptQuery(text="a.c")))
    assert dotted == _ids(await store.search(TranscriptQuery(text="a c")))
    assert _ids(await store.search(TranscriptQuery(text=".*"))) == []  # no word: nothing, not everything
    assert _ids(await store.search(TranscriptQuery(text="(unbalanced[ regex"))) == []
    assert _ids(await store.search(TranscriptQuery(text="where|cancel"))) == []  # two words, not an alternation
    assert _ids(await store.search(TranscriptQuery(text="^wh.*"))) == ["c1"]  # the word prefix "wh"
    assert _ids(await store.search(TranscriptQuery(text="$where"))) == ["c1"]  # the word "where"
    assert _ids(await store.search(TranscriptQuery(text='{"$gt": ""}'))) == ["c5"]
    assert _ids(await store.search(TranscriptQuery(text='{"$ne": null}'))) == []
    assert _ids(await store.search(TranscriptQuery(intent='{"$gt": ""}'))) == ["c5"]
    assert _ids(await store.search(TranscriptQuery(bot="$ne", intent="$exists"))) == []
    assert _ids(await store.search(TranscriptQuery(tag="$where"))) == []


async def test_search_text_is_word_prefixes_anywhere_in_the_conversation(store: ConversationStore) -> None:
    seq = await say(store, "t1", "m1", "I want a REFUND for my order", at=100.0)
    await answer(store, "t1", seq, "Refunds take 5 days.")
    seq = await say(store, "t2", "m1", "Straße Café", at=200.0)
    await answer(store, "t2", seq, "ok")
    seq = await say(store, "t3", "m1", "where is the parcel?", at=300.0)
    await answer(store, "t3", seq, "The courier has it")
    seq = await say(store, "t3", "m2", "tracking number 12345", at=301.0)
    await answer(store, "t3", seq, "thanks")
    seq = await say(store, "t4", "m1", "hi", at=400.0)
    await answer(store, "t4", seq, "Here is a voucher")
    await store.append("shop", "t4", [Event("agent", {"text": "Escalated to billing"})], SummaryUpdate())
    await say(store, "t5", "m1", "an unanswered question", at=500.0)  # pending: searchable already
    seq = await say(store, "t6", "m1", "refund please", bot="bank", at=600.0)
    await answer(store, "t6", seq, "no", bot="bank")
    long_word = "x" * 100

    async def found(text: str, bot: str | None = "shop") -> list[str]:
        return _ids(await store.search(TranscriptQuery(bot=bot, text=text)))

    assert await found("refund") == await found("REFUND") == await found("Refund") == ["t1"]  # case-insensitive
    assert await found("refun") == ["t1"]  # a word prefix ...
    assert await found("efund") == []  # ... not any substring
    assert await found("order refund") == await found("REFUND, order!") == ["t1"]  # every word, any order
    assert await found("refund parcel") == []
    assert await found("parcel 123") == ["t3"]  # words from different turns of one conversation
    assert await found("courier") == ["t3"] and await found("voucher") == ["t4"]  # the bot's replies count
    assert await found("escalated billing") == ["t4"]  # and agents' messages
    assert await found("unanswered") == ["t5"]
    assert await found("STRASSE") == await found("straße") == ["t2"]  # Unicode case folding
    assert await found("CAFÉ") == await found("cafe\u0301") == ["t2"]  # and normalisation
    assert await found("refund", bot=None) == ["t6", "t1"]
    assert await found("refund", bot="bank") == ["t6"]
    assert await found("refund", bot="nobody") == []
    page = await store.search(TranscriptQuery(bot="shop", text="T", limit=1))  # "take"; "the"; "to" (t4 is newest)
    assert (_ids(page), page.total) == (["t4"], 3)
    seq = await say(store, "t7", "m1", f"log {long_word}y and more", at=700.0)
    assert await found(long_word + "y") == await found(long_word) == await found("x" * 64) == ["t7"]


async def test_search_sorts_and_pages(store: ConversationStore) -> None:
    await _seed_search(store)
    page = await store.search(TranscriptQuery(sort="min_confidence", descending=False, offset=1, limit=2))
    assert (_ids(page), page.total, page.offset, page.limit) == (["c4", "c3"], 5, 1, 2)
    page = await store.search(TranscriptQuery(sort="started_at", descending=True, limit=3))
    assert (_ids(page), page.total) == (["c5", "c4", "c3"], 5)
    page = await store.search(TranscriptQuery(bot="shop", offset=10))
    assert (_ids(page), page.total) == ([], 4)


async def test_leases(store: ConversationStore) -> None:
    await say(store, "c1", "m1", "hi")
    assert not await store.acquire_lease("shop", "missing", "a", 10)
    assert await store.acquire_lease("shop", "c1", "a", 10)
    assert not await store.acquire_lease("shop", "c1", "b", 10)
    assert await store.acquire_lease("shop", "c1", "a", 10)  # renewal by the holder
    await store.release_lease("shop", "c1", "b")  # not the holder: nothing happens
    assert not await store.acquire_lease("shop", "c1", "b", 10)
    await store.release_lease("shop", "c1", "a")
    assert await store.acquire_lease("shop", "c1", "b", 0.2)
    await asyncio.sleep(0.3)  # b's lease expired: a may take over
    assert await store.acquire_lease("shop", "c1", "a", 10)


async def test_renewing_a_lease_extends_only_the_holders(store: ConversationStore) -> None:
    await say(store, "c1", "m1", "hi")
    assert not await store.renew_lease("shop", "c1", "a", 10)  # free: a renewal never takes it
    assert await store.acquire_lease("shop", "c1", "a", 0.3)
    assert await store.renew_lease("shop", "c1", "a", 10)  # the holder's heartbeat
    assert not await store.renew_lease("shop", "c1", "b", 10)  # not the holder
    await asyncio.sleep(0.5)  # past the first TTL: still a's, renewed
    assert not await store.acquire_lease("shop", "c1", "b", 10)
    await store.release_lease("shop", "c1", "a")
    assert not await store.renew_lease("shop", "c1", "a", 10)  # a late heartbeat after the release
    assert await store.acquire_lease("shop", "c1", "b", 10)
    assert not await store.renew_lease("shop", "c1", "a", 10)  # nor once another replica has it
    assert not await store.renew_lease("shop", "missing", "a", 10)


async def test_complete_can_release_the_lease_in_the_same_write(store: ConversationStore) -> None:
    s1 = await say(store, "c1", "m1", "hi")
    s2 = await say(store, "c1", "m2", "still there?")
    assert await store.acquire_lease("shop", "c1", "a", 10)
    await store.complete("shop", "c1", s1, [Event(BOT, {"text": "hello"})], SummaryUpdate())
    assert not await store.acquire_lease("shop", "c1", "b", 10)  # kept: more turns to answer
    await store.complete("shop", "c1", s2, [Event(BOT, {"text": "yes"})], SummaryUpdate(), release_lease_of="a")
    assert await store.acquire_lease("shop", "c1", "b", 10)  # released with the last reply
    # someone else's lease is never released; a turn done already still releases the caller's
    again = await store.complete("shop", "c1", s2, [Event(BOT, {"text": "dup"})], SummaryUpdate(),
                                 release_lease_of="a")
    assert again.responses() == [{"text": "yes"}]
    assert not await store.acquire_lease("shop", "c1", "a", 10)
    await store.complete("shop", "c1", s2, [], SummaryUpdate(), release_lease_of="b")
    assert await store.acquire_lease("shop", "c1", "a", 10)


async def test_concurrent_enqueues_get_distinct_ordered_seqs(open_store: Any) -> None:
    one, two = await open_store(), await open_store()  # two replicas sharing the database
    results = await asyncio.gather(*(
        (one if i % 2 else two).enqueue("shop", "c1", "web", "u", {}, f"m{i}", user(f"t{i}")) for i in range(20)))
    assert sorted(r.turn.seq for r in results) == list(range(1, 21))
    dupes = await asyncio.gather(*(
        (one if i % 2 else two).enqueue("shop", "c2", "web", "u", {}, "same", user("x")) for i in range(10)))
    assert sum(r.created for r in dupes) == 1
    assert {r.turn.seq for r in dupes} == {1}
    assert [t.message_id for t in await two.pending("shop", "c2")] == ["same"]
    assert len(await one.pending("shop", "c1")) == 20


async def test_events_round_trip(store: ConversationStore) -> None:
    data = {"text": "Grüße 🙂", "metadata": {"nested": {"list": [1, 2.5, None, True]}, "unicode": "日本",
                                            "dotted.key": 1, "$dollar": "x"}}
    seq = (await store.enqueue("shop", "c1", "web", "u", {}, "m1", Event(USER, data, 12.5))).turn.seq
    await store.complete("shop", "c1", seq, [Event(BOT, {"text": "ok", "buttons": [{"title": "A", "payload": "/a"}]},
                                                   13.0)], SummaryUpdate())
    conv = await store.load("shop", "c1")
    assert conv is not None
    assert conv.events[0] == Event(USER, data, 12.5)
    assert conv.events[1] == Event(BOT, {"text": "ok", "buttons": [{"title": "A", "payload": "/a"}]}, 13.0)


async def test_purge_expired_applies_the_bot_retention(open_store: Any) -> None:
    store = await open_store(retention={"shop": 3600.0})
    now = time.time()
    await say(store, "old", "m1", "never answered", at=now - 7200)
    done = await say(store, "done", "m1", "answered just now", at=now - 7200)
    await store.complete("shop", "done", done, [Event(BOT, {"text": "sorry for the wait"})], SummaryUpdate())
    await say(store, "kept", "m1", "other bot", bot="bank", at=now - 7200)
    # (MongoDB's TTL monitor may purge on its own as well: check what is left, not counts)
    assert isinstance(await store.purge_expired(now=now + 60), int)
    assert await store.load("shop", "old") is None
    assert await store.get_turn("shop", "old", "m1") is None
    answered = await store.load("shop", "done")  # completion time counts: kept until now + retention
    assert answered is not None and [t.status for t in answered.turns] == ["done"]
    await store.purge_expired(now=now + 3700)
    assert await store.load("shop", "done") is None
    assert await store.get_turn("shop", "done", "m1") is None
    kept = await store.load("bank", "kept")  # no retention for bank: kept forever
    assert kept is not None and len(kept.turns) == 1


async def test_retention_set_when_a_bot_is_loaded(open_store: Any) -> None:
    store = await open_store()
    store.set_retention("shop", 3600.0)
    now = time.time()
    await say(store, "old", "m1", "hi", at=now - 7200)
    await say(store, "old", "m1", "hi", bot="bank", at=now - 7200)
    await store.purge_expired(now=now)
    assert await store.summary("shop", "old") is None
    assert await store.summary("bank", "old") is not None
    store.set_retention("shop", None)
    assert store.retention == {}
    with pytest.raises(ValueError, match="positive"):
        store.set_retention("shop", 0)


async def test_sqlite_purges_expired_conversations_on_its_own(tmp_path: Path) -> None:
    """(MongoDB's counterpart, the TTL index, is tested in test_store_mongo.py.)"""
    store = SQLiteStore(tmp_path / "c.db", purge_interval_s=0.05)
    await store.start()
    store.set_retention("shop", 60.0)  # a bot loaded after start-up
    try:
        await say(store, "old", "m1", "hi", at=time.time() - 120)
        await say(store, "new", "m1", "hi")
        deadline = time.monotonic() + 10
        while await store.summary("shop", "old") is not None:
            assert time.monotonic() < deadline, "the periodic purge did not run"
            await asyncio.sleep(0.05)
        assert await store.summary("shop", "new") is not None
    finally:
        await store.aclose()


async def test_sqlite_purge_drops_the_search_words(tmp_path: Path) -> None:
    """SQLite keeps a conversation's distinct words once (``conversation_words``): retention that deletes
    some of a conversation's turns rebuilds its words from the turns left, so a word only the deleted turns
    had finds nothing while the words of the rest still do (MongoDB keeps them in the turn document)."""
    import sqlite3

    store = SQLiteStore(tmp_path / "c.db", retention={"shop": 60.0})
    await store.start()
    try:
        await say(store, "old", "m1", "expired words", at=time.time() - 120)
        await say(store, "mixed", "m1", "ancient history", at=time.time() - 120)  # pending, so purged
        await answer(store, "mixed", await say(store, "mixed", "m2", "history again"), "fresh words")
        assert _ids(await store.search(TranscriptQuery(text="ancient"))) == ["mixed"]
        await store.purge_expired()
        assert _ids(await store.search(TranscriptQuery(text="words"))) == ["mixed"]
        assert _ids(await store.search(TranscriptQuery(text="history fresh"))) == ["mixed"]
        assert _ids(await store.search(TranscriptQuery(text="ancient"))) == []
        assert _ids(await store.search(TranscriptQuery(text="expired"))) == []
    finally:
        await store.aclose()
    with sqlite3.connect(tmp_path / "c.db") as conn:
        rows = conn.execute("SELECT word, conversation_id FROM conversation_words ORDER BY word").fetchall()
    conn.close()
    assert rows == [("again", "mixed"), ("fresh", "mixed"), ("history", "mixed"), ("words", "mixed")]


async def test_sqlite_file_with_words_per_turn_is_moved_to_words_per_conversation(tmp_path: Path) -> None:
    """A file written when the words were kept per turn (``turn_words``, emptied by a trigger) keeps its
    search when opened by this version: the words move to ``conversation_words`` and the old table goes."""
    import sqlite3

    path = tmp_path / "c.db"
    store = SQLiteStore(path)
    await store.start()
    await say(store, "c1", "m1", "where is my parcel")
    await store.aclose()
    with sqlite3.connect(path) as conn:  # back to the old layout, with a word only the old table has
        conn.executescript("""
            CREATE TABLE turn_words (word TEXT NOT NULL, bot TEXT NOT NULL, conversation_id TEXT NOT NULL,
                seq INTEGER NOT NULL, PRIMARY KEY (word, bot, conversation_id, seq)) WITHOUT ROWID;
            CREATE INDEX turn_words_turn ON turn_words (bot, conversation_id, seq);
            CREATE TRIGGER turn_words_purge AFTER DELETE ON turns BEGIN
                DELETE FROM turn_words WHERE bot = old.bot AND conversation_id = old.conversation_id AND seq = old.seq;
            END;
            INSERT INTO turn_words SELECT word, bot, conversation_id, 1 FROM conversation_words;
            INSERT INTO turn_words VALUES ('legacy', 'shop', 'c1', 1);
            DELETE FROM conversation_words;
        """)
    conn.close()
    store = SQLiteStore(path)
    await store.start()
    try:
        assert _ids(await store.search(TranscriptQuery(text="legacy parcel"))) == ["c1"]
    finally:
        await store.aclose()
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert "turn_words" not in names and "turn_words_purge" not in names and "conversation_words" in names


async def test_customers_waiting_for_an_agent_per_bot(open_store: Any) -> None:
    """``waiting_since`` (bots/handoff.py): set by a hand-off, an earlier start kept, cleared by
    ``waiting_over``; ``waiting`` counts a bot's waiting conversations and finds the longest wait,
    the same from every replica."""
    store, replica = await open_store(), await open_store()
    for conv, at in (("c1", 1000.0), ("c2", 1300.0), ("c3", 1600.0)):
        seq = await say(store, conv, "m1", "get me a human", at=at)
        await answer(store, conv, seq, "one moment", summary=SummaryUpdate(handoff=True, waiting_since=at))
    await say(store, "other", "m1", "hi", bot="faq")
    assert await replica.waiting("shop") == Waiting(3, 1000.0)
    assert await replica.waiting("faq") == Waiting(0, None)
    # a later hand-off of a conversation already waiting keeps its start
    seq = await say(store, "c1", "m2", "hello?", at=2000.0)
    await answer(store, "c1", seq, "still looking", summary=SummaryUpdate(handoff=True, waiting_since=2000.0))
    summary = await replica.summary("shop", "c1")
    assert summary is not None and summary.waiting_since == 1000.0 and summary.to_dict()["waiting_since"] == 1000.0
    # an agent takes c1 over (a summary update) and answers c2 (an appended turn): c3 waits longest now
    await replica.update_summary("shop", "c1", SummaryUpdate(handoff=True, waiting_over=True))
    await replica.append("shop", "c2", [Event(BOT, {"text": "Ann here"})],
                         SummaryUpdate(handoff=True, waiting_over=True, waiting_since=5.0))
    assert await store.waiting("shop") == Waiting(1, 1600.0)
    after = await store.summary("shop", "c1")
    assert after is not None and after.waiting_since is None and after.handoff
    assert await store.waiting("nobody") == Waiting(0, None)


@contextlib.asynccontextmanager
async def older_sqlite_file(path: Path, schema: str, *rows: str) -> AsyncIterator[tuple[SQLiteStore, SQLiteStore]]:
    """A SQLite file written by an older version (``schema``, then the SQL ``rows``), opened by two stores
    at once as two processes would open it (each upgrades it if it is first); closed after."""
    with sqlite3.connect(path) as conn:
        conn.executescript(schema)
        for row in rows:
            conn.execute(row)
    conn.close()
    first, second = SQLiteStore(path), SQLiteStore(path)
    try:
        await asyncio.gather(first.start(), second.start())
        yield first, second
    finally:
        await first.aclose()
        await second.aclose()


def sqlite_indexes(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        indexes = {str(row[0]) for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    conn.close()
    return indexes


async def test_sqlite_file_of_an_older_version_gets_the_waiting_column(tmp_path: Path) -> None:
    """A conversations table written before ``waiting_since`` existed is upgraded when opened (by
    two stores at once, as two processes would), and its conversations are kept."""
    from bots.store.sqlite import _SCHEMA

    old = _SCHEMA.replace("    waiting_since REAL,\n", "")
    assert old != _SCHEMA
    path = tmp_path / "c.db"
    row = ("INSERT INTO conversations (bot, conversation_id, channel, started_at, last_activity, handoff)"
           " VALUES ('shop', 'c0', 'web', 1.0, 2.0, 1)")
    async with older_sqlite_file(path, old, row) as (first, second):
        summary = await first.summary("shop", "c0")
        assert summary is not None and summary.handoff and summary.waiting_since is None
        seq = await say(second, "c1", "m1", "human please", at=50.0)
        await answer(second, "c1", seq, "one moment", summary=SummaryUpdate(handoff=True, waiting_since=50.0))
        assert await first.waiting("shop") == Waiting(1, 50.0)
    assert "conv_waiting" in sqlite_indexes(path)
