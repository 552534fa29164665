"""The team lead's analytics on both stores (bots/store/analytics.py): containment, hand-off and fallback
rates, time from hand-off to the first agent reply (p50/p90), busiest intents, per day, bot and channel;
the SQLite query reads its covering index."""

from __future__ import annotations

import contextlib
import math
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bots import handoff
from bots.errors import NotDelivered
from bots.handoff import HandoffGauges
from bots.metrics import Metrics
from bots.store.analytics import AnalyticsQuery, percentile
from bots.store.base import ConversationStore, SummaryUpdate
from bots.store.mongo import MongoStore
from bots.store.sqlite import SQLiteStore
from tests.bots.test_store_contract import answer, say
from tests.bots.test_store_contract import open_store as open_store  # the fixture (both stores)
from tests.fixtures.mongo import mongo_uri as mongo_uri
from tests.fixtures.mongo import secantus as secantus

DAY1 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY2 = DAY1 + 86_400


@pytest_asyncio.fixture
async def store(open_store: Any) -> ConversationStore:
    return await open_store()  # type: ignore[no-any-return]


async def _agent_reply(store: ConversationStore, bot: str, conv: str, text: str) -> None:
    """alice's reply as the review UI stores it (no channel is served here: saved, not delivered)."""
    with contextlib.suppress(NotDelivered):
        await handoff.reply(store, bot, conv, "alice", text, {})


async def _conversation(store: ConversationStore, conv: str, at: float, *, bot: str = "shop", channel: str = "web",
                        intent: str | None = "greet", fallback: bool = False, handed_off: bool = False,
                        replied: bool = False) -> None:
    seq = await say(store, conv, f"{conv}-m1", "hello", bot=bot, channel=channel, at=at)
    update = SummaryUpdate(last_intent=intent, confidence=0.9, fallback=fallback or None)
    if handed_off:
        update = SummaryUpdate(last_intent=intent, fallback=fallback or None, handoff=True, waiting_since=at + 10)
    await answer(store, conv, seq, "hi", bot=bot, summary=update)
    if replied:
        await _agent_reply(store, bot, conv, "Hello, I am Alice")


async def test_rates_reply_times_and_intents_per_day_bot_and_channel(store: ConversationStore) -> None:
    await _conversation(store, "c1", DAY1 + 100, intent="greet")
    await _conversation(store, "c2", DAY1 + 200, intent="cancel", fallback=True)
    await _conversation(store, "c3", DAY1 + 300, intent="cancel", handed_off=True, replied=True)
    await _conversation(store, "c4", DAY2 + 100, intent="cancel", channel="slack", handed_off=True)
    await _conversation(store, "c5", DAY2 + 200, bot="other", intent=None, fallback=True)

    result = (await store.analytics(AnalyticsQuery())).to_dict()
    total = result["total"]
    assert (total["conversations"], total["handed_off"], total["fallback"], total["agent_replied"]) == (5, 2, 2, 1)
    assert total["containment_rate"] == pytest.approx(3 / 5)
    assert total["handoff_rate"] == pytest.approx(2 / 5)
    assert total["fallback_rate"] == pytest.approx(2 / 5)
    waited = time.time() - (DAY1 + 310)  # the agent replied just now; the customer waited from DAY1 + 310
    assert total["first_reply_p50_s"] == pytest.approx(waited, abs=60)
    assert [(d["day"], d["conversations"], d["handed_off"]) for d in result["by_day"]] == [
        ("2026-01-01", 3, 1), ("2026-01-02", 2, 1)]
    assert result["by_day"][1]["first_reply_p50_s"] is None  # nobody answered c4
    assert [(b["bot"], b["conversations"]) for b in result["by_bot"]] == [("other", 1), ("shop", 4)]
    assert [(c["channel"], c["conversations"]) for c in result["by_channel"]] == [("slack", 1), ("web", 4)]
    assert result["intents"] == [{"intent": "cancel", "conversations": 3}, {"intent": "greet", "conversations": 1}]

    one_day = (await store.analytics(AnalyticsQuery(bot="shop", channel="web", since=DAY1, until=DAY2))).to_dict()
    assert one_day["total"]["conversations"] == 3
    assert [b["bot"] for b in one_day["by_bot"]] == ["shop"]
    none = (await store.analytics(AnalyticsQuery(bot="nobody"))).to_dict()
    assert none["total"]["conversations"] == 0 and none["total"]["containment_rate"] is None


async def test_the_first_hand_off_and_first_reply_are_kept(store: ConversationStore) -> None:
    await _conversation(store, "c1", DAY1, handed_off=True, replied=True)
    first = (await store.analytics(AnalyticsQuery())).total.reply_p50_s
    await _agent_reply(store, "shop", "c1", "me again")  # a later reply does not move the first
    seq = await say(store, "c1", "c1-m2", "still there?", at=DAY1 + 5000)
    await answer(store, "c1", seq, "handing off", summary=SummaryUpdate(handoff=True, waiting_since=DAY1 + 5000))
    again = (await store.analytics(AnalyticsQuery())).total
    assert again.reply_p50_s == pytest.approx(first) and again.handed_off == 1


