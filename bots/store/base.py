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
  process one conversation's messages one at a time, in arrival (``seq``) order;
* a **reminder** record per (bot, conversation, name) (rasa-sdk's ``ReminderScheduled``), written by
  ``complete`` together with the turn whose actions scheduled or cancelled it (``ReminderChanges``:
  applied once, like the turn), found by every replica through ``due_reminders`` and marked fired by
  the completion of the turn its firing stored (bots/reminders.py). Durable, unlike Rasa's in-memory
  scheduler: a restarted or killed replica loses none.

A turn is first stored ``pending`` (the customer's message is safe the moment it arrives),
then ``done`` together with the bot's events. Nothing is ever half-written: each write is a
single-record operation.

For a bot with ``pii:`` (``set_privacy``) the store itself redacts every event and pseudonymises
the user id before it writes them, so whoever writes (the runtime, an agent's reply, a
correction) cannot store personal data raw, and the search index only ever sees redacted text.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, get_args

from bots.errors import ConversationNotFound
from bots.events import AGENT, BOT, USER, Event
from bots.pii import Privacy, PrivacyRules
from bots.store.analytics import Analytics, AnalyticsQuery
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
    # the lowest sentiment score of the customer's messages (bots/nlu/sentiment.py); None: none scored
    min_sentiment: float | None = None
    frustration: int = 0  # the customer's frustrated turns
    assignee: str | None = None  # the agent who claimed the conversation in the queue (``assign``); None: nobody
    csat: int | None = None  # the customer's satisfaction rating, 1-5 (thumbs: 5 up, 1 down); None: not rated
    agent_typing_until: float | None = None  # an agent is typing a reply until then (the web widget shows it)
    # the customer's display name as their channel gave it (bots.types.display_name), pseudonymised like the user
    # id for a bot with ``pii:``; None: the channel gave none
    customer_name: str | None = None
    csat_asked_at: float | None = None  # when the customer was asked to rate the conversation (asked once)

    @property
    def frustrated(self) -> bool:
        return self.frustration > 0

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
            "min_sentiment": self.min_sentiment,
            "frustration": self.frustration,
            "assignee": self.assignee,
            "csat": self.csat,
            "agent_typing_until": self.agent_typing_until,
            "customer_name": self.customer_name,
            "csat_asked_at": self.csat_asked_at,
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
            min_sentiment=None if d.get("min_sentiment") is None else float(d["min_sentiment"]),
            frustration=int(d.get("frustration") or 0),
            assignee=None if d.get("assignee") is None else str(d["assignee"]),
            csat=None if d.get("csat") is None else int(d["csat"]),
            agent_typing_until=None if d.get("agent_typing_until") is None else float(d["agent_typing_until"]),
            customer_name=None if d.get("customer_name") is None else str(d["customer_name"]),
            csat_asked_at=None if d.get("csat_asked_at") is None else float(d["csat_asked_at"]),
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
    sentiment: float | None = None  # the customer message's score, folded into min_sentiment
    frustrated_turn: bool = False  # the customer's message was frustrated: frustration + 1
    csat: int | None = None  # the customer rated the conversation: kept only if it was not rated before
    csat_asked: bool = False  # the customer was asked to rate it (the first time is kept: ``csat_asked_at``)
    agent_replied: bool = False  # an agent wrote to the customer (the first one's time is kept for analytics)


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


SortField = Literal["last_activity", "started_at", "min_confidence", "min_sentiment", "frustration", "waiting_since"]
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
    frustrated: bool | None = None  # True: at least one frustrated turn; False: none
    sentiment_below: float | None = None  # min_sentiment below this
    waiting: bool | None = None  # True: the customer waits for an agent (``waiting_since`` set); False: not
    csat_at_most: int | None = None  # rated this or lower (1-5)
    customer: str | None = None  # the customer's display name contains this (case-insensitive for ASCII)
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
class CannedReply:
    """A reply agents insert with ``/name`` in the review UI's composer: for one bot, or for every bot
    (``bot=""``: team-wide). ``text`` may hold ``{slot_name}`` and ``{customer_name}`` variables, filled from
    the conversation when inserted (connectors/review/canned.py). Managed by admins."""

    bot: str
    name: str
    text: str
    updated_by: str = ""
    updated_at: float = 0.0

    def to_dict(self) -> JSON:
        return {"bot": self.bot, "name": self.name, "text": self.text, "updated_by": self.updated_by,
                "updated_at": self.updated_at}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CannedReply:
        return cls(bot=str(d.get("bot") or ""), name=str(d["name"]), text=str(d["text"]),
                   updated_by=str(d.get("updated_by") or ""), updated_at=float(d.get("updated_at") or 0.0))


ReminderStatus = Literal["scheduled", "fired", "cancelled"]


def entities_key(entities: Any) -> str:
    """A reminder's entities as canonical JSON text: what cancelling by entities compares (exactly, as
    Rasa compares them)."""
    return json.dumps(entities, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Reminder:
    """A reminder of one conversation (rasa-sdk ``ReminderScheduled``). When it fires, the conversation
    receives ``intent`` with ``entities`` as if the customer had sent it, as the message
    ``message_id`` (unique per conversation: stored and answered once, whichever replicas fire it)."""

    bot: str
    conversation_id: str
    name: str
    intent: str
    trigger_at: float  # epoch seconds
    entities: Any = None  # as the action gave them: {"entity": "value"} or [{"entity", "value"}, ...]
    kill_on_user_message: bool = True  # cancelled by the customer's next message
    channel: str = ""  # where its answer goes (the conversation's channel and address)
    address: Mapping[str, str] = field(default_factory=dict)
    seq: int = 0  # the turn that scheduled it
    status: ReminderStatus = "scheduled"

    @property
    def message_id(self) -> str:
        return f"reminder:{self.name}:{self.trigger_at!r}"

    def to_dict(self) -> JSON:
        return {"bot": self.bot, "conversation_id": self.conversation_id, "name": self.name, "intent": self.intent,
                "trigger_at": self.trigger_at, "entities": self.entities,
                "kill_on_user_message": self.kill_on_user_message, "channel": self.channel,
                "address": dict(self.address), "seq": self.seq, "status": self.status}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Reminder:
        return cls(bot=str(d["bot"]), conversation_id=str(d["conversation_id"]), name=str(d["name"]),
                   intent=str(d["intent"]), trigger_at=float(d["trigger_at"]), entities=d.get("entities"),
                   kill_on_user_message=bool(d.get("kill_on_user_message", True)), channel=str(d.get("channel") or ""),
                   address=dict(d.get("address") or {}), seq=int(d.get("seq") or 0),
                   status=d.get("status") or "scheduled")


@dataclass(frozen=True)
class ReminderCancel:
    """rasa-sdk ``ReminderCancelled``: by ``name``; else every reminder whose intent and entities are
    those given (each only when given); nothing given: every reminder of the conversation."""

    name: str | None = None
    intent: str | None = None
    entities: Any = None

    def matches(self, reminder: Reminder) -> bool:
        if self.name is not None:
            return reminder.name == self.name
        return ((self.intent is None or reminder.intent == self.intent)
                and (self.entities is None or entities_key(reminder.entities) == entities_key(self.entities)))


@dataclass(frozen=True)
class ReminderChanges:
    """What completing a turn does to its conversation's reminders, applied by ``complete`` with the
    turn and only when it completes it (a redelivered or re-answered turn changes nothing twice):
    first the customer's message cancels the reminders with ``kill_on_user_message`` that earlier
    turns set, then ``cancel`` applies to the reminders of earlier turns, then ``schedule`` sets
    reminders, each replacing the one of its name, and ``fired`` (name, trigger time) marks the
    reminder whose firing this turn is as fired."""

    kill_on_user_message: bool = False
    cancel: tuple[ReminderCancel, ...] = ()
    schedule: tuple[Reminder, ...] = ()
    fired: tuple[str, float] | None = None

    def __bool__(self) -> bool:
        return bool(self.kill_on_user_message or self.cancel or self.schedule or self.fired)


def redacted_reminders(rules: PrivacyRules, bot: str, changes: ReminderChanges | None) -> ReminderChanges | None:
    """``changes`` with every reminder's and cancel's entities redacted as the turn's events are (``pii:``):
    the same rule, so a cancel by entities still matches; None when there is nothing to change."""
    if not changes:
        return None

    def redact(entities: Any) -> Any:
        return entities if entities is None else rules.event(bot, Event("reminder", {"e": entities})).data["e"]

    return replace(changes, cancel=tuple(replace(c, entities=redact(c.entities)) for c in changes.cancel),
                   schedule=tuple(replace(r, entities=redact(r.entities)) for r in changes.schedule))


@dataclass(frozen=True)
class EnqueueResult:
    turn: Turn
    created: bool  # False: the message id was seen before; ``turn`` is the stored one
    leased: bool = False  # the conversation lease was taken for ``lease_owner`` with the message


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
                      address: Mapping[str, str], message_id: str, user_event: Event, *,
                      customer_name: str | None = None, lease_owner: str | None = None,
                      lease_ttl_s: float = 0.0) -> EnqueueResult:
        """Store a customer's message as a pending turn with the next seq (atomically creating
        the conversation). A known message id returns the stored turn, ``created=False``.
        ``customer_name`` (the channel's display name; None: unknown) is written on the conversation in
        the same write, pseudonymised like the user id for a ``pii:`` bot; None keeps the stored one.
        With ``lease_owner``, a new message also takes the conversation lease for that owner, as
        ``acquire_lease`` would (``leased``), in the same write where the store can (SQLite: one
        transaction fewer per message); never for a known message id (nothing to process)."""
        ...

    async def pending(self, bot: str, conversation_id: str) -> list[Turn]:
        """Pending turns in seq order."""
        ...

    async def complete(self, bot: str, conversation_id: str, seq: int, events: Sequence[Event],
                       summary: SummaryUpdate, *, release_lease_of: str | None = None,
                       reminders: ReminderChanges | None = None) -> Turn:
        """Mark a pending turn done with the bot's events appended, in one write. With
        ``release_lease_of``, that owner's conversation lease is released with it (saves a round
        trip after a conversation's last pending turn), also when the turn was done already.
        ``reminders`` are applied with the turn, only by the call that completes it."""
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

    async def analytics(self, query: AnalyticsQuery) -> Analytics:
        """The team lead's figures (bots/store/analytics.py) of the conversations started in the query's
        window, from indexed summary columns: one grouped read, never a scan of the turns."""
        ...

    async def waiting(self, bot: str, *, until: float | None = None) -> Waiting:
        """``bot``'s conversations whose ``waiting_since`` is set (``until``: to that time or earlier, a waiting
        customer's place in the queue), and the earliest of them (an indexed read: the hand-off gauges ask it
        on every scrape)."""
        ...

    async def assign(self, bot: str, conversation_id: str, agent: str | None, *,
                     expected: str | None) -> tuple[bool, ConversationSummary]:
        """Set the conversation's ``assignee`` to ``agent`` (None: nobody) only if it is ``expected`` now, in
        one conditional write: of two agents claiming it at once (``expected=None``) one wins. Whether it
        was set, and the summary after (which shows who has it when it was not). ``ConversationNotFound``."""
        ...

    async def set_customer_name(self, bot: str, conversation_id: str, name: str) -> bool:
        """The conversation's customer is called ``name`` (a channel that learns it after the message was stored:
        Slack's ``users.info``), pseudonymised as ``enqueue`` does; written only when it differs from the stored
        one. False when there is no such conversation or the name was that already."""
        ...

    async def agent_typing(self, bot: str, conversation_id: str, until: float) -> None:
        """An agent is typing in the conversation until ``until`` (the widget on any replica shows it; a plain
        write of the summary, never a turn). Raises ``ConversationNotFound``."""
        ...

    async def canned_replies(self, bots: Collection[str]) -> list[CannedReply]:
        """The canned replies of these bots (``""``: the team-wide ones), by name then bot."""
        ...

    async def save_canned_reply(self, reply: CannedReply) -> None:
        """Add the reply, or replace the one of its bot and name."""
        ...

    async def delete_canned_reply(self, bot: str, name: str) -> bool:
        """False when there was none of that bot and name."""
        ...

    async def due_reminders(self, now: float, limit: int, bots: Collection[str] | None = None) -> list[Reminder]:
        """Scheduled reminders (of ``bots``; None: of every bot) whose trigger time is ``now`` or earlier,
        earliest first, at most ``limit`` (an indexed read: every replica asks it twice a second)."""
        ...

    async def reminder(self, bot: str, conversation_id: str, name: str) -> Reminder | None:
        """The conversation's reminder of that name, whatever its status; None when there is none."""
        ...

    async def mark_reminder_fired(self, bot: str, conversation_id: str, name: str, trigger_at: float) -> bool:
        """Mark the reminder fired if it is still scheduled for ``trigger_at`` (``complete`` does this for
        the turn that fired it; this is for a firing whose turn was completed before it could be marked).
        False when it was not (fired, cancelled or replaced meanwhile)."""
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
        """Delete conversations past their retention (and reminders whose later of trigger time and last
        change is); the number deleted."""
        ...


async def load_existing(store: ConversationStore, bot: str, conversation_id: str) -> Conversation:
    """The whole conversation; ``ConversationNotFound`` when there is none."""
    conversation = await store.load(bot, conversation_id)
    if conversation is None:
        raise ConversationNotFound(f"no conversation {conversation_id!r} for bot {bot!r}")
    return conversation
