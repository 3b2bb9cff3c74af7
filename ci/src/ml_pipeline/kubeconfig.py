"""What a kubeconfig needs before `mlship deploy` can use it from inside the engine.

The pipeline's containers run in the engine, not on the user's machine, so two kinds of
kubeconfig that work on a laptop fail deep inside kubectl there:

- a server on loopback (kind, minikube, k3d, Docker Desktop: `https://127.0.0.1:PORT`) is the
  container's own loopback. The engine reaches the host's through a host service
  (`dag.host().service([PortForward])`, bound to the container under an alias by
  `with_service_binding`); the copy of the kubeconfig the deploy uses names the alias as its
  server and keeps the original host as `tls-server-name`, so kubectl still verifies the API
  server's certificate against the name it was issued for.
- a user authenticating with an exec plugin (`aws`, `gke-gcloud-auth-plugin`, `kubelogin`) or a
  legacy auth provider needs a binary and a login the container has neither of: refused before
  anything talks to the cluster, naming the plugin and the fix (a token kubeconfig).

The kubeconfig is read by `kubectl config view -o json` in a container (kubectl parses YAML
and JSON kubeconfigs alike; without `--raw` it prints no credential), so this module parses
JSON only, with the standard library: the module runtime installs nothing but dagger-io.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

TUNNEL_ALIAS = "kube-api"
"""The hostname the tunnelled API server has inside the deploy's container."""
TUNNEL_DIR = "/run/mlship-kube"
"""A tmpfs in the deploy's container where the rewritten copy of the kubeconfig lives (no layer)."""
TOKEN_FIX = (
    "use a token kubeconfig for the CI identity (docs/deploy.md, 'Setting up an environment': a ServiceAccount "
    "token kubeconfig "
    "from deployment/k8s/rbac)"
)


class KubeconfigRefused(ValueError):
    """A kubeconfig the pipeline's container cannot use; the message is one line with the fix."""


@dataclass(frozen=True)
class KubeAccess:
    """The parts of the current context the pipeline acts on."""

    context: str
    cluster: str
    user: str
    server: str
    tls_server_name: str = ""
    exec_command: str = ""
    auth_provider: str = ""

    @property
    def host(self) -> str:
        return urlsplit(self.server).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.server)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def loopback(self) -> bool:
        """The server is the machine's own loopback: unreachable from inside the engine."""
        host = self.host
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def tunnel_server(self) -> str:
        """The server URL inside the deploy's container: the alias, same scheme, port and path."""
        parts = urlsplit(self.server)
        return f"{parts.scheme}://{TUNNEL_ALIAS}:{self.port}{parts.path}"

    def tunnel_tls_server_name(self) -> str:
        """The name the certificate is verified against: the kubeconfig's own, else the original host."""
        return self.tls_server_name or self.host


def parse_view(view_json: str, context: str = "") -> KubeAccess:
    """`kubectl config view -o json` → the named (default: current) context's cluster and user."""
    try:
        view: dict[str, Any] = json.loads(view_json)
    except json.JSONDecodeError as exc:
        raise KubeconfigRefused(f"the kubeconfig could not be read by kubectl: {exc}") from None
    name = context or str(view.get("current-context") or "")
    if not name:
        raise KubeconfigRefused("the kubeconfig has no current-context (set one: kubectl config use-context NAME)")
    ctx = _named(view, "contexts", name, "context")
    if ctx is None:
        raise KubeconfigRefused(f"the kubeconfig has no context {name!r} (kubectl config get-contexts lists them)")
    cluster_name, user_name = str(ctx.get("cluster") or ""), str(ctx.get("user") or "")
    cluster = _named(view, "clusters", cluster_name, "cluster")
    if cluster is None or not cluster.get("server"):
        raise KubeconfigRefused(
            f"the kubeconfig's context {name!r} names cluster {cluster_name!r}, which has no server"
        )
    user = _named(view, "users", user_name, "user") or {}
    exec_cfg = user.get("exec") or {}
    provider = user.get("auth-provider") or {}
    return KubeAccess(
        context=name,
        cluster=cluster_name,
        user=user_name,
        server=str(cluster["server"]),
        tls_server_name=str(cluster.get("tls-server-name") or ""),
        exec_command=str(exec_cfg.get("command") or ""),
        auth_provider=str(provider.get("name") or ""),
    )


def _named(view: dict[str, Any], section: str, name: str, key: str) -> dict[str, Any] | None:
    for item in view.get(section) or []:
        if item.get("name") == name:
            value = item.get(key)
            return value if isinstance(value, dict) else {}
    return None


def check(access: KubeAccess) -> None:
    """Refuse a kubeconfig whose user logs in through a program the container does not have."""
    if access.exec_command:
        raise KubeconfigRefused(
            f"the kubeconfig's user {access.user!r} authenticates with the exec plugin "
            f"{access.exec_command!r}, which the pipeline's container does not have ({TOKEN_FIX})"
        )
    if access.auth_provider:
        raise KubeconfigRefused(
            f"the kubeconfig's user {access.user!r} authenticates with the auth provider "
            f"{access.auth_provider!r}, which the pipeline's container does not have ({TOKEN_FIX})"
        )


def tunnel_script() -> str:
    """The deploy exec's prologue on a loopback server: a rewritten copy on the tmpfs, then the command.

    `$1` cluster, `$2` server through the tunnel, `$3` tls-server-name; the rest is the argv.
    `kubectl config set-cluster` changes only those two fields of the copy: the CA, the token and
    every other field stay as the user wrote them, so the certificate is still verified."""
    copy = f"{TUNNEL_DIR}/config"
    return (
        f'cp "$KUBECONFIG" {copy} && chmod 0600 {copy} && '
        f'kubectl config set-cluster "$1" --server="$2" --tls-server-name="$3" --kubeconfig={copy} >/dev/null && '
        f'shift 3 && KUBECONFIG={copy} exec "$@"'
    )
