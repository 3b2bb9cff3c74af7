"""The kubernetes target through the CLI, as CI runners use it: every job a fresh working copy.

The release state lives in the cluster (ConfigMap + Lease), so four separate working copies that
hold only staging's kubeconfig tell one story: deploy v1 → deploy v2 → rollback → deploy v3
(refused by its smoke test) → status. Production is another cluster (another double, another
kubeconfig): a fifth runner holding only that kubeconfig takes what passed staging — read from
the registry, where staging recorded it on the model version — and only then moves @champion.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlship.cli import app
from mlship.commands import register_all
from tests.conftest import make_project
from tests.support.deploy_doubles.harness import (
    REPO,
    double_objects,
    install_kubectl_double,
    kill_double_servers,
    kubectl_double_bin,
    set_image_fault,
    write_kubeconfig,
)

register_all(app)
MLSHIP = Path(sys.executable).parent / "mlship"
TOKEN = "s3cr3t-tracking-token-do-not-print"


def image(n: int) -> str:
    return f"registry.invalid/card-fraud@sha256:{str(n) * 64}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "models:/m/1"], "the kubernetes target needs --image"),
        (["--model", "models:/m/1", "--image", "registry.invalid/m:v1"], "is not pinned by digest"),
        (["--image", image(1)], "--model is required"),
        (["--from-env", "staging", "--model", "models:/m/1"], "--from-env takes the model and the image"),
        (["--env", "production", "--approve", "--from-env", "production"], "is the environment being deployed"),
    ],
)
def test_kubernetes_deploy_usage_errors_exit_2_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    state = install_kubectl_double(tmp_path, monkeypatch, namespaces=())
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["deploy", "--target", "kubernetes", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not state.exists(), "not one kubectl call was made"


def test_from_env_is_for_the_kubernetes_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["deploy", "--from-env", "staging"])
    assert result.exit_code == 2 and "--from-env needs --target kubernetes" in result.output


def test_production_with_nothing_staged_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_kubectl_double(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    shutil.copytree(REPO / "deployment", tmp_path / "deployment")
    result = CliRunner().invoke(app, ["deploy", "--target", "kubernetes", "--env", "production", "--approve"])
    assert result.exit_code == 1 and "nothing has passed staging" in result.output


def working_copy(root: Path, kubeconfig: Path, tracking_uri: str, bin_dir: Path) -> tuple[Path, dict[str, str]]:
    """A fresh checkout on a new CI runner: the repo's manifests, the project config, a kubeconfig."""
    root.mkdir(parents=True)
    shutil.copytree(REPO / "deployment", root / "deployment")
    (root / "pyproject.toml").write_text(
        '[tool.mlship]\nmodel_name = "card-fraud"\n\n[tool.mlship.deploy]\n'
        "verify_window_s = 1.0\nready_timeout_s = 90.0\nrollback_window_s = 3600.0\n"
        "smoke_latency_ms = 5000.0\nmax_p99_ms = 5000.0\n"
    )
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(root),
        "KUBECONFIG": str(kubeconfig),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_TRACKING_TOKEN": TOKEN,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GITHUB_RUN_ID": f"7{root.name[-1]}",
        "GITHUB_SERVER_URL": "https://ci.invalid",
        "GITHUB_REPOSITORY": "acme/fraud",
    }
    env.update({k: v for k, v in os.environ.items() if k.startswith(("COV_CORE", "COVERAGE"))})
    return root, env


