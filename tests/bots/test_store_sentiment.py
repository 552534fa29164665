"""Sentiment on both stores: each turn's score folded into the conversation's lowest, frustrated turns
counted, the review filters and sorts on them, and conversations stored before them still read."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest_asyncio

from bots.nlu.sentiment import Mood
from bots.store.base import ConversationStore, SummaryUpdate, TranscriptQuery
from bots.store.mongo import MongoStore, conversation_key
from bots.store.sqlite import _SCHEMA
from tests.bots.test_store_contract import _ids, older_sqlite_file, say, sqlite_indexes
from tests.bots.test_store_contract import open_store as open_store  # the fixture (both stores)
from tests.fixtures.mongo import mongo_uri as mongo_uri
from tests.fixtures.mongo import secantus as secantus


@pytest_asyncio.fixture
async def store(open_store: Any) -> ConversationStore:
    return await open_store()  # type: ignore[no-any-return]


async def _turn(store: ConversationStore, conv: str, mid: str, text: str, mood: Mood, at: float) -> None:
    seq = await say(store, conv, mid, text, at=at)
    await store.complete("shop", conv, seq, [mood.event(at)],
                         SummaryUpdate(sentiment=mood.score, frustrated_turn=mood.frustrated))


async def _seed(store: ConversationStore) -> None:
    calm, cross, angry = Mood(0.4), Mood(-0.6, ("negative",)), Mood(-0.9, ("negative", "profanity"))
    await _turn(store, "calm", "m1", "hello", calm, 100.0)
    await _turn(store, "cross", "m1", "this is bad", cross, 200.0)
    await _turn(store, "cross", "m2", "thanks", calm, 201.0)
    await _turn(store, "angry", "m1", "where is my order", Mood(0.0), 300.0)
    await _turn(store, "angry", "m2", "this is awful", cross, 301.0)
    await _turn(store, "angry", "m3", "damn it", angry, 302.0)
    seq = await say(store, "unscored", "m1", "[button]", at=400.0)  # a turn without a score (a click)
    await store.complete("shop", "unscored", seq, [], SummaryUpdate())


async def test_turns_roll_up_into_lowest_sentiment_and_frustration_count(store: ConversationStore) -> None:
    await _seed(store)
    summaries = {c: await store.summary("shop", c) for c in ("calm", "cross", "angry", "unscored")}
    got = {c: (s.min_sentiment, s.frustration, s.frustrated) for c, s in summaries.items() if s is not None}
    assert got == {"calm": (0.4, 0, False), "cross": (-0.6, 1, True), "angry": (-0.9, 2, True),
                   "unscored": (None, 0, False)}
    conversation = await store.load("shop", "angry")
    assert conversation is not None
    stored = [Mood.of_event(e) for t in conversation.turns for e in t.events if e.kind == "sentiment"]
    assert stored == [Mood(0.0), Mood(-0.6, ("negative",)), Mood(-0.9, ("negative", "profanity"))]
    assert conversation.to_dict()["summary"]["frustration"] == 2


async def test_filter_and_sort_by_frustration_and_sentiment(store: ConversationStore) -> None:
    await _seed(store)
    assert _ids(await store.search(TranscriptQuery(frustrated=True))) == ["angry", "cross"]
    assert _ids(await store.search(TranscriptQuery(frustrated=False))) == ["unscored", "calm"]
    assert _ids(await store.search(TranscriptQuery(bot="shop", sentiment_below=-0.5))) == ["angry", "cross"]
    assert _ids(await store.search(TranscriptQuery(sentiment_below=-0.7, frustrated=True))) == ["angry"]
    page = await store.search(TranscriptQuery(sort="frustration", descending=True))
    assert _ids(page)[:2] == ["angry", "cross"] and page.total == 4
    page = await store.search(TranscriptQuery(bot="shop", sort="min_sentiment", descending=False, limit=3))
    assert _ids(page) == ["unscored", "angry", "cross"]  # never scored first (as nulls sort), then lowest
    page = await store.search(TranscriptQuery(text="awful", frustrated=True, sort="min_sentiment"))
    assert _ids(page) == ["angry"]


async def test_mongodb_conversations_stored_before_sentiment_still_read(mongo_uri: str) -> None:
    store = MongoStore(mongo_uri, database="before_sentiment")
    await store.start()
    try:
        await say(store, "old", "m1", "hello", at=10.0)
        await store._convs.update_one({"_id": conversation_key("shop", "old")},  # as an older version wrote it
                                      {"$unset": {"min_sentiment": "", "frustration": ""}})
        summary = await store.summary("shop", "old")
        assert summary is not None and (summary.min_sentiment, summary.frustration) == (None, 0)
        assert _ids(await store.search(TranscriptQuery(frustrated=False))) == ["old"]
        assert _ids(await store.search(TranscriptQuery(frustrated=True))) == []
        turn = (await store.pending("shop", "old"))[0]
        await store.complete("shop", "old", turn.seq, [], SummaryUpdate(sentiment=-0.8, frustrated_turn=True))
        summary = await store.summary("shop", "old")
        assert summary is not None and (summary.min_sentiment, summary.frustration) == (-0.8, 1)
        indexes = {ix["name"] async for ix in await store._convs.list_indexes()}
        assert {"bot_sentiment", "bot_frustration"} <= indexes
    finally:
        await store._client.drop_database("before_sentiment")  # type: ignore[union-attr]
        await store.aclose()


async def test_sqlite_file_of_an_older_version_gets_the_sentiment_columns(tmp_path: Path) -> None:
    """A file written before sentiment was kept is upgraded when opened (by two stores at once, as two
    processes would): its conversations read as never frustrated, and new turns roll up."""
    path = tmp_path / "c.db"
    row = ("INSERT INTO conversations (bot, conversation_id, channel, started_at, last_activity)"
           " VALUES ('shop', 'old', 'web', 1.0, 2.0)")
    async with older_sqlite_file(path, _SCHEMA, row) as (first, second):
        summary = await first.summary("shop", "old")
        assert summary is not None and (summary.min_sentiment, summary.frustration) == (None, 0)
        assert _ids(await second.search(TranscriptQuery(frustrated=False))) == ["old"]
        await _turn(second, "new", "m1", "awful", Mood(-0.7, ("negative",)), 50.0)
        assert _ids(await first.search(TranscriptQuery(frustrated=True, sort="frustration"))) == ["new"]
    assert {"conv_sentiment", "conv_frustration"} <= sqlite_indexes(path)
    with sqlite3.connect(path) as conn:
        plan = " ".join(str(r[3]) for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT conversation_id FROM conversations WHERE bot = 'shop' AND frustration > 0"
            " ORDER BY frustration DESC"))
    conn.close()
    assert "conv_frustration" in plan
