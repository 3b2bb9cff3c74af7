"""The serving image, built for real from deployment/Dockerfile and run: what users will ship."""

from __future__ import annotations

import math

import httpx
import pytest

from tests.docker import support
from tests.docker.conftest import ServingImages

pytestmark = pytest.mark.docker


def test_the_container_serves_the_models_own_predictions(serving_images: ServingImages) -> None:
    from mlship.registry import load_model_dir, model_input_example

    example = model_input_example(serving_images.model_v1)
    assert example is not None and len(example) > 0
    expected = load_model_dir(serving_images.model_v1).predict_proba(example)[:, 1].tolist()
    records = example.to_dict(orient="records")
    with support.run_container(serving_images.v1.tag) as ctr:
        support.wait_ready(ctr.url, ctr.id)
        assert httpx.get(f"{ctr.url}/health", timeout=5).status_code == 200
        assert httpx.get(f"{ctr.url}/ready", timeout=5).status_code == 200
        response = httpx.post(f"{ctr.url}/predict", json={"records": records}, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["predictions"]) == len(records)
        assert all(math.isclose(a, b, abs_tol=1e-9) for a, b in zip(body["probabilities"], expected, strict=True))
        version = httpx.get(f"{ctr.url}/version", timeout=5).json()
        assert version["model"] == {"name": "card-fraud", "version": "1"}
        assert version["git_sha"] == serving_images.git_sha
        bad = httpx.post(f"{ctr.url}/predict", json={"records": [{"amount": "lots"}]}, timeout=10)
        assert bad.status_code == 422  # the schema derived from the model signature refuses it


def test_runs_as_non_root_read_only_and_the_healthcheck_turns_healthy(serving_images: ServingImages) -> None:
    with support.run_container(serving_images.v1.tag) as ctr:
        support.wait_ready(ctr.url, ctr.id)
        status = support.docker("exec", ctr.id, "cat", "/proc/1/status").stdout
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:] == ["10001"] * 4  # real, effective, saved, fs uid of the server
        denied = support.docker("exec", ctr.id, "touch", "/opt/model/x", check=False)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr
        assert support.docker("exec", ctr.id, "touch", "/tmp/ok", check=False).returncode == 0
        assert support.wait_health(ctr.id, "healthy", timeout=120) == "healthy"
    config = support.inspect(serving_images.v1.tag)["Config"]
    assert config["User"] == "10001:10001"
    assert "8000/tcp" in config["ExposedPorts"]
    assert config["Healthcheck"]["Test"][0] == "CMD"


def test_labels_carry_the_git_sha_and_model_version(serving_images: ServingImages) -> None:
    for build, version in ((serving_images.v1, "1"), (serving_images.v2, "2")):
        labels = support.inspect(build.tag)["Config"]["Labels"]
        assert labels["org.opencontainers.image.revision"] == serving_images.git_sha
        assert labels["org.opencontainers.image.version"] == version
        assert labels["io.mlship.model.version"] == version
        assert labels["io.mlship.model.name"] == "card-fraud"
        assert labels["org.opencontainers.image.created"] == serving_images.created


def test_the_image_stays_within_its_size_budget(serving_images: ServingImages) -> None:
    size = int(support.inspect(serving_images.v1.tag)["Size"])
    print(f"serving image {serving_images.v1.tag}: {size / 1e6:.0f} MB (budget {support.SIZE_BUDGET_BYTES / 1e6:.0f})")
    assert size <= support.SIZE_BUDGET_BYTES


def test_a_rebuild_with_no_change_comes_entirely_from_the_cache(serving_images: ServingImages) -> None:
    rebuild = serving_images.rebuild
    print(f"rebuild with no change: {rebuild.seconds:.2f} s ({rebuild.cached_steps} cached steps)")
    assert rebuild.image_id == serving_images.v1.image_id
    assert rebuild.steps_run == []  # no step executed again
    assert rebuild.cached_steps >= 15


def test_images_of_two_models_share_every_layer_but_the_model(serving_images: ServingImages) -> None:
    v1 = support.inspect(serving_images.v1.tag)["RootFS"]["Layers"]
    v2 = support.inspect(serving_images.v2.tag)["RootFS"]["Layers"]
    assert len(v1) == len(v2) and v1[:-1] == v2[:-1] and v1[-1] != v2[-1]


def test_the_final_image_has_no_build_tools_installers_or_test_code(serving_images: ServingImages) -> None:
    script = (
        "for t in gcc cc c++ g++ make ld uv pip pip3; do command -v $t; done; "
        "find / -xdev -type d \\( -name tests -o -name test \\) -not -path '/proc/*' 2>/dev/null; "
        "ls -d /src /opt/tools 2>/dev/null; true"
    )
    found = support.docker("run", "--rm", "--entrypoint", "sh", serving_images.v1.tag, "-c", script).stdout.split()
    assert found == []
    pip = support.docker("run", "--rm", "--entrypoint", "python", serving_images.v1.tag, "-m", "pip", check=False)
    assert pip.returncode != 0 and "No module named pip" in pip.stderr


def test_dockerignore_keeps_the_build_context_small(docker_daemon: None) -> None:
    size = support.context_size_bytes(support.REPO)
    print(f"build context of the repo: {size / 1e6:.2f} MB")
    assert size < 10_000_000  # .venv, .git, tests/, data/ and build junk stay out
