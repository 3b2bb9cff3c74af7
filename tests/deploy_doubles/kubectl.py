"""A stateful kubectl test double: enough of kubectl for the `kubernetes` deploy target.

Installed first on PATH as `kubectl` (a two-line shell wrapper) by the tests. State lives in
the JSON file named by KUBECTL_DOUBLE_STATE. `kustomize` is delegated to the real kubectl
(KUBECTL_DOUBLE_REAL). A Deployment with replicas > 0 "runs" as a fake_server.py process
started on `rollout status` with its MLSHIP_MODEL_URI (faults ride on that URI);
`port-forward` prints kubectl's "Forwarding from" line for that process's port.

Implements: apply -f FILE|-, get KIND NAME -o json, patch KIND NAME --type merge -p JSON,
scale deployment/NAME --replicas=N, rollout status deployment/NAME --timeout=Ns,
port-forward service/NAME|deployment/NAME :PORT, kustomize DIR, version.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from mlship.fsutil import write_text

FAKE_SERVER = Path(__file__).with_name("fake_server.py")
KINDS = {
    "deployment": "Deployment",
    "deployments": "Deployment",
    "deploy": "Deployment",
    "service": "Service",
    "services": "Service",
    "svc": "Service",
}


def state_path() -> Path:
    return Path(os.environ["KUBECTL_DOUBLE_STATE"])


def load() -> dict[str, Any]:
    p = state_path()
    if p.is_file():
        return dict(json.loads(p.read_text()))
    return {"objects": {}, "servers": {}, "calls": []}


def save(state: dict[str, Any]) -> None:
    write_text(state_path(), json.dumps(state, indent=1))


def key(kind: str, ns: str, name: str) -> str:
    return f"{kind}/{ns}/{name}"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def stop_server(state: dict[str, Any], k: str) -> None:
    server = state["servers"].pop(k, None)
    if server and alive(server["pid"]):
        with contextlib.suppress(ProcessLookupError):
            os.kill(server["pid"], signal.SIGKILL)


def model_uri(obj: dict[str, Any]) -> str:
    for env in obj["spec"]["template"]["spec"]["containers"][0].get("env", []):
        if env.get("name") == "MLSHIP_MODEL_URI":
            return str(env.get("value", ""))
    return ""


def template_hash(obj: dict[str, Any]) -> str:
    return json.dumps(obj["spec"]["template"], sort_keys=True)


def with_status(state: dict[str, Any], k: str, obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] != "Deployment":
        return obj
    server = state["servers"].get(k)
    replicas = int(obj["spec"].get("replicas", 1))
    up = bool(server and alive(server["pid"]) and server["hash"] == template_hash(obj) and replicas > 0)
    return {**obj, "status": {"replicas": replicas, "availableReplicas": replicas if up else 0}}


def merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge(out.get(k), v)
    return out


def fail(msg: str, code: int = 1) -> int:
    print(msg, file=sys.stderr)
    return code


def cmd_apply(state: dict[str, Any], ns: str, args: list[str]) -> int:
    source = args[args.index("-f") + 1]
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    items: list[dict[str, Any]] = []
    for d in docs:
        items += d["items"] if d.get("kind") == "List" else [d]
    for obj in items:
        kind, name = obj["kind"], obj["metadata"]["name"]
        k = key(kind, ns, name)
        old = state["objects"].get(k)
        if kind == "Deployment" and old is not None and template_hash(old) != template_hash(obj):
            stop_server(state, k)
        state["objects"][k] = obj
        print(f"{kind.lower()}/{name} {'configured' if old else 'created'}")
    return 0


def resolve(args: list[str]) -> tuple[str, str]:
    if "/" in args[0]:
        kind, name = args[0].split("/", 1)
        return KINDS.get(kind, kind), name
    return KINDS.get(args[0], args[0]), args[1]


def not_found(kind: str, name: str) -> int:
    return fail(f'Error from server (NotFound): {kind.lower()}s "{name}" not found')


def cmd_get(state: dict[str, Any], ns: str, args: list[str]) -> int:
    kind, name = resolve(args)
    k = key(kind, ns, name)
    if k not in state["objects"]:
        return not_found(kind, name)
    print(json.dumps(with_status(state, k, state["objects"][k])))
    return 0


def cmd_patch(state: dict[str, Any], ns: str, args: list[str]) -> int:
    kind, name = resolve(args)
    k = key(kind, ns, name)
    if k not in state["objects"]:
        return not_found(kind, name)
    state["objects"][k] = merge(state["objects"][k], json.loads(args[args.index("-p") + 1]))
    print(f"{kind.lower()}/{name} patched")
    return 0


def cmd_scale(state: dict[str, Any], ns: str, args: list[str]) -> int:
    kind, name = resolve(args)
    k = key(kind, ns, name)
    if k not in state["objects"]:
        return not_found(kind, name)
    replicas = int(next(a for a in args if a.startswith("--replicas=")).split("=", 1)[1])
    state["objects"][k]["spec"]["replicas"] = replicas
    if replicas == 0:
        stop_server(state, k)
    print(f"{kind.lower()}/{name} scaled")
    return 0


def cmd_rollout(state: dict[str, Any], ns: str, args: list[str]) -> int:
    kind, name = resolve(args[1:])
    k = key(kind, ns, name)
    obj = state["objects"].get(k)
    if obj is None:
        return not_found(kind, name)
    timeout = float(next((a for a in args if a.startswith("--timeout=")), "--timeout=60s").split("=")[1].rstrip("s"))
    if int(obj["spec"].get("replicas", 1)) == 0:
        print(f'deployment "{name}" successfully rolled out')
        return 0
    server = state["servers"].get(k)
    if not (server and alive(server["pid"]) and server["hash"] == template_hash(obj)):
        stop_server(state, k)
        log = state_path().with_name(f"{name}.log").open("ab")
        color = obj["metadata"].get("labels", {}).get("mlship.dev/color", "blue")
        proc = subprocess.Popen(
            [
                sys.executable,
                str(FAKE_SERVER),
                "--model",
                model_uri(obj),
                "--port",
                "0",
                "--color",
                color,
                "--announce",
                "PORT {port}",
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            state["servers"][k] = {"pid": proc.pid, "port": 0, "hash": template_hash(obj)}
            return fail(f'error: deployment "{name}" exceeded its progress deadline (CrashLoopBackOff)')
        server = {"pid": proc.pid, "port": int(line.split()[1]), "hash": template_hash(obj)}
        state["servers"][k] = server
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(server["pid"]):
            return fail(f'error: deployment "{name}" exceeded its progress deadline (CrashLoopBackOff)')
        url = f"http://127.0.0.1:{server['port']}/ready"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as r:
            if r.status == 200:
                print(f'deployment "{name}" successfully rolled out')
                return 0
        time.sleep(0.1)
    return fail(f"error: timed out waiting for the condition on deployments/{name}")


def cmd_port_forward(state: dict[str, Any], ns: str, args: list[str]) -> int:
    kind, name = resolve(args)
    k = key(kind, ns, name)
    obj = state["objects"].get(k)
    if obj is None:
        return not_found(kind, name)
    targets = [k]
    if kind == "Service":
        selector = obj["spec"].get("selector", {})
        targets = [
            dk
            for dk, d in state["objects"].items()
            if d["kind"] == "Deployment"
            and dk.split("/")[1] == ns
            and all(d["spec"]["template"]["metadata"]["labels"].get(a) == b for a, b in selector.items())
        ]
    for tk in targets:
        server = state["servers"].get(tk)
        d = state["objects"][tk]
        if server and alive(server["pid"]) and int(d["spec"].get("replicas", 1)) > 0:
            print(f"Forwarding from 127.0.0.1:{server['port']} -> 8080", flush=True)
            signal.sigwait({signal.SIGTERM, signal.SIGINT})
            return 0
    return fail("error: unable to forward port because pod is not running. Current status=Pending")


def main(argv: list[str]) -> int:
    ns = "default"
    args: list[str] = []
    it = iter(argv)
    for a in it:
        if a in ("-n", "--namespace"):
            ns = next(it)
        elif a.startswith("--namespace="):
            ns = a.split("=", 1)[1]
        else:
            args.append(a)
    if not args:
        return fail("kubectl double: no command")
    if args[0] == "kustomize":
        return subprocess.call([os.environ.get("KUBECTL_DOUBLE_REAL", "kubectl"), *args])
    if args[0] == "version":
        print("Client Version: double")
        return 0
    if args[0] == "port-forward":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        return cmd_port_forward(load(), ns, args[1:])
    handlers = {"apply": cmd_apply, "get": cmd_get, "patch": cmd_patch, "scale": cmd_scale, "rollout": cmd_rollout}
    handler = handlers.get(args[0])
    if handler is None:
        return fail(f"kubectl double: unsupported command {args[0]}")
    state = load()
    state.setdefault("calls", []).append(args[:2])
    code = handler(state, ns, args[1:])
    save(state)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
