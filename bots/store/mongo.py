"""The MongoDB conversation store (pymongo's async API), for several replicas sharing one database.

Collections (see docs/store.md for the full schema):

* ``conversations``: one small summary document per (bot, conversation id), ``_id`` is
  ``["bot", "conversation id"]`` as JSON text; it also holds ``next_seq`` (a hint, see below),
  the processing lease and ``expire_at`` (retention);
* ``turns``: one document per unit of work, so a conversation never grows one document
  without bound. Unique on (bot, conversation_id, seq) and, where a message id exists, on
  (bot, conversation_id, message_id).

* ``reminders``: one document per (bot, conversation, reminder name), ``_id`` ``["bot",
  "conversation id", "name"]`` as JSON text (see ``complete`` for when it is written).

Every write is a single-document operation. Turn numbers are allocated by inserting the
turn itself under the unique (bot, conversation_id, seq) index: the conversation's
``next_seq`` is only a hint (advanced with each summary update, so it costs no extra write)
and a collision re-reads the highest stored seq. So turn ``n`` is never stored before turn
``n - 1`` exists and a reader of pending turns cannot overtake a message still being
enqueued (seqs handed out by an ``$inc`` counter before the insert would leave that window
open between two replicas).

Any database failure surfaces as :class:`bots.errors.StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError
from pymongo.uri_parser import parse_uri

from bots.errors import ConversationNotFound, StoreUnavailable
from bots.events import Event
from bots.pii import Privacy, PrivacyRules
from bots.store import base
from bots.store.analytics import Analytics, AnalyticsQuery, AnalyticsRow
from bots.store.analytics import build as build_analytics
from bots.store.base import Conversation, ConversationSummary, EnqueueResult, Page, SummaryUpdate, TranscriptQuery, Turn
from bots.store.text import prefix_end, query_words, turn_words

log = logging.getLogger("switchboard.store.mongo")

DEFAULT_DATABASE = "switchboard"
# Applied only when the URI does not set them: fail fast so channels get a 503 and retry.
_CLIENT_DEFAULTS: dict[str, Any] = {
    "serverSelectionTimeoutMS": 2000,
    "connectTimeoutMS": 2000,
    "socketTimeoutMS": 10000,
    "appname": "switchboard",
}
_SEQ_ATTEMPTS = 64  # enqueue/append collisions on seq before giving up (two replicas need a few)
_APPLIED_KEEP = 32  # seqs whose summary update is remembered, so re-applying is a no-op
_PENDING_SEEN_MAX = 10_000
_FLAGS = ("fallback", "handoff", "flagged", "reviewed")
_TEXT_CHUNK = 128  # conversations per lookup of a text search (see MongoStore._search_text)
_TEXT_VERIFY_MAX = 2048  # candidates whose turns are read rather than another word's range scanned


def _index(name: str, *fields: str, **options: Any) -> IndexModel:
    """``"-field"`` is descending."""
    keys = [(f.lstrip("-"), DESCENDING if f.startswith("-") else ASCENDING) for f in fields]
    return IndexModel(keys, name=name, **options)


_CONVERSATION_INDEXES = [
    _index("bot_conversation", "bot", "conversation_id", unique=True),
    # the review list across all bots, newest first (its default view): no in-memory sort of every conversation
    _index("activity", "-last_activity", "conversation_id"),
    _index("started", "-started_at", "conversation_id"),
    _index("oldest_first", "started_at", "conversation_id"),  # the review UI's bulk export of every bot, in order
    _index("bot_activity", "bot", "-last_activity"),
    _index("bot_started", "bot", "-started_at"),
    _index("bot_intent", "bot", "last_intent", "-last_activity"),
    _index("bot_confidence", "bot", "min_confidence"),
    _index("bot_sentiment", "bot", "min_sentiment"),
    _index("bot_frustration", "bot", "-frustration", "-last_activity"),
    _index("bot_fallback", "bot", "fallback", "-last_activity"),
    _index("bot_handoff", "bot", "handoff", "-last_activity"),
    _index("bot_review", "bot", "flagged", "reviewed", "-last_activity"),
    _index("bot_tags", "bot", "tags", "-last_activity"),
    _index("bot_waiting", "bot", "waiting_since"),  # the hand-off gauges (MongoStore.waiting)
    _index("waiting", "waiting_since", "conversation_id"),  # the review UI's queue of every bot, longest wait first
    _index("bot_csat", "bot", "csat"),  # the conversation list's "rated at most" filter
    _index("retention", "expire_at", expireAfterSeconds=0),
]
_TURN_INDEXES = [
    _index("turn_seq", "bot", "conversation_id", "seq", unique=True),
    _index("turn_message", "bot", "conversation_id", "message_id", unique=True,
           partialFilterExpression={"message_id": {"$type": "string"}}),
    # Lookups by message id: a query planner may only use the partial index above when the query
    # repeats its filter (SecantusDB never does), so redelivery checks get a plain index.
    _index("turn_message_lookup", "bot", "conversation_id", "message_id", "seq"),
    _index("turn_status", "bot", "conversation_id", "status", "seq"),
    # Transcript search (bots/store/text.py): multikey over each turn's distinct words. The word
    # leads, so one prefix range serves a search with or without a bot (the bot bounds it further).
    _index("turn_words", "words", "bot"),
    _index("retention", "expire_at", expireAfterSeconds=0),
]


_REMINDER_INDEXES = [
    _index("reminder_due", "status", "trigger_at"),  # every replica's poll: scheduled and due, earliest first
    _index("reminder_conversation", "bot", "conversation_id", "status"),  # a turn's cancels
    _index("retention", "expire_at", expireAfterSeconds=0),
]


def conversation_key(bot: str, conversation_id: str) -> str:
    """The ``_id`` of a conversation document: unambiguous for any conversation id."""
    return json.dumps([bot, conversation_id], ensure_ascii=False)


def _turn_text(events: Sequence[Event]) -> str:
    return "\n".join(str(e.data.get("text", "")) for e in events if e.data.get("text"))


def _lit(value: Any) -> dict[str, Any]:
    """A literal inside an update pipeline: a value starting with ``$`` is never a field path."""
    return {"$literal": value}


def _eq(value: Any) -> Any:
    """A query value matched literally: ``{"$gt": ""}`` is a value here, never an operator.

    Scalars are safe as they are (and keep the filter index-friendly); anything else is wrapped."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return {"$eq": value}


