"""Release state in the cluster: a ConfigMap per app and environment, and a Lease as the deploy lock.

CI runners are new for every job, so the kubernetes target keeps what `.mlship/deploy/<env>/`
holds for the local target where every runner with a kubeconfig can read it:

- ConfigMap `<app>-release-<env>`: `state.json` (live color, the release on each color, the
  rollback window) and `history.json` (the last `deploy.history` releases). Every write is
  `kubectl replace` with the `resourceVersion` that was read, so a concurrent writer makes it
  fail with 409 Conflict instead of being overwritten: the store re-reads and retries a bounded
  number of times, and fails (exit 3) if the state itself changed under a deploy that holds the
  lock (its Lease was taken over).
- Lease `<app>-deploy-<env>` (coordination.k8s.io/v1): holderIdentity, leaseDurationSeconds,
  renewTime. The holder renews it every third of the duration; a Lease whose renewTime is older
  than its duration was left by a killed job and is taken over (leaseTransitions + 1).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from mlship.deploy.lock import LockHeld
from mlship.deploy.release import DeployState, Release
from mlship.errors import ConfigError, InfraError

RETRIES = 5
"""Conflicts (409) retried per write before giving up: each retry re-reads the object."""

LEASE_DURATION_S = 60
"""A killed deploy blocks the next one for at most this long; a live one renews every third of it."""

MANAGED = {"app.kubernetes.io/managed-by": "mlship"}


_FORBIDDEN = re.compile(
    r'User "(?P<user>[^"]*)" cannot (?P<verb>\S+) resource "(?P<resource>[^"]+)" in API group "(?P<group>[^"]*)"'
    r'(?: in the namespace "(?P<ns>[^"]*)")?'
)
_NO_NAMESPACE = re.compile(r'namespaces "(?P<ns>[^"]+)" not found')
RBAC_DIR = "deployment/k8s/rbac"


def kubectl_error(what: str, stderr: str) -> InfraError:
    """One line for a failed kubectl call (exit 3): a missing namespace and a missing permission say the fix.

    The API server's texts: a create in a namespace that does not exist is refused with
    `namespaces "x" not found` (NamespaceLifecycle admission); a request RBAC does not allow with
    `User "u" cannot VERB resource "R" in API group "G" in the namespace "N"` (403 Forbidden).
    """
    missing = _NO_NAMESPACE.search(stderr or "")
    if missing:
        ns = missing["ns"]
        return InfraError(
            f"namespace {ns} does not exist in the cluster ({what})",
            hint=f"a cluster admin creates it once: `kubectl create namespace {ns}`, then applies {RBAC_DIR}",
        )
    denied = _FORBIDDEN.search(stderr or "")
    if denied:
        group = denied["group"] or '"" (core)'
        where = f" in namespace {denied['ns']}" if denied["ns"] else ""
        return InfraError(
            f"{denied['user']} may not {denied['verb']} {denied['resource']} (API group {group}){where} ({what})",
            hint=f"grant `{denied['verb']}` on `{denied['resource']}` in the deploy Role ({RBAC_DIR}) and apply it",
        )
    return InfraError(f"{what} failed: {_first_line(stderr)}")


def forbidden(stderr: str) -> bool:
    """The API server refused the request (403): a permission, never a property of the release."""
    return "(Forbidden)" in (stderr or "") or bool(_NO_NAMESPACE.search(stderr or ""))


class Kubectl(Protocol):
    """`kubectl --namespace NS ARGS…` (KubernetesTarget._run)."""

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run kubectl; with check=False the caller reads returncode and stderr."""


class Conflict(Exception):
    """409 from the API server: the object changed since it was read (or already exists)."""


