"""Ordering and exactly-once: one conversation's messages are answered one at a time, in arrival (seq)
order, by whichever replica holds its lease; a redelivered message id is answered from the store."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bots.events import NLU, USER, Event
from bots.runtime import Runtime
from bots.store.base import SummaryUpdate, Turn
from bots.store.sqlite import SQLiteStore
from tests.bots.keyword_model import KeywordModel, copy_bot, message, start_runtime


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[tuple[Runtime, Runtime]]:
    """Two runtimes (two 'server processes') sharing one SQLite store file, nothing else."""
    bot_dir = copy_bot(tmp_path)
    a = await start_runtime(bot_dir, tmp_path / "shared.db")
    b = await start_runtime(bot_dir, tmp_path / "shared.db")
    yield a, b
    await a.aclose()
    await b.aclose()


def _assert_answered_in_order_once(turns: tuple[Turn, ...], expected: int) -> None:
    user_turns = [t for t in turns if t.message_id is not None]
    assert len(user_turns) == expected
    assert [t.seq for t in user_turns] == list(range(1, expected + 1))
    assert all(t.status == "done" for t in user_turns)
    for t in user_turns:
        kinds = [e.kind for e in t.events]
        assert kinds.count(USER) == 1 and kinds.count(NLU) == 1, kinds  # processed exactly once
    completed = [t.completed_at or 0.0 for t in user_turns]
    assert completed == sorted(completed), "a later message was answered before an earlier one"


CYCLE = (
    ("I want to change my order", "Which order would you like to change? Please give me the order number."),
    ("12345", "How many items of order 12345 should it be?"),
    ("3", "What else would you like to change in order 12345?"),
    ("gift wrap", "Thanks! I've passed the change to order 12345 (3 items, gift wrap) to our team."),
    ("hello", "Hello! How can I help you today?"),
)


async def test_concurrent_messages_to_one_conversation_stay_ordered(replicas: tuple[Runtime, Runtime]) -> None:
    """A form conversation whose every answer depends on the messages before it, processed concurrently
    by two replicas: right only if each message is answered once, in arrival order."""
    a, b = replicas
    n = 40
    msgs = [message(CYCLE[i % len(CYCLE)][0], message_id=f"m{i}") for i in range(n)]
    # Arrival order decides the seq; the answering then runs concurrently on both replicas.
    turns = [await (a if i % 2 else b).accept(msgs[i]) for i in range(n)]
    results = await asyncio.gather(*((a if i % 3 else b).process(msgs[i], turns[i]) for i in range(n)))
    assert [[r.text for r in res] for res in results] == [[CYCLE[i % len(CYCLE)][1]] for i in range(n)]
    loaded = await a.store.load("shop", "c1")
    assert loaded is not None
    _assert_answered_in_order_once(loaded.turns, n)


async def test_many_concurrent_handle_calls_on_two_replicas(replicas: tuple[Runtime, Runtime]) -> None:
    a, b = replicas
    n = 30
    texts = ["hello" if i % 2 else "good morning" for i in range(n)]
    results = await asyncio.gather(*((a, b)[i % 2].handle(message(texts[i], "c2", message_id=f"x{i}"))
                                     for i in range(n)))
    assert all([r.text for r in res] == ["Hello! How can I help you today?"] for res in results)
    loaded = await b.store.load("shop", "c2")
    assert loaded is not None
    _assert_answered_in_order_once(loaded.turns, n)
    # Each text was understood once, by one replica or the other.
    models = [rt.bots["shop"].model for rt in (a, b)]
    assert isinstance(models[0], KeywordModel) and isinstance(models[1], KeywordModel)
    assert len(models[0].calls) + len(models[1].calls) == n


async def test_a_duplicate_message_id_is_answered_once(replicas: tuple[Runtime, Runtime]) -> None:
    a, b = replicas
    first = await a.handle(message("where is my order 12345", "c3", message_id="dup"))
    assert [r.text for r in first] == ["Order 12345 is shipped."]
    # Redelivered, to either replica, also concurrently: the stored answer, nothing processed again.
    again = await asyncio.gather(*(rt.handle(message("where is my order 12345", "c3", message_id="dup"))
                                   for rt in (a, b, a, b)))
    assert all([r.text for r in res] == ["Order 12345 is shipped."] for res in again)
    loaded = await a.store.load("shop", "c3")
    assert loaded is not None and len(loaded.turns) == 1
    labels = {"bot": "shop", "channel": "web"}
    assert sum(rt.metrics.registry.get_sample_value("switchboard_duplicate_messages_total", labels) or 0
               for rt in (a, b)) == 4


async def test_concurrent_first_deliveries_of_one_message_id_are_processed_once(
        replicas: tuple[Runtime, Runtime]) -> None:
    a, b = replicas
    results = await asyncio.gather(*(rt.handle(message("change my order", "c4", message_id="same"))
                                     for rt in (a, b, a, b, a)))
    assert all([r.text for r in res] == ["Which order would you like to change? Please give me the order number."]
               for res in results)
    loaded = await a.store.load("shop", "c4")
    assert loaded is not None and len(loaded.turns) == 1
    assert [e.kind for e in loaded.turns[0].events].count("form") == 1


def _allocate_seq(db: Path, conversation: str) -> int:
    """What another replica's two-step enqueue (MongoDB: counter, then insert) leaves in between."""
    with sqlite3.connect(db) as conn:
        return int(conn.execute("UPDATE conversations SET next_seq = next_seq + 1 WHERE bot='shop' AND "
                                "conversation_id=? RETURNING next_seq - 1", (conversation,)).fetchone()[0])


