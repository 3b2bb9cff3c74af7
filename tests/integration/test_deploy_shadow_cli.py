"""`mlship deploy --strategy shadow | --stop-shadow`, `mlship status [--shadow-report]` as a user runs them."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from mlship.cli import app
from mlship.commands import register_all
from mlship.deploy.targets.local import free_port
from mlship.settings import load_settings
from tests.integration.test_deploy_cli import write_deploy_config
from tests.support.deploy_doubles.harness import RECORDS, fake_controller, fake_release, served_version

register_all(app)
runner = CliRunner()


def mlship(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["deploy", "--model", "models:/m/1", "--strategy", "shadow", "--sample", "1.5"], "sample 1.5 is out of range"),
        (["deploy", "--model", "models:/m/1", "--sticky-key", "header:X-User-Id"], "--sticky-key routes a canary"),
        (["deploy", "--model", "models:/m/1", "--strategy", "canary", "--sticky-key", "ip:x"], "not header:NAME"),
        (["deploy", "--promote-shadow", "--stop-shadow"], "exclude each other"),
        (["deploy", "--stop-shadow"], "no shadow is running"),
        (["status", "--shadow-report"], "no shadow is running"),
    ],
)
def test_shadow_and_sticky_usage_errors_exit_2_with_one_line(project: Path, args: list[str], message: str) -> None:
    code, output = mlship(*args)
    assert code == 2, output
    assert message in output and "Traceback" not in output


def test_status_shows_the_shadow_writes_its_report_and_stop_shadow_ends_it(project: Path) -> None:
    write_deploy_config(project, port=free_port(), verify_window_s=1.0)
    settings = load_settings(cwd=project)
    target, ctl = fake_controller(settings)
    try:
        ctl.deploy(fake_release("1"))
        ctl.deploy(fake_release("2"), strategy="shadow", sample=1.0)
        with httpx.Client(base_url=target.live_url(), timeout=10) as client:
            for record in RECORDS * 5:
                assert client.post("/predict", json={"records": [record]}).json()["model"]["version"] == "1"
            for _ in range(3):  # requests of several rows: rows compared are not copies
                assert client.post("/predict", json={"records": RECORDS}).json()["model"]["version"] == "1"
        copies, rows = 5 * len(RECORDS) + 3, 5 * len(RECORDS) + 3 * len(RECORDS)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (target.shadow_stats() or {}).get("requests") != copies:
            time.sleep(0.05)
        code, output = mlship("status")
        assert code == 0, output
        assert "shadow: card-fraud v2 on green gets 100% of live /predict requests" in output
        assert f"{rows} rows compared ({copies} copies answered)" in output, output
        assert "0 copies waiting, 0 dropped" in output and "would be refused" not in output
        code, output = mlship("status", "--json", "--shadow-report")
        info = json.loads(output[output.index("{") : output.rindex("}") + 1])
        assert info["shadow"]["color"] == "green" and info["shadow"]["figures"]["offered"] == copies
        assert info["shadow"]["figures"]["compared_rows"] == rows and info["shadow"]["promotion_refused"] is None
        reports = settings.reports_path
        assert json.loads((reports / "shadow.json").read_text())["release"]["version"] == "2"
        assert (reports / "shadow.md").read_text().startswith("# Shadow: card-fraud v2 vs card-fraud v1")
        code, output = mlship("deploy", "--stop-shadow")
        assert code == 0, output
        assert "stop-shadow: card-fraud v2 stopped; it ran on green; blue stays live" in output
        assert served_version(target.live_url()) == "1" and not target.running("green")
        code, output = mlship("status", "--json")
        assert json.loads(output)["shadow"] is None
    finally:
        target.down()
