"""The kubectl double's node: runs a cluster's pods apart from the kubectl clients that asked for them.

`python -m tests.support.deploy_doubles.kubelet --state STATE --address ADDR`

Without it, the double's `rollout status` starts a Deployment's "pod" (fake_server.py) as a child
of that kubectl, in that kubectl's machine. When each kubectl runs in its own short-lived
container (the replay's release scenario: every `dagger call` is a fresh job container holding
the cluster's state file), those pods die with the container that created them, and the next
release finds every color down: the warm previous color a rollback switches back to is gone.
A real cluster's pods outlive the client that created them; this loop is that cluster's kubelet
and ReplicaSet controller together, on the host:

- it records itself in the state (`node`: the address the pods are reached at), which tells
  the double that pods are this node's business (kubectl.py: `rollout status` waits for the
  node to report the pod ready, `port-forward` forwards for real to ADDR);
- every Deployment with replicas > 0 that can run (kubectl.blocked) gets one pod process with
  the Deployment's template; a changed template, a scale to 0 or a delete ends it;
- a pod binds 127.0.0.1 on this host and is reached at ADDR (the Docker bridge's gateway for
  the replay: what a job container can dial) through a forwarder, as a pod IP is reached;
- readiness is probed here (GET /ready, not before the image's ready_after_s) and recorded in
  the pod's record, as the kubelet reports it to the API server; a pod that exits is recorded
  as exited (CrashLoopBackOff, as the double reports a dead pod) and not restarted.

Every read-modify-write of the state holds the double's lock, as kubectl does.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.deploy_doubles import kubectl

PROBE_EVERY_S = 1.0
"""How often a ready pod's /ready is probed again (a pod that is not ready yet: every loop)."""


