"""Switch back from a promotion whose command died, without waiting for the next command.

Before a promotion (`--promote-shadow` / `--promote-canary`) switches traffic, the CLI's
controller starts `python -m mlship.deploy.guard SPEC` as a detached process. It watches the
promoting command (pid and start time, so a reused pid is not mistaken for it). When that
command ends and the state still names its promotion as pending — it was killed (SIGKILL, a lost
CI runner) after the switch — the guard takes the deploy lock (the dead holder's lock is taken
over) and reconciles, which switches back to the previous color and records why. A promotion
that ends normally stops the guard (or the guard finds nothing pending and exits).

The spec is a JSON file in the environment's state directory, mode 0600 (settings may hold a
tracking URI with credentials): the settings, the target and how to rebuild it, the pid to watch,
its start time, and how long to watch at most.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from mlship.deploy.factory import controller
from mlship.deploy.process import GUARD_SPEC, ours
from mlship.deploy.release import _read
from mlship.errors import MlshipError
from mlship.settings import settings_from_mapping

POLL_S = 0.1


def spec_path(state_dir: Path) -> Path:
    return state_dir / GUARD_SPEC


def _pending_of(state_dir: Path, pid: int) -> dict[str, Any] | None:
    """The pending promotion of `pid` in the state, read without the lock (None: it ended)."""
    try:
        state = _read(state_dir / "state.json") or {}
    except MlshipError:
        return None
    pending = state.get("pending")
    return pending if isinstance(pending, dict) and pending.get("pid") == pid else None


def run(spec_file: Path) -> str:
    """Wait for the promoting command to end; if its promotion is still pending, reconcile (switch back)."""
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    state_dir, pid = Path(spec["state_dir"]), int(spec["pid"])
    watched = {"pid": pid, "started": spec["started"]}
    deadline = time.monotonic() + float(spec["max_s"])
    while ours(watched):
        if time.monotonic() > deadline:
            return f"stopped watching pid {pid}: the promotion outlived its bound (the next command reconciles)"
        time.sleep(POLL_S)
    if _pending_of(state_dir, pid) is None:
        return f"pid {pid} ended; its promotion is not pending"
    settings = settings_from_mapping(spec["settings"], root=Path(spec["root"]), source=str(spec_file))
    with (
        controller(settings, spec["target"], spec["env"], spec.get("namespace")) as ctl,
        ctl.store.lock(),  # the dead command's lock is taken over; a live holder raises LockHeld
    ):
        state = ctl.store.load()
        if state.pending is None or state.pending.get("pid") != pid:
            return f"pid {pid} ended; another command already settled its promotion"
        notes = ctl.reconcile(state)
    return "; ".join(notes) or f"pid {pid} ended; nothing to undo"


def main(argv: list[str] | None = None) -> int:
    """`python -m mlship.deploy.guard SPEC.json`: one line to the log, exit 0 done, 3 on failure."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mlship.deploy.guard SPEC.json", file=sys.stderr)
        return 2

    def stamp() -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    try:
        line = run(Path(args[0]))
    except (MlshipError, OSError, ValueError, KeyError) as exc:
        print(f"{stamp()} guard failed: {exc}", flush=True)
        return 3
    print(f"{stamp()} {line}", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised as a real process by the tests
    sys.exit(main())
