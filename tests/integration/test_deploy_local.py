"""Blue-green on the local target, for real: router and color processes on loopback.

Every fault scenario ends the same way a user would check it: the previous version is
live and answering on the live port, and the deploy said no (PipelineRejected, exit 1).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlship.deploy.controller import Controller
from mlship.deploy.lock import deploy_lock, pid_alive
from mlship.deploy.options import require_approval
from mlship.deploy.targets.base import ColorFailed
from mlship.deploy.targets.local import LocalTarget, port_free
from mlship.errors import ConfigError, InfraError, PipelineRejected
from tests.support.deploy_doubles.harness import fake_release, local_controller, served_version
from tests.waiting import wait_until


@pytest.fixture
def ctl(tmp_path: Path) -> Iterator[Controller]:
    controller = local_controller(tmp_path)
    yield controller
    controller.target.down()


def live_version(ctl: Controller) -> str | None:
    return served_version(ctl.target.live_url())


def test_first_deploy_then_switch_serves_the_new_version_and_keeps_the_old_one_warm(ctl: Controller) -> None:
    first = ctl.deploy(fake_release("1"))
    assert first.live == "blue" and live_version(ctl) == "1"
    second = ctl.deploy(fake_release("2"))
    assert second.live == "green" and live_version(ctl) == "2"
    assert ctl.target.running("blue"), "the previous color must stay up for the rollback window"
    status = ctl.status()
    assert status["live"] == "green" and status["live_url"] == ctl.target.live_url()
    assert [r["version"] for r in status["history"]] == ["2", "1"]
    report = ctl.settings.reports_path / "deploy.json"
    assert report.is_file() and '"version": "2"' in report.read_text()
    assert "live URL" in (ctl.settings.reports_path / "deploy.md").read_text()


def test_rollback_is_one_switch_to_the_warm_previous_color(ctl: Controller) -> None:
    ctl.deploy(fake_release("1"))
    ctl.deploy(fake_release("2"))
    blue_pid = ctl.target._handle("blue")["pid"]  # type: ignore[attr-defined]
    result = ctl.rollback()
    assert result.action == "rollback" and result.live == "blue"
    assert live_version(ctl) == "1"
    assert ctl.target._handle("blue")["pid"] == blue_pid, "rollback must not cold-start the color"  # type: ignore[attr-defined]
    assert ctl.status()["history"][0]["detail"].startswith("rollback")


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("exit", "exited before it was ready"),
        ("never_ready", "was not ready within"),
        ("wrong", r"smoke test failed \(golden"),
        ("errors_after:25", "error rate"),
        ("die_after:25", "stopped running"),
    ],
    ids=["fails-to-start", "never-ready", "fails-smoke", "errors-after-switch", "dies-during-verification"],
)
def test_a_bad_release_is_rolled_back_and_the_previous_version_keeps_serving(
    tmp_path: Path, fault: str, reason: str
) -> None:
    ctl = local_controller(tmp_path, ready_timeout_s=3.0)
    try:
        ctl.deploy(fake_release("1"))
        with pytest.raises(PipelineRejected, match=reason) as info:
            ctl.deploy(fake_release("2", fault))
        assert info.value.exit_code == 1
        assert "card-fraud v1 on blue is still live" in str(info.value)
        assert live_version(ctl) == "1"
        assert not ctl.target.running("green")
        state = ctl.status()
        assert state["live"] == "blue"
        assert state["history"][0]["outcome"] in ("rejected", "rolled back")
        assert state["history"][0]["version"] == "2"
    finally:
        ctl.target.down()


class RouterDiesDuringVerification(LocalTarget):
    """Kills the router right when verification starts sending traffic."""

    def traffic_url(self, color: str) -> str:
        pid = self.router_pid()
        if pid is not None and color == "green":
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not pid_alive(pid), "the killed router to be gone")
        return super().traffic_url(color)


def test_router_dying_during_verification_is_a_missing_signal_and_is_restarted(tmp_path: Path) -> None:
    ctl = local_controller(tmp_path, target_cls=RouterDiesDuringVerification)
    try:
        ctl.deploy(fake_release("1"))
        old_router = ctl.target.router_pid()  # type: ignore[attr-defined]
        with pytest.raises(PipelineRejected, match="missing signal"):
            ctl.deploy(fake_release("2"))
        new_router = ctl.target.router_pid()  # type: ignore[attr-defined]
        assert new_router is not None and new_router != old_router
        assert live_version(ctl) == "1"
    finally:
        ctl.target.down()


class UnreachableDuringVerification(LocalTarget):
    """The path to the new color breaks (a port-forward dying on kubernetes)."""

    def traffic_url(self, color: str) -> str:
        if color == "green":
            raise ColorFailed("port-forward to green failed")
        return super().traffic_url(color)


def test_losing_the_way_to_the_new_color_during_verification_switches_back(tmp_path: Path) -> None:
    ctl = local_controller(tmp_path, target_cls=UnreachableDuringVerification)
    try:
        ctl.deploy(fake_release("1"))
        with pytest.raises(PipelineRejected, match="port-forward to green failed"):
            ctl.deploy(fake_release("2"))
        assert live_version(ctl) == "1" and not ctl.target.running("green")
    finally:
        ctl.target.down()


def test_a_router_killed_with_its_supervisor_is_restarted_by_the_next_command(ctl: Controller) -> None:
    ctl.deploy(fake_release("1"))
    ctl.deploy(fake_release("2"))
    supervisor = ctl.target._load()["router"]["pid"]  # type: ignore[attr-defined]
    router = ctl.target.router_pid()  # type: ignore[attr-defined]
    os.kill(supervisor, signal.SIGKILL)
    os.kill(router, signal.SIGKILL)  # type: ignore[arg-type]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and live_version(ctl) is not None:
        time.sleep(0.05)
    assert live_version(ctl) is None
    info = ctl.status()
    assert info["live"] == "green" and info["router"]["up"], "status restarted it, serving the same color"
    assert live_version(ctl) == "2"


def test_rollback_to_an_older_version_is_a_full_bluegreen_deploy(tmp_path: Path) -> None:
    ctl = local_controller(tmp_path, rollback_window_s=0)
    try:
        for version in ("1", "2", "3"):
            ctl.deploy(fake_release(version))
        assert not ctl.target.running("blue" if ctl.status()["live"] == "green" else "green")
        result = ctl.rollback(to="1")
        assert result.action == "deploy" and result.smoke is not None and result.smoke.ok
        assert live_version(ctl) == "1"
        with pytest.raises(ConfigError, match="not in the deploy history"):
            ctl.rollback(to="42")
    finally:
        ctl.target.down()


def test_rollback_after_the_window_redeploys_the_previous_release(tmp_path: Path) -> None:
    ctl = local_controller(tmp_path, rollback_window_s=0)
    try:
        with pytest.raises(ConfigError, match="no previous release"):
            ctl.rollback()
        ctl.deploy(fake_release("1"))
        ctl.deploy(fake_release("2"))
        result = ctl.rollback()
        assert result.action == "deploy" and live_version(ctl) == "1"
    finally:
        ctl.target.down()


def test_canary_splits_traffic_then_promotes_or_aborts(ctl: Controller) -> None:
    ctl.deploy(fake_release("1"))
    canary = ctl.deploy(fake_release("2"), strategy="canary", weight=50)
    assert canary.weights == {"blue": 50, "green": 50} and canary.live == "blue"
    seen = {live_version(ctl) for _ in range(60)}
    assert seen == {"1", "2"}
    assert ctl.target.weights() == {"blue": 50, "green": 50}
    aborted = ctl.rollback()
    assert aborted.action == "abort-canary" and live_version(ctl) == "1"
    assert not ctl.target.running("green")
    ctl.deploy(fake_release("3"), strategy="canary", weight=20)
    promoted = ctl.promote_canary()
    assert promoted.live == "green" and live_version(ctl) == "3"
    with pytest.raises(ConfigError, match="no canary"):
        ctl.promote_canary()


def test_canary_needs_a_live_color_and_a_sane_weight(ctl: Controller) -> None:
    with pytest.raises(ConfigError, match="needs a live color"):
        ctl.deploy(fake_release("1"), strategy="canary", weight=10)
    with pytest.raises(ConfigError, match="out of range"):
        ctl.deploy(fake_release("1"), strategy="canary", weight=100)
    with pytest.raises(ConfigError, match="unknown strategy"):
        ctl.deploy(fake_release("1"), strategy="rolling")


def test_a_bad_canary_is_rejected_and_traffic_returns_to_the_live_color(ctl: Controller) -> None:
    ctl.deploy(fake_release("1"))
    with pytest.raises(PipelineRejected, match="error rate"):
        ctl.deploy(fake_release("2", "errors_after:21"), strategy="canary", weight=50)
    assert ctl.target.weights() == {"blue": 100}
    assert live_version(ctl) == "1"


@pytest.mark.parametrize("fault", ["errors_after:21", "wrong"], ids=["fails-verification", "fails-smoke"])
def test_a_refused_first_deploy_leaves_nothing_listening(ctl: Controller, fault: str) -> None:
    with pytest.raises(PipelineRejected, match="nothing is live"):
        ctl.deploy(fake_release("1", fault))
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{ctl.target.live_url()}/predict", json={"records": []}, timeout=5)
    assert port_free(ctl.target.port)  # type: ignore[attr-defined]
    assert not ctl.target.running("blue") and ctl.status()["live"] is None


def test_production_deploy_needs_approval_and_moves_champion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLSHIP_APPROVE", raising=False)
    with pytest.raises(ConfigError, match="needs approval"):
        require_approval("production", approve=False)
    require_approval("staging", approve=False)
    with pytest.raises(ConfigError, match="unknown environment"):
        require_approval("qa", approve=True)
    monkeypatch.setenv("MLSHIP_APPROVE", "1")
    require_approval("production", approve=False)
    ctl = local_controller(tmp_path, env="production")
    try:
        ctl.deploy(fake_release("7"))
        assert ctl.registry.aliases == {("card-fraud", "champion"): "7"}  # type: ignore[attr-defined]
        assert (tmp_path / ".mlship" / "deploy" / "production" / "history.json").is_file()
    finally:
        ctl.target.down()


def test_a_second_deploy_is_refused_while_the_lock_is_held_but_a_stale_lock_is_taken_over(ctl: Controller) -> None:
    with deploy_lock(ctl.store.dir), pytest.raises(InfraError, match="holds"):
        ctl.deploy(fake_release("1"))
    (ctl.store.dir / "deploy.lock").write_text("999999")
    ctl.deploy(fake_release("1"))
    assert not (ctl.store.dir / "deploy.lock").exists()


def test_down_stops_only_what_the_deploy_started(ctl: Controller) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ctl.deploy(fake_release("1"))
        router = ctl.target.router_pid()  # type: ignore[attr-defined]
        stopped = ctl.down()
        assert any(s.startswith("blue") for s in stopped) and any(s.startswith("router") for s in stopped)
        assert live_version(ctl) is None and ctl.status()["live"] is None
        assert bystander.poll() is None, "down must not touch processes it did not start"
        with pytest.raises(ProcessLookupError):
            os.kill(router, 0)  # type: ignore[arg-type]
        assert ctl.down() == []
    finally:
        bystander.kill()


def test_a_state_file_of_the_wrong_shape_is_bad_input_naming_the_file(ctl: Controller) -> None:
    ctl.store.dir.mkdir(parents=True, exist_ok=True)
    for bad in ("[]", '{"live": "purple"}', '{"colors": {"blue": {"uri": 1}}}', '{"previous_until": "soon"}'):
        ctl.store.state_file.write_text(bad)
        with pytest.raises(ConfigError, match="is not a deploy state file mlship wrote") as info:
            ctl.deploy(fake_release("1"))
        assert info.value.exit_code == 2 and str(ctl.store.state_file) in str(info.value)
        assert "move it aside and run `mlship down`" in str(info.value)


def test_the_router_refuses_a_busy_live_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        ctl = local_controller(tmp_path, port=busy.getsockname()[1])
        with pytest.raises(InfraError, match="is busy"):
            ctl.deploy(fake_release("1"))


def test_the_live_router_guards_its_admin_port_and_its_body_limit(tmp_path: Path) -> None:
    ctl = local_controller(tmp_path)
    ctl.target.max_body = 2048  # type: ignore[attr-defined]
    try:
        ctl.deploy(fake_release("1"))
        token = ctl.target.token_file  # type: ignore[attr-defined]
        assert token.stat().st_mode & 0o777 == 0o600
        admin = ctl.target._load()["router"]["admin_port"]  # type: ignore[attr-defined]
        hijack = {"backends": {"blue": "127.0.0.1:1"}, "weights": {"blue": 100}}
        refused = httpx.post(f"http://127.0.0.1:{admin}/route", json=hijack, timeout=5)
        assert refused.status_code == 401 and live_version(ctl) == "1"
        big = httpx.post(f"{ctl.target.live_url()}/predict", content=b"x" * 4096, timeout=5)
        assert big.status_code == 413 and "larger than 2048 bytes" in big.json()["detail"]
        assert live_version(ctl) == "1"
    finally:
        ctl.target.down()


def test_status_says_a_saturated_router_is_not_a_failing_release(tmp_path: Path) -> None:
    """Every connection busy (mid-body) → `status` names the router and the busiest address, not the release."""
    import socket

    from mlship.commands._deploy_status import repair as _repair

    ctl = local_controller(tmp_path)
    ctl.target.max_connections = 4  # type: ignore[attr-defined]
    held: list[socket.socket] = []
    try:
        ctl.deploy(fake_release("1"))
        assert ctl.status()["problem"] is None
        for _ in range(4):  # busy, not idle: each is in the middle of sending a body
            s = socket.create_connection(("127.0.0.1", ctl.target.port), timeout=5)  # type: ignore[attr-defined]
            s.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")
            held.append(s)
        deadline = time.monotonic() + 10
        while ctl.target.router_info()["connections"] < 4:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "the router never saw the held connections"
            time.sleep(0.05)
        info = ctl.status()
        assert info["problem"] is not None and "is saturated, not the release" in info["problem"], info["problem"]
        assert "4 of 4 connections open" in info["problem"] and "from 127.0.0.1" in info["problem"]
        assert "rollback cannot help" in _repair({**info, "router": ctl.target.router_info()}, "staging")  # type: ignore[attr-defined]
        for s in held:
            s.close()
        held.clear()
        deadline = time.monotonic() + 10
        while ctl.target.router_info()["connections"]:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # recovered: the probe passes again (the recent refusal alone is not a problem)
        assert ctl.status()["problem"] is None
    finally:
        for s in held:
            s.close()
        ctl.target.down()
