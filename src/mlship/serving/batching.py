"""Adaptive micro-batching: concurrent requests share one model call, run off the event loop.

A scikit-learn pipeline call costs milliseconds whatever the number of rows, so a server
that predicts one request at a time tops out at a few hundred requests a second. Here every
request's rows join a queue; one worker thread predicts whatever is queued (up to
`max_rows`) in a single call, and the requests that arrive meanwhile form the next batch.
An idle server never waits: a lone request is predicted at once. Only when more requests
are known to be on their way (their bodies are still being received) does the batcher wait
for them, and never longer than `max_wait_s`.

A cheap batch skips the hand-off: when `inline_below_s` is set, a batch of at most
`inline_max_rows` rows runs on the event loop itself as long as the last such batch took
less than that (every batch is timed, wherever it ran). Handing a batch to the worker thread
and its answer back costs two thread wake-ups and GIL hand-overs — more than a compiled
model's call on a few rows — while a call that turns out slow sends the next small batches
back to the thread, so the loop is never held longer than about one such call.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

Rows = Any
"""A request's rows: anything with a length (a list of row dicts, or `Columns`)."""
Outputs = tuple[Any, Any]
"""Labels and probabilities, one per row (lists or arrays): sliced back to each request."""
PredictFn = Callable[[Rows], Outputs]
CombineFn = Callable[[list[Rows]], Rows]
BatchHook = Callable[[int, int, float], None]


@dataclass
class _Item:
    rows: Rows
    future: asyncio.Future[Outputs]


class BatcherClosed(RuntimeError):
    """The server is shutting down and takes no new predictions."""


class MicroBatcher:
    """Queue rows from many requests, predict them together in one worker thread."""

    def __init__(
        self,
        predict: PredictFn,
        *,
        max_rows: int = 64,
        max_wait_s: float = 0.002,
        on_batch: BatchHook | None = None,
        thread_init: Callable[[], object] | None = None,
        combine: CombineFn | None = None,
        inline_below_s: float = 0.0,
        inline_max_rows: int = 64,
    ) -> None:
        self._predict = predict
        self._combine: CombineFn = combine or _concatenate
        self.max_rows = max(1, max_rows)
        self.max_wait_s = max(0.0, max_wait_s)
        self._on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlship-predict", initializer=thread_init)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.inline_below_s = inline_below_s
        self.inline_max_rows = inline_max_rows
        self._small_cost_s: float | None = None
        """How long the last batch of at most `inline_max_rows` rows took (None: none timed yet)."""
        self.arriving = 0
        """Requests whose bodies are still being read: the only reason to wait for a fuller batch."""

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="mlship-batcher")

    async def call(self, fn: Callable[[Rows], Outputs], rows: Rows) -> Outputs:
        """Run `fn(rows)` on the prediction thread outside any batch (the warm-up)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, rows)

    async def predict(self, rows: Rows) -> Outputs:
        """Predict `rows` as part of the next batch; raises what the model raised."""
        if self._closing:
            raise BatcherClosed("the server is shutting down")
        future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(rows, future))
        self._wakeup.set()
        return await future

    def notify_arrival(self) -> None:
        """A request has started sending its body; wake a batcher that may be waiting for it."""
        self._wakeup.set()

    async def close(self) -> None:
        """Stop taking requests, predict everything already queued, then stop the worker."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._take()
            if self._fits_more(batch) and self.arriving > 0 and self.max_wait_s > 0:
                batch = await self._fill(batch, loop.time() + self.max_wait_s)
            await self._execute(loop, batch)

    def _take(self, batch: list[_Item] | None = None) -> list[_Item]:
        """Move queued requests into `batch` while they fit (one oversized request goes alone)."""
        batch = batch if batch is not None else []
        rows = sum(len(i.rows) for i in batch)
        while self._queue:
            nxt = self._queue[0]
            if batch and rows + len(nxt.rows) > self.max_rows:
                break
            self._queue.popleft()
            batch.append(nxt)
            rows += len(nxt.rows)
        return batch

    def _fits_more(self, batch: list[_Item]) -> bool:
        return sum(len(i.rows) for i in batch) < self.max_rows

    async def _fill(self, batch: list[_Item], deadline: float) -> list[_Item]:
        loop = asyncio.get_running_loop()
        while self._fits_more(batch) and self.arriving > 0 and not self._closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                break
            batch = self._take(batch)
        return batch

    async def _execute(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        live = [i for i in batch if not i.future.done()]  # a client that went away needs no answer
        if not live:
            return
        rows = self._combine([i.rows for i in live])
        small = len(rows) <= self.inline_max_rows
        try:
            if small and self._inline():
                (labels, probabilities), seconds = self._timed(rows)
            else:
                (labels, probabilities), seconds = await loop.run_in_executor(self._executor, self._timed, rows)
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request, which answers 500
            for item in live:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        if small:
            self._small_cost_s = seconds
        if self._on_batch is not None:
            self._on_batch(len(live), len(rows), seconds)
        start = 0
        for item in live:
            end = start + len(item.rows)
            if not item.future.done():
                item.future.set_result((labels[start:end], probabilities[start:end]))
            start = end

    def _timed(self, rows: Rows) -> tuple[Outputs, float]:
        """The model call and its own duration (not the hand-off's: that is what inlining saves)."""
        started = time.perf_counter()
        outputs = self._predict(rows)
        return outputs, time.perf_counter() - started

    def _inline(self) -> bool:
        """Whether a small batch runs on the loop: the last one was timed and took under the bound."""
        return self._small_cost_s is not None and self._small_cost_s < self.inline_below_s


def _concatenate(parts: list[Rows]) -> Rows:
    """Lists of rows → one list (the default: `combine` handles other batch types)."""
    return [row for part in parts for row in part]
