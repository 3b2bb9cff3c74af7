"""Drift: silent on same-distribution samples, loud on synthetic drift, CLI exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from mlship.cli import app
from mlship.commands import register_all
from mlship.data.synth import generate
from mlship.monitoring.drift import compare, detect
from mlship.settings import Settings


def test_false_alarm_rate_is_low_on_same_distribution() -> None:
    settings = Settings()
    alarms = 0
    seeds = 20
    for seed in range(seeds):
        ref, cur = generate(5000, seed=seed), generate(5000, seed=seed + 1000)
        report = compare(settings, ref, cur, ref_name="a", cur_name="b")
        alarms += report.dataset_drift
    assert alarms / seeds <= 0.05


def test_drift_detected_on_drifted_data(project: Path) -> None:
    generate(5000, seed=1).to_parquet("ref.parquet")
    generate(5000, seed=2, drift=0.5).to_parquet("cur.parquet")
    report = detect(Settings(), Path("ref.parquet"), Path("cur.parquet"), project / "rep")
    assert report.dataset_drift
    assert (project / "rep" / "drift.md").exists()
    assert json.loads((project / "rep" / "drift.json").read_text())["dataset_drift"] is True
    assert any(Path(f).exists() for f in report.figures)


def test_cli_exit_codes_and_jsonl_log(project: Path) -> None:
    register_all(app)
    ref = generate(3000, seed=1)
    ref.to_parquet("ref.parquet")
    cur = generate(3000, seed=2)
    feats = Settings().categorical_features + Settings().numeric_features
    with open("log.jsonl", "w") as fh:
        for rec in cur[feats].to_dict("records"):
            fh.write(
                json.dumps({"ts": 0, "inputs": rec, "prediction": 0, "probability": 0.1, "model_version": "1"}) + "\n"
            )
    runner = CliRunner()
    ok = runner.invoke(app, ["drift", "--reference", "ref.parquet", "--current", "log.jsonl", "--report-dir", "r"])
    assert ok.exit_code == 0, ok.output
    generate(3000, seed=2, drift=0.5).to_parquet("drift.parquet")
    bad = runner.invoke(app, ["drift", "--reference", "ref.parquet", "--current", "drift.parquet", "--report-dir", "r"])
    assert bad.exit_code == 1
    missing = runner.invoke(app, ["drift", "--reference", "ref.parquet", "--current", "nope.jsonl"])
    assert missing.exit_code == 2
