"""Reminders end to end in the runtime (bots/reminders.py): a rasa-sdk action (in process, unchanged)
schedules one; it fires once, as its intent with its entities, and the bot's answer is stored once and
pushed to the conversation's channel; the customer's message cancels it (``kill_on_user_message``);
``ReminderCancelled`` cancels it by name; two replicas sharing one store fire it once; a firing whose
reminder was cancelled meanwhile runs nothing; a firing answered but not marked is not answered again;
drain stops the scheduler. (A replica SIGKILLed after scheduling: tests/e2e/test_reminders_kill.py.)"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from bots.errors import StoreUnavailable
from bots.events import BOT, REMINDER, REMINDER_SKIPPED, Event
from bots.reminders import ReminderScheduler, trigger_message
from bots.runtime import Runtime
from bots.settings import Settings
from bots.store.base import ReminderChanges, SummaryUpdate, Turn
from bots.store.sqlite import SQLiteStore
from bots.types import BotResponse, ConversationRef
from tests.bots.keyword_model import DIALOGUE_BOT, copy_bot, keyword_loader, message, say

REMIND_AFTER_S = 1.0
POLL_S = 0.1
ANSWER = "Reminder: order 12345 is still waiting for you."

ACTIONS = f'''

import datetime

from rasa_sdk.events import ReminderCancelled, ReminderScheduled


def _remind(dispatcher, kill):
    dispatcher.utter_message(text="I'll remind you in a second.")
    at = datetime.datetime.now() + datetime.timedelta(seconds={REMIND_AFTER_S})
    return [ReminderScheduled("EXTERNAL_check", at, entities={{"order_id": "12345"}}, name="check",
                              kill_on_user_message=kill)]


class ActionRemind(Action):
    def name(self) -> Text:
        return "action_remind"

    def run(self, dispatcher, tracker, domain):
        return _remind(dispatcher, kill=True)


class ActionRemindKeep(Action):
    def name(self) -> Text:
        return "action_remind_keep"

    def run(self, dispatcher, tracker, domain):
        return _remind(dispatcher, kill=False)


class ActionForgetReminder(Action):
    def name(self) -> Text:
        return "action_forget_reminder"

    def run(self, dispatcher, tracker, domain):
        dispatcher.utter_message(text="Reminder cancelled.")
        return [ReminderCancelled(name="check")]
'''

INTENTS = """  remind_me:
    examples: [remind me later]
    response: ok
  remind_me_keep:
    examples: [remind me whatever I say]
    response: ok
  forget_reminder:
    examples: [forget the reminder]
    response: ok
  EXTERNAL_check:
    examples: [EXTERNAL check]
    response: "Reminder: order {order_id} is still waiting for you."
"""
RULES = """  - intent: remind_me
    action: action_remind
  - intent: remind_me_keep
    action: action_remind_keep
  - intent: forget_reminder
    action: action_forget_reminder
"""


def reminder_bot(tmp_path: Path) -> Path:
    bot_dir = copy_bot(tmp_path)
    (bot_dir / "actions.py").write_text((DIALOGUE_BOT / "actions.py").read_text() + ACTIONS)
    text = (bot_dir / "bot.yml").read_text()
    text = text.replace("intents:\n", "intents:\n" + INTENTS, 1).replace("actions: actions\n", RULES, 1)
    (bot_dir / "bot.yml").write_text(text + "actions: {module: actions, timeout_s: 5}\n")
    return bot_dir


Sent = list[tuple[ConversationRef, list[str]]]


async def replica(bot_dir: Path, db: Path, sent: Sent, *, poll_s: float = POLL_S, start: bool = True) -> Runtime:
    """A runtime as the app builds it: its channel's send registered, its scheduler started."""
    store = SQLiteStore(db)
    await store.start()
    runtime = Runtime(Settings(data_dir=db.parent, nlu_max_wait_ms=0.0, reminder_poll_s=poll_s), store,
                      model_loader=keyword_loader)
    await runtime.load_bot(bot_dir)

    async def send(ref: ConversationRef, responses: Sequence[BotResponse]) -> None:
        sent.append((ref, [r.text for r in responses]))

    runtime.senders["web"] = send
    if start:
        runtime.reminders.start()
    return runtime


@pytest.fixture
async def runtimes(tmp_path: Path) -> AsyncIterator[tuple[list[Runtime], Path, Sent]]:
    """Started runtimes are closed afterwards; the shared database and what was sent."""
    opened: list[Runtime] = []
    yield opened, tmp_path / "conversations.db", []
    for runtime in opened:
        await runtime.aclose()


async def firings(runtime: Runtime, conversation: str = "c1") -> list[Turn]:
    loaded = await runtime.store.load("shop", conversation)
    assert loaded is not None
    return [t for t in loaded.turns if (t.message_id or "").startswith("reminder:")]


async def wait_for_firing(runtime: Runtime, timeout_s: float = REMIND_AFTER_S + 4.0) -> Turn:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = [t for t in await firings(runtime) if t.status == "done"]
        if done:
            return done[0]
        await asyncio.sleep(0.05)
    raise AssertionError("the reminder did not fire")


