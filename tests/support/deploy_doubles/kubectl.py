"""A stateful kubectl test double: enough of kubectl for the `kubernetes` deploy target.

Installed first on PATH as `kubectl` (a two-line shell wrapper) by the tests. State lives in
the JSON file named by KUBECTL_DOUBLE_STATE, or else by the kubeconfig (KUBECONFIG) whose
cluster `server` is `file://<state file>`: several working copies that hold only that
kubeconfig talk to one "cluster". Every command runs under an flock of the state, like
requests to one API server. `kustomize` is delegated to the real kubectl (KUBECTL_DOUBLE_REAL).
A Deployment with replicas > 0 "runs" as a fake_server.py process started on `rollout status`
with its MLSHIP_MODEL_URI (faults ride on that URI, or on the image: `image_faults` in the
state stands for an image that was built broken); `port-forward` prints kubectl's
"Forwarding from" line for that process's port, after mapping a Service port to the pod's
targetPort and checking the container declares it.

With a node (kubelet.py, recorded in the state as `node`), the pods are the node's: it starts
them apart from any kubectl, so they outlive the client (and the container) that created them,
as a cluster's do; `rollout status` waits for the node's readiness report, and `port-forward`
forwards a local port to the pod's address for real.

Like the API server, every write bumps `metadata.resourceVersion`; `replace` (and `apply`)
of an object that carries a stale resourceVersion fails with 409 Conflict, `create` of an
existing object with 409 AlreadyExists.

Stricter than a file of objects, as kubectl and the API server are: `apply` is client-side
apply (the last-applied-configuration three-way merge keeps what `patch`/`scale` set);
namespaces must exist to create in (`create namespace NAME`); an object's metadata.namespace
must match --namespace; with state["rbac"] (harness.set_role) every request is authorized
against a Role and refused with the API server's 403 text; pods are derived from each
Deployment and what the cluster does with its image (harness.set_image_behaviour: pull
failure, unschedulable, slow readiness; image_faults: crash), with imagePullSecrets checked
against state["secrets"] (harness.add_secret).

Two clusters: two state files, each named by its own kubeconfig (harness.write_kubeconfig);
a process that holds one kubeconfig sees only that cluster.

Implements: apply -f FILE|-, create -f - [-o json], create namespace NAME, replace -f - [-o json],
delete KIND NAME, get KIND NAME -o json (deployments, services, configmaps, leases, namespaces),
get pods -l SELECTOR -o json, get events [--field-selector involvedObject.name=POD] -o json,
logs POD [-c C] [--previous] [--tail=N], patch KIND NAME --type merge -p JSON, scale
deployment/NAME --replicas=N, rollout status deployment/NAME --timeout=Ns, port-forward
service/NAME|deployment/NAME :PORT, kustomize DIR, version.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
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
    "configmap": "ConfigMap",
    "configmaps": "ConfigMap",
    "cm": "ConfigMap",
    "lease": "Lease",
    "leases": "Lease",
    "pod": "Pod",
    "pods": "Pod",
    "po": "Pod",
    "event": "Event",
    "events": "Event",
    "ev": "Event",
}
RESOURCES = {
    "Deployment": "deployments.apps",
    "Service": "services",
    "ConfigMap": "configmaps",
    "Lease": "leases.coordination.k8s.io",
    "PodDisruptionBudget": "poddisruptionbudgets.policy",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers.autoscaling",
    "NetworkPolicy": "networkpolicies.networking.k8s.io",
    "Pod": "pods",
    "Event": "events",
}


def group_resource(kind: str) -> tuple[str, str]:
    """(API group, plural resource) of a kind, as RBAC rules name them."""
    full = RESOURCES.get(kind, kind.lower() + "s")
    plural, _, group = full.partition(".")
    return group, plural


def authorize(state: dict[str, Any], ns: str, verb: str, kind: str, name: str = "", sub: str = "") -> int | None:
    """RBAC, when the cluster has a Role for the caller (state["rbac"]: user and rules); None: allowed.

    A request is allowed when one rule lists its API group, its resource (`pods/log`,
    `deployments/scale` for subresources) and its verb, `*` matching any
    (kubernetes.io/docs/reference/access-authn-authz/rbac/#referring-to-resources). A refusal is
    the API server's 403 as kubectl prints it. Allowed requests are logged beside the state
    (`.authz`) so a test can compare what the code used with what the Role grants.
    """
    group, plural = group_resource(kind)
    resource = f"{plural}/{sub}" if sub else plural
    rbac = state.get("rbac")
    with state_path().with_suffix(".authz").open("a") as log:
        log.write(f"{verb} {group}/{resource}\n")
    if not rbac:
        return None
    rules = rbac.get("rules", []) if rbac.get("namespace") in (None, ns) else []  # a Role binds one namespace
    for rule in rules:
        if (
            (group in rule.get("apiGroups", []) or "*" in rule.get("apiGroups", []))
            and (resource in rule.get("resources", []) or "*" in rule.get("resources", []))
            and (verb in rule.get("verbs", []) or "*" in rule.get("verbs", []))
        ):
            return None
    what = (
        f'{RESOURCES.get(kind, plural)} "{name}" is forbidden'
        if name
        else f"{RESOURCES.get(kind, plural)} is forbidden"
    )
    return fail(
        f'Error from server (Forbidden): {what}: User "{rbac["user"]}" cannot {verb} resource "{resource}" '
        f'in API group "{group}" in the namespace "{ns}"'
    )


def state_path() -> Path:
    explicit = os.environ.get("KUBECTL_DOUBLE_STATE")
    if explicit:
        return Path(explicit)
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig or not Path(kubeconfig).is_file():
        raise SystemExit(fail("error: no configuration has been provided, try setting KUBECONFIG"))
    config = yaml.safe_load(Path(kubeconfig).read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])["context"]
    cluster = next(c for c in config["clusters"] if c["name"] == context["cluster"])["cluster"]
    return Path(str(cluster["server"]).removeprefix("file://"))


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """One request at a time, like an API server's storage."""
    path = state_path().with_suffix(".lock")
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


BUILTIN_NAMESPACES = ["default", "kube-node-lease", "kube-public", "kube-system"]
"""What a new cluster has (kubernetes.io/docs/concepts/overview/working-with-objects/namespaces/#initial-namespaces)."""


def load() -> dict[str, Any]:
    p = state_path()
    state = dict(json.loads(p.read_text())) if p.is_file() else {}
    for k, v in {"objects": {}, "servers": {}, "calls": [], "rv": 0, "image_faults": {}}.items():
        state.setdefault(k, v)
    state.setdefault("namespaces", list(BUILTIN_NAMESPACES))
    return state


def namespace_missing(state: dict[str, Any], ns: str, verb: str) -> int | None:
    """The NamespaceLifecycle admission plugin refuses to create objects in a namespace that does not exist.

    kubernetes.io/docs/reference/access-authn-authz/admission-controllers/#namespacelifecycle; the
    text is kubectl's for a failed create from stdin: `Error from server (NotFound): error when
    creating "STDIN": namespaces "x" not found`. Reads (GET) are not refused: they find no object.
    """
    if ns in state["namespaces"]:
        return None
    return fail(f'Error from server (NotFound): error when {verb} "STDIN": namespaces "{ns}" not found')


def namespace_mismatch(obj: dict[str, Any], ns: str) -> int | None:
    """kubectl refuses an object whose metadata.namespace differs from --namespace (kubectl/pkg/cmd/apply)."""
    declared = obj.get("metadata", {}).get("namespace")
    if declared and declared != ns:
        return fail(
            f'error: the namespace from the provided object "{declared}" does not match the namespace "{ns}". '
            f"You must pass '--namespace={declared}' to perform this operation."
        )
    return None


def save(state: dict[str, Any]) -> None:
    write_text(state_path(), json.dumps(state, indent=1))


def key(kind: str, ns: str, name: str) -> str:
    return f"{kind}/{ns}/{name}"


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


PID_NAMESPACE = _pid_namespace()
"""Where this kubectl runs. A pod started from another pid namespace (the same state file mounted
into another container, as the replay tier does) is gone with that container: its pid here names
nothing of ours, or some other process."""


def pod_running(server: dict[str, Any]) -> bool:
    """The pod's process runs: the node's says so (kubelet.py), or it was started in this pid namespace and is alive."""
    if server.get("node"):
        return "exited" not in server
    return str(server.get("pidns", PID_NAMESPACE)) == PID_NAMESPACE and alive(int(server["pid"]))


def on_node(state: dict[str, Any]) -> bool:
    """A node runs this cluster's pods (kubelet.py): kubectl only records what it wants and watches."""
    return bool(state.get("node"))


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
    if server and not server.get("node") and pod_running(server):  # the node ends its own pods
        with contextlib.suppress(ProcessLookupError):
            os.kill(server["pid"], signal.SIGKILL)


def model_uri(state: dict[str, Any], obj: dict[str, Any]) -> str:
    """What the pod serves: the model its image was built with, plus the image's fault if it has one."""
    container = obj["spec"]["template"]["spec"]["containers"][0]
    uri = next((str(e.get("value", "")) for e in container.get("env", []) if e.get("name") == "MLSHIP_MODEL_URI"), "")
    fault = state.get("image_faults", {}).get(container.get("image", ""))
    return f"{uri}?fault={fault}" if fault and "?fault=" not in uri else uri


def store(state: dict[str, Any], k: str, obj: dict[str, Any]) -> dict[str, Any]:
    """Persist an object with the next resourceVersion, as the API server does on every write."""
    state["rv"] = int(state.get("rv", 0)) + 1
    obj = {**obj, "metadata": {**obj.get("metadata", {}), "resourceVersion": str(state["rv"])}}
    obj.pop("status", None)
    state["objects"][k] = obj
    return obj


def conflict(obj: dict[str, Any], verb: str) -> int:
    resource = RESOURCES.get(obj["kind"], obj["kind"].lower() + "s")
    return fail(
        f'Error from server (Conflict): error when {verb} "STDIN": Operation cannot be fulfilled on '
        f'{resource} "{obj["metadata"]["name"]}": the object has been modified; please apply your '
        "changes to the latest version and try again"
    )


def read_objects(args: list[str]) -> list[dict[str, Any]]:
    source = args[args.index("-f") + 1]
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    items: list[dict[str, Any]] = []
    for d in (d for d in yaml.safe_load_all(text) if d):
        items += d["items"] if d.get("kind") == "List" else [d]
    return items


def wants_json(args: list[str]) -> bool:
    return "-o" in args and args[args.index("-o") + 1] == "json"


def template_hash(obj: dict[str, Any]) -> str:
    return json.dumps(obj["spec"]["template"], sort_keys=True)


def with_status(state: dict[str, Any], k: str, obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] != "Deployment":
        return obj
    server = state["servers"].get(k)
    replicas = int(obj["spec"].get("replicas", 1))
    up = bool(server and pod_running(server) and server["hash"] == template_hash(obj) and replicas > 0)
    if server and server.get("node"):  # available: the node's readiness probe passes
        up = up and bool(server.get("ready"))
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


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
MERGE_KEYS = {
    "containers": "name",
    "env": "name",
    "ports": "containerPort",
    "volumes": "name",
    "volumeMounts": "mountPath",
}
"""Strategic-merge list keys of the fields the manifests use (the API reference's `patchMergeKey`)."""


def three_way(original: Any, modified: Any, live: Any, field: str = "") -> Any:
    """Client-side apply (kubernetes.io/docs/tasks/manage-kubernetes-objects/declarative-config/
    #how-apply-calculates-differences-and-merges-changes): a field in the new configuration is set;
    a field in the last-applied configuration but not in the new one is deleted; a field set by
    another writer (kubectl patch, set env, scale), in neither configuration, is kept. Lists of
    the fields in MERGE_KEYS merge element by element on their key; other lists are replaced."""
    if isinstance(modified, dict):
        orig = original if isinstance(original, dict) else {}
        out = dict(live) if isinstance(live, dict) else {}
        for k in orig:
            if k not in modified:
                out.pop(k, None)
        for k, v in modified.items():
            out[k] = three_way(orig.get(k), v, out.get(k), k)
        return out
    if isinstance(modified, list) and field in MERGE_KEYS and isinstance(live, list):
        mk = MERGE_KEYS[field]
        orig_items = {str(i.get(mk)): i for i in (original or []) if isinstance(i, dict)}
        live_items = {str(i.get(mk)): i for i in live if isinstance(i, dict)}
        wanted = [str(i.get(mk)) for i in modified]
        merged = [three_way(orig_items.get(str(i.get(mk))), i, live_items.get(str(i.get(mk)))) for i in modified]
        kept = [i for k, i in live_items.items() if k not in wanted and k not in orig_items]
        return merged + kept
    return modified


def cmd_apply(state: dict[str, Any], ns: str, args: list[str]) -> int:
    for obj in read_objects(args):
        kind, name = obj["kind"], obj["metadata"]["name"]
        refused = namespace_mismatch(obj, ns)
        if refused is not None:
            return refused
        k = key(kind, ns, name)
        old = state["objects"].get(k)
        denied = authorize(state, ns, "get", kind, name) or authorize(
            state, ns, "patch" if old is not None else "create", kind, name
        )
        if denied is not None:
            return denied
        if old is None:
            missing = namespace_missing(state, ns, "creating")
            if missing is not None:
                return missing
        sent = obj.get("metadata", {}).get("resourceVersion")
        if sent and (old is None or old["metadata"].get("resourceVersion") != sent):
            return conflict(obj, "applying patch")
        config = json.loads(json.dumps(obj))
        config["metadata"].setdefault("annotations", {}).pop(LAST_APPLIED, None)
        if not config["metadata"]["annotations"]:
            del config["metadata"]["annotations"]
        config["metadata"].pop("resourceVersion", None)
        if old is None:
            new = json.loads(json.dumps(config))
        else:
            raw = old.get("metadata", {}).get("annotations", {}).get(LAST_APPLIED)
            original = json.loads(raw) if raw else {}
            new = three_way(original, config, {k2: v for k2, v in old.items() if k2 != "status"})
            new["metadata"]["resourceVersion"] = old["metadata"].get("resourceVersion")
        new["metadata"].setdefault("annotations", {})[LAST_APPLIED] = json.dumps(config, sort_keys=True)
        new["metadata"]["namespace"] = ns
        if old is not None and new == old:
            print(f"{kind.lower()}/{name} unchanged")
            continue
        if kind == "Deployment" and old is not None and template_hash(old) != template_hash(new):
            stop_server(state, k)
        store(state, k, new)
        print(f"{kind.lower()}/{name} {'configured' if old else 'created'}")
    return 0


def cmd_create(state: dict[str, Any], ns: str, args: list[str]) -> int:
    if args and args[0] in ("namespace", "ns"):
        return create_namespace(state, args[1])
    for obj in read_objects(args):
        kind, name = obj["kind"], obj["metadata"]["name"]
        refused = (
            namespace_mismatch(obj, ns)
            or authorize(state, ns, "create", kind, name)
            or namespace_missing(state, ns, "creating")
        )
        if refused is not None:
            return refused
        k = key(kind, ns, name)
        if k in state["objects"]:
            resource = RESOURCES.get(kind, kind.lower() + "s")
            return fail(
                f'Error from server (AlreadyExists): error when creating "STDIN": {resource} "{name}" already exists'
            )
        if obj.get("metadata", {}).get("resourceVersion"):
            return fail("error: resourceVersion should not be set on objects to be created")
        saved = store(state, k, obj)
        print(json.dumps(saved) if wants_json(args) else f"{kind.lower()}/{name} created")
    return 0


def create_namespace(state: dict[str, Any], name: str) -> int:
    """`kubectl create namespace NAME` (a cluster-scoped object)."""
    if name in state["namespaces"]:
        return fail(f'Error from server (AlreadyExists): namespaces "{name}" already exists')
    state["namespaces"].append(name)
    print(f"namespace/{name} created")
    return 0


def cmd_replace(state: dict[str, Any], ns: str, args: list[str]) -> int:
    for obj in read_objects(args):
        kind, name = obj["kind"], obj["metadata"]["name"]
        refused = namespace_mismatch(obj, ns) or authorize(state, ns, "update", kind, name)
        if refused is not None:
            return refused
        k = key(kind, ns, name)
        old = state["objects"].get(k)
        if old is None:
            why = f'{RESOURCES.get(kind, kind)} "{name}" not found'
            return fail(f'Error from server (NotFound): error when replacing "STDIN": {why}')
        sent = obj.get("metadata", {}).get("resourceVersion")
        if sent and sent != old["metadata"].get("resourceVersion"):
            return conflict(obj, "replacing")
        if kind == "Deployment" and template_hash(old) != template_hash(obj):
            stop_server(state, k)
        saved = store(state, k, obj)
        print(json.dumps(saved) if wants_json(args) else f"{kind.lower()}/{name} replaced")
    return 0


def cmd_delete(state: dict[str, Any], ns: str, args: list[str]) -> int:
    kind, name = resolve(args)
    denied = authorize(state, ns, "delete", kind, name)
    if denied is not None:
        return denied
    k = key(kind, ns, name)
    if k not in state["objects"]:
        return not_found(kind, name)
    stop_server(state, k)
    del state["objects"][k]
    print(f'{kind.lower()} "{name}" deleted')
    return 0


def resolve(args: list[str]) -> tuple[str, str]:
    if "/" in args[0]:
        kind, name = args[0].split("/", 1)
        return KINDS.get(kind, kind), name
    return KINDS.get(args[0], args[0]), args[1]


def not_found(kind: str, name: str) -> int:
    return fail(f'Error from server (NotFound): {RESOURCES.get(kind, kind.lower() + "s")} "{name}" not found')


def cmd_get(state: dict[str, Any], ns: str, args: list[str]) -> int:
    if args[0] in ("namespace", "namespaces", "ns"):
        if args[1] not in state["namespaces"]:
            return fail(f'Error from server (NotFound): namespaces "{args[1]}" not found')
        print(json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": args[1]}}))
        return 0
    if KINDS.get(args[0]) in ("Pod", "Event") and (len(args) < 2 or args[1].startswith("-")):
        return list_pods_or_events(state, ns, KINDS[args[0]], args)
    kind, name = resolve(args)
    denied = authorize(state, ns, "get", kind, name)
    if denied is not None:
        return denied
    k = key(kind, ns, name)
    if k not in state["objects"]:
        return not_found(kind, name)
    print(json.dumps(with_status(state, k, state["objects"][k])))
    return 0


# Pods -------------------------------------------------------------------------------------
# A Deployment's pods are derived from it and from what the cluster does with its image:
# state["images"][IMAGE] = {"pull": why a pull fails, "unschedulable": the scheduler's message,
# "ready_after_s": how long the server takes to be ready}; state["secrets"] = ["ns/name", ...].
# Their status and events use the kubelet's and scheduler's reasons and texts
# (kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#container-state-waiting,
# kubernetes.io/docs/concepts/containers/images/#imagepullbackoff, the kubelet's
# FailedToRetrieveImagePullSecret event, the scheduler's FailedScheduling event).


def pod_container(deployment: dict[str, Any]) -> dict[str, Any]:
    return dict(deployment["spec"]["template"]["spec"]["containers"][0])


def blocked(state: dict[str, Any], ns: str, deployment: dict[str, Any]) -> dict[str, Any] | None:
    """Why the pods cannot run at all (never scheduled, image never pulled); None if they can start."""
    image = str(pod_container(deployment).get("image", ""))
    behaviour = state.get("images", {}).get(image, {})
    if behaviour.get("unschedulable"):
        return {"unschedulable": str(behaviour["unschedulable"])}
    wanted = [str(s.get("name")) for s in deployment["spec"]["template"]["spec"].get("imagePullSecrets", [])]
    missing = [name for name in wanted if f"{ns}/{name}" not in state.get("secrets", [])]
    if missing:  # an image that needs a pull secret is private: without it the pull is unauthorized
        why = "failed to authorize: failed to fetch anonymous token: unexpected status: 401 Unauthorized"
        return {"pull": why, "missing_secrets": missing}
    if behaviour.get("pull"):
        return {"pull": str(behaviour["pull"])}
    return None


def pod_name(deployment: dict[str, Any], i: int) -> str:
    import hashlib

    digest = hashlib.sha256(template_hash(deployment).encode()).hexdigest()
    return f"{deployment['metadata']['name']}-{digest[:10]}-{i}"


def server_ready(state: dict[str, Any], k: str, deployment: dict[str, Any]) -> bool:
    server = state["servers"].get(k)
    if not (server and server.get("port") and pod_running(server) and server["hash"] == template_hash(deployment)):
        return False
    if server.get("node"):  # the node probes it
        return bool(server.get("ready"))
    image = str(pod_container(deployment).get("image", ""))
    delay = float(state.get("images", {}).get(image, {}).get("ready_after_s", 0))
    if time.time() < float(server.get("started", 0)) + delay:
        return False
    with (
        contextlib.suppress(OSError),
        urllib.request.urlopen(f"http://127.0.0.1:{server['port']}/ready", timeout=1) as r,
    ):
        return bool(r.status == 200)
    return False


def pod_of(state: dict[str, Any], ns: str, k: str, deployment: dict[str, Any], i: int) -> dict[str, Any]:
    container = pod_container(deployment)
    image = str(container.get("image", ""))
    name = pod_name(deployment, i)
    scheduled = {"type": "PodScheduled", "status": "True"}
    status: dict[str, Any]
    why = blocked(state, ns, deployment)
    server = state["servers"].get(k)
    cs: dict[str, Any] = {"name": container["name"], "image": image, "ready": False, "restartCount": 0}
    if why and "unschedulable" in why:
        cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": why["unschedulable"]}
        status = {"phase": "Pending", "conditions": [cond]}
    elif why:
        waiting = {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}
        status = {
            "phase": "Pending",
            "conditions": [scheduled],
            "containerStatuses": [{**cs, "state": {"waiting": waiting}}],
        }
    elif server is None or server["hash"] != template_hash(deployment):
        waiting = {"reason": "ContainerCreating"}
        status = {
            "phase": "Pending",
            "conditions": [scheduled],
            "containerStatuses": [{**cs, "state": {"waiting": waiting}}],
        }
    elif not pod_running(server):
        waiting = {
            "reason": "CrashLoopBackOff",
            "message": f"back-off 40s restarting failed container={container['name']} pod={name}",
        }
        crashed = {**cs, "restartCount": 3, "state": {"waiting": waiting}, "lastState": {"terminated": {"exitCode": 3}}}
        status = {"phase": "Running", "conditions": [scheduled], "containerStatuses": [crashed]}
    else:
        ready = server_ready(state, k, deployment)
        running = {**cs, "ready": ready, "state": {"running": {"startedAt": "now"}}}
        status = {"phase": "Running", "conditions": [scheduled], "containerStatuses": [running]}
    labels = dict(deployment["spec"]["template"]["metadata"].get("labels", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "status": status,
    }


def pods(state: dict[str, Any], ns: str) -> list[tuple[str, dict[str, Any]]]:
    """(deployment key, pod) of every pod in the namespace."""
    out = []
    for k, d in state["objects"].items():
        if d["kind"] == "Deployment" and k.split("/")[1] == ns:
            out += [(k, pod_of(state, ns, k, d, i)) for i in range(int(d["spec"].get("replicas", 1)))]
    return out


def events_of(state: dict[str, Any], ns: str, k: str, pod: dict[str, Any]) -> list[dict[str, Any]]:
    deployment = state["objects"][k]
    why = blocked(state, ns, deployment) or {}
    image = str(pod_container(deployment).get("image", ""))
    name = pod["metadata"]["name"]
    found: list[tuple[str, str, str]] = []
    if "unschedulable" in why:
        found.append(("Warning", "FailedScheduling", why["unschedulable"]))
    if why.get("missing_secrets"):
        secrets = ", ".join(why["missing_secrets"])
        found.append(
            (
                "Warning",
                "FailedToRetrieveImagePullSecret",
                f"Unable to retrieve some image pull secrets ({secrets}); "
                "attempting to pull the image may not succeed.",
            )
        )
    if "pull" in why:
        found.append(("Normal", "Pulling", f'Pulling image "{image}"'))
        found.append(("Warning", "Failed", f'Failed to pull image "{image}": {why["pull"]}'))
        found.append(("Warning", "Failed", "Error: ErrImagePull"))
        found.append(("Normal", "BackOff", f'Back-off pulling image "{image}"'))
    if pod["status"].get("containerStatuses", [{}])[0].get("restartCount"):
        found.append(("Warning", "BackOff", f"Back-off restarting failed container server in pod {name}"))
    return [
        {
            "kind": "Event",
            "type": t,
            "reason": r,
            "message": m,
            "involvedObject": {"kind": "Pod", "name": name, "namespace": ns},
            "lastTimestamp": f"2026-01-01T00:00:{i:02d}Z",
        }
        for i, (t, r, m) in enumerate(found)
    ]


def list_pods_or_events(state: dict[str, Any], ns: str, kind: str, args: list[str]) -> int:
    """`get pods -l K=V,… -o json`, `get events --field-selector involvedObject.name=POD -o json`."""
    denied = authorize(state, ns, "list", kind)
    if denied is not None:
        return denied
    selector = dict(kv.split("=", 1) for kv in args[args.index("-l") + 1].split(",")) if "-l" in args else {}
    field = args[args.index("--field-selector") + 1] if "--field-selector" in args else ""
    items: list[dict[str, Any]] = []
    for k, pod in pods(state, ns):
        if kind == "Pod" and all(pod["metadata"]["labels"].get(a) == b for a, b in selector.items()):
            items.append(pod)
        elif kind == "Event" and field in ("", f"involvedObject.name={pod['metadata']['name']}"):
            items += events_of(state, ns, k, pod)
    print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    return 0


def cmd_logs(state: dict[str, Any], ns: str, args: list[str]) -> int:
    """`logs POD [-c C] [--previous] [--tail=N]`: the pod's server log (its stderr)."""
    name = args[0]
    denied = authorize(state, ns, "get", "Pod", name) or authorize(state, ns, "get", "Pod", name, "log")
    if denied is not None:
        return denied
    found = next(((k, p) for k, p in pods(state, ns) if p["metadata"]["name"] == name), None)
    if found is None:
        return fail(f'Error from server (NotFound): pods "{name}" not found')
    k, pod = found
    restarts = pod["status"].get("containerStatuses", [{}])[0].get("restartCount", 0)
    if "--previous" in args and not restarts:
        return fail(f'Error from server (BadRequest): previous terminated container "server" in pod "{name}" not found')
    tail = int(next((a.split("=", 1)[1] for a in args if a.startswith("--tail=")), "-1"))
    log = state_path().with_name(f"{k.split('/')[2]}.log")
    lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    print("\n".join(lines[-tail:] if tail >= 0 else lines))
    return 0


def cmd_patch(state: dict[str, Any], ns: str, args: list[str]) -> int:
    """kubectl patch reads the object (to say "patched (no change)") and sends a PATCH."""
    kind, name = resolve(args)
    denied = authorize(state, ns, "get", kind, name) or authorize(state, ns, "patch", kind, name)
    if denied is not None:
        return denied
    k = key(kind, ns, name)
    if k not in state["objects"]:
        return not_found(kind, name)
    store(state, k, merge(state["objects"][k], json.loads(args[args.index("-p") + 1])))
    print(f"{kind.lower()}/{name} patched")
    return 0


def cmd_scale(state: dict[str, Any], ns: str, args: list[str]) -> int:
    """kubectl scale reads the object, then PATCHes its scale subresource (kubectl/pkg/scale: ScaleSimple)."""
    kind, name = resolve(args)
    denied = authorize(state, ns, "get", kind, name) or authorize(state, ns, "patch", kind, name, "scale")
    if denied is not None:
        return denied
    k = key(kind, ns, name)
    if k not in state["objects"]:
        return not_found(kind, name)
    replicas = int(next(a for a in args if a.startswith("--replicas=")).split("=", 1)[1])
    state["objects"][k]["spec"]["replicas"] = replicas
    store(state, k, state["objects"][k])
    if replicas == 0:
        stop_server(state, k)
    print(f"{kind.lower()}/{name} scaled")
    return 0


def cmd_rollout(state: dict[str, Any], ns: str, args: list[str]) -> int | dict[str, Any]:
    """Start the Deployment's "pod" (under the state lock); the wait for /ready runs after it."""
    kind, name = resolve(args[1:])
    denied = (
        authorize(state, ns, "get", kind, name)
        or authorize(state, ns, "list", kind)
        or authorize(state, ns, "watch", kind)
    )
    if denied is not None:
        return denied
    k = key(kind, ns, name)
    obj = state["objects"].get(k)
    if obj is None:
        return not_found(kind, name)
    if int(obj["spec"].get("replicas", 1)) == 0:
        print(f'deployment "{name}" successfully rolled out')
        return 0
    if blocked(state, ns, obj) is not None:  # never scheduled or never pulled: nothing starts
        stop_server(state, k)
        return {"name": name, "key": k, "blocked": True}
    if on_node(state):  # the node starts it (kubelet.py); the wait is for its report
        return {"name": name, "key": k, "node": True, "hash": template_hash(obj)}
    server = state["servers"].get(k)
    if not (server and pod_running(server) and server["hash"] == template_hash(obj)):
        stop_server(state, k)
        log = state_path().with_name(f"{name}.log").open("ab")
        color = obj["metadata"].get("labels", {}).get("mlship.dev/color", "blue")
        proc = subprocess.Popen(
            [
                sys.executable,
                str(FAKE_SERVER),
                "--model",
                model_uri(state, obj),
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
            env=pod_env(state),
        )
        server = {"pid": proc.pid, "port": 0, "hash": template_hash(obj), "starting": True, "started": time.time()}
        server["pidns"] = PID_NAMESPACE
        state["servers"][k] = server
        return {"name": name, "key": k, "proc": proc, "ready_after_s": ready_after(state, obj)}
    return {"name": name, "key": k, "server": server, "ready_after_s": ready_after(state, obj)}


def pod_env(state: dict[str, Any]) -> dict[str, str]:
    """The pod's environment: kubectl's, plus the JSON file state["pod_env_file"] names (harness.set_pod_env_file).

    A real pod serves the model baked into its image; the fake one loads `models:/…` from the
    tracking server, so it needs what reaching that server takes, which kubectl is never given
    (mlship hands kubectl its own credentials only). The file keeps those out of the state."""
    extra = state.get("pod_env_file")
    return {**os.environ, **(json.loads(Path(extra).read_text()) if extra else {})}


def ready_after(state: dict[str, Any], deployment: dict[str, Any]) -> float:
    return float(state.get("images", {}).get(str(pod_container(deployment).get("image")), {}).get("ready_after_s", 0))


def wait_rollout(started: dict[str, Any], args: list[str]) -> int:
    """`rollout status --timeout`: the pod must announce its port and answer /ready in time."""
    name = started["name"]
    timeout = float(next((a for a in args if a.startswith("--timeout=")), "--timeout=60s").split("=")[1].rstrip("s"))
    deadline = time.monotonic() + timeout
    if started.get("blocked"):  # the pods stay Pending: kubectl waits out its timeout
        while time.monotonic() < deadline:
            time.sleep(0.1)
        return fail(f"error: timed out waiting for the condition on deployments/{name}")
    if started.get("node"):
        return wait_node_rollout(started, deadline)
    not_before = time.monotonic() + float(started.get("ready_after_s", 0))
    server = started.get("server")
    proc = started.get("proc")
    if proc is not None:
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        buffer = b""
        while b"\n" not in buffer:
            buffer += proc.stdout.read() or b""
            if proc.poll() is not None and b"\n" not in buffer:
                return fail(f'error: deployment "{name}" exceeded its progress deadline (CrashLoopBackOff)')
            if time.monotonic() > deadline:
                return fail(f"error: timed out waiting for the condition on deployments/{name}")
            time.sleep(0.05)
        line = buffer.decode().splitlines()[0]
        if not line.startswith("PORT "):
            return fail(f'error: deployment "{name}" exceeded its progress deadline (CrashLoopBackOff)')
        with locked():
            state = load()
            server = state["servers"].get(started["key"])
            if server is None or server["pid"] != proc.pid:
                return fail(f'error: deployment "{name}" was changed during the rollout')
            server["port"] = int(line.split()[1])
            server.pop("starting", None)
            save(state)
    assert server is not None
    while time.monotonic() < deadline:
        if not pod_running(server):
            return fail(f'error: deployment "{name}" exceeded its progress deadline (CrashLoopBackOff)')
        url = f"http://127.0.0.1:{server['port']}/ready"
        if time.monotonic() < not_before:  # a slow model load: the readiness probe fails until it is done
            time.sleep(0.1)
            continue
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as r:
            if r.status == 200:
                print(f'deployment "{name}" successfully rolled out')
                return 0
        time.sleep(0.1)
    return fail(f"error: timed out waiting for the condition on deployments/{name}")


def wait_node_rollout(started: dict[str, Any], deadline: float) -> int:
    """`rollout status` of a cluster whose node runs the pods: wait for the node to report the pod ready."""
    name, k = started["name"], started["key"]
    while time.monotonic() < deadline:
        state = load()  # every write is an atomic rename: a read needs no lock
        obj = state["objects"].get(k)
        if obj is None or template_hash(obj) != started["hash"]:
            return fail(f'error: deployment "{name}" was changed during the rollout')
        server = state["servers"].get(k)
        if server and server.get("hash") == started["hash"]:
            if "exited" in server:
                return fail(f'error: deployment "{name}" exceeded its progress deadline (CrashLoopBackOff)')
            if server.get("ready"):
                print(f'deployment "{name}" successfully rolled out')
                return 0
        time.sleep(0.1)
    return fail(f"error: timed out waiting for the condition on deployments/{name}")


def forward(server: dict[str, Any], port: int) -> int:
    """kubectl's port-forward for a pod on a node: a local port whose connections reach the pod."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    target = (str(server["address"]), int(server["port"]))

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            with contextlib.suppress(OSError):
                while chunk := src.recv(65536):
                    dst.sendall(chunk)
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(target, timeout=10)
            except OSError as exc:  # kubectl logs the failed connection and keeps forwarding
                print(f"E1207 portforward.go: an error occurred forwarding {port}: {exc}", file=sys.stderr, flush=True)
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    print(f"Forwarding from 127.0.0.1:{listener.getsockname()[1]} -> {port}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    listener.close()
    return 0


def container_port(deployment: dict[str, Any], port: str) -> int | None:
    """A numeric or named port the pod's container declares, as a number (None: not declared)."""
    for p in deployment["spec"]["template"]["spec"]["containers"][0].get("ports", []):
        if str(p.get("containerPort")) == port or p.get("name") == port:
            return int(p["containerPort"])
    return None


def cmd_port_forward(state: dict[str, Any], ns: str, args: list[str]) -> int:
    """kubectl port-forward gets the Service/Deployment, lists its pods, gets one, POSTs pods/portforward."""
    kind, name = resolve(args)
    denied = (
        authorize(state, ns, "get", kind, name)
        or authorize(state, ns, "list", "Pod")
        or authorize(state, ns, "get", "Pod")
        or authorize(state, ns, "create", "Pod", sub="portforward")
    )
    if denied is not None:
        return denied
    k = key(kind, ns, name)
    obj = state["objects"].get(k)
    if obj is None:
        return not_found(kind, name)
    remote = next(a for a in args[1:] if a.startswith(":") or a[0].isdigit()).split(":")[-1]
    targets = [k]
    if kind == "Service":
        selector = obj["spec"].get("selector", {})
        # kubectl maps a Service port to its targetPort (which may name a container port).
        remote = next(
            (str(p.get("targetPort", p["port"])) for p in obj["spec"]["ports"] if str(p["port"]) == remote), remote
        )
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
        if server and server.get("port") and pod_running(server) and int(d["spec"].get("replicas", 1)) > 0:
            port = container_port(d, remote)
            if port is None:
                return fail(f"error: {tk.split('/')[2]} does not expose port {remote}")
            if server.get("node"):
                return forward(server, port)
            print(f"Forwarding from 127.0.0.1:{server['port']} -> {port}", flush=True)
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
        with locked():
            state = load()
        return cmd_port_forward(state, ns, args[1:])
    handlers = {
        "apply": cmd_apply,
        "create": cmd_create,
        "replace": cmd_replace,
        "delete": cmd_delete,
        "get": cmd_get,
        "patch": cmd_patch,
        "scale": cmd_scale,
        "rollout": cmd_rollout,
        "logs": cmd_logs,
    }
    handler = handlers.get(args[0])
    if handler is None:
        return fail(f"kubectl double: unsupported command {args[0]}")
    with locked():
        state = load()
        state.setdefault("calls", []).append(args[:2])
        outcome = handler(state, ns, args[1:])
        save(state)
    return outcome if isinstance(outcome, int) else wait_rollout(outcome, args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
