"""The embedded conversation store: one SQLite file in the data dir, no server.

Writes run in a worker thread (SQLite is blocking) behind one asyncio lock; every write is
one ``BEGIN IMMEDIATE`` transaction, so several processes may share the file too.

Retention: with ``retention={bot: seconds}`` a background task (started by ``start``) calls
``purge_expired`` every ``purge_interval_s``: a turn goes ``seconds`` after it was completed
(or created, while pending), a conversation ``seconds`` after its last activity.

A full disk or an I/O error makes every operation raise ``StoreUnavailable`` (bots/sqlite_file.py):
channels answer 503 with Retry-After, and ``ping`` (readiness) is false until a write succeeds
again; while writes fail, ``ping`` tries one itself (a row that takes a page of its own, deleted in
the same transaction), so the server turns ready again on its own once space returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from bots.errors import ConversationNotFound, StoreUnavailable
from bots.events import Event
from bots.pii import Privacy, PrivacyRules
from bots.sqlite_file import SQLiteFile
from bots.store import base
from bots.store.analytics import Analytics, AnalyticsQuery, AnalyticsRow
from bots.store.analytics import build as build_analytics
from bots.store.base import Conversation, ConversationSummary, EnqueueResult, Page, SummaryUpdate, TranscriptQuery, Turn
from bots.store.text import prefix_end, query_words, turn_words

T = TypeVar("T")

log = logging.getLogger("switchboard.store.sqlite")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    bot TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    user_id TEXT NOT NULL DEFAULT '',
    address TEXT NOT NULL DEFAULT '{}',
    started_at REAL NOT NULL,
    last_activity REAL NOT NULL,
    last_intent TEXT,
    min_confidence REAL,
    turns INTEGER NOT NULL DEFAULT 0,
    fallback INTEGER NOT NULL DEFAULT 0,
    handoff INTEGER NOT NULL DEFAULT 0,
    flagged INTEGER NOT NULL DEFAULT 0,
    reviewed INTEGER NOT NULL DEFAULT 0,
    tags TEXT NOT NULL DEFAULT '[]',
    waiting_since REAL,
    next_seq INTEGER NOT NULL DEFAULT 1,
    lease_owner TEXT,
    lease_expires REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (bot, conversation_id)
);
CREATE INDEX IF NOT EXISTS conv_activity ON conversations (bot, last_activity);
CREATE INDEX IF NOT EXISTS conv_intent ON conversations (bot, last_intent, last_activity);
CREATE INDEX IF NOT EXISTS conv_conf ON conversations (bot, min_confidence);
CREATE INDEX IF NOT EXISTS conv_fallback ON conversations (bot, fallback, last_activity);
CREATE INDEX IF NOT EXISTS conv_handoff ON conversations (bot, handoff, last_activity);
CREATE INDEX IF NOT EXISTS conv_flagged ON conversations (bot, flagged, reviewed, last_activity);
CREATE INDEX IF NOT EXISTS conv_channel ON conversations (bot, channel, last_activity);
CREATE TABLE IF NOT EXISTS turns (
    bot TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    message_id TEXT,
    status TEXT NOT NULL,
    events TEXT NOT NULL,
    text TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    completed_at REAL,
    PRIMARY KEY (bot, conversation_id, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS turn_message ON turns (bot, conversation_id, message_id)
    WHERE message_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS turn_pending ON turns (status, bot, conversation_id, seq);
-- transcript search (bots/store/text.py): each conversation's distinct words, once however many of its turns have
-- them (a word new to the conversation is the only row a turn writes); a query word is a range on `word`
CREATE TABLE IF NOT EXISTS conversation_words (
    word TEXT NOT NULL,
    bot TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    PRIMARY KEY (word, bot, conversation_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS conversation_words_conv ON conversation_words (bot, conversation_id);
-- reminders (rasa-sdk ReminderScheduled), written by complete() with the turn that set them
CREATE TABLE IF NOT EXISTS reminders (
    bot TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    name TEXT NOT NULL,
    intent TEXT NOT NULL,
    entities TEXT NOT NULL DEFAULT 'null',
    trigger_at REAL NOT NULL,
    kill_on_user_message INTEGER NOT NULL DEFAULT 1,
    channel TEXT NOT NULL DEFAULT '',
    address TEXT NOT NULL DEFAULT '{}',
    seq INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'scheduled',
    updated_at REAL NOT NULL,
    PRIMARY KEY (bot, conversation_id, name)
);
CREATE INDEX IF NOT EXISTS reminder_due ON reminders (status, trigger_at);
CREATE INDEX IF NOT EXISTS reminder_conversation ON reminders (bot, conversation_id, status);
-- the review UI's canned replies (bot '' = team-wide)
CREATE TABLE IF NOT EXISTS canned_replies (
    bot TEXT NOT NULL,
    name TEXT NOT NULL,
    text TEXT NOT NULL,
    updated_by TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL,
    PRIMARY KEY (bot, name)
);
-- readiness while writes fail (ping): a row written and deleted again; always empty
CREATE TABLE IF NOT EXISTS write_probe (id INTEGER PRIMARY KEY, pad BLOB NOT NULL);
"""

