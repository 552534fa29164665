"""Analytics and bulk export on 100 000 conversations in the embedded SQLite store (or MongoDB: analytics only).

    nice -n 10 .venv/bin/python bench/analytics.py [--conversations 100000] [--repeat 7]
    nice -n 10 .venv/bin/python bench/analytics.py --store mongodb [--mongodb-uri URI] [--repeat 3]

``--store mongodb``: the same rows as conversation documents (``MongoStore``'s shape: ``_id`` from
``conversation_key``, the fields ``ConversationSummary.to_dict`` writes, ``handoff_at``/``agent_reply_at``), written
with ``insert_many`` into the MongoDB at ``--mongodb-uri``, or a SecantusDB started here (the tests' server: a
Python server that decodes every document, so its figures bound nothing about MongoDB itself); then
``MongoStore.analytics`` is timed as above (no export).

The store creates the file (schema and indexes, as served); the conversations' summary rows are then
written with one ``executemany`` (the store API would take minutes for the same rows): 3 bots, 4
channels, 90 days, 40 intents, 12 % fallbacks, 18 % handed off of which 80 % got an agent reply
(1 s to 2 h later), 6 % rated by the customer (1-5). Then it times, ``--repeat`` times each (median, min..max, in ms):

* ``SQLiteStore.analytics`` over everything, one bot, and one bot's last 30 days;
* the bulk export (``connectors.review.exports.export_lines``, what the route streams) of every
  conversation as CSV and as JSON lines (``--repeat`` // 2 timed runs), then one run under tracemalloc
  for the peak Python memory it allocated: it stays at one page of ``EXPORT_PAGE`` conversations.

Prints the load average before and after: on a shared machine it says how far to trust the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bots.store.analytics import AnalyticsQuery
from bots.store.base import ConversationSummary, TranscriptQuery
from bots.store.mongo import MongoStore, conversation_key
from bots.store.sqlite import SQLiteStore
from connectors.review.exports import EXPORT_PAGE, export_lines

BOTS = ("shop", "bank", "travel")
CHANNELS = ("web", "slack", "telegram", "webhook")
INTENTS = tuple(f"intent_{i:02d}" for i in range(40))


def rows(n: int, now: float, seed: int = 7) -> list[tuple[object, ...]]:
    rng = random.Random(seed)
    out: list[tuple[object, ...]] = []
    for i in range(n):
        started = now - rng.random() * 90 * 86_400
        handed = rng.random() < 0.18
        handoff_at = started + rng.uniform(5, 300) if handed else None
        reply_at = handoff_at + rng.expovariate(1 / 240) if handoff_at is not None and rng.random() < 0.8 else None
        out.append((rng.choice(BOTS), f"c{i:07d}", rng.choice(CHANNELS), f"u{i}", "{}", started,
                    started + rng.uniform(1, 900), rng.choice(INTENTS), rng.random(), rng.randint(1, 12),
                    int(rng.random() < 0.12), int(handed and rng.random() < 0.3), 0, 0, "[]", 2, handoff_at,
                    reply_at, rng.randint(1, 5) if rng.random() < 0.06 else None))
    return out


def spread(ms: list[float]) -> str:
    return f"median {statistics.median(ms):.1f} ms ({min(ms):.1f}..{max(ms):.1f})"


def document(row: tuple[Any, ...]) -> dict[str, Any]:
    """A ``rows`` row as the conversation document MongoStore keeps."""
    (bot, cid, channel, user_id, _, started, last, intent, confidence, turns, fallback, handoff, _, _, _, _,
     handoff_at, reply_at, csat) = row
    summary = ConversationSummary(bot, cid, channel, user_id, {}, started_at=started, last_activity=last,
                                  last_intent=intent, min_confidence=confidence, turns=turns, fallback=bool(fallback),
                                  handoff=bool(handoff), csat=csat)
    return {"_id": conversation_key(str(bot), str(cid)), **summary.to_dict(), "handoff_at": handoff_at,
            "agent_reply_at": reply_at, "next_seq": 2, "lease_owner": None, "lease_expires": 0.0}


async def fill_mongodb(store: MongoStore, data: list[tuple[object, ...]]) -> None:
    for start in range(0, len(data), 2000):
        await store._convs.insert_many([document(r) for r in data[start:start + 2000]])


async def run(args: argparse.Namespace, folder: Path, mongodb_uri: str | None = None) -> None:
    store: SQLiteStore | MongoStore = SQLiteStore(folder / "conversations.db") if mongodb_uri is None \
        else MongoStore(mongodb_uri)
    await store.start()
    now = time.time()
    data = rows(args.conversations, now)
    t0 = time.perf_counter()
    if isinstance(store, MongoStore):
        await fill_mongodb(store, data)
    else:
        sqlite = store
        await sqlite._write(lambda conn: conn.executemany(  # bulk fill, see the docstring
            "INSERT INTO conversations (bot, conversation_id, channel, user_id, address, started_at, last_activity,"
            " last_intent, min_confidence, turns, fallback, handoff, flagged, reviewed, tags, next_seq, handoff_at,"
            " agent_reply_at, csat) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", data))
        await sqlite._write(lambda conn: conn.execute("ANALYZE"))
    print(f"filled {args.conversations} conversations ({store.name}) in {time.perf_counter() - t0:.1f} s")
    for label, query in (("everything", AnalyticsQuery()), ("one bot", AnalyticsQuery(bot="shop")),
                         ("one bot, last 30 days", AnalyticsQuery(bot="shop", since=now - 30 * 86_400))):
        times, result = [], None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            result = await store.analytics(query)
            times.append((time.perf_counter() - t0) * 1000)
        assert result is not None
        total = result.total
        print(f"analytics, {label}: {spread(times)}; {total.conversations} conversations, containment "
              f"{total.containment_rate:.3f}, first reply p50 {total.reply_p50_s:.0f} s p90 {total.reply_p90_s:.0f} s, "
              f"{total.rated} rated (average {total.csat_average:.2f}), {len(result.by_day)} days")
    for fmt in ("csv", "jsonl") if isinstance(store, SQLiteStore) else ():
        times, size, lines = [], 0, 0
        for traced in [False] * max(1, args.repeat // 2) + [True]:  # timed untraced; one traced run for memory
            if traced:
                tracemalloc.start()
            t0 = time.perf_counter()
            size = lines = 0
            async for chunk in export_lines(store, TranscriptQuery(), fmt):  # type: ignore[arg-type]
                size += len(chunk)
                lines += chunk.count(b"\n")
            if traced:
                peak = tracemalloc.get_traced_memory()[1] / 2**20
                tracemalloc.stop()
            else:
                times.append((time.perf_counter() - t0) * 1000)
        print(f"export {fmt} of every conversation ({lines} lines, {size / 2**20:.1f} MiB, pages of "
              f"{EXPORT_PAGE}): {spread(times)}; peak Python memory {peak:.1f} MiB (tracemalloc, one run)")
    await store.aclose()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conversations", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--store", choices=("sqlite", "mongodb"), default="sqlite")
    p.add_argument("--mongodb-uri", help="--store mongodb: an existing MongoDB (an empty database); default: start "
                                         "SecantusDB here")
    args = p.parse_args()
    before = os.getloadavg()
    print(f"load average before {before[0]:.2f} {before[1]:.2f} {before[2]:.2f}, {os.cpu_count()} CPUs; "
          f"{json.dumps(vars(args))}")
    with tempfile.TemporaryDirectory(prefix="bench-analytics-") as tmp:
        if args.store == "sqlite":
            asyncio.run(run(args, Path(tmp)))
        elif args.mongodb_uri:
            asyncio.run(run(args, Path(tmp), args.mongodb_uri))
        else:
            from tests.fixtures.mongo import SecantusServer

            server = SecantusServer(Path(tmp) / "secantus")
            server.start()
            try:
                # its inserts and scans of 100,000 documents take longer than the store's 10 s socket timeout
                asyncio.run(run(args, Path(tmp), server.uri("bench_analytics") + "&socketTimeoutMS=600000"))
            finally:
                server.stop()
    after = os.getloadavg()
    print(f"load average after {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}")


if __name__ == "__main__":
    main()
