"""Run the gate: load the candidate (and the champion), score the held-out rows, run every gate, decide.

`run_gate` composes the gates of `checks` and `latency` into a GateReport, records the verdict
on the candidate's MLflow run (`verdict`), registers a passing candidate when asked, and then
writes the report folder once (`report`).
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mlship.data.io import read_table
from mlship.errors import ConfigError, InfraError, MlshipError
from mlship.integrity import IntegrityError
from mlship.model.gates import report as render
from mlship.model.gates import verdict
from mlship.model.gates.checks import (
    fairness_gates,
    metric_floor_gates,
    reproducibility_gate,
    robustness_gate,
    size_gate,
    versus_champion_gate,
)
from mlship.model.gates.fairness import FairnessReport, group_rates
from mlship.model.gates.latency import latency_gate, one_native_thread, served_latency
from mlship.model.gates.statistics import compare, mcnemar_pvalue
from mlship.model.gates.types import (
    THRESHOLD,
    ComparisonRow,
    EvalData,
    GateReport,
    GateResult,
    LatencyStats,
    LoadedModel,
    first_line,
)
from mlship.model.metrics import classification_metrics, positive_proba
from mlship.model.train import check_frame, split
from mlship.registry import Registry, load_model_dir, model_dir_info

if TYPE_CHECKING:
    import numpy as np

    from mlship.settings import GateSettings, Settings


def load_eval_data(settings: Settings, data_path: Path | None = None) -> EvalData:
    """`--data`'s deterministic test split; else `eval_data` used whole; else the test split of `data`."""
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)

    if data_path is None and settings.eval_data is not None:
        path = settings.path(settings.eval_data)
        df = read_table(path)
        check_frame(settings, df, what=str(path))
        source, train_path = f"{path} (whole file)", settings.data_path
    else:
        path = data_path or settings.data_path
        df = read_table(path)
        check_frame(settings, df, what=str(path))
        _, df = split(settings, df)
        source = f"test split of {path} (test_size {settings.test_size}, seed {settings.seed})"
        train_path = path
    groups = None
    if settings.sensitive_feature:
        if settings.sensitive_feature not in df.columns:
            raise ConfigError(
                f"{path} lacks the sensitive_feature column {settings.sensitive_feature!r}",
                hint="add the column to the data, or change sensitive_feature in the settings",
            )
        groups = df[settings.sensitive_feature].to_numpy(dtype=object)
    y = df[settings.target].astype(int).to_numpy()
    return EvalData(X=df[settings.features], y=np.asarray(y), groups=groups, source=source, train_path=train_path)


# Models ------------------------------------------------------------------------------------


def load_candidate(registry: Registry, ref: str, workdir: Path) -> LoadedModel:
    """Resolve and load the candidate; a reference naming nothing or a model that won't load is exit 2."""
    try:
        return _materialise(registry, ref, workdir / "candidate")
    except MlshipError:
        raise
    except Exception as exc:  # noqa: BLE001 — unpickling user models fails in any way
        raise ConfigError(
            f"candidate {ref} cannot be loaded: {first_line(exc)}",
            hint="pass an MLflow model directory or a models:/ or runs:/ URI of a logged scikit-learn model",
        ) from None


def champion_reference(settings: Settings, registry: Registry, champion: str | None, no_champion: bool) -> str | None:
    """The champion to compare with: explicit, else `models:/<name>@champion` if that alias exists."""
    if no_champion:
        return None
    if champion:
        return champion
    if registry.alias_version(settings.model_name, "champion") is None:
        return None
    return f"models:/{settings.model_name}@champion"


def load_champion(registry: Registry, ref: str, workdir: Path) -> LoadedModel:
    """Load the champion, failing closed: a champion that exists but won't load is exit 3.

    A champion whose files do not match their recorded sha256 (or, under --require-integrity,
    have no record) is exit 2 like a tampered candidate: a refusal to unpickle, not an outage.
    """
    try:
        return _materialise(registry, ref, workdir / "champion")
    except IntegrityError as exc:
        raise IntegrityError(f"champion {ref}: {exc.message}", hint=exc.hint) from None
    except Exception as exc:  # noqa: BLE001 — fail closed, whatever the reason
        raise InfraError(
            f"champion {ref} cannot be loaded: {first_line(exc)}",
            hint="fix or re-point the champion, or pass --no-champion to gate on thresholds only",
        ) from None


