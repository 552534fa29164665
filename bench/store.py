"""Conversation store benchmark: write throughput and transcript-load latency, both stores.

    .venv/bin/python bench/store.py                       # SQLite + a SecantusDB started here
    .venv/bin/python bench/store.py --store mongodb --mongodb-uri mongodb://db:27017/bench

Writes: ``--conversations`` x ``--turns`` customer messages, ``--concurrency`` conversations
at a time, each message stored (enqueue) and answered (complete) -- two store writes, as
the runtime does. Loads: ``--loads`` random ``load()`` calls of whole transcripts, and of the
last 10 turns (what the dialogue engine reads), p50/p95 in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bots.events import BOT, USER, Event
from bots.store.base import ConversationStore, SummaryUpdate
from bots.store.mongo import MongoStore
from bots.store.sqlite import SQLiteStore


async def _write(store: ConversationStore, conversations: int, turns: int, concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def conversation(conv: str) -> None:
        async with gate:
            for i in range(turns):
                text = f"message {i} of {conv}: where is my order {random.randrange(10**6)}?"
                event = Event(USER, {"text": text})
                result = await store.enqueue("bench", conv, "web", "user", {}, f"{conv}-{i}", event)
                await store.complete("bench", conv, result.turn.seq, [Event(BOT, {"text": "It ships today."})],
                                     SummaryUpdate(last_intent="order_status", confidence=random.random()))

    began = time.perf_counter()
    await asyncio.gather(*(conversation(f"c{n}") for n in range(conversations)))
    return conversations * turns / (time.perf_counter() - began)


async def _latencies(call: Callable[[], Awaitable[object]], n: int) -> tuple[float, float]:
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - began) * 1000)
    cuts = statistics.quantiles(samples, n=20)
    return statistics.median(samples), cuts[18]


async def bench(store: ConversationStore, args: argparse.Namespace) -> None:
    await store.start()
    try:
        messages_per_s = await _write(store, args.conversations, args.turns, args.concurrency)
        rng = random.Random(0)

        def pick() -> str:
            return f"c{rng.randrange(args.conversations)}"

        full = await _latencies(lambda: store.load("bench", pick()), args.loads)
        last = await _latencies(lambda: store.load("bench", pick(), last_n=10), args.loads)
        print(f"{store.name:8} messages/s {messages_per_s:8.1f} (enqueue + complete each)  "
              f"load {args.turns} turns p50 {full[0]:6.2f} ms p95 {full[1]:6.2f} ms  "
              f"load last 10 p50 {last[0]:6.2f} ms p95 {last[1]:6.2f} ms", flush=True)
    finally:
        await store.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=("sqlite", "mongodb", "both"), default="both")
    parser.add_argument("--mongodb-uri", help="an existing MongoDB; default: start SecantusDB in a temp dir")
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--loads", type=int, default=500)
    args = parser.parse_args()
    print(f"{args.conversations} conversations x {args.turns} turns, concurrency {args.concurrency}, "
          f"{args.loads} loads each", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.store in ("sqlite", "both"):
            asyncio.run(bench(SQLiteStore(Path(tmp) / "bench.db"), args))
        if args.store in ("mongodb", "both"):
            if args.mongodb_uri:
                asyncio.run(bench(MongoStore(args.mongodb_uri), args))
            else:
                from tests.fixtures.mongo import SecantusServer

                server = SecantusServer(Path(tmp))
                server.start()
                try:
                    asyncio.run(bench(MongoStore(server.uri("bench")), args))
                finally:
                    server.stop()


if __name__ == "__main__":
    main()
