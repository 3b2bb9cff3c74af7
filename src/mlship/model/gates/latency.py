"""The latency gate: single-row predictions timed on the path `mlship serve` takes, by CPU time."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from mlship.model.gates.types import GateResult, LatencyStats, LoadedModel, first_line, setting_line
from mlship.serving.model import ModelSource, request_rows, served_view

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

    from mlship.settings import Settings


def measure_latency(
    predict: Callable[[list[dict[str, Any]]], Any],
    rows: list[dict[str, Any]],
    calls: int,
    warmup: int = 10,
    path: str = "",
) -> LatencyStats:
    """Time `calls` single-row predictions after `warmup` ones, by CPU time; throughput from one batch call.

    `predict` is the server's own `ServedModel.predict` and `rows` are request rows, so this
    times what ships (the compiled path when the server uses it). The gated figure is the
    process CPU time of each call (`time.process_time`, all threads): it is what the model
    costs, and it does not grow when other processes take the CPU — wall time on a busy
    runner measures the machine (the same model gave p99 46, 96 and 119 ms there). A model
    that waits instead of computing would pass on CPU time, so the fastest wall time of all
    calls (a minimum: one undisturbed call is enough) counts too. Queueing under real traffic
    is the deploy's verify window's job. One native thread, as a serving worker runs.
    """
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)

    if not rows:
        raise ValueError("no complete rows to time")
    singles = [[rows[i % len(rows)]] for i in range(calls + warmup)]
    cpu, wall = [], []
    with one_native_thread():
        for batch in singles[:warmup]:
            predict(batch)
        for batch in singles[warmup:]:
            c0, w0 = time.process_time(), time.perf_counter()
            predict(batch)
            w1, c1 = time.perf_counter(), time.process_time()
            cpu.append(c1 - c0)
            wall.append(w1 - w0)
        w0 = time.perf_counter()
        predict(rows)
        batch_seconds = time.perf_counter() - w0
    cpu_ms, wall_ms = np.asarray(cpu) * 1000.0, np.asarray(wall) * 1000.0
    return LatencyStats(
        p50_ms=float(np.percentile(cpu_ms, 50)),
        p99_ms=float(np.percentile(cpu_ms, 99)),
        single_rows=calls,
        batch_rows=len(rows),
        batch_rows_per_s=len(rows) / batch_seconds if batch_seconds > 0 else math.inf,
        wall_p50_ms=float(np.percentile(wall_ms, 50)),
        wall_p99_ms=float(np.percentile(wall_ms, 99)),
        wall_min_ms=float(wall_ms.min()),
        path=path,
    )


def served_latency(cand: LoadedModel, X: pd.DataFrame, settings: Settings) -> LatencyStats | GateResult:
    """The candidate as `mlship serve` would hold it (same loaded object, same pipeline choice), timed."""
    name = "latency.p99_ms"
    source = ModelSource(
        ref=cand.ref, uri=cand.uri, name=cand.name or "", version=cand.version or "", run_id=cand.run_id
    )
    served = served_view(cand.model, cand.directory, source, settings)
    rows = request_rows(served, X)
    setting = setting_line("latency_p99_ms", settings.gates.latency_p99_ms)
    if not rows:
        return GateResult(
            name,
            "fail",
            None,
            settings.gates.latency_p99_ms,
            "no evaluation row without a missing value to time",
            setting=setting,
        )
    try:
        return measure_latency(served.predict, rows, settings.gates.latency_rows, path=served.compile_note)
    except Exception as exc:  # noqa: BLE001 — a model the server cannot call fails the gate
        return GateResult(
            name,
            "fail",
            None,
            settings.gates.latency_p99_ms,
            f"the served path failed: {first_line(exc)}",
            setting=setting,
        )


def one_native_thread() -> Any:
    """A context in which BLAS/OpenMP use one thread (threadpoolctl ships with scikit-learn)."""
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # noqa: PLC0415 - heavy, sklearn's own dependency

    return threadpool_limits(limits=1)


def latency_gate(stats: LatencyStats, budget_ms: float) -> GateResult:
    """p99 CPU time of one single-row call on the served path (or its fastest wall time) within the budget."""
    value = stats.gated_ms
    ok = value <= budget_ms
    path = stats.path.split(":", 1)[0] or "served path"
    waits = f"; the fastest call took {stats.wall_min_ms:.2f} ms by the clock" if value > stats.p99_ms else ""
    return GateResult(
        "latency.p99_ms",
        "pass" if ok else "fail",
        value,
        budget_ms,
        f"{path}: single-row CPU time p50 {stats.p50_ms:.2f} ms, p99 {stats.p99_ms:.2f} ms over "
        f"{stats.single_rows} calls (wall p99 {stats.wall_p99_ms:.2f} ms){waits}; "
        f"batch {stats.batch_rows_per_s:,.0f} rows/s",
        "≤",
        setting_line("latency_p99_ms", budget_ms),
    )
