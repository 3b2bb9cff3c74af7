"""`mlship deploy --target local --image`: a whole release on one machine with Docker.

image v1 → image v2 (blue-green switch) → rollback, then two broken images that must never
take traffic; the live version is read through the router, as a user's client would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from mlship.cli import app
from mlship.commands import register_all
from mlship.deploy.targets.container import LABEL_DEPLOY, scope_of
from tests.conftest import make_project
from tests.docker import support
from tests.docker.conftest import ServingImages

pytestmark = pytest.mark.docker
register_all(app)


def mlship(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def live_version(url: str) -> str | None:
    """The model version the live URL answers /version with (None: nothing answers)."""
    try:
        response = httpx.get(f"{url}/version", timeout=5)
    except httpx.HTTPError:
        return None
    return str(response.json()["model"]["version"]) if response.status_code == 200 else None


def our_containers(state_dir: Path) -> list[str]:
    """Containers (running or not) that this project's deploys started, by their label."""
    out = support.docker("ps", "--all", "--quiet", "--filter", f"label={LABEL_DEPLOY}").stdout.split()
    scope = scope_of(state_dir)
    mine = []
    for container in out:
        label = support.inspect(container)["Config"]["Labels"].get(LABEL_DEPLOY, "")
        if label.endswith(f"/{scope}"):
            mine.append(container)
    return mine


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = make_project(tmp_path / "proj", rows=200)
    port = support.free_port()
    deploy = {
        "port": port,
        "ready_timeout_s": 180.0,
        "verify_window_s": 2.0,
        "smoke_latency_ms": 5000.0,
        "max_p99_ms": 5000.0,
    }
    body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in deploy.items())
    with (root / "pyproject.toml").open("a") as f:
        f.write(f"\n[tool.mlship.deploy]\n{body}")
    monkeypatch.chdir(root)
    yield root
    mlship("down")
    for container in our_containers(root / ".mlship" / "deploy" / "staging"):
        support.docker("rm", "--force", container, check=False)


def test_image_release_switches_rolls_back_and_never_takes_a_broken_image(
    serving_images: ServingImages, project: Path
) -> None:
    live = f"http://127.0.0.1:{_port(project)}"
    state_dir = project / ".mlship" / "deploy" / "staging"

    code, output = mlship("deploy", "--image", serving_images.v1.tag)
    assert code == 0, output
    assert "card-fraud v1 is live on blue" in output and live_version(live) == "1"

    code, output = mlship("deploy", "--image", serving_images.v2.tag)
    assert code == 0, output
    assert "card-fraud v2 is live on green" in output and live_version(live) == "2"
    code, output = mlship("status", "--json")
    status = json.loads(output)
    assert status["colors"]["blue"]["running"] and status["colors"]["green"]["running"]
    green = status["colors"]["green"]["release"]
    assert (green["image"], green["ref"], green["git_sha"]) == (
        serving_images.v2.image_id,
        serving_images.v2.tag,
        serving_images.git_sha,
    )
    assert len(our_containers(state_dir)) == 2

    code, output = mlship("rollback")
    assert code == 0, output
    assert live_version(live) == "1"

    no_model = support.build_derived(
        f"{support.SERVING_REPO}:no-model",
        f"FROM {serving_images.v1.tag}\nUSER root\nRUN rm -rf /opt/model\nUSER 10001:10001\n"
        'LABEL io.mlship.model.version="3"\n',
    )
    code, output = mlship("deploy", "--image", no_model)
    assert code == 1, output
    assert "carries no MLflow model" in output and live_version(live) == "1"

    crashing = support.build_derived(
        f"{support.SERVING_REPO}:crashing",
        f"FROM {serving_images.v1.tag}\n"
        'ENTRYPOINT ["python", "-c", "raise SystemExit(\'model store unreachable\')"]\n'
        'LABEL io.mlship.model.version="4"\n',
    )
    code, output = mlship("deploy", "--image", crashing)
    assert code == 1, output
    assert "rolled back" in output and "exited before it was ready" in output
    assert live_version(live) == "1"
    code, output = mlship("status", "--json")
    history = json.loads(output)["history"]
    assert history[0]["outcome"] == "rejected" and history[0]["version"] == "4"
    assert "model store unreachable" in (state_dir / "green.log").read_text()

    code, output = mlship("down")
    assert code == 0 and "container mlship-staging-" in output
    assert our_containers(state_dir) == []
    assert live_version(live) is None


def _port(root: Path) -> int:
    from mlship.settings import load_settings

    return load_settings(cwd=root).deploy.port
