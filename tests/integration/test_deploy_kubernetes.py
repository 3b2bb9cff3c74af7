"""The kubernetes target against a stateful kubectl double, and the manifests for real.

The double keeps objects in a JSON file, runs each scaled-up Deployment as a fake model
server and answers port-forward with its port; `kubectl kustomize` is the real one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlship.deploy.controller import Controller
from mlship.deploy.targets.k8s_metrics import parse_metrics
from mlship.deploy.targets.kubernetes import KubernetesTarget
from mlship.errors import ConfigError, InfraError, PipelineRejected
from tests.support.deploy_doubles.harness import (
    REPO,
    FakeRegistry,
    double_objects,
    fake_golden,
    fake_release,
    install_kubectl_double,
    kill_double_servers,
    make_settings,
    manifests_with_small_probes,
    run_node,
    served_version,
)

MANIFESTS = REPO / "deployment" / "k8s"
KUBECTL = Path(sys.executable).parent / "kubectl"
IMAGE = "registry.invalid/mlship-model@sha256:" + "0" * 64


def render(env: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(KUBECTL), "kustomize", str(MANIFESTS / "overlays" / env)], capture_output=True, text=True, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.parametrize("env", ["staging", "production"])
def test_manifests_render_and_validate_strictly(env: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [str(KUBECTL), "kustomize", str(MANIFESTS / "overlays" / env)], capture_output=True, text=True, check=True
    ).stdout
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(out)
    check = subprocess.run(
        [str(Path(sys.executable).parent / "kubernetes-validate"), "-k", "1.32.0", "--strict", str(rendered)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("passed") == 9


def test_manifests_have_what_a_blue_green_model_server_needs() -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in render("production")}
    for color in ("blue", "green"):
        dep = objects[("Deployment", f"mlship-model-{color}-production")]
        assert dep["spec"]["replicas"] == 2
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        c = pod["containers"][0]
        assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert c["livenessProbe"]["httpGet"]["path"] == "/health"
        assert c["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
        assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert dep["spec"]["template"]["metadata"]["labels"]["mlship.dev/color"] == color
        assert objects[("PodDisruptionBudget", f"mlship-model-{color}-production")]["spec"]["minAvailable"] == 1
        assert objects[("HorizontalPodAutoscaler", f"mlship-model-{color}-production")]["spec"]["minReplicas"] == 2
    assert "mlship.dev/color" in objects[("Service", "mlship-model-production")]["spec"]["selector"]
    assert "mlship.dev/color" in objects[("Service", "mlship-model-preview-production")]["spec"]["selector"]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels, or a Service's plain map) matches these labels."""
    wanted = selector.get("matchLabels", selector) if isinstance(selector.get("matchLabels"), dict) else selector
    return all(labels.get(k) == v for k, v in wanted.items())


