"""The review UI's queue on both stores: waiting customers longest wait first, then the conversations an
agent has; assignment as one conditional write (of two agents claiming at once, on two replicas, one wins);
hand back clears it; files and documents stored before assignees existed still read; canned replies."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bots import handoff
from bots.errors import Conflict, ConversationNotFound
from bots.store.base import CannedReply, ConversationStore, SummaryUpdate
from bots.store.mongo import MongoStore, conversation_key
from bots.store.sqlite import _SCHEMA
from tests.bots.test_store_contract import answer, older_sqlite_file, say
from tests.bots.test_store_contract import open_store as open_store  # the fixture (both stores)
from tests.fixtures.mongo import mongo_uri as mongo_uri
from tests.fixtures.mongo import secantus as secantus


@pytest_asyncio.fixture
async def store(open_store: Any) -> ConversationStore:
    return await open_store()  # type: ignore[no-any-return]


async def _handed_off(store: ConversationStore, conv: str, at: float, *, bot: str = "shop") -> None:
    seq = await say(store, conv, "m1", f"human please ({conv})", at=at, bot=bot)
    await answer(store, conv, seq, "one moment", bot=bot, summary=SummaryUpdate(handoff=True, waiting_since=at))


async def test_the_queue_lists_the_longest_wait_first_then_the_conversations_agents_have(
        store: ConversationStore) -> None:
    for conv, at in (("late", 3000.0), ("early", 1000.0), ("middle", 2000.0)):
        await _handed_off(store, conv, at)
    await _handed_off(store, "faq-1", 500.0, bot="faq")
    await say(store, "bot-has-it", "m1", "hello")  # never handed off: not in the queue
    await handoff.take_over(store, "shop", "middle", "ann")  # an agent has it: not waiting any more
    found = await handoff.queue(store)
    assert [s.conversation_id for s in found.waiting.items] == ["faq-1", "early", "late"]
    assert found.waiting.total == 3
    assert [(s.conversation_id, s.assignee) for s in found.active.items] == [("middle", "ann")]
    only_shop = await handoff.queue(store, "shop")
    assert [s.conversation_id for s in only_shop.waiting.items] == ["early", "late"]


async def test_two_agents_claiming_at_once_on_two_replicas_one_wins(open_store: Any) -> None:
    first, second = await open_store(), await open_store()
    await _handed_off(first, "c1", 1000.0)
    for _ in range(5):
        results = await asyncio.gather(handoff.claim(first, "shop", "c1", "ann"),
                                       handoff.claim(second, "shop", "c1", "bob"), return_exceptions=True)
        won = [r for r in results if not isinstance(r, BaseException)]
        lost = [r for r in results if isinstance(r, BaseException)]
        assert len(won) == 1 and len(lost) == 1
        winner = won[0].assignee
        assert isinstance(lost[0], Conflict) and str(lost[0]) == f"{winner} has this conversation already"
        # claiming again is harmless for the winner; the loser sees who has it
        assert (await handoff.claim(second, "shop", "c1", str(winner))).assignee == winner
        summary = await first.summary("shop", "c1")
        assert summary is not None and summary.assignee == winner and summary.to_dict()["assignee"] == winner
        await handoff.unassign(second, "shop", "c1", str(winner))
        assert (await first.summary("shop", "c1")).assignee is None  # type: ignore[union-attr]


async def test_unassign_and_reassign_need_the_assignee_or_an_admin_who_saw_it(store: ConversationStore) -> None:
    await _handed_off(store, "c1", 1000.0)
    await handoff.claim(store, "shop", "c1", "ann")
    with pytest.raises(Conflict, match="ann has this conversation: only they or an admin can unassign it"):
        await handoff.unassign(store, "shop", "c1", "bob")
    with pytest.raises(Conflict, match="ann has this conversation now, not nobody"):
        await handoff.reassign(store, "shop", "c1", "bob", expected=None)
    assert (await handoff.reassign(store, "shop", "c1", "bob", expected="ann", by="ada")).assignee == "bob"
    assert (await handoff.unassign(store, "shop", "c1", "root", admin=True)).assignee is None
    await handoff.claim(store, "shop", "c1", "bob")
    await handoff.claim(store, "shop", "c1", "bob")  # again: no change, no second line
    conversation = await store.load("shop", "c1")
    assert conversation is not None
    assert [e.data for e in conversation.events if e.kind == "assign"] == [  # the transcript's lines, in order
        {"to": "ann", "by": "ann", "from": None}, {"to": "bob", "by": "ada", "from": "ann"},
        {"to": None, "by": "root", "from": "bob"}, {"to": "bob", "by": "bob", "from": None}]
    with pytest.raises(ConversationNotFound):
        await handoff.claim(store, "shop", "nope", "ann")
    with pytest.raises(ConversationNotFound):
        await handoff.unassign(store, "shop", "nope", "ann")


async def test_take_over_claims_and_refuses_another_agents_conversation_hand_back_frees_it(
        store: ConversationStore) -> None:
    await _handed_off(store, "c1", 1000.0)
    await handoff.claim(store, "shop", "c1", "ann")
    with pytest.raises(Conflict, match="ann has this conversation already"):
        await handoff.take_over(store, "shop", "c1", "bob")
    with pytest.raises(Conflict, match="ann has this conversation already"):
        await handoff.reply(store, "shop", "c1", "bob", "hi, Bob here", {})
    conversation = await store.load("shop", "c1")
    assert conversation is not None
    assert [e.kind for e in conversation.events] == ["user", "bot", "assign"]  # ann's claim only
    await handoff.take_over(store, "shop", "c1", "ann")
    summary = await store.summary("shop", "c1")
    assert summary is not None and (summary.assignee, summary.waiting_since) == ("ann", None)
    await handoff.hand_back(store, "shop", "c1", "ann")
    summary = await store.summary("shop", "c1")
    assert summary is not None and (summary.assignee, summary.handoff) == (None, False)


async def test_conversations_stored_before_assignees_read_and_can_be_claimed(open_store: Any) -> None:
    store = await open_store()
    await _handed_off(store, "c1", 1000.0)
    if isinstance(store, MongoStore):  # a document written before the field existed
        await store._convs.update_one({"_id": conversation_key("shop", "c1")}, {"$unset": {"assignee": ""}})
    summary = await store.summary("shop", "c1")
    assert summary is not None and summary.assignee is None
    assert (await handoff.claim(store, "shop", "c1", "ann")).assignee == "ann"


async def test_a_sqlite_file_without_the_assignee_column_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = _SCHEMA.replace("    waiting_since REAL,\n", "")
    row = ("INSERT INTO conversations (bot, conversation_id, channel, started_at, last_activity, handoff)"
           " VALUES ('shop', 'c1', 'web', 1.0, 2.0, 1)")
    async with older_sqlite_file(path, old, row) as (first, second):
        summary = await second.summary("shop", "c1")
        assert summary is not None and summary.assignee is None
        assert (await handoff.claim(first, "shop", "c1", "ann")).assignee == "ann"


async def test_canned_replies_team_wide_and_per_bot_on_every_replica(open_store: Any) -> None:
    store, replica = await open_store(), await open_store()
    assert await store.canned_replies({"", "shop"}) == []
    await store.save_canned_reply(CannedReply("", "hello", "Hi {customer_name}!", "ada", 1.0))
    await store.save_canned_reply(CannedReply("shop", "refund", "Order {order_id} is refunded.", "ada", 2.0))
    await store.save_canned_reply(CannedReply("faq", "refund", "We do not sell anything.", "ada", 3.0))
    assert [(r.bot, r.name) for r in await replica.canned_replies({"", "shop"})] == [("", "hello"), ("shop", "refund")]
    assert [(r.bot, r.name) for r in await replica.canned_replies({"", "shop", "faq"})] == [
        ("", "hello"), ("faq", "refund"), ("shop", "refund")]
    await replica.save_canned_reply(CannedReply("shop", "refund", "Refunded: {order_id}.", "bob", 4.0))  # replaces
    [_, refund] = await store.canned_replies({"", "shop"})
    assert (refund.text, refund.updated_by, refund.updated_at) == ("Refunded: {order_id}.", "bob", 4.0)
    assert await store.delete_canned_reply("shop", "refund") is True
    assert await store.delete_canned_reply("shop", "refund") is False
    assert [r.name for r in await replica.canned_replies({"shop"})] == []
    assert await store.canned_replies(set()) == []
