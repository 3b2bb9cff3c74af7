"""The shipped deploy Role (deployment/k8s/rbac) is exactly what the release story needs.

The kubectl double enforces the Role as the API server would (403 for anything no rule grants):
the whole story — deploy, a refused deploy of a crashing image and of an unpullable one, canary,
promote, shadow, rollback, status, down — runs under it without one denial, and asks for exactly
the permissions it grants; without any one of its rules some step fails with exit 3 (InfraError)
naming the missing verb and resource.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlship.deploy.controller import Controller
from mlship.deploy.targets.kubernetes import KubernetesTarget
from mlship.errors import InfraError, PipelineRejected
from tests.integration.test_deploy_kubernetes import KUBECTL
from tests.support.deploy_doubles.harness import (
    REPO,
    FakeRegistry,
    fake_golden,
    fake_release,
    install_kubectl_double,
    kill_double_servers,
    make_settings,
    manifests_with_small_probes,
    set_image_behaviour,
    set_image_fault,
    set_role,
    used_permissions,
)

NS = "mlship-staging"
USER = f"system:serviceaccount:{NS}:mlship-deployer"


def shipped_role(env: str = "staging") -> dict[str, Any]:
    out = subprocess.run(
        [str(KUBECTL), "kustomize", str(REPO / "deployment" / "k8s" / "rbac" / env)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    objects = {d["kind"]: d for d in yaml.safe_load_all(out) if d}
    assert set(objects) == {"ServiceAccount", "Role", "RoleBinding"}
    binding = objects["RoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "mlship-deployer"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mlship-deployer", "namespace": f"mlship-{env}"}]
    assert {o["metadata"]["namespace"] for o in objects.values()} == {f"mlship-{env}"}
    return objects["Role"]


def granted(rules: list[dict[str, Any]]) -> set[str]:
    return {
        f"{v} {g}/{r}" for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }


def image(n: int) -> str:
    return f"registry.invalid/m@sha256:{str(n) * 64}"


def story(ctl: Controller, state: Path) -> list[Callable[[], Any]]:
    """Every command of a release, in an order that reaches each permission early."""
    crash, unpullable = image(8), image(9)
    set_image_fault(state, crash, "exit")
    set_image_behaviour(state, unpullable, pull='rpc error: code = NotFound desc = "m": not found')

    def refused(release: Any) -> Callable[[], Any]:
        def step() -> None:
            with pytest.raises(PipelineRejected, match="was not ready within"):
                ctl.deploy(release)

        return step

    return [
        lambda: ctl.deploy(fake_release("1").with_(image=image(1))),
        refused(fake_release("8").with_(image=crash)),  # the crashed container's log
        refused(fake_release("9").with_(image=unpullable)),  # the pods' events
        lambda: ctl.deploy(fake_release("2").with_(image=image(2)), strategy="canary", weight=50),
        ctl.promote_canary,
        lambda: ctl.deploy(fake_release("3").with_(image=image(3)), strategy="shadow"),
        ctl.stop_shadow,
        ctl.rollback,
        ctl.status,
        ctl.down,
    ]


def controller(tmp_path: Path) -> Controller:
    settings = make_settings(tmp_path, ready_timeout_s=1.0)
    target = KubernetesTarget(manifests_with_small_probes(tmp_path), env="staging", namespace=NS, timeout_s=1.0)
    store = target.release_store(tmp_path / "runner", keep=settings.deploy.history)
    return Controller(settings, target, "staging", golden=fake_golden, registry=FakeRegistry(), store=store)  # type: ignore[arg-type]


def test_the_release_story_runs_under_the_shipped_role_and_uses_all_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = install_kubectl_double(tmp_path, monkeypatch, namespaces=(NS,))
    role = shipped_role()
    assert shipped_role("production")["rules"] == role["rules"], "one Role, two namespaces"
    set_role(state, USER, role["rules"], namespace=NS)
    ctl = controller(tmp_path)
    try:
        for step in story(ctl, state):
            step()
        assert used_permissions(state) == granted(role["rules"]), "exactly what the code asks for"
    finally:
        ctl.target.close()
        kill_double_servers(state)
    set_role(state, USER, role["rules"], namespace="mlship-production")  # a Role binds its own namespace only
    with pytest.raises(InfraError, match=f"may not get leases .* in namespace {NS}"):
        controller(tmp_path / "other").status()


@pytest.mark.slow
@pytest.mark.parametrize("dropped", range(len(shipped_role()["rules"])))
def test_without_any_one_rule_a_step_fails_with_exit_3_naming_it(
    dropped: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = install_kubectl_double(tmp_path, monkeypatch, namespaces=(NS,))
    rules = shipped_role()["rules"]
    rule = rules[dropped]
    set_role(state, USER, rules[:dropped] + rules[dropped + 1 :], namespace=NS)
    ctl = controller(tmp_path)
    try:
        with pytest.raises(InfraError) as denied:
            for step in story(ctl, state):
                step()
        assert denied.value.exit_code == 3
        message = str(denied.value)
        assert message.startswith(f"{USER} may not "), message
        verb, resource = message.removeprefix(f"{USER} may not ").split()[:2]
        assert resource in rule["resources"] and verb in rule["verbs"], (message, rule)
        assert f"grant `{verb}` on `{resource}` in the deploy Role" in str(denied.value.hint)
    finally:
        ctl.target.close()
        kill_double_servers(state)