def _selectors(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec", {})
    found = [spec["selector"]] if isinstance(spec.get("selector"), dict) else []
    if obj["kind"] == "NetworkPolicy":
        found.append(spec["podSelector"])
    return found


def test_staging_and_production_never_collide() -> None:
    """Rendered by the real kustomize: no shared (kind, namespace, name), no selector reaching the other's pods,
    and the overlays declare the namespaces the settings default to."""
    from mlship.settings import DEFAULT_NAMESPACES

    rendered = {env: render(env) for env in ("staging", "production")}
    ids = {
        env: {(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in objs}
        for env, objs in rendered.items()
    }
    assert not ids["staging"] & ids["production"]
    for env, objects in rendered.items():
        assert {o["metadata"]["namespace"] for o in objects} == {DEFAULT_NAMESPACES[env]}
        # in ONE namespace too: the names alone differ
        names = {env: {(o["kind"], o["metadata"]["name"]) for o in objs} for env, objs in rendered.items()}
        assert not names["staging"] & names["production"]
    for env, other_env in (("staging", "production"), ("production", "staging")):
        pods = [d["spec"]["template"]["metadata"]["labels"] for d in rendered[other_env] if d["kind"] == "Deployment"]
        mine = [d["spec"]["template"]["metadata"]["labels"] for d in rendered[env] if d["kind"] == "Deployment"]
        for obj in rendered[env]:
            assert obj["metadata"]["labels"]["mlship.dev/env"] == env, obj["metadata"]["name"]
            for selector in _selectors(obj):
                assert not any(_selects(selector, labels) for labels in pods), (obj["kind"], obj["metadata"]["name"])
                assert any(_selects(selector, labels) for labels in mine), (obj["kind"], obj["metadata"]["name"])


@pytest.mark.parametrize("env", ["staging", "production"])
def test_network_policy_closes_everything_but_the_http_port_dns_and_shadow_copies(env: str) -> None:
    objects = render(env)
    (policy,) = [o for o in objects if o["kind"] == "NetworkPolicy"]
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"], "both directions closed by default"
    for dep in deployments:  # it covers every model-server pod of the environment
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert _selects(spec["podSelector"], labels)
        (port,) = dep["spec"]["template"]["spec"]["containers"][0]["ports"]
        assert port["name"] == "http"
    (ingress,) = spec["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}], "the http port only"
    assert ingress["from"] == [
        {"podSelector": {}},  # the same namespace
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
    ]
    dns, shadow = spec["egress"]
    assert dns == {
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
        "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
    }
    assert shadow["ports"] == [{"port": "http", "protocol": "TCP"}] and list(shadow["to"][0]) == ["podSelector"]
    # the shadow's copies: live pods → the preview Service → its pods, whichever color it selects
    preview = services[f"mlship-model-preview-{env}"]
    assert preview["spec"]["ports"][0]["targetPort"] == "http"
    for dep in deployments:
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert _selects(shadow["to"][0]["podSelector"], labels)
        assert _selects({**preview["spec"]["selector"], "mlship.dev/color": labels["mlship.dev/color"]}, labels)
    other = "production" if env == "staging" else "staging"
    assert not any(
        _selects(shadow["to"][0]["podSelector"], d["spec"]["template"]["metadata"]["labels"])
        for d in render(other)
        if d["kind"] == "Deployment"
    ), "no egress to the other environment's pods"


@pytest.fixture
def k8s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Controller, Path]]:
    state = install_kubectl_double(tmp_path, monkeypatch)
    settings = make_settings(tmp_path, ready_timeout_s=5.0)
    # probes a test can wait out (a 6 s budget): a color that never gets ready is refused in seconds
    ctl = k8s_controller(settings, tmp_path / "runner", manifests=manifests_with_small_probes(tmp_path))
    yield ctl, state
    ctl.target.close()
    kill_double_servers(state)


@pytest.fixture(params=["pods-of-kubectl", "pods-on-a-node"])
def k8s_either(request: pytest.FixtureRequest, k8s: tuple[Controller, Path]) -> Iterator[tuple[Controller, Path]]:
    """The double with its pods started by `rollout status`, or run by its node (kubelet.py, as the
    release replay runs them): the target must not be able to tell."""
    if request.param == "pods-of-kubectl":
        yield k8s
        return
    with run_node(k8s[1]):
        yield k8s
        k8s[0].target.close()  # its port-forwards end before the node's pods do


def k8s_controller(settings: Any, local_dir: Path, env: str = "staging", manifests: Path = MANIFESTS) -> Controller:
    """A controller as one CI runner builds it: state and lock in the (double's) cluster."""
    target = KubernetesTarget(manifests, env=env, namespace="ml", timeout_s=5.0)
    store = target.release_store(local_dir, keep=settings.deploy.history)
    return Controller(settings, target, env, golden=fake_golden, registry=FakeRegistry(), store=store)  # type: ignore[arg-type]


def test_staging_and_production_in_one_namespace_leave_each_other_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = install_kubectl_double(tmp_path, monkeypatch)
    settings = make_settings(tmp_path, ready_timeout_s=5.0)
    staging = k8s_controller(settings, tmp_path / "staging-runner")
    production = k8s_controller(settings, tmp_path / "production-runner", "production")
    try:
        production.deploy(fake_release("1").with_(image=IMAGE))
        mine = {k: v["metadata"]["resourceVersion"] for k, v in double_objects(state).items()}
        assert all("production" in k.rsplit("/", 1)[1] for k in mine), sorted(mine)
        staging.deploy(fake_release("2").with_(image=IMAGE))
        staging.deploy(fake_release("3").with_(image=IMAGE), strategy="canary", weight=50)
        staging.rollback()
        staging.deploy(fake_release("4").with_(image=IMAGE), strategy="shadow")
        staging.stop_shadow()
        assert staging.status()["live"] == "blue"
        staging.down()
        after = double_objects(state)
        assert {k: after[k]["metadata"]["resourceVersion"] for k in mine} == mine, "production's objects untouched"
        assert {k for k in after if k not in mine} == {k for k in after if "staging" in k.rsplit("/", 1)[1]}
        assert served(production, "blue") == "1", "production still serves its release"
        assert production.status()["live"] == "blue" and not production.status()["problem"]
    finally:
        staging.target.close()
        production.target.close()
        kill_double_servers(state)


def live_selector(state: Path) -> dict[str, str]:
    return dict(double_objects(state)["Service/ml/mlship-model-staging"]["spec"]["selector"])


def served(ctl: Controller, color: str) -> str | None:
    return served_version(ctl.target.traffic_url(color))  # type: ignore[attr-defined]


def test_kubernetes_deploy_switches_the_live_service_and_rolls_back_in_one_patch(
    k8s_either: tuple[Controller, Path],
) -> None:
    ctl, state = k8s_either
    first = ctl.deploy(fake_release("1").with_(image=IMAGE))
    assert first.live == "blue" and live_selector(state)["mlship.dev/color"] == "blue"
    assert first.live_url == "http://mlship-model-staging.ml.svc.cluster.local"
    ctl.deploy(fake_release("2").with_(image=IMAGE))
    objects = double_objects(state)
    assert live_selector(state)["mlship.dev/color"] == "green"
    green = objects["Deployment/ml/mlship-model-green-staging"]["spec"]["template"]["spec"]["containers"][0]
    assert green["image"] == IMAGE
    assert {"name": "MLSHIP_MODEL_URI", "value": "fake://card-fraud/2"} in green["env"]
    assert objects["Service/ml/mlship-model-preview-staging"]["spec"]["selector"]["mlship.dev/color"] == "green"
    assert ctl.target.running("blue") and served(ctl, "green") == "2"
    back = ctl.rollback()
    assert back.action == "rollback", "blue still runs v1: one switch back, not a new deploy"
    assert back.live == "blue" and live_selector(state)["mlship.dev/color"] == "blue"
    assert ctl.target.weights() == {"blue": 100}
    assert ctl.down() == ["mlship-model-blue-staging", "mlship-model-green-staging"]
    assert double_objects(state)["Deployment/ml/mlship-model-green-staging"]["spec"]["replicas"] == 0


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("exit", "CrashLoopBackOff, last log lines: fake server: injected start failure"),
        ("never_ready", "was not ready within 6 s: pod .* is running but not ready"),
        ("wrong", "golden"),
        ("errors_after:25", "error rate"),
        ("die_after:25", "stopped running"),
    ],
    ids=["fails-to-start", "never-ready", "fails-smoke", "errors-after-switch", "dies-during-verification"],
)
def test_kubernetes_bad_release_leaves_the_previous_color_live(
    k8s_either: tuple[Controller, Path], fault: str, reason: str
) -> None:
    ctl, state = k8s_either
    if fault.startswith("die_after") and "node" in json.loads(state.read_text()):
        # a node reports a pod's exit on its next look, as a kubelet does: a verification that reads
        # the counters in between finds them gone before it finds the color down
        reason = f"{reason}|counters vanished or reset"
    ctl.deploy(fake_release("1").with_(image=IMAGE))
    with pytest.raises(PipelineRejected, match=reason):
        ctl.deploy(fake_release("2", fault).with_(image=IMAGE))
    assert live_selector(state)["mlship.dev/color"] == "blue"
    assert served(ctl, "blue") == "1"
    assert double_objects(state)["Deployment/ml/mlship-model-green-staging"]["spec"]["replicas"] == 0
    assert ctl.status()["live"] == "blue"


