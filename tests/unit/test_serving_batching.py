"""Adaptive micro-batching: concurrent requests share model calls; an idle server never waits."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from mlship.serving.batching import BatcherClosed, MicroBatcher


class Recorder:
    """A 'model' that remembers each call's size and the thread it ran on."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None) -> None:
        self.calls: list[int] = []
        self.threads: set[str] = set()
        self.delay = delay
        self.fail_on = fail_on

    def __call__(self, rows: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
        self.calls.append(len(rows))
        self.threads.add(threading.current_thread().name)
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on and any(r.get("id") == self.fail_on for r in rows):
            raise ValueError("bad row")
        return [r["id"] for r in rows], [float(len(rows))] * len(rows)


def rows(*ids: str) -> list[dict[str, Any]]:
    return [{"id": i} for i in ids]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def started(model: Recorder) -> None:
    """Until the model's first call has started: the event itself, not a few ms that load can stretch."""
    deadline = time.monotonic() + 30
    while not model.calls:
        assert time.monotonic() < deadline, "the model was never called"
        await asyncio.sleep(0.001)


def test_concurrent_requests_are_predicted_together_and_answered_separately() -> None:
    model = Recorder(delay=0.02)
    seen: list[tuple[int, int]] = []

    async def scenario() -> list[Any]:
        batcher = MicroBatcher(model, max_rows=64, max_wait_s=0, on_batch=lambda r, n, s: seen.append((r, n)))
        batcher.start()
        first = asyncio.ensure_future(batcher.predict(rows("a")))
        await started(model)  # the first call is running; the next ten queue behind it
        rest = [batcher.predict(rows(f"r{i}", f"s{i}")) for i in range(10)]
        out = await asyncio.gather(first, *rest)
        await batcher.close()
        return out

    out = run(scenario())
    assert model.calls == [1, 20]  # eleven requests, two model calls
    assert out[0] == (["a"], [1.0])
    assert out[3] == (["r2", "s2"], [20.0, 20.0])  # each request gets its own slice back
    assert seen == [(1, 1), (10, 20)]
    assert all(t.startswith("mlship-predict") for t in model.threads)  # off the event loop


def test_batches_never_exceed_max_rows_but_an_oversized_request_runs_alone() -> None:
    model = Recorder(delay=0.01)

    async def scenario() -> None:
        batcher = MicroBatcher(model, max_rows=4, max_wait_s=0)
        batcher.start()
        blocker = asyncio.ensure_future(batcher.predict(rows("x")))
        await started(model)
        await asyncio.gather(
            blocker,
            batcher.predict(rows("a", "b", "c")),
            batcher.predict(rows("d", "e")),
            batcher.predict(rows(*"0123456789")),
        )
        await batcher.close()

    run(scenario())
    assert model.calls == [1, 3, 2, 10]


def test_an_idle_batcher_does_not_wait_for_company() -> None:
    model = Recorder()

    async def scenario() -> float:
        batcher = MicroBatcher(model, max_rows=64, max_wait_s=30.0)
        batcher.start()
        started = time.perf_counter()
        await batcher.predict(rows("solo"))
        elapsed = time.perf_counter() - started
        await batcher.close()
        return elapsed

    # Far below max_wait_s: nothing else was arriving. Waiting for company would take the whole 30 s;
    # one prediction never takes 10 s, however loaded the machine (a tight bound would measure the load).
    assert run(scenario()) < 10.0


def test_it_waits_briefly_for_requests_still_arriving() -> None:
    model = Recorder()

    async def scenario() -> None:
        batcher = MicroBatcher(model, max_rows=64, max_wait_s=0.5)
        batcher.start()
        batcher.arriving = 1  # a body is being received

        async def late() -> Any:
            await asyncio.sleep(0.02)
            batcher.arriving -= 1
            return await batcher.predict(rows("late"))

        await asyncio.gather(batcher.predict(rows("early")), late())
        await batcher.close()

    run(scenario())
    assert model.calls == [2]


def test_the_wait_is_bounded_by_max_wait() -> None:
    model = Recorder()

    async def scenario() -> float:
        batcher = MicroBatcher(model, max_rows=64, max_wait_s=0.05)
        batcher.start()
        batcher.arriving = 1  # announced but never comes
        started = time.perf_counter()
        await asyncio.wait_for(batcher.predict(rows("a")), 60)  # an unbounded wait fails here, not hangs
        elapsed = time.perf_counter() - started
        batcher.arriving = 0
        await batcher.close()
        return elapsed

    elapsed = run(scenario())
    # The lower bound is exact (it waited); the upper one only catches a wait far beyond max_wait_s
    # (0.05 s): a loaded machine delays a wake-up, so 1 s of headroom was a bound on the load.
    assert 0.04 <= elapsed < 20.0
    assert model.calls == [1]


def test_a_model_error_reaches_every_request_of_that_batch_only() -> None:
    model = Recorder(delay=0.01, fail_on="bad")

    async def scenario() -> list[Any]:
        batcher = MicroBatcher(model, max_rows=64, max_wait_s=0)
        batcher.start()
        first = asyncio.ensure_future(batcher.predict(rows("ok1")))
        await started(model)
        out = await asyncio.gather(
            first, batcher.predict(rows("bad")), batcher.predict(rows("ok2")), return_exceptions=True
        )
        after = await batcher.predict(rows("ok3"))
        await batcher.close()
        return [*out, after]

    first, bad, same_batch, after = run(scenario())
    assert first == (["ok1"], [1.0])
    assert isinstance(bad, ValueError) and isinstance(same_batch, ValueError)
    assert after == (["ok3"], [1.0])  # the batcher survives


def test_close_finishes_queued_work_then_refuses_new_requests() -> None:
    model = Recorder(delay=0.01)

    async def scenario() -> list[Any]:
        batcher = MicroBatcher(model, max_rows=64, max_wait_s=0)
        batcher.start()
        pending = [asyncio.ensure_future(batcher.predict(rows(str(i)))) for i in range(5)]
        await asyncio.sleep(0)
        await batcher.close()
        with pytest.raises(BatcherClosed):
            await batcher.predict(rows("late"))
        return [p.result() for p in pending]

    assert [labels for labels, _ in run(scenario())] == [["0"], ["1"], ["2"], ["3"], ["4"]]


def test_a_cancelled_request_is_not_predicted() -> None:
    model = Recorder(delay=0.02)

    async def scenario() -> None:
        batcher = MicroBatcher(model, max_rows=64, max_wait_s=0)
        batcher.start()
        first = asyncio.ensure_future(batcher.predict(rows("a")))
        await started(model)
        gone = asyncio.ensure_future(batcher.predict(rows("gone")))
        await asyncio.sleep(0)
        gone.cancel()
        await first
        await batcher.close()  # finishes queued work: a cancelled request still queued would be predicted here

    run(scenario())
    assert model.calls == [1]


def test_call_runs_on_the_prediction_thread_with_its_initializer() -> None:
    marks: list[str] = []

    async def scenario() -> Any:
        batcher = MicroBatcher(Recorder(), thread_init=lambda: marks.append(threading.current_thread().name))
        out = await batcher.call(lambda r: ([threading.current_thread().name], []), rows("w"))
        await batcher.close()
        return out

    labels, _ = run(scenario())
    assert marks == labels


def test_a_cheap_small_batch_runs_on_the_loop_and_a_slow_one_goes_back_to_the_thread() -> None:
    """With `inline_below_s`, a small batch runs on the event loop once the last small batch was timed
    under the bound; a call that took longer sends the next one to the prediction thread, and a batch
    over `inline_max_rows` always goes there."""
    model = Recorder()

    async def scenario() -> list[str]:
        batcher = MicroBatcher(model, max_rows=64, max_wait_s=0, inline_below_s=0.05, inline_max_rows=2)
        batcher.start()
        where = []
        for ids, delay in ((("a",), 0.0), (("b",), 0.1), (("c",), 0.0), (("d",), 0.0), (("e", "f", "g"), 0.0)):
            model.delay = delay
            model.threads.clear()
            await batcher.predict(rows(*ids))
            where.append(next(iter(model.threads)))
        await batcher.close()
        return where

    loop_thread = threading.current_thread().name
    where = run(scenario())
    assert where[0].startswith("mlship-predict")  # nothing timed yet: the thread
    assert where[1] == loop_thread  # "a" took under the bound: "b" runs on the loop (and takes 0.1 s)
    assert where[2].startswith("mlship-predict")  # "b" was slow: back to the thread
    assert where[3] == loop_thread  # "c" was quick again
    assert where[4].startswith("mlship-predict")  # three rows: over inline_max_rows
