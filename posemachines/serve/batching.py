"""Requests that arrive together are predicted as one batch: the first waits at most
``max_wait`` seconds for others, up to ``max_batch``; a full queue is refused at once (the
caller answers 503) instead of growing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


class Busy(Exception):
    """The queue is full."""


class Batcher:
    """``await submit(item)`` gives ``predict([item, ...])[k]`` for its item. One worker
    thread predicts, so the model is never run twice at once."""

    def __init__(
        self, predict: Callable, max_batch: int = 8, max_wait: float = 0.005, queue_size: int = 32
    ):
        self.predict = predict
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.queue: asyncio.Queue = asyncio.Queue(queue_size)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="pm-predict")
        self.batches: list[int] = []  # the size of every batch run, for the curious
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, item):
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((item, future))
        except asyncio.QueueFull:
            raise Busy from None
        return await future

    async def _next_batch(self) -> list:
        loop = asyncio.get_running_loop()
        batch = [await self.queue.get()]
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [(i, f) for i, f in await self._next_batch() if not f.done()]
            if not batch:
                continue
            self.batches.append(len(batch))
            try:
                results = await loop.run_in_executor(
                    self.executor, self.predict, [item for item, _ in batch]
                )
            except Exception as exc:  # the model failed: every waiting request hears it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)
