"""`mlship drift --model`: prediction drift even when the reference file carries no predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlship.cli import app
from mlship.commands import register_all
from mlship.data.synth import generate
from mlship.errors import ConfigError
from mlship.model.train import TrainResult
from mlship.monitoring.drift import compare, detect, load_current, score
from mlship.registry import Registry
from mlship.settings import Settings, load_settings

register_all(app)


def test_model_scores_both_sides_and_reports_prediction_drift(
    project: Path, trained_project: tuple[Path, TrainResult]
) -> None:
    root, trained = trained_project
    (project / "pyproject.toml").write_text(f'[tool.mlship]\nstate_dir = "{root / ".mlship"}"\n')
    settings = load_settings(cwd=project)
    ref, same = generate(3000, seed=1), generate(3000, seed=2)
    ref.to_parquet("ref.parquet")
    generate(3000, seed=2, drift=1.0).to_parquet("drifted.parquet")

    drifted = detect(settings, Path("ref.parquet"), Path("drifted.parquet"), Path("drifted"), trained.model_uri)
    assert drifted.prediction is not None and drifted.prediction.drifted
    assert drifted.prediction_source == f"both scored with {trained.model_uri}"
    saved = json.loads(Path("drifted/drift.json").read_text())
    assert saved["prediction"]["feature"] == "prediction_probability" and saved["prediction"]["drifted"] is True
    assert Path("drifted/drift_prediction.png").is_file()
    assert "Prediction drift (both scored with" in Path("drifted/drift.md").read_text()

    # The same distribution scored by the same model: the prediction distribution does not move.
    model = Registry.from_settings(settings).load_model(trained.model_uri)
    quiet = compare(settings, score(settings, model, ref, "ref"), score(settings, model, same, "same"), ref_name="r",
                    cur_name="s")  # fmt: skip
    assert quiet.prediction is not None and not quiet.prediction.drifted and quiet.prediction.level == "ok"
    assert drifted.prediction.effect > 5 * quiet.prediction.effect

    # Without --model the reference has no predictions: no prediction drift, as before.
    assert compare(settings, ref, same, ref_name="r", cur_name="s").prediction is None

    # A prediction log keeps its own probabilities (all 0.9 here); only the reference is scored.
    with open("log.jsonl", "w") as fh:
        for rec in same.head(1500)[settings.features].to_dict("records"):
            fh.write(json.dumps({"inputs": rec, "probability": 0.9, "prediction": 1}) + "\n")
    r = CliRunner().invoke(
        app,
        ["drift", "--reference", "ref.parquet", "--current", "log.jsonl", "--report-dir", "log", "--model",
         trained.model_uri],
    )  # fmt: skip
    assert r.exit_code == 0, r.output  # features did not drift: the exit code is a feature decision
    assert "prediction_probability" in r.output and "DRIFT" in r.output
    report = json.loads(Path("log/drift.json").read_text())
    assert report["prediction_source"].endswith("current from the prediction log") and report["prediction"]["drifted"]
    plain = compare(settings, ref, load_current(Path("log.jsonl")), ref_name="r", cur_name="log")
    assert plain.prediction is None and "pass --model to score the reference" in plain.warnings[-1]


def test_bad_model_or_unscorable_data_is_one_line_exit_2(project: Path) -> None:
    generate(500, seed=1).to_parquet("ref.parquet")
    runner = CliRunner()
    r = runner.invoke(app, ["drift", "--reference", "ref.parquet", "--current", "ref.parquet", "--model", "nope"])
    assert r.exit_code == 2 and "is not a model reference" in r.output and "Traceback" not in r.output


class _Refuses:
    def predict_proba(self, frame: object) -> object:
        raise ValueError("feature names mismatch\nmore detail")


def test_score_names_what_is_missing_and_what_the_model_refused() -> None:
    settings = Settings()
    frame = generate(20, seed=1)
    with pytest.raises(ConfigError, match=r"cannot score cur: missing features \['amount'\]"):
        score(settings, _Refuses(), frame.drop(columns=["amount"]), "cur")
    with pytest.raises(ConfigError, match="the model cannot score cur: feature names mismatch"):
        score(settings, _Refuses(), frame, "cur")
