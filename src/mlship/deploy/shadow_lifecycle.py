"""A shadow's life: it starts after its smoke test, gets copies of live requests, and ends.

It ends stopped (`--stop-shadow`, `rollback`), healed away when its color or the live one died,
or promoted (`promotion.py`: the normal switch and verification). Live traffic never moves
while it runs; the release parked behind it comes back when it ends.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from mlship.deploy.faults import checkpoint
from mlship.deploy.release import DeployState, Release
from mlship.deploy.result import DeployResult
from mlship.deploy.retirement import Retirement
from mlship.deploy.shadow import render_markdown as render_shadow
from mlship.deploy.smoke import SmokeResult
from mlship.deploy.targets.base import ColorFailed
from mlship.errors import ConfigError, InfraError, PipelineRejected
from mlship.fsutil import write_json, write_text


class ShadowLifecycle(Retirement):
    """Start, summarise, report, stop and heal the shadow of one environment."""

    def _start_shadow(
        self,
        state: DeployState,
        release: Release,
        *,
        live: str,
        warm: Release | None,
        sample: float,
        smoke: SmokeResult,
        clock: float,
    ) -> DeployResult:
        """The smoke-tested candidate gets copies of live requests; live traffic never moves.

        The state names the shadow before the target copies a single request to it, so a crash
        in between leaves a shadow the next command resumes (or ends, if its color died).
        """
        idle = release.color
        state.colors[idle] = release.with_(outcome="shadow")
        state.shadow = {
            "color": idle,
            "sample": sample,
            "warm": warm.to_dict() if warm else None,
            "since": time.time(),
        }
        state.pending = None
        self.store.save(state)
        checkpoint("shadow-named")
        try:
            self.target.set_shadow(idle, sample)
        except ColorFailed as exc:
            self._end_shadow(state)
            self.store.record(release.with_(outcome="rejected", detail=f"shadow could not start: {exc}"))
            raise PipelineRejected(f"shadow of {release.label} did not start: {exc}") from None
        self.store.record(release.with_(outcome="shadow", detail=f"copies {sample:.0%} of live /predict requests"))
        done = DeployResult(
            "shadow",
            self.env,
            self.target.name,
            release.with_(outcome="shadow"),
            self.target.live_url(),
            live,
            previous=state.colors.get(live),
            smoke=smoke,
            weights={live: 100},
            timings_s={"total": round(time.monotonic() - clock, 3)},
        )
        self._report(done)
        return done

    def _end_shadow(self, state: DeployState) -> None:
        """Stop copying, stop the candidate, bring back the release parked behind it (kept warm)."""
        info = state.shadow or {}
        color = info.get("color")
        state.shadow = None
        self.store.save(state)  # no shadow named before the candidate goes: a crash leaves nothing copying to it
        with contextlib.suppress(ColorFailed, InfraError):
            self.target.set_shadow(None, 1.0)
        if not color:
            return
        warm = Release.from_dict(info["warm"]) if info.get("warm") else None
        self.target.stop(str(color))
        if warm is not None and self.target.running(str(color)):
            state.colors[str(color)] = warm
        else:
            state.colors.pop(str(color), None)
        self.store.save(state)

    def shadow_summary(self, state: DeployState | None = None) -> dict[str, Any] | None:
        """The running shadow: which color and release, its sample, and the target's comparison figures."""
        state = state or self.store.load()
        color = self._shadow(state)
        if color is None or state.shadow is None:
            return None
        live = state.colors.get(state.live) if state.live else None
        figures = self.target.shadow_stats()
        return {
            "color": color,
            "release": state.colors[color].to_dict(),
            "live_release": live.to_dict() if live else None,
            "sample": state.shadow.get("sample"),
            "since": state.shadow.get("since"),
            "figures": figures,
            "limits": {"max_error_rate": self.cfg.max_error_rate, "max_p99_ms": self.cfg.max_p99_ms},
            # what `--promote-shadow` would refuse it for now (None: its figures are within the limits)
            "promotion_refused": self._recorded_problem(state, color, "shadow", figures) if figures else None,
        }

    def shadow_report(self, state: DeployState | None = None) -> tuple[Path, Path]:
        """Write shadow.json / shadow.md (atomically) for the running shadow; ConfigError if none runs."""
        summary = self.shadow_summary(state)
        if summary is None:
            raise ConfigError("no shadow is running", hint="start one with `mlship deploy --strategy shadow`")
        reports = self.settings.reports_path
        figures = summary["figures"]
        candidate = Release.from_dict(summary["release"]).label
        live = Release.from_dict(summary["live_release"]).label if summary["live_release"] else "live"
        if figures is None:
            md = f"# Shadow: {candidate} vs {live}\n\nno figures: the target did not answer (see `mlship status`)\n"
        else:
            md = render_shadow(figures, live=live, candidate=candidate)
        write_json(reports / "shadow.json", summary)
        write_text(reports / "shadow.md", md)
        return reports / "shadow.json", reports / "shadow.md"

    def stop_shadow(self, reason: str = "shadow stopped") -> DeployResult:
        """End the shadow without promoting it: copies stop, the candidate stops, live never moved."""
        with self._lock():
            state = self.store.load()
            self.reconcile(state)
            return self._stop_shadow(state, reason)

    def _stop_shadow(self, state: DeployState, reason: str) -> DeployResult:
        color = self._shadow(state)
        if color is None or state.live is None:
            raise ConfigError("no shadow is running", hint="start one with `mlship deploy --strategy shadow`")
        release = state.colors[color]
        with contextlib.suppress(ConfigError, OSError):
            self.shadow_report(state)  # the last figures, before the router forgets them
        self._end_shadow(state)
        self.store.record(release.with_(outcome="rejected", detail=reason, deployed_at=time.time()))
        done = DeployResult(
            "stop-shadow",
            self.env,
            self.target.name,
            release.with_(outcome="rejected"),
            self.target.live_url(),
            state.live,
            previous=state.colors.get(state.live),
            weights={state.live: 100},
        )
        self._report(done)
        return done

    def _heal_shadow(self, state: DeployState) -> list[str]:
        """A named shadow whose color died ends; one the target stopped copying to resumes."""
        info = state.shadow
        if info is None:
            return []
        color = str(info.get("color"))
        release = state.colors.get(color)
        live_ok = state.live is not None and self.target.running(state.live)
        if release is None or color == state.live or not self.target.running(color) or not live_ok:
            why = "the live color stopped" if not live_ok else f"{color} stopped running"
            self._end_shadow(state)
            if release is not None and color != state.live:
                self.store.record(release.with_(outcome="rejected", detail=f"shadow ended: {why}"))
            return [f"ended the shadow on {color}: {why}"]
        if self.target.supports_shadow and self.target.shadowing() != color:
            self.target.set_shadow(color, float(info.get("sample", 1.0)))
            return [f"the shadow on {color} gets copies again"]
        return []
