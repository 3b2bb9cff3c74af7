"""inspect_kubeconfig: the exec plugin and the loopback server of the context kubectl would use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlship.deploy.targets.kubeconfig import inspect_kubeconfig, is_loopback
from mlship.errors import ConfigError


def kubeconfig(tmp_path: Path, server: str, user: dict[str, Any], **cluster: Any) -> Path:
    path = tmp_path / "config"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server, **cluster}}],
                "users": [{"name": "u", "user": user}],
                "contexts": [
                    {"name": "other", "context": {"cluster": "c", "user": "u"}},
                    {"name": "ctx", "context": {"cluster": "c", "user": "u", "namespace": "ml"}},
                ],
                "current-context": "ctx",
            }
        )
    )
    return path


@pytest.mark.parametrize(
    ("server", "loopback"),
    [
        ("https://127.0.0.1:6443", True),
        ("https://127.0.1.1:6443", True),
        ("https://localhost:36001", True),
        ("https://kind.localhost:6443", True),
        ("https://[::1]:6443", True),
        ("https://10.0.0.5:6443", False),
        ("https://ABC.gr7.eu-west-1.eks.amazonaws.com", False),
    ],
)
def test_loopback_servers_are_recognised(tmp_path: Path, server: str, loopback: bool) -> None:
    info = inspect_kubeconfig(kubeconfig(tmp_path, server, {"token": "t"}))
    assert info.loopback is loopback and info.exec_plugin is None
    assert info.context == "ctx" and info.namespace == "ml" and info.server == server


def test_exec_plugins_and_auth_providers_are_named(tmp_path: Path) -> None:
    aws = {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": "/usr/local/bin/aws"}}
    info = inspect_kubeconfig(kubeconfig(tmp_path, "https://1.2.3.4", aws, **{"tls-server-name": "k8s.internal"}))
    assert info.exec_plugin == "aws" and not info.loopback and info.tls_server_name == "k8s.internal"
    gke = {"exec": {"command": "gke-gcloud-auth-plugin"}}
    assert inspect_kubeconfig(kubeconfig(tmp_path, "https://1.2.3.4", gke)).exec_plugin == "gke-gcloud-auth-plugin"
    legacy = {"auth-provider": {"name": "oidc"}}
    assert inspect_kubeconfig(kubeconfig(tmp_path, "https://1.2.3.4", legacy)).exec_plugin == "auth-provider:oidc"
    assert inspect_kubeconfig(kubeconfig(tmp_path, "https://1.2.3.4", aws), "other").context == "other"


def test_unusable_kubeconfigs_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read kubeconfig"):
        inspect_kubeconfig(tmp_path / "missing")
    (tmp_path / "bad").write_text("a: [")
    with pytest.raises(ConfigError, match="is not YAML"):
        inspect_kubeconfig(tmp_path / "bad")
    path = kubeconfig(tmp_path, "https://1.2.3.4", {})
    with pytest.raises(ConfigError, match="names context 'nope' but does not define it"):
        inspect_kubeconfig(path, "nope")


def test_module_prints_json_and_exits_2_on_a_bad_file(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, "https://localhost:6443", {"exec": {"command": "kubelogin"}})
    cmd = [sys.executable, "-m", "mlship.deploy.targets.kubeconfig"]
    done = subprocess.run([*cmd, str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["exec_plugin"] == "kubelogin" and json.loads(done.stdout)["loopback"] is True
    bad = subprocess.run([*cmd, str(tmp_path / "missing")], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("mlship: error: cannot read kubeconfig")
    assert "Traceback" not in bad.stderr


def test_is_loopback_rejects_lookalikes() -> None:
    assert not is_loopback("localhost.example.com") and not is_loopback("128.0.0.1") and is_loopback("LOCALHOST.")
