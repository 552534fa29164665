"""Review UI benchmark: conversation search through the real app on 100 000 conversations.

    .venv/bin/python bench/review.py                          # SQLite + a SecantusDB started here
    .venv/bin/python bench/review.py --store sqlite --conversations 20000
    .venv/bin/python bench/review.py --store mongodb --mongodb-uri mongodb://db:27017/bench
    .venv/bin/python bench/review.py --store mongodb --bulk --repeat 5 --only "free text"

Fills a store with ``--conversations`` one-message conversations through the store API (as the
runtime writes them: varied channels, intents, confidences, fallbacks, some flagged or tagged,
1 % mentioning a refund), trains the tiny test bot (fast mode) to serve, then times each filter
of the review list through HTTP (an API token, ``GET /review/api/conversations`` and the HTML
page ``/review``): p50 / p95 in milliseconds over ``--repeat`` requests.

``--bulk`` (MongoDB): the store API needs about eight round trips per conversation, which takes
hours for 100 000 conversations on SecantusDB. With ``--bulk`` the first ``--bulk-sample``
conversations go through the store API and the rest are written with ``insert_many``: each
bulk document gets exactly the fields of the store-written sample documents (the run stops if a
field is unknown here, i.e. the store's schema changed), its values from the same generated
data and the store's own helpers (``Turn.to_dict``, ``ConversationSummary.to_dict``,
``conversation_key``, the transcript text and search words).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bots.events import BOT, NLU, USER, Event
from bots.settings import Settings
from bots.staff.accounts import Accounts
from bots.store.base import ConversationStore, ConversationSummary, SummaryUpdate, Turn
from bots.store.mongo import MongoStore, conversation_key
from bots.store.mongo import _turn_text as mongo_turn_text
from bots.store.sqlite import SQLiteStore
from bots.store.text import turn_words

ROOT = Path(__file__).resolve().parent.parent
INTENTS = ("cancel_order", "track_order", "greet", "contact_human_agent")
CHANNELS = ("web", "slack", "telegram")
# customers' names, FIRST x LAST (1,000 names, each on 1 conversation in 1,000): not drawn from the random
# generator, so every other figure is measured on the same conversations as before names were stored
FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "John", "Margaret", "Ken", "Radia",
         "Tim", "Sophie", "Linus", "Guido", "Niklaus", "Hedy", "Claude", "Katherine", "Dennis", "Shafi", "Leslie",
         "Tony", "Jean", "Fran")
LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "McCarthy", "Hamilton", "Thompson",
        "Perlman", "Berners-Lee", "Wilson", "Torvalds", "Rossum", "Wirth", "Lamarr", "Shannon", "Johnson", "Ritchie",
        "Goldwasser", "Lamport", "Hoare", "Sammet", "Bilas", "Backus", "Kay", "Cerf", "Kahn", "Engelbart", "Floyd",
        "Hollerith", "Babbage", "Boole", "Church", "Gödel", "Neumann", "Zuse", "Wozniak", "Goldberg")
DAY = 86_400.0


def _queries() -> list[tuple[str, str]]:
    yesterday = time.strftime("%Y-%m-%d", time.gmtime(time.time() - DAY))
    return [
        ("newest first, page 1", ""),
        ("bot", "bot=tiny"),
        ("intent", "bot=tiny&intent=track_order"),
        ("confidence below 0.4, lowest first", "bot=tiny&confidence_below=0.4&sort=min_confidence&order=asc"),
        ("fell back", "bot=tiny&fallback=yes"),
        ("handed off", "bot=tiny&handoff=yes"),
        ("flagged, not reviewed", "bot=tiny&flagged=yes&reviewed=no"),
        ("tag", "bot=tiny&tag=vip"),
        ("channel + intent", "bot=tiny&channel=slack&intent=greet"),
        ("yesterday", f"bot=tiny&since={yesterday}&until={yesterday}&tz=0"),
        ("yesterday + confidence < 0.5", f"bot=tiny&since={yesterday}&until={yesterday}&tz=0&confidence_below=0.5"),
        ("free text 'refund'", "bot=tiny&q=refund"),
        ("customer name 'ada lovelace'", "bot=tiny&customer=ada%20lovelace"),
        ("page 1000 (offset 49 950)", "bot=tiny&page=1000"),
    ]


class Generated:
    """One bench conversation: the customer's message, the bot's answer and the review marks."""

    def __init__(self, i: int, rng: random.Random, now: float) -> None:
        self.cid = f"c{i:06d}"
        self.user_id = f"u{i}"
        self.name = f"{FIRST[i % len(FIRST)]} {LAST[(i // len(FIRST)) % len(LAST)]}"
        self.intent = rng.choice(INTENTS)
        self.confidence = round(rng.uniform(0.2, 1.0), 3)
        topic = "I want a refund for order" if rng.random() < 0.01 else "where is my order"
        self.started = now - rng.uniform(0, 30 * DAY)
        self.channel = rng.choice(CHANNELS)
        self.user = Event(USER, {"text": f"{topic} {rng.randrange(10**6)}"}, timestamp=self.started)
        self.summary = SummaryUpdate(last_intent=self.intent, confidence=self.confidence,
                                     fallback=True if self.confidence < 0.3 else None)
        self.marks: SummaryUpdate | None = None
        if rng.random() < 0.02 or rng.random() < 0.05:
            self.marks = SummaryUpdate(flagged=True if rng.random() < 0.4 else None,
                                       add_tags=("vip",) if rng.random() < 0.6 else ())

    def reply(self, at: float) -> list[Event]:
        return [Event(NLU, {"intent": self.intent, "confidence": self.confidence, "ranking": [], "entities": []},
                      timestamp=at),
                Event(BOT, {"text": "It ships today.", "buttons": [], "source": "template", "metadata": {}},
                      timestamp=at)]


def generate(n: int) -> list[Generated]:
    rng, now = random.Random(0), time.time()
    return [Generated(i, rng, now) for i in range(n)]


async def fill(store: ConversationStore, conversations: list[Generated], concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one(c: Generated) -> None:
        async with gate:
            result = await store.enqueue("tiny", c.cid, c.channel, c.user_id, {}, "m1", c.user, customer_name=c.name)
            await store.complete("tiny", c.cid, result.turn.seq, c.reply(time.time()), c.summary)
            if c.marks is not None:
                await store.update_summary("tiny", c.cid, c.marks)

    began = time.perf_counter()
    await asyncio.gather(*(one(c) for c in conversations))
    return time.perf_counter() - began


def _bulk_docs(c: Generated, at: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The conversation and turn documents MongoStore writes for ``c`` (enqueue, complete, marks)."""
    marks = c.marks or SummaryUpdate()
    summary = ConversationSummary(
        "tiny", c.cid, c.channel, c.user_id, {}, started_at=c.started, last_activity=at, last_intent=c.intent,
        min_confidence=c.confidence, turns=1, fallback=bool(c.summary.fallback), flagged=bool(marks.flagged),
        tags=marks.add_tags, customer_name=c.name)
    conversation = {"_id": conversation_key("tiny", c.cid), **summary.to_dict(), "next_seq": 2, "lease_owner": None,
                    "lease_expires": 0.0, "applied": [1]}
    events = (c.user, *c.reply(at))
    turn = {**Turn("tiny", c.cid, 1, "m1", "done", events, c.started, at).to_dict(),
            "text": mongo_turn_text(events), "words": turn_words(events)}
    return conversation, turn


