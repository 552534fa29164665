"""Micro-batching: concurrent conversations share one model call.

Requests arriving within ``max_wait_ms`` of each other (or until ``max_batch`` are waiting)
are run as one batch in a worker thread, off the event loop. ``workers`` batches may run at once
(ONNX Runtime releases the GIL, and its sessions may be run from several threads): while every
worker is busy the next batch keeps growing, so batches are large exactly when load is high.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class MicroBatcher(Generic[In, Out]):
    def __init__(self, fn: Callable[[Sequence[In]], Sequence[Out]], *, max_batch: int = 32,
                 max_wait_ms: float = 2.0, on_batch: Callable[[int, float], None] | None = None,
                 workers: int = 1) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._fn = fn
        self._max_batch = max_batch
        self._max_wait = max_wait_ms / 1000.0
        self._on_batch = on_batch
        self._queue: list[tuple[In, asyncio.Future[Out]]] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._workers = workers
        self._slots: asyncio.Semaphore | None = None
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nlu")
        self._running: set[asyncio.Task[None]] = set()
        self._busy = 0  # batches running
        self._closed = False

    async def __call__(self, item: In) -> Out:
        loop = asyncio.get_running_loop()
        if self._closed:
            # A caller that picked this model before it was swapped out still gets an answer.
            return (await asyncio.to_thread(self._fn, [item]))[0]
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._run())
        future: asyncio.Future[Out] = loop.create_future()
        self._queue.append((item, future))
        assert self._wakeup is not None
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(self._workers)
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._queue:
                continue
            await self._slots.acquire()  # a free worker; meanwhile the queue keeps growing
            if len(self._queue) < self._max_batch and self._max_wait > 0:
                await asyncio.sleep(self._max_wait)
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch:]
            if self._queue:
                self._wakeup.set()
            self._busy += 1
            task = loop.create_task(self._run_batch(loop, batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[In, asyncio.Future[Out]]]) -> None:
        assert self._slots is not None
        items = [item for item, _ in batch]
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self._fn, items)
        except Exception as exc:  # noqa: BLE001 - handed to every waiter
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        finally:
            self._busy -= 1
            self._slots.release()
        if self._on_batch is not None:
            self._on_batch(len(items), time.perf_counter() - started)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def aclose(self) -> None:
        """Finish what is queued, then stop. Later calls still work, unbatched."""
        self._closed = True
        while self._queue or self._busy:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=False, cancel_futures=True)
