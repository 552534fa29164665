"""Shared data shapes of the runtime: what channels hand in, what the bot hands back,
and what the conversation store keeps.

Everything here is a plain frozen dataclass with ``to_dict``/``from_dict`` so that the
same shape travels through HTTP, MongoDB and SQLite without a mapping layer per store.

Valid Unicode, one rule (``valid_text``): a Python ``str`` may hold lone surrogates (JSON allows
the escape ``"\\ud800"``, and ``json.loads`` keeps it), which UTF-8 cannot encode, so SQLite,
MongoDB and every JSON response would fail on them (a 500, or a dropped WebSocket message). Every
shape that carries what people or actions wrote (``UserMessage`` with its ``ConversationRef``,
``BotResponse`` and ``Button``, and ``bots.events.Event``) makes its strings valid when it is
built: each lone surrogate becomes U+FFFD (a surrogate pair, the character it encodes). A message
is never refused for it: the customer's text is stored and answered, identically on both stores.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

JSON = dict[str, Any]

# A conversation or message id chosen by a client (the web widget, scripts): 1-64 letters, digits,
# '_' and '-'. One rule for the request models, the query parameters and the socket handshake.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_ID = re.compile(ID_PATTERN)


def valid_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None

_SURROGATES = re.compile("[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """``text`` as valid Unicode: each lone surrogate replaced by U+FFFD, a surrogate pair joined into
    the character it encodes; any other text is returned as it is (the same object)."""
    if text.isascii() or _SURROGATES.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _invalid(value: object) -> bool:
    """Whether a JSON-like value holds a string that ``valid_text`` would change."""
    if isinstance(value, str):
        return not value.isascii() and _SURROGATES.search(value) is not None
    if isinstance(value, dict):  # the common case first: checks of every event's data
        for key, item in value.items():
            if _invalid(item) or _invalid(key):
                return True
        return False
    if value is None or isinstance(value, int | float):
        return False
    if isinstance(value, list | tuple):
        for item in value:
            if _invalid(item):
                return True
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if _invalid(item) or _invalid(key):
                return True
    return False


def _repair(value: Any) -> Any:
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, Mapping):
        return {_repair(k): _repair(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_repair(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_repair(v) for v in value)
    return value


def valid_unicode(value: Any) -> Any:
    """``valid_text`` applied to every string of a JSON-like value (mapping keys too); the value itself
    when it has nothing to replace (the common case costs one walk, no copy)."""
    return _repair(value) if _invalid(value) else value


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

    def __post_init__(self) -> None:
        for name in ("bot", "channel", "conversation_id"):
            object.__setattr__(self, name, valid_text(getattr(self, name)))
        object.__setattr__(self, "address", valid_unicode(self.address))


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

    def __post_init__(self) -> None:
        for name in ("message_id", "text", "user_id"):
            object.__setattr__(self, name, valid_text(getattr(self, name)))
        if self.payload is not None:
            object.__setattr__(self, "payload", valid_text(self.payload))
        object.__setattr__(self, "metadata", valid_unicode(self.metadata))


@dataclass(frozen=True)
class Button:
    title: str
    payload: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "title", valid_text(self.title))
        object.__setattr__(self, "payload", valid_text(self.payload))


@dataclass(frozen=True)
class BotResponse:
    """One reply. Rich parts degrade to text on channels that cannot show them."""

    text: str
    buttons: tuple[Button, ...] = ()
    source: AnswerSource = "template"
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", valid_text(self.text))
        object.__setattr__(self, "metadata", valid_unicode(self.metadata))

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
