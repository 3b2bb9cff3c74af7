"""The blue-green controller of one environment on one target, built from the settings.

One place builds it for every caller: the deploy/rollback/status/down commands, `mlship abtest
--apply`, the deploy stage of `mlship run` and the retirement process.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from mlship.deploy.context import GoldenSource, golden_from_registry
from mlship.deploy.controller import Controller
from mlship.deploy.image import golden_from_image
from mlship.deploy.options import check_env
from mlship.deploy.release import DeployState, Release, ReleaseStore
from mlship.deploy.smoke import Golden
from mlship.deploy.targets.cluster_state import ci_job, now_rfc3339
from mlship.deploy.targets.container import DockerRunner, scope_of
from mlship.deploy.targets.gitops import GitOpsTarget
from mlship.deploy.targets.kubernetes import KubernetesTarget
from mlship.deploy.targets.local import LocalTarget
from mlship.deploy.targets.runners import ProcessRunner, ReleaseRunner
from mlship.errors import ConfigError, InfraError, PipelineRejected
from mlship.registry import PassedRecord, Registry

if TYPE_CHECKING:
    from mlship.settings import Settings


def controller(settings: Settings, target: str, env: str, namespace: str | None = None) -> Controller:
    """The controller for one environment on one target, built from the settings."""
    check_env(env)
    if target == "local":
        env_vars = {"MLFLOW_TRACKING_URI": settings.resolved_tracking_uri}
        state_dir = settings.state_path / "deploy" / env
        # A release with an image (--image) runs as a container, any other as a process.
        runner = ReleaseRunner(ProcessRunner(env=env_vars, cwd=settings.root), DockerRunner(env, scope_of(state_dir)))
        local = LocalTarget(state_dir, port=settings.deploy.port, runner=runner, max_body=settings.serve.max_body_bytes)
        return Controller(settings, local, env, golden=_local_golden(settings), schedule_retirement=True)
    if target == "kubernetes":
        manifests = settings.path(settings.deploy.manifests)
        k8s = KubernetesTarget(
            manifests,
            env=env,
            app=settings.deploy.app,
            namespace=namespace or settings.deploy.namespace_for(env),
            timeout_s=settings.deploy.ready_timeout_s,
            pull_allowance_s=settings.deploy.pull_allowance_s,
            pull_secret=settings.deploy.pull_secret,
        )
        # The cluster holds the state and the lock, so a fresh CI runner sees the same truth. No
        # detached retirement process: it would die with the runner's job; past the rollback
        # window the next deploy or rollback scales the previous color down.
        store = k8s.release_store(settings.state_path / "deploy" / env, keep=settings.deploy.history)
        return Controller(settings, k8s, env, store=PassingStore(store, settings, env, k8s.namespace))
    if target == "gitops":
        raise ConfigError(
            "the gitops target only declares releases (deploy) and compares them with the cluster (status)",
            hint="roll back by reverting the release commit in Git; your GitOps controller applies it",
        )
    raise ConfigError(f"unknown target {target!r}", hint="use local, kubernetes or gitops")


def gitops_target(settings: Settings, env: str, namespace: str | None) -> GitOpsTarget:
    """The gitops target of one environment: it declares releases in the overlay and compares them with the cluster."""
    check_env(env)
    return GitOpsTarget(
        settings.path(settings.deploy.manifests),
        env=env,
        app=settings.deploy.app,
        namespace=namespace or settings.deploy.namespace_for(env),
        timeout_s=settings.deploy.ready_timeout_s,
    )


def verified_release(settings: Settings, from_env: str) -> Release:
    """The release `from_env` verified most recently, as its model version's tags record it (any runner reads them)."""
    registry = Registry.from_settings(settings)
    record = registry.latest_passed(settings.model_name, from_env)
    if record is None:
        raise PipelineRejected(
            f"nothing has passed {from_env}: no version of {settings.model_name} records a verified {from_env} release",
            hint=f"deploy to {from_env} first (`mlship deploy --target kubernetes --env {from_env} …`)",
        )
    resolved = registry.resolve(f"models:/{record.name}/{record.version}")
    return Release(
        ref=resolved.uri,
        uri=resolved.uri,
        name=resolved.name,
        version=resolved.version,
        run_id=resolved.run_id,
        image=record.image,
        git_sha=record.git_sha,
        detail=f"passed {from_env} at {record.at} ({record.ci_job})",
    )


def require_staged(settings: Settings, release: Release, *, from_env: str = "staging") -> None:
    """Production takes only what passed staging: the same model version in the same image (exit 1 otherwise)."""
    record = None
    if release.name and release.version:
        record = Registry.from_settings(settings).passed_record(release.name, release.version, from_env)
    if record is not None and release.image in record.images:
        return
    why = "" if record is None else f" (it passed in {record.image})"
    raise PipelineRejected(
        f"{release.label} in {release.image} has not passed {from_env}{why}",
        hint=f"deploy it to {from_env} first; or promote what passed: `mlship deploy --target kubernetes --env "
        "production --approve` with no --model/--image",
    )


class PassingStore:
    """The cluster's release store, plus the registry record of every release that goes live here.

    A release outcome "live" in the history means this environment verified it (a deploy, a
    promoted canary or shadow) or went back to one it had verified (a rollback, a failover). Each
    is written to the model version's tags (`mlship.passed.<env>.*`), where a runner holding
    another cluster's kubeconfig (production's) reads what passed staging.
    """

    def __init__(self, inner: ReleaseStore, settings: Settings, env: str, namespace: str) -> None:
        self.inner = inner
        self.settings = settings
        self.env = env
        self.namespace = namespace
        self.dir = inner.dir

    def load(self) -> DeployState:
        return self.inner.load()

    def save(self, state: DeployState) -> None:
        self.inner.save(state)

    def lock(self) -> AbstractContextManager[object]:
        return self.inner.lock()

    def record(self, release: Release) -> None:
        self.inner.record(release)
        if release.outcome != "live" or not (release.name and release.version and release.image):
            return
        record = PassedRecord(
            name=release.name,
            version=release.version,
            environment=self.env,
            image=release.image,
            at=now_rfc3339(),
            git_sha=release.git_sha,
            ci_job=ci_job(),
            namespace=self.namespace,
        )
        try:
            Registry.from_settings(self.settings).record_passed(record)
        except InfraError as exc:
            raise InfraError(
                f"{release.label} is live and verified in {self.env}, but the registry did not record it: {exc}",
                hint=f"rerun the same deploy once the registry answers (it records the pass); {exc.hint or ''}".rstrip(
                    "; "
                ),
            ) from None


def _local_golden(settings: Settings) -> GoldenSource:
    """Golden rows of an image release come from the model inside the image, else from the registry."""
    from_image = golden_from_image()

    def source(release: Release) -> Golden:
        if release.image:
            return from_image(release)
        return golden_from_registry(Registry.from_settings(settings))(release)

    return source
