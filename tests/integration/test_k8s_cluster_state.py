"""Release state in the cluster (ConfigMap + Lease) and the kubectl double's API-server behaviour.

The double must behave like kubectl where the controller relies on it: 409 Conflict on a stale
resourceVersion, AlreadyExists on create, `rollout status --timeout` timing out, merge patches
of a Service selector, Leases. Each has a test here, against the same double the deploy tests use.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from mlship.deploy.lock import LockHeld
from mlship.deploy.release import DeployState
from mlship.deploy.targets.cluster_state import RETRIES, ClusterStore, LeaseLock
from mlship.deploy.targets.kubernetes import KubernetesTarget
from mlship.errors import InfraError
from tests.support.deploy_doubles.harness import (
    REPO,
    double_objects,
    fake_release,
    install_kubectl_double,
    kill_double_servers,
    set_image_fault,
)

MANIFESTS = REPO / "deployment" / "k8s"


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    state = install_kubectl_double(tmp_path, monkeypatch)
    yield state
    kill_double_servers(state)


def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", "-n", "ml", *args], input=stdin, capture_output=True, text=True, check=False)


def configmap(data: dict[str, str], rv: str | None = None) -> str:
    meta: dict[str, Any] = {"name": "cm", "namespace": "ml"}
    if rv:
        meta["resourceVersion"] = rv
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})


# The double behaves like kubectl ------------------------------------------------------------


def test_double_replace_with_a_stale_resource_version_is_a_409_conflict(cluster: Path) -> None:
    created = kubectl("create", "-f", "-", "-o", "json", stdin=configmap({"a": "1"}))
    assert created.returncode == 0, created.stderr
    rv = json.loads(created.stdout)["metadata"]["resourceVersion"]
    again = kubectl("create", "-f", "-", stdin=configmap({"a": "1"}))
    assert again.returncode == 1 and "(AlreadyExists)" in again.stderr
    first = kubectl("replace", "-f", "-", "-o", "json", stdin=configmap({"a": "2"}, rv))
    assert first.returncode == 0 and json.loads(first.stdout)["metadata"]["resourceVersion"] != rv
    stale = kubectl("replace", "-f", "-", stdin=configmap({"a": "3"}, rv))
    assert stale.returncode == 1
    assert 'Error from server (Conflict): error when replacing "STDIN"' in stale.stderr
    assert "the object has been modified" in stale.stderr
    stale_apply = kubectl("apply", "-f", "-", stdin=configmap({"a": "3"}, rv))
    assert stale_apply.returncode == 1 and "(Conflict)" in stale_apply.stderr
    got = json.loads(kubectl("get", "configmap", "cm", "-o", "json").stdout)
    assert got["data"] == {"a": "2"}, "a conflicting write changes nothing"
    missing = kubectl("get", "lease", "nope", "-o", "json")
    assert missing.returncode == 1 and "(NotFound)" in missing.stderr


def test_double_leases_create_get_replace(cluster: Path) -> None:
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "l", "namespace": "ml"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 60},
    }
    assert kubectl("create", "-f", "-", stdin=json.dumps(lease)).returncode == 0
    got = json.loads(kubectl("get", "lease", "l", "-o", "json").stdout)
    assert got["spec"]["holderIdentity"] == "a" and got["metadata"]["resourceVersion"]
    got["spec"]["holderIdentity"] = "b"
    assert kubectl("replace", "-f", "-", stdin=json.dumps(got)).returncode == 0
    got["spec"]["holderIdentity"] = "c"  # the same, now stale, resourceVersion
    assert "(Conflict)" in kubectl("replace", "-f", "-", stdin=json.dumps(got)).stderr
    assert json.loads(kubectl("get", "leases", "l", "-o", "json").stdout)["spec"]["holderIdentity"] == "b"
    assert kubectl("delete", "lease", "l").returncode == 0
    assert "(NotFound)" in kubectl("get", "lease", "l", "-o", "json").stderr


def test_double_rollout_status_times_out_like_kubectl(cluster: Path) -> None:
    target = KubernetesTarget(MANIFESTS, namespace="ml", timeout_s=2.0)
    target.start("blue", fake_release("1", "never_ready").with_(image="img@sha256:" + "a" * 64))
    start = time.monotonic()
    done = kubectl("rollout", "status", "deployment/mlship-model-blue-staging", "--timeout=2s")
    took = time.monotonic() - start
    assert done.returncode == 1 and "timed out waiting for the condition" in done.stderr
    assert 1.5 < took < 30, took
    target.start("green", fake_release("1").with_(image="img@sha256:" + "b" * 64))
    assert kubectl("rollout", "status", "deployment/mlship-model-green-staging", "--timeout=30s").returncode == 0


def test_double_service_selector_patches_decide_where_a_port_forward_lands(cluster: Path) -> None:
    target = KubernetesTarget(MANIFESTS, namespace="ml", timeout_s=20.0)
    try:
        for color, version in (("blue", "1"), ("green", "2")):
            target.start(color, fake_release(version).with_(image=f"img-{color}@sha256:" + "c" * 64))
            target.wait_ready(color, 20.0)
        target.set_weights({"green": 100})
        selector = double_objects(cluster)["Service/ml/mlship-model-staging"]["spec"]["selector"]
        assert selector["mlship.dev/color"] == "green" and selector["app.kubernetes.io/component"] == "model-server"
        from tests.support.deploy_doubles.harness import served_version

        assert served_version(target.traffic_url("green")) == "2"
        target.set_weights({"blue": 100})
        assert (
            double_objects(cluster)["Service/ml/mlship-model-staging"]["spec"]["selector"]["mlship.dev/color"] == "blue"
        )
        assert served_version(target.traffic_url("blue")) == "1"
        patch = json.dumps({"spec": {"selector": {"mlship.dev/color": None}}})
        assert kubectl("patch", "service", "mlship-model-staging", "--type", "merge", "-p", patch).returncode == 0
        assert "mlship.dev/color" not in double_objects(cluster)["Service/ml/mlship-model-staging"]["spec"]["selector"]
    finally:
        target.close()


def test_double_pod_of_a_broken_image_serves_its_fault(cluster: Path) -> None:
    image = "img@sha256:" + "d" * 64
    set_image_fault(cluster, image, "exit")
    target = KubernetesTarget(MANIFESTS, namespace="ml", timeout_s=10.0)
    target.start("blue", fake_release("3").with_(image=image))
    done = kubectl("rollout", "status", "deployment/mlship-model-blue-staging", "--timeout=10s")
    assert done.returncode == 1 and "CrashLoopBackOff" in done.stderr


# The cluster store ---------------------------------------------------------------------------


def store(tmp: Path, name: str, keep: int = 5) -> ClusterStore:
    """A store as a separate runner sees it: its own local dir, the same cluster."""
    target = KubernetesTarget(MANIFESTS, env="staging", namespace="ml", timeout_s=10.0)
    return target.release_store(tmp / name, keep=keep)


def test_cluster_store_is_one_truth_for_every_runner(cluster: Path, tmp_path: Path) -> None:
    a, b = store(tmp_path, "runner-a"), store(tmp_path, "runner-b")
    assert a.load().live is None and a.load().history == []
    state = DeployState(env="staging", live="blue", colors={"blue": fake_release("1").with_(color="blue")})
    a.save(state)
    a.record(fake_release("1").with_(outcome="live", image="img@sha256:" + "1" * 64))
    seen = b.load()
    assert seen.live == "blue" and seen.colors["blue"].version == "1"
    assert seen.history[0].image == "img@sha256:" + "1" * 64 and seen.history[0].deployed_at > 0
    for v in range(2, 9):
        b.record(fake_release(str(v)).with_(outcome="live"))
    assert [r.version for r in a.load().history] == ["4", "5", "6", "7", "8"], "the last `keep` releases"
    cm = double_objects(cluster)["ConfigMap/ml/mlship-model-release-staging"]
    assert cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mlship"
    assert json.loads(cm["data"]["state.json"])["live"] == "blue"


def test_cluster_store_retries_a_conflict_and_refuses_a_state_changed_under_it(cluster: Path, tmp_path: Path) -> None:
    a, b = store(tmp_path, "a"), store(tmp_path, "b")
    a.save(DeployState(env="staging", live="blue"))
    state_a = a.load()
    # b writes between a's read and a's write: a's replace (stale resourceVersion) gets a 409,
    # a re-reads and retries, and neither write is lost.
    b.record(fake_release("9").with_(outcome="rejected"))
    before = json.loads(cluster.read_text())["calls"]
    a.record(fake_release("1").with_(outcome="live"))
    calls = json.loads(cluster.read_text())["calls"][len(before) :]
    assert calls == [["replace", "-f"], ["get", "configmap"], ["replace", "-f"]], "409, re-read, retry"
    assert [r.version for r in a.load().history] == ["9", "1"], "both writes survive the conflict"
    # the state itself changed under a holder (its lease was lost): no blind overwrite
    b.load()
    b.save(DeployState(env="staging", live="green"))
    state_a.live = "blue"
    with pytest.raises(InfraError, match="changed during this deploy"):
        a.save(state_a)
    assert b.load().live == "green"


def test_cluster_store_gives_up_after_bounded_conflicts(tmp_path: Path) -> None:
    writes: list[str] = []

    def always_conflicting(*args: str, stdin: str | None = None, check: bool = True) -> Any:
        if args[0] == "get":
            return subprocess.CompletedProcess(args, 0, json.dumps({"metadata": {"resourceVersion": "1"}}), "")
        writes.append(args[0])
        return subprocess.CompletedProcess(args, 1, "", "Error from server (Conflict): the object has been modified")

    cm = ClusterStore(always_conflicting, app="m", env="staging", namespace="ml", local_dir=tmp_path)
    with pytest.raises(InfraError, match=f"{RETRIES} conflicting writes"):
        cm.record(fake_release("1"))
    assert writes == ["replace"] * RETRIES


# The Lease -----------------------------------------------------------------------------------


def test_lease_is_the_deploy_lock_and_an_expired_one_is_taken_over(cluster: Path, tmp_path: Path) -> None:
    a, b = store(tmp_path, "a"), store(tmp_path, "b")
    with a.lock():
        lease = double_objects(cluster)["Lease/ml/mlship-model-deploy-staging"]
        assert lease["spec"]["holderIdentity"] == a.lease.identity
        assert lease["spec"]["leaseDurationSeconds"] == 60 and lease["spec"]["renewTime"].endswith("Z")
        with pytest.raises(LockHeld, match="holds lease ml/mlship-model-deploy-staging until") as held:
            b.lease.acquire()
        assert "kubectl delete lease mlship-model-deploy-staging -n ml" in str(held.value.hint)
    assert "holderIdentity" not in double_objects(cluster)["Lease/ml/mlship-model-deploy-staging"]["spec"]
    with b.lock():  # released: the next runner takes it at once
        assert double_objects(cluster)["Lease/ml/mlship-model-deploy-staging"]["spec"]["holderIdentity"]


def test_a_killed_jobs_lease_expires_and_the_old_holder_cannot_write_after(cluster: Path, tmp_path: Path) -> None:
    killed, later = store(tmp_path, "killed"), store(tmp_path, "later")
    killed.lease.acquire()  # and never renews or releases: the CI job was killed
    killed.load()
    later.lease.clock = lambda: time.time() + 61  # the lease's 60 s have passed
    later.lease.acquire()
    spec = double_objects(cluster)["Lease/ml/mlship-model-deploy-staging"]["spec"]
    assert spec["holderIdentity"] == later.lease.identity and spec["leaseTransitions"] == 1
    assert killed.lease.renew() is False and "now held by" in str(killed.lease.lost)
    with pytest.raises(InfraError, match="deploy lock was lost"):
        killed.save(DeployState(env="staging", live="blue"))


def test_lease_holder_renews_while_it_works(cluster: Path, tmp_path: Path) -> None:
    target = KubernetesTarget(MANIFESTS, env="staging", namespace="ml", timeout_s=10.0)
    lease = LeaseLock(target._run, "renewed", namespace="ml", duration_s=3)
    with lease.hold():
        first = double_objects(cluster)["Lease/ml/renewed"]["spec"]["renewTime"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if double_objects(cluster)["Lease/ml/renewed"]["spec"].get("renewTime") != first:
                break
            time.sleep(0.2)
        assert double_objects(cluster)["Lease/ml/renewed"]["spec"]["renewTime"] != first
    assert lease.lost is None


# Edges, with a scripted kubectl ---------------------------------------------------------------


class Scripted:
    """A kubectl whose every call answers from a table: (returncode, stdout, stderr) per verb."""

    def __init__(self, answers: dict[str, tuple[int, str, str]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> Any:
        self.calls.append(args[0])
        code, out, err = self.answers[args[0]]
        return subprocess.CompletedProcess(args, code, out, err)


def test_times_identity_and_api_errors_are_told_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlship.deploy.targets.cluster_state import holder_identity, now_rfc3339, parse_time

    assert parse_time(now_rfc3339(lambda: 1_700_000_000.25)) == pytest.approx(1_700_000_000.25)
    assert parse_time(None) is None and parse_time("yesterday") is None
    monkeypatch.setenv("GITHUB_RUN_ID", "4242")
    assert "job 4242" in holder_identity() and f"pid {os.getpid()}" in holder_identity()
    forbidden = Scripted({"get": (1, "", 'Error from server (Forbidden): configmaps "x" is forbidden')})
    broken = ClusterStore(forbidden, app="m", env="staging", namespace="ml", local_dir=tmp_path)
    with pytest.raises(InfraError, match="Forbidden"):
        broken.load()
    rejected = Scripted({"get": (1, "", "(NotFound)"), "create": (1, "", "Error from server (Invalid): bad")})
    with pytest.raises(InfraError, match="kubectl create configmap m-release-staging failed"):
        ClusterStore(rejected, app="m", env="staging", namespace="ml", local_dir=tmp_path).record(fake_release("1"))


def test_a_corrupt_configmap_is_a_config_error_naming_the_fix(tmp_path: Path) -> None:
    from mlship.errors import ConfigError

    cm = json.dumps({"metadata": {"resourceVersion": "3"}, "data": {"state.json": "{not json"}})
    store = ClusterStore(Scripted({"get": (0, cm, "")}), app="m", env="staging", namespace="ml", local_dir=tmp_path)
    with pytest.raises(ConfigError, match="kubectl edit configmap m-release-staging -n ml"):
        store.load()


def test_a_lease_contended_on_every_write_gives_up_clearly(tmp_path: Path) -> None:
    conflict = (1, "", "Error from server (Conflict): the object has been modified")
    racing = Scripted({"get": (1, "", "(NotFound)"), "create": (1, "", "Error from server (AlreadyExists): x")})
    with pytest.raises(InfraError, match=f"could not take lease ml/l: {RETRIES} conflicting writes"):
        LeaseLock(racing, "l", namespace="ml").acquire()
    mine = LeaseLock(Scripted({}), "l", namespace="ml", identity="me")
    held = json.dumps({"metadata": {"resourceVersion": "1"}, "spec": {"holderIdentity": "me"}})
    mine.lease.kubectl = Scripted({"get": (0, held, ""), "replace": conflict})
    assert mine.renew() is True and mine.lost is None, "contended but still ours: retried at the next tick"
    mine.release()  # gives up quietly after bounded conflicts; the lease then expires by itself
    assert mine.lease.kubectl.calls.count("replace") == 2 * RETRIES  # type: ignore[attr-defined]
