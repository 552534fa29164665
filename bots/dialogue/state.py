"""A conversation's state, rebuilt from its stored events (see ``State.apply``)."""

from __future__ import annotations

import copy
import dataclasses
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bots.events import ACTION, AGENT, BOT, FOLLOWUP, FORM, NLU, RESTART, RESUME, SESSION_START, SLOT, USER, Event
from bots.events import REJECTED as ACTION_REJECTED
from bots.events import customer_text as typed_text
from bots.handoff import paused_after
from bots.types import JSON

REQUESTED_SLOT = "requested_slot"  # the slot a form asks for next (Rasa's name)

_HISTORY = 200  # events kept for custom actions' trackers
_TEXTS = 20  # the customer's last texts kept (State.customer_texts): bots.nlu.sentiment compares with the last few


@dataclass
class State:
    """What the bot knows about a conversation, rebuilt from its events."""

    sender_id: str = ""
    slots: dict[str, Any] = field(default_factory=dict)
    paused: bool = False
    active_form: str | None = None
    requested_slot: str | None = None
    # The active form refused a message and has not run since (Rasa's ``is_active_loop_rejected``, which lasts
    # until the loop runs again or changes): its question was not what the customer answered last.
    loop_rejected: bool = False
    last_intent: str | None = None
    latest_message: JSON = field(default_factory=dict)
    latest_action: str | None = None
    followup_action: str | None = None
    fallbacks_in_a_row: int = 0
    session_started_at: float | None = None
    last_activity: float | None = None
    history: list[Event] = field(default_factory=list)  # this session's events, for custom actions
    # The customer's last texts among ``history`` (``customer_texts``), rolled up as events are applied instead of
    # walking the window every turn: each with its event's position among all events applied (``_applied``);
    # ``history`` is always a suffix of those, so a text whose position is before history[0]'s has left it.
    _texts: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=_TEXTS), repr=False, compare=False)
    _applied: int = field(default=0, repr=False, compare=False)
    # The policies' replay of ``history``, carried over from turn to turn (bots.dialogue.policies.WindowReplay,
    # which checks it against the events themselves); a working copy starts without one.
    replay: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_events(cls, events: Sequence[Event], sender_id: str = "") -> State:
        state = cls(sender_id=sender_id)
        for event in events:
            state.apply(event)
        return state

    def copy(self) -> State:
        """A working copy: ``apply`` replaces (never mutates) events and the latest message, so only
        the slot values need a deep copy; the history shares its (frozen) events."""
        return dataclasses.replace(self, slots=copy.deepcopy(self.slots), latest_message=dict(self.latest_message),
                                   history=list(self.history), _texts=self._texts.copy(), _applied=self._applied,
                                   replay=None)

    @property
    def history_start(self) -> int:
        """The position of ``history[0]`` among all the events applied (``history`` is always their suffix)."""
        return self._applied - len(self.history)

    def customer_texts(self) -> list[str]:
        """The customer's last texts in ``history``, oldest first (at most ``_TEXTS``): what
        ``[customer_text(e) for e in history]`` keeps of them, without walking the history."""
        first = self.history_start
        while self._texts and self._texts[0][0] < first:
            self._texts.popleft()
        return [text for _, text in self._texts]

    def expired(self, now: float, expiry_s: float) -> bool:
        """True when ``now`` opens a new session (first message, or idle longer than the expiry)."""
        if self.session_started_at is None or self.last_activity is None:
            return True
        return expiry_s > 0 and now - self.last_activity > expiry_s

    def _reset(self) -> None:
        self.slots.clear()
        self.active_form = None
        self.requested_slot = None
        self.loop_rejected = False
        self.fallbacks_in_a_row = 0

    def apply(self, event: Event) -> None:
        kind, data = event.kind, event.data
        self.last_activity = max(self.last_activity or event.timestamp, event.timestamp)
        self.history.append(event)
        text = typed_text(event)
        if text is not None:
            self._texts.append((self._applied, text))
        self._applied += 1
        self.paused = paused_after((event,), self.paused)  # the one rule (bots.handoff)
        if kind == SESSION_START:
            # The form goes, the slots too unless the bot carries them over; the conversation stays with a
            # human if it was handed off.
            kept = dict(self.slots) if data.get("carry_over") else {}
            self._reset()
            self.slots.update(kept)
            self.session_started_at = event.timestamp
            start = max((i for i, e in enumerate(self.history) if e.kind == USER), default=len(self.history) - 1)
            self.history = self.history[start:]  # keep the message that opened the session
        elif kind == RESTART:
            self._reset()
            self.session_started_at = event.timestamp
            self.history = [event]
        elif kind == SLOT:
            name, value = data.get("name"), data.get("value")
            if name == REQUESTED_SLOT:
                self.requested_slot = value if isinstance(value, str) else None
            elif isinstance(name, str):
                if value is None:
                    self.slots.pop(name, None)
                else:
                    self.slots[name] = value
        elif kind == FORM:
            name = data.get("name")
            if not isinstance(name, str) or name != self.active_form:
                self.loop_rejected = False
            self.active_form = name if isinstance(name, str) else None
            requested = data.get("requested_slot")
            self.requested_slot = requested if isinstance(requested, str) and self.active_form else None
        elif kind == RESUME:
            self.fallbacks_in_a_row = 0
        elif kind == USER:
            self.latest_message = {"text": data.get("text"), "channel": data.get("channel"),
                                   "message_id": data.get("message_id")}
        elif kind == NLU:
            self.latest_message = {**self.latest_message, **data}
            self.last_intent = data.get("intent") or self.last_intent
        elif kind == BOT:
            if data.get("source") == "fallback":
                self.fallbacks_in_a_row += 1
            else:
                self.fallbacks_in_a_row = 0
        elif kind == AGENT:
            self.fallbacks_in_a_row = 0
        elif kind == ACTION:
            name = data.get("name")
            self.latest_action = str(name) if name else self.latest_action
            if name is not None and name == self.active_form:
                self.loop_rejected = False
            if self.followup_action == name:
                self.followup_action = None
        elif kind == ACTION_REJECTED:
            rejected = data.get("name")
            if rejected is not None and rejected == self.active_form:
                self.loop_rejected = True
        elif kind == FOLLOWUP:
            name = data.get("name")
            self.followup_action = str(name) if name else None
        if len(self.history) > _HISTORY:
            del self.history[: len(self.history) - _HISTORY]
