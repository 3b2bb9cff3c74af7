"""Each environment's namespace: the overlays' defaults, per-environment settings, one shared namespace."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlship.errors import ConfigError
from mlship.settings import DEFAULT_NAMESPACES, settings_from_mapping


def test_namespaces_default_to_the_overlays_and_can_be_set_per_environment(tmp_path: Path) -> None:
    default = settings_from_mapping({}, root=tmp_path).deploy
    assert {env: default.namespace_for(env) for env in DEFAULT_NAMESPACES} == {
        "staging": "mlship-staging",
        "production": "mlship-production",
    }
    per_env = settings_from_mapping({"deploy": {"namespaces": {"production": "ml-prod"}}}, root=tmp_path).deploy
    assert per_env.namespace_for("production") == "ml-prod" and per_env.namespace_for("staging") == "mlship-staging"
    shared = settings_from_mapping({"deploy": {"namespace": "ml"}}, root=tmp_path).deploy
    assert shared.namespace_for("staging") == shared.namespace_for("production") == "ml"


@pytest.mark.parametrize(
    "deploy",
    [{"namespace": "ML"}, {"namespace": "-ml"}, {"namespaces": {"qa": "ml"}}, {"namespaces": {"staging": "a_b"}}],
)
def test_bad_namespaces_are_config_errors(tmp_path: Path, deploy: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        settings_from_mapping({"deploy": deploy}, root=tmp_path)
