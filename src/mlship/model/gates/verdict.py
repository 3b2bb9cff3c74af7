"""The gate's verdict on the record: its tags, registering a passing candidate, refusing an ungated one.

The one owner of what a verdict means once it leaves the gate: the gate writes the tags here
(`log_verdict`), `mlship.registry` reads them through `RECORD_TAGS` and `gate_label`, a passing
candidate becomes `@challenger` only through `register_passing`, and `register`/`promote`
refuse a model whose recorded gate failed or never ran through `require_pass`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlship import integrity
from mlship.errors import ConfigError, PipelineRejected

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from mlship.model.gates.types import GateReport
    from mlship.registry import Registry
    from mlship.settings import Settings

GATE_TAG = "mlship.gate"
"""The gate's verdict (`pass`/`fail`), set on the candidate's run by the gate and copied to its version."""
GATE_WARNING_TAG = "mlship.gate_warning"
"""The gate passed with ⚠ not enough evidence on these gates (and what would settle each); empty otherwise."""
GATE_REPORT_TAG = "mlship.gate_report"
"""Where that gate's report is: the local gate.md, and the run artifact `gate/gate.md`."""
FORCED_TAG = "mlship.gate_override"
"""`--force --reason TEXT` on register/promote: the reason, recorded on the version."""
RECORD_TAGS = (GATE_TAG, GATE_WARNING_TAG, GATE_REPORT_TAG, FORCED_TAG, integrity.TAG)
"""What travels from a run to its registered version: the verdict, its report, an override, the model digest."""
INCONCLUSIVE_TAG_LIMIT = 500
"""Characters of the not-enough-evidence note recorded as a tag on the run and the version."""
REPORT_ARTIFACTS = "gate"
"""The run's artifact folder holding the gate's report."""


def gate_tags(report: GateReport) -> dict[str, str]:
    """The verdict tag, and the ⚠ note when some gate lacked the evidence (recorded on run and version).

    The note is written (possibly empty) every time, so a re-gated run does not keep an old warning.
    """
    return {GATE_TAG: report.verdict, GATE_WARNING_TAG: report.warning[:INCONCLUSIVE_TAG_LIMIT]}


def gate_label(record: Mapping[str, str]) -> str:
    """`pass`, `pass ⚠` (not enough evidence on some gate), `fail` or `never ran`, with `+ forced`
    when someone overrode the gate (and said why)."""
    verdict = record.get(GATE_TAG) or "never ran"
    if verdict == "pass" and record.get(GATE_WARNING_TAG):
        verdict = "pass ⚠"
    return f"{verdict} + forced" if record.get(FORCED_TAG) else verdict


def log_verdict(registry: Registry, report: GateReport, out_dir: Path) -> str | None:
    """Gate metrics, the verdict tags and where the report is, on the candidate's run, if this store has it.

    The report folder itself is uploaded by `log_report` once it is written (the gate writes it
    once, after this and any registration, so that it can say both).
    """
    run_id = report.candidate.run_id
    if not run_id:
        return None
    try:
        registry.run_metrics(run_id)
    except ConfigError:
        return None  # a model directory exported from another tracking store
    metrics = {f"gate.{g.name}": g.value for g in report.gates if g.value is not None and math.isfinite(g.value)}
    metrics["gate.passed"] = 1.0 if report.passed else 0.0
    metrics["gate.inconclusive"] = float(len(report.inconclusive))
    where = f"{(out_dir / 'gate.md').resolve()} (runs:/{run_id}/{REPORT_ARTIFACTS}/gate.md)"
    registry.log_to_run(run_id, metrics=metrics, tags={**gate_tags(report), GATE_REPORT_TAG: where})
    return run_id


def log_report(registry: Registry, run_id: str, out_dir: Path) -> None:
    """Upload the written report folder (gate.json, gate.md, plots) to the run's `gate/` artifacts."""
    registry.log_to_run(run_id, artifacts=out_dir, artifact_path=REPORT_ARTIFACTS)


@dataclass(frozen=True)
class Registered:
    """The version a passing candidate became `@challenger` as."""

    label: str
    version: str | None

    @property
    def line(self) -> str:
        return f"{self.label} is @challenger"


def register_passing(registry: Registry, settings: Settings, report: GateReport) -> Registered:
    """After a pass: make the candidate `@challenger` (a new version unless it is one). Never `champion`."""
    if not report.passed:
        raise ConfigError("refusing to register a candidate that failed the gate")
    cand = report.candidate
    if cand.name == settings.model_name and cand.version:
        registry.set_version_tags(settings.model_name, cand.version, gate_tags(report))
        registry.set_alias(settings.model_name, "challenger", cand.version)
        return Registered(cand.label, cand.version)
    if cand.uri.startswith(("runs:/", "models:/")):
        source = cand.uri
    elif report.logged_to_run:
        source = report.logged_to_run  # a run id: its logged model
    else:
        raise ConfigError(
            f"cannot register {cand.ref}: it is not tracked in {settings.resolved_tracking_uri}",
            hint="gate a models:/ or runs:/ URI, or a directory exported by `mlship train` against this store",
        )
    resolved = registry.register(source, settings.model_name, alias="challenger", tags=gate_tags(report))
    return Registered(resolved.label, resolved.version)


def require_pass(
    record: Mapping[str, str], what: str, gate_cmd: str, force: bool, reason: str | None, warn: Callable[[str], None]
) -> str | None:
    """None when the recorded gate passed; the override reason under --force (after `warn`); else refuse (exit 1)."""
    if force and not (reason or "").strip():
        raise ConfigError("--force needs --reason TEXT", hint="say why the gate is overridden; it is recorded")
    if reason and not force:
        raise ConfigError("--reason is only meaningful with --force", hint="add --force, or drop --reason")
    verdict = record.get(GATE_TAG)
    if verdict == "pass":
        return None
    if force:
        assert reason is not None
        warn(f"warning: {what}: gate {verdict or 'never ran'}; overridden: {reason}")
        return reason.strip()
    if verdict is None:
        raise PipelineRejected(
            f"{what} was never gated; refusing",
            hint=f"run `{gate_cmd}` first, or pass --force --reason TEXT",
        )
    report = record.get(GATE_REPORT_TAG, "the gate report")
    raise PipelineRejected(
        f"{what} failed its gate; refusing (report: {report})",
        hint="fix the model, or pass --force --reason TEXT to override on the record",
    )
