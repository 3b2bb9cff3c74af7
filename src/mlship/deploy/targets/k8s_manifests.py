"""What the kubernetes target reads from and writes into the kustomize overlay's objects.

The names the overlay gives each object, the labels and annotations the controller relies on,
how long a Deployment may take to roll out under its probes, and the fields a release fills in.
"""

from __future__ import annotations

import json
from typing import Any

from mlship.deploy.release import Release

COLOR_LABEL = "mlship.dev/color"
WEIGHTS_ANNOTATION = "mlship.dev/weights"
RELEASE_ANNOTATION = "mlship.dev/release"
CONTAINER_PORT = 8000
"""The serving image's port (deployment/Dockerfile CMD, the manifests' containerPort `http`)."""
SERVICE_PORT = 80
"""The Services' port; kubectl port-forward maps it to the pods' targetPort `http`."""


ENV_LABEL = "mlship.dev/env"
SHARED_KINDS = ("PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy")
"""Objects of the overlay applied with every color (they name no release)."""


def probe_budget_s(container: dict[str, Any]) -> float:
    """The longest one pod may take to be ready under its probes (kubernetes.io/docs/concepts/workloads/pods/
    pod-lifecycle/#container-probes): the startupProbe may fail failureThreshold times, periodSeconds
    apart, after initialDelaySeconds; the readinessProbe then needs successThreshold passes."""
    total = 0.0
    for name in ("startupProbe", "readinessProbe"):
        probe = container.get(name)
        if not isinstance(probe, dict):
            continue
        period = float(probe.get("periodSeconds", 10))
        total += float(probe.get("initialDelaySeconds", 0)) + float(probe.get("timeoutSeconds", 1))
        if name == "startupProbe":
            total += period * float(probe.get("failureThreshold", 3))
        else:
            total += period * float(probe.get("successThreshold", 1))
    return total


def rollout_budget_s(deployment: dict[str, Any]) -> float:
    """A Deployment's pods come up maxSurge at a time (the rolling update the manifests declare)."""
    spec = deployment.get("spec", {})
    containers = spec.get("template", {}).get("spec", {}).get("containers", [])
    per_pod = max((probe_budget_s(c) for c in containers), default=0.0)
    replicas = max(1, int(spec.get("replicas", 1) or 1))
    surge = (spec.get("strategy", {}).get("rollingUpdate") or {}).get("maxSurge", 1)
    step = max(1, int(surge)) if isinstance(surge, int) else 1
    return per_pod * -(-replicas // step)


def deployment_name(app: str, color: str, env: str) -> str:
    """A color's Deployment as the overlay names it (`nameSuffix: -<env>`)."""
    return f"{app}-{color}-{env}"


def live_service_name(app: str, env: str) -> str:
    """The Service users call, as the overlay names it."""
    return f"{app}-{env}"


def with_release(deployment: dict[str, Any], release: Release, *, pull_secret: str | None = None) -> None:
    """Fill in what a release decides on a rendered Deployment: image, model URI, git sha, pull secret."""
    meta = deployment.setdefault("metadata", {})
    meta.setdefault("annotations", {})[RELEASE_ANNOTATION] = json.dumps(
        {"uri": release.uri, "version": release.version, "git_sha": release.git_sha}
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["image"] = release.image
    env = [e for e in container.get("env", []) if e.get("name") not in ("MLSHIP_MODEL_URI", "MLSHIP_GIT_SHA")]
    env += [
        {"name": "MLSHIP_MODEL_URI", "value": release.uri},
        {"name": "MLSHIP_GIT_SHA", "value": release.git_sha},
    ]
    container["env"] = env
    if pull_secret:  # a private registry: the kubelet pulls with this docker-registry Secret
        pod = deployment["spec"]["template"]["spec"]
        pod["imagePullSecrets"] = [{"name": pull_secret}]
