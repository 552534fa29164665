"""The NLU micro-batcher: concurrent callers share model calls, each gets its own result (or the
batch's error), several workers run batches in parallel, and closing finishes what is queued."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from bots.nlu.batcher import MicroBatcher


class Model:
    def __init__(self, seconds: float = 0.0, fail_on: str | None = None) -> None:
        self.seconds, self.fail_on = seconds, fail_on
        self.batches: list[list[str]] = []
        self.active = 0
        self.most_active = 0
        self._lock = threading.Lock()

    def __call__(self, texts: Sequence[str]) -> list[str]:
        with self._lock:
            self.batches.append(list(texts))
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            time.sleep(self.seconds)
            if self.fail_on is not None and self.fail_on in texts:
                raise RuntimeError(f"cannot read {self.fail_on!r}")
            return [t.upper() for t in texts]
        finally:
            with self._lock:
                self.active -= 1


async def test_concurrent_calls_share_batches_and_each_gets_its_own_result() -> None:
    model = Model(seconds=0.02)
    batcher = MicroBatcher(model, max_batch=8, max_wait_ms=5)
    texts = [f"t{i}" for i in range(30)]
    results = await asyncio.gather(*(batcher(t) for t in texts))
    assert results == [t.upper() for t in texts]
    assert sorted(t for b in model.batches for t in b) == sorted(texts)  # each text once
    assert len(model.batches) < len(texts) / 2 and max(len(b) for b in model.batches) <= 8
    await batcher.aclose()


async def test_a_failing_batch_fails_its_callers_only() -> None:
    model = Model(seconds=0.01, fail_on="bad")
    batcher = MicroBatcher(model, max_batch=4, max_wait_ms=20)
    first = await asyncio.gather(batcher("bad"), batcher("good"), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in first)  # same batch: same error
    assert await batcher("fine") == "FINE"  # the batcher keeps working
    await batcher.aclose()


async def test_several_workers_run_batches_in_parallel() -> None:
    model = Model(seconds=0.1)
    batcher = MicroBatcher(model, max_batch=2, max_wait_ms=0, workers=3)
    started = time.perf_counter()
    results = await asyncio.gather(*(batcher(f"t{i}") for i in range(6)))
    elapsed = time.perf_counter() - started
    assert results == [f"T{i}" for i in range(6)]
    assert model.most_active >= 2, model.most_active
    assert elapsed < 0.3 * 1.5 + 0.2, elapsed  # one worker would need at least 3 x 0.1 s
    await batcher.aclose()


async def test_with_one_worker_batches_never_overlap_and_grow_under_load() -> None:
    model = Model(seconds=0.05)
    batcher = MicroBatcher(model, max_batch=16, max_wait_ms=0, workers=1)
    await asyncio.gather(*(batcher(f"t{i}") for i in range(20)))
    assert model.most_active == 1
    assert max(len(b) for b in model.batches) > 1  # queued while the first batch ran
    await batcher.aclose()


async def test_close_finishes_queued_work_and_later_calls_still_answer() -> None:
    model = Model(seconds=0.05)
    batcher = MicroBatcher(model, max_batch=4, max_wait_ms=1)
    pending = [asyncio.ensure_future(batcher(f"t{i}")) for i in range(6)]
    await asyncio.sleep(0.01)
    await batcher.aclose()
    assert [await p for p in pending] == [f"T{i}" for i in range(6)]
    assert await batcher("late") == "LATE"


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="workers"):
        MicroBatcher(Model(), workers=0)
