"""The registry remembers the gate (items 6) and the model's sha256 (item 7), as a user meets them."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlship.cli import app
from mlship.commands import register_all
from mlship.data.io import fingerprint
from mlship.integrity import SIDECAR, TAG, model_digest
from mlship.model.gates.verdict import FORCED_TAG, GATE_REPORT_TAG, GATE_TAG
from mlship.registry import Registry
from mlship.settings import load_settings
from tests.conftest import make_project

register_all(app)
runner = CliRunner()

FAST = {
    "estimator": "mlship.model.estimators:logistic_regression",
    "sensitive_feature": "",
    "gates": {"latency_p99_ms": 5000.0, "latency_rows": 20, "max_flip_rate": 1.0},
}


def floors(root: Path, roc_auc: float) -> None:
    """Set the roc_auc floor (and no other): 0.999 makes the gate fail, 0.5 lets it pass."""
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text().replace("gates = {", f"gates = {{metric_floors = {{roc_auc = {roc_auc}}}, ", 1)
    pyproject.write_text(text)


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def train_run(root: Path) -> str:
    code, out, err = invoke("train")
    assert code == 0, err
    return next(line.split()[-1] for line in out.splitlines() if line.startswith("run id:"))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = make_project(tmp_path / "p", rows=1500, **FAST)
    monkeypatch.chdir(root)
    return root


def test_register_and_promote_refuse_what_the_gate_did_not_pass(project: Path) -> None:
    floors(project, 0.999)
    run_id = train_run(project)
    # never gated: refused, exit 1, saying what to do
    code, _, err = invoke("register", "--run", run_id)
    assert code == 1 and f"run {run_id} was never gated; refusing" in err and "--force --reason" in err
    # --force needs a reason (usage: exit 2)
    code, _, err = invoke("register", "--run", run_id, "--force")
    assert code == 2 and "--force needs --reason" in err
    # gate fails (an unreachable floor): refused, naming the report
    code, _, _ = invoke("gate", "--candidate", f"runs:/{run_id}/model", "--no-champion")
    assert code == 1
    code, _, err = invoke("register", "--run", run_id)
    report = project / ".mlship" / "reports" / "gate" / "gate.md"
    assert code == 1 and "failed its gate; refusing" in err and str(report) in err
    # forced with a reason: registered, the reason and the verdict recorded on the version
    code, out, err = invoke("register", "--run", run_id, "--force", "--reason", "hotfix approved by risk team")
    assert code == 0 and "card-fraud v1" in out and "overridden: hotfix approved by risk team" in err
    registry = Registry.from_settings(load_settings())
    record = registry.version_record("card-fraud", "1")
    assert record[GATE_TAG] == "fail" and record[FORCED_TAG] == "register: hotfix approved by risk team"
    assert str(report) in record[GATE_REPORT_TAG] and f"runs:/{run_id}/gate/gate.md" in record[GATE_REPORT_TAG]
    # promote refuses the failed version too, and records a forced promotion
    code, _, err = invoke("promote", "--version", "1")
    assert code == 1 and "card-fraud v1 failed its gate; refusing" in err
    code, _, _ = invoke("promote", "--version", "1", "--force", "--reason", "incident 42")
    assert code == 0
    assert registry.version_record("card-fraud", "1")[FORCED_TAG] == "promote to @champion: incident 42"
    code, out, _ = invoke("models", "--json")
    [v1] = json.loads(out)
    assert v1["gate"] == "fail + forced" and v1["aliases"] == ["challenger", "champion"]


def test_a_passing_gate_lets_register_promote_and_models_show_it(project: Path) -> None:
    floors(project, 0.5)
    run_id = train_run(project)
    code, _, err = invoke("gate", "--candidate", f"runs:/{run_id}/model", "--no-champion")
    assert code == 0, err
    # the report says once what was gated, on which data (sha256) and which code (git sha)
    md = (project / ".mlship" / "reports" / "gate" / "gate.md").read_text()
    [candidate] = [line for line in md.splitlines() if line.startswith("- **Candidate:**")]
    assert candidate == f"- **Candidate:** `runs:/{run_id}/model`"
    assert f"sha256 `{fingerprint(project / 'data' / 'transactions.parquet')}`" in md
    assert "- **Code:** git `" in md
    code, out, err = invoke("register", "--run", run_id)
    assert code == 0 and "card-fraud v1 as @challenger" in out and err == ""
    assert invoke("promote", "--version", "1")[0] == 0
    code, out, _ = invoke("models")
    assert code == 0 and "gate" in out and " pass " in out
    # `gate --register` registers after recording the verdict: v2 of a new run, verdict pass
    run2 = train_run(project)
    code, out, err = invoke("gate", "--candidate", f"runs:/{run2}/model", "--no-champion", "--register")
    assert code == 0 and "card-fraud v2 is @challenger" in out, err
    versions = {v.version: v for v in Registry.from_settings(load_settings()).versions("card-fraud")}
    assert versions["2"].gate == "pass" and versions["1"].gate == "pass"


class Payload:
    """A pickle that runs code when loaded: what a swapped model artifact can do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (Path(self.marker),))


def test_a_swapped_pickle_is_refused_before_it_runs(project: Path, tmp_path: Path) -> None:
    run_id = train_run(project)
    settings = load_settings()
    registry = Registry.from_settings(settings)
    resolved = registry.register(run_id, "card-fraud", tags={GATE_TAG: "pass"})
    # the digest is recorded on the run, the version and inside the model directory
    digest = registry.version_record("card-fraud", "1")[TAG]
    assert digest == registry.run_record(run_id)[TAG]
    exported = registry.download(resolved, tmp_path / "dl")
    assert (exported / SIDECAR).read_text().strip() == digest == model_digest(exported)
    # swap the pickle behind the registered version in the artifact store
    [stored] = [p for p in settings.artifact_root.rglob("model.pkl") if "m-" in str(p)]
    marker = tmp_path / "pwned"
    stored.write_bytes(pickle.dumps(Payload(str(marker))))
    (project / "in.parquet").write_bytes((project / "data" / "transactions.parquet").read_bytes())
    for args in (
        ["predict-batch", "--model", "models:/card-fraud/1", "--input", "in.parquet", "--output", "out.parquet"],
        ["gate", "--candidate", "models:/card-fraud/1", "--no-champion"],
        ["drift", "--reference", "in.parquet", "--current", "in.parquet", "--model", "models:/card-fraud/1"],
    ):
        code, _, err = invoke(*args)
        assert code == 2, (args, err)
        assert "does not match the sha256 recorded when it was logged" in err, (args, err)
    assert not marker.exists()  # verified before unpickling: the payload never ran


def test_serve_refuses_a_tampered_model_directory(project: Path, tmp_path: Path) -> None:
    code, _, err = invoke("train", "--out", "out")
    assert code == 0, err
    model_dir = project / "out" / "model"
    assert (model_dir / SIDECAR).is_file()
    marker = tmp_path / "pwned"
    (model_dir / "model.pkl").write_bytes(pickle.dumps(Payload(str(marker))))
    done = subprocess.run(
        [sys.executable, "-m", "mlship.cli", "serve", "--model", str(model_dir), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=project,
    )
    assert done.returncode == 2, done.stderr
    assert "does not match the sha256 recorded" in done.stderr.strip().splitlines()[-1]
    assert not marker.exists()
