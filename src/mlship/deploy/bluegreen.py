"""The blue-green controller: one code path for every target (design.md, "Blue-green, precisely").

resolve once → lock → start idle → wait ready → smoke idle → switch (or canary split) →
verify live → keep the previous color warm for the rollback window → record. Any failure
after the switch switches back and raises PipelineRejected (exit 1); the live color only
ever moves to a color that passed its smoke test.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlship.deploy.faults import checkpoint
from mlship.deploy.lock import LockHeld
from mlship.deploy.release import COLORS, DeployState, Release, ReleaseStore, StateStore, find_release, other
from mlship.deploy.smoke import Golden, SmokeResult, golden_from_dir, smoke
from mlship.deploy.targets.base import ColorFailed, Signal, Target
from mlship.deploy.verify import VerifyResult, verify
from mlship.errors import ConfigError, InfraError, MlshipError, PipelineRejected
from mlship.fsutil import write_json, write_text

if TYPE_CHECKING:
    from mlship.registry import Registry
    from mlship.settings import Settings

ENVS = ("staging", "production")
STRATEGIES = ("bluegreen", "canary", "shadow")
APPROVAL_VARS = ("MLSHIP_APPROVE",)
RETIREMENT_WAIT_S = 15.0
"""How long `down` waits for a retirement that holds the deploy lock (it holds it for seconds)."""
GoldenSource = Callable[[Release], Golden]


@dataclass
class DeployResult:
    """What one deploy / rollback did: the outcome users and CI scripts read."""

    action: str
    env: str
    target: str
    release: Release
    live_url: str
    live: str | None
    previous: Release | None = None
    smoke: SmokeResult | None = None
    verify: VerifyResult | None = None
    weights: dict[str, int] | None = None
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "env": self.env,
            "target": self.target,
            "release": self.release.to_dict(),
            "live_url": self.live_url,
            "live": self.live,
            "previous": self.previous.to_dict() if self.previous else None,
            "smoke": self.smoke.to_dict() if self.smoke else None,
            "verify": self.verify.to_dict() if self.verify else None,
            "weights": self.weights,
            "timings_s": self.timings_s,
        }


def require_approval(env: str, approve: bool) -> None:
    """Production needs an explicit yes: `--approve` or MLSHIP_APPROVE=1 (set by a CI approval gate)."""
    if env not in ENVS:
        raise ConfigError(f"unknown environment {env!r}", hint=f"use one of: {', '.join(ENVS)}")
    if env == "production" and not approve:
        if any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes") for v in APPROVAL_VARS):
            return
        raise ConfigError(
            "a production deploy needs approval",
            hint="pass --approve, or set MLSHIP_APPROVE=1 in an approved CI environment",
        )


def golden_from_registry(registry: Registry) -> GoldenSource:
    """Golden rows = the model's logged input example; expected = what the model itself predicts."""

    def source(release: Release) -> Golden:
        with tempfile.TemporaryDirectory(prefix="mlship-golden-") as tmp:
            return golden_from_dir(registry.download(release.uri, Path(tmp) / "model"))

    return source


def resolve_release(
    registry: Registry, settings: Settings, model_ref: str, *, image: str | None, env: str, target: str
) -> Release:
    """A release pinned once: an alias becomes the version it names right now, with the git sha."""
    from mlship.provenance import git_sha

    resolved = registry.resolve(model_ref)
    return Release(
        ref=model_ref,
        uri=resolved.uri,
        name=resolved.name,
        version=resolved.version,
        run_id=resolved.run_id,
        image=image,
        git_sha=git_sha(settings.root),
        env=env,
        target=target,
    )


