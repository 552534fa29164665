"""Shared data shapes of the runtime: what channels hand in, what the bot hands back,
and what the conversation store keeps.

Everything here is a plain frozen dataclass with ``to_dict``/``from_dict`` so that the
same shape travels through HTTP, MongoDB and SQLite without a mapping layer per store.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

JSON = dict[str, Any]

# Where an answer came from: shown to support teams next to every bot turn.
AnswerSource = Literal["template", "retrieval", "generation", "action", "human", "fallback", "system"]


@dataclass(frozen=True)
class Entity:
    """An entity found in a message: ``start``/``end`` are character offsets into the text.

    ``value`` is always text: what the NLU model tagged (after synonyms), or, for the rule extractors
    (bots/nlu/extractors.py, Duckling-compatible), Duckling's value written out: ``"21"`` for a number,
    ``"20"`` for twenty dollars, the ISO 8601 instant for a ``time``, ``FROM/TO`` (an ISO 8601 interval)
    for a time interval. ``additional_info`` holds Duckling's whole value object, numbers as numbers
    (``{"value": 20, "unit": "USD", "type": "value"}``), and ``rasa_value`` gives the value the way Rasa
    puts it in an entity's ``value`` (a number, the ISO string, or ``{"from", "to"}``): what rasa-sdk
    actions and numeric slots expect. ``extractor``, ``role`` and ``group`` are Rasa's fields of the same
    names. The fields added for these (everything after ``confidence``) are left out of ``to_dict`` while
    unset, so the entities stored before them keep their shape and load unchanged.
    """

    entity: str
    value: str
    start: int
    end: int
    confidence: float = 1.0
    extractor: str = ""
    role: str | None = None
    group: str | None = None
    additional_info: JSON | None = None

    @property
    def rasa_value(self) -> Any:
        """The value as Rasa's entity dict carries it: Duckling's ``value`` (``{"from", "to"}`` for an
        interval) when ``additional_info`` holds a Duckling value object, otherwise ``value``."""
        info = self.additional_info
        if not info:
            return self.value
        if info.get("type") == "interval":
            ends = {k: info.get(k) for k in ("from", "to")}
            return {k: v.get("value") if isinstance(v, Mapping) else None for k, v in ends.items()}
        return info.get("value", self.value)

    def to_dict(self) -> JSON:
        d: JSON = {"entity": self.entity, "value": self.value, "start": self.start, "end": self.end,
                   "confidence": self.confidence}
        for key in ("extractor", "role", "group", "additional_info"):
            if getattr(self, key):
                d[key] = getattr(self, key)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Entity:
        info = d.get("additional_info")
        return cls(
            entity=str(d["entity"]),
            value=str(d["value"]),
            start=int(d["start"]),
            end=int(d["end"]),
            confidence=float(d.get("confidence", 1.0)),
            extractor=str(d.get("extractor") or ""),
            role=None if d.get("role") is None else str(d["role"]),
            group=None if d.get("group") is None else str(d["group"]),
            additional_info=dict(info) if isinstance(info, Mapping) else None,
        )


@dataclass(frozen=True)
class IntentScore:
    name: str
    confidence: float


@dataclass(frozen=True)
class Understanding:
    """What the NLU model made of one text: the intent ranking (best first) and entities."""

    intent: str
    confidence: float
    ranking: tuple[IntentScore, ...] = ()
    entities: tuple[Entity, ...] = ()
    # The text's sentence embedding when the model computed one (numpy, L2-normalised): answer
    # retrieval reuses it instead of encoding the text a second time. Never stored.
    embedding: Any = field(default=None, compare=False, repr=False)

    def to_dict(self) -> JSON:
        return {
            "intent": self.intent,
            "confidence": self.confidence,
            "ranking": [{"name": s.name, "confidence": s.confidence} for s in self.ranking],
            "entities": [e.to_dict() for e in self.entities],
        }


@dataclass(frozen=True)
class ConversationRef:
    """Where a conversation lives: enough for a channel to send into it later."""

    bot: str
    channel: str
    conversation_id: str
    # Channel-specific addressing (Slack channel + thread_ts, Telegram chat id, ...).
    address: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UserMessage:
    """One message from a customer, as every channel delivers it to the runtime.

    ``message_id`` is the channel's delivery id (Slack event_id, Telegram update_id, the web
    widget's client id): a redelivery carries the same id and is answered once.
    """

    ref: ConversationRef
    message_id: str
    text: str
    user_id: str = ""
    received_at: float = field(default_factory=time.time)
    # A button click arrives as a message whose payload is e.g. "/cancel_order".
    payload: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Button:
    title: str
    payload: str


@dataclass(frozen=True)
class BotResponse:
    """One reply. Rich parts degrade to text on channels that cannot show them."""

    text: str
    buttons: tuple[Button, ...] = ()
    source: AnswerSource = "template"
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> JSON:
        return {
            "text": self.text,
            "buttons": [{"title": b.title, "payload": b.payload} for b in self.buttons],
            "source": self.source,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BotResponse:
        return cls(
            text=str(d.get("text", "")),
            buttons=tuple(Button(str(b["title"]), str(b["payload"])) for b in d.get("buttons", ())),
            source=d.get("source", "template"),
            metadata=dict(d.get("metadata", {})),
        )

    def as_text(self) -> str:
        """The text-only rendering for channels without buttons: titles are never dropped."""
        if not self.buttons:
            return self.text
        options = "\n".join(f"{i}. {b.title}" for i, b in enumerate(self.buttons, 1))
        return f"{self.text}\n{options}"


MessageHandler = Callable[[UserMessage], Awaitable[list[BotResponse]]]