async def test_the_export_order_has_an_index_on_mongodb(mongo_uri: str) -> None:
    """(SQLite: test_sqlite_analytics_and_export_read_their_indexes.)"""
    store = MongoStore(mongo_uri)
    await store.start()
    try:
        info = await store._convs.index_information()
        assert info["oldest_first"]["key"] == [("started_at", 1), ("conversation_id", 1)]
    finally:
        await store.aclose()


def test_percentiles() -> None:
    assert percentile([], 0.5) is None
    assert percentile([10.0], 0.9) == 10.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == pytest.approx(2.5)
    assert percentile([float(i) for i in range(1, 11)], 0.9) == pytest.approx(9.1)


async def test_sqlite_analytics_and_export_read_their_indexes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "c.db")
    await store.start()
    await store.aclose()
    with sqlite3.connect(tmp_path / "c.db") as conn:
        plan = " ".join(str(r[-1]) for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT bot, channel, COUNT(*), SUM(fallback) FROM conversations WHERE bot = ?"
            " AND started_at >= ? GROUP BY 1, 2", ("shop", 0.0)))
        export = " ".join(str(r[-1]) for r in conn.execute(  # the bulk export's pages, every bot, oldest first
            "EXPLAIN QUERY PLAN SELECT * FROM conversations ORDER BY started_at ASC, conversation_id LIMIT 500"
            " OFFSET 1000"))
    conn.close()
    assert "COVERING INDEX conv_analytics" in plan
    assert "conv_started" in export and "TEMP B-TREE" not in export  # walked in order, never sorted


def _analytics_gauges(metrics: Metrics) -> dict[tuple[str, ...], float]:
    names = ("switchboard_containment_ratio", "switchboard_handoff_ratio", "switchboard_fallback_ratio",
             "switchboard_first_agent_reply_seconds")
    return {(s.name, *s.labels.values()): s.value for m in metrics.registry.collect() for s in m.samples
            if s.name in names}


async def test_the_last_days_figures_are_gauges_per_bot(store: ConversationStore) -> None:
    now = time.time()
    await _conversation(store, "c1", now - 3600, intent="greet")
    await _conversation(store, "c2", now - 1800, intent="cancel", fallback=True, handed_off=True, replied=True)
    await _conversation(store, "old", now - 3 * 86_400, handed_off=True)  # outside the last day
    metrics = Metrics()
    gauges = HandoffGauges(store, metrics, lambda: ["shop", "faq"], min_interval_s=0)
    assert await gauges.refresh()
    found = _analytics_gauges(metrics)
    assert found[("switchboard_containment_ratio", "shop")] == pytest.approx(0.5)
    assert found[("switchboard_handoff_ratio", "shop")] == pytest.approx(0.5)
    assert found[("switchboard_fallback_ratio", "shop")] == pytest.approx(0.5)
    assert found[("switchboard_first_agent_reply_seconds", "shop", "0.5")] == pytest.approx(1790, abs=60)
    assert math.isnan(found[("switchboard_containment_ratio", "faq")])  # no conversations: no figure
    assert all(set(s.labels) <= {"bot", "quantile"} for m in metrics.registry.collect() for s in m.samples
               if s.name.startswith(("switchboard_containment", "switchboard_first_agent")))


async def test_a_waiting_customer_is_told_the_typical_wait_of_the_last_day(store: ConversationStore,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``StoreQueue.typical_wait``: the median time to the first agent reply over the bot's conversations of the
    last day, only once ``MIN_WAITS`` got one; read again after ``WAIT_REFRESH_S``."""
    from bots.handoff import MIN_WAITS, StoreQueue, describe_wait

    now = time.time()
    queue = StoreQueue(store, "shop", "q1")
    for n in range(MIN_WAITS):
        assert await queue.typical_wait() is None
        monkeypatch.setattr(handoff, "WAIT_REFRESH_S", 0.0)
        await _conversation(store, f"c{n}", now - 600 * (n + 1), handed_off=True, replied=True)
    await _conversation(store, "old", now - 3 * 86_400, handed_off=True, replied=True)  # not of the last day
    await _conversation(store, "other", now - 60, bot="other", handed_off=True, replied=True)  # another bot's
    wait = await queue.typical_wait()
    assert wait == pytest.approx(1200 - 10, abs=60)  # the waits were 590, 1190 and 1790 s: the median
    assert describe_wait(wait) == "about 20 minutes"
    monkeypatch.setattr(handoff, "WAIT_REFRESH_S", 60.0)
    await _conversation(store, "c9", now - 7200, handed_off=True, replied=True)
    assert await queue.typical_wait() == wait  # read a moment ago: the store is not asked again


def test_a_wait_reads_as_a_customer_would_say_it() -> None:
    from bots.handoff import describe_wait

    assert [describe_wait(s) for s in (5, 59, 60, 89, 3000, 5340, 5400, 7200, 30_000)] == [
        "under a minute", "under a minute", "about 1 minute", "about 1 minute", "about 50 minutes",
        "about 89 minutes", "about 2 hours", "about 2 hours", "about 8 hours"]
