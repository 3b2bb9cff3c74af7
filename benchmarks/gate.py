"""The whole `mlship gate` (every gate but the opt-in reproducibility retrain, champion included)
on a 20k-row test split: 100k synthetic rows, test_size 0.2. Target: under 15 s on 2 cores.

    uv run python benchmarks/gate.py

Measures the command as a user runs it (a fresh `mlship gate` process: interpreter start,
imports, MLflow store, both models, bootstrap, fairness, latency, robustness, plots, MLflow
logging) and, separately, `run_gate` called again in a warm process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import save

REPO = Path(__file__).resolve().parents[1]
MLSHIP = str(Path(sys.executable).with_name("mlship"))
ROWS = 100_000


def _cli(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"mlship gate failed ({proc.returncode}): {proc.stderr}")
    return seconds


def main() -> None:
    from mlship.data.synth import write_synthetic
    from mlship.model.gates.run import run_gate
    from mlship.model.train import train
    from mlship.registry import Registry
    from mlship.settings import load_settings

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
        data = root / "data" / "transactions.parquet"
        write_synthetic(data, rows=ROWS, seed=42)
        settings = load_settings(cwd=root)
        assert not settings.gates.reproducibility
        trained = train(settings)  # the champion, and (same run) the candidate: a routine re-release
        registry = Registry.from_settings(settings)
        registry.register(trained.run_id, settings.model_name)
        registry.set_alias(settings.model_name, "champion", "1")

        argv = [MLSHIP, "gate", "--candidate", trained.run_model_uri, "--data", str(data), "--report-dir", "rep"]
        # As this environment runs it (PYTHONDONTWRITEBYTECODE=1 here: every import compiled from
        # source), then as a normal install does, with bytecode cached by the first of two runs.
        cli_seconds = _cli(argv, root, dict(os.environ))
        cached_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        _cli(argv, root, cached_env)
        cli_cached_seconds = _cli(argv, root, cached_env)
        body = json.loads((root / "rep" / "gate.json").read_text())

        os.chdir(root)
        started = time.perf_counter()
        warm = run_gate(settings, trained.run_model_uri, data_path=data, report_dir=root / "rep-warm")
        warm_seconds = time.perf_counter() - started

    save(
        "gate",
        {
            "rows_synthesized": ROWS,
            "test_rows": body["data"]["rows"],
            "bootstrap_samples": settings.gates.bootstrap_samples,
            "latency_rows": settings.gates.latency_rows,
            "verdict": body["verdict"],
            "gates": {g["name"]: g["status"] for g in body["gates"]},
            "cli_wall_s": round(cli_seconds, 2),
            "cli_wall_bytecode_cached_s": round(cli_cached_seconds, 2),
            "cli_gate_s": body["seconds"],
            "cli_timings": body["timings"],
            "in_process_warm_s": round(warm_seconds, 2),
            "p99_ms": round(warm.latency.p99_ms, 2),
            "batch_rows_per_s": round(warm.latency.batch_rows_per_s),
            "target_s": 15,
            "warm_timings": warm.timings,
            "pythondontwritebytecode": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
    )


if __name__ == "__main__":
    main()
