"""The `mlship` command line as a user meets it: exit codes, one-line errors, reports."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mlship.cli import app
from mlship.commands import register_all
from mlship.registry import Registry
from mlship.settings import load_settings

register_all(app)
runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _all_commands() -> list[list[str]]:
    root = typer.main.get_command(app)
    paths: list[list[str]] = []
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        paths.append([name])
        paths += [[name, sub] for sub in getattr(cmd, "commands", {})]
    return paths


@pytest.mark.parametrize("path", _all_commands(), ids=" ".join)
def test_every_command_and_option_has_help(path: list[str]) -> None:
    code, out, _ = invoke(*path, "--help")
    assert code == 0
    assert "Usage:" in out
    root = typer.main.get_command(app)
    cmd = root
    for part in path:
        cmd = cmd.commands[part]  # type: ignore[attr-defined]
    assert cmd.help, f"{' '.join(path)} has no help text"
    for param in cmd.params:
        if param.param_type_name == "option" and param.name != "help":
            assert param.help, f"{' '.join(path)} {param.opts} has no help text"


SMALL_DATA_GATES = 'sensitive_feature = ""\n[tool.mlship.gates]\nlatency_p99_ms = 5000.0\nlatency_rows = 20\n'
"""A few thousand rows leave groups of ~60 (fairness: ⚠ not enough evidence), and a shared CI
machine's p99 is not what these tests are about: the gate tests cover those gates."""


def small_data_gates(root: Path, extra: str = "") -> None:
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text() if pyproject.exists() else "[tool.mlship]\n"
    pyproject.write_text(text + SMALL_DATA_GATES + extra)


def test_run_is_the_main_job(fraud_project: Path) -> None:
    small_data_gates(fraud_project)
    code, out, err = invoke("run", "--no-deploy")
    assert code == 0, err
    assert "@challenger" in out and "validate" in out and "train" in out
    summary = json.loads((fraud_project / ".mlship/reports/run.json").read_text())
    assert summary["success"] is True and summary["model_version"] == "1"
    assert [s["name"] for s in summary["stages"]] == ["validate", "train", "gate", "register"]
    assert (fraud_project / ".mlship/reports/gate/gate.md").read_text().startswith("## ✅")
    assert (fraud_project / ".mlship/reports/run.md").read_text().startswith("# mlship run: ✅")
    code, out, _ = invoke("models", "--json")
    assert code == 0 and json.loads(out)[0]["aliases"] == ["challenger"]


def test_run_synthesizes_missing_data(project: Path) -> None:
    (project / "data/expectations").mkdir(parents=True)
    (project / "data/expectations/transactions.json").write_text(
        (Path(__file__).resolve().parents[2] / "data/expectations/transactions.json").read_text()
    )
    small_data_gates(project, "metric_floors = {roc_auc = 0.75}\n")  # 1,500 rows: a weaker model
    code, out, err = invoke("run", "--rows", "1500", "--no-deploy")
    assert code == 0, err
    assert (project / "data/transactions.parquet").is_file()
    assert "synth" in out


def test_invalid_data_stops_the_run_and_registers_nothing(fraud_project: Path) -> None:
    code, _, _ = invoke("data", "synth", "--rows", "800", "--out", "bad.csv", "--corrupt", "duplicate_ids")
    assert code == 0
    code, _out, err = invoke("run", "--data", "bad.csv")
    assert code == 1
    assert "data invalid" in err and "expect_column_values_to_be_unique(transaction_id)" in err
    assert len(err.strip().splitlines()) == 1 or "Traceback" not in err
    settings = load_settings(cwd=fraud_project)
    assert Registry.from_settings(settings).versions("card-fraud") == []
    summary = json.loads((fraud_project / ".mlship/reports/run.json").read_text())
    assert summary["success"] is False and summary["stages"][-1]["name"] == "validate"


