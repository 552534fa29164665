"""The reminders part of the store contract, on both stores (SQLite, and MongoDB on a real SecantusDB
server): set, replaced and cancelled only by the completion of the turn that did it (once), the
customer's message cancelling ``kill_on_user_message`` ones, due reminders earliest first, marked
fired once, redacted like the turn, purged by retention."""

from __future__ import annotations

import time
from typing import Any

import pytest_asyncio

from bots.events import BOT, Event
from bots.pii import Privacy, Pseudonymiser, Redactor
from bots.store.base import ConversationStore, Reminder, ReminderCancel, ReminderChanges, SummaryUpdate
from tests.bots.test_store_contract import open_store as open_store
from tests.bots.test_store_contract import say
from tests.fixtures.mongo import mongo_uri as mongo_uri
from tests.fixtures.mongo import secantus as secantus


@pytest_asyncio.fixture
async def store(open_store: Any) -> ConversationStore:
    return await open_store()  # type: ignore[no-any-return]


def reminder(name: str, at: float = 1000.0, *, intent: str = "EXTERNAL_remind", entities: Any = None,
             kill: bool = True) -> Reminder:
    return Reminder("shop", "c1", name, intent, at, entities=entities, kill_on_user_message=kill, channel="slack",
                    address={"channel": "C1", "thread_ts": "1.2"})


async def turn(store: ConversationStore, mid: str, changes: ReminderChanges) -> int:
    """A customer message, answered with ``changes``."""
    seq = await say(store, "c1", mid, f"message {mid}")
    await store.complete("shop", "c1", seq, [Event(BOT, {"text": "ok"})], SummaryUpdate(), reminders=changes)
    return seq


async def statuses(store: ConversationStore, *names: str) -> dict[str, str | None]:
    found = {name: await store.reminder("shop", "c1", name) for name in names}
    return {name: None if r is None else r.status for name, r in found.items()}


async def test_set_with_the_turn_once_and_due_earliest_first(store: ConversationStore) -> None:
    seq = await turn(store, "m1", ReminderChanges(schedule=(
        reminder("late", 2000.0, entities={"order_id": "123"}), reminder("early", 1000.0, kill=False))))
    # completing the turn again (a redelivery, another replica) sets nothing more
    again = await store.complete("shop", "c1", seq, [], SummaryUpdate(),
                                 reminders=ReminderChanges(schedule=(reminder("again", 500.0),)))
    assert again.responses() == [{"text": "ok"}]
    assert await store.reminder("shop", "c1", "again") is None
    assert await store.due_reminders(999.0, 10) == []
    assert [r.name for r in await store.due_reminders(1500.0, 10)] == ["early"]
    assert [r.name for r in await store.due_reminders(2000.0, 10)] == ["early", "late"]
    assert [r.name for r in await store.due_reminders(2000.0, 1)] == ["early"]
    assert await store.due_reminders(2000.0, 0) == []
    assert [r.name for r in await store.due_reminders(2000.0, 10, ["shop", "other"])] == ["early", "late"]
    assert await store.due_reminders(2000.0, 10, ["other"]) == []
    assert await store.due_reminders(2000.0, 10, []) == []
    late = await store.reminder("shop", "c1", "late")
    assert late == Reminder("shop", "c1", "late", "EXTERNAL_remind", 2000.0, entities={"order_id": "123"},
                            kill_on_user_message=True, channel="slack", address={"channel": "C1", "thread_ts": "1.2"},
                            seq=seq, status="scheduled")
    assert late.message_id == "reminder:late:2000.0"
    assert await store.reminder("shop", "c2", "late") is None


async def test_a_new_reminder_of_a_name_replaces_the_old_one(store: ConversationStore) -> None:
    await turn(store, "m1", ReminderChanges(schedule=(reminder("r", 1000.0),)))
    seq = await turn(store, "m2", ReminderChanges(schedule=(reminder("r", 3000.0, intent="EXTERNAL_other"),)))
    assert await store.due_reminders(2000.0, 10) == []
    replaced = await store.reminder("shop", "c1", "r")
    assert replaced is not None and (replaced.trigger_at, replaced.intent, replaced.seq) == (3000.0, "EXTERNAL_other",
                                                                                             seq)
    assert not await store.mark_reminder_fired("shop", "c1", "r", 1000.0)  # the old one's firing marks nothing


async def test_cancel_by_name_intent_entities_or_all(store: ConversationStore) -> None:
    await turn(store, "m1", ReminderChanges(schedule=(
        reminder("a", intent="X", entities={"k": "1", "z": 2}), reminder("b", intent="X", entities={"k": "2"}),
        reminder("c", intent="Y"), reminder("d", intent="Y", entities=[{"entity": "k", "value": "1"}]),
        reminder("e", intent="Z"))))
    names = ("a", "b", "c", "d", "e")
    await turn(store, "m2", ReminderChanges(cancel=(ReminderCancel(intent="X", entities={"k": "2"}),)))
    assert await statuses(store, *names) == {"a": "scheduled", "b": "cancelled", "c": "scheduled",
                                             "d": "scheduled", "e": "scheduled"}
    await turn(store, "m3", ReminderChanges(cancel=(ReminderCancel(name="c", intent="X"),)))  # the name decides
    assert (await statuses(store, "a", "c")) == {"a": "scheduled", "c": "cancelled"}
    # entities alone, whatever their keys' order; then by intent
    await turn(store, "m4", ReminderChanges(cancel=(ReminderCancel(entities={"z": 2, "k": "1"}),)))
    assert (await statuses(store, "a", "d")) == {"a": "cancelled", "d": "scheduled"}
    await turn(store, "m5", ReminderChanges(cancel=(ReminderCancel(intent="Y"),)))
    assert (await statuses(store, "d", "e")) == {"d": "cancelled", "e": "scheduled"}
    await turn(store, "m6", ReminderChanges(cancel=(ReminderCancel(),)))  # nothing given: every reminder
    assert set((await statuses(store, *names)).values()) == {"cancelled"}
    assert await store.due_reminders(5000.0, 10) == []