def test_kubernetes_canary_is_a_replica_ratio_with_a_colorless_selector(k8s: tuple[Controller, Path]) -> None:
    ctl, state = k8s
    ctl.deploy(fake_release("1").with_(image=IMAGE))
    result = ctl.deploy(fake_release("2").with_(image=IMAGE), strategy="canary", weight=50)
    assert result.weights == {"blue": 50, "green": 50}
    assert "mlship.dev/color" not in live_selector(state)
    objects = double_objects(state)
    assert objects["Deployment/ml/mlship-model-green-staging"]["spec"]["replicas"] == 1
    assert ctl.target.weights() == {"blue": 50, "green": 50}
    ctl.promote_canary()
    assert live_selector(state)["mlship.dev/color"] == "green"


def test_kubernetes_target_needs_an_image_and_kubectl(
    k8s: tuple[Controller, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ctl, _ = k8s
    with pytest.raises(ConfigError, match="needs an image"):
        ctl.deploy(fake_release("1"))
    assert ctl.status()["live"] is None
    missing = KubernetesTarget(MANIFESTS, kubectl="kubectl-that-does-not-exist")
    with pytest.raises(InfraError, match="not installed"):
        missing.prepare()
    with pytest.raises(ConfigError, match="no kustomize overlay"):
        KubernetesTarget(MANIFESTS, env="qa").render()


def test_parse_metrics_reads_requests_errors_and_latency() -> None:
    text = (
        "\n".join(
            [
                "# TYPE mlship_requests_total counter",
                'mlship_requests_total{status="200"} 90',
                'mlship_requests_total{status="500"} 10',
                "# TYPE mlship_request_latency_seconds histogram",
                'mlship_request_latency_seconds_bucket{le="0.01"} 50',
                'mlship_request_latency_seconds_bucket{le="0.1"} 99',
                'mlship_request_latency_seconds_bucket{le="+Inf"} 100',
                "mlship_request_latency_seconds_count 100",
                "mlship_request_latency_seconds_sum 3.0",
            ]
        )
        + "\n"
    )
    sig = parse_metrics(text)
    assert sig is not None
    assert (sig.requests, sig.errors) == (100, 10)
    assert sig.quantile_ms(0.5) == 10.0 and sig.quantile_ms(0.99) == 100.0 and sig.quantile_ms(1.0) == float("inf")
    assert parse_metrics("# TYPE other_total counter\nother_total 3\n") is None
    assert parse_metrics("not prometheus {{{") is None
    assert json.dumps(sig.bounds_ms) == "[10.0, 100.0]"


def test_kubernetes_canary_records_the_effective_quantised_split(k8s: tuple[Controller, Path]) -> None:
    ctl, state = k8s
    ctl.deploy(fake_release("1").with_(image=IMAGE))
    result = ctl.deploy(fake_release("2").with_(image=IMAGE), strategy="canary", weight=10)
    assert result.weights == {"blue": 50, "green": 50}
    assert double_objects(state)["Deployment/ml/mlship-model-green-staging"]["spec"]["replicas"] == 1
    assert ctl.target.weights() == {"blue": 50, "green": 50}, "one live pod + one canary pod is 50 %, not 10 %"
    ctl.rollback()
    assert ctl.target.weights() == {"blue": 100} and live_selector(state)["mlship.dev/color"] == "blue"


def test_kubernetes_previous_color_is_scaled_down_by_the_next_command_after_the_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No detached retirement process on a CI runner (it dies with the job): the next deploy reaps."""
    state = install_kubectl_double(tmp_path, monkeypatch)
    settings = make_settings(tmp_path, ready_timeout_s=5.0, rollback_window_s=2.0)
    ctl = k8s_controller(settings, tmp_path / "runner")
    try:
        ctl.deploy(fake_release("1").with_(image=IMAGE))
        ctl.deploy(fake_release("2").with_(image=IMAGE))
        assert ctl.status()["retire"] == {"color": "blue", "at": pytest.approx(time.time(), abs=60), "scheduled": False}
        assert not (ctl.store.dir / "retire.json").exists(), "no retirement process was scheduled"
        time.sleep(max(0.0, ctl.status()["rollback_until"] - time.time()) + 0.1)
        assert double_objects(state)["Deployment/ml/mlship-model-blue-staging"]["spec"]["replicas"] == 1, (
            "nothing reaped yet"
        )
        ctl.deploy(fake_release("3").with_(image=IMAGE))  # reaps blue first, then deploys into it
        objects = double_objects(state)
        assert live_selector(state)["mlship.dev/color"] == "blue" and served(ctl, "blue") == "3"
        assert objects["Deployment/ml/mlship-model-green-staging"]["spec"]["replicas"] > 0, "3's previous color is warm"
        fresh = k8s_controller(settings, tmp_path / "other-runner")
        assert [r["version"] for r in fresh.status()["history"]] == ["3", "2", "1"]
    finally:
        ctl.down()
        ctl.target.close()
        kill_double_servers(state)


def test_verification_goes_through_the_live_service_not_a_pod(k8s: tuple[Controller, Path]) -> None:
    ctl, state = k8s
    ctl.deploy(fake_release("1").with_(image=IMAGE))
    forwards = [c for c in json.loads(state.read_text())["calls"] if c[0] == "port-forward"]
    assert forwards == [], "port-forward is not recorded as a state call"
    assert ctl.target.traffic_url("blue") == ctl.target._forward("service/mlship-model-staging")  # type: ignore[attr-defined]
    result = ctl.deploy(fake_release("2").with_(image=IMAGE), strategy="canary", weight=50)
    assert result.weights == {"blue": 50, "green": 50}
    # a canary shares the Service: its own pods are probed (a Service port-forward picks one pod)
    assert ctl.target.traffic_url("green") == ctl.target._forward("deployment/mlship-model-green-staging")  # type: ignore[attr-defined]


@pytest.mark.parametrize("env", ["staging", "production"])
def test_zero_downtime_settings_of_the_manifests(env: str) -> None:
    """Readiness gates the switch; preStop covers endpoint propagation; the grace period covers both."""
    from mlship.settings import ServeSettings

    drain_s = ServeSettings().graceful_timeout_s
    for obj in render(env):
        if obj["kind"] != "Deployment":
            continue
        pod = obj["spec"]["template"]["spec"]
        container = pod["containers"][0]
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert 5 <= pre_stop <= 15, "kube-proxy/ingress propagation: 1 s small clusters, up to ~10 s large"
        assert pod["terminationGracePeriodSeconds"] > pre_stop + drain_s
        assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
        assert obj["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
        port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
        assert port == 8000 and "command" not in container and "args" not in container
    services = [o for o in render(env) if o["kind"] == "Service"]
    assert all(s["spec"]["ports"][0] == {"name": "http", "port": 80, "targetPort": "http"} for s in services)
