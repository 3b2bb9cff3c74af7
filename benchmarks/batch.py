"""Batch scoring throughput (rows/second) on 500k synthetic rows, chunk size 100k."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from mlship.data.synth import generate
from mlship.model.train import train
from mlship.monitoring.batch import predict_batch
from mlship.settings import Settings


def main() -> None:
    rows = 500_000
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        settings = Settings()
        generate(5000, seed=1).to_parquet("train.parquet")
        model = train(settings, Path("train.parquet")).model_uri
        generate(rows, seed=2).to_parquet("in.parquet")
        r = predict_batch(settings, model, Path("in.parquet"), Path("out.parquet"), chunk_size=100_000)
    result = {
        "rows": rows,
        "chunk_size": 100_000,
        "seconds": round(r.seconds, 2),
        "rows_per_second": round(rows / r.seconds),
    }
    out = Path(__file__).parent / "results" / "batch.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
