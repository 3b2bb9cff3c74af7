"""What a kubeconfig needs from the machine that uses it: an exec auth plugin, a loopback server.

A kubeconfig mounted into a container (the Dagger `deploy` function) only works there if its
server is reachable from inside (not 127.0.0.1 of the host) and its credentials are in the file
(a token or a client certificate), not produced by a program of the host (`exec`: `aws`,
`gke-gcloud-auth-plugin`, `kubelogin`; the legacy `auth-provider`). `inspect_kubeconfig` reads the
context kubectl would use (`current-context`, as kubectl resolves it:
kubernetes.io/docs/concepts/configuration/organize-cluster-access-kubeconfig/) and says both.

    python -m mlship.deploy.targets.kubeconfig PATH [CONTEXT]   # prints the result as JSON
"""

from __future__ import annotations

import ipaddress
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlship.errors import ConfigError


@dataclass(frozen=True)
class KubeconfigInfo:
    """The context kubectl would use, where its server is, and how its user authenticates."""

    context: str
    cluster: str
    server: str
    host: str
    port: int | None
    loopback: bool
    """The server is this machine (127.0.0.0/8, ::1, localhost): unreachable from inside a container."""
    exec_plugin: str | None
    """The program an `exec` credential plugin runs (`aws`, `gke-gcloud-auth-plugin`, …), or
    `auth-provider:<name>` for the legacy in-tree providers; None when the credentials are in the file."""
    namespace: str | None
    tls_server_name: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and the `localhost` names (RFC 6761 reserves `*.localhost`)."""
    name = host.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _named(config: dict[str, Any], section: str, name: str, path: Path) -> dict[str, Any]:
    for entry in config.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(section.rstrip("s"))
            return body if isinstance(body, dict) else {}
    raise ConfigError(f"{path} names {section.rstrip('s')} {name!r} but does not define it", hint="fix the kubeconfig")


def inspect_kubeconfig(path: Path, context: str | None = None) -> KubeconfigInfo:
    """Read `path` as kubectl would (ConfigError, exit 2, if it cannot be used at all)."""
    import yaml  # noqa: PLC0415 - yaml: heavy, imported where it is used (off `--help` and the light paths)

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read kubeconfig {path}: {exc.strerror}", hint="pass an existing file") from None
    except yaml.YAMLError:
        raise ConfigError(f"kubeconfig {path} is not YAML", hint="export it with `kubectl config view --raw`") from None
    if not isinstance(config, dict):
        raise ConfigError(f"kubeconfig {path} is not a kubeconfig", hint="export it with `kubectl config view --raw`")
    name = context or config.get("current-context")
    if not name:
        raise ConfigError(f"kubeconfig {path} has no current-context", hint="`kubectl config use-context NAME`")
    ctx = _named(config, "contexts", str(name), path)
    cluster_name = str(ctx.get("cluster", ""))
    cluster = _named(config, "clusters", cluster_name, path)
    user = _named(config, "users", str(ctx["user"]), path) if ctx.get("user") else {}
    server = str(cluster.get("server", ""))
    parts = urlsplit(server)
    host = parts.hostname or ""
    plugin: str | None = None
    exec_cfg = user.get("exec")
    if isinstance(exec_cfg, dict) and exec_cfg.get("command"):
        plugin = Path(str(exec_cfg["command"])).name
    elif isinstance(user.get("auth-provider"), dict):
        plugin = f"auth-provider:{user['auth-provider'].get('name', '?')}"
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(
            f"kubeconfig {path}: server {server!r} has no valid port", hint="fix the kubeconfig"
        ) from None
    return KubeconfigInfo(
        context=str(name),
        cluster=cluster_name,
        server=server,
        host=host,
        port=port,
        loopback=bool(host) and is_loopback(host),
        exec_plugin=plugin,
        namespace=ctx.get("namespace"),
        tls_server_name=cluster.get("tls-server-name"),
    )


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print("usage: python -m mlship.deploy.targets.kubeconfig KUBECONFIG [CONTEXT]", file=sys.stderr)
        return 2
    try:
        info = inspect_kubeconfig(Path(argv[0]), argv[1] if len(argv) == 2 else None)
    except ConfigError as exc:
        print(f"mlship: error: {exc} ({exc.hint})" if exc.hint else f"mlship: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(info.to_dict(), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
