"""The manifests' containers run against the real serving image the way the kubelet runs them.

No API server exists here, so each container spec that `kubectl kustomize` renders is replayed
on Docker with the kubelet's semantics: `command` replaces ENTRYPOINT and `args` replaces CMD
(neither: the image's own), `$(VAR)` expands from the container's env, `runAsUser/runAsGroup`
become the user, `readOnlyRootFilesystem` a read-only root with the emptyDir mounts as tmpfs,
dropped capabilities and no privilege escalation as such, the memory/CPU limits as limits, and
the containerPort published on 127.0.0.1. The pod must pass its readiness probe (path and port
as declared) and answer /predict with the model's own predictions.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import make_project
from tests.docker import support

pytestmark = [pytest.mark.docker, pytest.mark.slow]

KUBECTL = Path(sys.executable).parent / "kubectl"
OVERLAYS = support.REPO / "deployment" / "k8s" / "overlays"
TAG = "mlship-k8s-serving:pod-replay"
MODEL_URI = "models:/card-fraud/1"


@pytest.fixture(scope="module")
def image_and_model(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    from mlship.model.train import train
    from mlship.settings import load_settings

    tmp = tmp_path_factory.mktemp("pod-replay")
    project = make_project(tmp / "project", rows=800, seed=3)
    train(load_settings(cwd=project), out=tmp / "out")
    model = tmp / "out" / "model"
    context = support.make_context(tmp / "context", model)
    support.build_serving_image(context, TAG, version="1", git_sha="replay", created=support.now_rfc3339())
    yield TAG, model


def render(env: str) -> list[dict[str, Any]]:
    out = subprocess.run([str(KUBECTL), "kustomize", str(OVERLAYS / env)], capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def expand(value: str, env: dict[str, str]) -> str:
    """The kubelet's `$(VAR)`: a defined variable is replaced, `$$` escapes, an unknown one stays as is."""

    def one(match: re.Match[str]) -> str:
        return "$" if match.group(0) == "$$" else env.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", one, value)


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """Env in order, each value expanded against the ones before it (kubelet semantics)."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        assert "valueFrom" not in item, f"{item['name']}: a secret/configmap reference cannot be replayed here"
        env[item["name"]] = expand(str(item.get("value", "")), env)
    return env


def memory(limit: str) -> str:
    units = {"Ki": "k", "Mi": "m", "Gi": "g"}
    return next((limit[: -len(u)] + d for u, d in units.items() if limit.endswith(u)), limit)


def kubelet_argv(deployment: dict[str, Any], image: str, name: str) -> tuple[list[str], dict[str, int]]:
    """`docker run` for the deployment's first container; returns argv and containerPort → host port."""
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    env = {**container_env(container), "MLSHIP_MODEL_URI": MODEL_URI}  # the controller fills it in
    argv = ["run", "--detach", "--name", name]
    uid, gid = security.get("runAsUser"), security.get("runAsGroup")
    if security.get("runAsNonRoot"):
        assert uid not in (None, 0), "runAsNonRoot needs a numeric non-root runAsUser to be verifiable"
    if uid is not None:
        argv += ["--user", f"{uid}:{gid if gid is not None else uid}"]
    if security.get("readOnlyRootFilesystem"):
        argv.append("--read-only")
    empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    for mount in container.get("volumeMounts", []):
        assert mount["name"] in empty_dirs, f"volume {mount['name']} cannot be replayed"
        argv += ["--tmpfs", f"{mount['mountPath']}:rw,nosuid,nodev,mode=1777"]
    for cap in security.get("capabilities", {}).get("drop", []):
        argv += ["--cap-drop", cap]
    if security.get("allowPrivilegeEscalation") is False:
        argv += ["--security-opt", "no-new-privileges"]
    limits = container.get("resources", {}).get("limits", {})
    if "memory" in limits:
        argv += ["--memory", memory(str(limits["memory"]))]
    if "cpu" in limits:
        cpu = str(limits["cpu"])
        argv += ["--cpus", str(int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu))]
    ports: dict[str, int] = {}
    for port in container.get("ports", []):
        host = support.free_port()
        ports[str(port["containerPort"])] = host
        if "name" in port:
            ports[port["name"]] = host
        argv += ["--publish", f"127.0.0.1:{host}:{port['containerPort']}"]
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    command = [expand(c, env) for c in container.get("command", [])]
    args = [expand(a, env) for a in container.get("args", [])]
    if command:
        argv += ["--entrypoint", command[0]]
    argv.append(image)
    if command:
        argv += command[1:] + args  # docker: the rest of the command, then args
    elif args:
        argv += args  # args replace CMD, ENTRYPOINT stays
    return argv, ports


