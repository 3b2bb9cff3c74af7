"""Build and run helpers of the docker tier (also used by benchmarks/image.py).

Every build here is a real `docker build` of deployment/Dockerfile on a base made from Debian
packages (scripts/docker-base-image.sh: no image can be pulled on this machine), with the
context laid out exactly as the Dagger `build` function lays it out: the project files the
.dockerignore admits, plus the trained model at build/model. Builds use the default bridge
network: the build container reaches PyPI through it (the base trusts the host's local CAs).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deployment" / "Dockerfile"
BASE_IMAGE = os.environ.get("MLSHIP_TEST_BASE_IMAGE", "mlship-base:bookworm")
SERVING_REPO = "mlship-serving-test"
CONTEXT_FILES = ("pyproject.toml", "uv.lock", "README.md", ".dockerignore")
# Budget for the serving image on the Debian base (measured 928 MB: venv 776 MB — mlflow,
# scikit-learn, scipy, pandas, pyarrow, matplotlib, great-expectations — base 169 MB).
SIZE_BUDGET_BYTES = 1_100_000_000


def docker(*args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI; on failure raise with docker's own stderr (tests show it)."""
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} … failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc


def image_exists(ref: str) -> bool:
    return docker("image", "inspect", ref, check=False).returncode == 0


def ensure_base_image() -> float:
    """Build the Debian base with debootstrap unless the tag exists (the tag is the cache); seconds spent."""
    if image_exists(BASE_IMAGE):
        return 0.0
    start = time.monotonic()
    subprocess.run(["sh", str(REPO / "scripts" / "docker-base-image.sh"), BASE_IMAGE], check=True, timeout=1800)
    return time.monotonic() - start


def make_context(dest: Path, model_dir: Path) -> Path:
    """A build context like the repo's (what .dockerignore admits) with `model_dir` at build/model."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in CONTEXT_FILES:
        shutil.copy2(REPO / name, dest / name)
    if (dest / "src").exists():
        shutil.rmtree(dest / "src")
    shutil.copytree(REPO / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__"))
    set_model(dest, model_dir)
    return dest


def set_model(context: Path, model_dir: Path) -> None:
    target = context / "build" / "model"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(model_dir, target)


@dataclass(frozen=True)
class Build:
    """One finished `docker build`: tag, image id, wall time and the builder's output."""

    tag: str
    image_id: str
    seconds: float
    output: str

    @property
    def steps_run(self) -> list[str]:
        """Steps the legacy builder executed (`Running in`) — empty when every step came from cache."""
        return re.findall(r"Running in ([0-9a-f]+)", self.output)

    @property
    def cached_steps(self) -> int:
        return len(re.findall(r"Using cache|CACHED", self.output))


def build_serving_image(
    context: Path,
    tag: str,
    *,
    version: str,
    git_sha: str,
    created: str,
    name: str = "card-fraud",
    no_cache: bool = False,
    timeout: float = 1800.0,
) -> Build:
    """`docker build -f deployment/Dockerfile` with the release build args, on the Debian base."""
    args = [
        "build",
        "--file",
        str(DOCKERFILE),
        "--tag",
        tag,
        "--build-arg",
        f"BASE_IMAGE={BASE_IMAGE}",
        "--build-arg",
        f"GIT_SHA={git_sha}",
        "--build-arg",
        f"MODEL_NAME={name}",
        "--build-arg",
        f"MODEL_VERSION={version}",
        "--build-arg",
        f"CREATED={created}",
        *(["--no-cache"] if no_cache else []),
        str(context),
    ]
    start = time.monotonic()
    proc = docker(*args, timeout=timeout)
    seconds = time.monotonic() - start
    image_id = docker("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
    return Build(tag, image_id, seconds, proc.stdout + proc.stderr)


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_derived(tag: str, dockerfile: str) -> str:
    """An image built from a Dockerfile on stdin (no context): the broken variants of a good image."""
    proc = subprocess.run(
        ["docker", "build", "--tag", tag, "-"],
        input=dockerfile,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"docker build of {tag} failed: {proc.stderr.strip()[-2000:]}")
    return tag


def inspect(ref: str) -> dict[str, Any]:
    return dict(json.loads(docker("inspect", ref).stdout)[0])


def free_port() -> int:
    from mlship.deploy.targets.local import free_port as pick

    return pick()


@dataclass
class Running:
    """A container started by a test, published on 127.0.0.1 only."""

    id: str
    url: str


@contextlib.contextmanager
def run_container(image: str, *extra: str) -> Iterator[Running]:
    """`docker run -d --read-only --tmpfs /tmp -p 127.0.0.1:P:8000 IMAGE`, always removed afterwards."""
    port = free_port()
    name = f"mlship-test-{uuid.uuid4().hex[:10]}"
    args = ["run", "--detach", "--name", name, "--publish", f"127.0.0.1:{port}:8000"]
    args += ["--read-only", "--tmpfs", "/tmp", *extra, image]
    container = docker(*args).stdout.strip()
    try:
        yield Running(container, f"http://127.0.0.1:{port}")
    finally:
        docker("rm", "--force", container, check=False)


def wait_ready(url: str, container: str, timeout: float = 180.0) -> float:
    """Seconds until GET /ready answers 200; fails with the container's logs if it never does."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/ready", timeout=2.0).status_code == 200:
                return time.monotonic() - start
        state = docker("inspect", "--format", "{{.State.Running}}", container, check=False).stdout.strip()
        if state == "false":
            break
        time.sleep(0.1)
    logs = docker("logs", container, check=False)
    raise AssertionError(f"{container} never became ready:\n{(logs.stdout + logs.stderr)[-3000:]}")


def wait_health(container: str, want: str = "healthy", timeout: float = 180.0) -> str:
    """Poll the HEALTHCHECK status until it is `want` (or the timeout); returns the last status."""
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = docker("inspect", "--format", "{{.State.Health.Status}}", container, check=False).stdout.strip()
        if status == want:
            return status
        time.sleep(1.0)
    return status


def context_size_bytes(root: Path) -> int:
    """Bytes the engine receives as build context for `root` (its .dockerignore applied, by docker itself).

    The legacy builder prints "Sending build context to Docker daemon  2.28MB"; a throwaway
    Dockerfile outside the context copies nothing, so this costs only the context transfer.
    """
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(_tempdir()))
        dockerfile = tmp / "Dockerfile"
        dockerfile.write_text("FROM scratch\nLABEL io.mlship.context-probe=1\n")
        tag = f"mlship-context-probe:{uuid.uuid4().hex[:8]}"
        proc = subprocess.run(
            ["docker", "build", "--file", str(dockerfile), "--tag", tag, str(root)],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
            check=False,
        )
        docker("rmi", "--force", tag, check=False)
    match = re.search(r"Sending build context to Docker daemon\s+([\d.]+)([kMG]?B)", proc.stdout + proc.stderr)
    if not match:
        raise RuntimeError(f"no context size in the build output: {(proc.stdout + proc.stderr)[-1000:]}")
    scale = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[match.group(2)]
    return int(float(match.group(1)) * scale)


@contextlib.contextmanager
def _tempdir() -> Iterator[str]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mlship-ctx-") as tmp:
        yield tmp