def _materialise(registry: Registry, ref: str, dest: Path) -> LoadedModel:
    resolved = registry.resolve(ref)
    directory = registry.download(resolved, dest)
    run_id = resolved.run_id
    if run_id is None:
        run_id = model_dir_info(directory).get("run_id")
    return LoadedModel(
        ref=ref,
        uri=resolved.uri,
        label=resolved.label,
        directory=directory,
        model=load_model_dir(directory),
        run_id=run_id,
        name=resolved.name,
        version=resolved.version,
    )


def directory_bytes(path: Path) -> int:
    """Bytes on disk of every file under a model directory (what an image or a download carries)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# The whole gate ----------------------------------------------------------------------------


@dataclass
class _Scored:
    """Both models' probabilities on the evaluation rows, and what the statistics made of them."""

    cand: np.ndarray
    champ: np.ndarray | None
    metrics: dict[str, dict[str, float]]
    comparison: list[ComparisonRow]
    primary: ComparisonRow
    mcnemar: float | None
    fairness: FairnessReport | None


@dataclass
class _Laps:
    """Seconds per phase of one gate run, for gate.json's `timings`."""

    started: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)
    last: float = 0.0

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        self.timings[phase] = round(now - (self.last or self.started), 3)
        self.last = now


def run_gate(
    settings: Settings,
    candidate: str,
    *,
    champion: str | None = None,
    no_champion: bool = False,
    data_path: Path | None = None,
    report_dir: Path | None = None,
    log_to_run: bool = True,
    register: bool = False,
) -> GateReport:
    """Evaluate every gate, log the verdict to the candidate's run, register it on a pass when `register`,
    then write gate.json / gate.md / plots to `report_dir` once (and upload that folder to the run)."""
    lap = _Laps()
    gates = settings.gates
    data = load_eval_data(settings, data_path)
    lap("data")
    registry = Registry.from_settings(settings)
    out_dir = report_dir or settings.reports_path / "gate"
    # One native thread throughout: on a shared 2-core CI runner, OpenMP teams spin against
    # other jobs and made scoring 10x slower; a serving worker runs single-threaded anyway.
    with tempfile.TemporaryDirectory(prefix="mlship-gate-") as tmp, one_native_thread():
        cand = load_candidate(registry, candidate, Path(tmp))
        size_bytes = directory_bytes(cand.directory)
        champ_ref = champion_reference(settings, registry, champion, no_champion)
        champ = load_champion(registry, champ_ref, Path(tmp)) if champ_ref else None
        champion_note = (
            "--no-champion: comparison skipped"
            if no_champion
            else f"no models:/{settings.model_name}@champion yet: comparison skipped (first deploy)"
        )
        lap("load_models")
        scored = _score(settings, data, cand, champ, candidate, lap)
        timed = served_latency(cand, data.X, settings)
        latency = timed if isinstance(timed, LatencyStats) else LatencyStats(math.nan, math.nan, 0, 0, math.nan)
        lap("latency")
        pred = (scored.cand >= THRESHOLD).astype(int)
        robustness = robustness_gate(cand.model, data.X, pred, settings)
        lap("robustness")
        reproducibility = reproducibility_gate(settings, data, scored.cand)
        lap("reproducibility")
        primary = scored.primary if scored.champ is not None else None
        results = [
            *metric_floor_gates(scored.metrics["candidate"], gates.metric_floors),
            versus_champion_gate(primary, gates, champion_note, scored.mcnemar),
            *fairness_gates(scored.fairness, gates),
            latency_gate(timed, gates.latency_p99_ms) if isinstance(timed, LatencyStats) else timed,
            size_gate(size_bytes, gates.max_model_size_mb),
            robustness,
            reproducibility,
        ]
    failed = [g for g in results if g.failed]
    report = GateReport(
        verdict="fail" if failed else "pass",
        summary=_summary(cand, results, scored.primary, scored.champ is not None, champion_note),
        candidate=cand,
        champion=champ,
        champion_note="" if champ else champion_note,
        data=data.describe(),
        metrics=scored.metrics,
        comparison=scored.comparison,
        gates=results,
        fairness=scored.fairness,
        latency=latency,
        size_bytes=size_bytes,
        confidence=gates.confidence,
        primary_metric=gates.primary_metric,
        timings=lap.timings,
    )
    report.plots = render.write_plots(report, data.y, scored.cand, scored.champ, out_dir)
    lap("plots")
    report.seconds = time.perf_counter() - lap.started
    _record(settings, registry, report, out_dir, log_to_run=log_to_run, register=register)
    return report


