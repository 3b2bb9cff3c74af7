"""A serving image as a release: its labels say what it carries, its own model dir is the golden source.

The image is immutable and carries its model (deployment/Dockerfile copies it to /opt/model),
so a release of an image needs no registry: the tag is pinned once to the image id (a tag
may move, the id never does), the model name/version and git sha come from the image's
labels, and the smoke test's golden predictions are computed on the host from the model
directory copied out of that very image (`docker create` + `docker cp`; nothing runs).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlship.deploy.release import Release
from mlship.deploy.smoke import Golden, golden_from_dir
from mlship.errors import ConfigError, InfraError, PipelineRejected
from mlship.redaction import DOCKER_SECRETS, env_for_child

LABEL_NAME = "io.mlship.model.name"
LABEL_VERSION = "io.mlship.model.version"
LABEL_MODEL_DIR = "io.mlship.model.dir"
LABEL_REVISION = "org.opencontainers.image.revision"
DEFAULT_MODEL_DIR = "/opt/model"
DOCKER_HINT = "install Docker (Debian: apt-get install docker.io) and start it (scripts/start-dockerd.sh)"


@dataclass(frozen=True)
class Completed:
    """What one docker CLI call returned."""

    code: int
    out: str
    err: str

    @property
    def reason(self) -> str:
        """The last non-empty line of stderr (docker puts the reason there)."""
        lines = [line.strip() for line in self.err.splitlines() if line.strip()]
        return lines[-1] if lines else f"exit code {self.code}"


def docker_cli(args: list[str], *, docker: str = "docker", timeout_s: float = 120.0) -> Completed:
    """Run `docker ARGS`; a missing CLI or a hung daemon is an InfraError (exit 3)."""
    try:
        proc = subprocess.run(
            [docker, *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
            check=False,
            env=env_for_child(DOCKER_SECRETS),
        )
    except FileNotFoundError:
        raise InfraError(f"the docker CLI ({docker}) is not installed", hint=DOCKER_HINT) from None
    except subprocess.TimeoutExpired:
        raise InfraError(f"`docker {args[0]}` did not answer within {timeout_s:g} s", hint=DOCKER_HINT) from None
    return Completed(proc.returncode, proc.stdout, proc.stderr)


def _daemon_down(result: Completed) -> bool:
    text = result.err.lower()
    return "cannot connect to the docker daemon" in text or "is the docker daemon running" in text


@dataclass(frozen=True)
class ImageInfo:
    """One local image: the ref the user gave, its immutable id and its labels."""

    ref: str
    id: str
    labels: dict[str, str]

    def label(self, key: str) -> str | None:
        value = self.labels.get(key, "").strip()
        return value if value and value != "unknown" else None

    @property
    def model_dir(self) -> str:
        return self.label(LABEL_MODEL_DIR) or DEFAULT_MODEL_DIR


def inspect_image(ref: str, *, docker: str = "docker") -> ImageInfo:
    """Id and labels of a local image: ConfigError if there is no such image, InfraError if no daemon."""
    result = docker_cli(["image", "inspect", ref], docker=docker)
    if result.code != 0:
        if _daemon_down(result):
            raise InfraError(f"no Docker daemon answers: {result.reason}", hint=DOCKER_HINT)
        raise ConfigError(
            f"image {ref!r} is not in the local Docker engine ({result.reason})",
            hint="build it with `docker build -f deployment/Dockerfile …` or load it with `docker load`",
        )
    try:
        raw: Any = json.loads(result.out)[0]
        labels = (raw.get("Config") or {}).get("Labels") or {}
        return ImageInfo(ref=ref, id=str(raw["Id"]), labels={str(k): str(v) for k, v in labels.items()})
    except (ValueError, LookupError, AttributeError, TypeError):
        raise InfraError(f"`docker image inspect {ref}` printed something unreadable") from None


def release_from_image(ref: str, *, env: str, target: str, docker: str = "docker") -> Release:
    """Pin an image ref once: the release runs the image *id*, named by its model labels."""
    info = inspect_image(ref, docker=docker)
    return Release(
        ref=ref,
        uri=info.id,
        name=info.label(LABEL_NAME),
        version=info.label(LABEL_VERSION),
        image=info.id,
        git_sha=info.label(LABEL_REVISION) or "unknown",
        env=env,
        target=target,
    )


def copy_model_dir(image: str, dest: Path, *, docker: str = "docker") -> Path | None:
    """Copy the image's model directory to `dest` without running the image; None if it has none."""
    info = inspect_image(image, docker=docker)
    created = docker_cli(["create", info.id], docker=docker)
    if created.code != 0:
        raise InfraError(f"docker cannot create a container of {image}: {created.reason}", hint=DOCKER_HINT)
    container = created.out.strip()
    try:
        copied = docker_cli(["cp", f"{container}:{info.model_dir}", str(dest)], docker=docker)
    finally:
        docker_cli(["rm", "-f", container], docker=docker)
    if copied.code != 0 or not (dest / "MLmodel").is_file():
        return None
    return dest


def golden_from_image(*, docker: str = "docker") -> Callable[[Release], Golden]:
    """Golden source for image releases: the model baked into the image, loaded on the host."""

    def source(release: Release) -> Golden:
        if not release.image:
            raise ConfigError(f"release {release.label} has no image")
        with tempfile.TemporaryDirectory(prefix="mlship-image-model-") as tmp:
            model_dir = copy_model_dir(release.image, Path(tmp) / "model", docker=docker)
            if model_dir is None:
                raise PipelineRejected(
                    f"image {release.ref} carries no MLflow model at its model dir, so it cannot serve",
                    hint="rebuild it from deployment/Dockerfile with the model in build/model; nothing was deployed",
                )
            return golden_from_dir(model_dir)

    return source


def docker_available(docker: str = "docker") -> str | None:
    """None when a Docker daemon answers, else the reason it does not (for skips and hints)."""
    if shutil.which(docker) is None:
        return f"the docker CLI ({docker}) is not installed"
    try:
        result = docker_cli(["info", "--format", "{{.ServerVersion}}"], docker=docker, timeout_s=20.0)
    except InfraError as exc:
        return str(exc)
    return None if result.code == 0 else f"no Docker daemon answers: {result.reason}"