_SUMMARY_COLUMNS = (
    "bot, conversation_id, channel, user_id, address, started_at, last_activity, last_intent, "
    "min_confidence, turns, fallback, handoff, flagged, reviewed, tags, waiting_since, min_sentiment, frustration, "
    "assignee, csat, agent_typing_until, customer_name, csat_asked_at"
)
# Columns newer than the first files (added by _upgrade to every file, old or new), then their indexes.
_ADDED_COLUMNS = {"waiting_since": "REAL", "min_sentiment": "REAL", "frustration": "INTEGER NOT NULL DEFAULT 0",
                  "assignee": "TEXT", "csat": "INTEGER", "agent_typing_until": "REAL", "handoff_at": "REAL",
                  "agent_reply_at": "REAL", "customer_name": "TEXT",
                  "csat_asked_at": "REAL"}
_ADDED_INDEXES = (
    "CREATE INDEX IF NOT EXISTS conv_waiting ON conversations (bot, waiting_since) WHERE waiting_since IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS conv_sentiment ON conversations (bot, min_sentiment)",
    "CREATE INDEX IF NOT EXISTS conv_frustration ON conversations (bot, frustration, last_activity)",
    "CREATE INDEX IF NOT EXISTS conv_csat ON conversations (bot, csat) WHERE csat IS NOT NULL",
    # the bulk export walks every bot's conversations oldest first (connectors/review/exports.py)
    "CREATE INDEX IF NOT EXISTS conv_started ON conversations (started_at, conversation_id)",
    # the analytics page's one grouped read (bots/store/analytics.py): covers every column it reads
    "CREATE INDEX IF NOT EXISTS conv_analytics ON conversations (bot, started_at, channel, last_intent, fallback,"
    " handoff, handoff_at, agent_reply_at)",
)


def _upgrade(conn: sqlite3.Connection) -> None:
    """Files written before customers' waits and sentiment were kept get the ``_ADDED_COLUMNS``, and files
    whose search words were kept per turn (``turn_words``) get them moved to ``conversation_words`` (in one
    write transaction, so two processes opening such a file do not both do it), then the added indexes."""
    def missing() -> list[str]:
        have = {row["name"] for row in conn.execute("PRAGMA table_info(conversations)")}
        return [c for c in _ADDED_COLUMNS if c not in have]

    def per_turn_words() -> bool:
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='turn_words'").fetchone()
        return found is not None

    if missing() or per_turn_words():
        conn.execute("BEGIN IMMEDIATE")
        try:
            for column in missing():
                conn.execute(f"ALTER TABLE conversations ADD COLUMN {column} {_ADDED_COLUMNS[column]}")
            if per_turn_words():  # a file from before conversation_words: the same words, once per conversation
                conn.execute("INSERT OR IGNORE INTO conversation_words (word, bot, conversation_id)"
                             " SELECT word, bot, conversation_id FROM turn_words")
                conn.execute("DROP TRIGGER IF EXISTS turn_words_purge")
                conn.execute("DROP TABLE turn_words")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    for index in _ADDED_INDEXES:
        conn.execute(index)


def _summary_from_row(row: sqlite3.Row) -> ConversationSummary:
    d = dict(row)
    d["address"] = json.loads(d["address"])
    d["tags"] = json.loads(d["tags"])
    return ConversationSummary.from_dict(d)


def _turn_from_row(row: sqlite3.Row) -> Turn:
    d = dict(row)
    d["events"] = json.loads(d["events"])
    return Turn.from_dict(d)


def _turn_text(events: Sequence[Event]) -> str:
    return "\n".join(str(e.data.get("text", "")) for e in events if e.data.get("text"))


def _reminder_from_row(row: sqlite3.Row) -> base.Reminder:
    d = dict(row)
    d["entities"] = json.loads(d["entities"])
    d["address"] = json.loads(d["address"])
    return base.Reminder.from_dict(d)


