"""The conversation lease is short (a dead replica's conversations go on elsewhere within seconds)
and kept by a heartbeat while its holder processes (a slow turn never lets a second replica answer
it, or answer the turns after it out of order)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from bots.botspec import BotSpec
from bots.errors import Busy
from bots.runtime import Runtime
from bots.settings import Settings
from bots.store.sqlite import SQLiteStore
from bots.types import BotResponse, UserMessage
from tests.bots.keyword_model import KeywordModel, copy_bot, message
from tests.bots.test_ordering import _assert_answered_in_order_once

TTL_S = 1.0
SLOW_S = 2.5  # a turn that takes longer than two TTLs (a slow custom action, a generated answer)


class SlowKeywordModel(KeywordModel):
    """The keyword model, taking SLOW_S for a text with "slowly" in it (in the NLU worker thread)."""

    def predict(self, texts: Sequence[str]) -> list:  # type: ignore[type-arg]
        if any("slowly" in t for t in texts):
            time.sleep(SLOW_S)
        return super().predict(texts)


def slow_loader(artifact_dir: Path, spec: BotSpec, settings: Settings) -> SlowKeywordModel:
    return SlowKeywordModel(spec)


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[tuple[Runtime, Runtime]]:
    """Two runtimes sharing one store file, with a one-second lease."""
    bot_dir = copy_bot(tmp_path)
    runtimes = []
    for _ in range(2):
        store = SQLiteStore(tmp_path / "shared.db")
        await store.start()
        runtime = Runtime(Settings(data_dir=tmp_path, nlu_max_wait_ms=0.0, lease_ttl_s=TTL_S), store,
                          model_loader=slow_loader)
        await runtime.load_bot(bot_dir)
        runtimes.append(runtime)
    yield runtimes[0], runtimes[1]
    for runtime in runtimes:
        await runtime.aclose()


async def answer(runtime: Runtime, msg: UserMessage) -> list[BotResponse]:
    """As a channel does: a 503 (Busy: another replica holds the conversation for long) is delivered again."""
    turn = await runtime.accept(msg)
    while True:
        try:
            return await runtime.process(msg, turn)
        except Busy:
            await asyncio.sleep(0.1)


def test_the_default_lease_is_short() -> None:
    assert Settings().lease_ttl_s <= 2.0
    assert Settings.from_env({}).lease_ttl_s <= 2.0


async def test_a_slow_turn_keeps_its_lease_and_is_answered_once_in_order(replicas: tuple[Runtime, Runtime]) -> None:
    a, b = replicas
    first, second = message("hello slowly", message_id="m1"), message("good morning", message_id="m2")
    slow = asyncio.create_task(answer(a, first))
    await asyncio.sleep(0.3)  # a holds the lease, in its slow turn
    started = time.monotonic()
    later = await answer(b, second)  # b waits for a: a's heartbeat keeps the lease past its TTL
    assert time.monotonic() - started >= SLOW_S - 0.5
    assert [r.text for r in await slow] == [r.text for r in later] == ["Hello! How can I help you today?"]
    calls = [t for rt in (a, b) for t in rt.bots["shop"].model.calls]  # type: ignore[attr-defined]
    assert calls.count("hello slowly") == 1  # understood (and answered) by one replica only
    loaded = await a.store.load("shop", "c1")
    assert loaded is not None
    _assert_answered_in_order_once(loaded.turns, 2)
    assert (await a.store.acquire_lease("shop", "c1", "someone", 1.0))  # released when done


async def test_a_dead_holders_lease_expires_within_its_ttl(replicas: tuple[Runtime, Runtime]) -> None:
    """A holder that stops (a SIGKILLed replica: no heartbeat, no release) holds its conversation for
    at most one TTL: the other replica answers then."""
    a, b = replicas
    msg = message("hello", message_id="m1")
    turn = await a.accept(msg)  # takes the lease with the message, then dies before processing it
    assert not await b.store.acquire_lease("shop", "c1", "another-replica", TTL_S)  # held by a
    started = time.monotonic()
    responses = await b.process(msg, turn)
    waited = time.monotonic() - started
    assert [r.text for r in responses] == ["Hello! How can I help you today?"]
    assert TTL_S - 0.2 <= waited <= TTL_S + 1.0, waited


class CountingStore(SQLiteStore):
    """The embedded store, counting its write transactions by kind."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writes: list[str] = []

    async def enqueue(self, *args: Any, **kwargs: Any) -> Any:
        self.writes.append("enqueue")
        return await super().enqueue(*args, **kwargs)

    async def acquire_lease(self, *args: Any) -> bool:
        self.writes.append("lease")
        return await super().acquire_lease(*args)

    async def complete(self, *args: Any, **kwargs: Any) -> Any:
        self.writes.append("complete")
        return await super().complete(*args, **kwargs)

    async def release_lease(self, *args: Any) -> None:
        self.writes.append("release")
        await super().release_lease(*args)


async def test_a_message_takes_the_lease_with_its_enqueue_and_releases_it_with_its_answer(tmp_path: Path) -> None:
    """Two write transactions a message on the embedded store: the lease comes with the message and goes
    with the answer; another replica can take it right after."""
    store = CountingStore(tmp_path / "c.db")
    await store.start()
    runtime = Runtime(Settings(data_dir=tmp_path, nlu_max_wait_ms=0.0, lease_ttl_s=TTL_S), store,
                      model_loader=slow_loader)
    await runtime.load_bot(copy_bot(tmp_path))
    try:
        for i in range(3):
            assert [r.text for r in await runtime.handle(message("hello", message_id=f"m{i}"))] == \
                ["Hello! How can I help you today?"]
        assert store.writes == ["enqueue", "complete"] * 3
        assert await store.acquire_lease("shop", "c1", "another-replica", TTL_S)  # released with the answer
    finally:
        await runtime.aclose()


async def test_a_released_lease_is_never_taken_for_held(replicas: tuple[Runtime, Runtime]) -> None:
    """What a replica knows of its lease without asking the store is forgotten when it releases it: a message
    redelivered to it while another replica answers it waits for that answer (a stale note would have it
    answered twice)."""
    a, b = replicas
    await answer(a, message("hello", message_id="m1"))  # a took the lease with m1 and released it with m1's answer
    slow = message("hello slowly", message_id="m2")
    first = asyncio.create_task(answer(b, slow))  # b takes the lease with m2, answering it slowly
    await asyncio.sleep(0.2)
    again = await answer(a, slow)  # the channel redelivers m2 to a meanwhile: stored already, b's to answer
    assert [r.text for r in again] == [r.text for r in await first] == ["Hello! How can I help you today?"]
    calls = [t for rt in (a, b) for t in rt.bots["shop"].model.calls]  # type: ignore[attr-defined]
    assert calls.count("hello slowly") == 1
    loaded = await a.store.load("shop", "c1")
    assert loaded is not None
    _assert_answered_in_order_once(loaded.turns, 2)
