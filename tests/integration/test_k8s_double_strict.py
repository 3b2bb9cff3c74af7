"""The kubectl double as strict as kubectl and the API server, and the target's messages for what a cluster does.

Each `test_double_*` writes its expectation from kubectl's documented behaviour (the page is
named in a comment); the `test_wait_*` / `test_missing_*` tests check the deploy's one-line
messages for pods that pull, schedule, crash or start slowly, and for a namespace that is missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlship.cli import app
from mlship.commands import register_all
from mlship.deploy.targets.base import ColorFailed
from mlship.deploy.targets.k8s_manifests import probe_budget_s, rollout_budget_s
from mlship.deploy.targets.kubernetes import KubernetesTarget
from mlship.errors import InfraError
from tests.support.deploy_doubles.harness import (
    REPO,
    add_secret,
    double_objects,
    fake_release,
    install_kubectl_double,
    kill_double_servers,
    manifests_with_small_probes,
    set_image_behaviour,
    set_image_fault,
    set_role,
)

register_all(app)
MANIFESTS = REPO / "deployment" / "k8s"
IMAGE = "registry.invalid/mlship-model@sha256:" + "e" * 64


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    state = install_kubectl_double(tmp_path, monkeypatch)
    yield state
    kill_double_servers(state)


def kubectl(*args: str, stdin: str | None = None, ns: str = "ml") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", "-n", ns, *args], input=stdin, capture_output=True, text=True, check=False)


def deployment(env: list[dict[str, str]], replicas: int = 1, **extra: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d", **extra},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "d"}},
                "template": {
                    "metadata": {"labels": {"app": "d"}},
                    "spec": {"containers": [{"name": "server", "image": "img", "env": env}]},
                },
            },
        }
    )


def test_double_apply_is_a_three_way_merge_that_keeps_what_other_commands_set(cluster: Path) -> None:
    # kubernetes.io/docs/tasks/manage-kubernetes-objects/declarative-config/
    #   #how-apply-calculates-differences-and-merges-changes:
    # fields set by `kubectl patch`/`scale` and absent from every applied configuration stay;
    # fields dropped from the configuration since the last apply are deleted; lists of
    # containers/env merge by name.
    assert kubectl("apply", "-f", "-", stdin=deployment([{"name": "A", "value": "1"}])).stdout == (
        "deployment/d created\n"
    )
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "server", "image": "img", "env": [
        {"name": "A", "value": "1"}, {"name": "SHADOW", "value": "x"}]}]}}}}  # fmt: skip
    assert kubectl("patch", "deployment", "d", "--type", "merge", "-p", json.dumps(patch)).returncode == 0
    assert kubectl("scale", "deployment/d", "--replicas=3").returncode == 0
    again = kubectl("apply", "-f", "-", stdin=deployment([{"name": "A", "value": "2"}], replicas=1))
    assert again.stdout == "deployment/d configured\n"
    obj = double_objects(cluster)["Deployment/ml/d"]
    env = obj["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "A", "value": "2"}, {"name": "SHADOW", "value": "x"}], "patched var kept, applied one set"
    assert obj["spec"]["replicas"] == 1, "a field in the configuration is set, whatever scale did"
    last = json.loads(obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"])
    assert last["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "A", "value": "2"}]
    dropped = kubectl("apply", "-f", "-", stdin=deployment([]))
    assert dropped.returncode == 0
    env = double_objects(cluster)["Deployment/ml/d"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "SHADOW", "value": "x"}], "A was applied before and is gone from the configuration"
    assert kubectl("apply", "-f", "-", stdin=deployment([])).stdout == "deployment/d unchanged\n"


def test_double_namespaces_must_exist(cluster: Path) -> None:
    # kubernetes.io/docs/reference/access-authn-authz/admission-controllers/#namespacelifecycle:
    # creating in a namespace that does not exist is refused; reading there finds nothing.
    cm = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}})
    done = kubectl("create", "-f", "-", stdin=cm, ns="nope")
    assert done.returncode == 1
    assert done.stderr == 'Error from server (NotFound): error when creating "STDIN": namespaces "nope" not found\n'
    assert kubectl("apply", "-f", "-", stdin=cm, ns="nope").stderr.endswith('namespaces "nope" not found\n')
    assert kubectl("get", "configmap", "c", "-o", "json", ns="nope").stderr == (
        'Error from server (NotFound): configmaps "c" not found\n'
    )
    assert kubectl("create", "namespace", "nope").stdout == "namespace/nope created\n"
    assert kubectl("create", "namespace", "nope").stderr == (
        'Error from server (AlreadyExists): namespaces "nope" already exists\n'
    )
    assert kubectl("create", "-f", "-", stdin=cm, ns="nope").returncode == 0
    # kubectl refuses an object whose metadata.namespace is not --namespace (kubectl apply/create)
    other = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "x"}})
    assert kubectl("apply", "-f", "-", stdin=other).stderr == (
        'error: the namespace from the provided object "x" does not match the namespace "ml". '
        "You must pass '--namespace=x' to perform this operation.\n"
    )


def test_double_enforces_a_role_with_the_api_servers_403(cluster: Path) -> None:
    # kubernetes.io/docs/reference/access-authn-authz/rbac/#referring-to-resources (subresources
    # as `deployments/scale`); the 403 text is the API server's Forbidden status as kubectl prints it.
    user = "system:serviceaccount:ml:mlship-deployer"
    rules = [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "create", "patch"]}]
    set_role(cluster, user, rules)
    assert kubectl("apply", "-f", "-", stdin=deployment([])).returncode == 0
    scale = kubectl("scale", "deployment/d", "--replicas=0")
    assert scale.returncode == 1 and scale.stderr == (
        'Error from server (Forbidden): deployments.apps "d" is forbidden: User "system:serviceaccount:ml:'
        'mlship-deployer" cannot patch resource "deployments/scale" in API group "apps" in the namespace "ml"\n'
    )
    listing = kubectl("get", "pods", "-l", "app=d", "-o", "json")
    assert listing.stderr == (
        f'Error from server (Forbidden): pods is forbidden: User "{user}" cannot list resource "pods" '
        'in API group "" in the namespace "ml"\n'
    )
    set_role(cluster, user, [*rules, {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"]}])
    assert kubectl("scale", "deployment/d", "--replicas=0").returncode == 0


def test_double_pods_say_what_blocks_them(cluster: Path) -> None:
    # kubernetes.io/docs/concepts/containers/images/#imagepullbackoff and
    # kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#container-state-waiting: a pod whose
    # image cannot be pulled waits in ImagePullBackOff with "Failed to pull image" events; one the
    # scheduler cannot place is Pending with PodScheduled=False/Unschedulable; a missing
    # imagePullSecret is the kubelet's FailedToRetrieveImagePullSecret event.
    set_image_behaviour(cluster, "img", pull='rpc error: code = NotFound desc = "img": not found')
    assert kubectl("apply", "-f", "-", stdin=deployment([])).returncode == 0
    start = time.monotonic()
    done = kubectl("rollout", "status", "deployment/d", "--timeout=1s")
    assert done.returncode == 1 and done.stderr == "error: timed out waiting for the condition on deployments/d\n"
    assert time.monotonic() - start >= 1.0
    pods = json.loads(kubectl("get", "pods", "-l", "app=d", "-o", "json").stdout)["items"]
    assert len(pods) == 1 and pods[0]["status"]["phase"] == "Pending"
    waiting = pods[0]["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting == {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "img"'}
    field = f"involvedObject.name={pods[0]['metadata']['name']}"
    events = json.loads(kubectl("get", "events", "--field-selector", field, "-o", "json").stdout)["items"]
    assert 'Failed to pull image "img": rpc error: code = NotFound desc = "img": not found' in [
        e["message"] for e in events
    ]
    set_image_behaviour(cluster, "img", pull="", unschedulable="0/3 nodes are available: 3 Insufficient memory.")
    pod = json.loads(kubectl("get", "pods", "-l", "app=d", "-o", "json").stdout)["items"][0]
    assert pod["status"]["conditions"] == [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient memory.",
        }
    ]
    set_image_behaviour(cluster, "img", unschedulable="")
    secret = json.loads(deployment([]))
    secret["spec"]["template"]["spec"]["imagePullSecrets"] = [{"name": "regcred"}]
    assert kubectl("apply", "-f", "-", stdin=json.dumps(secret)).returncode == 0
    pod = json.loads(kubectl("get", "pods", "-l", "app=d", "-o", "json").stdout)["items"][0]
    events = json.loads(kubectl("get", "events", "-o", "json").stdout)["items"]
    assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ImagePullBackOff"
    assert next(e["reason"] for e in events if e["type"] == "Warning") == "FailedToRetrieveImagePullSecret"
    add_secret(cluster, "ml", "regcred")
    pod = json.loads(kubectl("get", "pods", "-l", "app=d", "-o", "json").stdout)["items"][0]
    assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ContainerCreating"


def test_the_readiness_budget_follows_the_probes() -> None:
    container = {
        "startupProbe": {"periodSeconds": 5, "failureThreshold": 30},
        "readinessProbe": {"periodSeconds": 5, "initialDelaySeconds": 2},
    }
    # startup: 1 s timeout + 5 s × 30; readiness: 2 s delay + 1 s timeout + 5 s × 1 success
    assert probe_budget_s(container) == 151 + 8
    spec = {"replicas": 2, "strategy": {"rollingUpdate": {"maxSurge": 1}}}
    obj = {"spec": {**spec, "template": {"spec": {"containers": [container]}}}}
    assert rollout_budget_s(obj) == 2 * 159, "one surge pod at a time"


def test_wait_ready_names_what_the_pods_are_doing(cluster: Path, tmp_path: Path) -> None:
    """Budget 1 s (ready_timeout) < probes (1+1×3 + 1+1×1 = 6 s): slow pods make it; stuck ones are named."""
    manifests = manifests_with_small_probes(tmp_path)
    target = KubernetesTarget(manifests, namespace="ml", timeout_s=1.0)
    slow = "registry.invalid/slow@sha256:" + "1" * 64
    set_image_behaviour(cluster, slow, ready_after_s=3)
    try:
        target.start("blue", fake_release("1").with_(image=slow))
        assert target.ready_budget("blue", 1.0) == 6
        target.wait_ready("blue", 1.0)  # 3 s: within the probes' 6 s though over the 1 s floor

        cases = {
            "pull": (
                {"pull": 'rpc error: code = NotFound desc = failed to resolve reference "r/m": not found'},
                "is ImagePullBackOff: Failed to pull image",
                "check that the image exists and the nodes may pull it",
            ),
            "unschedulable": (
                {"unschedulable": "0/3 nodes are available: 3 Insufficient memory."},
                "is Pending, unschedulable: 0/3 nodes are available: 3 Insufficient memory.",
                "lower resources.requests",
            ),
            "slow": ({"ready_after_s": 60}, "is running but not ready", "startupProbe failureThreshold"),
        }
        for n, (behaviour, what, fix) in enumerate(cases.values(), start=2):
            image = f"registry.invalid/m{n}@sha256:" + str(n) * 64
            set_image_behaviour(cluster, image, **behaviour)
            target.start("green", fake_release(str(n)).with_(image=image))
            with pytest.raises(ColorFailed) as failed:
                target.wait_ready("green", 1.0)
            message = str(failed.value)
            assert message.startswith("mlship-model-green-staging was not ready within 6 s: pod mlship-model-green-")
            assert what in message and fix in message and "\n" not in message, message

        crash = "registry.invalid/crash@sha256:" + "9" * 64
        set_image_fault(cluster, crash, "exit")
        target.start("green", fake_release("9").with_(image=crash))
        with pytest.raises(ColorFailed) as failed:
            target.wait_ready("green", 1.0)
        assert "is CrashLoopBackOff, last log lines: fake server: injected start failure" in str(failed.value)
        assert "kubectl logs mlship-model-green-" in str(failed.value)
    finally:
        target.close()


def test_missing_pull_secret_is_one_line_naming_the_command(cluster: Path, tmp_path: Path) -> None:
    target = KubernetesTarget(
        manifests_with_small_probes(tmp_path), namespace="ml", timeout_s=1.0, pull_secret="regcred"
    )
    target.start("blue", fake_release("1").with_(image=IMAGE))
    pod = double_objects(cluster)["Deployment/ml/mlship-model-blue-staging"]["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    with pytest.raises(ColorFailed) as failed:
        target.wait_ready("blue", 1.0)
    assert f"cannot pull {IMAGE}: pull secret regcred does not exist in namespace ml" in str(failed.value)
    assert "kubectl create secret docker-registry regcred -n ml" in str(failed.value)
    add_secret(cluster, "ml", "regcred")
    target.start("blue", fake_release("1").with_(image=IMAGE))
    target.wait_ready("blue", 1.0)
    target.close()


def test_missing_namespace_is_one_line_naming_kubectl_create_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = install_kubectl_double(tmp_path, monkeypatch, namespaces=())
    monkeypatch.chdir(tmp_path)
    shutil.copytree(REPO / "deployment", tmp_path / "deployment")
    model = tmp_path / "model"
    model.mkdir()
    args = ["deploy", "--target", "kubernetes", "--model", str(model), "--image", IMAGE]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("mlship: error")]
    assert len(lines) == 1 and "namespace mlship-staging does not exist in the cluster" in lines[0]
    assert "`kubectl create namespace mlship-staging`" in result.output and "Traceback" not in result.output
    assert not double_objects(state), "nothing was created"


def test_forbidden_is_exit_3_naming_the_permission(cluster: Path, tmp_path: Path) -> None:
    set_role(cluster, "system:serviceaccount:ml:ci", [])
    target = KubernetesTarget(MANIFESTS, namespace="ml", timeout_s=1.0)
    with pytest.raises(InfraError) as denied:
        target.start("blue", fake_release("1").with_(image=IMAGE))
    assert denied.value.exit_code == 3
    assert str(denied.value).startswith(
        "system:serviceaccount:ml:ci may not get deployments (API group apps) in namespace ml"
    )
    assert "grant `get` on `deployments` in the deploy Role (deployment/k8s/rbac)" in str(denied.value.hint)