def _apply_reminders(conn: sqlite3.Connection, bot: str, conversation_id: str, seq: int,
                     changes: base.ReminderChanges, now: float) -> None:
    """``changes`` of the turn ``seq`` (ReminderChanges' order), in the caller's write transaction."""
    scheduled = "bot=? AND conversation_id=? AND status='scheduled' AND seq < ?"
    if changes.kill_on_user_message:
        conn.execute(f"UPDATE reminders SET status='cancelled', updated_at=? WHERE {scheduled}"  # noqa: S608
                     " AND kill_on_user_message=1", (now, bot, conversation_id, seq))
    for cancel in changes.cancel:
        where, args = scheduled, [bot, conversation_id, seq]
        if cancel.name is not None:
            where, args = where + " AND name=?", [*args, cancel.name]
        else:
            if cancel.intent is not None:
                where, args = where + " AND intent=?", [*args, cancel.intent]
            if cancel.entities is not None:
                where, args = where + " AND entities=?", [*args, base.entities_key(cancel.entities)]
        conn.execute(f"UPDATE reminders SET status='cancelled', updated_at=? WHERE {where}",  # noqa: S608
                     (now, *args))
    for r in changes.schedule:  # replaces the reminder of its name, unless a later turn set that one
        conn.execute(
            "INSERT INTO reminders (bot, conversation_id, name, intent, entities, trigger_at, kill_on_user_message,"
            " channel, address, seq, status, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,'scheduled',?)"
            " ON CONFLICT (bot, conversation_id, name) DO UPDATE SET intent=excluded.intent,"
            " entities=excluded.entities, trigger_at=excluded.trigger_at,"
            " kill_on_user_message=excluded.kill_on_user_message, channel=excluded.channel,"
            " address=excluded.address, seq=excluded.seq, status='scheduled', updated_at=excluded.updated_at"
            " WHERE excluded.seq >= reminders.seq",
            (bot, conversation_id, r.name, r.intent, base.entities_key(r.entities), r.trigger_at,
             int(r.kill_on_user_message), r.channel, json.dumps(dict(r.address)), seq, now))
    if changes.fired is not None:
        _mark_fired(conn, bot, conversation_id, *changes.fired, now)


def _mark_fired(conn: sqlite3.Connection, bot: str, conversation_id: str, name: str, trigger_at: float,
                now: float) -> bool:
    return conn.execute(
        "UPDATE reminders SET status='fired', updated_at=? WHERE bot=? AND conversation_id=? AND name=?"
        " AND trigger_at=? AND status='scheduled'", (now, bot, conversation_id, name, trigger_at)).rowcount == 1


def _index_words(conn: sqlite3.Connection, bot: str, conversation_id: str, events: Sequence[Event],
                 *, indexed: int = 0) -> None:
    """Add the turn's searchable words to its conversation's (in the caller's write transaction; a word the
    conversation has already is not written again). ``indexed``: the first events' words are there already
    (the customer's message, stored pending), so only the words after theirs are given."""
    found = turn_words(events)
    if indexed:
        found = found[len(turn_words(events[:indexed])):]
    if found:
        conn.execute("INSERT OR IGNORE INTO conversation_words (word, bot, conversation_id)"
                     " SELECT value, ?, ? FROM json_each(?)", (bot, conversation_id, json.dumps(found)))


def _reindex_words(conn: sqlite3.Connection, bot: str, conversation_id: str) -> None:
    """The conversation's words again from the turns it has left (after retention deleted some of them: a
    word only they had must stop finding it)."""
    conn.execute("DELETE FROM conversation_words WHERE bot=? AND conversation_id=?", (bot, conversation_id))
    for (events,) in conn.execute("SELECT events FROM turns WHERE bot=? AND conversation_id=? ORDER BY seq",
                                  (bot, conversation_id)).fetchall():
        _index_words(conn, bot, conversation_id, [Event.from_dict(e) for e in json.loads(events)])


