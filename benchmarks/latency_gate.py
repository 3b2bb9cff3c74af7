"""Does the latency gate's verdict survive a busy machine? Idle vs one core saturated.

    uv run python benchmarks/latency_gate.py

Trains the default pipeline (one-hot + histogram gradient boosting) and a user pipeline the
server cannot compile (a custom transformer: the plain scikit-learn path), holds each as
`mlship serve` does (a `ServedModel` with the signature's columns and the input example,
compiled only if verified equal: the object `serving.model.served_view` builds), and runs
the gate's own measurement (`gates.measure_latency`: 200 single-row calls after warm-up)
ROUNDS times idle, then ROUNDS times while a busy-loop process this script starts
saturates one core (bounded: it exits by itself after BUSY_SECONDS, and is stopped by pid
when the rounds are done). Reported per condition: the gated figure (p99 CPU time per
call), and for comparison the wall-clock p99 the gate used to take. Writes
benchmarks/results/latency_gate.json. The machine is never idle here (other jobs share
it), so "idle" means "no extra load of ours"; the load average is recorded.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from _common import save

ROWS, CALLS, ROUNDS, BUSY_SECONDS = 4000, 200, 5, 600
BUSY = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end:\n    pass\n"


def _served(factory: str) -> tuple[Any, list[dict[str, Any]]]:
    """The fitted pipeline as the server holds it: schema columns, input example, compiled if verified."""
    from mlship.data.synth import generate
    from mlship.model.train import build_estimator, split
    from mlship.serving.model import Column, ServedModel, request_rows
    from mlship.settings import Settings

    settings = Settings(estimator=factory, synth_rows=ROWS)
    train_df, test_df = split(settings, generate(ROWS, seed=1))
    model = build_estimator(settings).fit(train_df[settings.features], train_df[settings.target])
    columns = [Column(c, "string") for c in settings.categorical_features]
    columns += [Column(c, "double") for c in settings.numeric_features]
    served = ServedModel(estimator=model, columns=columns, name="bench", version="1")
    served.example = request_rows(served, test_df[settings.features].head(5))
    served.compile()
    return served, request_rows(served, test_df[settings.features])


def _rounds(served: Any, rows: list[dict[str, Any]]) -> list[dict[str, float]]:
    from mlship.model.gates.latency import measure_latency

    out = []
    for _ in range(ROUNDS):
        stats = measure_latency(served.predict, rows, CALLS, path=served.compile_note)
        out.append({"cpu_p99_ms": stats.p99_ms, "cpu_p50_ms": stats.p50_ms, "wall_p99_ms": stats.wall_p99_ms})
    return out


def _summary(idle: list[dict[str, float]], busy: list[dict[str, float]]) -> dict[str, Any]:
    def med(rows: list[dict[str, float]], key: str) -> float:
        return round(statistics.median(r[key] for r in rows), 3)

    def worst_ratio(key: str) -> float:
        """The largest busy/idle ratio over all pairs of rounds: the verdict's worst case."""
        return round(max(b[key] for b in busy) / min(i[key] for i in idle), 2)

    return {
        "idle_median": {k: med(idle, k) for k in idle[0]},
        "busy_median": {k: med(busy, k) for k in busy[0]},
        "median_ratio_busy_over_idle": {k: round(med(busy, k) / med(idle, k), 2) for k in idle[0]},
        "worst_ratio_busy_over_idle": {k: worst_ratio(k) for k in idle[0]},
        "rounds": {"idle": idle, "busy": busy},
    }


def main() -> None:
    from mlship.serving.model import ServedModel

    results: dict[str, Any] = {}
    models: dict[str, tuple[ServedModel, list[dict[str, Any]]]] = {
        "compiled (default gradient boosting)": _served("mlship.model.estimators:gradient_boosting"),
        "plain pipeline (custom transformer)": _served("tests.support.pipeline_shapes:custom_transformer"),
    }
    idle = {name: _rounds(*pair) for name, pair in models.items()}
    load_idle = os.getloadavg()[0]
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(BUSY.format(s=BUSY_SECONDS))
    busy_proc = subprocess.Popen([sys.executable, fh.name])
    try:
        time.sleep(2.0)  # let the busy loop take its core
        busy = {name: _rounds(*pair) for name, pair in models.items()}
        load_busy = os.getloadavg()[0]
    finally:
        busy_proc.terminate()
        busy_proc.wait(timeout=30)
        os.unlink(fh.name)
    for name, (served, _) in models.items():
        results[name] = {"path": served.compile_note, **_summary(idle[name], busy[name])}
    save(
        "latency_gate",
        {
            "method": "p99 of process CPU time per single-row ServedModel.predict call (time.process_time), "
            f"{CALLS} calls after 10 warm-up, {ROUNDS} rounds per condition; busy = one extra process "
            "running a pure-Python busy loop (one core saturated)",
            "load_average_1m": {"idle": round(load_idle, 2), "busy": round(load_busy, 2)},
            "models": results,
        },
    )


if __name__ == "__main__":
    main()
