"""Processes a deploy starts and may stop later: colors, the router, the retirement and the promotion guard.

A process is recorded by a handle (pid *and* start time), so a reused pid is never mistaken for
ours; only processes whose handle still matches are ever signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mlship.deploy.lock import pid_alive
from mlship.deploy.targets.base import ColorFailed
from mlship.fsutil import write_json
from mlship.redaction import MLFLOW_CLIENT_SECRETS, env_for_child

Handle = dict[str, Any]

RETIRE_MODULE, RETIRE_SPEC = "mlship.deploy.retire", "retire.json"
"""The retirement process (stops the previous color when the rollback window ends) and its spec file."""
GUARD_MODULE, GUARD_SPEC = "mlship.deploy.guard", "guard.json"
"""The promotion guard (switches back if a promoting command dies) and its spec file."""


def start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[19]
    except (OSError, IndexError):
        return None


def ours(handle: Handle) -> bool:
    """The recorded process still runs and is the one we started (pid reuse guard)."""
    pid = int(handle.get("pid", 0))
    return pid_alive(pid) and start_time(pid) == handle.get("started")


def spawn(
    argv: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    secrets: Iterable[str] = (),
) -> Handle:
    """Start a detached process (own session, so it outlives the CLI) logging to `log`.

    It inherits the environment less every secret not named in `secrets` (redaction.env_for_child).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env_for_child(secrets, extra=env),
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise ColorFailed(f"cannot run {argv[0]}: {exc.strerror}") from None
    return {"pid": proc.pid, "started": start_time(proc.pid), "argv": argv}


def terminate(handle: Handle, grace_s: float = 10.0) -> None:
    """SIGTERM (the server drains), then SIGKILL after `grace_s`; only if the process is ours."""
    if not ours(handle):
        return
    pid = int(handle["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def cancel(record: dict[str, Any]) -> bool:
    """Stop a scheduled retirement or guard process (only ours: pid and start time match); True if it ran."""
    if not ours(record):
        return False
    terminate(record, grace_s=2.0)
    return True


def spawn_detached(module: str, spec: dict[str, Any], spec_file: Path, log: Path, *, cwd: Path) -> Handle:
    """Start `python -m <module> <spec>`, a process that outlives this command (guard, retirement).

    Its spec is written 0600 (it holds the settings) beside the state; argv names only the file.
    """
    write_json(spec_file, spec)
    spec_file.chmod(0o600)
    argv = [sys.executable, "-m", module, str(spec_file)]
    return spawn(argv, log, cwd=cwd, secrets=MLFLOW_CLIENT_SECRETS)