def _shaped(doc: dict[str, Any], sample: dict[str, Any], what: str) -> dict[str, Any]:
    """``doc`` with exactly the fields of ``sample`` (a document the store wrote)."""
    unknown = sorted(set(sample) - set(doc) - {"_id"})
    if unknown:
        raise SystemExit(f"--bulk: the store writes {what} fields {unknown} that the bulk fill does not know; "
                         "update bench/review.py:_bulk_docs")
    return {k: v for k, v in doc.items() if k in sample}


async def bulk_fill(uri: str, conversations: list[Generated], sample: int, batch: int) -> float:
    """The first ``sample`` conversations through the store API, the rest with ``insert_many``."""
    from pymongo import AsyncMongoClient

    began = time.perf_counter()
    store = MongoStore(uri)
    await store.start()
    try:
        await fill(store, conversations[:sample], 8)
    finally:
        await store.aclose()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        db = client.get_default_database()
        conv_sample = await db.conversations.find_one({"conversation_id": conversations[0].cid})
        turn_sample = await db.turns.find_one({"conversation_id": conversations[0].cid})
        assert conv_sample is not None and turn_sample is not None
        for start in range(sample, len(conversations), batch):
            part, at = conversations[start:start + batch], time.time()
            docs = [_bulk_docs(c, at + k * 1e-6) for k, c in enumerate(part)]
            await db.conversations.insert_many([_shaped(d, conv_sample, "conversation") for d, _ in docs],
                                               ordered=False)
            await db.turns.insert_many([_shaped(t, turn_sample, "turn") for _, t in docs], ordered=False)
    finally:
        await client.close()
    return time.perf_counter() - began