def test_validate_exit_codes(fraud_project: Path) -> None:
    assert invoke("validate")[0] == 0
    invoke("data", "synth", "--rows", "500", "--out", "neg.parquet", "--corrupt", "negative_amounts")
    code, out, _ = invoke("validate", "--data", "neg.parquet", "--report-dir", "rep")
    assert code == 1 and "INVALID" in out
    assert json.loads((fraud_project / "rep/validate.json").read_text())["failed"] == 1
    code, _, err = invoke("validate", "--data", "nope.csv")
    assert code == 2 and err.startswith("mlship: error: data file nope.csv does not exist")
    code, _, err = invoke("validate", "--data", "data.xlsx")
    assert code == 2 and "unsupported file type" in err


def test_validate_init_refuses_to_overwrite(fraud_project: Path) -> None:
    code, _, err = invoke("validate", "--init")
    assert code == 2 and "already exists" in err and "--force" in err
    code, _out, _ = invoke("validate", "--init", "--force", "--suite", "new.json")
    assert code == 0 and (fraud_project / "new.json").is_file()
    assert invoke("validate", "--suite", "new.json")[0] == 0


def test_train_register_promote_models(fraud_project: Path) -> None:
    code, out, err = invoke("train", "--out", "out")
    assert code == 0, err
    run_id = next(line.split()[-1] for line in out.splitlines() if line.startswith("run id:"))
    assert (fraud_project / "out/model/MLmodel").is_file()
    code, _, err = invoke("register", "--run", run_id)
    assert code == 1 and "never gated" in err  # the registry remembers the gate (tests/integration/test_registry_gate)
    code, out, _ = invoke("register", "--run", run_id, "--force", "--reason", "cli walk-through")
    assert code == 0 and "card-fraud v1 as @challenger" in out
    code, _, err = invoke("register", "--run", run_id, "--alias", "champion")
    assert code == 2 and "never moves 'champion'" in err
    code, _, err = invoke("promote", "--version", "1")
    assert code == 1 and "card-fraud v1 was never gated" in err
    code, out, _ = invoke("promote", "--version", "1", "--force", "--reason", "cli walk-through")
    assert code == 0 and "card-fraud@champion -> v1" in out
    code, out, _ = invoke("models")
    assert code == 0 and "@champion" in out
    assert [v["gate"] for v in json.loads(invoke("models", "--json")[1])] == ["never ran + forced"]
    code, _, err = invoke("promote", "--version", "7")
    assert code == 2 and "no version 7" in err


def test_bad_config_is_exit_2_with_the_key(project: Path) -> None:
    (project / "pyproject.toml").write_text("[tool.mlship]\nseeed = 1\n")
    code, _, err = invoke("train")
    assert code == 2
    assert "unknown key 'seeed'" in err and len(err.strip().splitlines()) == 1


