"""The conversation store contract, shared by the embedded (SQLite) and MongoDB stores.

Schema (both stores keep the same shape):

* a **conversation** record per (bot, conversation id): the summary support teams filter on
  (channel, user, started, last activity, last intent, min confidence, fallback / handoff /
  flagged / reviewed flags, tags), the channel address, and ``next_seq``;
* a **turn** record per processed unit of work, written atomically as ONE record: the
  customer's message (if any) plus every event the bot produced for it (bot replies, slot
  changes, pauses, ...). Turns are numbered per conversation (``seq``) and unique per
  (bot, conversation, message_id), which is what makes redelivery idempotent;
* a **lease** per conversation being processed, so that replicas sharing only the store
  process one conversation's messages one at a time, in arrival (``seq``) order.

A turn is first stored ``pending`` (the customer's message is safe the moment it arrives),
then ``done`` together with the bot's events. Nothing is ever half-written: each write is a
single-record operation.

For a bot with ``pii:`` (``set_privacy``) the store itself redacts every event and pseudonymises
the user id before it writes them, so whoever writes (the runtime, an agent's reply, a
correction) cannot store personal data raw, and the search index only ever sees redacted text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, get_args

from bots.errors import ConversationNotFound
from bots.events import AGENT, BOT, USER, Event
from bots.pii import Privacy
from bots.types import JSON

TurnStatus = Literal["pending", "done"]

@dataclass(frozen=True)
class Turn:
    bot: str
    conversation_id: str
    seq: int
    message_id: str | None
    status: TurnStatus
    events: tuple[Event, ...]
    created_at: float
    completed_at: float | None = None

    @property
    def user_event(self) -> Event | None:
        return next((e for e in self.events if e.kind == USER), None)

    def responses(self) -> list[JSON]:
        """The replies produced for this turn (bot and agent messages), in order."""
        return [e.data for e in self.events if e.kind in (BOT, AGENT)]

    def to_dict(self) -> JSON:
        return {
            "bot": self.bot,
            "conversation_id": self.conversation_id,
            "seq": self.seq,
            "message_id": self.message_id,
            "status": self.status,
            "events": [e.to_dict() for e in self.events],
            "created_at": self.created_at,
            "completed_at": self.completed_at,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Turn:
        return cls(
            bot=str(d["bot"]),
            conversation_id=str(d["conversation_id"]),
            seq=int(d["seq"]),
            message_id=d.get("message_id"),
            status=d["status"],
            events=tuple(Event.from_dict(e) for e in d.get("events", ())),
            created_at=float(d["created_at"]),
            completed_at=None if d.get("completed_at") is None else float(d["completed_at"]),
        )


@dataclass(frozen=True)
class ConversationSummary:
    bot: str
    conversation_id: str
    channel: str
    user_id: str = ""
    address: Mapping[str, str] = field(default_factory=dict)
    started_at: float = 0.0
    last_activity: float = 0.0
    last_intent: str | None = None
    min_confidence: float | None = None
    turns: int = 0
    fallback: bool = False
    handoff: bool = False
    flagged: bool = False
    reviewed: bool = False
    tags: tuple[str, ...] = ()
    # since when the customer waits for an agent (the bot handed off, no agent has it yet); None: not waiting
    waiting_since: float | None = None

    def to_dict(self) -> JSON:
        return {
            "bot": self.bot,
            "conversation_id": self.conversation_id,
            "channel": self.channel,
            "user_id": self.user_id,
            "address": dict(self.address),
            "started_at": self.started_at,
            "last_activity": self.last_activity,
            "last_intent": self.last_intent,
            "min_confidence": self.min_confidence,
            "turns": self.turns,
            "fallback": self.fallback,
            "handoff": self.handoff,
            "flagged": self.flagged,
            "reviewed": self.reviewed,
            "tags": list(self.tags),
            "waiting_since": self.waiting_since,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConversationSummary:
        return cls(
            bot=str(d["bot"]),
            conversation_id=str(d["conversation_id"]),
            channel=str(d["channel"]),
            user_id=str(d.get("user_id") or ""),
            address=dict(d.get("address") or {}),
            started_at=float(d.get("started_at") or 0.0),
            last_activity=float(d.get("last_activity") or 0.0),
            last_intent=d.get("last_intent"),
            min_confidence=None if d.get("min_confidence") is None else float(d["min_confidence"]),
            turns=int(d.get("turns") or 0),
            fallback=bool(d.get("fallback")),
            handoff=bool(d.get("handoff")),
            flagged=bool(d.get("flagged")),
            reviewed=bool(d.get("reviewed")),
            tags=tuple(d.get("tags") or ()),
            waiting_since=None if d.get("waiting_since") is None else float(d["waiting_since"]),
        )


@dataclass(frozen=True)
class SummaryUpdate:
    """What a completed turn changes in the conversation summary. ``None`` = unchanged."""

    last_intent: str | None = None
    confidence: float | None = None  # folded into min_confidence
    fallback: bool | None = None
    handoff: bool | None = None
    flagged: bool | None = None
    reviewed: bool | None = None
    add_tags: tuple[str, ...] = ()
    remove_tags: tuple[str, ...] = ()
    waiting_since: float | None = None  # the customer waits for an agent from then on (an earlier start is kept)
    waiting_over: bool = False  # an agent (or the bot again) has the conversation: nobody waits (wins over the above)


@dataclass(frozen=True)
class Conversation:
    summary: ConversationSummary
    turns: tuple[Turn, ...]

    @property
    def events(self) -> list[Event]:
        return [e for t in self.turns for e in t.events]

    def to_dict(self) -> JSON:
        """The transcript as JSON: the summary and every turn read (admin API, review API, downloads)."""
        return {"summary": self.summary.to_dict(), "turns": [t.to_dict() for t in self.turns]}


SortField = Literal["last_activity", "started_at", "min_confidence"]
SORT_FIELDS: tuple[SortField, ...] = get_args(SortField)  # what conversation lists can be sorted by


@dataclass(frozen=True)
class TranscriptQuery:
    """Filters of the review UI. Every value is matched literally (never as an operator)."""

    bot: str | None = None
    channel: str | None = None
    since: float | None = None
    until: float | None = None
    intent: str | None = None
    confidence_below: float | None = None
    fallback: bool | None = None
    handoff: bool | None = None
    flagged: bool | None = None
    reviewed: bool | None = None
    tag: str | None = None
    text: str | None = None
    sort: SortField = "last_activity"
    descending: bool = True
    offset: int = 0
    limit: int = 50

    def with_page(self, offset: int, limit: int) -> TranscriptQuery:
        return replace(self, offset=offset, limit=limit)


@dataclass(frozen=True)
class Page:
    items: tuple[ConversationSummary, ...]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True)
class Waiting:
    """A bot's customers waiting for an agent: how many, and since when the longest has waited."""

    count: int = 0
    since: float | None = None


