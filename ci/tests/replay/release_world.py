"""The world a first release talks to, on this machine: tracking server, object store, two clusters.

- MLflow: a real `mlflow server` on 127.0.0.1 (artifacts proxied, so a container downloads a
  model over HTTP), behind a proxy that answers 401 to any request without
  `Authorization: Bearer <token>` (MLflow's client sends MLFLOW_TRACKING_TOKEN so): a token
  that does not arrive byte-exact fails the stage that needed it.
- moto's S3 server (server mode) on 127.0.0.1.
- Two clusters: two kubectl-double state files with their own kubeconfig each (a token and a CA,
  so a leak of either can be looked for), their namespaces created as a platform engineer does,
  and a node each (`node`) that runs their pods on this machine, apart from the job containers.

A container reaches a host server as it reaches a host service on the engine: through a TCP
forwarder on the Docker bridge's gateway (replay/interpreter.py host_tunnel), never the host's
loopback. `Servers.container_url(port)` is that address.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import http.client
import json
import os
import secrets
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from replay import interpreter
from tests.docker import support

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "authorization"}


class TokenGate:
    """A reverse proxy on 127.0.0.1 that forwards only requests carrying the bearer token."""

    def __init__(self, upstream_port: int, token: str) -> None:
        self.token = token
        self.allowed = 0
        self.refused = 0
        self.refusals: list[str] = []  # what was refused: method, path, client, User-Agent
        gate = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # the test's output stays readable
                return

            def _forward(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {gate.token}":
                    gate.refused += 1
                    said = self.headers.get("Authorization")
                    gate.refusals.append(
                        f"{self.command} {self.path} from {self.client_address[0]} "
                        f"({self.headers.get('User-Agent')}; {'a wrong' if said else 'no'} Authorization)"
                    )
                    body = b'{"error_code": "UNAUTHENTICATED", "message": "missing or wrong bearer token"}'
                    self.send_response(401)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                gate.allowed += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=300)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward  # noqa: N815 (http.server's names)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="mlflow-token-gate", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def mlflow_server(root: Path) -> Iterator[int]:
    """`mlflow server` on a free loopback port with proxied artifacts; yields the port."""
    port = support.free_port()
    log = (root / "mlflow-server.log").open("w")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    try:
        deadline = time.monotonic() + 300  # an upper bound on a loaded machine: the server imports all of mlflow
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(root / 'mlflow-server.log').read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not answer /health in 300 s")
            time.sleep(0.5)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@dataclass
class Servers:
    """Host servers and the forwarders that make them reachable from the replay's containers."""

    interp: interpreter.Interpreter
    stack: contextlib.ExitStack
    gateway: str = ""
    _forwarders: list[Any] = field(default_factory=list)

    def gateway_address(self) -> str:
        """The Docker bridge's gateway: the host, as a container dials it."""
        if not self.gateway:
            self.gateway = interpreter._bridge_gateway()
        return self.gateway

    def container_url(self, port: int) -> str:
        """http://<bridge gateway>:<port>, forwarded to 127.0.0.1:<port> (what a container dials)."""
        self.gateway_address()
        forwarder = interpreter._Forwarder(self.gateway, port, "127.0.0.1", port)
        self.stack.callback(forwarder.close)
        return f"http://{self.gateway}:{port}"


def moto_server(stack: contextlib.ExitStack) -> int:
    """moto's S3 server on a free loopback port (stopped with the stack); returns the port."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    stack.callback(server.stop)
    port = int(server.get_host_and_port()[1])
    # moto keeps its backends per process, not per server: a bucket another test of this pytest
    # session filled (tests/integration/test_batch_dataset.py uses the same name) is still there
    # in a "new" server. The scenario's batch must score only its own files: start empty.
    httpx.post(f"http://127.0.0.1:{port}/moto-api/reset", timeout=30).raise_for_status()
    return port


@dataclass(frozen=True)
class Cluster:
    """One cluster: the double's state file and a kubeconfig naming it, with a token and a CA."""

    env: str
    state: Path
    kubeconfig: Path
    token: str
    ca_data: str


