"""Foundation targets: `mlship run` on 100k rows (< 60 s), `mlship --help` (< 0.5 s),
`mlship validate` on 1M rows (< 5 s excluding imports).

    uv run python benchmarks/foundation.py
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import save

REPO = Path(__file__).resolve().parents[1]
MLSHIP = str(Path(sys.executable).with_name("mlship"))


def help_seconds(repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([MLSHIP, "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run_seconds(rows: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "data/expectations").mkdir(parents=True)
        shutil.copy(REPO / "data/expectations/transactions.json", root / "data/expectations/transactions.json")
        shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
        subprocess.run(
            [MLSHIP, "data", "synth", "--rows", str(rows), "--out", "data/transactions.parquet"],
            cwd=root,
            check=True,
            capture_output=True,
        )
        t = time.perf_counter()
        subprocess.run([MLSHIP, "run"], cwd=root, check=True, capture_output=True)
        total = time.perf_counter() - t
        import json

        summary = json.loads((root / ".mlship/reports/run.json").read_text())
        stages = {s["name"]: s["seconds"] for s in summary["stages"]}
    return {"total_s": round(total, 2), **{f"{k}_s": round(v, 2) for k, v in stages.items()}}


def validate_seconds(rows: int) -> dict[str, float]:
    from mlship.data.synth import write_synthetic
    from mlship.data.validation import load_suite, validate_file, validate_frame

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.parquet"
        write_synthetic(path, rows=rows, seed=1)
        suite_path = REPO / "data/expectations/transactions.json"
        from mlship.data.synth import generate

        validate_frame(generate(1000, 2), load_suite(suite_path), data="warm-up", suite_name="s")  # imports, GX setup
        t = time.perf_counter()
        report = validate_file(path, suite_path)
        seconds = time.perf_counter() - t
    assert report.valid
    return {"rows": rows, "seconds": round(seconds, 2), "expectations": len(report.outcomes)}


def main() -> None:
    result = {
        "help_median_s": round(help_seconds(), 3),
        "help_target_s": 0.5,
        "run_100k": run_seconds(100_000),
        "run_target_s": 60,
        "validate_1m": validate_seconds(1_000_000),
        "validate_target_s": 5,
    }
    save("foundation", result)


if __name__ == "__main__":
    main()
