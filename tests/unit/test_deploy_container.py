"""`mlship deploy --target local --image`: the DockerRunner and image releases, on a docker CLI double.

The real engine is exercised in tests/docker/; here the argv, the handle logic and every
error path are pinned down without a daemon, so coverage does not depend on Docker.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlship.cli import app
from mlship.commands import register_all
from mlship.deploy.image import (
    docker_available,
    golden_from_image,
    inspect_image,
    release_from_image,
)
from mlship.deploy.release import Release
from mlship.deploy.targets.base import ColorFailed
from mlship.deploy.targets.container import DockerRunner, scope_of
from mlship.deploy.targets.local import LocalTarget
from mlship.deploy.targets.runners import ProcessRunner, ReleaseRunner, describe
from mlship.errors import ConfigError, InfraError, PipelineRejected
from tests.support.deploy_doubles.docker import install_docker_double
from tests.waiting import wait_until

LABELS = {
    "io.mlship.model.name": "card-fraud",
    "io.mlship.model.version": "7",
    "org.opencontainers.image.revision": "abc123",
}

register_all(app)


@pytest.fixture
def docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The docker double first on PATH, with one labelled image `serving:v7`; returns its state file."""
    return install_docker_double(tmp_path, monkeypatch, {"serving:v7": {"id": "sha256:" + "7" * 64, "labels": LABELS}})


def edit(state: Path, **changes: Any) -> None:
    data = json.loads(state.read_text())
    data.update(changes)
    state.write_text(json.dumps(data))


def calls(state: Path) -> list[list[str]]:
    return list(json.loads(state.read_text())["calls"])


def image_release(tag: str = "serving:v7") -> Release:
    return Release(ref=tag, uri="sha256:" + "7" * 64, name="card-fraud", version="7", image="sha256:" + "7" * 64)


def test_run_argv_publishes_on_loopback_only_read_only_with_a_tmpfs(tmp_path: Path) -> None:
    runner = DockerRunner("staging", scope_of(tmp_path))
    argv = runner.run_argv("green", image_release(), 43123)
    assert argv[:3] == ["docker", "run", "--detach"]
    assert argv[argv.index("--publish") + 1] == "127.0.0.1:43123:8000"
    assert "--read-only" in argv and argv[argv.index("--tmpfs") + 1].startswith("/tmp:")
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[argv.index("--security-opt") + 1] == "no-new-privileges"
    assert argv[argv.index("--env") + 1] == "MLSHIP_COLOR=green"
    assert argv[argv.index("--name") + 1] == f"mlship-staging-green-{scope_of(tmp_path)}"
    assert argv[-1] == "sha256:" + "7" * 64  # the pinned id, never the (movable) tag
    with pytest.raises(ColorFailed, match="no image"):
        runner.run_argv("blue", Release(ref="models:/m/1", uri="models:/m/1"), 1)


def test_scope_differs_per_project_and_is_stable(tmp_path: Path) -> None:
    assert scope_of(tmp_path / "a") == scope_of(tmp_path / "a") != scope_of(tmp_path / "b")


def test_start_alive_stop_drive_one_container_and_its_log_follower(docker: Path, tmp_path: Path) -> None:
    runner = DockerRunner("staging", "s1", grace_s=3)
    log = tmp_path / "blue.log"
    handle = runner.start("blue", image_release(), 40001, log)
    assert handle["kind"] == "container" and handle["name"] == "mlship-staging-blue-s1"
    assert runner.alive(handle)
    # its log follower: `docker logs --follow` of this container, whose output lands in the color's log
    wait_until(lambda: log.is_file() and f"logs of {handle['id']}" in log.read_text(), "the follower's output")
    assert ["logs", "--follow", handle["id"]] in calls(docker)
    # a leftover of the same name is removed first; then the run itself
    verbs = [c[0] for c in calls(docker)]
    assert verbs[:2] == ["rm", "run"]
    runner.stop(handle)
    assert not runner.alive(handle)
    stop = next(c for c in calls(docker) if c[0] == "stop")
    assert stop == ["stop", "--time", "3", handle["id"]]
    assert json.loads(docker.read_text())["containers"] == {}  # removed after the stop
    runner.stop(handle)  # stopping twice is harmless


def test_a_crashed_container_is_not_alive(docker: Path, tmp_path: Path) -> None:
    runner = DockerRunner("staging", "s1", follow_logs=False)
    handle = runner.start("blue", image_release(), 40002, tmp_path / "blue.log")
    data = json.loads(docker.read_text())
    data["containers"][handle["id"]]["running"] = False
    docker.write_text(json.dumps(data))
    assert not runner.alive(handle)
    assert not runner.alive({"id": "nope"})


def test_docker_run_failures_are_color_failures(docker: Path, tmp_path: Path) -> None:
    runner = DockerRunner("staging", "s1", follow_logs=False)
    missing = Release(ref="gone:1", uri="x", image="gone:1")
    with pytest.raises(ColorFailed, match="docker run of gone:1 failed: Unable to find image"):
        runner.start("blue", missing, 40003, tmp_path / "blue.log")
    edit(docker, images={"serving:v7": {"id": "sha256:" + "7" * 64, "labels": LABELS, "fail_run": True}})
    with pytest.raises(ColorFailed, match="external connectivity"):
        runner.start("blue", image_release(), 40003, tmp_path / "blue.log")
    edit(docker, daemon=False)
    assert not runner.alive({"id": "x"})
    no_cli = DockerRunner("staging", "s1", docker=str(tmp_path / "no-docker"))
    with pytest.raises(ColorFailed, match="not installed"):
        no_cli.start("blue", image_release(), 40003, tmp_path / "blue.log")
    assert not no_cli.alive({"id": "x"})
    no_cli.stop({"id": "x"})  # nothing to stop without a CLI: no exception


