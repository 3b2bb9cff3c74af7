"""The CI definitions: schema-valid offline, pinned CLI, one-line `dagger call`, no stray deploys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
ENGINE = json.loads((ROOT / "dagger.json").read_text())["engineVersion"]


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def dagger_steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        step
        for job in workflow["jobs"].values()
        for step in job.get("steps", [])
        if str(step.get("uses", "")).startswith("dagger/dagger-for-github@")
    ]


@pytest.mark.parametrize(
    ("schema", "path"),
    [("vendor.github-workflows", p) for p in sorted(WORKFLOWS.glob("*.yml"))]
    + [("vendor.gitlab-ci", ROOT / ".gitlab-ci.yml")],
    ids=lambda v: v.name if isinstance(v, Path) else v,
)
def test_schema_valid(schema: str, path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dagger_step_pins_the_engine_version() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        wf = load(path)
        assert wf["env"]["DAGGER_VERSION"] == ENGINE.lstrip("v"), path.name
        for step in dagger_steps(wf):
            assert step["with"]["version"] == "${{ env.DAGGER_VERSION }}", path.name
    gitlab = load(ROOT / ".gitlab-ci.yml")
    assert gitlab["variables"]["DAGGER_VERSION"] == ENGINE


def test_ci_runs_all_in_one_step_and_publishes_reports() -> None:
    wf = load(WORKFLOWS / "ci.yml")
    on = wf.get("on", wf.get(True))
    assert "pull_request" in on and on["push"]["branches"] == ["main"]
    steps = wf["jobs"]["pipeline"]["steps"]
    assert dagger_steps(wf)[0]["with"]["call"].startswith("all ")
    text = (WORKFLOWS / "ci.yml").read_text()
    assert "GITHUB_STEP_SUMMARY" in text and "gate.md" in text
    assert any(str(s.get("uses", "")).startswith("github/codeql-action/upload-sarif@") for s in steps)
    assert any(str(s.get("uses", "")).startswith("actions/upload-artifact@") for s in steps)


def test_production_needs_the_approval_environment() -> None:
    wf = load(WORKFLOWS / "deploy.yml")
    prod = wf["jobs"]["production"]
    assert prod["environment"] == "production"
    call = dagger_steps({"jobs": {"p": prod}})[0]["with"]["call"]
    assert "--env=production" in call and "--approve" in call
    staging = dagger_steps({"jobs": {"s": wf["jobs"]["staging"]}})[0]["with"]["call"]
    assert "--env=production" not in staging and "--approve" not in staging
    assert "rollback" in dagger_steps({"jobs": {"r": wf["jobs"]["rollback"]}})[0]["with"]["call"]


def test_secrets_reach_dagger_only_as_secret_providers() -> None:
    for path in [*WORKFLOWS.glob("*.yml")]:
        for step in dagger_steps(load(path)):
            call = step["with"].get("call", "") + step["with"].get("shell", "")
            assert "secrets." not in call, path.name
            for flag in ("--password=", "--kubeconfig=", "--tracking-token="):
                if flag in call:
                    assert f"{flag}env://" in call, (path.name, flag)


def test_monitor_retrains_on_drift_and_never_deploys() -> None:
    wf = load(WORKFLOWS / "monitor.yml")
    on = wf.get("on", wf.get(True))
    assert on["schedule"]
    assert wf["jobs"]["retrain"]["if"] == "needs.drift.outputs.drift == 'true'"
    calls = " ".join(s["with"]["call"] for s in dagger_steps(wf))
    assert "monitor " in calls and "train " in calls
    assert "deploy" not in calls and "production" not in (WORKFLOWS / "monitor.yml").read_text().split("\n", 3)[3]
