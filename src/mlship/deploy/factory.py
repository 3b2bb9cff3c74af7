"""The blue-green controller of one environment on one target, built from the settings.

One place builds it for every caller: the deploy/rollback/status/down commands, `mlship abtest
--apply`, the deploy stage of `mlship run` and the retirement process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlship.deploy.bluegreen import Controller
    from mlship.deploy.release import DeployState, Release
    from mlship.deploy.smoke import Golden
    from mlship.settings import Settings


def controller(settings: Settings, target: str, env: str, namespace: str | None = None) -> Controller:
    """The controller for one environment on one target, built from the settings."""
    from mlship.deploy.bluegreen import ENVS, Controller
    from mlship.errors import ConfigError

    if env not in ENVS:
        raise ConfigError(f"unknown environment {env!r}", hint=f"use one of: {', '.join(ENVS)}")
    if target == "local":
        from mlship.deploy.targets.container import DockerRunner, scope_of
        from mlship.deploy.targets.local import LocalTarget, ProcessRunner, ReleaseRunner

        env_vars = {"MLFLOW_TRACKING_URI": settings.resolved_tracking_uri}
        state_dir = settings.state_path / "deploy" / env
        # A release with an image (--image) runs as a container, any other as a process.
        runner = ReleaseRunner(ProcessRunner(env=env_vars, cwd=settings.root), DockerRunner(env, scope_of(state_dir)))
        local = LocalTarget(state_dir, port=settings.deploy.port, runner=runner, max_body=settings.serve.max_body_bytes)
        return Controller(settings, local, env, golden=_local_golden(settings), schedule_retirement=True)
    if target == "kubernetes":
        from mlship.deploy.targets.kubernetes import KubernetesTarget

        manifests = settings.path(settings.deploy.manifests)
        k8s = KubernetesTarget(
            manifests,
            env=env,
            app=settings.deploy.app,
            namespace=namespace or settings.deploy.namespace,
            timeout_s=settings.deploy.ready_timeout_s,
        )
        # The cluster holds the state and the lock, so a fresh CI runner sees the same truth. No
        # detached retirement process: it would die with the runner's job; past the rollback
        # window the next deploy or rollback scales the previous color down.
        store = k8s.release_store(settings.state_path / "deploy" / env, keep=settings.deploy.history)
        return Controller(settings, k8s, env, store=store)
    if target == "gitops":
        raise ConfigError(
            "the gitops target only declares releases (deploy) and compares them with the cluster (status)",
            hint="roll back by reverting the release commit in Git; your GitOps controller applies it",
        )
    raise ConfigError(f"unknown target {target!r}", hint="use local, kubernetes or gitops")


def _cluster_state(settings: Settings, env: str, namespace: str | None) -> DeployState:
    from mlship.deploy.targets.kubernetes import KubernetesTarget

    k8s = KubernetesTarget(
        settings.path(settings.deploy.manifests),
        env=env,
        app=settings.deploy.app,
        namespace=namespace or settings.deploy.namespace,
        timeout_s=settings.deploy.ready_timeout_s,
    )
    k8s.prepare()
    store = k8s.release_store(settings.state_path / "deploy" / env, keep=settings.deploy.history)
    return store.load()


def verified_release(settings: Settings, from_env: str, namespace: str | None) -> Release:
    """The release live and verified in `from_env`'s cluster record: its model version and image digest."""
    from mlship.errors import ConfigError, PipelineRejected

    state = _cluster_state(settings, from_env, namespace)
    release = state.colors.get(state.live) if state.live else None
    if release is None or release.outcome != "live" or not release.image:
        raise PipelineRejected(
            f"nothing has passed {from_env}: no verified release is live there",
            hint=f"deploy to {from_env} first (`mlship deploy --target kubernetes --env {from_env} …`)",
        )
    if not release.version:
        raise ConfigError(f"the {from_env} release {release.uri} has no version", hint="deploy a registered model")
    return release.with_(ref=release.uri, outcome="pending", detail=f"passed {from_env}", color="")


def require_staged(settings: Settings, release: Release, *, namespace: str | None, from_env: str = "staging") -> None:
    """Production takes only what passed staging: the same model version in the same image (exit 1 otherwise)."""
    from mlship.errors import PipelineRejected

    history = _cluster_state(settings, from_env, namespace).history
    for passed in history:
        if passed.outcome == "live" and passed.version == release.version and passed.image == release.image:
            return
    raise PipelineRejected(
        f"{release.label} in {release.image} has not passed {from_env}",
        hint=f"deploy it to {from_env} first; or promote what passed: `mlship deploy --target kubernetes --env "
        "production --approve` with no --model/--image",
    )


def _local_golden(settings: Settings) -> Callable[[Release], Golden]:
    """Golden rows of an image release come from the model inside the image, else from the registry."""
    from mlship.deploy.bluegreen import golden_from_registry
    from mlship.deploy.image import golden_from_image

    from_image = golden_from_image()

    def source(release: Release) -> Golden:
        if release.image:
            return from_image(release)
        from mlship.registry import Registry

        return golden_from_registry(Registry.from_settings(settings))(release)

    return source
