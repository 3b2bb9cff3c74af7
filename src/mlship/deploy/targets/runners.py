"""How a color runs on the local target: a server process, or a container of the release's image.

A `ColorRunner` starts and stops one color's server; `ReleaseRunner` picks the process runner or
the container runner (`targets.container.DockerRunner`) per release, so a history mixing both
still rolls back. Handles are JSON (pid and start time, or the container), kept in `local.json`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Protocol

from mlship.deploy.process import Handle, ours, spawn, terminate
from mlship.deploy.release import Release
from mlship.deploy.targets.base import ColorFailed
from mlship.redaction import MLFLOW_CLIENT_SECRETS


class ColorRunner(Protocol):
    """Starts and stops one color's server; the handle it returns must be JSON-serialisable."""

    def start(self, color: str, release: Release, port: int, log: Path) -> Handle: ...

    def alive(self, handle: Handle) -> bool: ...

    def stop(self, handle: Handle) -> None: ...


def default_serve_command() -> list[str]:
    """`mlship serve` from the same installation as the running mlship."""
    script = Path(sys.executable).parent / "mlship"
    if script.is_file():
        return [str(script), "serve"]
    return [sys.executable, "-c", "from mlship.cli import main; main()", "serve"]


class ProcessRunner:
    """A color is `<serve_command> --model URI --host 127.0.0.1 --port P --color C` as a process."""

    def __init__(
        self, serve_command: list[str] | None = None, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.serve_command = serve_command or default_serve_command()
        self.env = env or {}
        self.cwd = cwd

    def start(self, color: str, release: Release, port: int, log: Path) -> Handle:
        argv = [*self.serve_command, "--model", release.uri, "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--color", color]
        env = {**self.env, "MLSHIP_COLOR": color, "MLSHIP_GIT_SHA": release.git_sha}
        return {"kind": "process", **spawn(argv, log, env=env, cwd=self.cwd, secrets=MLFLOW_CLIENT_SECRETS)}

    def alive(self, handle: Handle) -> bool:
        return ours(handle)

    def stop(self, handle: Handle) -> None:
        terminate(handle)


class ReleaseRunner:
    """A release with an image runs as a container, any other as a process; handles say which."""

    def __init__(self, process: ColorRunner, container: ColorRunner | None = None) -> None:
        self.process = process
        self.container = container

    def _for(self, handle: Handle) -> ColorRunner | None:
        return self.container if handle.get("kind") == "container" else self.process

    def start(self, color: str, release: Release, port: int, log: Path) -> Handle:
        if not release.image:
            return self.process.start(color, release, port, log)
        if self.container is None:
            raise ColorFailed(f"{release.label} is an image, and this target has no container runner")
        return self.container.start(color, release, port, log)

    def alive(self, handle: Handle) -> bool:
        runner = self._for(handle)
        return runner is not None and runner.alive(handle)

    def stop(self, handle: Handle) -> None:
        runner = self._for(handle)
        if runner is not None:
            runner.stop(handle)


def describe(handle: Handle) -> str:
    """How `mlship down` names what it stopped: a pid or a container."""
    if handle.get("kind") == "container":
        return f"container {handle.get('name') or str(handle.get('id', ''))[:12]}"
    return f"pid {handle.get('pid')}"
