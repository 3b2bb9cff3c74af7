"""A failed promotion never leaves the candidate live (issue 26): `--promote-shadow` and `--promote-canary`.

Each case: v1 live on blue, v2 running on green as a shadow or a canary, one fault, the
promotion. Each must end with v1 live, not one of a bounded client loop through the router
answered by v2 after the promoting command is over (returned, or killed: then its guard process
switches back, with no other command run), and `mlship status` naming what happened. Faults that can be seen before the
switch must refuse the promotion before the router sends v2 a single request.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from mlship import integrity
from mlship.cli import app
from mlship.commands import register_all
from mlship.deploy.context import golden_from_registry
from mlship.deploy.controller import Controller
from mlship.deploy.faults import FAULT_VAR
from mlship.deploy.release import Release
from mlship.deploy.smoke import Golden
from mlship.deploy.targets.local import LocalTarget, free_port
from mlship.errors import MlshipError
from mlship.settings import load_settings
from tests.integration.test_deploy_cli import write_deploy_config
from tests.support.deploy_doubles.harness import HERE, RECORDS, fake_controller, fake_golden, fake_release

register_all(app)
runner = CliRunner()
PROMOTE_ONCE = HERE / "promote_once.py"

# fault → (exit code of the promotion, what the error and the history say)
FAULTS = {
    "tampered": (2, "refusing to load it"),
    "raises": (1, "the model raised on its input example (RuntimeError"),
    "recorded-errors": (1, "the KIND failed"),
    "mlflow-down": (3, "is unreachable"),
    "dies": (1, "verification failed"),
    "sigkill": (-signal.SIGKILL, "died (verifying) before the promotion was verified"),
}
BEFORE_THE_SWITCH = ("tampered", "raises", "recorded-errors", "mlflow-down")
"""Faults the promotion can see before any weight changes."""


class CandidateGolden:
    """The golden source, with the registry's failure modes for the candidate (v2).

    The real source downloads the model (checked against its sha256 sidecar: `integrity.verify`,
    what `Registry.download` runs), loads it and predicts its input example; here the download
    check runs on a real artifact directory, `raises` is the model raising in predict_proba, and
    `mlflow-down` is a real `Registry` on a port nothing listens on.
    """

    def __init__(self, artifact: Path) -> None:
        self.artifact = artifact
        self.fault: str | None = None

    def __call__(self, release: Release) -> Golden:
        if release.version == "2":
            integrity.verify(self.artifact, what=release.label)
            if self.fault == "raises":
                raise RuntimeError("predict_proba: could not convert string to float: 'grocery'")
            if self.fault == "mlflow-down":
                from mlship.registry import Registry

                return golden_from_registry(Registry(f"http://127.0.0.1:{free_port()}"))(release)
        return fake_golden(release)


def mlship(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def answered_by(url: str, n: int = 40) -> Counter[str]:
    """Who answers a bounded client loop through the router: versions, or the HTTP status."""
    seen: Counter[str] = Counter()
    with httpx.Client(base_url=url, timeout=10.0) as client:
        for i in range(n):
            response = client.post("/predict", json={"records": [RECORDS[i % len(RECORDS)]]})
            ok = response.status_code == 200
            seen[str(response.json()["model"]["version"]) if ok else f"HTTP {response.status_code}"] += 1
    return seen


def poll(what: str, check: object, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def requests_to(target: LocalTarget, color: str) -> int:
    """Client requests the router has sent `color` so far."""
    counters = target._router_state()["counters"]  # type: ignore[index]
    return int(counters.get(color, {}).get("requests", 0))


@pytest.fixture
def setup(project: Path) -> Iterator[tuple[LocalTarget, Controller, CandidateGolden]]:
    write_deploy_config(project, port=free_port(), verify_window_s=1.0)
    target, ctl = fake_controller(load_settings(cwd=project))
    artifact = project / "artifacts" / "v2"
    artifact.mkdir(parents=True)
    (artifact / "model.pkl").write_bytes(b"\x80\x05 a pickled model")
    integrity.write_sidecar(artifact)
    golden = CandidateGolden(artifact)
    ctl._golden = golden
    try:
        yield target, ctl, golden
    finally:
        ctl.down()  # the colors, the router, and a retirement a promotion scheduled


def _start_candidate(target: LocalTarget, ctl: Controller, kind: str, fault: str) -> None:
    """v1 live on blue, then v2 on green as a shadow (every request copied) or a 50 % canary."""
    ctl.deploy(fake_release("1"))
    # errors_after:N passes the deploy's smoke test (21 predictions) and, for the canary, its
    # verification (about a dozen at 50 %); from then on v2 answers 500
    fault_uri = {"shadow": "errors_after:21", "canary": "errors_after:60"}[kind] if fault == "recorded-errors" else None
    if kind == "shadow":
        ctl.deploy(fake_release("2", fault_uri), strategy="shadow")
    else:
        ctl.deploy(fake_release("2", fault_uri), strategy="canary", weight=50)
    assert answered_by(target.live_url(), 20)["1"] > 0


def _record_errors(target: LocalTarget, kind: str) -> None:
    """Client traffic until the candidate has recorded errors (copies for a shadow, its share for a canary)."""
    url = target.live_url()
    if kind == "shadow":
        answered_by(url, 30)
        poll("the shadow's errors", lambda: ((target.shadow_stats() or {}).get("errors") or 0) >= 10)
        return
    with httpx.Client(base_url=url, timeout=10.0) as client:
        for _ in range(400):
            client.post("/predict", json={"records": RECORDS[:1]})
            signal_ = target.signal("green")
            if signal_ is not None and signal_.errors >= 5:
                return
    raise AssertionError("the canary recorded no errors")


def _kill_once_switched(target: LocalTarget) -> threading.Thread:
    """SIGKILL green's process as soon as the router sends it all traffic (mid-verification)."""
    pid = int(target._load()["colors"]["green"]["pid"])

    def run() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if target.weights() == {"green": 100}:
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.01)

    killer = threading.Thread(target=run, daemon=True)
    killer.start()
    return killer


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("kind", ["shadow", "canary"])
def test_a_failed_promotion_leaves_the_previous_release_live_and_status_says_why(
    setup: tuple[LocalTarget, Controller, CandidateGolden], project: Path, kind: str, fault: str
) -> None:
    target, ctl, golden = setup
    code, message = FAULTS[fault]
    message = message.replace("KIND", kind)
    _start_candidate(target, ctl, kind, fault)
    if fault == "tampered":
        (golden.artifact / "extra.py").write_text("import os  # added after logging\n")
    elif fault in ("raises", "mlflow-down"):
        golden.fault = fault
    elif fault == "recorded-errors":
        _record_errors(target, kind)
    before = requests_to(target, "green")

    if fault == "sigkill":  # the promoting command killed mid-verification: the next command switches back
        killed = subprocess.run(
            [sys.executable, str(PROMOTE_ONCE), str(project), kind],
            env={**os.environ, FAULT_VAR: "mid-verification"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert killed.returncode == code, killed.stderr
        # no command runs now: the promotion's guard (a detached process) sees its command gone and switches back
        poll("the guard's switch back", lambda: target.weights() == {"blue": 100} and ctl.store.load().pending is None)
        log = ctl.store.dir / "guard.log"
        line = f"undid the interrupted promotion of the {kind} of card-fraud v2"
        poll("the guard's line", lambda: line in log.read_text())
    else:
        killer = _kill_once_switched(target) if fault == "dies" else None
        with pytest.raises(MlshipError) as raised:
            ctl.promote_shadow() if kind == "shadow" else ctl.promote_canary()
        if killer is not None:
            killer.join(timeout=60)
        error = raised.value
        assert error.exit_code == code and message in str(error), str(error)
        assert "card-fraud v1 on blue is still live" in str(error)
        if fault in BEFORE_THE_SWITCH:
            assert "refused before the switch" in str(error)
            assert requests_to(target, "green") == before, "the router never sent v2 a request"

    code_, output = mlship("status", "--json")
    assert code_ == 0, output
    info = json.loads(output[output.index("{") : output.rindex("}") + 1])
    assert info["live"] == "blue" and info["weights"] == {"blue": 100} and info["pending"] is None
    assert info["shadow"] is None and not info["colors"]["green"]["running"]
    newest = info["history"][0]
    assert newest["version"] == "2" and message.split(" (")[0] in newest["detail"], newest
    assert newest["outcome"] == ("rejected" if fault in BEFORE_THE_SWITCH else "rolled back")
    code_, output = mlship("status")
    assert code_ == 0 and "live blue" in output and newest["outcome"] in output, output
    assert answered_by(target.live_url()) == Counter({"1": 40}), "v2 answered no client after the command"


def test_status_never_calls_a_color_that_takes_all_traffic_a_canary(
    setup: tuple[LocalTarget, Controller, CandidateGolden],
) -> None:
    """A route that sends everything to the canary (the state of a killed promotion before intent was
    written, or a route changed by hand) is put back to the canary's split, and status says so."""
    target, ctl, _ = setup
    ctl.deploy(fake_release("1"))
    ctl.deploy(fake_release("2"), strategy="canary", weight=50)
    target.set_weights({"green": 100})
    assert answered_by(target.live_url(), 10) == Counter({"2": 10})
    code, output = mlship("status", "--json")
    assert code == 0, output
    info = json.loads(output[output.index("{") : output.rindex("}") + 1])
    assert any("sent all traffic to the canary green" in note for note in info["reconciled"]), info["reconciled"]
    assert info["weights"] == {"blue": 50, "green": 50} and info["live"] == "blue"
    assert answered_by(target.live_url())["1"] > 0


def _processes_with(text: str) -> list[int]:
    """Pids whose command line names `text` (the guard's spec file)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_a_promotion_that_succeeds_stops_its_guard(
    setup: tuple[LocalTarget, Controller, CandidateGolden], project: Path
) -> None:
    target, ctl, _ = setup
    ctl.deploy(fake_release("1"))
    ctl.deploy(fake_release("2"), strategy="canary", weight=50)
    done = subprocess.run(
        [sys.executable, str(PROMOTE_ONCE), str(project), "canary"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert target.weights() == {"green": 100} and answered_by(target.live_url(), 10) == Counter({"2": 10})
    spec = str(ctl.store.dir / "guard.json")
    assert (ctl.store.dir / "guard.json").is_file() and _processes_with(spec) == [], "the guard was stopped"
    assert "undid" not in (ctl.store.dir / "guard.log").read_text()
