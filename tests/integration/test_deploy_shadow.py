"""Shadow deploys and sticky canaries on the local target, for real: router and fake servers on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from scipy.stats import binom

from mlship.deploy.controller import Controller
from mlship.deploy.faults import FAULT_VAR
from mlship.deploy.lock import pid_alive
from mlship.errors import ConfigError, PipelineRejected
from tests.support.deploy_doubles.harness import HERE, RECORDS, fake_release, local_controller, served_version
from tests.waiting import wait_until

DEPLOY_ONCE = HERE / "deploy_once.py"


@pytest.fixture
def ctl(tmp_path: Path) -> Iterator[Controller]:
    controller = local_controller(tmp_path)
    yield controller
    controller.target.down()


def predict(url: str, n: int, headers: dict[str, str] | None = None) -> set[str]:
    versions = set()
    with httpx.Client(base_url=url, timeout=10.0) as client:
        for i in range(n):
            response = client.post("/predict", json={"records": [RECORDS[i % len(RECORDS)]]}, headers=headers)
            assert response.status_code == 200, response.text
            versions.add(str(response.json()["model"]["version"]))
    return versions


def figures(ctl: Controller, requests: int, timeout_s: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        summary = ctl.shadow_summary()
        f = (summary or {}).get("figures")
        if f and f["requests"] >= requests:
            return dict(f)
        time.sleep(0.05)
    raise AssertionError(f"shadow figures never reached {requests}: {ctl.shadow_summary()}")


def test_a_shadow_gets_copies_clients_get_live_answers_and_promotion_is_a_verified_switch(ctl: Controller) -> None:
    ctl.deploy(fake_release("1"))
    result = ctl.deploy(fake_release("2", "slow:30"), strategy="shadow")
    assert result.action == "shadow" and result.live == "blue" and result.release.color == "green"
    state = ctl.store.load()
    assert state.shadow is not None and state.shadow["color"] == "green" and state.colors["green"].outcome == "shadow"
    assert predict(ctl.target.live_url(), 30) == {"1"}, "clients only ever get the live answer"
    f = figures(ctl, 30)
    assert f["compared_rows"] == 30 and f["agreement"] == 1.0 and f["abs_diff"]["max"] == 0.0
    assert f["errors"] == 0 and f["dropped"] == 0 and f["latency_ms"]["p50"] >= 30.0  # the candidate's own latency
    info = ctl.status()
    assert info["shadow"]["color"] == "green" and info["shadow"]["figures"]["requests"] >= 30
    assert info["healthy"] and ctl.target.weights() == {"blue": 100}
    json_path, md_path = ctl.shadow_report()
    assert json.loads(json_path.read_text())["figures"]["compared_rows"] >= 30
    assert "class agreement: 100.00%" in md_path.read_text()
    promoted = ctl.promote_shadow()
    assert promoted.action == "promote-shadow" and promoted.live == "green"
    assert served_version(ctl.target.live_url()) == "2"
    state = ctl.store.load()
    assert state.shadow is None and state.live == "green" and state.pending is None
    assert ctl.target.running("blue"), "the old live color stays warm for the rollback window"
    assert ctl.target.shadowing() is None  # type: ignore[attr-defined]
    assert [r.outcome for r in state.history][-2:] == ["shadow", "live"]
    assert ctl.rollback().live == "blue" and served_version(ctl.target.live_url()) == "1"


def test_stopping_a_shadow_keeps_live_and_brings_back_the_warm_previous_release(ctl: Controller) -> None:
    ctl.deploy(fake_release("1"))
    ctl.deploy(fake_release("2"))  # v1 warm on blue
    warm_pid = ctl.target._load()["colors"]["blue"]["pid"]  # type: ignore[attr-defined]
    ctl.deploy(fake_release("3"), strategy="shadow", sample=0.5)
    assert ctl.target._load()["parked"]["blue"]["pid"] == warm_pid  # type: ignore[attr-defined]
    route = ctl.target.router_info()["route"]  # type: ignore[attr-defined]
    assert route["standby"] == "blue" and route["backends"]["blue"].endswith(
        str(ctl.target._load()["parked"]["blue"]["port"])  # type: ignore[attr-defined]
    ), "the failover standby is the warm release, never the unverified shadow"
    predict(ctl.target.live_url(), 40)
    # Each request is copied with probability 0.5: Binomial(40, 0.5) lies in its 99.9% two-sided
    # interval [10, 30] but for 0.07% of runs (scipy.stats.binom.interval(0.999, 40, 0.5)).
    lo, hi = binom.interval(0.999, 40, 0.5)
    assert (lo, hi) == (10, 30) and lo <= figures(ctl, 1)["offered"] <= hi
    with pytest.raises(ConfigError, match="a shadow runs on blue"):
        ctl.deploy(fake_release("4"))
    stopped = ctl.rollback()  # rollback ends a running shadow, like it aborts a canary
    assert stopped.action == "stop-shadow" and stopped.live == "green"
    assert served_version(ctl.target.live_url()) == "2"
    state = ctl.store.load()
    assert state.shadow is None and state.colors["blue"].version == "1"
    assert ctl.target._load()["colors"]["blue"]["pid"] == warm_pid  # type: ignore[attr-defined]
    assert state.history[-1].version == "3" and state.history[-1].outcome == "rejected"
    assert (ctl.settings.reports_path / "shadow.md").is_file()
    assert ctl.rollback().live == "blue", "the warm v1 is still one switch away"


def test_a_shadow_killed_after_the_state_named_it_is_resumed_and_a_dead_one_is_ended(
    ctl: Controller, tmp_path: Path
) -> None:
    ctl.deploy(fake_release("1"))
    port = ctl.target.port  # type: ignore[attr-defined]
    killed = subprocess.run(
        [sys.executable, str(DEPLOY_ONCE), str(tmp_path), str(port), "2", "1.0", "shadow"],
        env={**os.environ, FAULT_VAR: "shadow-named"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert ctl.store.load().shadow is not None, "the state named the shadow first"
    assert ctl.target.shadowing() is None  # type: ignore[attr-defined]
    info = ctl.status()
    assert any("gets copies again" in n for n in info["reconciled"])
    assert ctl.target.shadowing() == "green"  # type: ignore[attr-defined]
    predict(ctl.target.live_url(), 5)
    assert figures(ctl, 5)["compared_rows"] == 5
    green = int(ctl.target._load()["colors"]["green"]["pid"])  # type: ignore[attr-defined]
    os.kill(green, signal.SIGKILL)
    wait_until(lambda: not pid_alive(green), "the killed shadow process to be gone")
    info = ctl.status()
    assert any("ended the shadow on green" in n for n in info["reconciled"])
    assert info["shadow"] is None and ctl.store.load().shadow is None and info["healthy"]
    assert predict(ctl.target.live_url(), 5) == {"1"}


def test_a_sticky_canary_sends_each_key_to_one_version_and_options_are_checked(ctl: Controller) -> None:
    ctl.deploy(fake_release("1"))
    ctl.deploy(fake_release("2"), strategy="canary", weight=50, sticky="header:X-User-Id")
    seen: dict[str, set[str]] = {}
    for _ in range(3):
        for user in range(20):
            key = f"user-{user}"
            seen.setdefault(key, set()).update(predict(ctl.target.live_url(), 1, {"X-User-Id": key}))
    assert all(len(v) == 1 for v in seen.values()), seen
    assert {v for s in seen.values() for v in s} == {"1", "2"}
    assert ctl.target.router_info()["route"]["sticky"] == "header:X-User-Id"  # type: ignore[attr-defined]
    for kwargs, message in [
        ({"strategy": "shadow", "sample": 0.0}, "sample 0 is out of range"),
        ({"strategy": "bluegreen", "sticky": "header:X"}, "--sticky-key routes a canary"),
        ({"strategy": "canary", "sticky": "cookie:x"}, "not header:NAME or field:NAME"),
        ({"strategy": "mirror"}, "unknown strategy"),
    ]:
        with pytest.raises(ConfigError, match=message):
            ctl.deploy(fake_release("3"), **kwargs)  # type: ignore[arg-type]


def test_a_shadow_needs_a_live_color(ctl: Controller) -> None:
    with pytest.raises(ConfigError, match="a shadow needs a live color"):
        ctl.deploy(fake_release("1"), strategy="shadow")
    with pytest.raises(ConfigError, match="no shadow is running"):
        ctl.promote_shadow()
    with pytest.raises(ConfigError, match="no shadow is running"):
        ctl.stop_shadow()


def test_a_shadow_refused_at_smoke_never_gets_a_copy(ctl: Controller) -> None:
    ctl.deploy(fake_release("1"))
    with pytest.raises(PipelineRejected, match="smoke test failed"):
        ctl.deploy(fake_release("2", "wrong"), strategy="shadow")
    assert ctl.store.load().shadow is None and ctl.target.shadowing() is None  # type: ignore[attr-defined]


def test_a_shadow_that_fails_verification_on_promotion_is_switched_back(ctl: Controller) -> None:
    ctl.deploy(fake_release("1"))
    ctl.deploy(fake_release("2"))  # v1 warm on blue
    # 21 predictions pass the deploy's smoke test and 21 the promotion's own (before the switch);
    # from the 43rd on it answers 500: it fails only the verification after the switch
    ctl.deploy(fake_release("3", "errors_after:42"), strategy="shadow")
    with pytest.raises(PipelineRejected, match=r"promotion of shadow card-fraud v3 rolled back: verification failed"):
        ctl.promote_shadow()
    state = ctl.store.load()
    assert state.live == "green" and state.pending is None and state.shadow is None
    assert served_version(ctl.target.live_url()) == "2"
    assert state.colors["blue"].version == "1", "the release parked behind the shadow is warm again"
    assert state.history[-1].version == "3" and state.history[-1].outcome == "rolled back"
    assert "stopped early" in state.history[-1].detail, "the first errors made the limit unreachable"
    assert ctl.rollback().live == "blue"


def test_a_shadow_the_target_cannot_start_copying_to_is_refused(
    ctl: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlship.deploy.targets.base import ColorFailed

    ctl.deploy(fake_release("1"))
    real = ctl.target.set_shadow  # type: ignore[attr-defined]

    def broken(color: str | None, sample: float = 1.0) -> None:
        if color is not None:
            raise ColorFailed("the router does not answer")
        real(color, sample)

    monkeypatch.setattr(ctl.target, "set_shadow", broken)
    with pytest.raises(PipelineRejected, match="shadow of card-fraud v2 did not start: the router does not answer"):
        ctl.deploy(fake_release("2"), strategy="shadow")
    state = ctl.store.load()
    assert state.shadow is None and "green" not in state.colors and not ctl.target.running("green")
    assert state.history[-1].outcome == "rejected"
