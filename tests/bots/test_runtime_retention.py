from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

from bots.runtime import Runtime
from bots.store.sqlite import SQLiteStore


def test_retention_days_from_bot_yml_reach_the_store_and_expire_conversations(tiny_bot_dir: Path, tmp_path: Path,
                                                                                settings) -> None:  # type: ignore[no-untyped-def]
    bot = tmp_path / "bot"
    shutil.copytree(tiny_bot_dir, bot)
    with (bot / "bot.yml").open("a") as f:
        f.write("retention_days: 1\n")

    async def scenario() -> tuple[float | None, int, int, bool]:
        store = SQLiteStore(tmp_path / "c.db")
        runtime = Runtime(settings, store)
        await runtime.load_bot(bot)
        from bots.types import ConversationRef, UserMessage

        message = UserMessage(ConversationRef("tiny", "web", "old"), "m1", "hello")
        await runtime.handle(message)
        kept = await store.purge_expired(now=time.time() + 3600)
        purged = await store.purge_expired(now=time.time() + 2 * 86400)
        gone = await store.load("tiny", "old") is None
        await runtime.aclose()
        return store.retention.get("tiny"), kept, purged, gone

    retention, kept, purged, gone = asyncio.run(scenario())
    assert retention == 86400.0
    assert kept == 0  # an hour later: still within its day
    assert purged == 2 and gone  # two days later: the conversation and its turn
