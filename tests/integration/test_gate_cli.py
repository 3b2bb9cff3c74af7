"""`mlship gate` as a user (and the Dagger module) runs it: exit codes, report folder, MLflow, registry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from mlship.cli import app
from mlship.commands import register_all
from mlship.model.train import TrainResult, train
from mlship.registry import Registry
from mlship.settings import load_settings
from tests.conftest import make_project

register_all(app)
runner = CliRunner()

# Latency has its own tests; on a shared CI machine a tight p99 would make every other test flaky.
RELAXED = {"latency_p99_ms": 5000.0, "latency_rows": 20}
PNG = b"\x89PNG\r\n\x1a\n"


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def report(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "gate.json").read_text())  # type: ignore[no-any-return]


def gate_status(folder: Path) -> dict[str, str]:
    return {g["name"]: g["status"] for g in report(folder)["gates"]}


def write_config(root: Path, name: str, **values: Any) -> Path:
    """A --config file beside the project's pyproject (same root: same data, same MLflow store)."""
    from tests.conftest import _toml

    base = {"model_name": "card-fraud", "sensitive_feature": "", "gates": RELAXED}
    merged = {**base, **values}
    path = root / name
    path.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in merged.items()))
    return path


@pytest.fixture(scope="module")
def champion_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainResult, TrainResult]:
    """3,000 rows; the default gradient boosting registered as v1 and @champion; a weak candidate trained."""
    root = make_project(tmp_path_factory.mktemp("gate") / "proj", sensitive_feature="", gates=RELAXED)
    settings = load_settings(cwd=root)
    strong = train(settings)
    registry = Registry.from_settings(settings)
    registry.register(strong.run_id, "card-fraud")
    registry.set_alias("card-fraud", "champion", "1")
    weak = train(settings.model_copy(update={"estimator": "tests.support.gate:weak"}))
    return root, strong, weak


@pytest.fixture
def in_champion_project(
    champion_project: tuple[Path, TrainResult, TrainResult], monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, TrainResult, TrainResult]:
    monkeypatch.chdir(champion_project[0])
    return champion_project