def _score(
    settings: Settings, data: EvalData, cand: LoadedModel, champ: LoadedModel | None, candidate: str, lap: _Laps
) -> _Scored:
    """Score both models on the evaluation rows; point metrics, paired bootstrap, McNemar, group rates."""
    gates = settings.gates
    try:
        p_cand = positive_proba(cand.model, data.X)
    except Exception as exc:  # noqa: BLE001 — user model code
        raise ConfigError(
            f"candidate {candidate} cannot score the evaluation data: {first_line(exc)}",
            hint="does the model take the configured features?",
        ) from None
    p_champ = None
    if champ is not None:
        try:
            p_champ = positive_proba(champ.model, data.X)
        except Exception as exc:  # noqa: BLE001 — fail closed
            raise InfraError(
                f"champion {champ.ref} cannot score the evaluation data: {first_line(exc)}",
                hint="compare on data the champion accepts, or pass --no-champion",
            ) from None
    lap("score")
    metrics = {"candidate": classification_metrics(data.y, p_cand, THRESHOLD)}
    if p_champ is not None:
        metrics["champion"] = classification_metrics(data.y, p_champ, THRESHOLD)
    comparison = compare(data.y, p_cand, p_champ, gates, settings.seed)
    primary = next(r for r in comparison if r.metric == gates.primary_metric)
    mcnemar = (
        mcnemar_pvalue(data.y, p_cand, p_champ) if p_champ is not None and gates.primary_metric == "accuracy" else None
    )
    lap("bootstrap")
    fairness = _group_rates(settings, data, (p_cand >= THRESHOLD).astype(int), gates)
    lap("fairness")
    return _Scored(p_cand, p_champ, metrics, comparison, primary, mcnemar, fairness)


def _group_rates(settings: Settings, data: EvalData, pred: np.ndarray, gates: GateSettings) -> FairnessReport | None:
    if not settings.sensitive_feature or data.groups is None:
        return None
    return group_rates(
        data.y,
        pred,
        data.groups,
        feature=settings.sensitive_feature,
        min_group_size=gates.min_group_size,
        min_class_rows=gates.min_group_class_rows,
        samples=gates.bootstrap_samples,
        confidence=gates.confidence,
        seed=settings.seed,
    )


def _record(
    settings: Settings, registry: Registry, report: GateReport, out_dir: Path, *, log_to_run: bool, register: bool
) -> None:
    """The verdict on the run, the registration (on a pass, when asked), then the report folder, written once.

    The folder is written last so that gate.md can say where the verdict was logged and what was
    registered; it is written (and uploaded) even when the registration fails, before that error.
    """
    if log_to_run:
        report.logged_to_run = verdict.log_verdict(registry, report, out_dir)
    try:
        if register and report.passed:
            report.registered = verdict.register_passing(registry, settings, report).line
    finally:
        render.write_report(report, out_dir)
        if report.logged_to_run:
            verdict.log_report(registry, report.logged_to_run, out_dir)


def _summary(
    cand: LoadedModel, results: list[GateResult], primary: ComparisonRow, compared: bool, champion_note: str
) -> str:
    failed = [g for g in results if g.failed]
    evaluated = [g for g in results if g.status != "skipped"]
    if failed:
        reasons = "; ".join(f"{g.name}: {g.detail}" + (f" [{g.advice}]" if g.advice else "") for g in failed[:3])
        more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
        return f"{len(failed)} of {len(evaluated)} gates failed — {reasons}{more}."
    warned = [g for g in results if g.warned]
    if warned:
        names = ", ".join(g.name for g in warned)
        text = (
            f"{cand.label} passes with ⚠ not enough evidence on {names} "
            f"({len(evaluated) - len(warned)} of {len(evaluated)} evaluated gates passed outright)"
        )
    else:
        text = f"{cand.label} passes all {len(evaluated)} evaluated gates"
    if compared and primary.delta is not None and primary.champion is not None:
        versus = next(g for g in results if g.name == "versus_champion")
        significance = versus.detail.rsplit("; ", 1)[-1]
        text += (
            f"; {primary.metric} {primary.candidate:.4f} vs champion {primary.champion:.4f} "
            f"({primary.delta:+.4f}, {significance})"
        )
    else:
        text += f"; {champion_note}"
    return text + "."


def register_challenger(settings: Settings, report: GateReport) -> str:
    """After a pass: make the candidate `@challenger` (a new version unless it is one). Never `champion`."""
    return verdict.register_passing(Registry.from_settings(settings), settings, report).line
