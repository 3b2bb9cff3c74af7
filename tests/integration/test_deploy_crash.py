"""Crash consistency, failover and refused deploys on the local target, under live load.

A deploy is killed with SIGKILL (the MLSHIP_FAULT_AT test hook) at every step boundary
while a bounded load generator posts predictions to the live URL; the next deploy must
reconcile and succeed, and not one request may fail across the kill and the recovery.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlship.deploy.controller import Controller
from mlship.deploy.faults import FAULT_VAR, STEPS
from mlship.deploy.lock import pid_alive
from mlship.errors import PipelineRejected
from tests.support.deploy_doubles.harness import HERE, RECORDS, fake_release, local_controller, served_version
from tests.waiting import wait_until

DEPLOY_ONCE = HERE / "deploy_once.py"


class Load:
    """Posts one-record predictions to `url` from one keep-alive client, bounded in time and count."""

    def __init__(self, url: str, *, rate: float = 40.0, max_seconds: float = 120.0) -> None:
        self.url, self.interval, self.max_seconds = url, 1.0 / rate, max_seconds
        self.ok = 0
        self.failed: list[str] = []
        self.versions: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            while not self._stop.is_set() and time.monotonic() < deadline and self.ok < 20_000:
                try:
                    response = client.post("/predict", json={"records": RECORDS[:1]})
                    if response.status_code == 200:
                        self.ok += 1
                        self.versions.add(str(response.json()["model"]["version"]))
                    else:
                        self.failed.append(f"HTTP {response.status_code}: {response.text[:120]}")
                except httpx.HTTPError as exc:
                    self.failed.append(type(exc).__name__)
                time.sleep(self.interval)

    def served(self, more: int = 10) -> None:
        """Wait until `more` further requests were answered: the load really ran across the step."""
        target = self.ok + more
        wait_until(lambda: self.ok >= target, f"{more} more answered requests (failures: {self.failed[:3]})")

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.fixture
def ctl(tmp_path: Path) -> Iterator[Controller]:
    controller = local_controller(tmp_path)
    yield controller
    controller.target.down()


def pids(ctl: Controller) -> dict[str, int]:
    colors = ctl.target._load()["colors"]  # type: ignore[attr-defined]
    return {c: int(h["pid"]) for c, h in colors.items()}


@pytest.mark.parametrize("step", STEPS)
def test_a_deploy_killed_at_any_step_is_recovered_by_the_next_with_no_failed_request(
    ctl: Controller, tmp_path: Path, step: str
) -> None:
    ctl.deploy(fake_release("1"))
    port = ctl.target.port  # type: ignore[attr-defined]
    with Load(ctl.target.live_url()) as load:
        load.served()
        killed = subprocess.run(
            [sys.executable, str(DEPLOY_ONCE), str(tmp_path), str(port), "2"],
            env={**os.environ, FAULT_VAR: step},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        load.served()  # live traffic is answered after the kill, before any recovery
        state = ctl.store.load()
        assert state.pending is not None and state.pending["color"] == "green", "the intent was written first"
        if step in ("switched", "mid-verification", "verified"):
            assert ctl.target.weights() == {"green": 100} and state.live == "green", (
                "state names what the router serves"
            )
        else:
            assert ctl.target.weights() == {"blue": 100} and state.live == "blue"
        result = ctl.deploy(fake_release("3"))
        wait_until(lambda: "3" in load.versions, "the load to be answered by v3")
        load.served()
    assert load.failed == [], f"{len(load.failed)} of {load.ok + len(load.failed)} failed: {load.failed[:5]}"
    assert load.ok > 20 and "3" in load.versions
    assert served_version(ctl.target.live_url()) == "3"
    history = {r.version: r for r in ctl.store.load().history}
    if step == "verified":  # it had passed verification: the next command finished it
        assert history["2"].outcome == "live" and "finished by the next command" in history["2"].detail
        assert result.live == "blue" and ctl.target.running("green"), "v2 stays warm as the previous color"
    else:
        assert (
            history["2"].outcome == "rolled back"
            and f"died ({'starting' if step in STEPS[:2] else 'verifying'})" in history["2"].detail
        )
        assert result.live == "green" and ctl.target.running("blue"), "v1 stays warm as the previous color"
    state = ctl.store.load()
    assert state.pending is None and ctl.target.weights() == {result.live: 100}
    assert set(ctl.target._load()["parked"]) == set(), "no process is left behind"  # type: ignore[attr-defined]


def test_the_live_color_dying_fails_over_to_the_warm_previous_one_and_status_says_why(ctl: Controller) -> None:
    ctl.deploy(fake_release("1"))
    ctl.deploy(fake_release("2"))
    with Load(ctl.target.live_url(), rate=50.0) as load:
        load.served()
        os.kill(pids(ctl)["green"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and ctl.target.weights() != {"blue": 100}:
            time.sleep(0.05)
        load.served()  # answered after the failover
    assert load.failed == [], load.failed[:5]
    assert ctl.target.weights() == {"blue": 100}, "the router failed over by itself"
    info = ctl.status()
    assert info["live"] == "blue" and info["healthy"] and info["problem"] is None
    assert info["router"]["failover"]["reason"] in ("green is unreachable", "green does not answer /ready")
    assert any("failed over to blue" in note for note in info["reconciled"])
    assert info["history"][0]["version"] == "1" and info["history"][0]["detail"].startswith("failover: green")
    assert served_version(ctl.target.live_url()) == "1"


def test_a_killed_router_is_restarted_without_any_command(ctl: Controller) -> None:
    ctl.deploy(fake_release("1"))
    router = ctl.target.router_pid()  # type: ignore[attr-defined]
    assert router is not None
    os.kill(router, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and served_version(ctl.target.live_url()) != "1":
        time.sleep(0.1)
    assert served_version(ctl.target.live_url()) == "1", "the supervisor restarted the router"
    assert ctl.target.router_pid() not in (None, router)  # type: ignore[attr-defined]


def test_status_tells_the_truth_when_the_live_path_is_down(ctl: Controller) -> None:
    assert ctl.status()["problem"] == "nothing is live in staging"
    ctl.deploy(fake_release("1"))
    assert ctl.status()["healthy"]
    blue = pids(ctl)["blue"]
    os.kill(blue, signal.SIGKILL)  # no warm previous color to fail over to
    wait_until(lambda: not pid_alive(blue), "the killed blue process to be gone")
    info = ctl.status()
    assert not info["healthy"] and info["problem"] == "the live color blue is not running"
    assert info["router"]["up"]


@pytest.mark.parametrize("fault", ["wrong", "errors_after:25"], ids=["refused-at-smoke", "refused-at-verification"])
def test_a_refused_deploy_keeps_the_previous_release_warm_so_rollback_is_one_switch(
    ctl: Controller, fault: str
) -> None:
    ctl.deploy(fake_release("1"))
    ctl.deploy(fake_release("2"))
    warm = pids(ctl)["blue"]
    with Load(ctl.target.live_url()) as load:
        with pytest.raises(PipelineRejected, match="card-fraud v2 on green is still live"):
            ctl.deploy(fake_release("3", fault))
        assert pids(ctl)["blue"] == warm and ctl.target.running("blue"), "v1 was parked, not stopped"
        assert ctl.store.load().colors["blue"].version == "1"
        back = ctl.rollback()
        load.served()  # answered after the rollback
    assert back.action == "rollback" and back.live == "blue" and pids(ctl)["blue"] == warm
    assert served_version(ctl.target.live_url()) == "1"
    if fault == "wrong":  # refused before the switch: users never saw it
        assert load.failed == [], load.failed[:5]
    else:  # the errors that failed its verification, and nothing else
        assert {f for f in load.failed} <= {'HTTP 500: {"detail": "injected failure"}'}


def test_a_model_that_raises_on_its_example_is_refused_not_an_environment_error(tmp_path: Path) -> None:
    def raising_golden(_: object) -> object:
        raise ValueError("boom in predict_proba")

    ctl = local_controller(tmp_path)
    ctl._golden = raising_golden  # type: ignore[assignment]
    try:
        with pytest.raises(PipelineRejected, match="the model raised on its input example") as info:
            ctl.deploy(fake_release("1"))
        assert info.value.exit_code == 1
        assert ctl.store.load().history[-1].outcome == "rejected"
    finally:
        ctl.target.down()