def probe_url(probe: dict[str, Any], ports: dict[str, int]) -> str:
    http = probe["httpGet"]
    return f"http://127.0.0.1:{ports[str(http['port'])]}{http['path']}"


def wait_probe(url: str, container: str, timeout: float = 180.0) -> None:
    """Poll a probe's URL like the kubelet until it answers 200; fail with the container's logs."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if support.docker("inspect", "--format", "{{.State.Running}}", container, check=False).stdout.strip() != "true":
            break
        time.sleep(0.2)
    logs = support.docker("logs", container, check=False)
    raise AssertionError(f"{container} never became ready at {url}:\n{(logs.stdout + logs.stderr)[-3000:]}")


@pytest.mark.parametrize("env", ["staging", "production"])
def test_each_rendered_container_runs_the_image_as_the_kubelet_would(
    image_and_model: tuple[str, Path], env: str
) -> None:
    from mlship.deploy.smoke import golden_from_dir

    image, model = image_and_model
    golden = golden_from_dir(model)
    assert golden.records and golden.probabilities
    deployments = [o for o in render(env) if o["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {f"mlship-model-blue-{env}", f"mlship-model-green-{env}"}
    for deployment in deployments:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        color = deployment["spec"]["template"]["metadata"]["labels"]["mlship.dev/color"]
        name = f"mlship-k8s-pod-{env}-{color}-{uuid.uuid4().hex[:6]}"
        argv, ports = kubelet_argv(deployment, image, name)
        started = support.docker(*argv, check=False)
        assert started.returncode == 0, started.stderr
        try:
            wait_probe(probe_url(container["readinessProbe"], ports), name)
            assert httpx.get(probe_url(container["livenessProbe"], ports), timeout=5).status_code == 200
            assert httpx.get(probe_url(container["startupProbe"], ports), timeout=5).status_code == 200
            base = f"http://127.0.0.1:{ports['http']}"
            answer = httpx.post(f"{base}/predict", json={"records": golden.records}, timeout=30).json()
            assert answer["probabilities"] == pytest.approx(golden.probabilities, abs=1e-9)
            version = httpx.get(f"{base}/version", timeout=5).json()
            assert version["color"] == color, "MLSHIP_COLOR reaches `mlship serve --color`"
            user = support.docker("exec", name, "id", "-u", check=False).stdout.strip()
            assert user == str(deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"])
            write = support.docker("exec", name, "touch", "/opt/model/x", check=False)
            assert write.returncode != 0, "the root filesystem is read-only"
        finally:
            support.docker("rm", "--force", name, check=False)


def test_the_kubelet_replay_follows_command_args_and_var_expansion(image_and_model: tuple[str, Path]) -> None:
    """The replay itself: args replace CMD, `$(VAR)` expands, a wrong port is not ready."""
    image, _ = image_and_model
    deployment = next(o for o in render("staging") if o["metadata"]["name"] == "mlship-model-blue-staging")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    config = support.inspect(image)["Config"]
    assert config["Entrypoint"] == ["mlship"] and config["Cmd"][0] == "serve"
    port = config["Cmd"][config["Cmd"].index("--port") + 1]
    assert port == str(container["ports"][0]["containerPort"]) and f"{port}/tcp" in config["ExposedPorts"]
    container["env"].append({"name": "GREETING", "value": "color-$(MLSHIP_COLOR)"})
    container["args"] = ["version-of", "$(GREETING)", "$$(MLSHIP_COLOR)"]
    argv, _ = kubelet_argv(deployment, image, "unused")
    assert argv[-3:] == ["version-of", "color-blue", "$(MLSHIP_COLOR)"]
    assert argv[argv.index("--user") + 1] == "10001:10001" and "--read-only" in argv
    container["args"] = ["serve", "--model", "/opt/model", "--host", "0.0.0.0", "--port", "9000"]
    name = f"mlship-k8s-pod-wrongport-{uuid.uuid4().hex[:6]}"
    argv, ports = kubelet_argv(deployment, image, name)
    support.docker(*argv)
    try:
        with pytest.raises(AssertionError, match="never became ready"):
            wait_probe(probe_url(container["readinessProbe"], ports), name, timeout=20)
    finally:
        support.docker("rm", "--force", name, check=False)
