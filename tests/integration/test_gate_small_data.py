"""A small team's first gate: 569 rows, a good model, and a group assigned at random.

scikit-learn's breast-cancer data (569 rows, 30 numeric columns; 114 rows in the test split)
with a two-valued `group` column drawn at random as the audited attribute. There is nothing
unfair to find, and too few rows to show fairness either: by default the gate passes with a
visible ⚠ (not enough evidence) and says what would settle it; with
`fairness_inconclusive = "fail"` it fails, and the line that says what to change names the
evidence and that setting, not the limits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from mlship.cli import app
from mlship.commands import register_all
from mlship.model.train import train
from mlship.settings import load_settings
from tests.conftest import _toml
from tests.support.http_recorder import recorder

register_all(app)
runner = CliRunner()


@pytest.fixture(scope="module")
def small_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from sklearn.datasets import load_breast_cancer

    root = tmp_path_factory.mktemp("cancer")
    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    frame["group"] = np.random.default_rng(0).choice(["a", "b"], len(frame))  # assigned at random
    frame.to_csv(root / "cancer.csv", index=False)
    features = [c for c in frame.columns if c not in ("target", "group")]
    base = {
        "model_name": "cancer",
        "target": "target",
        "id_column": "",
        "sensitive_feature": "group",
        "categorical_features": [],
        "numeric_features": features,
        "data": "cancer.csv",
        "estimator": "mlship.model.estimators:logistic_regression",
    }
    relaxed = {"latency_p99_ms": 5000.0, "latency_rows": 20}
    for name, gates in (("default.toml", relaxed), ("strict.toml", {**relaxed, "fairness_inconclusive": "fail"})):
        (root / name).write_text("".join(f"{k} = {_toml(v)}\n" for k, v in {**base, "gates": gates}.items()))
    result = train(load_settings(root / "default.toml"))
    assert result.metrics["roc_auc"] > 0.98  # a good model
    return root, result.run_model_uri


def _gate(root: Path, config: str, candidate: str, out: str, *extra: str) -> tuple[int, str, dict[str, Any]]:
    argv = ["--config", str(root / config), "gate", "--candidate", candidate, "--no-champion"]
    result = runner.invoke(app, [*argv, "--report-dir", str(root / out), *extra])
    return result.exit_code, result.stdout, json.loads((root / out / "gate.json").read_text())


def test_a_good_model_on_small_data_passes_with_a_visible_warning_by_default(
    small_project: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlship import notify
    from mlship.model.gates.verdict import GATE_WARNING_TAG, gate_label
    from mlship.registry import Registry

    root, candidate = small_project
    monkeypatch.delenv("GITHUB_RUN_ID", raising=False)
    with recorder() as hook:
        monkeypatch.setenv(notify.WEBHOOK_ENV, hook.url + "/hook")
        code, out, report = _gate(root, "default.toml", candidate, "default", "--register")
    assert code == 0, out
    # the notification carries the ⚠ and what is unsettled
    text = hook.requests[0].body["text"]
    assert text.startswith("⚠️ mlship gate PASS ⚠ NOT ENOUGH EVIDENCE: ") and "would settle it" in text
    # the registry records it on the version the gate registered
    registry = Registry.from_settings(load_settings(root / "default.toml"))
    record = registry.version_record("cancer", registry.alias_version("cancer", "challenger") or "")
    assert record["mlship.gate"] == "pass" and "not enough evidence" in record[GATE_WARNING_TAG]
    assert gate_label(record) == "pass ⚠"
    assert report["verdict"] == "pass"
    statuses = {g["name"]: g["status"] for g in report["gates"]}
    assert "inconclusive" in (statuses["fairness.demographic_parity"], statuses["fairness.equalized_odds"])
    assert "fail" not in statuses.values()
    warned = report["inconclusive"]
    assert warned and all(not w["blocking"] for w in warned)
    assert all(w["setting"] == 'gates.fairness_inconclusive = "warn"' for w in warned)
    dp = next(g for g in report["gates"] if g["name"] == "fairness.demographic_parity")
    if dp["status"] == "inconclusive":
        assert "rows per group (now " in dp["settle"]
    # the CLI's last two lines: the verdict with its ⚠, then what would settle it
    last, verdict = out.strip().splitlines()[-1], out.strip().splitlines()[-2]
    assert verdict.startswith("⚠️ gate PASS, not enough evidence:") and "passes with ⚠ not enough evidence" in verdict
    assert last.startswith("⚠️ fairness.") and ("would settle it" in last or "negatives in every group" in last)
    assert last.endswith('let pass by gates.fairness_inconclusive = "warn"')
    md = (root / "default" / "gate.md").read_text()
    assert md.startswith("## ⚠️ **Gate passed, not enough evidence**")
    assert "### ⚠️ Not enough evidence" in md and "passes with this warning" in md


def test_the_same_model_fails_when_fairness_must_be_shown(small_project: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlship import notify

    root, candidate = small_project
    monkeypatch.delenv("GITHUB_RUN_ID", raising=False)
    with recorder() as hook:
        monkeypatch.setenv(notify.WEBHOOK_ENV, hook.url + "/hook")
        code, out, report = _gate(root, "strict.toml", candidate, "strict")
    assert code == 1, out
    failed = hook.requests[0].body["text"]
    assert failed.startswith("❌ mlship gate FAIL: ") and "NOT ENOUGH EVIDENCE" not in failed
    assert report["verdict"] == "fail"
    blocking = [w["gate"] for w in report["inconclusive"] if w["blocking"]]
    assert blocking and all(name.startswith("fairness.") for name in blocking)
    last = out.strip().splitlines()[-1]
    assert last.startswith("to change what failed: fairness.")
    assert "⚠ not enough evidence: " in last and 'or gates.fairness_inconclusive = "warn"' in last
    # the limits are fine; the evidence is thin: the line does not send the user to the limits
    assert "max_demographic_parity_difference" not in last and "max_equalized_odds_difference" not in last
    md = (root / "strict" / "gate.md").read_text()
    assert md.startswith("## ❌ **Gate failed**") and "fails the gate" in md
