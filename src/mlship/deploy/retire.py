"""Stop the previous color when the rollback window ends (design.md, blue-green step 6).

After a switch the controller starts `python -m mlship.deploy.retire SPEC` as a detached
process (pid and start time recorded in the environment's state). It sleeps until the
window ends, takes the deploy lock, re-reads the state and stops the previous color only
if it is still the previous color of the same release and not live. A later deploy or
rollback replaces the record (and stops this process); if it survives anyway, the state
it finds no longer matches and it exits without touching anything. `mlship down` stops it.

The spec is a JSON file in the environment's state directory (not argv: settings may hold
a tracking URI with credentials): the settings, the target and how to rebuild it, the
color, its release URI and the moment the window ends.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from mlship.deploy.factory import controller
from mlship.deploy.lock import LockHeld
from mlship.deploy.process import RETIRE_SPEC
from mlship.deploy.release import _read
from mlship.errors import MlshipError
from mlship.settings import settings_from_mapping

POLL_S = 1.0
LOCK_PATIENCE_S = 900.0
"""How long to wait for a deploy that holds the lock when the window ends (a deploy is bounded)."""


def spec_path(state_dir: Path) -> Path:
    return state_dir / RETIRE_SPEC


def superseded(state_dir: Path, spec: dict[str, Any], pid: int) -> str | None:
    """Why this retirement no longer applies (read without the lock), or None while it still does.

    While a deploy holds the lock the state is in flux, so nothing is decided then.
    """
    if not state_dir.is_dir():
        return "the environment's state directory is gone"
    if (state_dir / "deploy.lock").exists():
        return None
    try:
        state = _read(state_dir / "state.json") or {}
    except MlshipError:
        return None
    record = state.get("retire") or {}
    if record.get("pid") != pid:
        return "another retirement (or none) is scheduled now"
    if state.get("previous_until") != spec["until"]:
        return "a later switch moved the rollback window"
    color = spec["color"]
    if state.get("live") == color or color not in (state.get("colors") or {}):
        return f"{color} is live again or no longer running"
    return None


def wait_for_window(state_dir: Path, spec: dict[str, Any], pid: int) -> str | None:
    """Sleep until the window ends; return why to give up early, or None when it is time."""
    while True:
        reason = superseded(state_dir, spec, pid)
        if reason is not None:
            return reason
        remaining = float(spec["until"]) - time.time()
        if remaining <= 0:
            return None
        time.sleep(min(POLL_S, remaining))


def run(spec_file: Path) -> str:
    """Wait for the window, then retire the color through the controller (under the deploy lock)."""
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    state_dir = Path(spec["state_dir"])
    reason = wait_for_window(state_dir, spec, os.getpid())
    if reason is not None:
        return f"not retiring {spec['color']}: {reason}"
    settings = settings_from_mapping(spec["settings"], root=Path(spec["root"]), source=str(spec_file))
    deadline = time.monotonic() + LOCK_PATIENCE_S
    with controller(settings, spec["target"], spec["env"], spec.get("namespace")) as ctl:
        while True:
            try:
                return ctl.retire(spec["color"], spec["uri"], float(spec["until"]))
            except LockHeld:  # a deploy is running: it is bounded, wait for it
                if time.monotonic() > deadline:
                    raise
                time.sleep(POLL_S)


def main(argv: list[str] | None = None) -> int:
    """`python -m mlship.deploy.retire SPEC.json`: one line to the log, exit 0 done, 3 on failure."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mlship.deploy.retire SPEC.json", file=sys.stderr)
        return 2

    def stamp() -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    try:
        print(f"{stamp()} {run(Path(args[0]))}", flush=True)
    except (MlshipError, OSError, ValueError, KeyError) as exc:
        print(f"{stamp()} retirement failed: {exc}", flush=True)
        return 3
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised as a real process by the tests
    sys.exit(main())