def cli(copy: tuple[Path, dict[str, str]], *args: str) -> tuple[int, str]:
    root, env = copy
    done = subprocess.run(
        [str(MLSHIP), *args], cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    output = done.stdout + done.stderr
    assert TOKEN not in output, "the tracking token is never printed"
    return done.returncode, output


def kubectl_in(bin_dir: Path, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl (the double) as a platform engineer runs it against one cluster."""
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "KUBECONFIG": str(kubeconfig)}
    env.pop("KUBECTL_DOUBLE_STATE", None)
    return subprocess.run(["kubectl", *args], env=env, capture_output=True, text=True, check=False)


@pytest.mark.slow
def test_four_fresh_working_copies_share_one_truth_and_production_is_another_cluster(tmp_path: Path) -> None:
    from mlship.model.train import train
    from mlship.registry import Registry
    from mlship.settings import load_settings

    dev = make_project(tmp_path / "dev")
    settings = load_settings(cwd=dev)
    registry = Registry.from_settings(settings)
    run = train(settings)
    for _ in range(3):  # v1, v2, v3 of one trained model
        registry.register(run.run_id, "card-fraud", alias="challenger")
    tracking = settings.resolved_tracking_uri
    bin_dir = kubectl_double_bin(tmp_path)
    clusters = {}
    for env in ("staging", "production"):
        state_file = tmp_path / f"cluster-{env}" / "state.json"
        state_file.parent.mkdir()
        clusters[env] = (state_file, write_kubeconfig(state_file.parent / "kubeconfig", state_file))
    staging, kubeconfig = clusters["staging"]
    production, prod_kubeconfig = clusters["production"]
    created = kubectl_in(bin_dir, kubeconfig, "create", "namespace", "mlship-staging")
    assert created.returncode == 0 and created.stdout == "namespace/mlship-staging created\n"
    assert kubectl_in(bin_dir, prod_kubeconfig, "create", "namespace", "mlship-production").returncode == 0
    set_image_fault(staging, image(3), "wrong")  # v3's image was built broken: wrong predictions
    copies = [working_copy(tmp_path / f"runner-{i}", kubeconfig, tracking, bin_dir) for i in range(1, 5)]
    copies.append(working_copy(tmp_path / "runner-5", prod_kubeconfig, tracking, bin_dir))
    k8s = ("--target", "kubernetes")
    try:
        code, out = cli(copies[0], "deploy", *k8s, "--model", "models:/card-fraud/1", "--image", image(1))
        assert code == 0 and "card-fraud v1 is live on blue" in out, out
        passed = registry.passed_record("card-fraud", "1", "staging")
        assert passed is not None and passed.image == image(1) and passed.namespace == "mlship-staging"
        assert passed.ci_job == "https://ci.invalid/acme/fraud/actions/runs/71" and passed.environment == "staging"
        assert passed.git_sha and passed.at.endswith("Z")
        code, out = cli(copies[1], "deploy", *k8s, "--model", "models:/card-fraud/2", "--image", image(2))
        assert code == 0 and "card-fraud v2 is live on green" in out, out
        code, out = cli(copies[2], "rollback", *k8s)
        assert code == 0 and "card-fraud v1 is live on blue" in out and "switch took" in out, out
        code, out = cli(copies[3], "deploy", *k8s, "--model", "models:/card-fraud/3", "--image", image(3))
        assert code == 1 and "deploy of card-fraud v3 rolled back: smoke test failed" in out, out
        assert "card-fraud v1 on blue is still live" in out
        assert registry.passed_record("card-fraud", "3", "staging") is None, "refused: never recorded"

        code, out = cli(copies[3], "status", *k8s, "--json")
        assert code == 0, out
        info = json.loads(out)
        assert info["live"] == "blue" and info["colors"]["blue"]["release"]["version"] == "1"
        assert info["rollback_to"] == {"label": "card-fraud v2", "version": "2", "color": None, "warm": False}
        history = [(r["version"], r["outcome"], r["image"]) for r in info["history"]]
        assert history == [
            ("3", "rejected", image(3)),
            ("1", "live", image(1)),  # the rollback
            ("2", "live", image(2)),
            ("1", "live", image(1)),
        ]
        assert all(r["run_id"] == run.run_id and r["deployed_at"] > 0 for r in info["history"])
        code, out = cli(copies[0], "status", *k8s)  # the first runner's copy sees the same
        assert "live blue" in out and "rollback target: card-fraud v2 (a full blue-green deploy)" in out, out
        for root, _ in copies[:4]:
            assert not (root / ".mlship" / "deploy" / "staging" / "state.json").exists(), "no local state"
        objects = double_objects(staging)
        assert objects["Service/mlship-staging/mlship-model-staging"]["spec"]["selector"]["mlship.dev/color"] == "blue"
        assert "holderIdentity" not in objects["Lease/mlship-staging/mlship-model-deploy-staging"]["spec"]

        # production: another cluster; what passed staging is read from the registry
        prod = ("--target", "kubernetes", "--env", "production", "--approve")
        code, out = cli(copies[4], "deploy", *prod, "--model", "models:/card-fraud/3", "--image", image(3))
        assert code == 1 and "card-fraud v3 in " + image(3) + " has not passed staging" in out, out
        code, out = cli(copies[4], "deploy", *prod, "--model", "models:/card-fraud/1", "--image", image(2))
        assert code == 1 and f"has not passed staging (it passed in {image(1)})" in out, out
        assert not double_objects(production), "refused before anything ran"
        assert registry.alias_version("card-fraud", "champion") is None
        code, out = cli(copies[4], "deploy", *prod)
        assert code == 0 and "card-fraud v1 is live on blue (kubernetes/production)" in out, out
        assert registry.alias_version("card-fraud", "champion") == "1", "@champion moves after verification"
        prod_objects = double_objects(production)
        blue = prod_objects["Deployment/mlship-production/mlship-model-blue-production"]
        container = blue["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == image(1)
        assert {"name": "MLSHIP_MODEL_URI", "value": "models:/card-fraud/1"} in container["env"]
        assert all(k.split("/")[1] == "mlship-production" for k in prod_objects), "production's cluster only"
        assert all(k.split("/")[1] == "mlship-staging" for k in double_objects(staging)), "staging's cluster only"
        recorded = registry.passed_record("card-fraud", "1", "production")
        assert recorded is not None and recorded.ci_job.endswith("/runs/75") and recorded.image == image(1)
        for state_file in (staging, production):
            assert TOKEN not in state_file.read_text(), "the token reaches no cluster object"
        cli(copies[4], "down", *prod)
        cli(copies[0], "down", *k8s)
    finally:
        kill_double_servers(staging)
        kill_double_servers(production)
