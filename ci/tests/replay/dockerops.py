"""The few Docker operations the replay is made of: copy in/out, run an exec, commit, save, build.

Every container the replay makes is named `mlship-replay-…` and removed after use; every
image it keeps is tagged `<namespace>:<content key>` (the replay's layer cache).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.docker import support

PREFIX = "mlship-replay"


def docker(*args: str, timeout: float = 600.0, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """The docker CLI; a daemon-side failure raises with docker's own stderr."""
    proc = subprocess.run(["docker", *args], input=stdin, capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return proc


def image_id(ref: str) -> str | None:
    proc = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def name(kind: str) -> str:
    return f"{PREFIX}-{kind}-{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def created(image: str) -> Iterator[str]:
    """A container created (never started) from `image`, removed afterwards."""
    cid = docker("create", "--name", name("fs"), image, "true").stdout.decode().strip()
    try:
        yield cid
    finally:
        subprocess.run(["docker", "rm", "--force", cid], capture_output=True, check=False)


def copy_in(cid: str, tar_bytes: bytes) -> None:
    """Extract a tar (paths relative to /) into the container; docker creates missing parents."""
    docker("cp", "-", f"{cid}:/", stdin=tar_bytes)


def copy_out(cid: str, path: str, dest: Path) -> Path:
    """`docker cp CID:path -` unpacked under `dest`; returns the unpacked path."""
    proc = subprocess.run(["docker", "cp", f"{cid}:{path}", "-"], capture_output=True, check=False, timeout=600)
    if proc.returncode != 0:
        raise FileNotFoundError(f"{path}: {proc.stderr.decode().strip()}")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        tar.extractall(dest, filter="tar")
    return dest / Path(path.rstrip("/")).name


def commit(cid: str, tag: str, changes: list[str] | None = None) -> str:
    args = ["commit"]
    for change in changes or []:
        args += ["--change", change]
    docker(*args, cid, tag)
    found = image_id(tag)
    if found is None:
        raise RuntimeError(f"commit of {cid} left no image {tag}")
    return found


def save(image: str, dest: Path) -> None:
    docker("save", "--output", str(dest), image, timeout=900)


def build(context: Path, dockerfile: str, tag: str, build_args: dict[str, str], target: str = "") -> str:
    """`docker build` (legacy builder, as the docker tier) of a staged directory; returns the image id."""
    args = ["build", "--file", str(context / dockerfile), "--tag", tag]
    for key, value in build_args.items():
        args += ["--build-arg", f"{key}={value}"]
    if target:
        args += ["--target", target]
    proc = subprocess.run(
        ["docker", *args, str(context)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    if proc.returncode != 0:
        raise BuildError(dockerfile, (proc.stdout + proc.stderr)[-4000:])
    found = image_id(tag)
    if found is None:
        raise RuntimeError(f"build left no image {tag}")
    return found


class BuildError(RuntimeError):
    """A failed dockerBuild, with the builder's output (the engine reports the failing step)."""

    def __init__(self, dockerfile: str, output: str) -> None:
        super().__init__(f"failed to build {dockerfile}: {output}")
        self.output = output


@contextlib.contextmanager
def secret_dir() -> Iterator[Path]:
    """A 0700 directory for 0600 secret files, mounted read-only at run time, then deleted."""
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}-secrets-") as tmp:
        path = Path(tmp)
        path.chmod(0o700)
        yield path


def base_image() -> str:
    return support.BASE_IMAGE
