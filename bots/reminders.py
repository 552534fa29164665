"""Reminders (rasa-sdk ``ReminderScheduled`` / ``ReminderCancelled``): durable, fired exactly once.

Rasa keeps reminders in its process's memory (APScheduler): a restart loses them, and replicas
cannot share them. Here the store keeps them and any replica fires them:

* **Set and cancelled with the turn.** The events an action returns (``REMINDER``,
  ``REMINDER_CANCELLED``, converted by bots.dialogue.engine) become ``ReminderChanges``
  (``changes_for_turn``) that ``ConversationStore.complete`` applies with the turn, and only when it
  completes it: a redelivered or re-answered turn sets nothing twice. A new reminder replaces the
  one of its name; ``ReminderCancelled`` cancels by name, or by intent and entities (each when
  given; neither: all of the conversation's). The customer's next message cancels the reminders
  with ``kill_on_user_msg`` (rasa-sdk's default) that earlier turns set: Rasa's "the user sent a
  message after the reminder was set" (a reminder firing is not a message from the customer).
* **Fired once.** Every replica polls the store for due reminders (``ReminderScheduler``, every
  ``Settings.reminder_poll_s``) and fires each by accepting a message into its conversation with
  the id ``reminder:<name>:<trigger time>`` (``Reminder.message_id``). The id is unique per
  conversation, so however many replicas fire a reminder, and however often (a replica killed
  half-way, a retry after an outage), it is stored once and answered once, by the runtime's one
  exactly-once path, in the conversation's order. The turn that answers it marks it fired; until
  then it stays due, so a replica that dies at any point loses nothing. A reminder whose time
  passed while no replica ran fires when one starts.
* **As if the customer sent the intent.** The message carries the reminder's intent (confidence 1)
  and entities, as Rasa's external event does; its text, ``reminder <name> fired``, is what the
  transcript shows, and the bot's answer goes to the conversation's channel (``Runtime.senders``)
  from the replica that answered it. A reminder cancelled or replaced after it fired but before its
  turn was answered (the customer wrote in between) runs nothing: its turn records
  ``reminder_skipped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from bots.errors import Busy, StoreUnavailable
from bots.events import REMINDER, REMINDER_CANCELLED, REMINDER_SKIPPED, USER, Event
from bots.store.base import ConversationStore, Reminder, ReminderCancel, ReminderChanges
from bots.types import ConversationRef, Entity, IntentScore, Understanding, UserMessage

log = logging.getLogger("switchboard.reminders")

TRIGGER = "reminder"  # the key of a firing's marker in its message's data (UserMessage.metadata, the USER event)
BATCH = 100  # reminders fired per poll at most (the rest on the next one)


def trigger_of(user: Event | None) -> Reminder | None:
    """The reminder a turn's message fires; None for a message from the customer."""
    marker = user.data.get(TRIGGER) if user is not None and user.kind == USER else None
    if not isinstance(marker, Mapping):
        return None
    try:
        return Reminder.from_dict(marker)
    except (KeyError, TypeError, ValueError):
        return None


def trigger_message(reminder: Reminder, now: float | None = None) -> UserMessage:
    """The message that fires ``reminder`` in its conversation (its id makes a second firing the same message)."""
    marker = {k: v for k, v in reminder.to_dict().items() if k not in ("status", "address")}
    return UserMessage(ConversationRef(reminder.bot, reminder.channel, reminder.conversation_id, reminder.address),
                       message_id=reminder.message_id, text=f"reminder {reminder.name} fired",
                       received_at=time.time() if now is None else now, metadata={TRIGGER: marker})


def understanding_of(reminder: Reminder) -> Understanding:
    """The reminder's intent and entities, as Rasa's external event gives them: intent confidence 1."""
    entities: list[Entity] = []
    given = reminder.entities
    pairs: Iterable[tuple[Any, Any]] = ()
    if isinstance(given, Mapping):
        pairs = given.items()
    elif isinstance(given, list):
        pairs = ((e.get("entity"), e.get("value")) for e in given if isinstance(e, Mapping))
    for name, value in pairs:
        if isinstance(name, str) and name and value is not None:
            entities.append(Entity(name, str(value), 0, 0, extractor="reminder"))
    return Understanding(reminder.intent, 1.0, (IntentScore(reminder.intent, 1.0),), tuple(entities))


def skipped(reminder: Reminder, now: float, current: Reminder | None) -> Event:
    """What the turn of a firing records when its reminder was cancelled or replaced before it was answered."""
    reason = "cancelled" if current is None or current.status == "cancelled" else \
        "replaced by a newer reminder of its name" if current.trigger_at != reminder.trigger_at else current.status
    return Event(REMINDER_SKIPPED, {"name": reminder.name, "intent": reminder.intent, "reason": reason},
                 timestamp=now)


def still_due(fired: Reminder, current: Reminder | None) -> bool:
    """Whether a firing's turn should run: its reminder is still the scheduled one of its name."""
    return current is not None and current.status == "scheduled" and current.trigger_at == fired.trigger_at


def armed(history: Sequence[Event]) -> bool:
    """Whether reminders that the customer's next message cancels were set since their last message:
    a ``REMINDER`` with ``kill_on_user_msg`` after the last message from the customer in ``history``
    (so a message cancels them only when there may be some: no store write otherwise)."""
    for event in reversed(history):
        if event.kind == REMINDER and event.data.get("kill_on_user_msg") is not False:
            return True
        if event.kind == USER and trigger_of(event) is None:
            return False
    return False


