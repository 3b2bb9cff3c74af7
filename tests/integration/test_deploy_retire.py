"""The previous color is stopped when the rollback window ends, for real on the local target.

A detached `python -m mlship.deploy.retire` process sleeps through the window, then stops
the previous color under the deploy lock — unless a later switch made it live again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlship.deploy import retire
from mlship.deploy.controller import Controller
from mlship.deploy.lock import LockHeld, pid_alive
from tests.support.deploy_doubles.harness import fake_release, local_controller, served_version


def retiring(tmp_path: Path, window_s: float) -> Controller:
    ctl = local_controller(tmp_path, rollback_window_s=window_s)
    ctl.schedule_retirement = True
    return ctl


@pytest.fixture
def ctl(tmp_path: Path) -> Iterator[Controller]:
    controller = retiring(tmp_path, 600.0)
    yield controller
    controller.down()


def pid_of(ctl: Controller, color: str) -> int:
    return int(ctl.target._handle(color)["pid"])  # type: ignore[attr-defined]


def retire_pid(ctl: Controller) -> int | None:
    record = ctl.store.load().retire
    return int(record["pid"]) if record else None


def wait_gone(pid: int, timeout_s: float = 45.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_the_previous_color_stops_when_the_window_ends_and_live_keeps_serving(tmp_path: Path) -> None:
    ctl = retiring(tmp_path, 1.0)
    try:
        ctl.deploy(fake_release("1"))
        ctl.deploy(fake_release("2"))
        blue, retirement = pid_of(ctl, "blue"), retire_pid(ctl)
        info = ctl.status()["retire"]
        assert info["color"] == "blue" and info["scheduled"] is True and retirement is not None
        assert wait_gone(blue), "the previous color must be stopped once the rollback window ends"
        assert wait_gone(retirement), "the retirement process exits once it has done its job"
        assert served_version(ctl.target.live_url()) == "2"
        status = ctl.status()
        assert status["colors"]["blue"] == {"running": False, "release": None}
        assert status["retire"] is None and status["rollback_until"] is None
        assert "retired blue" in (ctl.store.dir / "retire.log").read_text()
        # past the window, a rollback is a full blue-green deploy of the previous release
        result = ctl.rollback()
        assert result.action == "deploy" and served_version(ctl.target.live_url()) == "1"
    finally:
        ctl.down()


def test_a_rollback_inside_the_window_is_one_switch_and_cancels_the_retirement(tmp_path: Path) -> None:
    ctl = retiring(tmp_path, 4.0)
    try:
        ctl.deploy(fake_release("1"))
        ctl.deploy(fake_release("2"))
        blue, first = pid_of(ctl, "blue"), retire_pid(ctl)
        assert first is not None and pid_alive(first)
        result = ctl.rollback()
        assert result.action == "rollback" and pid_of(ctl, "blue") == blue, "one switch, no cold start"
        assert wait_gone(first, 10.0), "the retirement of blue (now live) must be cancelled"
        second = retire_pid(ctl)
        assert second is not None and second != first and ctl.status()["retire"]["color"] == "green"
        green = pid_of(ctl, "green")
        assert wait_gone(green), "green is now the previous color and retires after its own window"
        # (`down` would also wait for it: see test_down_waits_for_a_retirement_that_holds_the_lock)
        assert wait_gone(second, 10.0), "the retirement process ends once green is retired"
        assert pid_alive(blue) and served_version(ctl.target.live_url()) == "1"
    finally:
        ctl.down()


def test_down_stops_the_scheduled_retirement(ctl: Controller) -> None:
    ctl.deploy(fake_release("1"))
    ctl.deploy(fake_release("2"))
    pid = retire_pid(ctl)
    assert pid is not None and pid_alive(pid)
    stopped = ctl.down()
    assert any(s.startswith("retirement of blue") for s in stopped)
    assert wait_gone(pid, 10.0)
    assert ctl.store.load().retire is None


def test_down_waits_for_a_retirement_that_holds_the_lock(ctl: Controller) -> None:
    """`down` racing the retirement's few seconds under the lock waits for it (it raised LockHeld)."""
    ctl.deploy(fake_release("1"))
    ctl.deploy(fake_release("2"))
    pid = retire_pid(ctl)
    assert pid is not None
    lock = ctl.store.dir / "deploy.lock"
    lock.write_text(str(pid))  # the retirement process holds the deploy lock, as while it records its work
    release = threading.Timer(1.0, lock.unlink)
    release.start()
    started = time.monotonic()
    try:
        stopped = ctl.down()
    finally:
        release.cancel()
    assert time.monotonic() - started >= 0.9, "down must have waited for the lock"
    assert any(s.startswith("retirement of blue") for s in stopped)
    assert ctl.store.load().live is None