def test_unexpected_errors_are_one_line_unless_debug(fraud_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlship.model.train as train_module

    def boom(*_: object, **__: object) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(train_module, "train", boom)
    code, _, err = invoke("train")
    assert (
        code == 3
        and err.strip() == "mlship: error: unexpected RuntimeError: kaboom (run with --debug for the traceback)"
    )
    # --debug adds the traceback and keeps the contract's code (it used to re-raise: exit 1)
    code, _, err = invoke("--debug", "train")
    assert code == 3
    assert "Traceback (most recent call last)" in err and "RuntimeError: kaboom" in err
    assert err.strip().splitlines()[-1] == "mlship: error: unexpected RuntimeError: kaboom"


def test_console_script_help_is_quick_to_import() -> None:
    """`mlship --help` must not import the heavy libraries (lazy imports keep it instant)."""
    code = (
        "import sys; from mlship.cli import app, main; from mlship.commands import register_all; "
        "register_all(app); heavy = [m for m in ('mlflow', 'sklearn', 'great_expectations', 'pandas', 'fastapi', "
        "'scipy', 'matplotlib') if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_run_drift_detects_and_retrains(fraud_project: Path) -> None:
    small_data_gates(fraud_project)
    code, _, err = invoke("run", "--drift", "0.8", "--no-deploy")
    assert code == 0, err
    summary = json.loads((fraud_project / ".mlship/reports/run.json").read_text())
    names = [s["name"] for s in summary["stages"]]
    assert names == [
        "validate", "train", "gate", "register", "synth-drifted", "drift", "retrain", "gate-retrain", "register-retrain"
    ]  # fmt: skip
    assert summary["model_version"] == "2"
    assert (fraud_project / ".mlship/reports/drift.md").is_file()
    assert (fraud_project / ".mlship/reports/gate-retrain/gate.md").read_text().startswith("## ✅")


def test_a_retrain_that_fails_the_gate_is_not_registered(fraud_project: Path) -> None:
    """`run --drift` used to register its retrain as @challenger without a gate; now it gates first."""
    from mlship.errors import PipelineRejected
    from mlship.job import RunSummary, retrain_on_drift

    small_data_gates(fraud_project, "metric_floors = {roc_auc = 0.9999}\n")  # no model reaches it
    settings = load_settings(cwd=fraud_project)
    ran: list[str] = []

    def stage(name: str, fn: Callable[[], str]) -> None:
        ran.append(name)
        fn()

    with pytest.raises(PipelineRejected, match="failed the gate and was not registered"):
        retrain_on_drift(settings, fraud_project / "data/transactions.parquet", 0.8, stage, RunSummary(data="drift"))
    assert ran == ["synth-drifted", "drift", "retrain", "gate-retrain"]
    assert Registry.from_settings(settings).alias_version(settings.model_name, "challenger") is None
    assert "gates.metric_floors" in (fraud_project / ".mlship/reports/gate-retrain/gate.md").read_text()


@pytest.mark.slow
def test_run_deploys_the_registered_version_and_down_stops_it(fraud_project: Path) -> None:
    """Without --no-deploy, `mlship run` ends with the new version live on local/staging."""
    import httpx

    from mlship.deploy.targets.local import free_port
    from tests.support.deploy_doubles.harness import served_version

    port = free_port()
    small_data_gates(fraud_project)
    with (fraud_project / "pyproject.toml").open("a") as f:  # switching, not latency, is tested here
        f.write(f"\n[tool.mlship.deploy]\nport = {port}\nready_timeout_s = 180.0\nverify_window_s = 2.0\n")
        f.write("smoke_latency_ms = 5000.0\nmax_p99_ms = 5000.0\n")
    live = f"http://127.0.0.1:{port}"
    try:
        code, out, err = invoke("run")
        assert code == 0, err
        assert f"live URL: {live}" in out and "mlship down" in out
        summary = json.loads((fraud_project / ".mlship/reports/run.json").read_text())
        assert [s["name"] for s in summary["stages"]] == ["validate", "train", "gate", "register", "deploy"]
        assert summary["live_url"] == live and served_version(live) == "1"
        assert httpx.get(f"{live}/version", timeout=5).json()["version"] == "1"
        assert "mlship down" in (fraud_project / ".mlship/reports/run.md").read_text()
    finally:
        code, out, _ = invoke("down")
    assert code == 0 and "router" in out
    assert served_version(live) is None


@pytest.mark.slow
def test_a_rejected_deploy_stops_the_run_with_exit_1(fraud_project: Path) -> None:
    """A release that fails its smoke test never goes live, and the run says no."""
    from mlship.deploy.targets.local import free_port
    from tests.support.deploy_doubles.harness import served_version

    port = free_port()
    small_data_gates(fraud_project)
    with (fraud_project / "pyproject.toml").open("a") as f:  # no server answers in 0.001 ms: smoke fails
        f.write(f"\n[tool.mlship.deploy]\nport = {port}\nready_timeout_s = 180.0\nsmoke_latency_ms = 0.001\n")
    try:
        code, _, err = invoke("run")
        assert code == 1
        assert "mlship: error: deploy of card-fraud v1 rolled back: smoke test failed" in err
        assert "nothing is live" in err and "Traceback" not in err
        summary = json.loads((fraud_project / ".mlship/reports/run.json").read_text())
        assert summary["success"] is False and summary["failure"].startswith("deploy: ")
        assert summary["stages"][-1]["name"] == "deploy" and summary["stages"][-1]["status"] == "failed"
        assert served_version(f"http://127.0.0.1:{port}") is None
    finally:
        invoke("down")
