from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlship.data.io import read_table
from mlship.errors import ConfigError
from mlship.model.train import TrainResult, split, train
from mlship.registry import Registry, load_model_dir, model_input_example, model_input_schema
from mlship.settings import load_settings
from tests.conftest import make_project


def test_training_logs_a_run_that_round_trips(trained_project: tuple[Path, TrainResult]) -> None:
    root, result = trained_project
    settings = load_settings(cwd=root)
    assert 0.8 < result.metrics["roc_auc"] < 0.97  # learnable, not trivial
    assert set(result.metrics) == {"accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss"}
    registry = Registry.from_settings(settings)
    run_metrics = registry.run_metrics(result.run_id)
    assert run_metrics["roc_auc"] == pytest.approx(result.metrics["roc_auc"])

    import mlflow

    run = mlflow.MlflowClient(settings.resolved_tracking_uri).get_run(result.run_id)
    assert run.data.tags["mlship.data_sha256"] == result.data_sha256
    assert run.data.tags["mlship.git_sha"]
    assert run.data.params["seed"] == "42"
    artifacts = {
        a.path for a in mlflow.MlflowClient(settings.resolved_tracking_uri).list_artifacts(result.run_id, "reports")
    }
    assert "reports/training.png" in artifacts

    # the logged model loads back (gradient boosting survives serialization) and predicts the same
    df = read_table(settings.data_path)
    _, test_df = split(settings, df)
    model = registry.load_model(result.run_model_uri)
    proba = model.predict_proba(test_df[settings.features])[:, 1]
    from mlship.model.metrics import classification_metrics

    assert classification_metrics(test_df[settings.target], proba)["roc_auc"] == pytest.approx(
        result.metrics["roc_auc"]
    )


def test_same_data_and_seed_give_identical_predictions(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", rows=1500)
    settings = load_settings(cwd=root)
    first, second = train(settings), train(settings)
    registry = Registry.from_settings(settings)
    X = read_table(settings.data_path)[settings.features]
    a = registry.load_model(first.run_model_uri).predict_proba(X)
    b = registry.load_model(second.run_model_uri).predict_proba(X)
    assert first.run_id != second.run_id
    np.testing.assert_array_equal(a, b)


@pytest.mark.usefixtures("umask_022")
def test_export_writes_model_dir_and_metrics(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", rows=1200, estimator="mlship.model.estimators:logistic_regression")
    settings = load_settings(cwd=root)
    out = tmp_path / "out"
    result = train(settings, out=out)
    assert (out / "model" / "MLmodel").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run_id"] == result.run_id
    model = load_model_dir(out / "model")
    schema = dict(model_input_schema(out / "model"))
    assert schema["amount"] == "double" and schema["merchant_category"] == "string"
    example = model_input_example(out / "model")
    assert isinstance(example, pd.DataFrame) and len(example) == 5
    assert model.predict_proba(example).shape == (5, 2)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    # ordinary modes (umask 022 here), not the staging folder's owner-only 0700/0600
    modes = {p.relative_to(out).as_posix(): oct(p.stat().st_mode & 0o777) for p in out.rglob("*")}
    assert modes["model"] == "0o755" and modes["model/MLmodel"] == "0o644" and modes["metrics.json"] == "0o644"


@pytest.mark.parametrize(
    ("settings", "mutate", "message"),
    [
        ({"estimator": "no_such_module:f"}, None, "cannot import 'no_such_module'"),
        ({"estimator": "mlship.model.estimators:nope"}, None, "has no function 'nope'"),
        ({"estimator": "mlship.provenance:versions"}, None, "failed: TypeError"),
        ({"estimator": "builtins:slice"}, None, "did not return a classifier"),
        ({}, lambda d: d.drop(columns=["hour"]), "lacks configured column"),
        ({}, lambda d: d.assign(is_fraud=d["is_fraud"] * 2 + 1), "only binary classification"),
        ({}, lambda d: d.assign(is_fraud=0), "single class"),
        ({}, lambda d: d.assign(amount=float("nan")), r"column\(s\) amount hold no values \(all null\)"),
    ],
)
def test_bad_configuration_is_exit_2(tmp_path: Path, settings: dict[str, str], mutate: object, message: str) -> None:
    root = make_project(tmp_path / "p", rows=300, **settings)
    s = load_settings(cwd=root)
    if callable(mutate):
        df = mutate(read_table(s.data_path))
        df.to_parquet(s.data_path)
    with pytest.raises(ConfigError, match=message) as info:
        train(s)
    assert info.value.exit_code == 2
