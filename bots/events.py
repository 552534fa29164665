"""Events: the vocabulary a conversation is made of.

Every turn stores the events the bot, an agent or the customer produced; the dialogue engine
rebuilds a conversation's state by replaying them (bots.dialogue.state). The stores keep them
opaque (bots.store), so this module depends on nothing but bots.types.

An event's data is made valid Unicode when the event is built (``bots.types.valid_unicode``: a
lone surrogate becomes U+FFFD), whoever wrote it (customer, bot, action, agent): what a store is
given can always be encoded, on both stores alike.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bots.types import JSON, valid_unicode

# Event kinds. The dialogue engine rebuilds state from these (see bots.dialogue.state).
USER = "user"
NLU = "nlu"  # what the model understood of the user message before it (intent, entities)
BOT = "bot"
AGENT = "agent"
SLOT = "slot"
FORM = "form"
PAUSE = "pause"
RESUME = "resume"
SESSION_START = "session_start"
RESTART = "restart"
CORRECTION = "correction"
SENTIMENT = "sentiment"  # {"score", "signals", "frustrated"}: how the customer's message sounded (nlu/sentiment.py)
CSAT = "csat"  # {"score", "scale", "counted"}: the customer's satisfaction rating (bots/handoff.py)
ASSIGN = "assign"  # {"to", "by", "from"}: who of the agents has the conversation now (None: nobody; bots/handoff.py)
# The dialogue engine's own steps (Rasa's ActionExecuted, ActionExecutionRejected, UserUtteranceReverted,
# ActionReverted, FollowupAction): the policies' frames are rebuilt from them (bots.dialogue.policies).
ACTION = "action"        # {"name", "policy", "confidence"}: an action ran
REJECTED = "rejected"    # {"name"}: an action (a form) refused this turn; other policies decide
REWIND = "rewind"        # the latest user message is undone (as if never said)
UNDO = "undo"            # the latest action is undone
FOLLOWUP = "followup"    # {"name"}: the action to run next, whatever the policies say
# rasa-sdk ReminderScheduled / ReminderCancelled as an action returned them; bots/reminders.py keeps them in the
# store with the turn. A reminder's firing is a USER event with data["reminder"] (its name, intent, trigger time).
REMINDER = "reminder"    # {"name", "intent", "entities", "date_time", "kill_on_user_msg"}
REMINDER_CANCELLED = "reminder_cancelled"   # {"name", "intent", "entities"}
REMINDER_SKIPPED = "reminder_skipped"   # {"name", "intent", "reason"}: fired, but cancelled or replaced before its turn


@dataclass(frozen=True)
class Event:
    kind: str
    data: JSON = field(default_factory=dict)
    timestamp: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", valid_unicode(self.data))

    def to_dict(self) -> JSON:
        return {"kind": self.kind, "data": dict(self.data), "timestamp": self.timestamp}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Event:
        return cls(kind=str(d["kind"]), data=dict(d.get("data") or {}), timestamp=float(d["timestamp"]))


def customer_text(event: Event) -> str | None:
    """What the customer typed, when ``event`` is their message: neither a button click nor a reminder's firing."""
    data = event.data
    if event.kind != USER or not data.get("text") or data.get("payload") or data.get("reminder"):
        return None
    return str(data["text"])
