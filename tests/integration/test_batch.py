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
    from mlship.batch.engine import iter_chunks
    from mlship.errors import ConfigError

    generate(700, seed=5).to_parquet("in.parquet")
    assert [len(c) for c in iter_chunks(Path("in.parquet"), 300)] == [300, 300, 100]
    Path("in.txt").write_text("x")
    try:
        list(iter_chunks(Path("in.txt"), 10))
    except ConfigError as exc:
        assert "unsupported" in str(exc)
    else:
        raise AssertionError("expected ConfigError")


def test_bad_rows_are_refused_or_flagged_never_scored_silently(project: Path) -> None:
    """A null `amount` is a 422 at /predict; predict-batch says so too (refuse), or flags the rows (flag)."""
    settings = Settings(estimator="mlship.model.estimators:logistic_regression")
    Path("pyproject.toml").write_text('[tool.mlship]\nestimator = "mlship.model.estimators:logistic_regression"\n')
    generate(1500, seed=3).to_parquet("train.parquet")
    result = train(settings, Path("train.parquet"))
    data = generate(400, seed=4)
    data["amount"] = data["amount"].astype("float64")
    data.loc[data.index[:30], "amount"] = np.nan
    data.loc[data.index[30:35], "amount"] = np.inf
    data.loc[data.index[40:42], "country"] = None
    data.to_parquet("in.parquet")
    register_all(app)
    runner = CliRunner()
    args = ["predict-batch", "--model", result.model_uri, "--input", "in.parquet", "--output", "out.parquet"]

    refused = runner.invoke(app, args)
    assert refused.exit_code == 1 and not Path("out.parquet").exists()
    assert refused.stderr.strip() == (
        "mlship: error: 37 of 400 rows of in.parquet fail the model's input schema "
        "(amount: missing or not a finite number (35); country: missing or not a string (2)); nothing was scored "
        "(fix the data, or pass --bad-rows flag to score the rest and flag these)"
    )

    flagged = runner.invoke(app, [*args, "--bad-rows", "flag", "--chunk-size", "100"])
    assert flagged.exit_code == 0, flagged.stderr
    assert "warning: 37 of 400 rows fail the model's input schema" in flagged.stderr
    out = pd.read_parquet("out.parquet")
    bad = out["input_error"].notna().to_numpy()
    assert bad.sum() == 37 and out.loc[bad, "probability"].isna().all() and out.loc[bad, "prediction"].isna().all()
    reasons = {"amount: missing or not a finite number", "country: missing or not a string"}
    assert set(out.loc[bad, "input_error"]) == reasons
    model = Registry.from_settings(settings).load_model(result.model_uri)
    good = data[~bad]
    np.testing.assert_allclose(out.loc[~bad, "probability"], model.predict_proba(good[settings.features])[:, 1])
    assert list(out[settings.id_column]) == list(data[settings.id_column])

    unknown = runner.invoke(app, [*args, "--bad-rows", "ignore"])
    assert unknown.exit_code == 2 and "unknown bad-row policy 'ignore'" in unknown.stderr


def test_a_truncated_parquet_is_bad_input_not_a_crash(project: Path) -> None:
    from mlship.batch.engine import iter_chunks
    from mlship.errors import ConfigError

    generate(700, seed=5).to_parquet("in.parquet")
    whole = Path("in.parquet").read_bytes()
    Path("cut.parquet").write_bytes(whole[: len(whole) // 2])
    try:
        list(iter_chunks(Path("cut.parquet"), 100))
    except ConfigError as exc:
        assert exc.exit_code == 2 and str(exc).startswith("cannot read cut.parquet:")
    else:
        raise AssertionError("expected ConfigError")