def _store_turn(db: Path, conversation: str, seq: int, text: str, message_id: str) -> None:
    event = Event(USER, {"text": text, "message_id": message_id, "channel": "web"})
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO turns (bot, conversation_id, seq, message_id, status, events, text, created_at)"
                     " VALUES ('shop',?,?,?,'pending',?,?,?)",
                     (conversation, seq, message_id, json.dumps([event.to_dict()]), text, time.time()))


async def test_a_turn_waits_for_the_earlier_seq_another_replica_is_still_writing(tmp_path: Path) -> None:
    db = tmp_path / "gap.db"
    rt = await start_runtime(copy_bot(tmp_path), db, gap_wait_s=5.0)
    try:
        await rt.handle(message("hello", "g1", message_id="g0"))
        k = _allocate_seq(db, "g1")  # seq k allocated, its turn not stored yet
        later = asyncio.create_task(rt.handle(message("12345", "g1", message_id="g2")))
        await asyncio.sleep(0.3)
        assert not later.done(), "seq k+1 was answered while seq k was still being written"
        _store_turn(db, "g1", k, "I want to change my order", "g1")
        # k opens the form, so k+1 ("12345") answers the form's question: only right in seq order.
        assert [r.text for r in await asyncio.wait_for(later, 5)] == ["How many items of order 12345 should it be?"]
        loaded = await rt.store.load("shop", "g1")
        assert loaded is not None
        _assert_answered_in_order_once(loaded.turns, 3)
    finally:
        await rt.aclose()


async def test_an_abandoned_seq_delays_the_next_turn_only_boundedly(tmp_path: Path) -> None:
    db = tmp_path / "gap.db"
    rt = await start_runtime(copy_bot(tmp_path), db, gap_wait_s=1.5)
    try:
        await rt.handle(message("hello", "g2", message_id="a0"))
        _allocate_seq(db, "g2")  # the writer died: this seq never arrives
        started = time.monotonic()
        assert [r.text for r in await rt.handle(message("hi", "g2", message_id="a2"))] == [
            "Hello! How can I help you today?"]
        assert 1.5 <= time.monotonic() - started < 6
        # Once a later turn is done, the old gap no longer holds anything up (a wait would take 1.5 s;
        # the margin is for a loaded CI machine).
        started = time.monotonic()
        await rt.handle(message("hi", "g2", message_id="a3"))
        assert time.monotonic() - started < 1.2
    finally:
        await rt.aclose()


_REPLICA = """
import asyncio, json, random, sys
from pathlib import Path
from tests.bots.keyword_model import message, start_runtime

async def main(bot_dir, db, name, texts):
    rt = await start_runtime(Path(bot_dir), Path(db))
    rng = random.Random(name)
    (Path(db).parent / f"ready-{name}").touch()
    while not (Path(db).parent / "go").exists():  # both replicas start sending at the same moment
        await asyncio.sleep(0.01)

    async def one(i, text):
        await asyncio.sleep(rng.random() * 0.05)
        responses = await rt.handle(message(text, "mp", message_id=f"{name}-{i}"))
        return f"{name}-{i}", [r.text for r in responses]

    results = await asyncio.gather(*(one(i, t) for i, t in enumerate(texts)))
    calls = len(rt.bots["shop"].model.calls)  # messages this process understood (= processed)
    await rt.aclose()
    print(json.dumps({"answers": dict(results), "processed": calls}))

asyncio.run(main(*sys.argv[1:4], json.loads(sys.argv[4])))
"""