class SQLiteStore:
    name = "sqlite"

    def __init__(self, path: Path, *, retention: Mapping[str, float] | None = None,
                 purge_interval_s: float = 3600.0) -> None:
        self.path = path
        self.retention = {bot: float(s) for bot, s in (retention or {}).items()}
        for bot, seconds in self.retention.items():
            if seconds <= 0:
                raise ValueError(f"retention for bot {bot!r} must be a positive number of seconds, got {seconds}")
        self.purge_interval_s = purge_interval_s
        self._db = SQLiteFile(path, _SCHEMA, pragmas=("journal_mode=WAL", "synchronous=NORMAL"), upgrade=_upgrade)
        self._purger: asyncio.Task[None] | None = None
        self._started = False
        self._privacy = PrivacyRules()

    # -- plumbing -------------------------------------------------------------------
    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, inline: bool = False) -> T:
        return await self._db.run(fn, inline=inline)

    async def _write(self, fn: Callable[[sqlite3.Connection], T], *, inline: bool = False) -> T:
        """``inline``: one of a message's small indexed operations (bots/sqlite_file.py)."""
        return await self._db.write(fn, inline=inline)

    async def start(self) -> None:
        try:
            await self._run(lambda conn: None)
        except StoreUnavailable as exc:  # e.g. a new file on a full disk: not ready (ping) until it can be written
            log.error("the conversation store cannot be opened yet", extra={"error": str(exc)})
        self._started = True
        self._start_purger()

    def _start_purger(self) -> None:
        if self.retention and self._started and self._purger is None:
            self._purger = asyncio.create_task(self._purge_periodically())

    def set_retention(self, bot: str, seconds: float | None) -> None:
        """Keep ``bot``'s conversations ``seconds`` (``None``: forever), e.g. when a bot is loaded."""
        if seconds is None:
            self.retention.pop(bot, None)
            return
        if seconds <= 0:
            raise ValueError(f"retention for bot {bot!r} must be a positive number of seconds, got {seconds}")
        self.retention[bot] = float(seconds)
        self._start_purger()

    def set_privacy(self, bot: str, privacy: Privacy | None) -> None:
        """Redact ``bot``'s events and pseudonymise its user ids before each write (``None``: off)."""
        self._privacy.set(bot, privacy)

    async def _purge_periodically(self) -> None:
        while True:
            try:
                purged = await self.purge_expired()
            except (sqlite3.Error, StoreUnavailable) as exc:
                log.warning("purging expired conversations failed", extra={"error": str(exc)})
            else:
                if purged:
                    log.info("purged expired conversation records", extra={"records": purged})
            await asyncio.sleep(self.purge_interval_s)

    async def purge_expired(self, now: float | None = None) -> int:
        """Delete the turns and conversations that retention has expired; returns how many records."""
        when = time.time() if now is None else now

        def tx(conn: sqlite3.Connection) -> int:
            purged = 0
            for bot, ttl in self.retention.items():
                cutoff = when - ttl
                expired = ("bot=? AND (COALESCE(completed_at, created_at) < ? OR conversation_id IN"
                           " (SELECT conversation_id FROM conversations WHERE bot=? AND last_activity < ?))")
                touched = [r[0] for r in conn.execute(
                    f"SELECT DISTINCT conversation_id FROM turns WHERE {expired}",  # noqa: S608 - ours
                    (bot, cutoff, bot, cutoff)).fetchall()]
                purged += conn.execute(f"DELETE FROM turns WHERE {expired}",  # noqa: S608 - ours
                                       (bot, cutoff, bot, cutoff)).rowcount
                purged += conn.execute(
                    "DELETE FROM conversations WHERE bot=? AND last_activity < ?", (bot, cutoff)
                ).rowcount
                for conversation_id in touched:  # a conversation gone has no turn left: its words go
                    _reindex_words(conn, bot, conversation_id)
                purged += conn.execute(
                    "DELETE FROM reminders WHERE bot=? AND MAX(trigger_at, updated_at) < ?", (bot, cutoff)
                ).rowcount
            return purged

        return await self._write(tx)

    async def ping(self) -> bool:
        """Readable, and writable: after a write failed (disk full, I/O error), true only once a write
        succeeds again, which this tries itself (no traffic reaches a server that is not ready)."""
        try:
            if self._db.failure is None:
                await self._run(lambda conn: conn.execute("SELECT 1").fetchone())
            else:
                await self._write(_probe_write)
        except (sqlite3.Error, StoreUnavailable):
            return False
        return True

    async def aclose(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
            self._purger = None
        self._started = False
        await self._db.close()

    # -- turns ----------------------------------------------------------------------
    async def enqueue(self, ref_bot: str, conversation_id: str, channel: str, user_id: str,
                      address: Mapping[str, str], message_id: str, user_event: Event, *,
                      customer_name: str | None = None, lease_owner: str | None = None,
                      lease_ttl_s: float = 0.0) -> EnqueueResult:
        user_id = self._privacy.user_id(ref_bot, user_id)
        user_event = self._privacy.event(ref_bot, user_event)
        name = None if customer_name is None else self._privacy.user_id(ref_bot, customer_name)

        def tx(conn: sqlite3.Connection) -> EnqueueResult:
            row = conn.execute(
                "SELECT * FROM turns WHERE bot=? AND conversation_id=? AND message_id=?",
                (ref_bot, conversation_id, message_id),
            ).fetchone()
            if row is not None:
                return EnqueueResult(_turn_from_row(row), created=False)
            now = user_event.timestamp
            conn.execute(
                "INSERT INTO conversations (bot, conversation_id, channel, user_id, address, started_at,"
                " last_activity) VALUES (?,?,?,?,?,?,?) ON CONFLICT (bot, conversation_id) DO NOTHING",
                (ref_bot, conversation_id, channel, user_id, json.dumps(dict(address)), now, now),
            )
            seq = conn.execute(  # the customer's name (if given) with the same write
                "UPDATE conversations SET next_seq = next_seq + 1, last_activity = MAX(last_activity, ?),"
                " customer_name = COALESCE(?, customer_name) WHERE bot=? AND conversation_id=? RETURNING next_seq - 1",
                (now, name, ref_bot, conversation_id),
            ).fetchone()[0]
            turn = Turn(ref_bot, conversation_id, seq, message_id, "pending", (user_event,), now)
            conn.execute(
                "INSERT INTO turns (bot, conversation_id, seq, message_id, status, events, text, created_at)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (ref_bot, conversation_id, seq, message_id, "pending",
                 json.dumps([user_event.to_dict()]), _turn_text([user_event]), now),
            )
            _index_words(conn, ref_bot, conversation_id, [user_event])
            leased = lease_owner is not None and _take_lease(conn, ref_bot, conversation_id, lease_owner, lease_ttl_s)
            return EnqueueResult(turn, created=True, leased=leased)

        return await self._write(tx, inline=True)

    async def pending(self, bot: str, conversation_id: str) -> list[Turn]:
        rows = await self._run(inline=True, fn=lambda conn: conn.execute(
            "SELECT * FROM turns WHERE status='pending' AND bot=? AND conversation_id=? ORDER BY seq",
            (bot, conversation_id),
        ).fetchall())
        return [_turn_from_row(r) for r in rows]

    @staticmethod
    def _apply_summary(conn: sqlite3.Connection, bot: str, conversation_id: str,
                       summary: SummaryUpdate, now: float, count_turn: bool) -> None:
        row = conn.execute(
            "SELECT tags, min_confidence, waiting_since, min_sentiment, handoff_at, agent_reply_at, csat, csat_asked_at"
            " FROM conversations WHERE bot=? AND"
            " conversation_id=?",
            (bot, conversation_id),
        ).fetchone()
        if row is None:
            raise ConversationNotFound(f"no conversation {conversation_id!r} for bot {bot!r}")
        tags = [t for t in json.loads(row["tags"]) if t not in summary.remove_tags]
        tags += [t for t in summary.add_tags if t not in tags]
        sets: dict[str, Any] = {"tags": json.dumps(tags), "last_activity": now}
        if summary.last_intent is not None:
            sets["last_intent"] = summary.last_intent
        if summary.confidence is not None:
            current = row["min_confidence"]
            sets["min_confidence"] = summary.confidence if current is None else min(current, summary.confidence)
        if summary.sentiment is not None and (row["min_sentiment"] is None or summary.sentiment < row["min_sentiment"]):
            sets["min_sentiment"] = summary.sentiment
        for flag in ("fallback", "handoff", "flagged", "reviewed"):
            value = getattr(summary, flag)
            if value is not None:
                sets[flag] = int(value)
        if summary.waiting_over:
            sets["waiting_since"] = None
        elif summary.waiting_since is not None and row["waiting_since"] is None:
            sets["waiting_since"] = summary.waiting_since
        if summary.waiting_since is not None and row["handoff_at"] is None:
            sets["handoff_at"] = summary.waiting_since
        if summary.agent_replied and row["agent_reply_at"] is None:
            sets["agent_reply_at"] = now
        if summary.csat is not None and row["csat"] is None:  # rated once: a second rating changes nothing
            sets["csat"] = int(summary.csat)
        if summary.csat_asked and row["csat_asked_at"] is None:
            sets["csat_asked_at"] = now
        assignments = ", ".join(f"{k}=?" for k in sets)
        if count_turn:
            assignments += ", turns = turns + 1"
        if summary.frustrated_turn:
            assignments += ", frustration = frustration + 1"
        conn.execute(
            f"UPDATE conversations SET {assignments} WHERE bot=? AND conversation_id=?",  # noqa: S608 - keys are ours
            (*sets.values(), bot, conversation_id),
        )

    async def complete(self, bot: str, conversation_id: str, seq: int, events: Sequence[Event],
                       summary: SummaryUpdate, *, release_lease_of: str | None = None,
                       reminders: base.ReminderChanges | None = None) -> Turn:
        now = time.time()
        events = self._privacy.events(bot, events)
        reminders = base.redacted_reminders(self._privacy, bot, reminders)

        def tx(conn: sqlite3.Connection) -> Turn:
            if release_lease_of is not None:
                _release(conn, bot, conversation_id, release_lease_of)
            row = conn.execute(
                "SELECT * FROM turns WHERE bot=? AND conversation_id=? AND seq=?", (bot, conversation_id, seq)
            ).fetchone()
            if row is None:
                raise ConversationNotFound(f"no turn {seq} in {conversation_id!r}")
            turn = _turn_from_row(row)
            if turn.status == "done":
                return turn
            all_events = (*turn.events, *events)
            conn.execute(
                "UPDATE turns SET status='done', events=?, text=?, completed_at=?"
                " WHERE bot=? AND conversation_id=? AND seq=?",
                (json.dumps([e.to_dict() for e in all_events]), _turn_text(all_events), now,
                 bot, conversation_id, seq),
            )
            _index_words(conn, bot, conversation_id, all_events, indexed=len(turn.events))
            self._apply_summary(conn, bot, conversation_id, summary, now, count_turn=True)
            if reminders:
                _apply_reminders(conn, bot, conversation_id, seq, reminders, now)
            return Turn(bot, conversation_id, seq, turn.message_id, "done", all_events, turn.created_at, now)

        return await self._write(tx, inline=True)

    async def append(self, bot: str, conversation_id: str, events: Sequence[Event],
                     summary: SummaryUpdate) -> Turn:
        now = time.time()
        events = self._privacy.events(bot, events)

        def tx(conn: sqlite3.Connection) -> Turn:
            row = conn.execute(
                "UPDATE conversations SET next_seq = next_seq + 1 WHERE bot=? AND conversation_id=?"
                " RETURNING next_seq - 1",
                (bot, conversation_id),
            ).fetchone()
            if row is None:
                raise ConversationNotFound(f"no conversation {conversation_id!r} for bot {bot!r}")
            seq = row[0]
            conn.execute(
                "INSERT INTO turns (bot, conversation_id, seq, message_id, status, events, text, created_at,"
                " completed_at) VALUES (?,?,?,NULL,'done',?,?,?,?)",
                (bot, conversation_id, seq, json.dumps([e.to_dict() for e in events]), _turn_text(events),
                 now, now),
            )
            _index_words(conn, bot, conversation_id, events)
            self._apply_summary(conn, bot, conversation_id, summary, now, count_turn=False)
            return Turn(bot, conversation_id, seq, None, "done", tuple(events), now, now)

        return await self._write(tx)

    async def get_turn(self, bot: str, conversation_id: str, message_id: str) -> Turn | None:
        row = await self._run(inline=True, fn=lambda conn: conn.execute(
            "SELECT * FROM turns WHERE bot=? AND conversation_id=? AND message_id=?",
            (bot, conversation_id, message_id),
        ).fetchone())
        return None if row is None else _turn_from_row(row)

    async def load(self, bot: str, conversation_id: str, *, last_n: int | None = None,
                   after_seq: int | None = None) -> Conversation | None:
        def read(conn: sqlite3.Connection) -> Conversation | None:
            srow = conn.execute(
                f"SELECT {_SUMMARY_COLUMNS} FROM conversations WHERE bot=? AND conversation_id=?",  # noqa: S608
                (bot, conversation_id),
            ).fetchone()
            if srow is None:
                return None
            if after_seq is not None:
                rows = conn.execute(
                    "SELECT * FROM turns WHERE bot=? AND conversation_id=? AND seq > ? ORDER BY seq LIMIT ?",
                    (bot, conversation_id, after_seq, -1 if last_n is None else max(last_n, 0)),
                ).fetchall()
            elif last_n is None:
                rows = conn.execute(
                    "SELECT * FROM turns WHERE bot=? AND conversation_id=? ORDER BY seq", (bot, conversation_id)
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT * FROM (SELECT * FROM turns WHERE bot=? AND conversation_id=? ORDER BY seq DESC"
                    " LIMIT ?) ORDER BY seq",
                    (bot, conversation_id, last_n),
                ).fetchall()
            return Conversation(_summary_from_row(srow), tuple(_turn_from_row(r) for r in rows))

        # the runtime's reads (a window, or the turns after one) are small; a whole transcript is not
        return await self._run(read, inline=last_n is not None)

    async def summary(self, bot: str, conversation_id: str) -> ConversationSummary | None:
        # inline: a primary-key read, made for each message of a conversation waiting for a person (its queue place)
        row = await self._run(inline=True, fn=lambda conn: conn.execute(
            f"SELECT {_SUMMARY_COLUMNS} FROM conversations WHERE bot=? AND conversation_id=?",  # noqa: S608
            (bot, conversation_id),
        ).fetchone())
        return None if row is None else _summary_from_row(row)

    async def update_summary(self, bot: str, conversation_id: str, summary: SummaryUpdate) -> ConversationSummary:
        def tx(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT last_activity FROM conversations WHERE bot=? AND conversation_id=?", (bot, conversation_id)
            ).fetchone()
            if row is None:
                raise ConversationNotFound(f"no conversation {conversation_id!r} for bot {bot!r}")
            self._apply_summary(conn, bot, conversation_id, summary, row["last_activity"], count_turn=False)

        await self._write(tx)
        result = await self.summary(bot, conversation_id)
        assert result is not None
        return result

    async def search(self, query: TranscriptQuery) -> Page:
        where: list[str] = []
        args: list[Any] = []

        def add(clause: str, *values: Any) -> None:
            where.append(clause)
            args.extend(values)

        if query.bot is not None:
            add("bot = ?", query.bot)
        if query.channel is not None:
            add("channel = ?", query.channel)
        if query.since is not None:
            add("last_activity >= ?", query.since)
        if query.until is not None:
            add("started_at < ?", query.until)
        if query.intent is not None:
            add("last_intent = ?", query.intent)
        if query.confidence_below is not None:
            add("min_confidence < ?", query.confidence_below)
        for flag in ("fallback", "handoff", "flagged", "reviewed"):
            value = getattr(query, flag)
            if value is not None:
                add(f"{flag} = ?", int(value))
        if query.frustrated is not None:
            add("frustration > 0" if query.frustrated else "frustration = 0")
        if query.sentiment_below is not None:
            add("min_sentiment < ?", query.sentiment_below)
        if query.waiting is not None:
            add("waiting_since IS NOT NULL" if query.waiting else "waiting_since IS NULL")
        if query.csat_at_most is not None:
            add("csat <= ?", int(query.csat_at_most))
        if query.customer:  # literally: % and _ in the query match themselves
            escaped = query.customer.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            # a ``pii:`` bot keeps the name's pseudonym: the whole name given finds it
            add("(customer_name LIKE ? ESCAPE '\\' OR customer_name = ?)", f"%{escaped}%",
                self._privacy.user_id(query.bot, query.customer) if query.bot else query.customer)
        if query.tag is not None:
            add("EXISTS (SELECT 1 FROM json_each(conversations.tags) WHERE json_each.value = ?)", query.tag)
        if query.text:  # every query word starts a word of some turn (bots/store/text.py)
            wanted = query_words(query.text)
            if not wanted:
                add("0")
            for i, word in enumerate(wanted):
                if i == 0:  # the longest word: a range on the primary key (no bot here, or the planner walks
                    # conversation_words_conv by bot) ...
                    add("(bot, conversation_id) IN (SELECT bot, conversation_id FROM conversation_words"
                        " WHERE word >= ? AND word < ?)", word, prefix_end(word))
                else:  # ... then each other word in the words of the conversations it found
                    add("EXISTS (SELECT 1 FROM conversation_words w WHERE w.bot = conversations.bot AND"
                        " w.conversation_id = conversations.conversation_id AND w.word >= ? AND w.word < ?)",
                        word, prefix_end(word))
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        order = f"{query.sort} {'DESC' if query.descending else 'ASC'}, conversation_id"

        def read(conn: sqlite3.Connection) -> Page:
            total = conn.execute(f"SELECT COUNT(*) FROM conversations {clause}", args).fetchone()[0]  # noqa: S608
            rows = conn.execute(
                f"SELECT {_SUMMARY_COLUMNS} FROM conversations {clause} ORDER BY {order} LIMIT ? OFFSET ?",  # noqa: S608
                (*args, query.limit, query.offset),
            ).fetchall()
            return Page(tuple(_summary_from_row(r) for r in rows), total, query.offset, query.limit)

        return await self._run(read)

    async def assign(self, bot: str, conversation_id: str, agent: str | None, *,
                     expected: str | None) -> tuple[bool, ConversationSummary]:
        def tx(conn: sqlite3.Connection) -> bool:
            changed = conn.execute("UPDATE conversations SET assignee=? WHERE bot=? AND conversation_id=?"
                                   " AND assignee IS ?", (agent, bot, conversation_id, expected)).rowcount
            return bool(changed)

        won = await self._write(tx)
        result = await self.summary(bot, conversation_id)
        if result is None:
            raise ConversationNotFound(f"no conversation {conversation_id!r} for bot {bot!r}")
        return won, result

    async def analytics(self, query: AnalyticsQuery) -> Analytics:
        clauses, params = ["1=1"], []
        for clause, value in (("bot = ?", query.bot), ("channel = ?", query.channel), ("started_at >= ?", query.since),
                              ("started_at < ?", query.until)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        where = " AND ".join(clauses)
        day = "strftime('%Y-%m-%d', started_at, 'unixepoch')"

        def read(conn: sqlite3.Connection) -> Analytics:
            rows = [AnalyticsRow(*r) for r in conn.execute(
                f"SELECT {day}, bot, channel, COUNT(*), SUM(handoff_at IS NOT NULL OR handoff = 1 OR agent_reply_at"  # noqa: S608
                f" IS NOT NULL), SUM(fallback), SUM(agent_reply_at IS NOT NULL) FROM conversations WHERE {where}"
                " GROUP BY 1, 2, 3", params)]
            replies = conn.execute(
                f"SELECT {day}, bot, channel, agent_reply_at - handoff_at FROM conversations WHERE {where}"  # noqa: S608
                " AND agent_reply_at >= handoff_at", params).fetchall()
            intents = conn.execute(
                f"SELECT last_intent, COUNT(*) FROM conversations WHERE {where} AND last_intent IS NOT NULL"  # noqa: S608
                " GROUP BY 1", params).fetchall()
            ratings = conn.execute(  # the rated few, through their partial index (conv_csat)
                f"SELECT {day}, bot, channel, csat FROM conversations INDEXED BY conv_csat WHERE {where}"  # noqa: S608
                " AND csat IS NOT NULL", params).fetchall()
            return build_analytics(rows, replies, intents, ratings)

        return await self._run(read)

    async def waiting(self, bot: str, *, until: float | None = None) -> base.Waiting:
        # inline: a count over the partial index conv_waiting (only the waiting conversations), made with summary
        row = await self._run(inline=True, fn=lambda conn: conn.execute(
            "SELECT COUNT(*), MIN(waiting_since) FROM conversations WHERE bot=? AND waiting_since IS NOT NULL"
            " AND waiting_since <= ?", (bot, float("inf") if until is None else until),
        ).fetchone())
        return base.Waiting(int(row[0]), None if row[1] is None else float(row[1]))

    async def set_customer_name(self, bot: str, conversation_id: str, name: str) -> bool:
        stored = self._privacy.user_id(bot, name)
        return bool(await self._write(inline=True, fn=lambda conn: conn.execute(
            "UPDATE conversations SET customer_name=? WHERE bot=? AND conversation_id=? AND customer_name IS NOT ?",
            (stored, bot, conversation_id, stored)).rowcount))

    async def agent_typing(self, bot: str, conversation_id: str, until: float) -> None:
        changed = await self._write(lambda conn: conn.execute(
            "UPDATE conversations SET agent_typing_until=? WHERE bot=? AND conversation_id=?",
            (until, bot, conversation_id)).rowcount)
        if not changed:
            raise ConversationNotFound(f"no conversation {conversation_id!r} for bot {bot!r}")

    # -- canned replies ---------------------------------------------------------------
    async def canned_replies(self, bots: Collection[str]) -> list[base.CannedReply]:
        wanted = sorted(set(bots))
        marks = ",".join("?" * len(wanted))
        rows = await self._run(lambda conn: conn.execute(
            f"SELECT bot, name, text, updated_by, updated_at FROM canned_replies WHERE bot IN ({marks})"  # noqa: S608
            " ORDER BY name, bot", wanted).fetchall()) if wanted else []
        return [base.CannedReply.from_dict(dict(r)) for r in rows]

    async def save_canned_reply(self, reply: base.CannedReply) -> None:
        await self._write(lambda conn: conn.execute(
            "INSERT INTO canned_replies (bot, name, text, updated_by, updated_at) VALUES (?,?,?,?,?)"
            " ON CONFLICT (bot, name) DO UPDATE SET text=excluded.text, updated_by=excluded.updated_by,"
            " updated_at=excluded.updated_at", (reply.bot, reply.name, reply.text, reply.updated_by,
                                                reply.updated_at)))

    async def delete_canned_reply(self, bot: str, name: str) -> bool:
        return bool(await self._write(lambda conn: conn.execute(
            "DELETE FROM canned_replies WHERE bot=? AND name=?", (bot, name)).rowcount))

    # -- reminders ------------------------------------------------------------------
    async def due_reminders(self, now: float, limit: int, bots: Collection[str] | None = None) -> list[base.Reminder]:
        if bots is not None and not bots:
            return []
        served = "" if bots is None else f" AND bot IN ({','.join('?' * len(bots))})"
        rows = await self._run(inline=True, fn=lambda conn: conn.execute(
            f"SELECT * FROM reminders WHERE status='scheduled' AND trigger_at <= ?{served}"  # noqa: S608
            " ORDER BY trigger_at LIMIT ?", (now, *(bots or ()), max(limit, 0)),
        ).fetchall())
        return [_reminder_from_row(r) for r in rows]

    async def reminder(self, bot: str, conversation_id: str, name: str) -> base.Reminder | None:
        row = await self._run(inline=True, fn=lambda conn: conn.execute(
            "SELECT * FROM reminders WHERE bot=? AND conversation_id=? AND name=?", (bot, conversation_id, name),
        ).fetchone())
        return None if row is None else _reminder_from_row(row)

    async def mark_reminder_fired(self, bot: str, conversation_id: str, name: str, trigger_at: float) -> bool:
        now = time.time()
        return await self._write(inline=True, fn=lambda conn: _mark_fired(conn, bot, conversation_id, name,
                                                                          trigger_at, now))

    # -- leases ---------------------------------------------------------------------
    async def acquire_lease(self, bot: str, conversation_id: str, owner: str, ttl_s: float) -> bool:
        return await self._write(lambda conn: _take_lease(conn, bot, conversation_id, owner, ttl_s), inline=True)

    async def renew_lease(self, bot: str, conversation_id: str, owner: str, ttl_s: float) -> bool:
        expires = time.time() + ttl_s
        return await self._write(inline=True, fn=lambda conn: conn.execute(
            "UPDATE conversations SET lease_expires=? WHERE bot=? AND conversation_id=? AND lease_owner=?",
            (expires, bot, conversation_id, owner),
        ).rowcount == 1)

    async def release_lease(self, bot: str, conversation_id: str, owner: str) -> None:
        await self._write(lambda conn: _release(conn, bot, conversation_id, owner), inline=True)


def _take_lease(conn: sqlite3.Connection, bot: str, conversation_id: str, owner: str, ttl_s: float) -> bool:
    """Take the lease if free or expired (or already ``owner``'s), in the caller's write transaction."""
    now = time.time()
    return conn.execute(
        "UPDATE conversations SET lease_owner=?, lease_expires=? WHERE bot=? AND conversation_id=?"
        " AND (lease_owner IS NULL OR lease_owner=? OR lease_expires < ?)",
        (owner, now + ttl_s, bot, conversation_id, owner, now),
    ).rowcount == 1


def _release(conn: sqlite3.Connection, bot: str, conversation_id: str, owner: str) -> None:
    conn.execute(
        "UPDATE conversations SET lease_owner=NULL, lease_expires=0 WHERE bot=? AND conversation_id=?"
        " AND lease_owner=?",
        (bot, conversation_id, owner),
    )


def _probe_write(conn: sqlite3.Connection) -> None:
    """A write that needs a free page, as storing a message may: a row larger than a page (overflow
    pages), deleted in the same transaction (its pages stay free for the next messages)."""
    conn.execute("INSERT INTO write_probe (pad) VALUES (zeroblob(8192))")
    conn.execute("DELETE FROM write_probe")
