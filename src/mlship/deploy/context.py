"""What every part of the blue-green controller shares: one environment on one target.

The settings, the target, the release store and its deploy lock, the golden rows a candidate
is checked with, the report a command writes, and the record a running shadow or canary
collected. The controller's parts (retirement, shadow lifecycle, promotion, the switch in
`controller.py`) each extend this base; `Controller` is the one class callers build.
"""

from __future__ import annotations

import contextlib
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlship.deploy import process
from mlship.deploy.release import DeployState, Release, ReleaseStore, StateStore, resolve_release
from mlship.deploy.result import DeployResult, signal_from, write_report
from mlship.deploy.smoke import Golden, golden_from_dir
from mlship.deploy.targets.base import Target
from mlship.deploy.verify import MIN_REQUESTS
from mlship.registry import Registry

if TYPE_CHECKING:
    from mlship.settings import Settings

GoldenSource = Callable[[Release], Golden]


def golden_from_registry(registry: Registry) -> GoldenSource:
    """Golden rows = the model's logged input example; expected = what the model itself predicts."""

    def source(release: Release) -> Golden:
        with tempfile.TemporaryDirectory(prefix="mlship-golden-") as tmp:
            return golden_from_dir(registry.download(release.uri, Path(tmp) / "model"))

    return source


class ControllerBase(ABC):
    """Blue-green over one target for one environment: the state every part of the controller shares."""

    def __init__(
        self,
        settings: Settings,
        target: Target,
        env: str = "staging",
        *,
        registry: Registry | None = None,
        golden: GoldenSource | None = None,
        schedule_retirement: bool = False,
        store: ReleaseStore | None = None,
    ) -> None:
        self.settings = settings
        self.schedule_retirement = schedule_retirement
        """Start a detached process that stops the previous color when the rollback window ends."""
        self.cfg = settings.deploy
        self.target = target
        self.env = env
        self._registry = registry
        self._golden = golden
        self.store: ReleaseStore = store or StateStore(settings.state_path, env, keep=self.cfg.history)
        """Where the state and history live and who holds the deploy lock: the target decides (factory)."""

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry.from_settings(self.settings)
        return self._registry

    def golden(self, release: Release) -> Golden:
        source = self._golden or golden_from_registry(self.registry)
        return source(release)

    def resolve(self, model_ref: str, image: str | None = None) -> Release:
        """Pin the reference once: an alias becomes the version it names right now."""
        return resolve_release(
            self.registry, self.settings, model_ref, image=image, env=self.env, target=self.target.name
        )

    def _lock(self) -> contextlib.AbstractContextManager[object]:
        """The environment's deploy lock (one deploy, rollback or retirement at a time), kept by the store:
        a file lock beside the local state, a Lease in the cluster for kubernetes."""
        return self.store.lock()

    def _report(self, result: DeployResult) -> None:
        write_report(self.settings.reports_path, result)

    def _canary(self, state: DeployState) -> str | None:
        for color, release in state.colors.items():
            if release.outcome == "canary" and color != state.live:
                return color
        return None

    def _shadow(self, state: DeployState) -> str | None:
        color = (state.shadow or {}).get("color")
        return str(color) if color and color in state.colors and color != state.live else None

    def _recorded_problem(
        self, state: DeployState, color: str, kind: str, figures: dict[str, Any] | None = None
    ) -> str | None:
        """The candidate's own record as a shadow (its copies) or a canary (its share), over the limits?"""
        max_rate, max_p99 = self.cfg.max_error_rate, self.cfg.max_p99_ms
        if kind == "shadow":
            if figures is None:
                figures = self.target.shadow_stats()
            if not figures:
                return None  # nothing recorded (or unreadable): verification after the switch decides
            n, errors, p99 = int(figures["requests"]), int(figures["errors"]), figures["latency_ms"]["p99"]
            what, top = "copies", float("inf")
        else:
            info = state.canary or {}
            base = signal_from(info.get("baseline")) if info.get("color") == color else None
            now = self.target.signal(color) if base is not None else None
            delta = now.since(base) if now is not None else None
            if delta is None:
                return None  # no baseline or counters reset: verification after the switch decides
            n, errors, p99 = delta.requests, delta.errors, delta.quantile_ms(0.99)
            what, top = "requests", max(delta.bounds_ms, default=float("inf"))
        if n and errors / n > max_rate:
            return f"the {kind} failed {errors} of {n} {what} ({errors / n:.1%}, limit {max_rate:.1%})"
        if n >= MIN_REQUESTS and p99 is not None and p99 > max_p99:
            shown = f"{p99:g} ms" if p99 <= top else f"over {top:g} ms"  # past the histogram's last bound
            return f"the {kind}'s p99 latency ({shown}, {n} {what}) exceeds {max_p99:g} ms"
        return None

    def _detached(self, module: str, spec_name: str, log: str, extra: dict[str, Any]) -> process.Handle:
        """Start `python -m <module>`, a process that outlives this command (guard, retirement).

        Its spec (0600: it holds the settings) carries what it needs to rebuild this controller.
        """
        spec = {
            "state_dir": str(self.store.dir),
            "root": str(self.settings.root),
            "settings": self.settings.model_dump(mode="json"),
            "target": self.target.name,
            "env": self.env,
            "namespace": self.target.namespace,
            **extra,
        }
        return process.spawn_detached(
            module, spec, self.store.dir / spec_name, self.store.dir / log, cwd=self.settings.root
        )

    # What the switch (controller.py) provides to the parts below it ----------------------

    @abstractmethod
    def reconcile(self, state: DeployState) -> list[str]:
        """Make what runs agree with the state before acting (call under the lock); return what changed."""

    @abstractmethod
    def _finish(self, state: DeployState, color: str, release: Release, *, live: str | None, detail: str) -> None:
        """A verified release becomes live: champion, state, history, the warm previous."""

    @abstractmethod
    def _undo(self, state: DeployState, idle: str, live: str | None, warm: Release | None, *, switched: bool) -> None:
        """Refuse a candidate on `idle`: traffic back to `live`, the candidate stopped, the warm release kept."""
