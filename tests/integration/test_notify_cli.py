"""The commands tell the webhook what they decided, and an unreachable webhook changes nothing.

`mlship gate` and `mlship drift` run for real (trained model, synthetic data) against a real
receiver on 127.0.0.1; the same runs against a receiver answering 500 and a closed port end
with the same exit code and one warning line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlship import notify
from mlship.cli import app
from mlship.commands import register_all
from mlship.data.synth import write_synthetic
from tests.support.http_recorder import Recorder, closed_port_url, recorder

register_all(app)
runner = CliRunner()
RELAXED = '[gates]\nlatency_p99_ms = 5000.0\nlatency_rows = 20\nfairness_inconclusive = "pass"\n'


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    for name in ("GITHUB_RUN_ID", "CI_PIPELINE_URL"):
        monkeypatch.delenv(name, raising=False)
    with recorder() as rec:
        monkeypatch.setenv(notify.WEBHOOK_ENV, rec.url + "/hook")
        yield rec


def config(root: Path, name: str, extra: str = "") -> Path:
    path = root / name
    path.write_text(f'model_name = "card-fraud"\n[notify]\nformat = "json"\n{extra}\n{RELAXED}')
    return path


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stderr


@pytest.fixture(scope="module")
def drift_data(trained_project: tuple[Path, Any]) -> tuple[Path, Path, Path]:
    root, _ = trained_project
    same, moved = root / "same.parquet", root / "moved.parquet"
    write_synthetic(same, rows=3000, seed=7)
    write_synthetic(moved, rows=3000, seed=7, drift=1.0)
    return root / "data" / "transactions.parquet", same, moved


def test_gate_verdicts_are_sent(
    trained_project: tuple[Path, Any], hook: Recorder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    root, result = trained_project
    monkeypatch.chdir(root)
    code, _ = invoke(
        "--config",
        str(config(root, "pass.toml")),
        "gate",
        "--candidate",
        result.model_uri,
        "--no-champion",
        "--report-dir",
        str(tmp_path / "pass"),
    )
    assert code == 0
    floors = "[gates.metric_floors]\nroc_auc = 0.9999\n"
    strict = config(root, "fail.toml")
    strict.write_text(strict.read_text() + floors)
    code, _ = invoke(
        "--config",
        str(strict),
        "gate",
        "--candidate",
        result.model_uri,
        "--no-champion",
        "--report-dir",
        str(tmp_path / "fail"),
    )
    assert code == 1
    passed, failed = (r.body for r in hook.requests)
    assert (passed["event"], passed["verdict"], failed["verdict"]) == ("gate", "pass", "fail")
    assert failed["details"]["failed"] == ["floor.roc_auc"] and passed["details"]["failed"] == []
    assert passed["links"]["report"] == str(tmp_path / "pass" / "gate.md")
    assert hook.requests[0].path == "/hook" and hook.requests[0].method == "POST"


def test_drift_results_are_sent(
    drift_data: tuple[Path, Path, Path], hook: Recorder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    reference, same, moved = drift_data
    monkeypatch.chdir(reference.parents[1])
    cfg = str(config(reference.parents[1], "drift.toml"))
    assert (
        invoke(
            "--config",
            cfg,
            "drift",
            "--reference",
            str(reference),
            "--current",
            str(same),
            "--report-dir",
            str(tmp_path),
        )[0]
        == 0
    )
    assert (
        invoke(
            "--config",
            cfg,
            "drift",
            "--reference",
            str(reference),
            "--current",
            str(moved),
            "--report-dir",
            str(tmp_path),
        )[0]
        == 1
    )
    calm, drifted = (r.body for r in hook.requests)
    assert (calm["event"], calm["verdict"], drifted["verdict"]) == ("drift", "pass", "fail")
    assert drifted["details"]["dataset_drift"] is True and drifted["details"]["drifted_features"]
    assert drifted["links"]["report"] == str(tmp_path / "drift.md")


@pytest.mark.parametrize("failure", ["http500", "closed-port"])
def test_a_failing_webhook_never_changes_the_exit_code(
    drift_data: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, failure: str
) -> None:
    reference, same, moved = drift_data
    monkeypatch.chdir(reference.parents[1])
    cfg = str(config(reference.parents[1], "drift.toml"))

    def run_both() -> list[tuple[int, str]]:
        return [
            invoke(
                "--config",
                cfg,
                "drift",
                "--reference",
                str(reference),
                "--current",
                str(cur),
                "--report-dir",
                str(tmp_path),
            )
            for cur in (same, moved)
        ]

    if failure == "http500":
        with recorder(lambda _r: (500, {"error": "boom"}, {})) as rec:
            monkeypatch.setenv(notify.WEBHOOK_ENV, rec.url + "/hook")
            outcomes = run_both()
        assert len(rec.requests) == 2, "the webhook was really called"
    else:
        monkeypatch.setenv(notify.WEBHOOK_ENV, closed_port_url())
        outcomes = run_both()
    assert [code for code, _ in outcomes] == [0, 1]
    for _, err in outcomes:
        warnings = [line for line in err.splitlines() if line.startswith("mlship: warning: drift notification")]
        assert len(warnings) == 1 and "127.0.0.1" not in warnings[0]


@pytest.mark.slow
def test_the_main_job_tells_of_its_gate_and_drift(fraud_project: Path, hook: Recorder) -> None:
    """`mlship run` calls the same library functions as the stage commands, and tells the same things."""
    pyproject = fraud_project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text()
        + 'sensitive_feature = ""\n[tool.mlship.notify]\nformat = "json"\n'
        + "[tool.mlship.gates]\nlatency_p99_ms = 5000.0\nlatency_rows = 20\n"
    )
    code, err = invoke("run", "--no-deploy", "--drift", "0.8")
    assert code == 0, err
    events = [(r.body["event"], r.body["verdict"]) for r in hook.requests]
    assert events == [("gate", "pass"), ("drift", "fail"), ("gate", "pass")]  # the retrain is gated too
    assert "gate-retrain" in json.dumps(hook.requests[2].body)
