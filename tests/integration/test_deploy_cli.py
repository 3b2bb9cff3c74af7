"""`mlship deploy | rollback | status | down` as a user runs them (CliRunner on the real app)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlship.cli import app
from mlship.commands import register_all
from mlship.deploy.targets.local import free_port
from mlship.settings import load_settings
from tests.conftest import make_project
from tests.support.deploy_doubles.harness import (
    fake_controller,
    fake_release,
    served_version,
)

register_all(app)
runner = CliRunner()


def mlship(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def write_deploy_config(root: Path, **values: object) -> None:
    values = {"smoke_latency_ms": 5000.0, "max_p99_ms": 5000.0, **values}  # switching, not latency, is tested
    body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
    pyproject = root / "pyproject.toml"
    existing = pyproject.read_text() if pyproject.is_file() else ""
    pyproject.write_text(f"{existing}\n[tool.mlship.deploy]\n{body}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["deploy"], "--model is required"),
        (["deploy", "--model", "models:/m/1", "--env", "production"], "needs approval"),
        (["deploy", "--model", "models:/m/1", "--env", "qa"], "unknown environment"),
        (["deploy", "--model", "models:/m/1", "--image", "img:1"], "name the model twice"),
        (["deploy", "--model", "models:/m/1", "--target", "nomad"], "unknown target"),
        (["rollback"], "no previous release"),
    ],
)
def test_usage_errors_exit_2_with_one_line(project: Path, args: list[str], message: str) -> None:
    code, output = mlship(*args)
    assert code == 2, output
    assert message in output and "Traceback" not in output


def test_status_and_down_on_a_fresh_project(project: Path) -> None:
    code, output = mlship("status", "--json")
    assert code == 3, "nothing answers on the live path: status must not say all is well"
    info = json.loads(output[: output.rindex("}") + 1])
    assert info["live"] is None and not info["healthy"] and info["router"]["up"] is False
    assert output.strip().endswith(
        "mlship: error: nothing is live in staging (deploy a model: `mlship deploy --model models:/NAME@ALIAS`)"
    )
    code, output = mlship("down")
    assert code == 0 and "nothing was running" in output


def test_status_rollback_and_down_drive_what_a_deploy_started(project: Path) -> None:
    write_deploy_config(project, port=free_port(), verify_window_s=1.0)
    settings = load_settings(cwd=project)
    target, ctl = fake_controller(settings)
    try:
        ctl.deploy(fake_release("1"))
        ctl.deploy(fake_release("2"))
        code, output = mlship("status")
        assert code == 0 and "live green" in output and "card-fraud v2" in output
        assert "previous color blue retires at" in output and "no retirement process runs" in output
        code, output = mlship("status", "--json")
        info = json.loads(output)
        assert info["colors"]["blue"]["running"] and info["history"][0]["version"] == "2"
        code, output = mlship("rollback")
        assert code == 0 and "is live on blue" in output and "switch took" in output
        assert served_version(target.live_url()) == "1"
        code, output = mlship("status")  # the CLI's rollback scheduled green's retirement
        assert "previous color green retires at" in output and "no retirement process" not in output
        code, output = mlship("down")
        assert code == 0 and "router" in output and "blue" in output and "retirement of green" in output
        assert served_version(target.live_url()) is None
    finally:
        target.down()


def test_status_exits_3_with_what_is_down_when_the_live_color_died(project: Path) -> None:
    import os
    import signal

    write_deploy_config(project, port=free_port(), verify_window_s=1.0)
    settings = load_settings(cwd=project)
    target, ctl = fake_controller(settings)
    try:
        ctl.deploy(fake_release("1"))
        code, output = mlship("status")
        assert code == 0 and "router on http://127.0.0.1" in output and "supervised" in output
        os.kill(int(target._load()["colors"]["blue"]["pid"]), signal.SIGKILL)
        code, output = mlship("status", "--json")
        assert code == 3
        assert output.strip().splitlines()[-1] == (
            "mlship: error: the live color blue is not running (roll back with `mlship rollback`, "
            "or redeploy; `mlship down` stops what is left)"
        )
        assert json.loads(output[: output.rindex("}") + 1])["router"]["up"]
    finally:
        target.down()


@pytest.mark.parametrize("what", ["port", "lock"])
def test_a_busy_port_or_a_held_lock_fails_fast_before_any_model_loads(project: Path, what: str) -> None:
    """The whole `mlship deploy` process, timed: it used to take 19-25 s (the model loaded first)."""
    import os
    import socket
    import subprocess
    import time

    from mlship.deploy.lock import deploy_lock

    port = free_port()
    write_deploy_config(project, port=port)
    state_dir = project / ".mlship" / "deploy" / "staging"
    with socket.socket() as busy, deploy_lock(state_dir):
        if what == "port":
            (state_dir / "deploy.lock").unlink()
            busy.bind(("127.0.0.1", port))
            busy.listen()
        started = time.monotonic()
        child = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlship")), "deploy", "--model", "models:/card-fraud@challenger"],
            cwd=project,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stderr is not None
        stderr = child.stderr.read()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.monotonic() - started
    assert child.returncode == 3, stderr
    expected = f"port {port} is busy" if what == "port" else "another deploy (pid"
    assert stderr.startswith(f"mlship: error: {expected}"), stderr
    # CPU time, not wall time: on a loaded machine the wall clock measures the other processes
    # (a 5 s wall bound failed once at load average 13). Resolving and loading the model, which
    # preflight must precede, costs over 3 s of CPU (importing mlflow, sklearn and pandas alone: 3.5 s);
    # the CLI's imports and checks 0.5 s.
    cpu = usage.ru_utime + usage.ru_stime
    print(f"preflight {what}: {cpu:.2f} s CPU, {elapsed:.2f} s wall")
    assert cpu < 2.5, f"used {cpu:.1f} s of CPU ({elapsed:.1f} s wall): did the model load before the checks?"
    assert elapsed < 60.0, f"took {elapsed:.1f} s"


def _has_serve() -> bool:
    import typer.main

    group = typer.main.get_command(app)
    return "serve" in getattr(group, "commands", {})


@pytest.mark.slow
def test_local_deploy_of_a_real_model_with_mlship_serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole local path for real: registry, `mlship serve` colors, router, switch, rollback, down."""
    assert _has_serve(), "`mlship serve` is not registered: the local deploy has no server to start"
    import httpx
    import pandas as pd

    from mlship.model.train import train
    from mlship.registry import Registry

    root = make_project(tmp_path / "proj")
    write_deploy_config(root, port=free_port(), verify_window_s=2.0, ready_timeout_s=120.0)
    with (root / "pyproject.toml").open("a") as fh:
        fh.write("\n[tool.mlship.serve]\nprediction_log_sample = 1.0\n")  # log every row
    monkeypatch.chdir(root)
    settings = load_settings(cwd=root)
    registry = Registry.from_settings(settings)
    run = train(settings)
    registry.register(run.run_id, "card-fraud", alias="challenger")
    live = f"http://127.0.0.1:{settings.deploy.port}"
    log = root / ".mlship" / "predictions" / "blue.jsonl"
    try:
        code, output = mlship("deploy", "--model", "models:/card-fraud@challenger")
        assert code == 0, output
        assert f"live URL: {live}" in output
        assert not log.is_file() or log.read_text() == "", "smoke and verification requests are not logged"
        data = pd.read_parquet(root / settings.data)
        frame = data[settings.categorical_features + settings.numeric_features].sample(400, random_state=0)
        rows = json.loads(frame.to_json(orient="records"))
        for i in range(0, len(rows), 20):
            assert httpx.post(f"{live}/predict", json={"records": rows[i : i + 20]}, timeout=30).status_code == 200
        assert len(log.read_text().splitlines()) == 400, "exactly the real rows"
        # a client cannot hide from monitoring: its own synthetic marker is stripped at the router
        hide = {"x-mlship-synthetic": "smoke", "x-mlship-synthetic-proof": "0" * 64, "x-mlship-key-hash": "f" * 16}
        assert httpx.post(f"{live}/predict", json={"records": rows[:20]}, headers=hide, timeout=30).status_code == 200
        assert len(log.read_text().splitlines()) == 420, "client-marked rows are logged like any other"
        code, output = mlship("drift", "--reference", str(root / settings.data), "--current", str(log))
        assert code == 0, output  # no drift: the deploy's own golden rows are not in the log
        assert served_version(live) == "1"
        registry.register(run.run_id, "card-fraud", alias="challenger")
        code, output = mlship("deploy", "--model", "models:/card-fraud@challenger")
        assert code == 0, output
        assert "card-fraud v2 is live on green" in output and served_version(live) == "2"
        code, output = mlship("rollback")
        assert code == 0 and served_version(live) == "1"
    finally:
        mlship("down")
    assert served_version(live) is None
