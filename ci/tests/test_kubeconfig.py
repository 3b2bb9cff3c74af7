"""kubeconfig.py: what `kubectl config view -o json` prints → the tunnel and the refusal (engine-free)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from dagger import dag
from dagger_plan import execs, render
from ml_pipeline import kubeconfig as kc
from ml_pipeline.main import Environment, MlPipeline


def view(server: str, user: dict[str, Any] | None = None, tls_server_name: str = "") -> str:
    """The shape `kubectl config view -o json` prints (credentials shown as DATA+OMITTED/REDACTED)."""
    cluster: dict[str, Any] = {"server": server, "certificate-authority-data": "DATA+OMITTED"}
    if tls_server_name:
        cluster["tls-server-name"] = tls_server_name
    return json.dumps(
        {
            "kind": "Config",
            "apiVersion": "v1",
            "preferences": {},
            "clusters": [{"name": "kind-dev", "cluster": cluster}],
            "users": [{"name": "dev", "user": user if user is not None else {"token": "REDACTED"}}],
            "contexts": [{"name": "kind-dev", "context": {"cluster": "kind-dev", "user": "dev"}}],
            "current-context": "kind-dev",
        }
    )


@pytest.mark.parametrize(
    ("server", "loopback"),
    [
        ("https://127.0.0.1:6443", True),
        ("https://localhost:8443", True),
        ("https://[::1]:6443", True),
        ("https://127.0.0.2:6443", True),
        ("https://10.0.0.5:6443", False),
        ("https://api.cluster.internal", False),
    ],
)
def test_loopback_servers_are_recognised(server: str, loopback: bool) -> None:
    assert kc.parse_view(view(server)).loopback is loopback


def test_the_tunnel_rewrites_the_server_and_keeps_the_name_the_certificate_is_for() -> None:
    access = kc.parse_view(view("https://127.0.0.1:6443"))
    assert (access.cluster, access.port) == ("kind-dev", 6443)
    assert access.tunnel_server() == "https://kube-api:6443"
    assert access.tunnel_tls_server_name() == "127.0.0.1"
    named = kc.parse_view(view("https://localhost:8443/k8s", tls_server_name="kubernetes.default"))
    assert named.tunnel_server() == "https://kube-api:8443/k8s"
    assert named.tunnel_tls_server_name() == "kubernetes.default", "the kubeconfig's own name is kept"


@pytest.mark.parametrize(
    ("user", "plugin"),
    [
        ({"exec": {"command": "aws", "args": ["eks", "get-token"]}}, "exec plugin 'aws'"),
        ({"exec": {"command": "gke-gcloud-auth-plugin"}}, "exec plugin 'gke-gcloud-auth-plugin'"),
        ({"exec": {"command": "kubelogin", "args": ["get-token"]}}, "exec plugin 'kubelogin'"),
        ({"auth-provider": {"name": "oidc"}}, "auth provider 'oidc'"),
    ],
)
def test_a_user_that_logs_in_with_a_plugin_is_refused_naming_it_and_the_fix(user: dict[str, Any], plugin: str) -> None:
    access = kc.parse_view(view("https://10.0.0.5:6443", user))
    with pytest.raises(kc.KubeconfigRefused) as info:
        kc.check(access)
    message = str(info.value)
    assert plugin in message and "token kubeconfig" in message and "\n" not in message
    kc.check(kc.parse_view(view("https://10.0.0.5:6443")))  # a token user passes


def test_unusable_kubeconfigs_are_refused_with_what_to_do() -> None:
    with pytest.raises(kc.KubeconfigRefused, match="no current-context"):
        kc.parse_view(json.dumps({"clusters": [], "contexts": [], "users": []}))
    broken = json.loads(view("https://127.0.0.1:6443"))
    broken["current-context"] = "gone"
    with pytest.raises(kc.KubeconfigRefused, match="no context 'gone'"):
        kc.parse_view(json.dumps(broken))
    with pytest.raises(kc.KubeconfigRefused, match="could not be read"):
        kc.parse_view("error: not json")


def test_a_loopback_deploy_binds_the_host_tunnel_and_runs_through_the_rewritten_copy() -> None:
    pipe = MlPipeline(source=dag.directory())  # type: ignore[call-arg]
    access = kc.parse_view(view("https://127.0.0.1:6443"))
    image = "r/x@sha256:" + "0" * 64
    plan = pipe._deploy(dag.set_secret("k", "x"), "models:/m/1", Environment.STAGING, "ns", False, image, access=access)
    chain = render(plan)
    assert "withServiceBinding(alias='kube-api', service=<Service:host().service(ports=" in chain
    assert (
        "ports=[{'backend': 6443, 'frontend': 6443}]" in chain and "withMountedTemp(path='/run/mlship-kube')" in chain
    )
    argv = execs(plan)[-1]
    assert argv[:3] == ["sh", "-c", kc.tunnel_script()]
    assert argv[4:7] == ["kind-dev", "https://kube-api:6443", "127.0.0.1"]
    assert argv[7:9] == ["mlship", "deploy"]
    # a remote server: no tunnel, the command as before
    remote = kc.parse_view(view("https://10.0.0.5:6443"))
    plain = pipe._deploy(
        dag.set_secret("k", "x"), "models:/m/1", Environment.STAGING, "ns", False, image, access=remote
    )
    assert execs(plain)[-1][:2] == ["mlship", "deploy"] and "withServiceBinding" not in render(plain)