def test_down_does_not_wait_for_a_deploy_that_holds_the_lock(ctl: Controller) -> None:
    ctl.deploy(fake_release("1"))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    lock = ctl.store.dir / "deploy.lock"
    try:
        lock.write_text(str(other.pid))  # another live process (not our retirement) holds it
        started = time.monotonic()
        with pytest.raises(LockHeld, match=f"pid {other.pid}"):
            ctl.down()
        # Waiting wrongly would cost RETIREMENT_WAIT_S (15 s) before LockHeld; a refusal takes well
        # under a second, and no loaded machine stretches it to 10 s by accident.
        assert time.monotonic() - started < 10.0
    finally:
        other.kill()
        other.wait()
        lock.unlink(missing_ok=True)


def test_a_superseded_retirement_touches_nothing(ctl: Controller) -> None:
    ctl.deploy(fake_release("1"))
    ctl.deploy(fake_release("2"))
    state = ctl.store.load()
    assert state.previous_until is not None
    # the window has not ended yet: a retirement that runs early is refused
    assert "moved the rollback window" in ctl.retire("blue", "fake://card-fraud/1", state.previous_until)
    assert "live or runs another release" in ctl.retire("green", "fake://card-fraud/2", state.previous_until)
    assert "live or runs another release" in ctl.retire("blue", "fake://card-fraud/9", state.previous_until)
    assert ctl.target.running("blue") and ctl.target.running("green")
    spec = json.loads(retire.spec_path(ctl.store.dir).read_text())
    assert spec["color"] == "blue" and spec["until"] == state.previous_until
    assert retire.spec_path(ctl.store.dir).stat().st_mode & 0o077 == 0, "the spec holds settings: owner only"
    # seen from the retirement process: another pid owns the schedule now
    assert retire.superseded(ctl.store.dir, spec, pid=1) == "another retirement (or none) is scheduled now"
    own = retire_pid(ctl)
    assert own is not None and retire.superseded(ctl.store.dir, spec, own) is None
    assert "moved the rollback window" in str(retire.superseded(ctl.store.dir, {**spec, "until": 1.0}, own))
    assert "live again" in str(retire.superseded(ctl.store.dir, {**spec, "color": "green"}, own))
    assert "gone" in str(retire.superseded(ctl.store.dir / "nope", spec, own))


def test_the_retire_entry_point_reports_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert retire.main([]) == 2
    spec = tmp_path / "retire.json"
    spec.write_text(json.dumps({"state_dir": str(tmp_path / "gone"), "color": "blue", "until": 0.0}))
    assert retire.main([str(spec)]) == 0
    assert capsys.readouterr().out.strip().endswith("not retiring blue: the environment's state directory is gone")
    assert retire.main([str(tmp_path / "missing.json")]) == 3
    assert "retirement failed" in capsys.readouterr().out


def test_a_retirement_that_finds_a_deploy_holding_the_lock_waits_for_it(ctl: Controller) -> None:
    import os
    import threading

    from mlship.deploy.lock import deploy_lock
    from mlship.deploy.process import cancel as _cancel_retire

    ctl.deploy(fake_release("1"))
    ctl.deploy(fake_release("2"))
    state = ctl.store.load()
    assert state.retire is not None and _cancel_retire(state.retire)
    # this test process plays the retirement process, and its window is already over
    until = time.time() - 1.0
    state.previous_until, state.retire = until, {"pid": os.getpid(), "color": "blue", "until": until}
    ctl.store.save(state)
    spec_file = retire.spec_path(ctl.store.dir)
    spec = json.loads(spec_file.read_text())
    spec_file.write_text(json.dumps({**spec, "until": until}))
    held, release = threading.Event(), threading.Event()

    def deploy_in_progress() -> None:
        with deploy_lock(ctl.store.dir):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=deploy_in_progress)
    holder.start()
    held.wait(5)
    threading.Timer(1.5, release.set).start()
    started = time.monotonic()
    outcome = retire.run(spec_file)
    holder.join()
    assert outcome.startswith("retired blue") and time.monotonic() - started >= 1.0, outcome
    assert not ctl.target.running("blue") and served_version(ctl.target.live_url()) == "2"
