"""The deploy lock: one deploy per environment at a time, surviving a crashed holder.

A lock file holding the owner's pid is created with O_EXCL; a lock whose pid no longer
runs is stale and is taken over, so a killed deploy never blocks the next one forever.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from mlship.errors import InfraError


class LockHeld(InfraError):
    """Another live process holds the deploy lock (exit 3); waiting for it is safe."""


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (and is not a zombie we could reap)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


@contextlib.contextmanager
def deploy_lock(directory: Path) -> Iterator[Path]:
    """Hold `<directory>/deploy.lock` for the block; raise InfraError if a live process holds it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "deploy.lock"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder is not None and pid_alive(holder):
                raise LockHeld(
                    f"another deploy (pid {holder}) holds {path}",
                    hint="wait for it to finish; delete the file only if that process is gone",
                ) from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        break
    else:
        raise InfraError(f"could not take the deploy lock {path}", hint="retry; another deploy raced for it")
    try:
        yield path
    finally:
        if _holder(path) == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _holder(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or "0")
    except (OSError, ValueError):
        return None
