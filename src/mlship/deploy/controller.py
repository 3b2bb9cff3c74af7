"""The blue-green controller: one code path for every target (design.md, "Blue-green, precisely").

resolve once → lock → start idle → wait ready → smoke idle → switch (or canary split) →
verify live → keep the previous color warm for the rollback window → record. Any failure
after the switch switches back and raises PipelineRejected (exit 1); the live color only
ever moves to a color that passed its smoke test. This module holds the switch and its
verification, reconciliation, rollback and status; its parts live beside it (context,
retirement, shadow_lifecycle, promotion).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from mlship.deploy import options, process
from mlship.deploy.faults import checkpoint
from mlship.deploy.lock import LockHeld
from mlship.deploy.promotion import Promotion
from mlship.deploy.release import COLORS, DeployState, Release, other, rollback_target
from mlship.deploy.result import DeployResult, signal_dict
from mlship.deploy.smoke import Golden, SmokeResult, smoke
from mlship.deploy.targets.base import ColorFailed
from mlship.deploy.verify import VerifyResult, verify
from mlship.errors import ConfigError, InfraError, MlshipError, PipelineRejected


@dataclass
class _Attempt:
    """One deploy in flight: the release bound for the idle color, what it replaces, its clock."""

    release: Release
    idle: str
    live: str | None
    previous: Release | None
    warm: Release | None
    clock: float
    timings: dict[str, float] = field(default_factory=dict)


class Controller(Promotion):
    """Blue-green over one target for one environment; a context manager that closes the target."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.target.close()

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
            if strategy == "canary" and self.target.supports_sticky:
                self.target.set_sticky(sticky)  # a canary without --sticky-key routes at random again
            return self._deploy(state, release, strategy=strategy, weight=weight, sample=sample)

    def check_options(self, strategy: str, *, weight: int, sample: float, sticky: str | None) -> None:
        """Usage errors (exit 2) before anything runs."""
        options.check_options(self.target, strategy, weight=weight, sample=sample, sticky=sticky)

    def preflight(self) -> None:
        """Fail fast, before any model is resolved or loaded: a held lock, a busy live port."""
        with self._lock():
            pass
        self.target.preflight()  # targets that own a port check it here

    def _deploy(
        self, state: DeployState, release: Release, *, strategy: str, weight: int, sample: float = 1.0
    ) -> DeployResult:
        """The deploy proper. Intent is written to the state before each action (see `reconcile`)."""
        clock = time.monotonic()
        live = state.live if state.live and self.target.running(state.live) else None
        if strategy in ("canary", "shadow") and live is None:
            raise ConfigError(
                f"a {strategy} needs a live color to take traffic from", hint="deploy with bluegreen first"
            )
        idle = other(live) if live else (state.live and other(state.live)) or "blue"
        attempt = _Attempt(
            release=release.with_(color=idle, env=self.env, target=self.target.name, deployed_at=time.time()),
            idle=idle,
            live=live,
            previous=state.colors.get(live) if live else None,
            warm=state.colors.get(idle),  # the release a rollback goes to: the target keeps it warm until verified
            clock=clock,
        )
        golden, result = self._start_and_smoke(state, attempt)
        if strategy == "shadow" and live is not None:
            return self._start_shadow(
                state, attempt.release, live=live, warm=attempt.warm, sample=sample, smoke=result, clock=clock
            )
        return self._switch_and_verify(state, attempt, golden, result, strategy=strategy, weight=weight)

    def _reject(self, state: DeployState, attempt: _Attempt, reason: str, *, switched: bool) -> PipelineRejected:
        """Refuse the deploy: undo it, record why, and the error that says what is still live."""
        release, live, previous = attempt.release, attempt.live, attempt.previous
        self._undo(state, attempt.idle, live, attempt.warm, switched=switched)
        self.store.record(release.with_(outcome="rolled back" if switched else "rejected", detail=reason))
        where = f"{previous.label} on {live} is still live" if previous and live else "nothing is live"
        return PipelineRejected(f"deploy of {release.label} rolled back: {reason}", hint=where)

    def _start_and_smoke(self, state: DeployState, attempt: _Attempt) -> tuple[Golden, SmokeResult]:
        """The idle color started with the release, ready and smoke-tested on its own endpoint; live never moved."""
        release, idle = attempt.release, attempt.idle
        try:
            golden = self.golden(release)
        except MlshipError:
            raise
        except Exception as exc:  # noqa: BLE001 - a model that raises on its own example is refused (exit 1)
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            why = f"the model raised on its input example ({type(exc).__name__}: {text})"
            raise self._reject(state, attempt, why, switched=False) from None
        self.target.prepare()  # after the golden rows: a model that cannot give them starts nothing
        state.pending = {
            "color": idle,
            "release": release.to_dict(),
            "step": "starting",
            "previous": attempt.live,
            "warm": attempt.warm.to_dict() if attempt.warm else None,
        }
        self.store.save(state)  # intent first: a crash from here leaves a candidate the next command stops
        try:
            self.target.start(idle, release)
            checkpoint("idle-started")
            self.target.wait_ready(idle, self.cfg.ready_timeout_s)
        except ColorFailed as exc:
            raise self._reject(state, attempt, str(exc), switched=False) from None
        attempt.timings["ready"] = round(time.monotonic() - attempt.clock, 3)
        try:
            preview = self.target.preview_url(idle)
        except ColorFailed as exc:
            raise self._reject(state, attempt, str(exc), switched=False) from None
        result = smoke(preview, golden, latency_budget_ms=self.cfg.smoke_latency_ms, expected_version=release.version)
        attempt.timings["smoke"] = round(time.monotonic() - attempt.clock, 3)
        if not result.ok:
            failed = "; ".join(f"{c.name}: {c.detail}" for c in result.failures)
            raise self._reject(state, attempt, f"smoke test failed ({failed})", switched=False)
        checkpoint("smoke-passed")
        return golden, result

    def _switch_and_verify(
        self, state: DeployState, attempt: _Attempt, golden: Golden, result: SmokeResult, *, strategy: str, weight: int
    ) -> DeployResult:
        """Switch live traffic (or a canary's share) to the smoke-tested color and verify it; undo on failure."""
        release, idle, live, timings = attempt.release, attempt.idle, attempt.live, attempt.timings
        weights = {idle: 100} if strategy == "bluegreen" else {live or "blue": 100 - weight, idle: weight}
        # Intent before the switch: the state names the candidate (live, unverified, or canary)
        # before the router sends it a single request.
        assert state.pending is not None  # written by _start_and_smoke
        state.pending["step"] = "verifying"
        state.colors[idle] = release.with_(outcome="verifying" if strategy == "bluegreen" else "canary")
        if strategy == "bluegreen":
            state.live = idle
        else:  # the counters the canary's own share will be judged from at its promotion
            state.canary = {
                "color": idle,
                "uri": release.uri,
                "weight": weight,
                "baseline": signal_dict(self.target.signal(idle)),
            }
        self.store.save(state)
        switch_start = time.monotonic()
        try:
            self.target.set_weights(weights)
        except ColorFailed as exc:
            raise self._reject(state, attempt, str(exc), switched=True) from None
        timings["switch"] = round(time.monotonic() - switch_start, 4)
        checkpoint("switched")
        if strategy == "canary":
            weights = self.target.weights() or weights  # kubernetes quantises a split to whole pods
        checked = self._verify(state, attempt, golden)
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
        timings["total"] = round(time.monotonic() - attempt.clock, 3)
        deployed = DeployResult(
            action="deploy" if strategy == "bluegreen" else "canary",
            env=self.env,
            target=self.target.name,
            release=release.with_(outcome=outcome),
            live_url=self.target.live_url(),
            live=state.live,
            previous=attempt.previous,
            smoke=result,
            verify=checked,
            weights=weights,
            timings_s=timings,
        )
        self._report(deployed)
        return deployed

    def _verify(self, state: DeployState, attempt: _Attempt, golden: Golden) -> VerifyResult:
        """Verify the switched color on its live path for the window; a failure switches back (PipelineRejected)."""
        try:
            checked = verify(
                self.target,
                attempt.idle,
                golden,
                window_s=self.cfg.verify_window_s,
                max_error_rate=self.cfg.max_error_rate,
                max_p99_ms=self.cfg.max_p99_ms,
            )
        except ColorFailed as exc:
            raise self._reject(state, attempt, f"verification failed: {exc}", switched=True) from None
        attempt.timings["verify"] = checked.window_s
        if not checked.ok:
            raise self._reject(state, attempt, f"verification failed: {checked.reason}", switched=True)
        return checked

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
        self.target.release_parked(color)  # local: the older release parked behind it
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
        if pending is None and not notes and self._canary(state) is None and self._shadow(state) is None:
            for color in COLORS:
                self.target.release_parked(color)
        return notes

    def _heal(self, state: DeployState) -> list[str]:
        """Live color gone: adopt the failover to the warm previous one; route only to named colors."""
        live = state.live
        if live is None:
            return []
        notes: list[str] = []
        prev = other(live)
        failover = (self.target.router_info() or {}).get("failover")
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
            back = rollback_target(state, self.target.running, to)
            if back is None:
                raise ConfigError(
                    "there is no previous release to roll back to", hint="see `mlship status` for the history"
                )
            if back.color is not None:
                return self._switch_back(state, back.color, from_color=live, action="rollback")
            target_release = back.release
            return self._deploy(
                state, target_release.with_(outcome="pending", detail=""), strategy="bluegreen", weight=0
            )

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
        problem = self._problem(state)
        back = rollback_target(state, lambda color: bool(colors[color]["running"]))
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
            "router": self.target.router_info(),
            "colors": colors,
            "rollback_until": state.previous_until,
            # what `mlship rollback` would bring back: the same rule the rollback acts on
            "rollback_to": None
            if back is None
            else {"label": back.release.label, "version": back.release.version, "color": back.color, "warm": back.warm},
            "retire": self._retire_info(state),
            "history": [r.to_dict() for r in reversed(state.history)],
        }

    def _problem(self, state: DeployState) -> str | None:
        """None when live traffic is served; else what is down (one line for `status`)."""
        if state.live is None:
            return f"nothing is live in {self.env}"
        if not self.target.running(state.live):
            return f"the live color {state.live} is not running"
        return self.target.live_problem()  # local: /ready through the router

    def down(self) -> list[str]:
        """Stop everything this environment started; the history stays."""
        with self._lock_after_retirement():
            stopped = self.target.down()
            state = self.store.load()
            if state.pending is not None:
                release = Release.from_dict(state.pending["release"])
                self.store.record(release.with_(outcome="rolled back", detail="stopped by `mlship down` mid-deploy"))
                state.pending = None
            if state.retire is not None and process.cancel(state.retire):
                stopped.append(f"retirement of {state.retire.get('color')} (pid {state.retire.get('pid')})")
            state.retire = None
            state.shadow = None
            state.canary = None
            state.live = None
            state.colors = {}
            state.previous_until = None
            self.store.save(state)
            return stopped

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
