"""Release history, the deploy lock, counters arithmetic, smoke checks and the report."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlship.deploy.lock import deploy_lock, pid_alive
from mlship.deploy.release import Release, StateStore, find_release, other
from mlship.deploy.result import DeployResult, render_markdown
from mlship.deploy.smoke import Golden, smoke
from mlship.deploy.targets.base import Signal
from mlship.deploy.targets.local import free_port
from mlship.errors import ConfigError, InfraError
from tests.support.deploy_doubles.harness import FAKE_SERVER, RECORDS, fake_golden, fake_release


def test_history_keeps_the_last_n_releases_and_finds_redeployable_versions(tmp_path: Path) -> None:
    store = StateStore(tmp_path, "staging", keep=5)
    for v in range(1, 8):
        store.record(fake_release(str(v)).with_(outcome="live" if v != 6 else "rolled back"))
    history = store.load().history
    assert [r.version for r in history] == ["3", "4", "5", "6", "7"]
    assert find_release(history, "5").version == "5"
    with pytest.raises(ConfigError, match="redeployable: 3, 4, 5, 7"):
        find_release(history, "6")
    assert other("blue") == "green" and other("green") == "blue"
    assert Release.from_dict({**fake_release("1").to_dict(), "unknown": 1}).version == "1"


def test_unreadable_state_is_a_config_error(tmp_path: Path) -> None:
    store = StateStore(tmp_path, "staging")
    store.dir.mkdir(parents=True)
    store.state_file.write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        store.load()


def test_lock_excludes_live_holders_and_takes_over_dead_ones(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert not pid_alive(dead.pid) and not pid_alive(0) and pid_alive(os.getpid())
    with deploy_lock(tmp_path) as path:
        assert path.read_text() == str(os.getpid())
        with pytest.raises(InfraError, match=f"pid {os.getpid()}"), deploy_lock(tmp_path):
            pass
    assert not path.exists()
    path.write_text(str(dead.pid))
    with deploy_lock(tmp_path):
        assert path.read_text() == str(os.getpid())
    path.write_text("garbage")
    with deploy_lock(tmp_path):
        pass


def test_signal_deltas_and_quantiles() -> None:
    bounds = (10.0, 100.0)
    early = Signal(10, 1, (5, 5, 0), bounds)
    late = Signal(110, 3, (55, 54, 1), bounds)
    delta = late.since(early)
    assert delta is not None and (delta.requests, delta.errors) == (100, 2)
    assert delta.error_rate == 0.02
    assert (
        delta.quantile_ms(0.5) == 10.0 and delta.quantile_ms(0.99) == 100.0 and delta.quantile_ms(1.0) == float("inf")
    )
    assert early.since(late) is None, "counters going backwards (a restart) is a missing signal"
    assert Signal(0, 0, (0, 0, 0), bounds).quantile_ms(0.99) is None
    assert Signal(0, 0, (0, 0, 0), bounds).error_rate == 0.0
    assert late.since(None) is late


@pytest.fixture
def fake_server() -> Iterator[str]:
    def start(model: str) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        proc = subprocess.Popen([sys.executable, str(FAKE_SERVER), "--model", model, "--port", str(port)])
        import time

        import httpx

        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        return proc, f"http://127.0.0.1:{port}"

    procs: list[subprocess.Popen[bytes]] = []

    def factory(model: str) -> str:
        proc, url = start(model)
        procs.append(proc)
        return url

    yield factory  # type: ignore[misc]
    for p in procs:
        p.kill()
        p.wait()


def test_smoke_passes_a_good_server_and_names_each_failure(fake_server) -> None:  # type: ignore[no-untyped-def]
    good = fake_server("fake://card-fraud/3")
    golden = fake_golden(fake_release("3"))
    result = smoke(good, golden, latency_budget_ms=500, expected_version="3")
    assert result.ok, result.to_dict()
    assert smoke(good, golden, latency_budget_ms=500, expected_version="4").failures[0].name == "version"
    assert smoke(good, Golden(records=[]), latency_budget_ms=500).failures[0].detail.startswith("no golden rows")
    assert smoke(good, Golden(records=RECORDS), latency_budget_ms=500).ok, "no expected probabilities: count only"
    wrong = smoke(fake_server("fake://card-fraud/3?fault=wrong"), golden, latency_budget_ms=500)
    assert [c.name for c in wrong.failures] == ["golden"]
    slow = smoke(fake_server("fake://card-fraud/3?fault=slow:30"), golden, latency_budget_ms=5, requests=3)
    assert [c.name for c in slow.failures] == ["latency"]
    erroring = smoke(fake_server("fake://card-fraud/3?fault=errors_after:0"), golden, latency_budget_ms=500)
    assert {c.name for c in erroring.failures} == {"golden", "latency"}
    not_ready = smoke(fake_server("fake://card-fraud/3?fault=never_ready"), golden, latency_budget_ms=500)
    assert [c.name for c in not_ready.failures] == ["/ready"]


def test_smoke_against_nothing_fails_every_check() -> None:
    result = smoke(f"http://127.0.0.1:{free_port()}", fake_golden(fake_release("1")), latency_budget_ms=100)
    assert not result.ok and len(result.failures) == 5
    assert all(c.detail.startswith(("unreachable", "unreadable")) for c in result.failures)


def test_markdown_report_names_release_checks_and_timings() -> None:
    result = DeployResult(
        action="deploy",
        env="staging",
        target="local",
        release=fake_release("2").with_(color="green"),
        live_url="http://127.0.0.1:8000",
        live="green",
        previous=fake_release("1"),
        timings_s={"switch": 0.01},
    )
    text = render_markdown(result)
    assert "card-fraud v2" in text and "previous: card-fraud v1" in text and "switch 0.01" in text
    assert result.to_dict()["previous"]["version"] == "1"


def test_the_fault_hook_kills_only_at_the_step_it_names() -> None:
    from mlship.deploy.faults import FAULT_VAR, STEPS, checkpoint

    checkpoint("switched")  # unset: nothing happens
    code = "from mlship.deploy.faults import checkpoint; checkpoint('smoke-passed'); checkpoint('switched')"
    for step, expected in (("switched", -9), ("verified", 0)):
        done = subprocess.run([sys.executable, "-c", code], env={**os.environ, FAULT_VAR: step}, check=False)
        assert done.returncode == expected, step
    assert STEPS == ("idle-started", "smoke-passed", "switched", "mid-verification", "verified")


def test_a_history_file_of_the_wrong_shape_is_a_config_error(tmp_path: Path) -> None:
    store = StateStore(tmp_path, "staging")
    store.dir.mkdir(parents=True)
    store.history_file.write_text('{"not": "a list"}')
    with pytest.raises(ConfigError, match=r"history\.json is not a deploy state file mlship wrote"):
        store.load()
    store.history_file.write_text("[]")
    store.state_file.write_text('{"live": "blue", "pending": {"color": "green"}, "previous_until": 5}')
    state = store.load()
    assert state.live == "blue" and state.pending == {"color": "green"} and state.previous_until == 5.0
    store.state_file.write_text('{"retire": [1]}')
    with pytest.raises(ConfigError, match="is not an object"):
        store.load()


def test_verification_stops_early_only_when_the_error_limit_is_out_of_reach() -> None:
    from mlship.deploy.verify import unreachable

    def seen(requests: int, errors: int) -> Signal:
        return Signal(requests, errors, (requests,), (1.0,))

    # 1 % limit, 10 s window: after 1 s, 25 requests seen → at most 2 × 250 = 500 by the end → 5 errors allowed
    assert not unreachable(seen(25, 5), 1.0, 10.0, 0.01)
    assert unreachable(seen(25, 6), 1.0, 10.0, 0.01)
    assert not unreachable(seen(25, 0), 1.0, 10.0, 0.01), "no error, no early stop"
    # a quiet window still needs MIN_REQUESTS (10) before it can pass: 1 error of 1 is not yet over 10 %
    assert not unreachable(seen(1, 1), 5.0, 5.0, 0.10)
    assert unreachable(seen(1, 2), 5.0, 5.0, 0.10)
    # past the window (the grace for a slow path), the bound is twice what was seen
    assert unreachable(seen(100, 3), 20.0, 10.0, 0.01) and not unreachable(seen(100, 2), 20.0, 10.0, 0.01)
    assert not unreachable(seen(100, 50), 0.0, 10.0, 0.01), "no time elapsed: no rate to project"


def test_a_promotion_judges_what_the_shadow_or_canary_recorded_with_the_verification_limits(tmp_path: Path) -> None:
    from typing import Any

    from mlship.deploy.controller import Controller
    from mlship.deploy.release import DeployState
    from mlship.deploy.result import signal_dict as _signal_dict
    from mlship.settings import settings_from_mapping

    class Recorded:
        name = "local"
        figures: dict[str, Any] | None = None
        now: Signal | None = None

        def shadow_stats(self) -> dict[str, Any] | None:
            return self.figures

        def signal(self, color: str) -> Signal | None:
            return self.now

    settings = settings_from_mapping({"deploy": {"max_error_rate": 0.05, "max_p99_ms": 250.0}}, root=tmp_path)
    target = Recorded()
    ctl = Controller(settings, target, golden=fake_golden)  # type: ignore[arg-type]
    state = DeployState(env="staging", live="blue")

    def shadow(requests: int, errors: int, p99: float | None) -> str | None:
        target.figures = {"requests": requests, "errors": errors, "latency_ms": {"p50": None, "p99": p99}}
        return ctl._recorded_problem(state, "green", "shadow")

    assert shadow(96, 96, 3.0) == "the shadow failed 96 of 96 copies (100.0%, limit 5.0%)"
    assert shadow(100, 5, 3.0) is None, "at the limit is within it, as in verification"
    assert shadow(10, 0, 4000.0) == "the shadow's p99 latency (4000 ms, 10 copies) exceeds 250 ms"
    assert shadow(9, 0, 4000.0) is None, "fewer copies than verification needs: no latency verdict yet"
    target.figures = None
    assert ctl._recorded_problem(state, "green", "shadow") is None, "nothing recorded: verification decides"

    bounds = (10.0, 100.0, 1000.0)
    state.canary = {"color": "green", "weight": 10, "baseline": _signal_dict(Signal(50, 10, (50, 0, 0, 0), bounds))}
    target.now = Signal(150, 30, (50, 100, 0, 0), bounds)  # its share since the split: 20 of 100 failed
    assert ctl._recorded_problem(state, "green", "canary") == "the canary failed 20 of 100 requests (20.0%, limit 5.0%)"
    target.now = Signal(150, 10, (50, 0, 0, 100), bounds)
    assert ctl._recorded_problem(state, "green", "canary") == (
        "the canary's p99 latency (over 1000 ms, 100 requests) exceeds 250 ms"
    )
    target.now = Signal(20, 0, (20, 0, 0, 0), bounds)  # counters went backwards: a restart, no verdict
    assert ctl._recorded_problem(state, "green", "canary") is None


def test_the_promotion_guard_does_nothing_when_its_command_ended_without_a_pending_promotion(tmp_path: Path) -> None:
    import json

    from mlship.deploy import guard

    state_dir = tmp_path / "deploy" / "staging"
    state_dir.mkdir(parents=True)
    argv = [sys.executable, "-c", "import os; print(os.getpid())"]
    child = subprocess.run(argv, check=True, capture_output=True, text=True)
    gone = int(child.stdout)  # a pid that has exited
    (state_dir / "state.json").write_text(json.dumps({"live": "blue", "pending": {"pid": gone + 1, "color": "green"}}))
    spec = {"state_dir": str(state_dir), "pid": gone, "started": "1", "max_s": 5.0}
    spec_file = guard.spec_path(state_dir)
    spec_file.write_text(json.dumps(spec))
    assert guard.run(spec_file) == f"pid {gone} ended; its promotion is not pending"
    assert guard.main([str(spec_file)]) == 0
    assert guard.main([]) == 2
    spec_file.write_text("{}")
    assert guard.main([str(spec_file)]) == 3, "a spec without its fields is a failure, not a traceback"
