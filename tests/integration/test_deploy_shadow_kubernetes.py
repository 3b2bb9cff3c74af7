"""A kubernetes shadow against the stateful kubectl double: the live pods get the shadow's env."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlship.deploy.controller import Controller
from mlship.errors import ConfigError
from tests.integration.test_deploy_kubernetes import IMAGE, k8s_controller
from tests.support.deploy_doubles.harness import (
    double_objects,
    fake_release,
    install_kubectl_double,
    kill_double_servers,
    make_settings,
    served_version,
)

PREVIEW = "http://mlship-model-preview-staging.ml.svc.cluster.local:80"


@pytest.fixture
def k8s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Controller, Path]]:
    state = install_kubectl_double(tmp_path, monkeypatch)
    ctl = k8s_controller(make_settings(tmp_path, ready_timeout_s=5.0), tmp_path / "runner")
    yield ctl, state
    ctl.target.close()
    kill_double_servers(state)


def env_of(state: Path, color: str) -> dict[str, Any]:
    container = double_objects(state)[f"Deployment/ml/mlship-model-{color}-staging"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_kubernetes_shadow_sets_the_mirror_env_on_the_live_pods_and_promotion_clears_it(
    k8s: tuple[Controller, Path],
) -> None:
    ctl, state = k8s
    ctl.deploy(fake_release("1").with_(image=IMAGE))
    result = ctl.deploy(fake_release("2").with_(image=IMAGE), strategy="shadow", sample=0.25)
    assert result.action == "shadow" and result.live == "blue"
    live_env = env_of(state, "blue")
    assert live_env["MLSHIP_SHADOW_URL"] == PREVIEW and live_env["MLSHIP_SHADOW_SAMPLE"] == "0.25"
    assert "MLSHIP_SHADOW_URL" not in env_of(state, "green")
    objects = double_objects(state)
    assert objects["Service/ml/mlship-model-preview-staging"]["spec"]["selector"]["mlship.dev/color"] == "green"
    assert objects["Service/ml/mlship-model-staging"]["spec"]["selector"]["mlship.dev/color"] == "blue"
    assert ctl.target.shadowing() == "green"  # type: ignore[attr-defined]
    assert served_version(ctl.target.traffic_url("blue")) == "1", "the live pods rolled and serve again"
    assert ctl.store.load().shadow is not None  # the state lives in the cluster (ConfigMap)
    info = ctl.status()
    assert info["shadow"]["color"] == "green" and info["shadow"]["sample"] == 0.25
    with pytest.raises(ConfigError, match="cannot route by key"):
        ctl.deploy(fake_release("3").with_(image=IMAGE), strategy="canary", sticky="header:X-User-Id")
    promoted = ctl.promote_shadow()
    assert promoted.live == "green"
    assert "MLSHIP_SHADOW_URL" not in env_of(state, "blue")
    assert double_objects(state)["Service/ml/mlship-model-staging"]["spec"]["selector"]["mlship.dev/color"] == "green"
    assert ctl.target.shadowing() is None  # type: ignore[attr-defined]


def test_kubernetes_stop_shadow_clears_the_env_and_scales_the_candidate_down(k8s: tuple[Controller, Path]) -> None:
    ctl, state = k8s
    ctl.deploy(fake_release("1").with_(image=IMAGE))
    ctl.deploy(fake_release("2").with_(image=IMAGE), strategy="shadow")
    assert env_of(state, "blue")["MLSHIP_SHADOW_SAMPLE"] == "1"
    stopped = ctl.stop_shadow()
    assert stopped.action == "stop-shadow" and stopped.live == "blue"
    assert "MLSHIP_SHADOW_URL" not in env_of(state, "blue")
    assert double_objects(state)["Deployment/ml/mlship-model-green-staging"]["spec"]["replicas"] == 0
    assert ctl.store.load().shadow is None and ctl.status()["shadow"] is None