class Forwarder:
    """Accepts on (host, 0) and pipes each connection to 127.0.0.1:target_port (the pod's "IP")."""

    def __init__(self, host: str, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._server = socket.create_server((host, 0))
        self._server.settimeout(0.5)
        self.port = int(self._server.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"kubelet-pod-{target_port}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=10)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        self._thread.join(timeout=5)


def pipe(src: socket.socket, dst: socket.socket) -> None:
    """Copy src to dst until src closes, then half-close dst (an HTTP client may wait for the answer)."""
    try:
        with contextlib.suppress(OSError):
            while chunk := src.recv(65536):
                dst.sendall(chunk)
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


@dataclass
class Pod:
    proc: subprocess.Popen[bytes]
    hash: str
    started: float
    ready_after_s: float
    local_port: int = 0
    forwarder: Forwarder | None = None
    buffer: bytes = b""
    ready: bool = False
    probed: float = 0.0
    exited: int | None = None
    record: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self.forwarder is not None:
            self.forwarder.close()
            self.forwarder = None
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Node:
    """One cluster's pods (the state file named by KUBECTL_DOUBLE_STATE), run from this process."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.pods: dict[str, Pod] = {}

    def register(self) -> None:
        with kubectl.locked():
            state = kubectl.load()
            state["node"] = {"address": self.address, "pid": os.getpid()}
            kubectl.save(state)

    def reconcile(self) -> None:
        """Start what should run, end what should not (under the lock); then watch the pods (outside it)."""
        with kubectl.locked():
            state = kubectl.load()
            changed = self._converge(state)
            if changed:
                kubectl.save(state)
        updates = {k: self._observe(pod) for k, pod in self.pods.items()}
        updates = {k: record for k, record in updates.items() if record is not None}
        if not updates:
            return
        with kubectl.locked():
            state = kubectl.load()
            for k, record in updates.items():
                current = state["servers"].get(k)
                if current is not None and current.get("pid") == record["pid"]:  # still this pod
                    state["servers"][k] = record
            kubectl.save(state)

    def _wanted(self, state: dict[str, Any]) -> dict[str, dict[str, Any]]:
        wanted = {}
        for k, obj in state["objects"].items():
            if obj["kind"] != "Deployment" or int(obj["spec"].get("replicas", 1)) <= 0:
                continue
            if kubectl.blocked(state, k.split("/")[1], obj) is None:
                wanted[k] = obj
        return wanted

    def _converge(self, state: dict[str, Any]) -> bool:
        wanted = self._wanted(state)
        changed = False
        for k in list(self.pods):
            pod = self.pods[k]
            record = state["servers"].get(k)
            ours = record is not None and record.get("node") and record.get("pid") == pod.proc.pid
            if k not in wanted or not ours or pod.hash != kubectl.template_hash(wanted[k]):
                pod.stop()
                del self.pods[k]
                if ours:
                    del state["servers"][k]
                changed = True
        for k, obj in wanted.items():
            record = state["servers"].get(k)
            if k in self.pods:
                continue
            if record is not None and record.get("node") and record.get("hash") == kubectl.template_hash(obj):
                continue  # it ran here and exited: CrashLoopBackOff, as the double reports a dead pod
            self.pods[k] = self._start(state, k, obj)
            state["servers"][k] = self.pods[k].record
            changed = True
        return changed

    def _start(self, state: dict[str, Any], k: str, obj: dict[str, Any]) -> Pod:
        name = k.split("/")[2]
        color = obj["metadata"].get("labels", {}).get("mlship.dev/color", "blue")
        with kubectl.state_path().with_name(f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    str(kubectl.FAKE_SERVER),
                    "--model",
                    kubectl.model_uri(state, obj),
                    "--port",
                    "0",
                    "--color",
                    color,
                    "--announce",
                    "PORT {port}",
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=kubectl.pod_env(state),
            )
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        started = time.time()
        pod = Pod(proc, kubectl.template_hash(obj), started, kubectl.ready_after(state, obj))
        pod.record = {
            "pid": proc.pid,
            "port": 0,
            "hash": pod.hash,
            "starting": True,
            "started": started,
            "node": True,
            "address": self.address,
            "ready": False,
        }
        return pod

    def _observe(self, pod: Pod) -> dict[str, Any] | None:
        """The pod's record when something about it changed (its port, exit, readiness); else None."""
        before = dict(pod.record)
        if pod.exited is None and pod.local_port == 0 and pod.proc.stdout is not None:
            pod.buffer += pod.proc.stdout.read() or b""
            if b"\n" in pod.buffer:
                line = pod.buffer.decode(errors="replace").splitlines()[0]
                if line.startswith("PORT "):
                    pod.local_port = int(line.split()[1])
                    pod.forwarder = Forwarder(self.address, pod.local_port)
                    pod.record["port"] = pod.forwarder.port
                    pod.record.pop("starting", None)
        code = pod.proc.poll()
        if code is not None and pod.exited is None:
            pod.exited = code
            pod.ready = False
            pod.record["exited"] = code
            if pod.forwarder is not None:
                pod.forwarder.close()
                pod.forwarder = None
        now = time.time()
        due = not pod.ready or now - pod.probed >= PROBE_EVERY_S
        if pod.exited is None and pod.local_port and now >= pod.started + pod.ready_after_s and due:
            pod.probed = now
            pod.ready = probe(pod.local_port)
        pod.record["ready"] = pod.ready
        return dict(pod.record) if pod.record != before else None

    def shutdown(self) -> None:
        with kubectl.locked():
            state = kubectl.load()
            for k, pod in self.pods.items():
                if state["servers"].get(k, {}).get("pid") == pod.proc.pid:
                    del state["servers"][k]
            if state.get("node", {}).get("pid") == os.getpid():
                del state["node"]
            kubectl.save(state)
        for pod in self.pods.values():
            pod.stop()
        self.pods.clear()


def probe(port: int) -> bool:
    with (
        contextlib.suppress(OSError),
        urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r,
    ):
        return bool(r.status == 200)
    return False


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state", required=True, type=Path)
    parser.add_argument("--address", required=True, help="where the pods are reached (a pod IP)")
    parser.add_argument("--every", type=float, default=0.1, help="seconds between reconciliations")
    args = parser.parse_args(argv)
    os.environ["KUBECTL_DOUBLE_STATE"] = str(args.state)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    node = Node(args.address)
    node.register()
    print("kubelet: running", flush=True)
    try:
        while not stop.is_set():
            node.reconcile()
            stop.wait(args.every)
    finally:
        node.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
