"""Review UI benchmark: conversation search through the real app on 100 000 conversations.

    .venv/bin/python bench/review.py                          # SQLite + a SecantusDB started here
    .venv/bin/python bench/review.py --store sqlite --conversations 20000
    .venv/bin/python bench/review.py --store mongodb --mongodb-uri mongodb://db:27017/bench

Fills a store with ``--conversations`` one-message conversations through the store API (as the
runtime writes them: varied channels, intents, confidences, fallbacks, some flagged or tagged,
1 % mentioning a refund), trains the tiny test bot (fast mode) to serve, then times each filter
of the review list through HTTP (an API token, ``GET /review/api/conversations`` and the HTML
page ``/review``): p50 / p95 in milliseconds over ``--repeat`` requests.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bots.settings import Settings
from bots.staff.accounts import Accounts
from bots.store.base import BOT, NLU, USER, ConversationStore, Event, SummaryUpdate
from bots.store.mongo import MongoStore
from bots.store.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parent.parent
INTENTS = ("cancel_order", "track_order", "greet", "contact_human_agent")
CHANNELS = ("web", "slack", "telegram")
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
        ("page 1000 (offset 49 950)", "bot=tiny&page=1000"),
    ]


async def fill(store: ConversationStore, n: int, concurrency: int) -> float:
    rng = random.Random(0)
    gate = asyncio.Semaphore(concurrency)
    now = time.time()

    async def one(i: int) -> None:
        async with gate:
            cid = f"c{i:06d}"
            intent = rng.choice(INTENTS)
            confidence = round(rng.uniform(0.2, 1.0), 3)
            topic = "I want a refund for order" if rng.random() < 0.01 else "where is my order"
            started = now - rng.uniform(0, 30 * DAY)
            result = await store.enqueue("tiny", cid, rng.choice(CHANNELS), f"u{i}", {}, "m1",
                                         Event(USER, {"text": f"{topic} {rng.randrange(10**6)}"}, timestamp=started))
            await store.complete("tiny", cid, result.turn.seq, [
                Event(NLU, {"intent": intent, "confidence": confidence, "ranking": [], "entities": []}),
                Event(BOT, {"text": "It ships today.", "buttons": [], "source": "template", "metadata": {}}),
            ], SummaryUpdate(last_intent=intent, confidence=confidence, fallback=True if confidence < 0.3 else None))
            if rng.random() < 0.02 or rng.random() < 0.05:
                await store.update_summary("tiny", cid, SummaryUpdate(
                    flagged=True if rng.random() < 0.4 else None, add_tags=("vip",) if rng.random() < 0.6 else ()))

    began = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
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

    await store.start()
    try:
        seconds = await fill(store, args.conversations, args.concurrency)
    finally:
        await store.aclose()
    print(f"{label}: stored {args.conversations} conversations in {seconds:.0f} s", flush=True)
    settings = Settings(data_dir=data_dir, mongodb_uri=mongodb_uri, nlu_max_wait_ms=0.0)
    app = create_app(settings, [bot_dir])
    async with app.router.lifespan_context(app):
        while not (await app.state.runtime.ready())[0]:
            await asyncio.sleep(0.1)
        accounts: Accounts = app.state.review.accounts
        if await accounts.store.get_user("bench") is None:
            await accounts.add_user("bench", "bench-password-123", "viewer")
        token = await accounts.create_token("bench", "bench")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench",
                                     headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
            print(f"{'filter':38} {'matches':>8} {'API p50':>9} {'API p95':>9} {'page p50':>9} {'page p95':>9}")
            for name, query in _queries():
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