class Controller:
    """Blue-green over one target for one environment."""

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
            from mlship.registry import Registry

            self._registry = Registry.from_settings(self.settings)
        return self._registry

    def golden(self, release: Release) -> Golden:
        source = self._golden or golden_from_registry(self.registry)
        return source(release)

    # Release resolution --------------------------------------------------------------------

    def resolve(self, model_ref: str, image: str | None = None) -> Release:
        """Pin the reference once: an alias becomes the version it names right now."""
        return resolve_release(
            self.registry, self.settings, model_ref, image=image, env=self.env, target=self.target.name
        )

    # Commands ------------------------------------------------------------------------------

    def deploy(
        self,
        release: Release,
        *,
        strategy: str = "bluegreen",
        weight: int = 10,
        sample: float = 1.0,
        sticky: str | None = None,
    ) -> DeployResult:
        """Blue-green, canary or shadow deploy of a pinned release; PipelineRejected if it was rolled back.

        `sample` is the share of live requests a shadow gets a copy of; `sticky` ("header:NAME" or
        "field:NAME") routes a canary split by a hashed request key instead of at random.
        """
        self.check_options(strategy, weight=weight, sample=sample, sticky=sticky)
        with self._lock():
            state = self.store.load()
            self.reconcile(state)
            self._reap(state)
            shadow, canary = self._shadow(state), self._canary(state)
            if shadow is not None or (strategy == "shadow" and canary is not None):
                kind, color = ("shadow", shadow) if shadow is not None else ("canary", canary)
                raise ConfigError(
                    f"a {kind} runs on {color}",
                    hint=f"end it first: `mlship deploy --promote-{kind}`, or `mlship rollback`",
                )
            set_sticky = getattr(self.target, "set_sticky", None)
            if strategy == "canary" and set_sticky is not None:
                set_sticky(sticky)  # a canary without --sticky-key routes at random again
            return self._deploy(state, release, strategy=strategy, weight=weight, sample=sample)

    def check_options(self, strategy: str, *, weight: int, sample: float, sticky: str | None) -> None:
        """Usage errors (exit 2) before anything runs."""
        from mlship.traffic.sticky import parse_sticky

        if strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {strategy!r}", hint=f"use one of: {', '.join(STRATEGIES)}")
        if strategy == "canary" and not 1 <= weight <= 99:
            raise ConfigError(f"canary weight {weight} is out of range", hint="use --weight between 1 and 99")
        if strategy == "shadow":
            if not 0.0 < sample <= 1.0:
                raise ConfigError(f"shadow sample {sample:g} is out of range", hint="use --sample in (0, 1], e.g. 0.1")
            if not hasattr(self.target, "set_shadow"):
                raise ConfigError(f"the {self.target.name} target cannot run a shadow", hint="use local or kubernetes")
        if sticky is not None:
            if strategy != "canary":
                raise ConfigError("--sticky-key routes a canary split", hint="add --strategy canary")
            try:
                parse_sticky(sticky)
            except ValueError as exc:
                raise ConfigError(str(exc), hint="use header:X-User-Id or field:customer_id") from None
            if not hasattr(self.target, "set_sticky"):
                raise ConfigError(
                    f"the {self.target.name} target cannot route by key",
                    hint="sticky routing needs the local router; a Service splits by pod, not by key",
                )

    def _lock(self) -> contextlib.AbstractContextManager[object]:
        """The environment's deploy lock (one deploy, rollback or retirement at a time), kept by the store:
        a file lock beside the local state, a Lease in the cluster for kubernetes."""
        return self.store.lock()

    def preflight(self) -> None:
        """Fail fast, before any model is resolved or loaded: a held lock, a busy live port."""
        with self._lock():
            pass
        check = getattr(self.target, "preflight", None)  # targets that own a port check it here
        if check is not None:
            check()

    def _deploy(
        self, state: DeployState, release: Release, *, strategy: str, weight: int, sample: float = 1.0
    ) -> DeployResult:
        """The deploy proper. Intent is written to the state before each action (see `reconcile`)."""
        timings: dict[str, float] = {}
        clock = time.monotonic()
        live = state.live if state.live and self.target.running(state.live) else None
        if strategy in ("canary", "shadow") and live is None:
            raise ConfigError(
                f"a {strategy} needs a live color to take traffic from", hint="deploy with bluegreen first"
            )
        idle = other(live) if live else (state.live and other(state.live)) or "blue"
        release = release.with_(color=idle, env=self.env, target=self.target.name, deployed_at=time.time())
        previous = state.colors.get(live) if live else None
        warm = state.colors.get(idle)  # the release a rollback goes to: the target keeps it warm until verified

        def reject(reason: str, *, switched: bool) -> PipelineRejected:
            self._undo(state, idle, live, warm, switched=switched)
            self.store.record(release.with_(outcome="rolled back" if switched else "rejected", detail=reason))
            where = f"{previous.label} on {live} is still live" if previous and live else "nothing is live"
            return PipelineRejected(f"deploy of {release.label} rolled back: {reason}", hint=where)

        try:
            golden = self.golden(release)
        except MlshipError:
            raise
        except Exception as exc:  # noqa: BLE001 - a model that raises on its own example is refused (exit 1)
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            why = f"the model raised on its input example ({type(exc).__name__}: {text})"
            raise reject(why, switched=False) from None
        self.target.prepare()  # after the golden rows: a model that cannot give them starts nothing
        state.pending = {
            "color": idle,
            "release": release.to_dict(),
            "step": "starting",
            "previous": live,
            "warm": warm.to_dict() if warm else None,
        }
        self.store.save(state)  # intent first: a crash from here leaves a candidate the next command stops
        try:
            self.target.start(idle, release)
            checkpoint("idle-started")
            self.target.wait_ready(idle, self.cfg.ready_timeout_s)
        except ColorFailed as exc:
            raise reject(str(exc), switched=False) from None
        timings["ready"] = round(time.monotonic() - clock, 3)
        try:
            preview = self.target.preview_url(idle)
        except ColorFailed as exc:
            raise reject(str(exc), switched=False) from None
        result = smoke(preview, golden, latency_budget_ms=self.cfg.smoke_latency_ms, expected_version=release.version)
        timings["smoke"] = round(time.monotonic() - clock, 3)
        if not result.ok:
            failed = "; ".join(f"{c.name}: {c.detail}" for c in result.failures)
            raise reject(f"smoke test failed ({failed})", switched=False)
        checkpoint("smoke-passed")
        if strategy == "shadow" and live is not None:
            return self._start_shadow(state, release, live=live, warm=warm, sample=sample, smoke=result, clock=clock)
        weights = {idle: 100} if strategy == "bluegreen" else {live or "blue": 100 - weight, idle: weight}
        # Intent before the switch: the state names the candidate (live, unverified, or canary)
        # before the router sends it a single request.
        state.pending["step"] = "verifying"
        state.colors[idle] = release.with_(outcome="verifying" if strategy == "bluegreen" else "canary")
        if strategy == "bluegreen":
            state.live = idle
        else:  # the counters the canary's own share will be judged from at its promotion
            state.canary = {
                "color": idle,
                "uri": release.uri,
                "weight": weight,
                "baseline": _signal_dict(self.target.signal(idle)),
            }
        self.store.save(state)
        switch_start = time.monotonic()
        try:
            self.target.set_weights(weights)
        except ColorFailed as exc:
            raise reject(str(exc), switched=True) from None
        timings["switch"] = round(time.monotonic() - switch_start, 4)
        checkpoint("switched")
        if strategy == "canary":
            weights = self.target.weights() or weights  # kubernetes quantises a split to whole pods
        try:
            checked = verify(
                self.target,
                idle,
                golden,
                window_s=self.cfg.verify_window_s,
                max_error_rate=self.cfg.max_error_rate,
                max_p99_ms=self.cfg.max_p99_ms,
            )
        except ColorFailed as exc:
            raise reject(f"verification failed: {exc}", switched=True) from None
        timings["verify"] = checked.window_s
        if not checked.ok:
            raise reject(f"verification failed: {checked.reason}", switched=True)
        outcome = "live" if strategy == "bluegreen" else "canary"
        if strategy == "canary":
            state.pending = None
            self.store.save(state)
            self.store.record(release.with_(outcome=outcome, detail=checked.reason))
        else:
            state.pending["step"] = "verified"
            state.pending["detail"] = checked.reason
            self.store.save(state)
            checkpoint("verified")
            self._finish(state, idle, release, live=live, detail=checked.reason)
        timings["total"] = round(time.monotonic() - clock, 3)
        deployed = DeployResult(
            action="deploy" if strategy == "bluegreen" else "canary",
            env=self.env,
            target=self.target.name,
            release=release.with_(outcome=outcome),
            live_url=self.target.live_url(),
            live=state.live,
            previous=previous,
            smoke=result,
            verify=checked,
            weights=weights,
            timings_s=timings,
        )
        self._report(deployed)
        return deployed

    # Shadow --------------------------------------------------------------------------------

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
            self.target.set_shadow(idle, sample)  # type: ignore[attr-defined]
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

    def _shadow(self, state: DeployState) -> str | None:
        color = (state.shadow or {}).get("color")
        return str(color) if color and color in state.colors and color != state.live else None

    def _end_shadow(self, state: DeployState) -> None:
        """Stop copying, stop the candidate, bring back the release parked behind it (kept warm)."""
        info = state.shadow or {}
        color = info.get("color")
        state.shadow = None
        self.store.save(state)  # no shadow named before the candidate goes: a crash leaves nothing copying to it
        with contextlib.suppress(ColorFailed, InfraError):
            self.target.set_shadow(None, 1.0)  # type: ignore[attr-defined]
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
        stats = getattr(self.target, "shadow_stats", None)
        figures = stats() if stats is not None else None
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
        from mlship.deploy.shadow import render_markdown as render_shadow

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

    def promote_shadow(self) -> DeployResult:
        """The shadow becomes live by the normal switch and verification (see `_promote`)."""
        with self._lock():
            state = self.store.load()
            self.reconcile(state)
            color = self._shadow(state)
            if color is None or state.shadow is None:
                raise ConfigError("no shadow is running", hint="start one with `mlship deploy --strategy shadow`")
            with contextlib.suppress(OSError):
                self.shadow_report(state)
            return self._promote(state, color, kind="shadow")

    def promote_canary(self) -> DeployResult:
        """All traffic to the canary, verified, made live (see `_promote`)."""
        with self._lock():
            state = self.store.load()
            self.reconcile(state)
            canary = self._canary(state)
            if canary is None:
                raise ConfigError("no canary is running", hint="start one with `mlship deploy --strategy canary`")
            return self._promote(state, canary, kind="canary")

    # Promotion: a transaction --------------------------------------------------------------

    def _promote(self, state: DeployState, color: str, *, kind: str) -> DeployResult:
        """Make the running shadow or canary on `color` live, or leave the previous release live.

        Before any weight changes, everything that can refuse the candidate runs
        (`_promotion_checks`): a refusal ends the candidate and exits with the cause's code, live
        never moved. Then intent (state.pending, with this command's pid) is written, traffic
        switches, and verification runs; from the switch on, *any* exception — a failed
        verification, an unexpected error, Ctrl-C — switches back, records why and exits
        non-zero. A command killed after the switch leaves the pending promotion for the next
        command's `reconcile`, which switches back.
        """
        live = state.live
        release = state.colors[color].with_(deployed_at=time.time())
        previous = state.colors.get(live) if live else None
        info = state.shadow if kind == "shadow" else None
        warm = Release.from_dict(info["warm"]) if info and info.get("warm") else None
        where = f"{previous.label} on {live} is still live" if previous and live else "nothing is live"
        try:
            golden = self._promotion_checks(state, color, release, kind)
        except Exception as exc:  # noqa: BLE001 - any refusal before the switch ends the candidate, live never moved
            reason = _why(exc)
            self._end_candidate(state, color, kind)
            refused = f"promotion refused before the switch: {reason}"
            self.store.record(release.with_(outcome="rejected", detail=refused))
            raise _as_error(
                exc, f"promotion of {kind} {release.label} refused before the switch: {reason}", hint=where
            ) from None
        state.pending = {
            "kind": f"promote-{kind}",
            "color": color,
            "release": release.to_dict(),
            "step": "verifying",
            "previous": live,
            "warm": warm.to_dict() if warm else None,
            "pid": os.getpid(),
        }
        state.colors[color] = release.with_(outcome="verifying")
        state.live = color
        state.shadow = None
        state.canary = None
        self.store.save(state)  # intent before the switch: the state names what the router will serve
        guard = self._spawn_guard()  # switches back if this command is killed from here on
        try:
            start = time.monotonic()
            try:
                if kind == "shadow":
                    self.target.set_shadow(None, 1.0)  # type: ignore[attr-defined]
                self.target.set_weights({color: 100})
                switch_s = round(time.monotonic() - start, 4)
                checkpoint("switched")
                checked = verify(
                    self.target,
                    color,
                    golden,
                    window_s=self.cfg.verify_window_s,
                    max_error_rate=self.cfg.max_error_rate,
                    max_p99_ms=self.cfg.max_p99_ms,
                )
                failure = None if checked.ok else f"verification failed: {checked.reason}"
            except BaseException as exc:  # any exception after the switch: switch back first, then say why
                reason = _why(exc)
                self._fail_promotion(state, color, live, warm, release, reason)
                if not isinstance(exc, Exception):
                    raise  # Ctrl-C, SystemExit: switched back, the interruption goes on
                raise _as_error(exc, f"promotion of {kind} {release.label} rolled back: {reason}", hint=where) from None
            if failure is not None:
                self._fail_promotion(state, color, live, warm, release, failure)
                raise PipelineRejected(f"promotion of {kind} {release.label} rolled back: {failure}", hint=where)
            state.pending["step"] = "verified"
            state.pending["detail"] = checked.reason
            self.store.save(state)
            checkpoint("verified")
            self._finish(state, color, release, live=live, detail=f"{kind} promoted: {checked.reason}")
        finally:
            if guard is not None:
                _cancel_retire(guard)  # the promotion settled: nothing left to guard
        done = DeployResult(
            f"promote-{kind}",
            self.env,
            self.target.name,
            release.with_(outcome="live"),
            self.target.live_url(),
            color,
            previous=previous,
            verify=checked,
            weights={color: 100},
            timings_s={"switch": switch_s},
        )
        self._report(done)
        return done

    def _promotion_checks(self, state: DeployState, color: str, release: Release, kind: str) -> Golden:
        """What can refuse a promotion before any weight changes; returns the golden rows for verification.

        The candidate still running; what it recorded while it ran as a shadow (its copies) or a
        canary (its share), against the same limits verification uses; the model's golden rows
        (download and integrity check included: a tampered artifact or an unreachable MLflow
        refuses here, with its own exit code); and its smoke test again on its own endpoint
        (/health, /ready, version, golden answers, latency).
        """
        if not self.target.running(color):
            raise PipelineRejected(f"the {kind} on {color} is not running")
        problem = self._recorded_problem(state, color, kind)
        if problem is not None:
            raise PipelineRejected(problem)
        try:
            golden = self.golden(release)
        except MlshipError:
            raise
        except Exception as exc:  # noqa: BLE001 - a model that raises on its own example is refused (exit 1)
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise PipelineRejected(f"the model raised on its input example ({type(exc).__name__}: {text})") from None
        try:
            preview = self.target.preview_url(color)
        except ColorFailed as exc:
            raise PipelineRejected(str(exc)) from None
        result = smoke(preview, golden, latency_budget_ms=self.cfg.smoke_latency_ms, expected_version=release.version)
        if not result.ok:
            failed = "; ".join(f"{c.name}: {c.detail}" for c in result.failures)
            raise PipelineRejected(f"smoke test failed ({failed})")
        return golden

    def _recorded_problem(
        self, state: DeployState, color: str, kind: str, figures: dict[str, Any] | None = None
    ) -> str | None:
        """The candidate's own record as a shadow (its copies) or a canary (its share), over the limits?"""
        from mlship.deploy.verify import MIN_REQUESTS

        max_rate, max_p99 = self.cfg.max_error_rate, self.cfg.max_p99_ms
        if kind == "shadow":
            if figures is None:
                stats = getattr(self.target, "shadow_stats", None)
                figures = stats() if stats is not None else None
            if not figures:
                return None  # nothing recorded (or unreadable): verification after the switch decides
            n, errors, p99 = int(figures["requests"]), int(figures["errors"]), figures["latency_ms"]["p99"]
            what, top = "copies", float("inf")
        else:
            info = state.canary or {}
            base = _signal_from(info.get("baseline")) if info.get("color") == color else None
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

    def _spawn_detached(self, module: str, spec_file: Path, log: str, extra: dict[str, Any]) -> dict[str, Any]:
        """Start `python -m <module> <spec>`, a process that outlives this command (guard, retirement).

        Its spec (0600: it holds the settings) carries what it needs to rebuild this controller.
        """
        from mlship.deploy.targets.local import spawn
        from mlship.redaction import MLFLOW_CLIENT_SECRETS

        spec = {
            "state_dir": str(self.store.dir),
            "root": str(self.settings.root),
            "settings": self.settings.model_dump(mode="json"),
            "target": self.target.name,
            "env": self.env,
            "namespace": getattr(self.target, "namespace", None),
            **extra,
        }
        write_json(spec_file, spec)
        spec_file.chmod(0o600)
        argv = [sys.executable, "-m", module, str(spec_file)]
        return spawn(argv, self.store.dir / log, cwd=self.settings.root, secrets=MLFLOW_CLIENT_SECRETS)

    def _spawn_guard(self) -> dict[str, Any] | None:
        """Start the detached guard that switches back if this command dies mid-promotion (mlship.deploy.guard).

        Only where detached processes are ours to start (the CLI: `schedule_retirement`); without a
        guard, the next command's `reconcile` switches back.
        """
        if not self.schedule_retirement:
            return None
        from mlship.deploy import guard
        from mlship.deploy.targets.local import _start_time
        from mlship.deploy.verify import SIGNAL_GRACE_S

        window = self.cfg.verify_window_s
        extra = {
            "pid": os.getpid(),
            "started": _start_time(os.getpid()),
            "max_s": window + max(2 * window, SIGNAL_GRACE_S) + 600.0,  # verification is bounded
        }
        try:
            return self._spawn_detached("mlship.deploy.guard", guard.spec_path(self.store.dir), "guard.log", extra)
        except ColorFailed as exc:  # no guard: the next command still reconciles
            with (self.store.dir / "guard.log").open("a") as log:
                log.write(f"cannot start the promotion guard: {exc}\n")
            return None

    def _end_candidate(self, state: DeployState, color: str, kind: str) -> None:
        """A promotion refused before the switch: the shadow or canary ends, live never moved."""
        if kind == "shadow":
            self._end_shadow(state)
            return
        if state.live is not None:
            self.target.set_weights({state.live: 100})  # the canary's share back first
        self.target.stop(color)
        state.colors.pop(color, None)
        state.canary = None
        self.store.save(state)

    def _fail_promotion(
        self, state: DeployState, color: str, live: str | None, warm: Release | None, release: Release, reason: str
    ) -> None:
        """After the switch: traffic back to `live`, the candidate stopped, why recorded.

        If the switch back itself fails, the pending promotion stays in the state (the next
        command's `reconcile` switches back) and the error says so.
        """
        try:
            self._undo(state, color, live, warm, switched=True)
        except Exception as exc:  # noqa: BLE001 - the router or cluster did not take the switch back
            raise InfraError(
                f"promotion of {release.label} failed ({reason}) and switching back to {live} failed: {_why(exc)}",
                hint="run `mlship status`: it switches back (the state still names the promotion)",
            ) from None
        self.store.record(release.with_(outcome="rolled back", detail=reason))

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
        copying = getattr(self.target, "shadowing", None)
        if copying is not None and copying() != color:
            self.target.set_shadow(color, float(info.get("sample", 1.0)))  # type: ignore[attr-defined]
            return [f"the shadow on {color} gets copies again"]
        return []

    def _finish(self, state: DeployState, color: str, release: Release, *, live: str | None, detail: str) -> None:
        """A verified blue-green release becomes live: champion, state, history, the warm previous."""
        if self.env == "production" and release.name and release.version:
            self.registry.set_alias(release.name, "champion", release.version)
        state.live = color
        state.colors[color] = release.with_(outcome="live")
        state.pending = None
        state.previous_until = time.time() + self.cfg.rollback_window_s if live else None
        self.store.save(state)
        self.store.record(release.with_(outcome="live", detail=detail))
        settle = getattr(self.target, "release_parked", None)  # local: the older release parked behind it
        if settle is not None:
            settle(color)
        self._reap(state)
        self._schedule_retire(state)
        self.store.save(state)

    def _undo(self, state: DeployState, idle: str, live: str | None, warm: Release | None, *, switched: bool) -> None:
        """Refuse a candidate on `idle`: traffic back to `live`, the candidate stopped, the warm release kept."""
        if switched:
            self.target.set_weights({live: 100} if live else {})
        self.target.stop(idle)  # the local target brings back the release parked behind the candidate
        if warm is not None and self.target.running(idle):
            state.colors[idle] = warm
        else:
            state.colors.pop(idle, None)
        state.live = live
        state.pending = None
        if (state.canary or {}).get("color") == idle:
            state.canary = None
        if live is None:
            self.target.down()  # a refused first deploy leaves nothing listening
            state.colors = {}
        self.store.save(state)

    def reconcile(self, state: DeployState) -> list[str]:
        """Make what runs agree with the state before acting (call under the lock); return what changed.

        - A deploy that died before its verification passed (`pending`, any step but
          "verified") is undone: traffic back to the previous color, the candidate stopped,
          the release it replaced kept warm. One that died after it passed is finished.
        - A live color that stopped running while the previous color still runs: the router
          has (or now) failed over to it; the state adopts the failover and records why.
        - The router is restarted if it is down, and routes only to the colors the state
          names live (or canary).
        """
        notes: list[str] = []
        pending = state.pending
        if pending is not None:
            color, step = str(pending["color"]), str(pending.get("step"))
            release = Release.from_dict(pending["release"])
            previous = pending.get("previous")
            if step == "verified":
                detail = f"{pending.get('detail', 'verified')}; finished by the next command after the deploy died"
                self._finish(state, color, release, live=previous, detail=detail)
                notes.append(f"finished the interrupted deploy of {release.label}: it had passed verification")
            else:
                warm = Release.from_dict(pending["warm"]) if pending.get("warm") else None
                back = previous if previous and self.target.running(previous) else None
                self._undo(state, color, back, warm, switched=step == "verifying")
                kind = str(pending.get("kind") or "deploy")
                if kind.startswith("promote-"):  # a promotion's command that is gone: failed, switched back
                    what = f"promotion of the {kind.removeprefix('promote-')}"
                    who = f"its command (pid {pending['pid']})" if pending.get("pid") else "its command"
                    reason = f"{who} died ({step}) before the promotion was verified; switched back to {back or '-'}"
                else:
                    what, reason = "deploy", f"the deploy died ({step}) before it was verified"
                self.store.record(release.with_(outcome="rolled back", detail=reason))
                notes.append(f"undid the interrupted {what} of {release.label}: {reason}")
        notes += self._heal_shadow(state)
        notes += self._heal(state)
        if pending is None and not notes:
            settle = getattr(self.target, "release_parked", None)
            if settle is not None and self._canary(state) is None and self._shadow(state) is None:
                for color in COLORS:
                    settle(color)
        return notes

    def _heal(self, state: DeployState) -> list[str]:
        """Live color gone: adopt the failover to the warm previous one; route only to named colors."""
        live = state.live
        if live is None:
            return []
        notes: list[str] = []
        prev = other(live)
        info = getattr(self.target, "router_info", None)
        failover = (info() or {}).get("failover") if info is not None else None
        if not self.target.running(live) and prev in state.colors and self.target.running(prev):
            why = failover["reason"] if failover and failover.get("to") == prev else f"{live} stopped running"
            release = state.colors[prev]
            self.target.stop(live)
            state.colors.pop(live, None)
            state.live = prev
            state.previous_until = None
            if self.target.weights() != {prev: 100}:  # the router has not failed over itself (yet)
                self.target.set_weights({prev: 100})
            self.store.save(state)
            self.store.record(release.with_(outcome="live", detail=f"failover: {why}", deployed_at=time.time()))
            return [f"failed over to {prev} ({release.label}): {why}"]
        self.target.prepare()  # a dead router is restarted (it restores its persisted route)
        canary = self._canary(state)
        allowed = {live} | ({canary} if canary else set())
        routed = self.target.weights()
        if self.target.running(live) and (routed is None or not routed or not set(routed) <= allowed):
            self.target.set_weights({live: 100})
            notes.append(f"the router sent traffic to {sorted(routed or {})}; it routes to {live} again")
        elif canary is not None and routed and routed.get(live, 0) <= 0 and self.target.running(live):
            # a canary is a share, never all of it: the live color takes its part back
            share = int((state.canary or {}).get("weight") or 0) if (state.canary or {}).get("color") == canary else 0
            split = {live: 100 - share, canary: share} if 0 < share < 100 else {live: 100}
            self.target.set_weights(split)
            notes.append(f"the router sent all traffic to the canary {canary}; {live} takes its share back ({split})")
        return notes

    def rollback(self, to: str | None = None) -> DeployResult:
        """Back to the previous color in one switch; `to` an older release: a full blue-green deploy."""
        with self._lock():
            state = self.store.load()
            self.reconcile(state)
            self._reap(state)
            live = state.live
            canary = self._canary(state)
            if canary is not None and live and to is None:
                return self._switch_back(state, live, from_color=canary, action="abort-canary")
            if self._shadow(state) is not None:
                if to is None:
                    return self._stop_shadow(state, "shadow stopped by `mlship rollback`")
                self._stop_shadow(state, "shadow stopped by `mlship rollback --to`")
            prev = other(live) if live else None
            warm = prev is not None and prev in state.colors and self.target.running(prev)
            if to is None:
                if warm and prev is not None:
                    return self._switch_back(state, prev, from_color=live, action="rollback")
                target_release = self._previous_release(state)
            else:
                if warm and prev is not None and to in (state.colors[prev].version, state.colors[prev].uri):
                    return self._switch_back(state, prev, from_color=live, action="rollback")
                target_release = find_release(state.history, to)
            return self._deploy(
                state, target_release.with_(outcome="pending", detail=""), strategy="bluegreen", weight=0
            )

    def _previous_release(self, state: DeployState) -> Release:
        current = state.colors.get(state.live) if state.live else None
        for release in reversed(state.history):
            if release.outcome == "live" and current is not None and release.uri != current.uri:
                return release
        raise ConfigError("there is no previous release to roll back to", hint="see `mlship status` for the history")

    def _switch_back(self, state: DeployState, color: str, *, from_color: str | None, action: str) -> DeployResult:
        release = state.colors[color]
        start = time.monotonic()
        try:
            self.target.set_weights({color: 100})
        except ColorFailed as exc:
            raise InfraError(f"rollback to {color} failed: {exc}") from None
        switch_s = time.monotonic() - start
        previous = state.colors.get(from_color) if from_color else None
        state.live = color
        if action == "abort-canary" and from_color:
            self.target.stop(from_color)
            state.colors.pop(from_color, None)
            state.canary = None
            state.previous_until = None
        else:
            state.previous_until = time.time() + self.cfg.rollback_window_s
        self._schedule_retire(state)
        self.store.save(state)
        detail = f"{action} from {from_color}" if from_color else action
        self.store.record(release.with_(outcome="live", detail=detail, deployed_at=time.time()))
        done = DeployResult(
            action,
            self.env,
            self.target.name,
            release,
            self.target.live_url(),
            color,
            previous=previous,
            weights={color: 100},
            timings_s={"switch": round(switch_s, 4)},
        )
        self._report(done)
        return done

    def status(self) -> dict[str, Any]:
        """Live URL, live color, what runs on each color, the router, the history — and whether it serves.

        Reconciles first (unless a deploy holds the lock); `healthy` is true only when the live
        path answers /ready (local: through the router), else `problem` says what is down.
        """
        notes: list[str] = []
        busy = None
        try:
            with self._lock():
                notes = self.reconcile(self.store.load())
                state = self.store.load()  # with the history the reconciliation recorded
        except LockHeld as exc:
            busy = exc.message
            state = self.store.load()
        colors: dict[str, Any] = {}
        for color in COLORS:
            release = state.colors.get(color)
            colors[color] = {
                "running": self.target.running(color),
                "release": release.to_dict() if release else None,
            }
        info = getattr(self.target, "router_info", None)
        problem = self._problem(state)
        return {
            "env": self.env,
            "target": self.target.name,
            "live": state.live,
            "live_url": self.target.live_url() if state.live else None,
            "weights": self.target.weights() if state.live else None,
            "healthy": problem is None,
            "problem": problem,
            "reconciled": notes,
            "deploy_in_progress": busy,
            "pending": state.pending,
            "shadow": self.shadow_summary(state),
            "router": info() if info is not None else None,
            "colors": colors,
            "rollback_until": state.previous_until,
            "retire": self._retire_info(state),
            "history": [r.to_dict() for r in reversed(state.history)],
        }

    def _problem(self, state: DeployState) -> str | None:
        """None when live traffic is served; else what is down (one line for `status`)."""
        if state.live is None:
            return f"nothing is live in {self.env}"
        if not self.target.running(state.live):
            return f"the live color {state.live} is not running"
        probe = getattr(self.target, "live_problem", None)  # local: /ready through the router
        return probe() if probe is not None else None

    def down(self) -> list[str]:
        """Stop everything this environment started; the history stays."""
        with self._lock_after_retirement():
            stopped = self.target.down()
            state = self.store.load()
            if state.pending is not None:
                release = Release.from_dict(state.pending["release"])
                self.store.record(release.with_(outcome="rolled back", detail="stopped by `mlship down` mid-deploy"))
                state.pending = None
            if state.retire is not None and _cancel_retire(state.retire):
                stopped.append(f"retirement of {state.retire.get('color')} (pid {state.retire.get('pid')})")
            state.retire = None
            state.shadow = None
            state.canary = None
            state.live = None
            state.colors = {}
            state.previous_until = None
            self.store.save(state)
            return stopped

    # Helpers -------------------------------------------------------------------------------

    def _lock_after_retirement(self, wait_s: float = RETIREMENT_WAIT_S) -> contextlib.ExitStack:
        """The deploy lock, waiting (up to `wait_s`) while our own retirement process holds it.

        A retirement holds the lock only while it stops the previous color and records it (a few
        seconds at most); `down` racing it should wait for it, not fail. Any other holder (a
        deploy, a rollback) is reported at once, as before.
        """
        from mlship.deploy.targets.local import _ours

        deadline = time.monotonic() + wait_s
        while True:
            stack = contextlib.ExitStack()
            try:
                stack.enter_context(self._lock())
                return stack
            except LockHeld:
                retire = self.store.load().retire
                if retire is None or not _ours(retire) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    def _canary(self, state: DeployState) -> str | None:
        for color, release in state.colors.items():
            if release.outcome == "canary" and color != state.live:
                return color
        return None

    def _reap(self, state: DeployState) -> None:
        """Past the rollback window, stop the previous color (rollback then means a full deploy)."""
        if state.live is None or state.previous_until is None or time.time() < state.previous_until:
            return
        if self._canary(state) is not None or self._shadow(state) is not None:
            return
        idle = other(state.live)
        self.target.stop(idle)
        state.colors.pop(idle, None)
        state.previous_until = None
        self.store.save(state)

    def retire(self, color: str, uri: str, until: float) -> str:
        """Stop `color` if it is still the previous color of the same release and its window is over.

        Called by the retirement process (mlship.deploy.retire) under the deploy lock; a later
        deploy or rollback changed the state, so it is then a no-op.
        """
        with self._lock():
            state = self.store.load()
            release = state.colors.get(color)
            if state.live is None or state.live == color or release is None or release.uri != uri:
                return f"not retiring {color}: it is live or runs another release now"
            if state.previous_until != until or time.time() < until:
                return f"not retiring {color}: a later switch moved the rollback window"
            if self._canary(state) is not None or self._shadow(state) is not None:
                return f"not retiring {color}: a canary or shadow is running"
            self.target.stop(color)
            state.colors.pop(color, None)
            state.previous_until = None
            state.retire = None
            self.store.save(state)
            return f"retired {color} ({release.label}): the rollback window ended; {state.live} stays live"

    def _schedule_retire(self, state: DeployState) -> None:
        """Replace any scheduled retirement with one for the current previous color (if any)."""
        if state.retire is not None:
            _cancel_retire(state.retire)
            state.retire = None
        if not self.schedule_retirement or state.live is None or state.previous_until is None:
            return
        color = other(state.live)
        release = state.colors.get(color)
        if release is None or self._canary(state) is not None or self._shadow(state) is not None:
            return
        from mlship.deploy import retire

        extra = {"color": color, "uri": release.uri, "until": state.previous_until}
        try:
            handle = self._spawn_detached("mlship.deploy.retire", retire.spec_path(self.store.dir), "retire.log", extra)
        except ColorFailed as exc:  # the switch stands; the next deploy/rollback still reaps it (`_reap`)
            with (self.store.dir / "retire.log").open("a") as log:
                log.write(f"cannot schedule the retirement of {color}: {exc}\n")
            return
        state.retire = {**handle, "color": color, "until": state.previous_until}

    def _retire_info(self, state: DeployState) -> dict[str, Any] | None:
        if state.live is None or state.previous_until is None or other(state.live) not in state.colors:
            return None
        record = state.retire or {}
        from mlship.deploy.targets.local import _ours

        return {
            "color": other(state.live),
            "at": state.previous_until,
            "scheduled": bool(record) and _ours(record),
        }

    def _report(self, result: DeployResult) -> None:
        reports = self.settings.reports_path
        write_json(reports / "deploy.json", result.to_dict())
        write_text(reports / "deploy.md", render_markdown(result))

    def reject_canary(self, reason: str = "canary rejected") -> DeployResult:
        """All traffic back to the live color, the canary stopped and recorded as rejected."""
        with self._lock():
            state = self.store.load()
            canary = self._canary(state)
            if canary is None or state.live is None:
                raise ConfigError("no canary is running", hint="start one with `mlship deploy --strategy canary`")
            release = state.colors[canary]
            done = self._switch_back(state, state.live, from_color=canary, action="abort-canary")
            self.store.record(release.with_(outcome="rejected", detail=reason, deployed_at=time.time()))
            done.action = "reject-canary"
            self._report(done)
            return done