def test_first_deploy_with_the_dagger_argv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The exact command the Dagger module runs, on a directory exported by `mlship train --out`."""
    root = make_project(
        tmp_path / "p",
        sensitive_feature="",
        estimator="mlship.model.estimators:logistic_regression",
        gates={**RELAXED, "metric_floors": {"roc_auc": 0.7}},
    )
    monkeypatch.chdir(root)
    code, out, err = invoke("train", "--out", "out")
    assert code == 0, err
    candidate, data, rep = str(root / "out" / "model"), str(root / "data" / "transactions.parquet"), root / "gate"
    code, out, err = invoke("gate", "--candidate", candidate, "--data", data, "--report-dir", str(rep), "--no-champion")
    assert code == 0, err
    assert "gate PASS" in out and "versus_champion" in out
    body = report(rep)
    assert body["verdict"] == "pass" and body["champion"] is None
    assert body["data"]["rows"] == 600 and body["data"]["source"].startswith("test split of")
    statuses = gate_status(rep)
    assert statuses["versus_champion"] == "skipped" and statuses["floor.roc_auc"] == "pass"
    assert statuses["fairness.demographic_parity"] == "skipped"  # sensitive_feature = "" switches it off
    md = (rep / "gate.md").read_text()
    assert md.startswith("## ✅ **Gate passed**")
    assert "--no-champion: comparison skipped" in md and "| ⏭️ | `versus_champion` |" in md
    for png in ("curves.png", "confusion.png", "calibration.png"):
        assert (rep / png).read_bytes().startswith(PNG) and f"]({png})" in md
    assert not (rep / "fairness.png").exists()

    # the directory came from a run in this store: the verdict is logged there too
    import mlflow

    settings = load_settings(cwd=root)
    client = mlflow.MlflowClient(settings.resolved_tracking_uri)
    run = client.get_run(body["candidate"]["run_id"])
    assert body["logged_to_run"] == run.info.run_id
    assert run.data.tags["mlship.gate"] == "pass" and run.data.metrics["gate.passed"] == 1.0
    assert run.data.metrics["gate.floor.roc_auc"] == pytest.approx(body["metrics"]["candidate"]["roc_auc"])
    assert {a.path for a in client.list_artifacts(run.info.run_id, "gate")} >= {"gate/gate.md", "gate/gate.json"}

    # no @champion alias and no --no-champion: the comparison is skipped as a first deploy, not passed
    code, out, err = invoke("gate", "--candidate", candidate, "--data", data, "--report-dir", str(rep))
    assert code == 0, err
    assert "first deploy" in report(rep)["champion_note"] and gate_status(rep)["versus_champion"] == "skipped"

    # an exported directory whose run is in this store registers as a new version of that run's model
    code, out, err = invoke("gate", "--candidate", candidate, "--no-champion", "--register", "--report-dir", "reg")
    assert code == 0, err
    assert "registered: card-fraud v1 is @challenger" in out

    # another tracking store (as in a Dagger container without a server): nothing to log to, nothing to register
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    code, _, err = invoke("gate", "--candidate", candidate, "--report-dir", "other", "--register")
    assert code == 2 and "cannot register" in err and "not tracked" in err
    assert report(root / "other")["logged_to_run"] is None


def test_weaker_candidate_fails_against_the_champion(in_champion_project: Any) -> None:
    root, _strong, weak = in_champion_project
    code, out, err = invoke("gate", "--candidate", weak.run_model_uri, "--report-dir", "weak")
    assert code == 1, err
    assert "gate FAIL" in out
    body = report(root / "weak")
    assert body["champion"]["label"] == "card-fraud v1"
    vs = next(g for g in body["gates"] if g["name"] == "versus_champion")
    assert vs["status"] == "fail" and vs["value"] < -0.05 and "significant regression" in vs["detail"]
    md = (root / "weak" / "gate.md").read_text()
    assert md.startswith("## ❌ **Gate failed**") and "versus_champion" in md.splitlines()[0]
    assert "### Candidate vs champion" in md and "| **roc_auc** (primary) |" in md
    import mlflow

    run = mlflow.MlflowClient(load_settings(cwd=root).resolved_tracking_uri).get_run(weak.run_id)
    assert run.data.tags["mlship.gate"] == "fail" and run.data.metrics["gate.passed"] == 0.0


def test_passing_candidate_is_registered_as_challenger_never_champion(in_champion_project: Any) -> None:
    root, strong, _weak = in_champion_project
    code, out, err = invoke("gate", "--candidate", strong.run_model_uri, "--report-dir", "same", "--register")
    assert code == 0, err
    body = report(root / "same")
    vs = next(g for g in body["gates"] if g["name"] == "versus_champion")
    assert vs["status"] == "pass" and vs["value"] == 0.0  # the champion's own run: identical predictions
    assert body["registered"] == "card-fraud v2 is @challenger" and "registered: card-fraud v2" in out
    registry = Registry.from_settings(load_settings(cwd=root))
    assert registry.alias_version("card-fraud", "challenger") == "2"
    assert registry.alias_version("card-fraud", "champion") == "1"
    # an explicit champion works the same as the alias
    code, _, err = invoke("gate", "--candidate", "models:/card-fraud@challenger", "--champion", "models:/card-fraud/1")
    assert code == 0, err
    # a candidate that already is a registered version gets the alias, not a new version
    code, out, err = invoke("gate", "--candidate", "models:/card-fraud/1", "--register", "--report-dir", "v1")
    assert code == 0, err
    assert "registered: card-fraud v1 is @challenger" in out
    assert registry.alias_version("card-fraud", "challenger") == "1"
    assert registry.alias_version("card-fraud", "champion") == "1"
    assert [v.version for v in registry.versions("card-fraud")] == ["2", "1"]


def test_failing_candidate_is_not_registered(in_champion_project: Any) -> None:
    root, _strong, weak = in_champion_project
    registry = Registry.from_settings(load_settings(cwd=root))
    before = [v.version for v in registry.versions("card-fraud")]
    code, _, _ = invoke("gate", "--candidate", weak.run_model_uri, "--register", "--report-dir", "weak2")
    assert code == 1
    assert [v.version for v in registry.versions("card-fraud")] == before
    assert report(root / "weak2")["registered"] is None


def test_gate_md_is_written_once_with_where_it_was_logged_and_what_was_registered(
    in_champion_project: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One write of gate.md per run, after logging and registering, and the run holds that same final copy."""
    import mlflow.artifacts

    from mlship.model.gates import report as render

    root, _strong, _weak = in_champion_project
    writes: list[Path] = []
    original = render.write_text

    def counting(path: Path, text: str) -> Path:
        writes.append(path)
        return original(path, text)

    monkeypatch.setattr(render, "write_text", counting)
    code, _, err = invoke("gate", "--candidate", "models:/card-fraud/1", "--register", "--report-dir", "once")
    assert code == 0, err
    assert [p.name for p in writes] == ["gate.md"]
    local = (root / "once" / "gate.md").read_text()
    run_id = report(root / "once")["logged_to_run"]
    assert f"Logged to MLflow run `{run_id}`" in local and "Registered: card-fraud v1 is @challenger." in local
    logged = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="gate/gate.md", dst_path=str(root / "dl"))
    assert Path(logged).read_text() == local