class MongoStore:
    name = "mongodb"

    def __init__(self, uri: str, *, database: str | None = None,
                 retention: Mapping[str, float] | None = None, **client_options: Any) -> None:
        parsed = parse_uri(uri)  # raises pymongo.errors.InvalidURI / ConfigurationError on a bad URI
        given = {k.lower() for k in parsed["options"]}
        self._options = {k: v for k, v in _CLIENT_DEFAULTS.items() if k.lower() not in given}
        self._options.update(client_options)
        self.uri = uri
        self.database = database or parsed.get("database") or DEFAULT_DATABASE
        self.retention = {bot: float(s) for bot, s in (retention or {}).items()}
        for bot, seconds in self.retention.items():
            if seconds <= 0:
                raise ValueError(f"retention for bot {bot!r} must be a positive number of seconds, got {seconds}")
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._indexed = False
        self._index_lock = asyncio.Lock()
        # Pending turns this process just read (the runtime completes them next), so complete()
        # skips re-reading them; if one was completed elsewhere meanwhile, the conditional
        # update below finds out and the summary guard keeps it from counting twice.
        self._pending_seen: dict[tuple[str, str, int], Turn] = {}
        self._privacy = PrivacyRules()

    # -- plumbing -------------------------------------------------------------------
    @property
    def _db(self) -> Any:
        if self._client is None:
            self._client = AsyncMongoClient(self.uri, **self._options)
        return self._client[self.database]

    @property
    def _convs(self) -> Any:
        return self._db["conversations"]

    @property
    def _turns(self) -> Any:
        return self._db["turns"]

    @property
    def _reminders(self) -> Any:
        return self._db["reminders"]

    @property
    def _canned(self) -> Any:
        return self._db["canned_replies"]

    async def _ensure_indexes(self) -> None:
        if self._indexed:
            return
        async with self._index_lock:
            if not self._indexed:
                await self._convs.create_indexes(_CONVERSATION_INDEXES)
                await self._turns.create_indexes(_TURN_INDEXES)
                await self._reminders.create_indexes(_REMINDER_INDEXES)
                self._indexed = True

    @contextlib.asynccontextmanager
    async def _guard(self, what: str) -> AsyncIterator[None]:
        """Indexes first (they make redelivery idempotent), and every driver error -> StoreUnavailable."""
        try:
            await self._ensure_indexes()
            yield
        except PyMongoError as exc:
            raise StoreUnavailable(f"MongoDB could not {what}: {exc}. The request can be retried later.") from exc

    def set_retention(self, bot: str, seconds: float | None) -> None:
        """Keep ``bot``'s conversations ``seconds`` (``None``: forever), e.g. when a bot is loaded.
        Applies to what is written from now on (``expire_at`` is set at write time)."""
        if seconds is None:
            self.retention.pop(bot, None)
            return
        if seconds <= 0:
            raise ValueError(f"retention for bot {bot!r} must be a positive number of seconds, got {seconds}")
        self.retention[bot] = float(seconds)

    def set_privacy(self, bot: str, privacy: Privacy | None) -> None:
        """Redact ``bot``'s events and pseudonymise its user ids before each write (``None``: off)."""
        self._privacy.set(bot, privacy)

    def _expire_at(self, bot: str, at: float) -> dict[str, dt.datetime]:
        ttl = self.retention.get(bot)
        if ttl is None:
            return {}
        return {"expire_at": dt.datetime.fromtimestamp(at + ttl, tz=dt.UTC)}

    async def start(self) -> None:
        try:
            await self._ensure_indexes()
        except PyMongoError as exc:
            log.warning("MongoDB not reachable at start; not ready until it answers", extra={"error": str(exc)})

    async def ping(self) -> bool:
        try:
            await self._db.command("ping")
            await self._ensure_indexes()
        except PyMongoError:
            return False
        return True

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            self._indexed = False
            self._pending_seen.clear()
            await client.close()

    async def purge_expired(self, now: float | None = None) -> int:
        """Delete what retention has expired (the TTL index does this on its own every minute)."""
        cutoff = dt.datetime.fromtimestamp(time.time() if now is None else now, tz=dt.UTC)
        async with self._guard("purge expired conversations"):
            turns = await self._turns.delete_many({"expire_at": {"$lt": cutoff}})
            convs = await self._convs.delete_many({"expire_at": {"$lt": cutoff}})
            reminders = await self._reminders.delete_many({"expire_at": {"$lt": cutoff}})
        return int(turns.deleted_count + convs.deleted_count + reminders.deleted_count)

    # -- turns ----------------------------------------------------------------------
    async def _find_message(self, bot: str, conversation_id: str, message_id: str) -> Turn | None:
        doc = await self._turns.find_one(
            {"bot": _eq(bot), "conversation_id": _eq(conversation_id), "message_id": _eq(message_id)})
        return None if doc is None else Turn.from_dict(doc)

    async def _insert_turn(self, draft: Turn, hint: int) -> EnqueueResult:
        """Insert ``draft`` at the first free seq from ``hint`` on; if its message id is stored already,
        that turn (``created=False``)."""
        seq = hint
        for _ in range(_SEQ_ATTEMPTS):
            turn = replace(draft, seq=seq)
            doc = {**turn.to_dict(), "text": _turn_text(turn.events), "words": turn_words(turn.events),
                   **self._expire_at(turn.bot, turn.completed_at or turn.created_at)}
            try:
                await self._turns.insert_one(doc)
            except DuplicateKeyError:
                if turn.message_id is not None:
                    stored = await self._find_message(turn.bot, turn.conversation_id, turn.message_id)
                    if stored is not None:
                        return EnqueueResult(stored, created=False)
                last = await self._turns.find_one(
                    {"bot": _eq(turn.bot), "conversation_id": _eq(turn.conversation_id)},
                    projection={"seq": 1}, sort=[("seq", DESCENDING)])
                seq = max(seq + 1, 1 if last is None else int(last["seq"]) + 1)
                continue
            return EnqueueResult(turn, created=True)
        raise StoreUnavailable(f"could not allocate a turn number in {draft.conversation_id!r}: too much contention")

    async def _upsert_conversation(self, key: str, update: dict[str, Any]) -> dict[str, Any]:
        """Create or touch the conversation document and return its ``next_seq``.

        Two replicas creating one conversation at once may collide: MongoDB answers one of them
        with a duplicate-key error (and SecantusDB 0.7 with no document at all); the document
        exists by then, so the update is simply tried again (``$setOnInsert``/``$max`` are idempotent).
        """
        for attempt in range(_SEQ_ATTEMPTS):
            try:
                conv = await self._convs.find_one_and_update(
                    {"_id": key}, update, upsert=True, projection={"next_seq": 1},
                    return_document=ReturnDocument.AFTER)
            except DuplicateKeyError:
                conv = None
            if conv is not None:
                return dict(conv)
            await asyncio.sleep(0.001 * attempt)
        raise StoreUnavailable(f"could not create conversation {key}: too much contention")

    async def enqueue(self, ref_bot: str, conversation_id: str, channel: str, user_id: str,
                      address: Mapping[str, str], message_id: str, user_event: Event, *,
                      customer_name: str | None = None, lease_owner: str | None = None,
                      lease_ttl_s: float = 0.0) -> EnqueueResult:
        key = conversation_key(ref_bot, conversation_id)
        now = user_event.timestamp
        user_id = self._privacy.user_id(ref_bot, user_id)
        user_event = self._privacy.event(ref_bot, user_event)
        name = None if customer_name is None else self._privacy.user_id(ref_bot, customer_name)
        async with self._guard("store the message"):
            # No lookup first: the unique (bot, conversation, message id) index turns a redelivery
            # into a duplicate-key error on insert, which then reads the stored turn.
            initial = ConversationSummary(ref_bot, conversation_id, channel, user_id, dict(address),
                                          started_at=now, last_activity=now).to_dict()
            del initial["last_activity"]
            update: dict[str, Any] = {
                "$setOnInsert": {**initial, "next_seq": 1, "lease_owner": None, "lease_expires": 0.0},
                "$max": {"last_activity": now, **self._expire_at(ref_bot, now)},
            }
            if name is not None:  # the customer's name with the same write
                del update["$setOnInsert"]["customer_name"]
                update["$set"] = {"customer_name": name}
            conv = await self._upsert_conversation(key, update)
            pending = Turn(ref_bot, conversation_id, 0, message_id, "pending", (user_event,), now)
            result = await self._insert_turn(pending, int(conv["next_seq"]))
            if not result.created or lease_owner is None:
                return result
            # its own round trip here (a conditional lease and the unconditional upsert are two updates)
            return replace(result, leased=await self._take_lease(ref_bot, conversation_id, lease_owner, lease_ttl_s))

    async def pending(self, bot: str, conversation_id: str) -> list[Turn]:
        async with self._guard("read pending messages"):
            cursor = self._turns.find(
                {"bot": _eq(bot), "conversation_id": _eq(conversation_id), "status": "pending"},
                sort=[("seq", ASCENDING)])
            turns = [Turn.from_dict(d) async for d in cursor]
        self._remember_pending(turns)
        return turns

    def _remember_pending(self, turns: Iterable[Turn]) -> None:
        """complete() follows for each pending turn read: it need not read the turn again."""
        for turn in turns:
            self._pending_seen[(turn.bot, turn.conversation_id, turn.seq)] = turn
        while len(self._pending_seen) > _PENDING_SEEN_MAX:
            self._pending_seen.pop(next(iter(self._pending_seen)))

    async def _apply_summary(self, bot: str, conversation_id: str, summary: SummaryUpdate, now: float | None,
                             count_turn: bool, seq: int | None) -> bool:
        """One pipeline update of the conversation document; with ``seq``, applied at most once."""
        key = conversation_key(bot, conversation_id)
        sets: dict[str, Any] = {}
        if now is not None:
            sets["last_activity"] = {"$max": ["$last_activity", _lit(now)]}
        if summary.last_intent is not None:
            sets["last_intent"] = _lit(summary.last_intent)
        if summary.confidence is not None:
            sets["min_confidence"] = {"$ifNull": [{"$min": ["$min_confidence", _lit(summary.confidence)]},
                                                  _lit(summary.confidence)]}
        if summary.sentiment is not None:
            sets["min_sentiment"] = {"$ifNull": [{"$min": ["$min_sentiment", _lit(summary.sentiment)]},
                                                 _lit(summary.sentiment)]}
        if summary.frustrated_turn:
            sets["frustration"] = {"$add": [{"$ifNull": ["$frustration", 0]}, 1]}
        for flag in _FLAGS:
            value = getattr(summary, flag)
            if value is not None:
                sets[flag] = _lit(bool(value))
        if summary.waiting_over:
            sets["waiting_since"] = _lit(None)
        elif summary.waiting_since is not None:
            sets["waiting_since"] = {"$ifNull": ["$waiting_since", _lit(float(summary.waiting_since))]}
        if summary.waiting_since is not None:  # the first hand-off, kept (analytics: time to first agent reply)
            sets["handoff_at"] = {"$ifNull": ["$handoff_at", _lit(float(summary.waiting_since))]}
        if summary.agent_replied and now is not None:
            sets["agent_reply_at"] = {"$ifNull": ["$agent_reply_at", _lit(now)]}
        if summary.csat is not None:  # rated once: a second rating changes nothing
            sets["csat"] = {"$ifNull": ["$csat", _lit(int(summary.csat))]}
        if summary.csat_asked:
            sets["csat_asked_at"] = {"$ifNull": ["$csat_asked_at", _lit(now if now is not None else time.time())]}
        if summary.add_tags or summary.remove_tags:
            kept = {"$filter": {"input": {"$ifNull": ["$tags", []]},
                                "cond": {"$not": [{"$in": ["$$this", _lit(list(summary.remove_tags))]}]}}}
            added = [t for i, t in enumerate(summary.add_tags) if t not in summary.add_tags[:i]]
            new = {"$filter": {"input": _lit(added), "cond": {"$not": [{"$in": ["$$this", kept]}]}}}
            sets["tags"] = {"$concatArrays": [kept, new]}
        if count_turn:
            sets["turns"] = {"$add": [{"$ifNull": ["$turns", 0]}, 1]}
        query: dict[str, Any] = {"_id": key}
        if seq is not None:
            query["applied"] = {"$ne": seq}
            sets["applied"] = {"$slice": [{"$concatArrays": [{"$ifNull": ["$applied", []]}, [_lit(seq)]]},
                                          -_APPLIED_KEEP]}
            sets["next_seq"] = {"$max": [{"$ifNull": ["$next_seq", 1]}, _lit(seq + 1)]}
        if not sets:
            return await self._convs.count_documents({"_id": key}, limit=1) == 1
        if now is not None:
            expire = self._expire_at(bot, now)
            if expire:
                sets["expire_at"] = {"$max": ["$expire_at", _lit(expire["expire_at"])]}
        result = await self._convs.update_one(query, [{"$set": sets}])
        return bool(result.matched_count)

    async def complete(self, bot: str, conversation_id: str, seq: int, events: Sequence[Event],
                       summary: SummaryUpdate, *, release_lease_of: str | None = None,
                       reminders: base.ReminderChanges | None = None) -> Turn:
        """The summary is updated first, at most once per seq, then the turn is marked done in one
        write (the commit point). An outage between the two leaves the turn pending: the channel's
        redelivery completes it, and the summary update is not applied twice. ``release_lease_of``'s
        lease is released only after the commit point: released before it (with the summary), another
        replica could take the lease, read the turn as still pending and answer it again (its custom
        actions run twice).

        Reminders set and cancelled by the turn are written before the commit point, idempotently (a
        cancel touches only earlier turns' reminders, a reminder never replaces one of a later turn), so
        a turn answered again after an outage writes them as its final answer says; the reminder the
        turn fired is marked after it (until then it is still due: ``due_reminders`` finds it, and its
        turn, done, is not answered again)."""
        now = time.time()
        events = self._privacy.events(bot, events)
        reminders = base.redacted_reminders(self._privacy, bot, reminders)
        where = {"bot": _eq(bot), "conversation_id": _eq(conversation_id), "seq": _eq(seq)}
        async with self._guard("store the reply"):
            turn = self._pending_seen.pop((bot, conversation_id, seq), None)
            if turn is None:
                doc = await self._turns.find_one(where)
                if doc is None:
                    raise ConversationNotFound(f"no turn {seq} in {conversation_id!r}")
                turn = Turn.from_dict(doc)
                if turn.status == "done":
                    if release_lease_of is not None:
                        await self._release(bot, conversation_id, release_lease_of)
                    return turn
            await self._apply_summary(bot, conversation_id, summary, now, count_turn=True, seq=seq)
            if reminders:
                await self._apply_reminders(bot, conversation_id, seq, reminders, now)
            all_events = (*turn.events, *events)
            result = await self._turns.update_one(
                {**where, "status": "pending"},
                {"$set": {"status": "done", "events": [e.to_dict() for e in all_events],
                          "text": _turn_text(all_events), "words": turn_words(all_events),
                          "completed_at": now, **self._expire_at(bot, now)}})
            if reminders and reminders.fired is not None:
                await self._mark_fired(bot, conversation_id, *reminders.fired, now)
            if release_lease_of is not None:  # after the commit point: whoever takes it next sees the turn done
                await self._release(bot, conversation_id, release_lease_of)
            if result.modified_count == 1:
                return Turn(bot, conversation_id, seq, turn.message_id, "done", all_events, turn.created_at, now)
            doc = await self._turns.find_one(where)  # completed by someone else meanwhile
            if doc is None:
                raise ConversationNotFound(f"no turn {seq} in {conversation_id!r}")
            return Turn.from_dict(doc)

    async def _apply_reminders(self, bot: str, conversation_id: str, seq: int, changes: base.ReminderChanges,
                               now: float) -> None:
        """``changes`` of the turn ``seq``, except ``fired`` (ReminderChanges' order); each write idempotent."""
        scheduled = {"bot": _eq(bot), "conversation_id": _eq(conversation_id), "status": "scheduled",
                     "seq": {"$lt": seq}}
        cancelled = {"$set": {"status": "cancelled", "updated_at": now}}
        if changes.kill_on_user_message:
            await self._reminders.update_many({**scheduled, "kill_on_user_message": True}, cancelled)
        for cancel in changes.cancel:
            where = dict(scheduled)
            if cancel.name is not None:
                where["name"] = _eq(cancel.name)
            else:
                if cancel.intent is not None:
                    where["intent"] = _eq(cancel.intent)
                if cancel.entities is not None:
                    where["entities_key"] = _eq(base.entities_key(cancel.entities))
            await self._reminders.update_many(where, cancelled)
        for r in changes.schedule:
            doc = {**r.to_dict(), "bot": bot, "conversation_id": conversation_id, "seq": seq, "status": "scheduled",
                   "entities_key": base.entities_key(r.entities), "updated_at": now,
                   **self._expire_at(bot, max(r.trigger_at, now))}
            try:  # replaces the reminder of its name, unless a later turn set that one (then: duplicate key)
                await self._reminders.update_one({"_id": json.dumps([bot, conversation_id, r.name], ensure_ascii=False),
                                                  "seq": {"$lte": seq}}, {"$set": doc}, upsert=True)
            except DuplicateKeyError:
                pass

    async def _mark_fired(self, bot: str, conversation_id: str, name: str, trigger_at: float, now: float) -> bool:
        result = await self._reminders.update_one(
            {"_id": json.dumps([bot, conversation_id, name], ensure_ascii=False), "status": "scheduled",
             "trigger_at": float(trigger_at)},
            {"$set": {"status": "fired", "updated_at": now, **self._expire_at(bot, max(float(trigger_at), now))}})
        return bool(result.modified_count)

    async def append(self, bot: str, conversation_id: str, events: Sequence[Event],
                     summary: SummaryUpdate) -> Turn:
        key = conversation_key(bot, conversation_id)
        now = time.time()
        events = self._privacy.events(bot, events)
        async with self._guard("store the events"):
            conv = await self._convs.find_one({"_id": key}, projection={"next_seq": 1})
            if conv is None:
                raise ConversationNotFound(f"no conversation {conversation_id!r} for bot {bot!r}")
            draft = Turn(bot, conversation_id, 0, None, "done", tuple(events), now, now)
            turn = (await self._insert_turn(draft, int(conv["next_seq"]))).turn
            await self._apply_summary(bot, conversation_id, summary, now, count_turn=False, seq=turn.seq)
            return turn

    async def get_turn(self, bot: str, conversation_id: str, message_id: str) -> Turn | None:
        async with self._guard("read the message"):
            return await self._find_message(bot, conversation_id, message_id)

    async def load(self, bot: str, conversation_id: str, *, last_n: int | None = None,
                   after_seq: int | None = None) -> Conversation | None:
        where: dict[str, Any] = {"bot": _eq(bot), "conversation_id": _eq(conversation_id)}

        async def turn_docs() -> list[Any]:
            if last_n is not None and last_n <= 0:  # (a limit of 0 would mean "no limit" to MongoDB)
                return []
            if after_seq is not None:
                cursor = self._turns.find({**where, "seq": {"$gt": int(after_seq)}}, sort=[("seq", ASCENDING)],
                                          limit=last_n or 0)
                return list(await cursor.to_list())
            if last_n is None:
                return list(await self._turns.find(where, sort=[("seq", ASCENDING)]).to_list())
            docs = await self._turns.find(where, sort=[("seq", DESCENDING)], limit=last_n).to_list()
            return list(reversed(docs))

        async with self._guard("load the conversation"):
            # both reads at once: one round trip of latency (a turn written in between is either
            # seen or not, as with two sequential reads)
            doc, docs = await asyncio.gather(self._convs.find_one({"_id": conversation_key(bot, conversation_id)}),
                                             turn_docs())
            if doc is None:
                return None
            turns = tuple(Turn.from_dict(d) for d in docs)
        self._remember_pending(t for t in turns if t.status == "pending")
        return Conversation(ConversationSummary.from_dict(doc), turns)

    async def summary(self, bot: str, conversation_id: str) -> ConversationSummary | None:
        async with self._guard("read the conversation"):
            doc = await self._convs.find_one({"_id": conversation_key(bot, conversation_id)})
        return None if doc is None else ConversationSummary.from_dict(doc)

    async def update_summary(self, bot: str, conversation_id: str, summary: SummaryUpdate) -> ConversationSummary:
        key = conversation_key(bot, conversation_id)
        async with self._guard("update the conversation"):
            if not await self._apply_summary(bot, conversation_id, summary, None, count_turn=False, seq=None):
                raise ConversationNotFound(f"no conversation {conversation_id!r} for bot {bot!r}")
            doc = await self._convs.find_one({"_id": key})
        if doc is None:
            raise ConversationNotFound(f"no conversation {conversation_id!r} for bot {bot!r}")
        return ConversationSummary.from_dict(doc)

    async def _text_matches(self, query: TranscriptQuery) -> list[str]:
        """Keys of the conversations matching ``query.text`` (semantics: bots/store/text.py).

        One lookup per query word, an index range on ``turn_words`` (``words`` leads, the bot
        follows), longest word first; the conversations found are intersected here, so a
        conversation matches with its words spread over several turns. Once few conversations
        are left, the remaining words are checked on those conversations' turns (read through
        ``turn_seq``) rather than by scanning the range of a common word ("order" is in every
        turn). Each lookup is a plain filter because SecantusDB only plans an index for filters
        without ``$and``/``$all``/``$regex`` (see docs/store.md)."""
        assert query.text
        wanted = query_words(query.text)
        found: set[tuple[str, str]] = set()
        for i, word in enumerate(wanted):
            if i and len(found) <= _TEXT_VERIFY_MAX:
                found = await self._having_words(found, wanted[i:])
                break
            match: dict[str, Any] = {"words": {"$gte": word, "$lt": prefix_end(word)}}
            if query.bot is not None:
                match["bot"] = _eq(query.bot)
            cursor = self._turns.find(match, projection={"_id": 0, "bot": 1, "conversation_id": 1})
            keys = {(d["bot"], d["conversation_id"]) async for d in cursor}
            found = keys if i == 0 else found & keys
            if not found:
                break
        return [conversation_key(bot, conversation_id) for bot, conversation_id in sorted(found)]

    async def _having_words(self, candidates: set[tuple[str, str]], wanted: Sequence[str]) -> set[tuple[str, str]]:
        """The candidate conversations in which every ``wanted`` word begins a word of some turn."""
        seen: dict[tuple[str, str], set[str]] = {}
        for bot in {b for b, _ in candidates}:
            ids = sorted(c for b, c in candidates if b == bot)
            for start in range(0, len(ids), _TEXT_CHUNK):
                cursor = self._turns.find({"bot": bot, "conversation_id": {"$in": ids[start:start + _TEXT_CHUNK]}},
                                          projection={"_id": 0, "conversation_id": 1, "words": 1})
                async for d in cursor:
                    seen.setdefault((bot, d["conversation_id"]), set()).update(d.get("words") or ())
        return {key for key, words in seen.items() if all(any(w.startswith(q) for w in words) for q in wanted)}

    async def _search_text(self, query: TranscriptQuery, where: dict[str, Any]) -> Page:
        """The conversations matching the text and ``where``, ordered and paged here.

        They are looked up ``_TEXT_CHUNK`` keys at a time, ``_id`` first (SecantusDB then uses
        ``_id`` point lookups): SecantusDB matches ``$in`` element by element on every candidate,
        so one ``$in`` of n keys costs n * n (1.7 s for 1,000 conversations at 100,000)."""
        keys = await self._text_matches(query)
        found: list[dict[str, Any]] = []
        for start in range(0, len(keys), _TEXT_CHUNK):
            cursor = self._convs.find({"_id": {"$in": keys[start:start + _TEXT_CHUNK]}, **where},
                                      projection={query.sort: 1, "conversation_id": 1})
            found += [d async for d in cursor]
        # MongoDB's order: by the sort field (a missing one/null first), then conversation id ascending
        found.sort(key=lambda d: d["conversation_id"])
        found.sort(key=lambda d: (0, 0.0) if d.get(query.sort) is None else (1, d[query.sort]),
                   reverse=query.descending)
        page = [d["_id"] for d in found[max(query.offset, 0):max(query.offset, 0) + max(query.limit, 0)]]
        docs = {d["_id"]: d async for d in self._convs.find({"_id": {"$in": page}})} if page else {}
        items = tuple(ConversationSummary.from_dict(docs[k]) for k in page if k in docs)
        return Page(items, len(found), query.offset, query.limit)

    async def search(self, query: TranscriptQuery) -> Page:
        if query.sort not in base.SORT_FIELDS:
            raise ValueError(f"cannot sort by {query.sort!r}; use one of {', '.join(base.SORT_FIELDS)}")
        where: dict[str, Any] = {}
        for field_name, attr in (("bot", "bot"), ("channel", "channel"), ("last_intent", "intent"), ("tags", "tag")):
            value = getattr(query, attr)
            if value is not None:
                where[field_name] = _eq(value)
        if query.since is not None:
            where.setdefault("last_activity", {})["$gte"] = float(query.since)
        if query.until is not None:
            where["started_at"] = {"$lt": float(query.until)}
        if query.confidence_below is not None:
            where["min_confidence"] = {"$lt": float(query.confidence_below)}
        for flag in _FLAGS:
            value = getattr(query, flag)
            if value is not None:
                where[flag] = _eq(bool(value))
        if query.frustrated is not None:  # (conversations stored before sentiment have no count: none)
            where["frustration"] = {"$gt": 0} if query.frustrated else {"$in": [0, None]}
        if query.sentiment_below is not None:
            where["min_sentiment"] = {"$lt": float(query.sentiment_below)}
        if query.waiting is not None:  # set: a number (null and missing are not)
            where["waiting_since"] = {"$gt": 0.0} if query.waiting else None
        if query.csat_at_most is not None:
            where["csat"] = {"$lte": int(query.csat_at_most)}
        if query.customer:  # literally (escaped), case-insensitive; a ``pii:`` bot's pseudonym by the whole name
            pseudonym = self._privacy.user_id(query.bot, query.customer) if query.bot else query.customer
            where["$or"] = [{"customer_name": {"$regex": re.escape(query.customer), "$options": "i"}},
                            {"customer_name": _eq(pseudonym)}]
        async with self._guard("search conversations"):
            if query.text:
                return await self._search_text(query, where)
            # no filter: the collection's size from its metadata, not a pass over every document
            total = await (self._convs.count_documents(where) if where else self._convs.estimated_document_count())
            order = DESCENDING if query.descending else ASCENDING
            cursor = self._convs.find(where, sort=[(query.sort, order), ("conversation_id", ASCENDING)],
                                      skip=max(query.offset, 0), limit=max(query.limit, 0))
            items = tuple([ConversationSummary.from_dict(d) async for d in cursor]) if query.limit > 0 else ()
        return Page(items, total, query.offset, query.limit)

    async def assign(self, bot: str, conversation_id: str, agent: str | None, *,
                     expected: str | None) -> tuple[bool, ConversationSummary]:
        key = conversation_key(bot, conversation_id)
        async with self._guard("assign the conversation"):
            # one conditional update by _id (null also matches a document written before assignees existed)
            result = await self._convs.update_one({"_id": key, "assignee": _eq(expected)},
                                                  {"$set": {"assignee": agent}})
            doc = await self._convs.find_one({"_id": key})
        if doc is None:
            raise ConversationNotFound(f"no conversation {conversation_id!r} for bot {bot!r}")
        return bool(result.modified_count or result.matched_count), ConversationSummary.from_dict(doc)

    async def analytics(self, query: AnalyticsQuery) -> Analytics:
        where: dict[str, Any] = {}
        if query.bot is not None:
            where["bot"] = _eq(query.bot)
        if query.channel is not None:
            where["channel"] = _eq(query.channel)
        if query.since is not None:
            where.setdefault("started_at", {})["$gte"] = float(query.since)
        if query.until is not None:
            where.setdefault("started_at", {})["$lt"] = float(query.until)
        day = {"$dateToString": {"format": "%Y-%m-%d", "date": {"$toDate": {"$multiply": ["$started_at", 1000]}}}}
        key = {"day": day, "bot": "$bot", "channel": "$channel"}
        replied = {"$gt": ["$agent_reply_at", None]}  # a number (null and missing sort lower)
        human = {"$or": [{"$gt": ["$handoff_at", None]}, {"$eq": ["$handoff", True]}, replied]}

        def one_if(cond: Any) -> dict[str, Any]:
            return {"$sum": {"$cond": [cond, 1, 0]}}

        async with self._guard("compute the analytics"):
            rows = [AnalyticsRow(d["_id"]["day"], d["_id"]["bot"], d["_id"]["channel"], d["n"], d["human"],
                                 d["fallback"], d["replied"]) async for d in await self._convs.aggregate([
                                     {"$match": where},
                                     {"$group": {"_id": key, "n": {"$sum": 1}, "human": one_if(human),
                                                 "fallback": one_if({"$eq": ["$fallback", True]}),
                                                 "replied": one_if(replied)}}])]
            reply_where = {**where, "agent_reply_at": {"$gt": 0.0}, "handoff_at": {"$gt": 0.0}}
            replies = [(d["day"], d["bot"], d["channel"], d["seconds"]) async for d in await self._convs.aggregate([
                {"$match": reply_where},
                {"$project": {"_id": 0, "day": day, "bot": 1, "channel": 1,
                              "seconds": {"$subtract": ["$agent_reply_at", "$handoff_at"]}}},
                {"$match": {"seconds": {"$gte": 0}}}])]
            intents = [(d["_id"], d["n"]) async for d in await self._convs.aggregate([
                {"$match": {**where, "last_intent": {"$type": "string"}}},
                {"$group": {"_id": "$last_intent", "n": {"$sum": 1}}}])]
            ratings = [(d["day"], d["bot"], d["channel"], int(d["csat"])) async for d in await self._convs.aggregate([
                {"$match": {**where, "csat": {"$gte": 1}}},
                {"$project": {"_id": 0, "day": day, "bot": 1, "channel": 1, "csat": 1}}])]
        return build_analytics(rows, replies, intents, ratings)

    async def waiting(self, bot: str, *, until: float | None = None) -> base.Waiting:
        since: dict[str, float] = {"$gt": 0.0}  # set: a number (null and missing are not)
        if until is not None:
            since["$lte"] = float(until)
        where = {"bot": _eq(bot), "waiting_since": since}
        async with self._guard("count the customers waiting for an agent"):
            count = await self._convs.count_documents(where)
            first = await self._convs.find_one(where, projection={"waiting_since": 1},
                                               sort=[("waiting_since", ASCENDING)]) if count else None
        return base.Waiting(int(count), None if first is None else float(first["waiting_since"]))

    async def set_customer_name(self, bot: str, conversation_id: str, name: str) -> bool:
        stored = self._privacy.user_id(bot, name)
        async with self._guard("store the customer's name"):
            result = await self._convs.update_one({"_id": conversation_key(bot, conversation_id),
                                                   "customer_name": {"$ne": stored}},
                                                  {"$set": {"customer_name": stored}})
        return bool(result.modified_count)

    async def agent_typing(self, bot: str, conversation_id: str, until: float) -> None:
        async with self._guard("note the agent typing"):
            result = await self._convs.update_one({"_id": conversation_key(bot, conversation_id)},
                                                  {"$set": {"agent_typing_until": float(until)}})
        if not result.matched_count:
            raise ConversationNotFound(f"no conversation {conversation_id!r} for bot {bot!r}")

    # -- canned replies ---------------------------------------------------------------
    async def canned_replies(self, bots: Collection[str]) -> list[base.CannedReply]:
        wanted = sorted({str(b) for b in bots})
        if not wanted:
            return []
        async with self._guard("read the canned replies"):
            docs = [d async for d in self._canned.find({"bot": {"$in": wanted}})]
        return sorted((base.CannedReply.from_dict(d) for d in docs), key=lambda r: (r.name, r.bot))

    async def save_canned_reply(self, reply: base.CannedReply) -> None:
        async with self._guard("save the canned reply"):
            await self._canned.replace_one({"_id": json.dumps([reply.bot, reply.name], ensure_ascii=False)},
                                           reply.to_dict(), upsert=True)

    async def delete_canned_reply(self, bot: str, name: str) -> bool:
        async with self._guard("delete the canned reply"):
            result = await self._canned.delete_one({"_id": json.dumps([bot, name], ensure_ascii=False)})
        return bool(result.deleted_count)

    # -- reminders ------------------------------------------------------------------
    async def due_reminders(self, now: float, limit: int, bots: Collection[str] | None = None) -> list[base.Reminder]:
        if limit <= 0 or (bots is not None and not bots):  # (a limit of 0 would mean "no limit" to MongoDB)
            return []
        where: dict[str, Any] = {"status": "scheduled", "trigger_at": {"$lte": float(now)}}
        if bots is not None:
            where["bot"] = {"$in": [str(b) for b in bots]}
        async with self._guard("read the reminders due"):
            cursor = self._reminders.find(where, sort=[("trigger_at", ASCENDING)], limit=limit)
            return [base.Reminder.from_dict(d) async for d in cursor]

    async def reminder(self, bot: str, conversation_id: str, name: str) -> base.Reminder | None:
        async with self._guard("read the reminder"):
            doc = await self._reminders.find_one({"_id": json.dumps([bot, conversation_id, name], ensure_ascii=False)})
        return None if doc is None else base.Reminder.from_dict(doc)

    async def mark_reminder_fired(self, bot: str, conversation_id: str, name: str, trigger_at: float) -> bool:
        async with self._guard("mark the reminder fired"):
            return await self._mark_fired(bot, conversation_id, name, trigger_at, time.time())

    # -- leases ---------------------------------------------------------------------
    async def acquire_lease(self, bot: str, conversation_id: str, owner: str, ttl_s: float) -> bool:
        async with self._guard("take the conversation lease"):
            return await self._take_lease(bot, conversation_id, owner, ttl_s)

    async def _take_lease(self, bot: str, conversation_id: str, owner: str, ttl_s: float) -> bool:
        now = time.time()
        holder = {"$ifNull": ["$lease_owner", None]}
        free = {"$or": [{"$eq": [holder, None]}, {"$eq": [holder, _lit(owner)]},
                        {"$lt": [{"$ifNull": ["$lease_expires", 0.0]}, _lit(now)]}]}
        # one atomic update by _id: take the lease if free, else leave it as it is
        doc = await self._convs.find_one_and_update(
            {"_id": conversation_key(bot, conversation_id)},
            [{"$set": {"lease_owner": {"$cond": [free, _lit(owner), holder]},
                       "lease_expires": {"$cond": [free, _lit(now + ttl_s), "$lease_expires"]}}}],
            projection={"lease_owner": 1, "lease_expires": 1}, return_document=ReturnDocument.AFTER)
        return doc is not None and doc.get("lease_owner") == owner and doc.get("lease_expires") == now + ttl_s

    async def renew_lease(self, bot: str, conversation_id: str, owner: str, ttl_s: float) -> bool:
        expires = time.time() + ttl_s
        async with self._guard("renew the conversation lease"):
            result = await self._convs.update_one(
                {"_id": conversation_key(bot, conversation_id), "lease_owner": _eq(owner)},
                {"$set": {"lease_expires": expires}})
        return result.matched_count == 1

    async def release_lease(self, bot: str, conversation_id: str, owner: str) -> None:
        async with self._guard("release the conversation lease"):
            await self._release(bot, conversation_id, owner)

    async def _release(self, bot: str, conversation_id: str, owner: str) -> None:
        await self._convs.update_one(
            {"_id": conversation_key(bot, conversation_id), "lease_owner": _eq(owner)},
            {"$set": {"lease_owner": None, "lease_expires": 0.0}})
