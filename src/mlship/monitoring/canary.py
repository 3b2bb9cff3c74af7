"""Decide a running canary from its A/B events: promote, reject (switch back) or keep collecting.

The arms default to the deployment itself: the live color is the control, the canary color
the treatment, and the intended treatment share is the split the target reports. With
``apply``: promote goes through :meth:`Controller.promote_canary` (all traffic, verify, make
live), reject through :meth:`Controller.reject_canary` (all traffic back, canary stopped),
inconclusive changes nothing. A sample-ratio mismatch refuses to move anything: the split
the test relies on is broken, so neither arm's numbers can be trusted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlship.errors import ConfigError, InfraError, PipelineRejected
from mlship.monitoring.abtest_analysis import AbReport, analyse, count_arms, read_events, write_report

if TYPE_CHECKING:
    from mlship.deploy.controller import Controller
    from mlship.deploy.result import DeployResult


@dataclass(frozen=True)
class CanaryArms:
    """Which color is control (live) and treatment (canary), and the canary's intended share."""

    control: str
    treatment: str
    treatment_share: float | None


def canary_arms(ctl: Controller) -> CanaryArms:
    """Read the deployment: live color, canary color, and the target's current traffic split."""
    state = ctl.store.load()
    canary = next((c for c, r in state.colors.items() if r.outcome == "canary" and c != state.live), None)
    if canary is None or state.live is None:
        raise ConfigError(
            f"no canary is running in {ctl.env} to take the arms from",
            hint="deploy one with `mlship deploy --strategy canary`, or pass --control-arm and --treatment-arm",
        )
    weights = ctl.target.weights() or {}
    total = sum(weights.values())
    share = weights.get(canary, 0) / total if total and 0 < weights.get(canary, 0) < total else None
    return CanaryArms(state.live, canary, share)


@dataclass
class CanaryOutcome:
    """The A/B report and, when something moved, what the deploy did."""

    report: AbReport
    deployed: DeployResult | None = None


def decide_canary(
    events_path: Path,
    report_dir: Path,
    *,
    ctl: Controller | None = None,
    apply: bool = False,
    arm_column: str = "arm",
    outcome_column: str = "outcome",
    control_arm: str | None = None,
    treatment_arm: str | None = None,
    treatment_share: float | None = None,
    design: dict[str, Any] | None = None,
    unit_column: str | None = None,
) -> CanaryOutcome:
    """Analyse the events (arms given, or inferred from ``ctl``'s canary) and, with ``apply``, act.

    Always writes abtest.json/.md (also when the promotion is rolled back, which re-raises
    PipelineRejected). ``design`` holds alpha/power/mde/looks_done/max_looks/direction.
    """
    if apply and ctl is None:
        raise ConfigError("applying a decision needs a deployment", hint="pass --target and --env")
    if (control_arm is None) != (treatment_arm is None):
        raise ConfigError("pass both --control-arm and --treatment-arm, or neither", hint="neither: use the canary")
    inferred: CanaryArms | None = None
    if control_arm is None or apply:
        if ctl is None:
            raise ConfigError("no arms given and no deployment to infer them from", hint="pass both arm options")
        inferred = canary_arms(ctl)
    control = control_arm or (inferred.control if inferred else "")
    treatment = treatment_arm or (inferred.treatment if inferred else "")
    share = treatment_share
    if share is None and inferred is not None:
        share = inferred.treatment_share
        if share is None and apply:
            raise InfraError(
                f"cannot read the canary's traffic split on {ctl.target.name if ctl else '?'}",
                hint="the sample-ratio check needs it: pass --treatment-share",
            )
    if share is None and inferred is None:
        share = 0.5  # explicitly named arms: an even split unless --treatment-share says otherwise
    events = read_events(events_path, arm_column, outcome_column, unit_column)
    c, t = count_arms(events, control, treatment, source=str(events_path))
    report = analyse(c, t, expected_treatment_share=share, source=str(events_path), **(design or {}))
    if unit_column is not None:
        report.notes.append(f"one observation per key ({unit_column!r}): a key converts if any of its events did")
    if inferred is not None and control_arm is None:
        report.notes.append(f"arms from the deployment: live {control} = control, canary {treatment} = treatment")
    outcome = CanaryOutcome(report)
    if not apply or ctl is None:
        write_report(report, report_dir)
        return outcome
    try:
        outcome.deployed = _act(ctl, report)
    except PipelineRejected:
        report.action = "promotion rolled back (canary failed verification)"
        raise
    finally:
        write_report(report, report_dir)
    return outcome


def _act(ctl: Controller, report: AbReport) -> DeployResult | None:
    if report.state == "srm":
        report.action = "refused: sample ratio mismatch, nothing changed"
        return None
    if report.state == "inconclusive":
        report.action = f"none: keep collecting (need {report.need_per_arm} more per arm)"
        return None
    if report.state == "promote":
        report.action = "promoting"
        done = ctl.promote_canary()  # a failed verification switches back and raises PipelineRejected
        report.action = f"promoted: {done.release.label} is live on {done.live}"
        return done
    done = ctl.reject_canary(f"A/B test: {report.decision.reason}")
    report.action = f"rejected: canary stopped, all traffic on {done.live}"
    return done