def make_cluster(
    root: Path, env: str, namespace: str, kubeconfigs: Path, pod_env: dict[str, str] | None = None
) -> Cluster:
    """A cluster with `namespace` created (what the platform engineer does first) and a token kubeconfig.

    The state lives under `root/env` (mounted into the pipeline's execs); the kubeconfig under
    `kubeconfigs`, never mounted: it reaches a container only as the secret the module mounts."""
    import yaml

    from tests.support.deploy_doubles.harness import create_namespaces

    folder = root / env
    folder.mkdir(parents=True)
    state = folder / "state.json"
    create_namespaces(state, namespace)
    if pod_env:  # beside the kubeconfig, outside the state's directory; mounted at its own path
        from tests.support.deploy_doubles.harness import set_pod_env_file

        kubeconfigs.mkdir(parents=True, exist_ok=True)
        env_file = kubeconfigs / f"{env}-pod-env.json"
        env_file.write_text(json.dumps(pod_env))
        env_file.chmod(0o600)
        set_pod_env_file(state, env_file)
    token = f"kube-{env}-" + secrets.token_urlsafe(24)
    pem = (
        "-----BEGIN CERTIFICATE-----\n"
        + base64.b64encode(secrets.token_bytes(96)).decode()
        + "\n-----END CERTIFICATE-----\n"
    )
    ca_data = base64.b64encode(pem.encode()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": env, "cluster": {"server": f"file://{state}", "certificate-authority-data": ca_data}}],
        "contexts": [{"name": env, "context": {"cluster": env, "user": "mlship-ci"}}],
        "users": [{"name": "mlship-ci", "user": {"token": token}}],
        "current-context": env,
    }
    kubeconfigs.mkdir(parents=True, exist_ok=True)
    kubeconfig = kubeconfigs / f"{env}.yaml"
    kubeconfig.write_text(yaml.safe_dump(config))
    kubeconfig.chmod(0o600)
    return Cluster(env, state, kubeconfig, token, ca_data)


@contextlib.contextmanager
def node(cluster: Cluster, address: str) -> Iterator[None]:
    """The cluster's node (tests/support/deploy_doubles/kubelet.py): its pods run here, on the host,
    reached at `address` (the bridge's gateway), so they outlive the job container whose kubectl
    created them, as a real cluster's pods outlive `dagger call`."""
    from tests.support.deploy_doubles.harness import run_node

    with run_node(cluster.state, address):
        yield


def secret_hits(data: bytes, needles: dict[str, bytes]) -> list[str]:
    return [name for name, value in needles.items() if value and value in data]


def files_with_secrets(root: Path, needles: dict[str, bytes]) -> list[str]:
    """Every file under `root` holding a secret's bytes: 'path: name'."""
    hits = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        hits += [f"{path}: {name}" for name in secret_hits(path.read_bytes(), needles)]
    return hits


def image_secret_hits(refs: list[str], needles: dict[str, bytes], scratch: Path) -> tuple[list[str], int]:
    """Secrets in images: each one's history (--no-trunc) and config (labels, env), and the bytes of
    every layer (one `docker save` of them all: shared layers are read once).

    Returns the hits and how many tarball members were read."""
    hits = []
    for ref in refs:
        history = support.docker("history", "--no-trunc", ref).stdout.encode()
        hits += [f"{ref} history: {n}" for n in secret_hits(history, needles)]
        inspect = support.docker("image", "inspect", ref).stdout.encode()
        hits += [f"{ref} inspect: {n}" for n in secret_hits(inspect, needles)]
    tar_path = scratch / "images.tar"
    support.docker("save", "--output", str(tar_path), *refs)
    members = 0
    longest = max(len(v) for v in needles.values())
    with tarfile.open(tar_path) as outer:
        for member in outer.getmembers():
            if not member.isfile():
                continue
            raw = outer.extractfile(member)
            assert raw is not None
            fh: Any = raw
            if raw.read(2) == b"\x1f\x8b":  # a gzip-compressed layer blob (OCI layout): read it inflated
                raw.seek(0)
                fh = gzip.GzipFile(fileobj=raw)
            else:
                raw.seek(0)
            tail = b""
            members += 1
            while chunk := fh.read(8 << 20):  # a secret split across two reads is still found
                hits += [f"{member.name}: {n}" for n in secret_hits(tail + chunk, needles)]
                tail = chunk[-longest:]
    tar_path.unlink()
    return sorted(set(hits)), members
