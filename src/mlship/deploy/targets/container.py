"""Colors of the `local` target as containers of the release's image (`mlship deploy --image`).

Same controller, same router: only how a color runs changes. Each color is
`docker run -d --name mlship-<env>-<color>-<scope> -p 127.0.0.1:<port>:8000 --read-only
--cap-drop ALL --security-opt no-new-privileges --tmpfs /tmp -e MLSHIP_COLOR=<color> <image id>`,
published on loopback only. The handle records the container id; alive = the container is
running; stop = `docker stop` with a grace period (the server drains on SIGTERM), then
`docker rm`. A `docker logs -f` follower writes the container's output to the color's log
file, like a process color's.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

from mlship.deploy.image import Completed, docker_cli
from mlship.deploy.process import Handle, spawn, terminate
from mlship.deploy.release import Release
from mlship.deploy.targets.base import ColorFailed
from mlship.errors import InfraError
from mlship.redaction import DOCKER_SECRETS

CONTAINER_PORT = 8000
LABEL_DEPLOY = "io.mlship.deploy"


def scope_of(state_dir: Path) -> str:
    """A short stable id of one project's environment, so two projects' containers never clash."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8]


class DockerRunner:
    """A color is a container of `release.image`, published on 127.0.0.1:<port> only."""

    def __init__(
        self,
        env: str,
        scope: str,
        *,
        docker: str = "docker",
        grace_s: int = 10,
        tmpfs_size: str = "256m",
        follow_logs: bool = True,
    ) -> None:
        self.env = env
        self.scope = scope
        self.docker = docker
        self.grace_s = grace_s
        self.tmpfs_size = tmpfs_size
        self.follow_logs = follow_logs

    def name(self, color: str) -> str:
        return f"mlship-{self.env}-{color}-{self.scope}"

    def run_argv(self, color: str, release: Release, port: int) -> list[str]:
        """The `docker run` command line of one color (read-only root, writable /tmp only)."""
        if not release.image:
            raise ColorFailed(f"release {release.label} has no image to run")
        return [
            self.docker,
            "run",
            "--detach",
            "--name",
            self.name(color),
            "--label",
            f"{LABEL_DEPLOY}={self.env}/{color}/{self.scope}",
            "--publish",
            f"127.0.0.1:{port}:{CONTAINER_PORT}",
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--tmpfs",
            f"/tmp:rw,nosuid,nodev,size={self.tmpfs_size}",
            "--env",
            f"MLSHIP_COLOR={color}",
            release.image,
        ]

    def _docker(self, args: list[str], timeout_s: float = 60.0) -> Completed:
        try:
            return docker_cli(args, docker=self.docker, timeout_s=timeout_s)
        except InfraError as exc:
            raise ColorFailed(str(exc)) from None

    def start(self, color: str, release: Release, port: int, log: Path) -> Handle:
        argv = self.run_argv(color, release, port)
        # A container of this very name can only be a leftover of this env/color (crash, kill -9).
        self._docker(["rm", "--force", self.name(color)])
        started = self._docker(argv[1:], timeout_s=120.0)
        if started.code != 0:
            raise ColorFailed(f"docker run of {release.ref} failed: {started.reason}")
        container = started.out.strip().splitlines()[-1] if started.out.strip() else ""
        if not container:
            raise ColorFailed(f"docker run of {release.ref} printed no container id")
        handle: Handle = {"kind": "container", "id": container, "name": self.name(color), "image": release.image}
        if self.follow_logs:
            handle["logger"] = spawn([self.docker, "logs", "--follow", container], log, secrets=DOCKER_SECRETS)
        return handle

    def alive(self, handle: Handle) -> bool:
        try:
            result = self._docker(["container", "inspect", "--format", "{{.State.Running}}", str(handle["id"])])
        except ColorFailed:
            return False
        return result.code == 0 and result.out.strip() == "true"

    def stop(self, handle: Handle) -> None:
        """`docker stop` (SIGTERM, SIGKILL after the grace period), then remove it; only our container."""
        container = str(handle.get("id", ""))
        if container:
            with contextlib.suppress(ColorFailed):
                self._docker(["stop", "--time", str(self.grace_s), container], timeout_s=self.grace_s + 30.0)
                self._docker(["rm", "--force", container])
        logger = handle.get("logger")
        if isinstance(logger, dict):
            terminate(logger, grace_s=2.0)