def _why(exc: BaseException) -> str:
    """One line for the history and the error: what went wrong, without a traceback."""
    if isinstance(exc, MlshipError):
        return exc.message
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, ColorFailed):
        return f"verification failed: {text}"
    if not isinstance(exc, Exception):
        return f"interrupted ({type(exc).__name__})"
    return f"unexpected {type(exc).__name__}" + (f": {text}" if text else "")


def _as_error(exc: BaseException, message: str, *, hint: str) -> MlshipError:
    """The error a failed promotion exits with: the cause's own exit code; unexpected ones are exit 3."""
    if isinstance(exc, ConfigError):
        return ConfigError(message, hint=hint)
    if isinstance(exc, PipelineRejected | ColorFailed):
        return PipelineRejected(message, hint=hint)
    return InfraError(message, hint=hint)


def _signal_dict(signal: Signal | None) -> dict[str, Any] | None:
    if signal is None:
        return None
    return {
        "requests": signal.requests,
        "errors": signal.errors,
        "buckets": list(signal.buckets),
        "bounds_ms": list(signal.bounds_ms),
    }


def _signal_from(raw: Any) -> Signal | None:
    """A Signal back from the state (None when absent or not of that shape)."""
    if not isinstance(raw, dict):
        return None
    try:
        return Signal(
            int(raw["requests"]),
            int(raw["errors"]),
            tuple(int(b) for b in raw["buckets"]),
            tuple(float(b) for b in raw["bounds_ms"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _cancel_retire(record: dict[str, Any]) -> bool:
    """Stop a scheduled retirement process (only ours: pid and start time match); True if it ran."""
    from mlship.deploy.targets.local import _ours, terminate

    if not _ours(record):
        return False
    terminate(record, grace_s=2.0)
    return True


def render_markdown(result: DeployResult) -> str:
    r = result.release
    lines = [
        f"# {result.action}: {r.label} on {result.target}/{result.env}",
        "",
        f"- live URL: {result.live_url}",
        f"- live color: {result.live}; weights: {result.weights}",
        f"- model: `{r.uri}` (run {r.run_id or '-'}), image {r.image or '-'}, git {r.git_sha}",
        f"- previous: {result.previous.label if result.previous else '-'}",
    ]
    if result.smoke:
        lines += ["", "## Smoke test", "", "| check | ok | detail |", "|---|---|---|"]
        lines += [f"| {c.name} | {'yes' if c.ok else 'NO'} | {c.detail} |" for c in result.smoke.checks]
    if result.verify:
        lines += ["", "## Verification", "", f"{result.verify.reason} over {result.verify.window_s} s"]
    if result.timings_s:
        lines += ["", "## Timings (s)", "", ", ".join(f"{k} {v}" for k, v in result.timings_s.items())]
    return "\n".join(lines) + "\n"
