"""A target declares what it cannot do: the base class's defaults say "not supported", never guess."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlship.deploy import synthetic
from mlship.deploy.controller import Controller
from mlship.deploy.release import Release
from mlship.deploy.targets.base import Signal, Target, Unsupported
from mlship.errors import ConfigError
from mlship.settings import settings_from_mapping


class Minimal(Target):
    """Only the abstract methods: a target with no router, no shadow and no sticky routing."""

    name = "minimal"

    def __init__(self) -> None:
        self.closed = False

    def prepare(self) -> None:
        return None

    def start(self, color: str, release: Release) -> None:
        return None

    def wait_ready(self, color: str, timeout_s: float) -> None:
        return None

    def running(self, color: str) -> bool:
        return False

    def preview_url(self, color: str) -> str:
        return "http://127.0.0.1:1"

    def live_url(self) -> str:
        return "http://127.0.0.1:1"

    def traffic_url(self, color: str) -> str:
        return "http://127.0.0.1:1"

    def set_weights(self, weights: dict[str, int]) -> None:
        return None

    def weights(self) -> dict[str, int] | None:
        return None

    def signal(self, color: str) -> Signal | None:
        return None

    def stop(self, color: str) -> None:
        return None

    def down(self) -> list[str]:
        return []

    def close(self) -> None:
        self.closed = True


def test_a_target_without_a_capability_says_so_and_the_controller_refuses_the_option(tmp_path: Path) -> None:
    target = Minimal()
    assert (target.supports_shadow, target.supports_sticky, target.namespace) == (False, False, None)
    assert target.router_info() is None and target.live_problem() is None
    assert target.shadowing() is None and target.shadow_stats() is None
    assert target.preflight() is None and target.release_parked("blue") is None
    assert target.synthetic_headers("verify") == synthetic.headers("verify"), "no router: no proof"
    with pytest.raises(Unsupported, match="the minimal target cannot run a shadow") as shadow:
        target.set_shadow("green", 0.5)
    assert isinstance(shadow.value, ConfigError), "a usage error: exit 2"
    with pytest.raises(Unsupported, match="the minimal target cannot route by key"):
        target.set_sticky("header:X-User-Id")

    settings = settings_from_mapping({}, root=tmp_path)
    with Controller(settings, target) as ctl:
        with pytest.raises(ConfigError, match="the minimal target cannot run a shadow"):
            ctl.check_options("shadow", weight=10, sample=0.5, sticky=None)
        with pytest.raises(ConfigError, match="the minimal target cannot route by key"):
            ctl.check_options("canary", weight=10, sample=1.0, sticky="header:X-User-Id")
        assert ctl.status()["problem"] == "nothing is live in staging"
    assert target.closed, "leaving the `with` block closes the target"
