"""The `kubernetes` target: Deployments `<app>-blue`/`<app>-green`, a live and a preview Service.

Everything goes through kubectl (`KUBECONFIG`, `--namespace`) and the kustomize manifests in
`deployment/k8s/overlays/<env>`: the objects are rendered there, and Python only fills in
the fields a release decides (image, model URI, which color each Service selects). The
switch is one patch of the live Service's selector; a canary drops the color from the
selector and sets the replica ratio. Smoke tests and metrics go through `kubectl
port-forward`, so the controller needs no network path into the cluster: the smoke test to
the preview Service, the verification after the switch to the live Service itself.

The release state (live color, release records, history) and the deploy lock live in the
cluster too (`release_store`: a ConfigMap and a Lease), so any CI runner sees the same truth.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from mlship.deploy.release import COLORS, Release
from mlship.deploy.targets.base import ColorFailed, Signal, Target
from mlship.deploy.targets.cluster_state import ClusterStore, forbidden, kubectl_error
from mlship.deploy.targets.k8s_manifests import (
    COLOR_LABEL,
    CONTAINER_PORT,
    SERVICE_PORT,
    SHARED_KINDS,
    WEIGHTS_ANNOTATION,
    deployment_name,
    live_service_name,
    rollout_budget_s,
    with_release,
)
from mlship.deploy.targets.k8s_metrics import parse_metrics
from mlship.errors import ConfigError, InfraError
from mlship.redaction import KUBECTL_SECRETS, env_for_child
from mlship.serving.mirror import SAMPLE_VAR, URL_VAR

_FORWARDING = re.compile(rb"Forwarding from 127\.0\.0\.1:(\d+)")
_PULL_SECRETS = re.compile(r"image pull secrets \(([^)]*)\)")


class KubernetesTarget(Target):
    """Blue-green on a cluster, driven by kubectl."""

    name = "kubernetes"
    namespace: str
    supports_shadow = True

    def __init__(
        self,
        manifests: Path,
        *,
        env: str = "staging",
        app: str = "mlship-model",
        namespace: str = "default",
        kubectl: str = "kubectl",
        timeout_s: float = 60.0,
        pull_allowance_s: float = 0.0,
        pull_secret: str | None = None,
    ) -> None:
        self.overlay = manifests / "overlays" / env
        self.env = env
        self.app = app
        self.namespace = namespace
        self.kubectl = kubectl
        self.timeout_s = timeout_s
        """The least a color is waited for; the manifests' probes (plus the pull allowance) may ask for more."""
        self.pull_allowance_s = pull_allowance_s
        self.pull_secret = pull_secret
        self._forwards: dict[str, tuple[subprocess.Popen[bytes], str]] = {}

    def release_store(self, local_dir: Path, *, keep: int = 10) -> ClusterStore:
        """This environment's release state and deploy lock, in the cluster (ConfigMap + Lease)."""
        return ClusterStore(
            self._run, app=self.app, env=self.env, namespace=self.namespace, local_dir=local_dir, keep=keep
        )

    # kubectl -------------------------------------------------------------------------------

    def _run(
        self, *args: str, stdin: str | None = None, check: bool = True, wait_s: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        exe = shutil.which(self.kubectl)
        if exe is None:
            raise InfraError(f"{self.kubectl} is not installed", hint="install kubectl and set KUBECONFIG")
        try:
            done = subprocess.run(
                [exe, "--namespace", self.namespace, *args],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=(wait_s if wait_s is not None else self.timeout_s) + 30,
                check=False,
                env=env_for_child(KUBECTL_SECRETS),
            )
        except subprocess.TimeoutExpired:
            raise InfraError(f"kubectl {args[0]} timed out", hint="check the cluster and KUBECONFIG") from None
        if check and done.returncode != 0:
            raise kubectl_error(f"kubectl {' '.join(args[:2])}", done.stderr)
        return done

    def _get(self, kind: str, name: str) -> dict[str, Any] | None:
        done = self._run("get", kind, name, "-o", "json", check=False)
        if done.returncode != 0:
            if "NotFound" in done.stderr or "not found" in done.stderr:
                return None
            raise kubectl_error(f"kubectl get {kind} {name}", done.stderr)
        return dict(json.loads(done.stdout))

    def _apply(self, objects: list[dict[str, Any]]) -> None:
        payload = {"apiVersion": "v1", "kind": "List", "items": objects}
        self._run("apply", "-f", "-", stdin=json.dumps(payload))

    def render(self) -> list[dict[str, Any]]:
        """The overlay's objects, as kustomize renders them."""
        if not (self.overlay / "kustomization.yaml").is_file():
            raise ConfigError(f"no kustomize overlay at {self.overlay}", hint="see deployment/k8s/overlays")
        done = self._run("kustomize", str(self.overlay))
        objects = [dict(doc) for doc in yaml.safe_load_all(done.stdout) if doc]
        for obj in objects:  # the overlay declares the environment's default; the settings decide
            obj.setdefault("metadata", {})["namespace"] = self.namespace
        return objects

    def _object(self, objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
        for obj in objects:
            if obj.get("kind") == kind and obj.get("metadata", {}).get("name") == name:
                return obj
        raise ConfigError(f"{self.overlay} renders no {kind} {name}", hint="deploy.app must match the manifests")

    def _deployment(self, color: str) -> str:
        return deployment_name(self.app, color, self.env)

    @property
    def live_service(self) -> str:
        return live_service_name(self.app, self.env)

    @property
    def preview_service(self) -> str:
        return f"{self.app}-preview-{self.env}"

    # Target --------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Fail early (exit 3) when kubectl is missing; the manifests render on start()."""
        if shutil.which(self.kubectl) is None:
            raise InfraError(f"{self.kubectl} is not installed", hint="install kubectl and set KUBECONFIG")

    def start(self, color: str, release: Release) -> None:
        if not release.image:
            raise ConfigError("the kubernetes target needs an image", hint="pass --image REGISTRY/NAME@sha256:…")
        objects = self.render()
        deployment = self._object(objects, "Deployment", self._deployment(color))
        with_release(deployment, release, pull_secret=self.pull_secret)
        preview = self._object(objects, "Service", self.preview_service)
        preview["spec"]["selector"][COLOR_LABEL] = color
        shared = [o for o in objects if o.get("kind") in SHARED_KINDS]
        self._drop_forwards()
        self._apply([deployment, preview, *shared])

    def ready_budget(self, color: str, timeout_s: float) -> float:
        """How long the color may take: at least `timeout_s`; as long as its probes allow, plus the pull allowance."""
        obj = self._get("deployment", self._deployment(color))
        if obj is None:
            return timeout_s
        return max(timeout_s, self.pull_allowance_s + rollout_budget_s(obj))

    def wait_ready(self, color: str, timeout_s: float) -> None:
        name = self._deployment(color)
        budget = self.ready_budget(color, timeout_s)
        done = self._run(
            "rollout", "status", f"deployment/{name}", f"--timeout={int(budget)}s", check=False, wait_s=budget
        )
        if done.returncode != 0:
            if forbidden(done.stderr):
                raise kubectl_error(f"kubectl rollout status deployment/{name}", done.stderr)
            why = self.diagnose(color) or _first_line(done.stderr or done.stdout)
            raise ColorFailed(f"{name} was not ready within {budget:.0f} s: {why}")

    def diagnose(self, color: str) -> str | None:
        """What the color's pods are doing, from their status, events and logs, and the fix; None if nothing is seen."""
        obj = self._get("deployment", self._deployment(color))
        if obj is None:
            return None
        labels = obj["spec"].get("selector", {}).get("matchLabels", {})
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        pods = json.loads(self._run("get", "pods", "-l", selector, "-o", "json").stdout).get("items", [])
        findings = [f for f in (self._pod_problem(pod) for pod in pods) if f]
        if not findings:
            return f"no pod of it is ready ({len(pods)} pods)" if pods else None
        return findings[0]

    def _events(self, pod: str) -> list[dict[str, Any]]:
        done = self._run("get", "events", "--field-selector", f"involvedObject.name={pod}", "-o", "json")
        items = json.loads(done.stdout).get("items", [])
        return sorted(items, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))

    def _pod_problem(self, pod: dict[str, Any]) -> str | None:
        """One pod's blocking condition as `pod P: what (fix)`; None if it is ready."""
        name = pod["metadata"]["name"]
        status = pod.get("status", {})
        ns = self.namespace
        for cond in status.get("conditions", []):
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                return (
                    f"pod {name} is Pending, unschedulable: {cond.get('message') or cond.get('reason')} "
                    "(add nodes or capacity, or lower resources.requests in the overlay)"
                )
        for cs in status.get("containerStatuses", []):
            if cs.get("ready"):
                continue
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason", "")
            if reason in ("ImagePullBackOff", "ErrImagePull", "InvalidImageName"):
                events = self._events(name)
                secret = next((e for e in events if e.get("reason") == "FailedToRetrieveImagePullSecret"), None)
                if secret is not None:
                    missing = _PULL_SECRETS.search(str(secret.get("message", "")))
                    which = missing.group(1) if missing else self.pull_secret or "the pull secret"
                    return (
                        f"pod {name} cannot pull {cs.get('image')}: pull secret {which} does not exist in namespace "
                        f"{ns} (create it: `kubectl create secret docker-registry {which} -n {ns} "
                        "--docker-server=REGISTRY --docker-username=USER --docker-password=TOKEN`)"
                    )
                failed = [e for e in events if str(e.get("message", "")).startswith("Failed to pull image")]
                detail = _first_line(str(failed[-1].get("message"))) if failed else waiting.get("message", "")
                return (
                    f"pod {name} is {reason}: {detail} (check that the image exists and the nodes may pull it; "
                    "a private registry needs [tool.mlship.deploy] pull_secret)"
                )
            if reason == "CrashLoopBackOff" or int(cs.get("restartCount", 0) or 0) > 0:
                logs = self._run("logs", name, "-c", cs.get("name", "server"), "--previous", "--tail=5", check=False)
                if logs.returncode != 0 and forbidden(logs.stderr):
                    raise kubectl_error(f"kubectl logs {name}", logs.stderr)
                last = " | ".join(ln.strip() for ln in logs.stdout.splitlines() if ln.strip())[-400:] or "no log"
                return (
                    f"pod {name} is {reason or 'restarting'}, last log lines: {last} "
                    f"(fix the server's start; full log: `kubectl logs {name} -n {ns} --previous`)"
                )
            if (cs.get("state") or {}).get("running") is not None:
                return (
                    f"pod {name} is running but not ready: its startup/readiness probes have not passed "
                    "(a slow model load needs a larger startupProbe failureThreshold or "
                    "[tool.mlship.deploy] pull_allowance_s; else see /ready and its log)"
                )
            if reason:
                return f"pod {name} is waiting: {reason} {waiting.get('message', '')}".rstrip()
        return None

    def running(self, color: str) -> bool:
        obj = self._get("deployment", self._deployment(color))
        if obj is None:
            return False
        wanted = int(obj.get("spec", {}).get("replicas", 0) or 0)
        available = int(obj.get("status", {}).get("availableReplicas", 0) or 0)
        return wanted > 0 and available > 0

    def preview_url(self, color: str) -> str:
        service = self._get("service", self.preview_service)
        if service is not None and service["spec"].get("selector", {}).get(COLOR_LABEL) == color:
            return self._forward(f"service/{self.preview_service}")
        return self._forward(f"deployment/{self._deployment(color)}")

    def live_url(self) -> str:
        return f"http://{self.live_service}.{self.namespace}.svc.cluster.local"

    def traffic_url(self, color: str) -> str:
        """Where verification probes go: the live Service once it selects `color` alone.

        So a Service whose selector or targetPort is wrong fails verification. A canary shares
        the Service with the live color, and a port-forward to a Service picks one pod (kubectl
        does not load-balance), so a canary is probed on its own pods.
        """
        service = self._get("service", self.live_service)
        if service is not None and service["spec"].get("selector", {}).get(COLOR_LABEL) == color:
            return self._forward(f"service/{self.live_service}")
        return self._forward(f"deployment/{self._deployment(color)}")

    def set_weights(self, weights: dict[str, int]) -> None:
        serving = {c: w for c, w in weights.items() if w > 0}
        service = self._get("service", self.live_service)
        if len(serving) == 1:
            (color,) = serving
            selector_patch: dict[str, Any] = {COLOR_LABEL: color}
        elif len(serving) == 2:
            serving = self._set_ratio(serving)
            selector_patch = {COLOR_LABEL: None}
        else:
            selector_patch = {COLOR_LABEL: "none"}
        annotation = json.dumps(serving, sort_keys=True)
        if service is None:
            live = self._object(self.render(), "Service", self.live_service)
            selector = {k: v for k, v in {**live["spec"]["selector"], **selector_patch}.items() if v is not None}
            live["spec"]["selector"] = selector
            live.setdefault("metadata", {}).setdefault("annotations", {})[WEIGHTS_ANNOTATION] = annotation
            self._apply([live])
        else:
            patch = {
                "metadata": {"annotations": {WEIGHTS_ANNOTATION: annotation}},
                "spec": {"selector": selector_patch},
            }
            self._run("patch", "service", self.live_service, "--type", "merge", "-p", json.dumps(patch))
        self._drop_forwards()

    def _set_ratio(self, weights: dict[str, int]) -> dict[str, int]:
        """Canary as a replica ratio: the smaller share gets max(1, round(R·w/(100-w))) pods.

        Pods are whole, so the split is quantised (1 live replica + 1 canary = 50 %); the
        effective split is what gets recorded and reported.
        """
        live, canary = sorted(weights, key=lambda c: -weights[c])
        obj = self._get("deployment", self._deployment(live))
        replicas = max(1, int((obj or {}).get("spec", {}).get("replicas", 1) or 1))
        share = weights[canary]
        wanted = max(1, round(replicas * share / max(1, 100 - share)))
        self._run("scale", f"deployment/{self._deployment(canary)}", f"--replicas={wanted}")
        canary_share = round(100 * wanted / (replicas + wanted))
        return {live: 100 - canary_share, canary: canary_share}

    def weights(self) -> dict[str, int] | None:
        service = self._get("service", self.live_service)
        if service is None:
            return None
        raw = service.get("metadata", {}).get("annotations", {}).get(WEIGHTS_ANNOTATION)
        if raw:
            with contextlib.suppress(ValueError):
                return {str(k): int(v) for k, v in json.loads(raw).items()}
        color = service["spec"].get("selector", {}).get(COLOR_LABEL)
        return {color: 100} if color in COLORS else None

    # Shadow ----------------------------------------------------------------------------------

    def _live_color(self) -> str | None:
        live = [c for c, w in (self.weights() or {}).items() if w >= 100]
        return live[0] if len(live) == 1 else None

    def set_shadow(self, color: str | None, sample: float = 1.0) -> None:
        """Make the live pods copy `sample` of their /predict requests to the preview Service (None: stop).

        The deploy points the preview Service at the shadow color (start); this sets
        MLSHIP_SHADOW_URL/MLSHIP_SHADOW_SAMPLE on the live Deployment, which rolls its pods
        (surge first, as the manifests' rolling update says) and waits for them to be ready.
        An unchanged environment is not patched, so nothing restarts for nothing.
        """
        live = self._live_color()
        if live is None:
            if color is None:
                return
            raise ColorFailed("no single live color to copy requests from")
        name = self._deployment(live)
        obj = self._get("deployment", name)
        if obj is None:
            raise ColorFailed(f"{name} does not exist")
        container = obj["spec"]["template"]["spec"]["containers"][0]
        before = list(container.get("env", []))
        env = [e for e in before if e.get("name") not in (URL_VAR, SAMPLE_VAR)]
        if color is not None:
            env += [
                {"name": URL_VAR, "value": self.shadow_url()},
                {"name": SAMPLE_VAR, "value": f"{sample:g}"},
            ]
        if env == before:
            return
        patch = {"spec": {"template": {"spec": {"containers": [{**container, "env": env}]}}}}
        self._run("patch", "deployment", name, "--type", "merge", "-p", json.dumps(patch))
        self._drop_forwards()
        self.wait_ready(live, self.timeout_s)

    def shadow_url(self) -> str:
        """The preview Service as the live pods reach it (cluster DNS, the Services' port)."""
        return f"http://{self.preview_service}.{self.namespace}.svc.cluster.local:{SERVICE_PORT}"

    def shadowing(self) -> str | None:
        """The color the live pods copy to (the preview Service's), None when they copy nothing."""
        live = self._live_color()
        obj = self._get("deployment", self._deployment(live)) if live else None
        if obj is None:
            return None
        env = obj["spec"]["template"]["spec"]["containers"][0].get("env", [])
        if not any(e.get("name") == URL_VAR and e.get("value") for e in env):
            return None
        service = self._get("service", self.preview_service)
        color = (service or {}).get("spec", {}).get("selector", {}).get(COLOR_LABEL)
        return str(color) if color in COLORS else None

    def shadow_stats(self) -> dict[str, Any] | None:
        """One live pod's comparison figures (GET /shadow through a port-forward); None if unreadable."""
        live = self._live_color()
        if live is None:
            return None
        try:
            url = self._forward(f"deployment/{self._deployment(live)}")
            response = httpx.get(f"{url}/shadow", timeout=5.0)
        except (ColorFailed, httpx.HTTPError):
            return None
        if response.status_code != 200:
            return None
        try:
            return dict(response.json())
        except ValueError:
            return None

    def signal(self, color: str) -> Signal | None:
        """The color's request counters from its /metrics (Prometheus text); None if unreadable."""
        try:
            url = self._forward(f"deployment/{self._deployment(color)}")
            response = httpx.get(f"{url}/metrics", timeout=5.0)
        except (ColorFailed, httpx.HTTPError):
            return None
        if response.status_code != 200:
            return None
        return parse_metrics(response.text)

    def stop(self, color: str) -> None:
        self._drop_forwards()
        if self._get("deployment", self._deployment(color)) is not None:
            self._run("scale", f"deployment/{self._deployment(color)}", "--replicas=0")

    def down(self) -> list[str]:
        stopped = []
        for color in COLORS:
            if self.running(color):
                stopped.append(self._deployment(color))
            self.stop(color)
        return stopped

    def close(self) -> None:
        self._drop_forwards()

    # port-forward --------------------------------------------------------------------------

    def _forward(self, resource: str) -> str:
        cached = self._forwards.get(resource)
        if cached is not None and cached[0].poll() is None:
            return cached[1]
        exe = shutil.which(self.kubectl) or self.kubectl
        port = SERVICE_PORT if resource.startswith("service/") else CONTAINER_PORT
        proc = subprocess.Popen(
            [exe, "--namespace", self.namespace, "port-forward", resource, f":{port}", "--address", "127.0.0.1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env_for_child(KUBECTL_SECRETS),
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + 15.0
        os.set_blocking(proc.stdout.fileno(), False)
        buffer = b""
        while time.monotonic() < deadline:
            chunk = proc.stdout.read() or b""
            buffer += chunk
            match = _FORWARDING.search(buffer)
            if match:
                url = f"http://127.0.0.1:{int(match.group(1))}"
                self._forwards[resource] = (proc, url)
                return url
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                if forbidden(err):
                    raise kubectl_error(f"kubectl port-forward {resource}", err)
                raise ColorFailed(f"port-forward to {resource} failed: {_first_line(err)}")
            time.sleep(0.05)
        proc.kill()
        raise ColorFailed(f"port-forward to {resource} did not start")

    def _drop_forwards(self) -> None:
        for proc, _ in self._forwards.values():
            if proc.poll() is None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        self._forwards.clear()


def _first_line(text: str) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[0] if lines else "no output"