async def test_two_server_processes_sharing_one_store_answer_like_one_sequential_bot(tmp_path: Path) -> None:
    """Two OS processes answer one conversation at once; the stored conversation must be exactly what a
    single bot answering the same messages one by one, in the stored (arrival) order, would have said."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    bot_dir, db = copy_bot(tmp_path), tmp_path / "shared.db"
    texts = [CYCLE[i % len(CYCLE)][0] for i in range(15)]
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, "-c", _REPLICA, str(bot_dir), str(db), name, json.dumps(texts),
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in ("a", "b")]
    deadline = time.monotonic() + 90
    while not all((tmp_path / f"ready-{n}").exists() for n in ("a", "b")) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    (tmp_path / "go").touch()
    outputs = [await asyncio.wait_for(p.communicate(), 120) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err.decode()[-2000:]
    answered: dict[str, list[str]] = {}
    processed = 0
    for out, _ in outputs:
        report = json.loads(out.decode().strip().splitlines()[-1])
        answered.update(report["answers"])
        processed += report["processed"]
    assert processed == 30, f"{processed} messages processed for 30 sent"
    reference = await start_runtime(bot_dir, tmp_path / "reference.db")
    try:
        stored = await reference.store.load("shop", "mp")
        assert stored is None
        shared = SQLiteStore(db)
        loaded = await shared.load("shop", "mp")
        await shared.aclose()
        assert loaded is not None
        _assert_answered_in_order_once(loaded.turns, 30)
        senders = "".join(str(t.message_id)[0] for t in loaded.turns)
        assert "ab" in senders and "ba" in senders, f"the replicas did not interleave: {senders}"
        for turn in loaded.turns:
            user = turn.user_event
            assert user is not None and turn.message_id is not None
            expected = [r.text for r in await reference.handle(message(str(user.data["text"]), "ref"))]
            said = [str(e.data["text"]) for e in turn.events if e.kind == "bot"]
            assert said == expected == answered[turn.message_id], (turn.seq, user.data["text"])
    finally:
        await reference.aclose()


class _CountingLoads:
    """Records the turns each ``store.load`` call returned (to see what a replica reads back)."""

    def __init__(self, runtime: Runtime) -> None:
        self.calls: list[tuple[int | None, int]] = []  # (after_seq, turns returned)
        load = runtime.store.load

        async def counting(bot: str, conversation_id: str, **kwargs: int | None) -> object:
            found = await load(bot, conversation_id, **kwargs)  # type: ignore[arg-type]
            self.calls.append((kwargs.get("after_seq"), len(found.turns) if found else 0))
            return found

        runtime.store.load = counting  # type: ignore[method-assignment]


async def test_a_known_conversation_reads_only_its_new_turns_and_sees_the_other_replicas(
        replicas: tuple[Runtime, Runtime]) -> None:
    """The dialogue state a replica keeps between messages is brought up to date with the turns
    stored since, including those another replica answered: the form goes on with its slots."""
    a, b = replicas
    loads = _CountingLoads(a)
    for i, (text, expected) in enumerate(CYCLE[:4]):
        replica = a if i % 2 == 0 else b
        answer = await replica.handle(message(text, "k1", message_id=f"k{i}"))
        assert [r.text for r in answer] == [expected]
    # a answered turns 1 and 3; for turn 3 it read only turns 2 (b's) and 3, not the whole conversation
    assert loads.calls == [(None, 1), (1, 2)], loads.calls
    for i in range(4, 8):  # a alone: one new turn read per message
        await a.handle(message("hello", "k1", message_id=f"k{i}"))
    assert loads.calls[2:] == [(3, 2), (5, 1), (6, 1), (7, 1)], loads.calls  # (b answered turn 4)


async def test_a_known_conversation_sees_an_agents_takeover_and_a_restarted_conversation(
        replicas: tuple[Runtime, Runtime]) -> None:
    a, _ = replicas
    assert [r.text for r in await a.handle(message("hello", "k2", message_id="t1"))] == [
        "Hello! How can I help you today?"]
    await a.store.append("shop", "k2", [Event("pause", {"by": "ana"})], SummaryUpdate(handoff=True))
    assert await a.handle(message("hello?", "k2", message_id="t2")) == []  # a human has it: the bot is silent
    # Retention purges the conversation; it starts again at seq 1 and is answered from scratch.
    a.store.set_retention("shop", 1.0)
    assert await a.store.purge_expired(now=time.time() + 10) >= 1
    assert await a.store.load("shop", "k2") is None
    a.store.set_retention("shop", None)
    again = await a.handle(message("hello", "k2", message_id="t3"))
    assert [r.text for r in again] == ["Hello! How can I help you today?"]


async def test_the_state_cache_is_bounded_by_conversations_and_by_events(tmp_path: Path) -> None:
    runtime = await start_runtime(copy_bot(tmp_path), tmp_path / "db.sqlite", state_cache=2)
    loads = _CountingLoads(runtime)
    try:
        for conversation in ("a", "b", "c"):  # three conversations, room for two
            await runtime.handle(message("hello", conversation, message_id="m1"))
        for conversation in ("a", "c"):
            await runtime.handle(message("hello", conversation, message_id="m2"))
        # a was evicted (least recently used): rebuilt from its last turns; c was kept
        assert loads.calls[3:] == [(None, 2), (1, 1)], loads.calls
        # a conversation longer than the event budget (2 x 50 events) is never kept
        for i in range(40):  # 40 turns of 3+ events
            await runtime.handle(message("hello", "long", message_id=f"l{i}"))
        assert ("shop", "long") not in runtime._known
        assert runtime._known_events == sum(k.events for k in runtime._known.values()) <= 100
    finally:
        await runtime.aclose()
