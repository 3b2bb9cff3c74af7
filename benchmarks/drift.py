"""Drift on 1M rows x 10 columns (7 numeric + 3 categorical): wall time, target < 10 s."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mlship.monitoring.drift import compare
from mlship.settings import Settings


def frame(rows: int, seed: int, shift: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cols = {f"x{i}": rng.normal(shift, 1, rows) for i in range(7)}
    cols |= {f"c{i}": rng.choice(list("abcdefgh"), rows) for i in range(3)}
    return pd.DataFrame(cols)


def main() -> None:
    settings = Settings(numeric_features=[f"x{i}" for i in range(7)], categorical_features=[f"c{i}" for i in range(3)])
    rows = 1_000_000
    ref, cur = frame(rows, 1, 0.0), frame(rows, 2, 0.2)
    started = time.perf_counter()
    report = compare(settings, ref, cur, ref_name="ref", cur_name="cur")
    seconds = time.perf_counter() - started
    result = {
        "rows": rows,
        "columns": 10,
        "seconds": round(seconds, 2),
        "target_seconds": 10,
        "drifted_features": len(report.drifted),
    }
    out = Path(__file__).parent / "results" / "drift.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