async def test_a_cancel_leaves_other_conversations_and_later_reminders_alone(store: ConversationStore) -> None:
    other = await say(store, "c2", "m1", "hello")
    await store.complete("shop", "c2", other, [], SummaryUpdate(), reminders=ReminderChanges(
        schedule=(Reminder("shop", "c2", "r", "EXTERNAL_remind", 1000.0),)))
    # one turn: cancel every reminder, then set one: the cancel is of the earlier turns' reminders only
    await turn(store, "m1", ReminderChanges(schedule=(reminder("old"),)))
    await turn(store, "m2", ReminderChanges(cancel=(ReminderCancel(),), schedule=(reminder("new"),)))
    assert await statuses(store, "old", "new") == {"old": "cancelled", "new": "scheduled"}
    assert sorted((r.conversation_id, r.name) for r in await store.due_reminders(5000.0, 10)) == [("c1", "new"),
                                                                                                ("c2", "r")]


async def test_the_customers_message_cancels_the_reminders_that_say_so(store: ConversationStore) -> None:
    await turn(store, "m1", ReminderChanges(schedule=(reminder("kill"), reminder("keep", kill=False))))
    # the customer writes; the same turn sets a reminder, which the message does not cancel (set after it)
    await turn(store, "m2", ReminderChanges(kill_on_user_message=True, schedule=(reminder("fresh"),)))
    assert await statuses(store, "kill", "keep", "fresh") == {"kill": "cancelled", "keep": "scheduled",
                                                               "fresh": "scheduled"}


async def test_marked_fired_once_by_the_turn_of_its_firing(store: ConversationStore) -> None:
    await turn(store, "m1", ReminderChanges(schedule=(reminder("r", 1000.0), reminder("s", 1000.0))))
    firing = (await store.enqueue("shop", "c1", "slack", "", {}, "reminder:r:1000.0",
                                  Event("user", {"text": "reminder r fired"}))).turn
    assert [r.name for r in await store.due_reminders(1000.0, 10)] == ["r", "s"]  # due until its turn is answered
    await store.complete("shop", "c1", firing.seq, [], SummaryUpdate(), reminders=ReminderChanges(fired=("r", 1000.0)))
    assert await statuses(store, "r", "s") == {"r": "fired", "s": "scheduled"}
    assert [r.name for r in await store.due_reminders(1000.0, 10)] == ["s"]
    assert not await store.mark_reminder_fired("shop", "c1", "r", 1000.0)  # once
    assert not await store.mark_reminder_fired("shop", "c1", "s", 999.0)  # not that one
    assert not await store.mark_reminder_fired("shop", "c1", "nope", 1000.0)
    assert await store.mark_reminder_fired("shop", "c1", "s", 1000.0)
    assert await store.due_reminders(5000.0, 10) == []
    await turn(store, "m2", ReminderChanges(schedule=(reminder("r", 4000.0),)))  # set again: due again
    assert [r.name for r in await store.due_reminders(5000.0, 10)] == ["r"]


async def test_a_fired_or_cancelled_reminder_is_not_cancelled_again(store: ConversationStore) -> None:
    await turn(store, "m1", ReminderChanges(schedule=(reminder("r", 1000.0),)))
    assert await store.mark_reminder_fired("shop", "c1", "r", 1000.0)
    await turn(store, "m2", ReminderChanges(kill_on_user_message=True, cancel=(ReminderCancel(name="r"),)))
    assert await statuses(store, "r") == {"r": "fired"}


async def test_entities_are_redacted_like_the_turn(open_store: Any) -> None:
    store: ConversationStore = await open_store()
    store.set_privacy("shop", Privacy(Redactor(), Pseudonymiser("k" * 32)))
    await turn(store, "m1", ReminderChanges(schedule=(reminder("r", entities={"email": "zelda.quux@example.org"}),)))
    stored = await store.reminder("shop", "c1", "r")
    assert stored is not None and stored.entities == {"email": "[EMAIL]"}
    # a cancel by those entities is redacted alike, so it still finds the reminder
    await turn(store, "m2", ReminderChanges(cancel=(ReminderCancel(entities={"email": "zelda.quux@example.org"}),)))
    assert await statuses(store, "r") == {"r": "cancelled"}


async def test_retention_purges_reminders_after_their_time(open_store: Any) -> None:
    store: ConversationStore = await open_store(retention={"shop": 100.0})
    now = time.time()
    await turn(store, "m1", ReminderChanges(schedule=(reminder("past", now - 1000.0), reminder("future", now + 500.0))))
    await store.purge_expired(now + 50.0)
    assert await statuses(store, "past", "future") == {"past": "scheduled", "future": "scheduled"}
    await store.purge_expired(now + 200.0)  # 100 s after it was set (its time was before)
    assert await statuses(store, "past", "future") == {"past": None, "future": "scheduled"}
    await store.purge_expired(now + 700.0)  # 100 s after its time
    assert await statuses(store, "future") == {"future": None}
