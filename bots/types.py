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


# A customer's display name, as a channel gives it (Telegram's first/last name, Slack's profile, the web page
# that embeds the widget): one line of at most NAME_MAX_CHARS printable characters. Shown to agents (escaped).
NAME_MAX_CHARS = 80
_NOT_PRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a display name a customer may give (the web widget's, answered with a 422)."""
    if len(name) > NAME_MAX_CHARS:
        return f"name: at most {NAME_MAX_CHARS} characters, got {len(name)}"
    if _NOT_PRINTABLE.search(name) or _SURROGATES.search(name):
        return "name: one line of printable characters (no control or invisible characters)"
    return None


def display_name(raw: object) -> str | None:
    """A channel's name for the customer as one shown line: invisible and control characters dropped, spaces
    collapsed, cut to ``NAME_MAX_CHARS``; None when nothing is left (or it is not text)."""
    if not isinstance(raw, str):
        return None
    name = " ".join(_NOT_PRINTABLE.sub(" ", valid_text(raw)).split())[:NAME_MAX_CHARS].strip()
    return name or None

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
    # The text as the model read it when its spelling was corrected (bots/nlu/spelling.py); None: as typed.
    read_as: str | None = None
    # The message's other request when it asks for two ("cancel order 12345 and also update my email address":
    # cancel_order, also edit_account; bots/nlu/multi.py); () for one.
    also: tuple[IntentScore, ...] = ()

    def to_dict(self) -> JSON:
        d: JSON = {
            "intent": self.intent,
            "confidence": self.confidence,
            "ranking": [{"name": s.name, "confidence": s.confidence} for s in self.ranking],
            "entities": [e.to_dict() for e in self.entities],
        }
        if self.read_as is not None:
            d["read_as"] = self.read_as
        if self.also:
            d["also"] = [{"name": s.name, "confidence": s.confidence} for s in self.also]
        return d


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
    # The customer's display name as the channel gives it (``display_name``), stored on the conversation with
    # the message (pseudonymised for a bot with ``pii:``); None: the channel gave none (a stored one stays).
    customer_name: str | None = None

    def __post_init__(self) -> None:
        for name in ("message_id", "text", "user_id"):
            object.__setattr__(self, name, valid_text(getattr(self, name)))
        if self.customer_name is not None:
            object.__setattr__(self, "customer_name", display_name(self.customer_name))
        if self.payload is not None:
            object.__setattr__(self, "payload", valid_text(self.payload))
        object.__setattr__(self, "metadata", valid_unicode(self.metadata))


@dataclass(frozen=True)
class Button:
    """A choice offered with a reply. A click sends ``payload`` back (``/intent{...}`` or text); a button with
    a ``url`` is a link (Rasa's URL buttons): channels open the link and send nothing back."""

    title: str
    payload: str
    url: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "title", valid_text(self.title))
        object.__setattr__(self, "payload", valid_text(self.payload))
        if self.url is not None:
            object.__setattr__(self, "url", valid_text(self.url))

    def to_dict(self) -> JSON:
        d: JSON = {"title": self.title, "payload": self.payload}
        if self.url is not None:
            d["url"] = self.url
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Button:
        url = d.get("url")
        return cls(str(d.get("title", "")), str(d.get("payload") or ""), str(url) if url else None)


# Rich parts that events stored before they were fields kept in the response's metadata (and still load).
_RICH_IN_METADATA = ("image", "attachment", "custom")


@dataclass(frozen=True)
class BotResponse:
    """One reply: text, and the rich parts of Rasa's responses and ``dispatcher.utter_message``:
    ``buttons`` (payload buttons and URL buttons), ``image`` (a URL), ``attachment`` (a URL) and
    ``custom`` (a channel-specific JSON payload, Rasa's ``custom`` / ``json_message``).

    Each channel shows what it can and degrades the rest to text (``as_text``; docs/channels.md):
    a button's title, an image's or attachment's link are never dropped. ``custom`` is data for a
    channel that understands it (the web page, Slack's blocks, Telegram's method parameters).

    ``to_dict`` leaves the rich fields out while unset, so replies stored before they existed keep
    their shape; ``from_dict`` also reads them from ``metadata``, where the engine kept them before.
    """

    text: str
    buttons: tuple[Button, ...] = ()
    source: AnswerSource = "template"
    metadata: Mapping[str, Any] = field(default_factory=dict)
    image: str | None = None
    attachment: str | None = None
    custom: JSON | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", valid_text(self.text))
        object.__setattr__(self, "metadata", valid_unicode(self.metadata))
        for name in ("image", "attachment"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, valid_text(value) or None)
        if self.custom is not None:
            object.__setattr__(self, "custom", valid_unicode(dict(self.custom)))

    @property
    def rich(self) -> bool:
        """Whether there is more than text to show."""
        return bool(self.buttons or self.image or self.attachment or self.custom is not None)

    def to_dict(self) -> JSON:
        d: JSON = {
            "text": self.text,
            "buttons": [b.to_dict() for b in self.buttons],
            "source": self.source,
            "metadata": dict(self.metadata),
        }
        for name in ("image", "attachment", "custom"):
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BotResponse:
        metadata = dict(d.get("metadata") or {})
        rich = {name: d[name] if d.get(name) is not None else metadata.pop(name, None) for name in _RICH_IN_METADATA}
        custom = rich["custom"]
        return cls(
            text=str(d.get("text") or ""),
            buttons=tuple(Button.from_dict(b) for b in d.get("buttons") or () if isinstance(b, Mapping)),
            source=d.get("source", "template"),
            metadata=metadata,
            image=str(rich["image"]) if rich["image"] else None,
            attachment=str(rich["attachment"]) if rich["attachment"] else None,
            custom=custom_payload(custom) if custom is not None else None,
        )

    def as_text(self, *, buttons: bool = True, image: bool = True, attachment: bool = True) -> str:
        """The text-only rendering of what a channel cannot show (each part whose flag is True): a
        button's title (a link button's title and URL), an image's and an attachment's URL. Never the
        custom payload, which is data, not words for the customer."""
        lines = [self.text] if self.text else []
        if buttons and self.buttons:
            lines.extend(f"{i}. {b.title}" + (f": {b.url}" if b.url else "") for i, b in enumerate(self.buttons, 1))
        if image and self.image:
            lines.append(f"Image: {self.image}")
        if attachment and self.attachment:
            lines.append(f"Attachment: {self.attachment}")
        return "\n".join(lines)


def custom_payload(value: Any) -> JSON:
    """A custom payload as ``BotResponse.custom`` keeps it: a JSON object as given; any other JSON value
    (Rasa passes a list or a string through) wrapped as ``{"payload": value}``, so that it is kept, not
    dropped, and every channel reads one shape."""
    if isinstance(value, Mapping):
        return dict(value)
    return {"payload": value}


MessageHandler = Callable[[UserMessage], Awaitable[list[BotResponse]]]