@dataclass(frozen=True)
class EnqueueResult:
    turn: Turn
    created: bool  # False: the message id was seen before; ``turn`` is the stored one


class ConversationStore(Protocol):
    """Everything the runtime and the review UI need from storage. Both stores pass one
    contract suite (tests/bots/test_store_contract.py)."""

    name: str

    async def start(self) -> None:
        """Create tables/collections/indexes. Must not fail when the database is down:
        the store then reports not ready through ``ping`` until it comes back."""

    async def ping(self) -> bool: ...

    async def aclose(self) -> None: ...

    async def enqueue(self, ref_bot: str, conversation_id: str, channel: str, user_id: str,
                      address: Mapping[str, str], message_id: str, user_event: Event) -> EnqueueResult:
        """Store a customer's message as a pending turn with the next seq (atomically creating
        the conversation). A known message id returns the stored turn, ``created=False``."""
        ...

    async def pending(self, bot: str, conversation_id: str) -> list[Turn]:
        """Pending turns in seq order."""
        ...

    async def complete(self, bot: str, conversation_id: str, seq: int, events: Sequence[Event],
                       summary: SummaryUpdate, *, release_lease_of: str | None = None) -> Turn:
        """Mark a pending turn done with the bot's events appended, in one write. With
        ``release_lease_of``, that owner's conversation lease is released with it (saves a round
        trip after a conversation's last pending turn), also when the turn was done already."""
        ...

    async def append(self, bot: str, conversation_id: str, events: Sequence[Event],
                     summary: SummaryUpdate) -> Turn:
        """A done turn without a customer message (agent reply, hand back) for an existing
        conversation. Raises ``ConversationNotFound``."""
        ...

    async def get_turn(self, bot: str, conversation_id: str, message_id: str) -> Turn | None: ...

    async def load(self, bot: str, conversation_id: str, *, last_n: int | None = None,
                   after_seq: int | None = None) -> Conversation | None:
        """The summary and turns in seq order: all, the last ``last_n``, or (``after_seq``) only the
        turns after that seq (the first ``last_n`` of them)."""
        ...

    async def summary(self, bot: str, conversation_id: str) -> ConversationSummary | None: ...

    async def update_summary(self, bot: str, conversation_id: str, summary: SummaryUpdate) -> ConversationSummary:
        """Flags/tags/reviewed set by agents. Raises ``ConversationNotFound``."""
        ...

    async def search(self, query: TranscriptQuery) -> Page: ...

    async def waiting(self, bot: str) -> Waiting:
        """``bot``'s conversations whose ``waiting_since`` is set, and the earliest of them (an indexed
        read: the hand-off gauges ask it on every scrape)."""
        ...

    async def acquire_lease(self, bot: str, conversation_id: str, owner: str, ttl_s: float) -> bool:
        """Take the conversation's processing lease if free or expired (or already ours)."""
        ...

    async def renew_lease(self, bot: str, conversation_id: str, owner: str, ttl_s: float) -> bool:
        """Extend the lease to ``ttl_s`` from now if ``owner`` still holds it (the holder's heartbeat).
        Never takes a free or someone else's lease, so a renewal that arrives late is harmless."""
        ...

    async def release_lease(self, bot: str, conversation_id: str, owner: str) -> None: ...

    def set_retention(self, bot: str, seconds: float | None) -> None:
        """Keep ``bot``'s conversations ``seconds`` after their last activity (``None``: forever)."""
        ...

    def set_privacy(self, bot: str, privacy: Privacy | None) -> None:
        """From now on, redact ``bot``'s events and pseudonymise its user ids before every write
        (``enqueue``, ``complete``, ``append``: turns, summaries and the search index alike);
        ``None``: store them as given. Set when the bot is loaded, from its ``pii:``."""
        ...

    async def purge_expired(self, now: float | None = None) -> int:
        """Delete conversations past their retention; the number deleted."""
        ...


async def load_existing(store: ConversationStore, bot: str, conversation_id: str) -> Conversation:
    """The whole conversation; ``ConversationNotFound`` when there is none."""
    conversation = await store.load(bot, conversation_id)
    if conversation is None:
        raise ConversationNotFound(f"no conversation {conversation_id!r} for bot {bot!r}")
    return conversation