def test_unloadable_champion_is_exit_3(in_champion_project: Any) -> None:
    _root, strong, _weak = in_champion_project
    code, _, err = invoke("gate", "--candidate", strong.run_model_uri, "--champion", "models:/card-fraud/99")
    assert code == 3
    assert err.startswith("mlship: error: champion models:/card-fraud/99 cannot be loaded") and "--no-champion" in err
    code, _, err = invoke("gate", "--candidate", strong.run_model_uri, "--champion", "/no/such/model")
    assert code == 3 and len(err.strip().splitlines()) == 1


@pytest.mark.slow  # trains its own model(s)
def test_champion_alias_whose_model_is_gone_is_exit_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_project(tmp_path / "p", rows=1500, estimator="mlship.model.estimators:logistic_regression")
    monkeypatch.chdir(root)
    code, out, err = invoke("train", "--out", "out")
    assert code == 0, err
    run_id = next(line.split()[-1] for line in out.splitlines() if line.startswith("run id:"))
    assert invoke("register", "--run", run_id, "--force", "--reason", "test: a champion to lose")[0] == 0
    assert invoke("promote", "--version", "1", "--force", "--reason", "test: a champion to lose")[0] == 0
    shutil.rmtree(root / ".mlship" / "artifacts")  # the store still names @champion; its files are gone
    code, _, err = invoke("gate", "--candidate", "out/model")
    assert code == 3 and "champion models:/card-fraud@champion cannot be loaded" in err
    code, _, err = invoke("gate", "--candidate", "out/model", "--no-champion", "--report-dir", "r")
    assert code in (0, 1), err  # --no-champion is the explicit way past it
    assert (root / "r" / "gate.json").is_file()


@pytest.mark.slow  # trains its own model(s)
def test_model_using_the_sensitive_attribute_fails_fairness(in_champion_project: Any) -> None:
    root, _strong, _weak = in_champion_project
    config = write_config(
        root,
        "biased.toml",
        sensitive_feature="customer_segment",
        categorical_features=["merchant_category", "country", "device_type", "customer_segment"],
        estimator="tests.support.gate:biased",
        gates={**RELAXED, "min_group_size": 50, "metric_floors": {}},
    )
    biased = train(load_settings(config))
    code, out, err = invoke("--config", str(config), "gate", "--candidate", biased.run_model_uri, "--no-champion")
    assert code == 1, err
    folder = root / ".mlship" / "reports" / "gate"
    statuses = gate_status(folder)
    assert statuses["fairness.demographic_parity"] == "fail" and statuses["fairness.equalized_odds"] == "fail"
    dp = next(g for g in report(folder)["gates"] if g["name"] == "fairness.demographic_parity")
    assert "beyond 0.1" in dp["detail"]  # the whole interval, not just the estimate
    # the failing gates name the setting that governs them, in the CLI's last line and in the report
    named = "fairness.demographic_parity → gates.max_demographic_parity_difference = 0.1"
    assert f"to change what failed: {named}" in out
    assert "fairness.equalized_odds → gates.max_equalized_odds_difference = 0.15" in out.splitlines()[-1]
    assert "**To change what failed**" in (folder / "gate.md").read_text()
    assert statuses["fairness.group_size"] == "pass"
    fairness = report(folder)["fairness"]
    rates = {g["group"]: g["selection_rate"] for g in fairness["groups"]}
    assert rates["student"] > 0.9 > 0.3 > rates["standard"]
    md = (folder / "gate.md").read_text()
    assert "### Fairness by `customer_segment`" in md and "| student |" in md
    assert (folder / "fairness.png").read_bytes().startswith(PNG)


def test_tiny_group_is_reported_insufficient_and_fails_closed(in_champion_project: Any) -> None:
    root, strong, _weak = in_champion_project
    config = write_config(
        root, "fair.toml", sensitive_feature="customer_segment", gates={**RELAXED, "min_group_size": 100}
    )
    code, _out, _ = invoke("--config", str(config), "gate", "--candidate", strong.run_model_uri, "--report-dir", "tiny")
    assert code == 1
    size = next(g for g in report(root / "tiny")["gates"] if g["name"] == "fairness.group_size")
    assert size["status"] == "fail" and "insufficient data: business" in size["detail"] and size["value"] < 100
    assert "insufficient data" in (root / "tiny" / "gate.md").read_text()


@pytest.mark.slow  # trains its own model(s)
def test_bloated_model_fails_size(in_champion_project: Any) -> None:
    root, _strong, _weak = in_champion_project
    config = write_config(
        root, "bloated.toml", estimator="tests.support.gate:bloated", gates={**RELAXED, "max_model_size_mb": 1.0}
    )
    bloated = train(load_settings(config))
    code, _, _ = invoke("--config", str(config), "gate", "--candidate", bloated.run_model_uri, "--no-champion")
    assert code == 1
    size = next(g for g in report(root / ".mlship/reports/gate")["gates"] if g["name"] == "size_mb")
    assert size["status"] == "fail" and size["value"] > 3.0


