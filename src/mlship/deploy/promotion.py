"""Promotion of a running shadow or canary: a transaction that ends live or leaves live as it was.

Everything that can refuse the candidate runs before any weight changes; from the switch on,
any exception switches back. A detached guard (`mlship.deploy.guard`) switches back if the
promoting command itself dies.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from mlship.deploy import process
from mlship.deploy.faults import checkpoint
from mlship.deploy.release import DeployState, Release
from mlship.deploy.result import DeployResult
from mlship.deploy.shadow_lifecycle import ShadowLifecycle
from mlship.deploy.smoke import Golden, smoke
from mlship.deploy.targets.base import ColorFailed
from mlship.deploy.verify import SIGNAL_GRACE_S, VerifyResult, verify
from mlship.errors import ConfigError, InfraError, MlshipError, PipelineRejected


class Promotion(ShadowLifecycle):
    """`--promote-shadow` and `--promote-canary`: the candidate made live by a verified switch."""

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
        self._name_promotion(state, color, release, kind=kind, live=live, warm=warm)
        guard = self._spawn_guard()  # switches back if this command is killed from here on
        try:
            checked, switch_s = self._switch_and_verify_promotion(
                state, color, release, golden, kind=kind, live=live, warm=warm, where=where
            )
            assert state.pending is not None  # named by _name_promotion
            state.pending["step"] = "verified"
            state.pending["detail"] = checked.reason
            self.store.save(state)
            checkpoint("verified")
            self._finish(state, color, release, live=live, detail=f"{kind} promoted: {checked.reason}")
        finally:
            if guard is not None:
                process.cancel(guard)  # the promotion settled: nothing left to guard
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

    def _name_promotion(
        self, state: DeployState, color: str, release: Release, *, kind: str, live: str | None, warm: Release | None
    ) -> None:
        """Intent before the switch: the state names what the router will serve, and this command's pid."""
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
        self.store.save(state)

    def _switch_and_verify_promotion(
        self,
        state: DeployState,
        color: str,
        release: Release,
        golden: Golden,
        *,
        kind: str,
        live: str | None,
        warm: Release | None,
        where: str,
    ) -> tuple[VerifyResult, float]:
        """All traffic to `color`, then verification; any exception or failure switches back before it is raised."""
        start = time.monotonic()
        try:
            if kind == "shadow":
                self.target.set_shadow(None, 1.0)
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
        return checked, switch_s

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

    def _spawn_guard(self) -> dict[str, Any] | None:
        """Start the detached guard that switches back if this command dies mid-promotion (mlship.deploy.guard).

        Only where detached processes are ours to start (the CLI: `schedule_retirement`); without a
        guard, the next command's `reconcile` switches back.
        """
        if not self.schedule_retirement:
            return None
        window = self.cfg.verify_window_s
        extra = {
            "pid": os.getpid(),
            "started": process.start_time(os.getpid()),
            "max_s": window + max(2 * window, SIGNAL_GRACE_S) + 600.0,  # verification is bounded
        }
        try:
            return self._detached(process.GUARD_MODULE, process.GUARD_SPEC, "guard.log", extra)
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