def test_release_runner_dispatches_on_the_release_and_the_handle(docker: Path, tmp_path: Path) -> None:
    process = ProcessRunner(serve_command=[sys.executable, "-c", "import time; time.sleep(30)"])
    runner = ReleaseRunner(process, DockerRunner("staging", "s1", follow_logs=False))
    container = runner.start("blue", image_release(), 40004, tmp_path / "blue.log")
    proc = runner.start("green", Release(ref="runs:/r/model", uri="runs:/r/model"), 40005, tmp_path / "green.log")
    try:
        assert container["kind"] == "container" and proc["kind"] == "process"
        assert runner.alive(container) and runner.alive(proc)
        assert describe(container) == "container mlship-staging-blue-s1"
        assert describe(proc) == f"pid {proc['pid']}"
    finally:
        runner.stop(container)
        runner.stop(proc)
    assert not runner.alive(container) and not runner.alive(proc)
    no_docker = ReleaseRunner(process)
    with pytest.raises(ColorFailed, match="no container runner"):
        no_docker.start("blue", image_release(), 40006, tmp_path / "blue.log")
    assert not no_docker.alive(container)
    no_docker.stop(container)  # a container handle without a container runner: left alone


def test_local_target_down_names_containers(docker: Path, tmp_path: Path) -> None:
    runner = ReleaseRunner(ProcessRunner(), DockerRunner("staging", "s1", follow_logs=False))
    target = LocalTarget(tmp_path / "state", port=1, runner=runner)
    target.start("blue", image_release())
    assert target.running("blue")
    assert target.down() == ["blue (container mlship-staging-blue-s1)"]
    assert not target.running("blue")


def test_an_image_release_is_pinned_to_the_id_and_named_by_its_labels(docker: Path) -> None:
    release = release_from_image("serving:v7", env="staging", target="local")
    assert release.image == release.uri == "sha256:" + "7" * 64
    assert (release.ref, release.name, release.version, release.git_sha) == ("serving:v7", "card-fraud", "7", "abc123")
    edit(docker, images={"bare:1": {"id": "sha256:" + "1" * 64, "labels": None}})
    bare = release_from_image("bare:1", env="staging", target="local")
    assert (bare.name, bare.version, bare.git_sha) == (None, None, "unknown")
    assert inspect_image("bare:1").model_dir == "/opt/model"


def test_image_errors_follow_the_exit_code_contract(docker: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not in the local Docker engine"):
        inspect_image("nope:1")
    edit(docker, images={"weird:1": {"id": "x", "garbled": True}})
    with pytest.raises(InfraError, match="unreadable"):
        inspect_image("weird:1")
    edit(docker, daemon=False)
    with pytest.raises(InfraError, match="no Docker daemon answers"):
        inspect_image("serving:v7")
    assert "no Docker daemon answers" in (docker_available() or "")
    with pytest.raises(InfraError, match="not installed"):
        inspect_image("serving:v7", docker=str(tmp_path / "no-docker"))
    assert "not installed" in (docker_available(str(tmp_path / "no-docker")) or "")


def test_docker_available_when_a_daemon_answers(docker: Path) -> None:
    assert docker_available() is None


def test_an_image_without_a_model_is_rejected_before_anything_runs(docker: Path) -> None:
    with pytest.raises(PipelineRejected, match="carries no MLflow model"):
        golden_from_image()(image_release())
    assert not any(c[0] == "run" for c in calls(docker))
    assert json.loads(docker.read_text())["containers"] == {}  # the `docker create` one is removed
    with pytest.raises(ConfigError, match="has no image"):
        golden_from_image()(Release(ref="x", uri="x"))


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["deploy", "--image", "nope:1"], 2, "not in the local Docker engine"),
        (["deploy", "--image", "serving:v7", "--model", "models:/m/1"], 2, "name the model twice"),
    ],
)
def test_deploy_image_usage_errors(docker: Path, project: Path, args: list[str], code: int, message: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output


def test_deploy_image_without_a_daemon_is_exit_3(docker: Path, project: Path) -> None:
    edit(docker, daemon=False)
    result = CliRunner().invoke(app, ["deploy", "--image", "serving:v7"])
    assert result.exit_code == 3, result.output
    assert "no Docker daemon answers" in result.output


def test_deploy_of_an_image_without_a_model_is_exit_1_and_starts_nothing(docker: Path, project: Path) -> None:
    result = CliRunner().invoke(app, ["deploy", "--image", "serving:v7"])
    assert result.exit_code == 1, result.output
    assert "carries no MLflow model" in result.output
    assert not any(c[0] == "run" for c in calls(docker))
    local = project / ".mlship" / "deploy" / "staging" / "local.json"
    assert not local.is_file() or "router" not in local.read_text(), "no router left listening"
