"""Customer satisfaction in the team lead's analytics (issue 18 item 5), on both stores: how many
conversations were rated and their average rating, in total and per day, bot and channel, within the query's
window and filters; the analytics page shows them."""

from __future__ import annotations

from typing import Any

import pytest_asyncio

from bots.store.analytics import AnalyticsQuery
from bots.store.base import ConversationStore, SummaryUpdate
from tests.bots.test_store_analytics import DAY1, DAY2
from tests.bots.test_store_contract import answer, say
from tests.bots.test_store_contract import open_store as open_store  # the fixture (both stores)
from tests.fixtures.mongo import mongo_uri as mongo_uri
from tests.fixtures.mongo import secantus as secantus


@pytest_asyncio.fixture
async def store(open_store: Any) -> ConversationStore:
    return await open_store()  # type: ignore[no-any-return]


async def _rated(store: ConversationStore, conv: str, at: float, score: int | None, *, bot: str = "shop",
                 channel: str = "web") -> None:
    seq = await say(store, conv, f"{conv}-m1", "bye", bot=bot, channel=channel, at=at)
    await answer(store, conv, seq, "How did we do?", bot=bot, summary=SummaryUpdate(csat_asked=True))
    if score is not None:
        seq = await say(store, conv, f"{conv}-m2", str(score), bot=bot, channel=channel, at=at + 5)
        await answer(store, conv, seq, "Thanks", bot=bot, summary=SummaryUpdate(csat=score))


async def test_ratings_count_and_average_per_day_bot_and_channel(store: ConversationStore) -> None:
    await _rated(store, "c1", DAY1 + 100, 5)
    await _rated(store, "c2", DAY1 + 200, 2)
    await _rated(store, "c3", DAY1 + 300, None)  # asked, never answered: not rated
    await _rated(store, "c4", DAY2 + 100, 4, channel="telegram")
    await _rated(store, "f1", DAY2 + 200, 1, bot="faq")
    everything = (await store.analytics(AnalyticsQuery())).to_dict()
    assert (everything["total"]["rated"], everything["total"]["csat_average"]) == (4, 3.0)
    assert [(d["day"], d["rated"], d["csat_average"]) for d in everything["by_day"]] == [
        ("2026-01-01", 2, 3.5), ("2026-01-02", 2, 2.5)]
    assert [(c["channel"], c["rated"], c["csat_average"]) for c in everything["by_channel"]] == [
        ("telegram", 1, 4.0), ("web", 3, 8 / 3)]
    assert [(b["bot"], b["rated"]) for b in everything["by_bot"]] == [("faq", 1), ("shop", 3)]
    shop_day2 = (await store.analytics(AnalyticsQuery(bot="shop", since=DAY2))).to_dict()["total"]
    assert (shop_day2["rated"], shop_day2["csat_average"]) == (1, 4.0)
    web = (await store.analytics(AnalyticsQuery(channel="web", until=DAY2))).to_dict()["total"]
    assert (web["conversations"], web["rated"], web["csat_average"]) == (3, 2, 3.5)
    nobody = (await store.analytics(AnalyticsQuery(bot="nope"))).to_dict()["total"]
    assert (nobody["rated"], nobody["csat_average"]) == (0, None)