def now_rfc3339(clock: Callable[[], float] = time.time) -> str:
    """A Lease's MicroTime: RFC 3339 UTC with microseconds."""
    return dt.datetime.fromtimestamp(clock(), tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def ci_job() -> str:
    """The CI job this runs in, as a link when the CI says where (GitHub Actions, GitLab, Jenkins); "-" outside CI."""
    env = os.environ
    if env.get("GITHUB_RUN_ID"):
        if env.get("GITHUB_SERVER_URL") and env.get("GITHUB_REPOSITORY"):
            return f"{env['GITHUB_SERVER_URL']}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
        return f"github run {env['GITHUB_RUN_ID']}"
    if env.get("CI_JOB_ID"):
        return env.get("CI_JOB_URL") or f"gitlab job {env['CI_JOB_ID']}"
    if env.get("BUILD_ID"):
        return env.get("BUILD_URL") or f"build {env['BUILD_ID']}"
    return "-"


def holder_identity() -> str:
    """Who holds the lock, readable by a person: host, pid and the CI job when there is one."""
    job = next((os.environ[v] for v in ("GITHUB_RUN_ID", "CI_JOB_ID", "BUILD_ID") if os.environ.get(v)), None)
    parts = [socket.gethostname(), f"pid {os.getpid()}"] + ([f"job {job}"] if job else [])
    return f"{' '.join(parts)} ({uuid.uuid4().hex[:8]})"


class Objects:
    """get / create / replace of one namespaced object through kubectl, with 404 and 409 told apart."""

    def __init__(self, kubectl: Kubectl, kind: str, name: str) -> None:
        self.kubectl = kubectl
        self.kind = kind
        self.name = name

    def get(self) -> dict[str, Any] | None:
        done = self.kubectl("get", self.kind, self.name, "-o", "json", check=False)
        if done.returncode != 0:
            if "(NotFound)" in done.stderr or "not found" in done.stderr:
                return None
            raise kubectl_error(f"kubectl get {self.kind} {self.name}", done.stderr)
        return dict(json.loads(done.stdout))

    def write(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create (no resourceVersion) or replace (with it); Conflict on 409 AlreadyExists/Conflict."""
        verb = "replace" if obj.get("metadata", {}).get("resourceVersion") else "create"
        done = self.kubectl(verb, "-f", "-", "-o", "json", stdin=json.dumps(obj), check=False)
        if done.returncode != 0:
            if "(Conflict)" in done.stderr or "(AlreadyExists)" in done.stderr:
                raise Conflict(_first_line(done.stderr))
            raise kubectl_error(f"kubectl {verb} {self.kind} {self.name}", done.stderr)
        return dict(json.loads(done.stdout))


class LeaseLock:
    """The deploy lock as a coordination.k8s.io/v1 Lease, renewed while held, taken over once expired."""

    def __init__(
        self,
        kubectl: Kubectl,
        name: str,
        *,
        namespace: str,
        duration_s: int = LEASE_DURATION_S,
        identity: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lease = Objects(kubectl, "lease", name)
        self.name = name
        self.namespace = namespace
        self.duration_s = duration_s
        self.identity = identity or holder_identity()
        self.clock = clock
        self._held: dict[str, Any] | None = None
        """The Lease as this holder last wrote it: renew and release try its resourceVersion unread."""
        self.lost: str | None = None
        """Why the Lease is no longer ours (taken over after it expired), once renewal found out."""
        self._stop = threading.Event()

    def _spec(self, current: dict[str, Any] | None, *, renew_only: bool = False) -> dict[str, Any]:
        spec = dict((current or {}).get("spec") or {})
        stamp = now_rfc3339(self.clock)
        if not renew_only:
            taking_over = bool(spec.get("holderIdentity")) and spec.get("holderIdentity") != self.identity
            spec["leaseTransitions"] = int(spec.get("leaseTransitions", 0) or 0) + (1 if taking_over else 0)
            spec["acquireTime"] = stamp
        spec.update(holderIdentity=self.identity, leaseDurationSeconds=self.duration_s, renewTime=stamp)
        return spec

    def expires_at(self, obj: dict[str, Any]) -> float | None:
        """When a Lease stops holding: renewTime (or acquireTime) + leaseDurationSeconds; None if free."""
        spec = obj.get("spec") or {}
        if not spec.get("holderIdentity"):
            return None
        renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime")) or 0.0
        return renewed + float(spec.get("leaseDurationSeconds") or self.duration_s)

    def acquire(self) -> None:
        for _ in range(RETRIES):
            current = self.lease.get()
            if current is not None:
                until = self.expires_at(current)
                holder = current["spec"].get("holderIdentity")
                if until is not None and holder != self.identity and until > self.clock():
                    stamp = dt.datetime.fromtimestamp(until, tz=dt.UTC).strftime("%H:%M:%S UTC")
                    raise LockHeld(
                        f"another deploy ({holder}) holds lease {self.namespace}/{self.name} until {stamp}",
                        hint="wait for it to finish; a killed job's lease expires by itself at that time "
                        f"(or, if that job is surely gone: kubectl delete lease {self.name} -n {self.namespace})",
                    )
                obj = {**current, "spec": self._spec(current)}
            else:
                obj = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace, "labels": dict(MANAGED)},
                    "spec": self._spec(None),
                }
            try:
                self._held = self.lease.write(obj)
                return
            except Conflict:
                continue  # someone else created or took it in between: look again
        raise InfraError(
            f"could not take lease {self.namespace}/{self.name}: {RETRIES} conflicting writes",
            hint="another deploy is racing for it; retry",
        )

    def renew(self) -> bool:
        """Move renewTime forward; False (and `lost` set) when the Lease is no longer ours."""
        for attempt in range(RETRIES):
            current = self._held if attempt == 0 and self._held is not None else self.lease.get()
            holder = (current or {}).get("spec", {}).get("holderIdentity")
            if current is None or holder != self.identity:
                self.lost = f"lease {self.namespace}/{self.name} is now held by {holder or 'nobody'}"
                return False
            try:
                self._held = self.lease.write({**current, "spec": self._spec(current, renew_only=True)})
                return True
            except Conflict:
                self._held = None
                continue
        return True  # contended but still ours: the next renewal tries again, well before expiry

    def release(self) -> None:
        """Clear holderIdentity (a replace with resourceVersion: never frees a Lease someone else took)."""
        for attempt in range(RETRIES):
            current = self._held if attempt == 0 and self._held is not None else self.lease.get()
            if current is None or current.get("spec", {}).get("holderIdentity") != self.identity:
                return
            spec = {k: v for k, v in current["spec"].items() if k not in ("holderIdentity", "renewTime")}
            try:
                self.lease.write({**current, "spec": spec})
                self._held = None
                return
            except Conflict:
                self._held = None
                continue

    def _renew_loop(self) -> None:
        interval = max(1.0, self.duration_s / 3)
        while not self._stop.wait(interval):
            try:
                if not self.renew():
                    return
            except InfraError:
                continue  # a passing API error: the lease still has two thirds of its time

    @contextlib.contextmanager
    def hold(self) -> Iterator[LeaseLock]:
        self.acquire()
        self.lost = None
        self._stop.clear()
        renewer = threading.Thread(target=self._renew_loop, name=f"lease-{self.name}", daemon=True)
        renewer.start()
        try:
            yield self
        finally:
            self._stop.set()
            renewer.join(timeout=30)
            with contextlib.suppress(InfraError):
                self.release()


class ClusterStore:
    """ReleaseStore in a ConfigMap, locked by a Lease: what `deploy`/`status`/`rollback` read anywhere."""

    def __init__(
        self,
        kubectl: Kubectl,
        *,
        app: str,
        env: str,
        namespace: str,
        local_dir: Path,
        keep: int = 10,
        lease_duration_s: int = LEASE_DURATION_S,
    ) -> None:
        self.dir = local_dir
        self.env = env
        self.keep = keep
        self.namespace = namespace
        self.name = f"{app}-release-{env}"
        self.app = app
        self.configmap = Objects(kubectl, "configmap", self.name)
        self.lease = LeaseLock(kubectl, f"{app}-deploy-{env}", namespace=namespace, duration_s=lease_duration_s)
        self._seen_state: str | None = None
        """state.json as this process last read or wrote it: a conflict that changed it is not retried."""
        self._cached: dict[str, Any] | None = None
        """The ConfigMap as last read or written: the first write tries its resourceVersion unread."""

    # ReleaseStore --------------------------------------------------------------------------

    def lock(self) -> contextlib.AbstractContextManager[object]:
        return self.lease.hold()

    def load(self) -> DeployState:
        obj = self._cached = self.configmap.get()
        data = (obj or {}).get("data") or {}
        self._seen_state = data.get("state.json")
        raw = self._parse(data, "state.json", {})
        try:
            state = DeployState.from_dict(raw, env=self.env, target="kubernetes")
        except (AttributeError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"the release state in configmap {self.namespace}/{self.name} has the wrong shape: {exc}",
                hint=f"inspect it with `kubectl get configmap {self.name} -o yaml`; fix or delete its state.json",
            ) from None
        state.history = [Release.from_dict(r) for r in self._parse(data, "history.json", [])]
        return state

    def save(self, state: DeployState) -> None:
        text = json.dumps({**state.to_dict(), "target": "kubernetes"}, sort_keys=True)

        def change(data: dict[str, str]) -> dict[str, str]:
            if self._seen_state is not None and data.get("state.json") not in (self._seen_state, text):
                raise InfraError(
                    f"the release state in configmap {self.namespace}/{self.name} changed during this deploy",
                    hint=self.lease.lost or "another deploy wrote it without the lease; run `mlship status` and retry",
                )
            return {**data, "state.json": text}

        self._update(change)
        self._seen_state = text

    def record(self, release: Release) -> None:
        entry = release.with_(deployed_at=release.deployed_at or time.time()).to_dict()

        def change(data: dict[str, str]) -> dict[str, str]:
            history = self._parse(data, "history.json", [])
            history.append(entry)
            return {**data, "history.json": json.dumps(history[-self.keep :], sort_keys=True)}

        self._update(change)

    # ConfigMap -----------------------------------------------------------------------------

    def _update(self, change: Callable[[dict[str, str]], dict[str, str]]) -> None:
        """Read, change, replace with the read resourceVersion; on 409 read again (bounded)."""
        if self.lease.lost:
            raise InfraError(f"the deploy lock was lost: {self.lease.lost}", hint="run `mlship status` and retry")
        for attempt in range(RETRIES):
            current = self._cached if attempt == 0 and self._cached is not None else self.configmap.get()
            if current is None:
                current = {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {
                        "name": self.name,
                        "namespace": self.namespace,
                        "labels": {**MANAGED, "app.kubernetes.io/name": self.app, "mlship.dev/env": self.env},
                    },
                    "data": {},
                }
            data = {str(k): str(v) for k, v in (current.get("data") or {}).items()}
            try:
                self._cached = self.configmap.write({**current, "data": change(data)})
                return
            except Conflict:
                self._cached = None
                continue
        raise InfraError(
            f"configmap {self.namespace}/{self.name}: {RETRIES} conflicting writes in a row",
            hint="something else keeps writing it; check `kubectl get configmap -w` and retry",
        )

    def _parse(self, data: dict[str, Any], key: str, default: Any) -> Any:
        text = data.get(key)
        if not text:
            return default
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"configmap {self.namespace}/{self.name} key {key} is not JSON: {exc}",
                hint=f"fix it with kubectl edit configmap {self.name} -n {self.namespace}",
            ) from None


def _first_line(text: str) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[0] if lines else "no output"
