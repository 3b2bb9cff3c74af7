"""The end-to-end job `mlship run`: every ML stage in order on this machine, with timings and a summary.

synth (only if the data file is missing) → validate → train → gate → register as `challenger` →
deploy that version blue-green to the local target's staging environment (unless
`deploy=False`). Each stage is the same library function its own `mlship <stage>` command calls; a stage
that says *no* stops the run with exit 1 and nothing after it happens (nothing registered).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlship import notify
from mlship.data import validation
from mlship.data.io import read_table
from mlship.data.synth import write_synthetic
from mlship.deploy.factory import controller
from mlship.errors import PipelineRejected
from mlship.fsutil import write_json, write_text
from mlship.model.gates import verdict
from mlship.model.gates.run import run_gate
from mlship.model.train import train
from mlship.monitoring.drift import detect
from mlship.registry import Registry

if TYPE_CHECKING:
    from mlship.model.gates.types import GateReport
    from mlship.settings import Settings


@dataclass
class StageTiming:
    name: str
    seconds: float
    status: str
    detail: str = ""


@dataclass
class RunSummary:
    """What one `mlship run` did: per-stage timings and the resulting model."""

    data: str
    stages: list[StageTiming] = field(default_factory=list)
    run_id: str | None = None
    model_uri: str | None = None
    model_version: str | None = None
    live_url: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    reports: str = ""
    success: bool = False
    failure: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "failure": self.failure,
            "data": self.data,
            "run_id": self.run_id,
            "model_uri": self.model_uri,
            "model_version": self.model_version,
            "live_url": self.live_url,
            "metrics": self.metrics,
            "reports": self.reports,
            "stages": [vars(s) for s in self.stages],
            "total_seconds": round(sum(s.seconds for s in self.stages), 3),
        }


Progress = Callable[[str], None]


def run(
    settings: Settings,
    *,
    data_path: Path | None = None,
    rows: int | None = None,
    progress: Progress | None = None,
    drift: float | None = None,
    deploy: bool = False,
) -> RunSummary:
    """Run the job; raises PipelineRejected (exit 1) when a stage says no, after writing run.json.

    With `deploy`, the registered version is deployed blue-green to local/staging; a deploy
    that was rolled back is a *no* like any other stage.
    """
    say = progress or (lambda _msg: None)
    path = data_path or settings.data_path
    reports = settings.reports_path
    summary = RunSummary(data=str(path), reports=str(reports))

    def stage(name: str, fn: Callable[[], str]) -> None:
        say(f"{name}…")
        started = time.perf_counter()
        try:
            detail = fn()
        except PipelineRejected as exc:
            summary.stages.append(StageTiming(name, time.perf_counter() - started, "failed", str(exc)))
            summary.failure = f"{name}: {exc}"
            _write(summary, reports)
            raise
        summary.stages.append(StageTiming(name, time.perf_counter() - started, "ok", detail))
        say(f"{name}: {detail} ({summary.stages[-1].seconds:.1f}s)")

    if not path.exists():
        stage("synth", lambda: write_synthetic(path, rows=rows or settings.synth_rows, seed=settings.seed))

    def do_validate() -> str:
        report = validation.validate_file(path, settings.suite_path, settings)
        validation.write_report(report, reports)
        if not report.valid:
            names = ", ".join(f"{o.expectation}({o.column or 'table'})" for o in report.failures[:3])
            raise PipelineRejected(
                f"data invalid: {len(report.failures)} expectation(s) failed: {names}",
                hint=f"see {reports / 'validate.md'}",
            )
        return f"{len(report.outcomes)} expectations passed on {report.rows:,} rows ({len(report.warnings)} warnings)"

    stage("validate", do_validate)

    def do_train() -> str:
        result = train(settings, path)
        write_json(reports / "train.json", result.to_dict())
        summary.run_id, summary.model_uri, summary.metrics = result.run_id, result.run_model_uri, result.metrics
        return f"run {result.run_id[:12]}, roc_auc {result.metrics['roc_auc']:.4f}"

    stage("train", do_train)

    gated: dict[str, GateReport] = {}

    def do_gate() -> str:
        assert summary.model_uri is not None
        report = run_gate(settings, summary.model_uri, data_path=path, report_dir=reports / "gate")
        notify.gate(settings, report, reports / "gate")
        if not report.passed:
            raise PipelineRejected(f"gate failed: {report.summary}", hint=f"see {reports / 'gate' / 'gate.md'}")
        gated["report"] = report
        return report.summary

    stage("gate", do_gate)
    stage("register", lambda: register_gated(settings, gated["report"], summary))
    if deploy:
        deploy_once = notify.guard("deploy", lambda s: deploy_registered(s, summary), env="staging")
        stage("deploy", lambda: deploy_once(settings))
    if drift is not None:
        retrain_on_drift(settings, path, drift, stage, summary)
    summary.success = True
    _write(summary, reports)
    return summary


def deploy_registered(settings: Settings, summary: RunSummary) -> str:
    """Deploy the version just registered (`models:/<name>/<version>`, never the alias) to local/staging."""
    with controller(settings, "local", "staging") as ctl:
        release = ctl.resolve(f"models:/{settings.model_name}/{summary.model_version}")
        result = ctl.deploy(release)
    notify.deployed(settings, result)
    summary.live_url = result.live_url
    return f"{result.release.label} is live on {result.live} at {result.live_url}"


def retrain_on_drift(
    settings: Settings,
    reference: Path,
    drift: float,
    stage: Callable[[str, Callable[[], str]], None],
    summary: RunSummary,
) -> None:
    """The monitoring loop on synthetic drift: new data drifts → the drift check says so → retrain.

    The retrained model goes through the same gate as any candidate (on the drifted data) and only
    then is registered as the new `@challenger`; nothing is deployed (production moves only through
    a gated, approved deploy). A retrain that fails the gate stops the run (exit 1), unregistered.
    """
    current = settings.state_path / "monitoring" / f"current-drift-{drift:g}.parquet"
    rows = len(read_table(reference))
    stage("synth-drifted", lambda: write_synthetic(current, rows=rows, seed=settings.seed + 1, drift=drift))
    found: dict[str, bool] = {}

    def do_drift() -> str:
        report = detect(settings, reference, current, settings.reports_path)
        notify.drift(settings, report, settings.reports_path)
        found["drift"] = report.dataset_drift
        state = "DRIFT" if report.dataset_drift else "no drift"
        return f"{state}: {len(report.drifted)}/{len(report.features)} features drifted ({', '.join(report.drifted)})"

    stage("drift", do_drift)
    if not found["drift"]:
        return

    def do_retrain() -> str:
        result = train(settings, current)
        summary.run_id, summary.model_uri, summary.metrics = result.run_id, result.run_model_uri, result.metrics
        return f"retrained on drifted data: run {result.run_id[:12]}, roc_auc {result.metrics['roc_auc']:.4f}"

    stage("retrain", do_retrain)

    regated: dict[str, GateReport] = {}

    def do_regate() -> str:
        # the same gate as any candidate, on the data it will meet: a retrain is never registered ungated
        assert summary.model_uri is not None
        gate_dir = settings.reports_path / "gate-retrain"
        report = run_gate(settings, summary.model_uri, data_path=current, report_dir=gate_dir)
        notify.gate(settings, report, gate_dir)
        if not report.passed:
            raise PipelineRejected(
                f"the retrained model failed the gate and was not registered: {report.summary}",
                hint=f"see {gate_dir / 'gate.md'}",
            )
        regated["report"] = report
        return report.summary

    stage("gate-retrain", do_regate)
    stage("register-retrain", lambda: register_gated(settings, regated["report"], summary))


def register_gated(settings: Settings, report: GateReport, summary: RunSummary) -> str:
    """The candidate that just passed its gate becomes `@challenger`, through the verdict's one door."""
    registered = verdict.register_passing(Registry.from_settings(settings), settings, report)
    summary.model_version = registered.version
    return registered.line


def _write(summary: RunSummary, reports: Path) -> None:
    write_json(reports / "run.json", summary.to_dict())
    write_text(reports / "run.md", render_markdown(summary))


def render_markdown(summary: RunSummary) -> str:
    verdict = "✅ **Pipeline passed**" if summary.success else f"❌ **Pipeline stopped**: {summary.failure}"
    lines = [f"# mlship run: {verdict}", "", "| stage | status | seconds | detail |", "|---|---|---:|---|"]
    lines += [f"| {s.name} | {s.status} | {s.seconds:.2f} | {s.detail} |" for s in summary.stages]
    if summary.metrics:
        lines += ["", "| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in summary.metrics.items()]
    if summary.model_version:
        lines += ["", f"Model: version {summary.model_version} (`{summary.model_uri}`), alias `challenger`."]
    if summary.live_url:
        lines += ["", f"Deployed to local/staging: {summary.live_url} (stop it with `mlship down`)."]
    return "\n".join(lines) + "\n"