async def test_an_action_schedules_a_reminder_that_fires_once_and_is_pushed(
        tmp_path: Path, runtimes: tuple[list[Runtime], Path, Sent]) -> None:
    opened, db, sent = runtimes
    runtime = await replica(reminder_bot(tmp_path), db, sent)
    opened.append(runtime)
    scheduled_at = time.time()
    assert await say(runtime, "remind me", payload="/remind_me") == ["I'll remind you in a second."]
    stored = await runtime.store.reminder("shop", "c1", "check")
    assert stored is not None and stored.status == "scheduled" and stored.intent == "EXTERNAL_check"
    assert scheduled_at + REMIND_AFTER_S - 0.1 <= stored.trigger_at <= time.time() + REMIND_AFTER_S

    fired = await wait_for_firing(runtime)
    assert time.time() >= stored.trigger_at
    assert fired.message_id == f"reminder:check:{stored.trigger_at!r}"
    assert fired.responses() == [{"text": ANSWER, "buttons": [], "source": "template",
                                  "metadata": fired.responses()[0]["metadata"]}]
    user = fired.user_event
    assert user is not None and user.data["text"] == "reminder check fired"  # what the transcript shows
    assert user.data["reminder"]["name"] == "check"
    nlu = next(e for e in fired.events if e.kind == "nlu").data
    assert (nlu["intent"], nlu["confidence"]) == ("EXTERNAL_check", 1.0)
    assert [(e["entity"], e["value"]) for e in nlu["entities"]] == [("order_id", "12345")]
    await asyncio.sleep(5 * POLL_S)  # more polls: nothing fires it again
    assert len(await firings(runtime)) == 1
    assert (await runtime.store.reminder("shop", "c1", "check")).status == "fired"  # type: ignore[union-attr]
    assert sent == [(ConversationRef("shop", "web", "c1"), [ANSWER])]
    summary = await runtime.store.summary("shop", "c1")
    assert summary is not None and summary.last_intent == "EXTERNAL_check"


async def test_the_customers_message_cancels_it_unless_told_otherwise(
        tmp_path: Path, runtimes: tuple[list[Runtime], Path, Sent]) -> None:
    opened, db, sent = runtimes
    runtime = await replica(reminder_bot(tmp_path), db, sent)
    opened.append(runtime)
    await say(runtime, "remind me", payload="/remind_me", conversation="killed")
    await say(runtime, "remind me", payload="/remind_me_keep", conversation="kept")
    await say(runtime, "hello", conversation="killed")
    await say(runtime, "hello", conversation="kept")
    killed = await runtime.store.reminder("shop", "killed", "check")
    assert killed is not None and killed.status == "cancelled"
    await asyncio.sleep(REMIND_AFTER_S + 10 * POLL_S)
    assert await firings(runtime, "killed") == []
    assert [t.responses()[0]["text"] for t in await firings(runtime, "kept")] == [ANSWER]
    assert [ref.conversation_id for ref, _ in sent] == ["kept"]


async def test_reminder_cancelled_by_name(tmp_path: Path, runtimes: tuple[list[Runtime], Path, Sent]) -> None:
    opened, db, sent = runtimes
    runtime = await replica(reminder_bot(tmp_path), db, sent)
    opened.append(runtime)
    await say(runtime, "remind me", payload="/remind_me_keep")  # not cancelled by the next message itself
    assert await say(runtime, "forget it", payload="/forget_reminder") == ["Reminder cancelled."]
    assert (await runtime.store.reminder("shop", "c1", "check")).status == "cancelled"  # type: ignore[union-attr]
    await asyncio.sleep(REMIND_AFTER_S + 10 * POLL_S)
    assert await firings(runtime) == [] and sent == []


async def test_two_replicas_sharing_a_store_fire_it_once(
        tmp_path: Path, runtimes: tuple[list[Runtime], Path, Sent]) -> None:
    """Both replicas find the same reminders due and fire all of them at the same moment."""
    opened, db, sent = runtimes
    bot_dir = reminder_bot(tmp_path)
    a, b = await replica(bot_dir, db, sent, start=False), await replica(bot_dir, db, sent, start=False)
    opened += [a, b]
    for n in range(5):
        await say(a if n % 2 else b, "remind me", payload="/remind_me_keep", conversation=f"c{n}")
    await asyncio.sleep(REMIND_AFTER_S)
    assert await asyncio.gather(a.reminders.poll(), b.reminders.poll()) == [5, 5]
    for n in range(5):
        fired = await firings(a, f"c{n}")
        assert len(fired) == 1 and fired[0].status == "done"
        assert [r["text"] for r in fired[0].responses()] == [ANSWER]
    assert sorted(ref.conversation_id for ref, _ in sent) == [f"c{n}" for n in range(5)]  # each pushed once
    assert await asyncio.gather(a.reminders.poll(), b.reminders.poll()) == [0, 0]  # all marked fired
    calls = a.bots["shop"].model.calls + b.bots["shop"].model.calls  # type: ignore[attr-defined]
    assert "reminder check fired" not in calls  # a firing is its intent: no NLU


