"""A TLS endpoint on 127.0.0.1 that answers like a Kubernetes API server with nothing in it.

Enough for kubectl's discovery (`/api`, `/apis`) and a 404 `Status` for every object, so a
replayed `mlship deploy`/`rollback` talks to it for real over verified TLS with a bearer
token; it records each request (method, path, whether the token matched) for the test. Its
certificate is issued by a CA made here (openssl), for IP 127.0.0.1 and DNS localhost only.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class FakeApiServer:
    port: int
    ca_pem: bytes
    token: str
    requests: list[tuple[str, str, bool]] = field(default_factory=list)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def kubeconfig(
        self, *, ca_pem: bytes | None = None, server: str = "", user: dict[str, object] | None = None
    ) -> str:
        """A token kubeconfig for this server (JSON is YAML): `ca_pem` replaces the CA (to prove verification)."""
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "kind-mlship",
            "clusters": [
                {
                    "name": "kind-mlship",
                    "cluster": {
                        "server": server or self.server,
                        "certificate-authority-data": base64.b64encode(ca_pem or self.ca_pem).decode(),
                    },
                }
            ],
            "users": [{"name": "ci", "user": user if user is not None else {"token": self.token}}],
            "contexts": [{"name": "kind-mlship", "context": {"cluster": "kind-mlship", "user": "ci"}}],
        }
        return json.dumps(cfg, indent=2) + "\n"


def make_ca(dest: Path, name: str) -> tuple[Path, Path]:
    key, cert = dest / f"{name}.key", dest / f"{name}.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert


def _server_cert(dest: Path, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    key, csr, cert, ext = dest / "srv.key", dest / "srv.csr", dest / "srv.crt", dest / "srv.ext"
    subprocess.run(
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
         "-keyout", str(key), "-out", str(csr)],
        check=True, capture_output=True,
    )  # fmt: skip
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    subprocess.run(
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]), "-CAcreateserial",
         "-days", "2", "-extfile", str(ext), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert


@contextlib.contextmanager
def running(dest: Path, token: str) -> Iterator[FakeApiServer]:
    ca = make_ca(dest, "cluster-ca")
    key, cert = _server_cert(dest, ca)
    state = FakeApiServer(0, ca[1].read_bytes(), token)

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            authorised = self.headers.get("Authorization") == f"Bearer {token}"
            state.requests.append((self.command, self.path, authorised))
            path = self.path.split("?")[0]
            if not authorised:
                code, body = 401, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 401,
                                   "reason": "Unauthorized", "message": "Unauthorized"}  # fmt: skip
            elif path == "/api":
                code, body = 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
            elif path == "/apis":
                code, body = 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}
            elif path == "/api/v1":
                resources = [
                    {"name": n, "singularName": s, "namespaced": True, "kind": k, "verbs": ["get", "list", "create"]}
                    for n, s, k in (("configmaps", "configmap", "ConfigMap"), ("services", "service", "Service"),
                                    ("pods", "pod", "Pod"))
                ]  # fmt: skip
                code, body = 200, {"kind": "APIResourceList", "groupVersion": "v1", "resources": resources}
            else:
                code, body = 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
                                   "reason": "NotFound", "message": f"{path} not found"}  # fmt: skip
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer  # noqa: N815  # http.server's names

        def log_message(self, format: str, *args: object) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