def _trigger_at(value: Any) -> float | None:
    """rasa-sdk's ``date_time`` (ISO 8601; without a zone: this server's local time, as Rasa's scheduler
    takes it) as epoch seconds; a number is taken as epoch seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.strip()).timestamp()
    except ValueError:
        return None


def changes_for_turn(*, bot: str, conversation_id: str, seq: int, channel: str, address: Mapping[str, str],
                     user: Event | None, events: Sequence[Event], armed_before: bool) -> ReminderChanges | None:
    """What the turn ``seq`` does to its conversation's reminders: the customer's message (``user``, when
    ``armed_before``) cancels the ``kill_on_user_msg`` ones, then the turn's ``REMINDER`` and
    ``REMINDER_CANCELLED`` events in their order (a cancel also cancels what the same turn set before
    it), then the firing it is marks its reminder fired. None: nothing."""
    firing = trigger_of(user)
    scheduled: dict[str, Reminder] = {}
    cancels: list[ReminderCancel] = []
    for i, event in enumerate(events):
        data = event.data
        if event.kind == REMINDER:
            intent, at = data.get("intent"), _trigger_at(data.get("date_time"))
            if not isinstance(intent, str) or not intent or at is None:
                log.warning("reminder without an intent or a valid date_time ignored",
                            extra={"bot": bot, "reminder": str(data.get("name"))[:64]})
                continue
            name = data.get("name")
            name = name if isinstance(name, str) and name else f"{intent}-{seq}-{i}"  # Rasa: a random name
            scheduled.pop(name, None)  # a later one of the name is the one kept, in its place in the order
            scheduled[name] = Reminder(bot, conversation_id, name, intent, at, entities=data.get("entities"),
                                       kill_on_user_message=data.get("kill_on_user_msg") is not False,
                                       channel=channel, address=dict(address), seq=seq)
        elif event.kind == REMINDER_CANCELLED:
            name, intent = data.get("name"), data.get("intent")
            cancel = ReminderCancel(name=name if isinstance(name, str) and name else None,
                                    intent=intent if isinstance(intent, str) and intent else None,
                                    entities=data.get("entities") or None)
            cancels.append(cancel)
            for key in [k for k, r in scheduled.items() if cancel.matches(r)]:
                del scheduled[key]
    changes = ReminderChanges(
        kill_on_user_message=armed_before and user is not None and firing is None,
        cancel=tuple(cancels), schedule=tuple(scheduled.values()),
        fired=(firing.name, firing.trigger_at) if firing is not None else None)
    return changes or None


Fire = Callable[[Reminder], Awaitable[None]]


class ReminderScheduler:
    """Every ``interval_s``: the due reminders of the shared store, each handed to ``fire`` (the runtime's
    ``fire_reminder``), one at a time per conversation, all of a poll at once. Every replica runs one:
    firing twice is harmless (the message id), so nothing is coordinated. ``stop`` ends it (drain, shutdown)."""

    def __init__(self, store: ConversationStore, fire: Fire, interval_s: float, *,
                 served: Callable[[], Collection[str]] | None = None, batch: int = BATCH) -> None:
        self.store = store
        self.fire = fire
        self.served = served  # the bots this replica serves now (their models loaded); None: every bot
        self.interval_s = interval_s
        self.batch = batch
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self.interval_s <= 0 or self.running:
            return
        self._stopping = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="reminders")

    async def stop(self) -> None:
        """Stop polling; a firing under way is let finish (its turn is then stored and answered whole)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        outage = False  # logged once per outage, not at every poll
        while not self._stopping.is_set():
            try:
                await self.poll()
            except StoreUnavailable as exc:
                if not outage:
                    log.warning("reminders not polled while the store is unavailable", extra={"error": str(exc)})
                outage = True
            except Exception:  # one bad poll must not end the scheduler
                log.exception("reminder poll failed")
            else:
                if outage:
                    log.info("reminders polled again")
                outage = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.interval_s)

    async def poll(self, now: float | None = None) -> int:
        """Fire what is due now; the number of reminders handed to ``fire``."""
        bots = None if self.served is None else self.served()
        due = await self.store.due_reminders(time.time() if now is None else now, self.batch, bots)
        by_conversation: dict[tuple[str, str], list[Reminder]] = {}
        for reminder in due:
            by_conversation.setdefault((reminder.bot, reminder.conversation_id), []).append(reminder)
        await asyncio.gather(*(self._fire_in_order(rs) for rs in by_conversation.values()))
        return len(due)

    async def _fire_in_order(self, reminders: list[Reminder]) -> None:
        for reminder in reminders:
            try:
                await self.fire(reminder)
            except (Busy, StoreUnavailable) as exc:  # still due: the next poll tries again
                log.info("reminder not fired yet; tried again at the next poll",
                         extra={"bot": reminder.bot, "reminder": reminder.name, "error": type(exc).__name__})
            except Exception:  # still due: the next poll tries again
                log.exception("reminder not fired yet; tried again at the next poll",
                              extra={"bot": reminder.bot, "reminder": reminder.name})