async def test_a_firing_whose_reminder_was_cancelled_meanwhile_runs_nothing(
        tmp_path: Path, runtimes: tuple[list[Runtime], Path, Sent]) -> None:
    """The customer's message arrives (stored, not answered yet), then the reminder fires: answered in
    order, the message cancels the reminder, and the firing's turn records that instead of running."""
    opened, db, sent = runtimes
    runtime = await replica(reminder_bot(tmp_path), db, sent, start=False)
    opened.append(runtime)
    await say(runtime, "remind me", payload="/remind_me")
    stored = await runtime.store.reminder("shop", "c1", "check")
    assert stored is not None
    hello = message("hello", message_id="m-hello")
    pending = await runtime.accept(hello)  # stored before the firing, answered with it below
    await runtime.fire_reminder(stored)
    fired = (await firings(runtime))[0]
    assert fired.status == "done" and fired.responses() == []
    assert [e.data for e in fired.events if e.kind == REMINDER_SKIPPED] == [
        {"name": "check", "intent": "EXTERNAL_check", "reason": "cancelled"}]
    assert [r.text for r in await runtime.process(hello, pending)] == ["Hello! How can I help you today?"]
    assert sent == []


async def test_a_firing_answered_before_it_was_marked_is_not_answered_again(
        tmp_path: Path, runtimes: tuple[list[Runtime], Path, Sent]) -> None:
    """A replica stored the firing's answer and died before the reminder was marked fired (MongoDB marks
    it after the turn): the next poll marks it, and answers nothing twice."""
    opened, db, sent = runtimes
    runtime = await replica(reminder_bot(tmp_path), db, sent, start=False)
    opened.append(runtime)
    await say(runtime, "remind me", payload="/remind_me_keep")
    stored = await runtime.store.reminder("shop", "c1", "check")
    assert stored is not None
    stored = replace(stored, trigger_at=time.time() - 1.0)  # due now: set again, as the action would
    seq = (await runtime.store.enqueue("shop", "c1", "web", "u1", {}, "m-set", Event("user", {"text": "x"}))).turn.seq
    await runtime.store.complete("shop", "c1", seq, [Event(REMINDER, {})], SummaryUpdate(),
                                 reminders=ReminderChanges(schedule=(stored,)))
    firing = trigger_message(stored)
    turn = await runtime.store.enqueue("shop", "c1", "web", "", {}, firing.message_id,
                                       Event("user", {"text": firing.text, "reminder": firing.metadata["reminder"]}))
    await runtime.store.complete("shop", "c1", turn.turn.seq, [Event(BOT, {"text": "answered by the dead one"})],
                                 SummaryUpdate())  # ... and it died here
    assert [r.name for r in await runtime.store.due_reminders(time.time(), 10)] == ["check"]
    assert await runtime.reminders.poll() == 1
    assert await runtime.store.due_reminders(time.time(), 10) == []
    assert (await runtime.store.reminder("shop", "c1", "check")).status == "fired"  # type: ignore[union-attr]
    assert [t.responses() for t in await firings(runtime)] == [[{"text": "answered by the dead one"}]]
    assert sent == []


async def test_drain_stops_the_scheduler(tmp_path: Path, runtimes: tuple[list[Runtime], Path, Sent]) -> None:
    opened, db, sent = runtimes
    runtime = await replica(reminder_bot(tmp_path), db, sent)
    opened.append(runtime)
    await say(runtime, "remind me", payload="/remind_me")
    assert runtime.reminders.running
    assert await runtime.drain(5.0)
    assert not runtime.reminders.running
    await asyncio.sleep(REMIND_AFTER_S + 5 * POLL_S)
    assert await firings(runtime) == []  # still stored, due: fired by another replica, or this one restarted
    assert (await runtime.store.reminder("shop", "c1", "check")).status == "scheduled"  # type: ignore[union-attr]


async def test_a_store_outage_is_logged_once_and_polling_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    class DownThenUp:
        calls = 0

        async def due_reminders(self, now: float, limit: int, bots: object = None) -> list[object]:
            self.calls += 1
            if self.calls <= 3:
                raise StoreUnavailable("the database is down")
            return []

    async def fire(reminder: object) -> None:
        raise AssertionError("nothing is due")

    caplog.set_level(logging.INFO, logger="switchboard.reminders")
    store = DownThenUp()
    scheduler = ReminderScheduler(store, fire, 0.01)  # type: ignore[arg-type]
    scheduler.start()
    deadline = time.monotonic() + 5
    while store.calls < 6:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await scheduler.stop()
    assert not scheduler.running
    messages = [r.getMessage() for r in caplog.records if r.name == "switchboard.reminders"]
    assert messages == ["reminders not polled while the store is unavailable", "reminders polled again"]
