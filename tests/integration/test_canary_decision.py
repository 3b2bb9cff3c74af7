"""A canary decided by its A/B events, for real on the local target (router + color processes).

Every scenario ends the way a user checks it: which version the live URL answers with,
which colors still run, and what the history says.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from mlship.cli import app
from mlship.commands import register_all
from mlship.deploy.controller import Controller
from mlship.deploy.targets.base import ColorFailed, Signal
from mlship.deploy.targets.kubernetes import KubernetesTarget
from mlship.deploy.targets.local import LocalTarget, free_port
from mlship.errors import ConfigError, PipelineRejected
from mlship.monitoring.canary import canary_arms, decide_canary
from mlship.settings import load_settings, settings_from_mapping
from tests.support.deploy_doubles.harness import (
    REPO,
    FakeRegistry,
    double_objects,
    fake_controller,
    fake_golden,
    fake_release,
    install_kubectl_double,
    kill_double_servers,
    make_settings,
    served_version,
)

register_all(app)
DESIGN = {"mde": 0.1}  # small tests: a 10-point lift needs ~300 events per arm


def write_events(path: Path, arms: dict[str, tuple[int, int]]) -> Path:
    rows = [(arm, int(i < s)) for arm, (s, n) in arms.items() for i in range(n)]
    pd.DataFrame(rows, columns=["arm", "outcome"]).sample(frac=1.0, random_state=1).to_csv(path, index=False)
    return path


@pytest.fixture
def canary(project: Path) -> Iterator[Controller]:
    """v1 live on blue, v2 as a 50% canary on green, in a project the CLI also sees."""
    deploy = {"port": free_port(), "verify_window_s": 1.0, "smoke_latency_ms": 5000.0, "max_p99_ms": 5000.0}
    (project / "pyproject.toml").write_text(
        "[tool.mlship.deploy]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in deploy.items())
    )
    settings = load_settings(cwd=project)
    target, ctl = fake_controller(settings)
    try:
        ctl.deploy(fake_release("1"))
        ctl.deploy(fake_release("2"), strategy="canary", weight=50)
        yield ctl
    finally:
        target.down()


def live_version(ctl: Controller) -> str | None:
    return served_version(ctl.target.live_url())


def test_events_favouring_the_canary_promote_it(canary: Controller, project: Path) -> None:
    events = write_events(project / "ev.csv", {"blue": (240, 600), "green": (360, 600)})
    outcome = decide_canary(events, project / "rep", ctl=canary, apply=True, design=DESIGN)
    assert outcome.report.state == "promote"
    assert outcome.deployed is not None and outcome.deployed.live == "green"
    assert live_version(canary) == "2" and canary.status()["live"] == "green"
    assert canary.target.weights() == {"green": 100}
    report = json.loads((project / "rep" / "abtest.json").read_text())
    assert report["action"] == "promoted: card-fraud v2 is live on green"
    assert report["control"]["arm"] == "blue" and report["treatment"]["arm"] == "green"
    assert "live blue = control, canary green = treatment" in report["notes"][0]


def test_events_favouring_the_live_color_reject_the_canary_via_the_cli(canary: Controller, project: Path) -> None:
    write_events(project / "ev.csv", {"blue": (360, 600), "green": (240, 600)})
    result = CliRunner().invoke(app, ["abtest", "--events", "ev.csv", "--apply", "--mde", "0.1"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("reject: horizon reached without significance")
    assert "action: rejected: canary stopped, all traffic on blue" in result.output
    assert live_version(canary) == "1"
    assert not canary.target.running("green") and canary.target.weights() == {"blue": 100}
    status = canary.status()
    assert status["live"] == "blue" and status["colors"]["green"]["release"] is None
    assert status["history"][0]["outcome"] == "rejected" and status["history"][0]["version"] == "2"
    assert json.loads(Path(".mlship/reports/deploy.json").read_text())["action"] == "reject-canary"
    with pytest.raises(ConfigError, match="no canary is running"):
        canary.reject_canary()


def test_too_few_events_is_inconclusive_and_moves_nothing(canary: Controller, project: Path) -> None:
    arms = canary_arms(canary)
    assert (arms.control, arms.treatment, arms.treatment_share) == ("blue", "green", 0.5)
    write_events(project / "ev.csv", {"blue": (10, 30), "green": (14, 30)})
    result = CliRunner().invoke(app, ["abtest", "--events", "ev.csv", "--apply", "--mde", "0.1"])
    assert result.exit_code == 0, result.output
    assert "inconclusive: keep collecting, need" in result.output
    assert "action: none: keep collecting" in result.output
    assert canary.target.weights() == {"blue": 50, "green": 50}
    assert canary.target.running("green") and canary.status()["live"] == "blue"
    assert {live_version(canary) for _ in range(40)} == {"1", "2"}


def test_a_sample_ratio_mismatch_refuses_to_move_anything(canary: Controller, project: Path) -> None:
    # The canary looks far better, but it received a quarter of the events on a 50% split.
    write_events(project / "ev.csv", {"blue": (180, 900), "green": (150, 300)})
    result = CliRunner().invoke(app, ["abtest", "--events", "ev.csv", "--apply", "--mde", "0.1"])
    assert result.exit_code == 1
    assert result.output.startswith("sample ratio mismatch") and "refused" in result.output
    assert canary.target.weights() == {"blue": 50, "green": 50} and canary.status()["live"] == "blue"
    assert json.loads(Path(".mlship/reports/abtest.json").read_text())["state"] == "srm"


class BlindAfterCanary(LocalTarget):
    """Loses the canary's counters once `blind` is set (fail closed: no metric is never healthy)."""

    blind = False

    def signal(self, color: str) -> Signal | None:
        return None if self.blind and color == "green" else super().signal(color)


