"""The blue-green controller of one environment on one target, built from the settings.

One place builds it for every caller: the deploy/rollback/status/down commands, `mlship abtest
--apply`, the deploy stage of `mlship run` and the retirement process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlship.deploy.bluegreen import Controller
    from mlship.deploy.release import Release
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
        return Controller(settings, k8s, env, schedule_retirement=True)
    raise ConfigError(f"unknown target {target!r}", hint="use local or kubernetes")


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
