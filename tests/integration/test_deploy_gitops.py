"""GitOps mode: the release is written into the overlay (kustomize images: + a small patch), and
`status` compares what Git declares with what the (double's) cluster runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from mlship.cli import app
from mlship.commands import register_all
from mlship.deploy.targets.gitops import COMPONENT, GitOpsTarget
from mlship.errors import ConfigError
from tests.support.deploy_doubles.harness import REPO, fake_release, install_kubectl_double, kill_double_servers

register_all(app)
KUBECTL = Path(sys.executable).parent / "kubectl"
DIGEST = "sha256:" + "ab" * 32
IMAGE_1 = f"registry.invalid/mlship-model@{DIGEST}"
IMAGE_2 = "registry.invalid/mlship-model@sha256:" + "cd" * 32


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    dest = tmp_path / "deployment" / "k8s"
    shutil.copytree(REPO / "deployment" / "k8s", dest)
    return dest


def render(manifests: Path, env: str) -> dict[tuple[str, str], dict[str, Any]]:
    out = subprocess.run(
        [str(KUBECTL), "kustomize", str(manifests / "overlays" / env)], capture_output=True, text=True, check=True
    ).stdout
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out) if d}


def container(objects: dict[tuple[str, str], dict[str, Any]], color: str, env: str) -> dict[str, Any]:
    return dict(objects[("Deployment", f"mlship-model-{color}-{env}")]["spec"]["template"]["spec"]["containers"][0])


@pytest.mark.parametrize("env", ["staging", "production"])
def test_gitops_deploy_writes_a_reviewable_release_that_kustomize_renders(manifests: Path, env: str) -> None:
    overlay = manifests / "overlays" / env / "kustomization.yaml"
    comments = [line for line in overlay.read_text().splitlines() if line.startswith("#")]
    gitops = GitOpsTarget(manifests, env=env, app="mlship-model", namespace="ml")
    color, files = gitops.declare(fake_release("1").with_(image=IMAGE_1))
    assert color == "blue" and files == [manifests / "overlays" / env / COMPONENT, overlay]
    objects = render(manifests, env)
    blue = container(objects, "blue", env)
    assert blue["image"] == IMAGE_1, "kustomize images: pinned blue by digest"
    assert {"name": "MLSHIP_MODEL_URI", "value": "fake://card-fraud/1"} in blue["env"]
    assert {"name": "MLSHIP_COLOR", "value": "blue"} in blue["env"], "the patch merges env by name"
    assert objects[("Deployment", f"mlship-model-green-{env}")]["spec"]["replicas"] == 0, "no release: nothing runs"
    live = objects[("Service", f"mlship-model-{env}")]
    assert live["spec"]["selector"]["mlship.dev/color"] == "blue"
    assert live["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "1"
    replicas = objects[("Deployment", f"mlship-model-blue-{env}")]["spec"]["replicas"]
    assert replicas == (2 if env == "production" else 1), "the overlay's replicas stand"

    color, files = gitops.declare(fake_release("2").with_(image=IMAGE_2))
    assert color == "green" and files == [manifests / "overlays" / env / COMPONENT], "the overlay lists it once"
    objects = render(manifests, env)
    assert container(objects, "green", env)["image"] == IMAGE_2 and container(objects, "blue", env)["image"] == IMAGE_1
    assert objects[("Service", f"mlship-model-{env}")]["spec"]["selector"]["mlship.dev/color"] == "green"
    assert objects[("Deployment", f"mlship-model-blue-{env}")]["spec"]["replicas"] == replicas, "previous stays warm"
    declared = gitops.declared()
    assert declared.live == "green" and declared.colors["blue"]["version"] == "1"
    assert [line for line in overlay.read_text().splitlines() if line.startswith("#")] == comments
    assert overlay.read_text().count(COMPONENT) == 1
    assert not list((manifests / "overlays" / env).rglob("*.tmp*")), "atomic writes leave no temp files"


def test_gitops_needs_an_image_pinned_by_digest(manifests: Path) -> None:
    gitops = GitOpsTarget(manifests, env="staging", app="mlship-model", namespace="ml")
    with pytest.raises(ConfigError, match="not pinned by digest"):
        gitops.declare(fake_release("1").with_(image="registry.invalid/mlship-model:v1"))
    assert not (manifests / "overlays" / "staging" / COMPONENT).exists()
    with pytest.raises(ConfigError, match="no kustomize overlay"):
        GitOpsTarget(manifests, env="qa", app="mlship-model", namespace="ml")


def test_gitops_status_says_whether_the_cluster_runs_what_git_declares(
    manifests: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = install_kubectl_double(tmp_path, monkeypatch, namespaces=("mlship-staging",))
    gitops = GitOpsTarget(manifests, env="staging", app="mlship-model", namespace="mlship-staging", timeout_s=30)
    try:
        assert gitops.status()["differences"] == ["Git declares no release for staging yet"]
        gitops.declare(fake_release("1").with_(image=IMAGE_1))
        info = gitops.status()
        assert not info["in_sync"] and info["differences"] == ["the live Service selects nothing, Git declares blue"]
        # what Argo CD / Flux would do: apply the rendered overlay, wait for the rollout
        rendered = tmp_path / "rendered.yaml"
        rendered.write_text(
            subprocess.run(
                [str(KUBECTL), "kustomize", str(manifests / "overlays" / "staging")],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        subprocess.run(
            ["kubectl", "-n", "mlship-staging", "apply", "-f", str(rendered)], check=True, capture_output=True
        )
        assert gitops.status()["differences"] == ["blue has no ready replica"]
        rollout = ["kubectl", "-n", "mlship-staging", "rollout", "status", "deployment/mlship-model-blue-staging"]
        rollout.append("--timeout=30s")
        subprocess.run(rollout, check=True, capture_output=True)
        info = gitops.status()
        assert info["in_sync"] and info["cluster"]["colors"]["blue"]["image"] == IMAGE_1
        gitops.declare(fake_release("2").with_(image=IMAGE_2))
        assert gitops.status()["differences"] == ["the live Service selects blue, Git declares green"]
    finally:
        kill_double_servers(state)


def test_gitops_cli_declares_and_reports(manifests: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_kubectl_double(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text('[tool.mlship.deploy]\nnamespace = "ml"\n')
    model = tmp_path / "model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")
    runner = CliRunner()
    usage = runner.invoke(app, ["deploy", "--target", "gitops", "--model", str(model)])
    assert usage.exit_code == 2 and "needs --model and --image" in usage.output
    tag = runner.invoke(app, ["deploy", "--target", "gitops", "--model", str(model), "--image", "r/m:v1"])
    assert tag.exit_code == 2 and "not pinned by digest" in tag.output
    done = runner.invoke(app, ["deploy", "--target", "gitops", "--model", str(model), "--image", IMAGE_1])
    assert done.exit_code == 0, done.output
    assert "on blue" in done.output and f"wrote {manifests / 'overlays' / 'staging' / COMPONENT}" in done.output
    status = runner.invoke(app, ["status", "--target", "gitops", "--json"])
    assert status.exit_code == 1 and json.loads(status.output)["declared"]["live"] == "blue"
    status = runner.invoke(app, ["status", "--target", "gitops"])
    assert status.exit_code == 1 and "out of sync: the live Service selects nothing" in status.output
    back = runner.invoke(app, ["rollback", "--target", "gitops"])
    assert back.exit_code == 2 and "reverting the release commit" in back.output
