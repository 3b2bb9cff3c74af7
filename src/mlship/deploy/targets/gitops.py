"""The `gitops` target: a release declared in the overlay for Argo CD or Flux to apply.

`mlship deploy --target gitops` does not touch the cluster. It writes the desired release into
`overlays/<env>/mlship-release/`, a kustomize Component that mlship owns (and that the overlay
lists under `components:`, added once):

- `kustomization.yaml`: `images:` pins each color's image by digest (the base names the images
  `<app>-blue` / `<app>-green`, so pinning one color leaves the other as it was);
- `release.yaml`: a small strategic-merge patch: each color's MLSHIP_MODEL_URI and release
  annotation, and the live Service's selector on the new color.

The new release goes on the color Git does not declare live, and the live Service moves to it; the
previous color keeps its release, so rolling back is reverting the commit. The Service carries
`argocd.argoproj.io/sync-wave: "1"`: Argo CD applies it only once the Deployments (wave 0) are
healthy, so the selector never points at pods that are not ready. `status` reads what the cluster
runs (Service selector, the live Deployment's image, model and ready replicas) and says whether
it matches what Git declares.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlship.deploy.release import COLORS, Release, other
from mlship.deploy.targets.k8s_manifests import COLOR_LABEL, RELEASE_ANNOTATION
from mlship.deploy.targets.kubernetes import KubernetesTarget
from mlship.errors import ConfigError
from mlship.fsutil import write_text

COMPONENT = "mlship-release"
SYNC_WAVE = "argocd.argoproj.io/sync-wave"
HEADER = "# Written by `mlship deploy --target gitops`: the release this environment should run.\n"


@dataclass
class Declared:
    """What the overlay declares: the live color and the release of each color."""

    live: str | None = None
    colors: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"live": self.live, "colors": self.colors}


def split_image(image: str) -> tuple[str, str]:
    """REGISTRY/NAME@sha256:… → (REGISTRY/NAME, sha256:…); anything else is a usage error."""
    name, sep, digest = image.partition("@")
    if not sep or not digest.startswith("sha256:") or not name:
        raise ConfigError(
            f"--image {image} is not pinned by digest",
            hint="GitOps declares an immutable release: pass REGISTRY/NAME@sha256:…",
        )
    return name, digest


class GitOpsTarget:
    """Writes releases into an overlay; compares the overlay with the cluster through kubectl."""

    name = "gitops"

    def __init__(self, manifests: Path, *, env: str, app: str, namespace: str, timeout_s: float = 60.0) -> None:
        self.overlay = manifests / "overlays" / env
        self.component = self.overlay / COMPONENT
        self.env = env
        self.app = app
        self.namespace = namespace
        self.timeout_s = timeout_s
        if not (self.overlay / "kustomization.yaml").is_file():
            raise ConfigError(f"no kustomize overlay at {self.overlay}", hint="see deployment/k8s/overlays")

    # What Git declares ---------------------------------------------------------------------

    def declared(self) -> Declared:
        patch = self.component / "release.yaml"
        if not patch.is_file():
            return Declared()
        found = Declared()
        for doc in yaml.safe_load_all(patch.read_text(encoding="utf-8")):
            if not doc:
                continue
            name = doc.get("metadata", {}).get("name", "")
            if doc.get("kind") == "Service" and name == self.app:
                found.live = doc["spec"]["selector"].get(COLOR_LABEL)
            elif doc.get("kind") == "Deployment":
                raw = doc.get("metadata", {}).get("annotations", {}).get(RELEASE_ANNOTATION)
                color = name.removeprefix(f"{self.app}-")
                if raw and color in COLORS:
                    found.colors[color] = dict(json.loads(raw))
        return found

    def declare(self, release: Release) -> tuple[str, list[Path]]:
        """Put `release` on the color Git does not declare live and select it; returns (color, files)."""
        name, digest = split_image(release.image or "")
        current = self.declared()
        color = other(current.live) if current.live else "blue"
        colors = dict(current.colors)
        colors[color] = {
            "uri": release.uri,
            "version": release.version,
            "name": release.name,
            "run_id": release.run_id,
            "image": f"{name}@{digest}",
            "git_sha": release.git_sha,
        }
        written = [self._write_component(colors, live=color), self._include_component()]
        return color, [p for p in written if p is not None]

    def _write_component(self, colors: dict[str, dict[str, Any]], *, live: str) -> Path:
        images = []
        docs: list[dict[str, Any]] = []
        for color in COLORS:
            record = colors.get(color)
            if record is None:  # no release declared for this color yet: nothing to run
                docs.append(
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "metadata": {"name": f"{self.app}-{color}"},
                        "spec": {"replicas": 0},
                    }
                )
                continue
            image_name, digest = split_image(str(record["image"]))
            images.append({"name": f"{self.app}-{color}", "newName": image_name, "digest": digest})
            docs.append(
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {
                        "name": f"{self.app}-{color}",
                        "annotations": {RELEASE_ANNOTATION: json.dumps(record, sort_keys=True)},
                    },
                    "spec": {
                        "template": {
                            "spec": {
                                "containers": [
                                    {"name": "server", "env": [{"name": "MLSHIP_MODEL_URI", "value": record["uri"]}]}
                                ]
                            }
                        }
                    },
                }
            )
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": self.app, "annotations": {SYNC_WAVE: "1"}},
                "spec": {"selector": {COLOR_LABEL: live}},
            }
        )
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1alpha1",
            "kind": "Component",
            "images": images,
            "patches": [{"path": "release.yaml"}],
        }
        write_text(self.component / "release.yaml", HEADER + yaml.safe_dump_all(docs, sort_keys=False))
        write_text(self.component / "kustomization.yaml", HEADER + yaml.safe_dump(kustomization, sort_keys=False))
        return self.component

    def _include_component(self) -> Path | None:
        """List the component in the overlay once (a text edit: the overlay's comments stay)."""
        path = self.overlay / "kustomization.yaml"
        text = path.read_text(encoding="utf-8")
        parsed = yaml.safe_load(text) or {}
        if COMPONENT in (parsed.get("components") or []):
            return None
        lines = text.splitlines()
        if "components" in parsed:  # last: components apply in order, the release wins
            at = next(i for i, line in enumerate(lines) if line.startswith("components:")) + 1
            while at < len(lines) and (lines[at].startswith((" ", "-")) or not lines[at].strip()):
                at += 1
            lines.insert(at, f"  - {COMPONENT}")
        else:
            lines += ["components:", f"  - {COMPONENT}"]
        return write_text(path, "\n".join(lines) + "\n")

    # What the cluster runs -----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Git's declaration, the cluster's reality, and every difference between them."""
        declared = self.declared()
        kubectl = KubernetesTarget(
            self.overlay.parents[1], env=self.env, app=self.app, namespace=self.namespace, timeout_s=self.timeout_s
        )
        kubectl.prepare()
        service = kubectl._get("service", kubectl.live_service)
        live = (service or {}).get("spec", {}).get("selector", {}).get(COLOR_LABEL)
        running: dict[str, Any] = {}
        for color in COLORS:
            dep = kubectl._get("deployment", kubectl._deployment(color))
            if dep is None:
                continue
            container = dep["spec"]["template"]["spec"]["containers"][0]
            env = {e.get("name"): e.get("value") for e in container.get("env", [])}
            running[color] = {
                "image": container.get("image"),
                "uri": env.get("MLSHIP_MODEL_URI"),
                "ready": int(dep.get("status", {}).get("availableReplicas", 0) or 0),
            }
        differences = []
        if declared.live is None:
            differences.append(f"Git declares no release for {self.env} yet")
        elif live != declared.live:
            differences.append(f"the live Service selects {live or 'nothing'}, Git declares {declared.live}")
        else:
            want = declared.colors.get(declared.live, {})
            have = running.get(declared.live, {})
            for key in ("image", "uri"):
                if have.get(key) != want.get(key):
                    differences.append(f"{declared.live} runs {key} {have.get(key)}, Git declares {want.get(key)}")
            if not have.get("ready"):
                differences.append(f"{declared.live} has no ready replica")
        return {
            "env": self.env,
            "target": self.name,
            "declared": declared.to_dict(),
            "cluster": {"live": live, "colors": running},
            "in_sync": not differences,
            "differences": differences,
        }