async def _time(client: httpx.AsyncClient, url: str, repeat: int) -> tuple[float, float, int]:
    """p50, p95 (ms) and the match count; a failed request counts as -status (e.g. -503: the store timed out)."""
    samples, total = [], 0
    if (await client.get(url)).status_code != 200:  # warm-up: caches, first-use costs
        return float("nan"), float("nan"), -(await client.get(url)).status_code
    for _ in range(repeat):
        began = time.perf_counter()
        r = await client.get(url)
        samples.append((time.perf_counter() - began) * 1000)
        if r.status_code != 200:
            return float("nan"), float("nan"), -r.status_code
        if r.headers["content-type"].startswith("application/json"):
            total = r.json()["total"]
    cuts = statistics.quantiles(samples, n=20) if len(samples) > 1 else samples * 19
    return statistics.median(samples), cuts[18], total


async def bench(store: ConversationStore, label: str, bot_dir: Path, data_dir: Path, args: argparse.Namespace,
                mongodb_uri: str | None) -> None:
    from connectors.app import create_app

    conversations = generate(args.conversations)
    if args.bulk and mongodb_uri is not None:
        seconds = await bulk_fill(mongodb_uri, conversations, args.bulk_sample, args.bulk_batch)
        how = f"{min(args.bulk_sample, args.conversations)} through the store API, the rest in bulk"
    else:
        await store.start()
        try:
            seconds = await fill(store, conversations, args.concurrency)
        finally:
            await store.aclose()
        how = "through the store API"
    print(f"{label}: stored {args.conversations} conversations ({how}) in {seconds:.0f} s", flush=True)
    settings = Settings(data_dir=data_dir, mongodb_uri=mongodb_uri, nlu_max_wait_ms=0.0)
    app = create_app(settings, [bot_dir])
    async with app.router.lifespan_context(app):
        while not (await app.state.runtime.ready())[0]:
            await asyncio.sleep(0.1)
        accounts: Accounts = app.state.review.accounts
        if await accounts.store.get_user("bench") is None:
            await accounts.add_user("bench", "bench-password-123", "viewer")
        token = await accounts.create_token("bench", "bench")
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # an app error counts as -500
        async with httpx.AsyncClient(transport=transport, base_url="http://bench",
                                     headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
            print(f"{'filter':38} {'matches':>8} {'API p50':>9} {'API p95':>9} {'page p50':>9} {'page p95':>9}")
            for name, query in _queries():
                if args.only and not any(o in name for o in args.only):
                    continue
                api = await _time(client, f"/review/api/conversations?{query}", args.repeat)
                page = await _time(client, f"/review?{query}", args.repeat)
                print(f"{name:38} {api[2]:8d} {api[0]:7.1f}ms {api[1]:7.1f}ms {page[0]:7.1f}ms {page[1]:7.1f}ms",
                      flush=True)


def _trained_bot(tmp: Path) -> Path:
    from training.cli import main as train

    bot_dir = tmp / "tiny"
    shutil.copytree(ROOT / "tests" / "data" / "tiny_bot", bot_dir)
    if train(["train", str(bot_dir), "--fast", "--seed", "0"]) != 0:
        raise SystemExit("training the tiny bot failed")
    return bot_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=("sqlite", "mongodb", "both"), default="both")
    parser.add_argument("--mongodb-uri", help="an existing MongoDB; default: start SecantusDB in a temp dir")
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--bulk", action="store_true",
                        help="MongoDB: write most conversations with insert_many (see above)")
    parser.add_argument("--bulk-sample", type=int, default=50, help="--bulk: conversations through the store API")
    parser.add_argument("--bulk-batch", type=int, default=2000, help="--bulk: documents per insert_many")
    parser.add_argument("--only", action="append", help="time only the filters whose name contains this (repeatable)")
    parser.add_argument("--bot-dir", type=Path, help="a trained bot folder named tiny (default: train one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        bot_dir = args.bot_dir or _trained_bot(tmp)
        if args.store in ("sqlite", "both"):
            data = tmp / "sqlite"
            asyncio.run(bench(SQLiteStore(data / "conversations.db"), "sqlite", bot_dir, data, args, None))
        if args.store in ("mongodb", "both"):
            if args.mongodb_uri:
                asyncio.run(bench(MongoStore(args.mongodb_uri), "mongodb", bot_dir, tmp / "m", args,
                                  args.mongodb_uri))
            else:
                from tests.fixtures.mongo import SecantusServer

                (tmp / "secantus").mkdir()
                server = SecantusServer(tmp / "secantus")
                server.start()
                try:
                    uri = server.uri("bench")
                    asyncio.run(bench(MongoStore(uri), "mongodb", bot_dir, tmp / "m", args, uri))
                finally:
                    server.stop()


if __name__ == "__main__":
    main()
