"""Batch scoring beyond memory: both engines on the same rows, each a full `predict-batch` to a dataset.

The input is N synthetic rows in several Parquet parts whose decoded size (Arrow, in memory)
is larger than a memory cap. Each engine scores the same folder into a Parquet dataset (one part
per input, manifest, batch report with drift against the training data) in its own subprocess,
so the peak RSS (`ru_maxrss`) is that engine's alone: the local engine must stay below the cap
while its input does not fit in it (for Spark it is the driver's, which finishes every part).
Spark runs in local mode on this machine's cores; its JVM start is timed apart from the
scoring. Each engine then re-runs on its own output, which skips every part (resumption), and
the two reports must agree on rows, classes and quantiles. One JSON with both, side by side.

    uv run python benchmarks/batch.py [--rows 12000000] [--parts 24] [--cap-mib 640] [--no-spark]

`--cap-mib 0` drops the memory cap: a comparison of the two engines at a size that fits in memory
(for a machine too loaded to score 12M rows twice in reasonable time), written to
`results/batch_engines.json` so that `results/batch.json` stays the beyond-memory run.

Needs the spark extra and Java for the Spark half (`uv sync --extra spark`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHUNK = 100_000
MIB = 1024 * 1024


def main() -> None:
    args = _parse()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.model, Path(args.input), Path(args.output))))
        return
    with tempfile.TemporaryDirectory(prefix="mlship-bench-batch-") as tmp:
        root = Path(tmp)
        model = _train(root)
        decoded, on_disk = _write_parts(root / "in", args.rows, args.parts)
        cap = args.cap_mib * MIB
        if cap and decoded <= cap:
            raise SystemExit(f"the input ({decoded / MIB:.0f} MiB decoded) must exceed the cap: raise --rows")
        local = _run(root, "local", model)
        spark = None if args.no_spark else _run(root, "spark", model)
        agree = None if spark is None else _same_figures(root / "out-local", root / "out-spark")
    result: dict[str, Any] = {
        "rows": args.rows,
        "parts": args.parts,
        "chunk_size": CHUNK,
        "input_decoded_mib": round(decoded / MIB),
        "input_parquet_mib": round(on_disk / MIB),
        "memory_cap_mib": args.cap_mib or None,
        "local": {
            "seconds": round(local["seconds"], 2),
            "rows_per_second": round(local["rows"] / local["seconds"]),
            "peak_rss_mib": round(local["peak_rss"] / MIB),
            "under_cap": local["peak_rss"] < cap if cap else None,
            "rerun_seconds": round(local["rerun"], 2),
            "verdict": local["verdict"],
        },
        "spark": None
        if spark is None
        else {
            "master": spark["master"],
            "session_start_seconds": round(spark["startup"], 2),
            "seconds": round(spark["seconds"], 2),
            "rows_per_second": round(spark["rows"] / spark["seconds"]),
            "driver_peak_rss_mib": round(spark["peak_rss"] / MIB),
            "rerun_seconds": round(spark["rerun"], 2),
            "verdict": spark["verdict"],
        },
        "reports_agree": agree,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    out = Path(__file__).parent / "results" / ("batch.json" if cap else "batch_engines.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if result["local"]["under_cap"] is False:
        raise SystemExit("the local engine's peak RSS reached the memory cap")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=12_000_000)
    p.add_argument("--parts", type=int, default=24)
    p.add_argument("--cap-mib", type=int, default=640)
    p.add_argument("--no-spark", action="store_true")
    p.add_argument("--worker", choices=["local", "spark"], help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--input", help=argparse.SUPPRESS)
    p.add_argument("--output", help=argparse.SUPPRESS)
    return p.parse_args()


def _train(root: Path) -> str:
    """The default estimator, trained on 5,000 rows in a project of its own (MLflow under root)."""
    from mlship.data.synth import generate
    from mlship.model.train import train
    from mlship.settings import Settings

    os.chdir(root)
    generate(5000, seed=1).to_parquet("train.parquet")
    return train(Settings(), Path("train.parquet")).model_uri


def _write_parts(folder: Path, rows: int, parts: int) -> tuple[int, int]:
    """Write the parts one at a time; (decoded Arrow bytes, Parquet bytes) of them all."""
    import pyarrow.parquet as pq

    from mlship.data.synth import generate

    folder.mkdir()
    decoded = 0
    for i in range(parts):
        n = rows // parts + (1 if i < rows % parts else 0)
        path = folder / f"part-{i:03d}.parquet"
        generate(n, seed=100 + i).to_parquet(path)
        decoded += pq.read_table(path).nbytes
    return decoded, sum(p.stat().st_size for p in folder.iterdir())


def _run(root: Path, engine: str, model: str) -> dict[str, Any]:
    out = root / f"out-{engine}"
    cmd = [sys.executable, __file__, "--worker", engine, "--model", model, "--input", str(root / "in")]
    done = subprocess.run(
        [*cmd, "--output", str(out)], cwd=root, capture_output=True, text=True, timeout=3600, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{engine} engine failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _worker(engine: str, model: str, folder: Path, out: Path) -> dict[str, Any]:
    """Score `folder` into the dataset `out` with one engine, then re-run it (every part skipped)."""
    from mlship.settings import Settings

    settings = Settings()
    reference = folder.parent / "train.parquet"
    if engine == "local":
        from mlship.batch.engine import predict_batch

        def score() -> Any:
            return predict_batch(settings, model, folder, out, CHUNK, reference=reference, progress=False)

        first = score()
        started = time.perf_counter()
        again = score()
        rerun = time.perf_counter() - started
        if again.parts_skipped != again.parts:
            raise SystemExit(f"the local re-run scored {again.parts - again.parts_skipped} parts again")
        return {
            "rows": first.rows,
            "seconds": first.seconds,
            "peak_rss": _peak_rss(),
            "rerun": rerun,
            "verdict": first.verdict,
        }
    from mlship.batch.spark import DEFAULT_MASTER, predict_batch_spark, session

    started = time.perf_counter()
    spark = session(DEFAULT_MASTER)
    spark.range(1).count()  # the JVM and the first executor are up
    startup = time.perf_counter() - started
    try:
        first = predict_batch_spark(
            settings, model, str(folder), str(out), spark=spark, chunk_size=CHUNK, reference=reference, progress=False
        )
        started = time.perf_counter()
        again = predict_batch_spark(
            settings, model, str(folder), str(out), spark=spark, chunk_size=CHUNK, reference=reference, progress=False
        )
        rerun = time.perf_counter() - started
    finally:
        spark.stop()
    if again.parts_skipped != again.parts:
        raise SystemExit(f"the spark re-run scored {again.parts - again.parts_skipped} parts again")
    return {
        "rows": first.rows,
        "seconds": first.seconds,
        "startup": startup,
        "master": DEFAULT_MASTER,
        "peak_rss": _peak_rss(),
        "rerun": rerun,
        "verdict": first.verdict,
    }


def _same_figures(local: Path, spark: Path) -> bool:
    """Both engines' reports count the same rows and classes and read the same score quantiles."""
    keys = ("rows", "refused_by_reason", "predicted_classes", "scores")
    a, b = (json.loads((out / "_report" / "batch.json").read_text()) for out in (local, spark))
    return all(a[k] == b[k] for k in keys)


def _peak_rss() -> int:
    """This process's own peak resident set (VmHWM), in bytes.

    Not `ru_maxrss`: Linux keeps the high-water mark across fork and exec (the execve'd process
    reports at least its parent's peak), so both workers would report the peak of the parent
    that generated the input.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not Linux: the portable figure


if __name__ == "__main__":
    main()
