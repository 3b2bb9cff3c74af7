"""Batch scoring in chunks equals in-memory scoring; output is atomic and carries the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from typer.testing import CliRunner

from mlship.cli import app
from mlship.commands import register_all
from mlship.data.synth import generate
from mlship.model.train import train
from mlship.registry import Registry
from mlship.settings import Settings


def test_chunked_scoring_matches_in_memory(project: Path) -> None:
    settings = Settings()
    generate(2000, seed=3).to_parquet("train.parquet")
    result = train(settings, Path("train.parquet"))
    data = generate(1200, seed=4)
    data.to_csv("in.csv", index=False)
    register_all(app)
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "predict-batch",
            "--model",
            result.model_uri,
            "--input",
            "in.csv",
            "--output",
            "out.parquet",
            "--chunk-size",
            "250",
        ],
    )
    assert r.exit_code == 0, r.output
    out = pd.read_parquet("out.parquet")
    model = Registry.from_settings(settings).load_model(result.model_uri)
    expected = model.predict_proba(data[settings.features])[:, 1]
    assert len(out) == 1200
    np.testing.assert_allclose(out["probability"].to_numpy(), expected)
    assert list(out[settings.id_column]) == list(data[settings.id_column])
    assert pq.read_schema("out.parquet").metadata[b"mlship.model_uri"]
    bad = runner.invoke(
        app, ["predict-batch", "--model", result.model_uri, "--input", "nope.csv", "--output", "x.parquet"]
    )
    assert bad.exit_code == 2 and not Path("x.parquet").exists()


def test_parquet_input_and_unsupported_suffix(project: Path) -> None:
    from mlship.errors import ConfigError
    from mlship.monitoring.batch import iter_chunks

    generate(700, seed=5).to_parquet("in.parquet")
    assert [len(c) for c in iter_chunks(Path("in.parquet"), 300)] == [300, 300, 100]
    Path("in.txt").write_text("x")
    try:
        list(iter_chunks(Path("in.txt"), 10))
    except ConfigError as exc:
        assert "unsupported" in str(exc)
    else:
        raise AssertionError("expected ConfigError")
