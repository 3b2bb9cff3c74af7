"""Session fixtures of the docker tier: a reachable daemon, the Debian base, two serving images.

Skipped (with the reason) when no Docker daemon answers; failed instead when MLSHIP_REQUIRE_TIERS
names docker (.ci/run sets it). Building costs minutes the first
time (base ~2.5 min, serving image ~5 min on 2 cores); the base tag and the engine's layer
cache make later sessions fast, so the test images are kept (their containers never are).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import make_project, tier_unavailable
from tests.docker import support


@dataclass(frozen=True)
class ServingImages:
    """What the session built: the two model dirs, their images, and the no-change rebuild."""

    v1: support.Build
    v2: support.Build
    rebuild: support.Build
    model_v1: Path
    model_v2: Path
    git_sha: str
    created: str


@pytest.fixture(scope="session")
def docker_daemon() -> None:
    from mlship.deploy.image import docker_available

    reason = docker_available()
    if reason is not None:
        why = f"docker tier needs a Docker daemon: {reason} (start one with scripts/start-dockerd.sh)"
        tier_unavailable("docker", why)


@pytest.fixture(scope="session")
def base_image(docker_daemon: None) -> str:
    if not support.image_exists(support.BASE_IMAGE):
        if shutil.which("debootstrap") is None:
            tier_unavailable("docker", f"{support.BASE_IMAGE} is missing and debootstrap is not installed to build it")
        support.ensure_base_image()
    return support.BASE_IMAGE


def _train(root: Path, seed: int, out: Path) -> Path:
    """A model trained by mlship itself on small synthetic data; returns its MLflow model dir."""
    from mlship.model.train import train
    from mlship.settings import load_settings

    project = make_project(root, rows=800, seed=seed)
    train(load_settings(cwd=project), out=out)
    return out / "model"


@pytest.fixture(scope="session")
def serving_images(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> ServingImages:
    from mlship.provenance import git_sha

    tmp = tmp_path_factory.mktemp("docker-tier")
    sha = git_sha(support.REPO)
    created = support.now_rfc3339()
    model_v1 = _train(tmp / "p1", 1, tmp / "out1")
    model_v2 = _train(tmp / "p2", 2, tmp / "out2")
    context = support.make_context(tmp / "context", model_v1)
    v1 = support.build_serving_image(context, f"{support.SERVING_REPO}:v1", version="1", git_sha=sha, created=created)
    rebuild = support.build_serving_image(
        context, f"{support.SERVING_REPO}:v1", version="1", git_sha=sha, created=created
    )
    support.set_model(context, model_v2)
    v2 = support.build_serving_image(context, f"{support.SERVING_REPO}:v2", version="2", git_sha=sha, created=created)
    return ServingImages(v1, v2, rebuild, model_v1, model_v2, sha, created)