@pytest.mark.slow  # trains its own model(s)
def test_reproducibility_is_opt_in_and_retrains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_project(
        tmp_path / "p",
        rows=1500,
        sensitive_feature="",
        estimator="mlship.model.estimators:logistic_regression",
        gates={**RELAXED, "metric_floors": {}, "reproducibility": True},
    )
    monkeypatch.chdir(root)
    result = train(load_settings(cwd=root))
    code, _, err = invoke("gate", "--candidate", result.run_model_uri, "--no-champion")
    assert code == 0, err
    repro = next(g for g in report(root / ".mlship/reports/gate")["gates"] if g["name"] == "reproducibility")
    assert repro["status"] == "pass" and "agree exactly" in repro["detail"]
    assert "reproduces the candidate" in repro["detail"]


def test_bad_configuration_and_data_are_exit_2(in_champion_project: Any) -> None:
    root, strong, _weak = in_champion_project
    cand = strong.run_model_uri
    config = write_config(root, "metric.toml", gates={"metric_floors": {"brier": 0.1}})
    code, _, err = invoke("--config", str(config), "gate", "--candidate", cand)
    assert code == 2 and "unknown metric 'brier'" in err and len(err.strip().splitlines()) == 1
    typo = write_config(root, "typo.toml", gates={"max_latency_ms": 3})
    code, _, err = invoke("--config", str(typo), "gate", "--candidate", cand)
    assert code == 2 and "unknown key 'gates.max_latency_ms'" in err and "latency_p99_ms" in err

    df = pd.read_parquet(root / "data" / "transactions.parquet")
    df.assign(is_fraud=df.index % 3).to_csv(root / "multi.csv", index=False)
    code, _, err = invoke("gate", "--candidate", cand, "--data", "multi.csv")
    assert code == 2 and "only binary classification (0/1) is supported" in err

    df.drop(columns=["customer_segment"]).to_csv(root / "nosegment.csv", index=False)
    fair = write_config(root, "fair2.toml", sensitive_feature="customer_segment")
    code, _, err = invoke("--config", str(fair), "gate", "--candidate", cand, "--data", "nosegment.csv")
    assert code == 2 and "lacks the sensitive_feature column 'customer_segment'" in err

    lacking = write_config(root, "lacking.toml", numeric_features=["amount", "hour", "account_age_days"])
    code, _, err = invoke("--config", str(lacking), "gate", "--candidate", cand, "--no-champion")
    assert code == 2 and "cannot score the evaluation data" in err and "num_tx_24h" in err

    code, _, err = invoke("gate", "--candidate", "no-such-model")
    assert code == 2 and "is not a model reference" in err
    code, _, err = invoke("gate", "--candidate", cand, "--champion", "models:/card-fraud/1", "--no-champion")
    assert code == 2 and "contradict" in err
    task = write_config(root, "task.toml", task="regression")
    code, _, err = invoke("--config", str(task), "gate", "--candidate", cand)
    assert code == 2 and "'task'" in err


def test_separate_evaluation_file_is_used_whole(in_champion_project: Any) -> None:
    root, strong, _weak = in_champion_project
    from mlship.data.synth import write_synthetic

    write_synthetic(root / "holdout.parquet", rows=700, seed=7)
    config = write_config(root, "eval.toml", eval_data="holdout.parquet")
    code, _, err = invoke("--config", str(config), "gate", "--candidate", strong.run_model_uri, "--report-dir", "ev")
    assert code == 0, err
    data = report(root / "ev")["data"]
    assert data["rows"] == 700 and data["source"].endswith("holdout.parquet (whole file)")


@pytest.mark.slow  # trains its own model(s)
def test_run_with_a_failing_gate_registers_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_project(tmp_path / "p", sensitive_feature="", gates={**RELAXED, "metric_floors": {"roc_auc": 0.99}})
    monkeypatch.chdir(root)
    code, _, err = invoke("run")
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("mlship: error: gate failed: 1 of") and "floor.roc_auc" in last
    summary = json.loads((root / ".mlship/reports/run.json").read_text())
    assert [s["name"] for s in summary["stages"]] == ["validate", "train", "gate"]
    assert summary["success"] is False and summary["stages"][-1]["status"] == "failed"
    assert Registry.from_settings(load_settings(cwd=root)).versions("card-fraud") == []
    assert (root / ".mlship/reports/gate/gate.md").read_text().startswith("## ❌")