class UnreachableAfterCanary(LocalTarget):
    """The way to the canary breaks once `cut` is set (a port-forward dying on kubernetes)."""

    cut = False

    def traffic_url(self, color: str) -> str:
        if self.cut and color == "green":
            raise ColorFailed("port-forward to green failed")
        return super().traffic_url(color)


@pytest.mark.parametrize(
    ("target_cls", "reason"),
    [
        (BlindAfterCanary, "rolled back: verification failed: missing signal"),
        (UnreachableAfterCanary, "port-forward to green failed"),
    ],
    ids=["counters-vanish", "canary-unreachable"],
)
def test_a_promotion_that_fails_verification_is_rolled_back_and_reported(
    project: Path, target_cls: type[LocalTarget], reason: str
) -> None:
    deploy = {"port": free_port(), "verify_window_s": 1.0, "smoke_latency_ms": 5000.0, "max_p99_ms": 5000.0}
    settings = settings_from_mapping({"deploy": deploy}, root=project)
    target, ctl = fake_controller(settings, target_cls=target_cls)
    try:
        ctl.deploy(fake_release("1"))
        ctl.deploy(fake_release("2"), strategy="canary", weight=50)
        target.blind = target.cut = True  # type: ignore[attr-defined]
        events = write_events(project / "ev.csv", {"blue": (240, 600), "green": (360, 600)})
        with pytest.raises(PipelineRejected, match=reason):
            decide_canary(events, project / "rep", ctl=ctl, apply=True, design=DESIGN)
        assert live_version(ctl) == "1" and not ctl.target.running("green")
        report = json.loads((project / "rep" / "abtest.json").read_text())
        assert report["state"] == "promote" and report["action"].startswith("promotion rolled back")
    finally:
        target.down()


@pytest.mark.slow
def test_kubernetes_canary_rejected_scales_the_canary_down_and_reselects_live(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = install_kubectl_double(tmp_path, monkeypatch)
    settings = make_settings(tmp_path, ready_timeout_s=5.0)
    target = KubernetesTarget(REPO / "deployment" / "k8s", env="staging", namespace="ml", timeout_s=5.0)
    ctl = Controller(settings, target, "staging", golden=fake_golden, registry=FakeRegistry())  # type: ignore[arg-type]
    image = "registry.invalid/mlship-model@sha256:" + "0" * 64
    try:
        ctl.deploy(fake_release("1").with_(image=image))
        ctl.deploy(fake_release("2").with_(image=image), strategy="canary", weight=10)
        # 10 % asked, one pod each is 50 %: the sample-ratio check expects the split that is real.
        assert canary_arms(ctl).treatment_share == 0.5
        events = write_events(tmp_path / "ev.csv", {"blue": (360, 600), "green": (240, 600)})
        outcome = decide_canary(events, tmp_path / "rep", ctl=ctl, apply=True, design=DESIGN)
        assert outcome.report.state == "reject" and not outcome.report.srm
        objects = double_objects(state)
        assert objects["Service/ml/mlship-model-staging"]["spec"]["selector"]["mlship.dev/color"] == "blue"
        assert objects["Deployment/ml/mlship-model-green-staging"]["spec"]["replicas"] == 0
        assert ctl.status()["history"][0]["outcome"] == "rejected"
    finally:
        target.close()
        kill_double_servers(state)
