"""Quality gates: may this candidate ship? Evaluate it (and the champion) on held-out rows, decide, explain.

Each gate is a small function returning a GateResult (value, threshold, pass/fail/skipped,
or *inconclusive*: not enough evidence either way; one line of detail); `run_gate` composes
them into a GateReport, writes the report folder and logs the verdict to the candidate's
MLflow run. A gate that cannot be evaluated is *skipped* with the reason, is *inconclusive*
(shown as ⚠ everywhere, blocking or not as its setting says), or fails closed — it never
passes silently.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlship.errors import ConfigError, InfraError, MlshipError
from mlship.model.bootstrap import BOOTSTRAP_METRICS

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    import pandas as pd

    from mlship.model.fairness import FairnessReport
    from mlship.registry import Registry
    from mlship.settings import GateSettings, Settings

Status = Literal["pass", "fail", "skipped", "inconclusive"]
LET_PASS = 'gates.fairness_inconclusive = "warn"'
"""What lets a result without enough evidence pass (with its ⚠) while the evidence is collected."""
INCONCLUSIVE_TAG_LIMIT = 500
"""Characters of the not-enough-evidence note recorded as a tag on the run and the version."""
THRESHOLD = 0.5
"""Decision threshold on P(positive) for accuracy, precision, recall, f1, fairness and flips."""


@dataclass(frozen=True)
class GateResult:
    """One gate's outcome: `value` compared with `threshold` (`op` says how), and why."""

    name: str
    status: Status
    value: float | None
    threshold: float | None
    detail: str
    op: str = ""
    setting: str = ""
    """The setting that governs this gate and its current value, e.g. `gates.max_flip_rate = 0.02`."""
    blocking: bool = False
    """For an inconclusive gate: does it fail the verdict (`gates.fairness_inconclusive = "fail"`)?"""
    settle: str = ""
    """For an inconclusive gate: the evidence that would settle it (rows, or positives, per group)."""

    @property
    def failed(self) -> bool:
        """Does this gate fail the verdict (a fail, or a blocking inconclusive)?"""
        return self.status == "fail" or (self.status == "inconclusive" and self.blocking)

    @property
    def warned(self) -> bool:
        """Inconclusive and let pass: the verdict passes with a visible warning."""
        return self.status == "inconclusive" and not self.blocking

    @property
    def advice(self) -> str:
        """For a failing gate: the setting that governs it (what to change, if not the model or the data).

        An inconclusive gate is not a limit problem: what settles it is evidence, and what lets it
        pass meanwhile is the inconclusive policy, not a wider limit.
        """
        if self.status == "inconclusive":
            return f"more evidence, or {LET_PASS}"
        return f"setting {self.setting}" if self.setting else ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EvalData:
    """The held-out rows both models are scored on, and where they came from."""

    X: pd.DataFrame
    y: np.ndarray
    groups: np.ndarray | None
    source: str
    train_path: Path

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "rows": len(self.y), "positives": int(self.y.sum())}


@dataclass
class LoadedModel:
    """A model reference pinned, materialised as a directory, and loaded."""

    ref: str
    uri: str
    label: str
    directory: Path
    model: Any
    run_id: str | None = None
    name: str | None = None
    version: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "uri": self.uri,
            "label": self.label,
            "run_id": self.run_id,
            "name": self.name,
            "version": self.version,
        }


@dataclass(frozen=True)
class ComparisonRow:
    """A metric for candidate and champion on the same rows, with paired-bootstrap intervals."""

    metric: str
    candidate: float
    candidate_ci: tuple[float, float]
    champion: float | None = None
    delta: float | None = None
    delta_ci: tuple[float, float] | None = None


@dataclass(frozen=True)
class LatencyStats:
    """Single-row predictions on the served path: CPU time per call (gated) and wall time (shown)."""

    p50_ms: float
    """CPU time per single-row call, median."""
    p99_ms: float
    """CPU time per single-row call, 99th percentile: what `latency.p99_ms` gates."""
    single_rows: int
    batch_rows: int
    batch_rows_per_s: float
    wall_p50_ms: float = math.nan
    wall_p99_ms: float = math.nan
    wall_min_ms: float = math.nan
    """The fastest call by the clock: a model that waits (sleep, I/O) on every call cannot hide."""
    path: str = ""
    """What was timed: the server's own pipeline choice (compiled or not, and why)."""

    @property
    def gated_ms(self) -> float:
        """What the budget is compared with: p99 CPU time, or the fastest wall time if that is more."""
        return max(self.p99_ms, self.wall_min_ms) if math.isfinite(self.wall_min_ms) else self.p99_ms


@dataclass
class GateReport:
    """Everything the gate decided and why: what gate.json holds and gate.md renders."""

    verdict: Literal["pass", "fail"]
    summary: str
    candidate: LoadedModel
    champion: LoadedModel | None
    champion_note: str
    data: dict[str, Any]
    metrics: dict[str, dict[str, float]]
    comparison: list[ComparisonRow]
    gates: list[GateResult]
    fairness: FairnessReport | None
    latency: LatencyStats
    size_bytes: int
    confidence: float
    primary_metric: str
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)
    logged_to_run: str | None = None
    registered: str | None = None

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    @property
    def inconclusive(self) -> list[GateResult]:
        """Gates without enough evidence either way (⚠), blocking or not."""
        return [g for g in self.gates if g.status == "inconclusive"]

    @property
    def warning(self) -> str:
        """One line naming the ⚠ gates and what would settle each; empty when there are none."""
        return "; ".join(f"{g.name}: not enough evidence ({g.settle})" for g in self.inconclusive)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "summary": self.summary,
            "inconclusive": [
                {"gate": g.name, "blocking": g.blocking, "settle": g.settle, "setting": g.setting}
                for g in self.inconclusive
            ],
            "candidate": self.candidate.describe(),
            "champion": self.champion.describe() if self.champion else None,
            "champion_note": self.champion_note,
            "data": self.data,
            "primary_metric": self.primary_metric,
            "confidence": self.confidence,
            "metrics": self.metrics,
            "comparison": [asdict(r) for r in self.comparison],
            "gates": [g.to_dict() for g in self.gates],
            "fairness": self.fairness.to_dict() if self.fairness else None,
            "latency": asdict(self.latency),
            "size_bytes": self.size_bytes,
            "plots": self.plots,
            "seconds": round(self.seconds, 3),
            "timings": self.timings,
            "logged_to_run": self.logged_to_run,
            "registered": self.registered,
        }


# Evaluation data ---------------------------------------------------------------------------


def load_eval_data(settings: Settings, data_path: Path | None = None) -> EvalData:
    """`--data`'s deterministic test split; else `eval_data` used whole; else the test split of `data`."""
    import numpy as np

    from mlship.data.io import read_table
    from mlship.model.train import check_frame, split

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
            f"candidate {ref} cannot be loaded: {_first_line(exc)}",
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
    from mlship.integrity import IntegrityError

    try:
        return _materialise(registry, ref, workdir / "champion")
    except IntegrityError as exc:
        raise IntegrityError(f"champion {ref}: {exc.message}", hint=exc.hint) from None
    except Exception as exc:  # noqa: BLE001 — fail closed, whatever the reason
        raise InfraError(
            f"champion {ref} cannot be loaded: {_first_line(exc)}",
            hint="fix or re-point the champion, or pass --no-champion to gate on thresholds only",
        ) from None


def _materialise(registry: Registry, ref: str, dest: Path) -> LoadedModel:
    from mlship.registry import load_model_dir, model_dir_info

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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


# Gates -------------------------------------------------------------------------------------


def metric_floor_gates(metrics: dict[str, float], floors: dict[str, float]) -> list[GateResult]:
    """One gate per configured floor: the candidate's held-out metric must reach it (NaN fails)."""
    out = []
    for name, floor in floors.items():
        value = metrics[name]
        ok = math.isfinite(value) and value >= floor
        detail = f"{name} {value:.4f} {'≥' if ok else '<'} floor {floor:g}"
        if not math.isfinite(value):
            detail = f"{name} is undefined on this data (one class only)"
        out.append(
            GateResult(
                f"floor.{name}",
                "pass" if ok else "fail",
                value,
                floor,
                detail,
                "≥",
                _setting(f"metric_floors.{name}", floor),
            )
        )
    return out


def compare(
    y: np.ndarray, cand: np.ndarray, champ: np.ndarray | None, gates: GateSettings, seed: int
) -> list[ComparisonRow]:
    """Point metrics and paired-bootstrap intervals (candidate, and candidate − champion)."""
    from mlship.model.bootstrap import paired_differences, percentile_interval
    from mlship.model.metrics import classification_metrics

    point_c = classification_metrics(y, cand, THRESHOLD)
    point_h = classification_metrics(y, champ, THRESHOLD) if champ is not None else None
    boots = paired_differences(BOOTSTRAP_METRICS, y, cand, champ, samples=gates.bootstrap_samples, seed=seed)
    rows = []
    for m in BOOTSTRAP_METRICS:
        values, diffs = boots[m]
        row = ComparisonRow(metric=m, candidate=point_c[m], candidate_ci=percentile_interval(values, gates.confidence))
        if point_h is not None and diffs is not None:
            row = ComparisonRow(
                metric=m,
                candidate=point_c[m],
                candidate_ci=row.candidate_ci,
                champion=point_h[m],
                delta=point_c[m] - point_h[m],
                delta_ci=percentile_interval(diffs, gates.confidence),
            )
        rows.append(row)
    return rows


def mcnemar_pvalue(y: np.ndarray, cand: np.ndarray, champ: np.ndarray) -> float:
    """Exact McNemar test on the rows exactly one of the two models classifies correctly."""
    import numpy as np
    from scipy.stats import binomtest

    right_c = (cand >= THRESHOLD).astype(int) == y
    right_h = (champ >= THRESHOLD).astype(int) == y
    b, c = int(np.sum(right_c & ~right_h)), int(np.sum(~right_c & right_h))
    return float(binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0


def versus_champion_gate(
    row: ComparisonRow | None, gates: GateSettings, note: str, mcnemar_p: float | None = None
) -> GateResult:
    """Non-inferiority on the primary metric: the CI's lower bound of (candidate − champion) must
    stay above −max_regression; a lower bound above 0 is a significant improvement."""
    name, threshold = "versus_champion", -gates.max_regression
    if row is None or row.delta is None or row.delta_ci is None:
        return GateResult(name, "skipped", None, threshold, note, "CI low ≥")
    low, high = row.delta_ci
    ci = f"{gates.confidence:.0%} CI [{low:+.4f}, {high:+.4f}]"
    if mcnemar_p is not None:
        significant = mcnemar_p < 1 - gates.confidence
        test = f"McNemar p={mcnemar_p:.3g}"
    else:
        significant = math.isfinite(low) and (low > 0 or high < 0)
        test = "paired bootstrap"
    direction = "improvement" if row.delta > 0 else "regression"
    verdict = f"significant {direction} ({test})" if significant else f"no significant difference ({test})"
    if not math.isfinite(low) or low < threshold:
        return GateResult(
            name,
            "fail",
            row.delta,
            threshold,
            f"Δ{row.metric} {row.delta:+.4f}, {ci}: may be worse than the champion by more than "
            f"{gates.max_regression:g}; {verdict}",
            "CI low ≥",
            _setting("max_regression", gates.max_regression),
        )
    return GateResult(
        name,
        "pass",
        row.delta,
        threshold,
        f"Δ{row.metric} {row.delta:+.4f}, {ci}; {verdict}",
        "CI low ≥",
        _setting("max_regression", gates.max_regression),
    )


def fairness_gates(report: FairnessReport | None, gates: GateSettings) -> list[GateResult]:
    """Group sizes, then demographic parity and equalized odds judged on their confidence bounds.

    Three outcomes per disparity: it passes when its whole interval is within the limit, fails
    when the whole interval is beyond it, and is *inconclusive* (not enough evidence, ⚠) when
    the interval straddles the limit or a group has too few rows, positives or negatives to be
    compared. What an inconclusive result does to the verdict is `gates.fairness_inconclusive`:
    "warn" (the default: the gate passes with the warning) or "fail". A group below
    `min_group_size` rows fails the group-size gate unless `insufficient_group_fails = false`.
    """
    names = ("fairness.group_size", "fairness.demographic_parity", "fairness.equalized_odds")
    if report is None:
        return [GateResult(n, "skipped", None, None, "no sensitive_feature configured") for n in names]
    small = [g for g in report.groups if not g.sufficient]
    smallest = min((g.rows for g in report.groups), default=0)
    size_setting = _setting("min_group_size", gates.min_group_size)
    if small:
        listed = ", ".join(f"{g.group} ({g.rows} rows < min_group_size {report.min_group_size})" for g in small)
        fails = gates.insufficient_group_fails
        tail = "fails closed" if fails else "not enough evidence, reported (insufficient_group_fails = false)"
        size = GateResult(
            names[0],
            "fail" if fails else "inconclusive",
            smallest,
            gates.min_group_size,
            f"insufficient data: {listed}; {tail}",
            "rows ≥",
            size_setting if fails else _setting("insufficient_group_fails", False),
            settle="" if fails else f"at least {gates.min_group_size} rows in every group",
        )
    else:
        size = GateResult(
            names[0],
            "pass",
            smallest,
            gates.min_group_size,
            f"all {len(report.groups)} groups of {report.feature} are large enough",
            "rows ≥",
            size_setting,
        )
    dp = _disparity_gate(
        names[1],
        report.demographic_parity_difference,
        report.demographic_parity_ci,
        _setting("max_demographic_parity_difference", gates.max_demographic_parity_difference),
        gates.max_demographic_parity_difference,
        report,
        gates,
        odds=False,
    )
    eo = _disparity_gate(
        names[2],
        report.equalized_odds_difference,
        report.equalized_odds_ci,
        _setting("max_equalized_odds_difference", gates.max_equalized_odds_difference),
        gates.max_equalized_odds_difference,
        report,
        gates,
        odds=True,
    )
    return [size, dp, eo]


def _disparity_gate(
    name: str,
    value: float,
    ci: tuple[float, float],
    setting: str,
    limit: float,
    report: FairnessReport,
    gates: GateSettings,
    *,
    odds: bool,
) -> GateResult:
    measured = report.odds_measured if odds else report.measured
    unmeasured = report.odds_unmeasured if odds else []
    policy = _setting("fairness_inconclusive", gates.fairness_inconclusive)
    blocking = gates.fairness_inconclusive == "fail"
    consequence = "fails: " if blocking else "passes with a warning: "
    short = ", ".join(f"{g.group} ({g.positives} positives, {g.negatives} negatives)" for g in unmeasured)
    need = f"at least {report.min_class_rows} positives and {report.min_class_rows} negatives in every group"
    if not math.isfinite(value):
        what = f"{len(measured)} group(s) with enough data: cannot compare"
        if unmeasured:
            what += f"; too few positives or negatives for equalized odds: {short}"
        settle = need if odds else f"at least {gates.min_group_size} rows in two or more groups"
        return GateResult(
            name,
            "inconclusive",
            None,
            limit,
            f"not enough evidence ({consequence}{policy}): {what}",
            "CI ≤",
            policy,
            blocking=blocking,
            settle=settle,
        )
    low, high = ci
    bound = f"{report.confidence:.0%}" if math.isfinite(report.confidence) else ""
    interval = f"{value:.3f}, {bound} bounds [{low:.3f}, {high:.3f}] across {len(measured)} groups of {report.feature}"
    if not (math.isfinite(low) and math.isfinite(high)):
        return GateResult(name, "fail", value, limit, f"{value:.3f}: no interval could be computed", "CI ≤", setting)
    if low > limit:
        return GateResult(name, "fail", value, limit, f"{interval}: beyond {limit:g}", "CI ≤", setting)
    if unmeasured:
        return GateResult(
            name,
            "inconclusive",
            value,
            limit,
            f"not enough evidence ({consequence}{policy}): {interval}, but too few positives or negatives "
            f"to compare {short}",
            "CI ≤",
            policy,
            blocking=blocking,
            settle=need,
        )
    if high <= limit:
        return GateResult(name, "pass", value, limit, f"{interval}: within {limit:g}", "CI ≤", setting)
    settle = _evidence_needed(value, low, high, limit, measured, odds=odds)
    return GateResult(
        name,
        "inconclusive",
        value,
        limit,
        f"not enough evidence ({consequence}{policy}): {interval} straddles {limit:g}; {settle}",
        "CI ≤",
        policy,
        blocking=blocking,
        settle=settle,
    )


def _evidence_needed(value: float, low: float, high: float, limit: float, measured: list[Any], *, odds: bool) -> str:
    """What would settle a straddling interval: rows (positives and negatives, for odds) per group.

    A bound's distance from the estimate shrinks as 1/sqrt(n); if the estimate holds, the
    smallest measured group needs n · (distance / |limit − estimate|)² rows for the bound on the
    estimate's side of the limit to cross it: the upper bound (a pass) for an estimate below
    the limit, the lower one (a fail) for an estimate above it. An estimate exactly at the limit
    is not settled by more rows.
    """
    if value == limit:
        return f"the estimate is at the limit {limit:g}: more rows alone will not settle it"
    scale = ((high - value) / (limit - value)) ** 2 if value < limit else ((value - low) / (value - limit)) ** 2
    scale -= 1e-9  # (0.15 / 0.05)² is 9.000000000000002 in floating point: not a reason for one more row
    outcome = "a pass" if value < limit else "a fail"
    if odds:
        pos, neg = min(g.positives for g in measured), min(g.negatives for g in measured)
        return (
            f"about {math.ceil(pos * scale):,} positives and {math.ceil(neg * scale):,} negatives per group "
            f"(now {pos:,} and {neg:,}) would settle it, as {outcome} if the estimate holds"
        )
    rows = min(g.rows for g in measured)
    return (
        f"about {math.ceil(rows * scale):,} rows per group (now {rows:,}) would settle it, "
        f"as {outcome} if the estimate holds"
    )


def _setting(key: str, value: float | bool | str) -> str:
    """`gates.<key> = <value>` as a user writes it in the settings (TOML spelling)."""
    if isinstance(value, bool):
        shown = str(value).lower()
    elif isinstance(value, str):
        shown = f'"{value}"'
    else:
        shown = f"{value:g}"
    return f"gates.{key} = {shown}"


def measure_latency(
    predict: Callable[[list[dict[str, Any]]], Any],
    rows: list[dict[str, Any]],
    calls: int,
    warmup: int = 10,
    path: str = "",
) -> LatencyStats:
    """Time `calls` single-row predictions after `warmup` ones, by CPU time; throughput from one batch call.

    `predict` is the server's own `ServedModel.predict` and `rows` are request rows, so this
    times what ships (the compiled path when the server uses it). The gated figure is the
    process CPU time of each call (`time.process_time`, all threads): it is what the model
    costs, and it does not grow when other processes take the CPU — wall time on a busy
    runner measures the machine (the same model gave p99 46, 96 and 119 ms there). A model
    that waits instead of computing would pass on CPU time, so the fastest wall time of all
    calls (a minimum: one undisturbed call is enough) counts too. Queueing under real traffic
    is the deploy's verify window's job. One native thread, as a serving worker runs.
    """
    import numpy as np

    if not rows:
        raise ValueError("no complete rows to time")
    singles = [[rows[i % len(rows)]] for i in range(calls + warmup)]
    cpu, wall = [], []
    with one_native_thread():
        for batch in singles[:warmup]:
            predict(batch)
        for batch in singles[warmup:]:
            c0, w0 = time.process_time(), time.perf_counter()
            predict(batch)
            w1, c1 = time.perf_counter(), time.process_time()
            cpu.append(c1 - c0)
            wall.append(w1 - w0)
        w0 = time.perf_counter()
        predict(rows)
        batch_seconds = time.perf_counter() - w0
    cpu_ms, wall_ms = np.asarray(cpu) * 1000.0, np.asarray(wall) * 1000.0
    return LatencyStats(
        p50_ms=float(np.percentile(cpu_ms, 50)),
        p99_ms=float(np.percentile(cpu_ms, 99)),
        single_rows=calls,
        batch_rows=len(rows),
        batch_rows_per_s=len(rows) / batch_seconds if batch_seconds > 0 else math.inf,
        wall_p50_ms=float(np.percentile(wall_ms, 50)),
        wall_p99_ms=float(np.percentile(wall_ms, 99)),
        wall_min_ms=float(wall_ms.min()),
        path=path,
    )


def served_latency(cand: LoadedModel, X: pd.DataFrame, settings: Settings) -> LatencyStats | GateResult:
    """The candidate as `mlship serve` would hold it (same loaded object, same pipeline choice), timed."""
    from mlship.serving.model import ModelSource, request_rows, served_view

    name = "latency.p99_ms"
    source = ModelSource(
        ref=cand.ref, uri=cand.uri, name=cand.name or "", version=cand.version or "", run_id=cand.run_id
    )
    served = served_view(cand.model, cand.directory, source, settings)
    rows = request_rows(served, X)
    setting = _setting("latency_p99_ms", settings.gates.latency_p99_ms)
    if not rows:
        return GateResult(
            name,
            "fail",
            None,
            settings.gates.latency_p99_ms,
            "no evaluation row without a missing value to time",
            setting=setting,
        )
    try:
        return measure_latency(served.predict, rows, settings.gates.latency_rows, path=served.compile_note)
    except Exception as exc:  # noqa: BLE001 — a model the server cannot call fails the gate
        return GateResult(
            name,
            "fail",
            None,
            settings.gates.latency_p99_ms,
            f"the served path failed: {_first_line(exc)}",
            setting=setting,
        )


def one_native_thread() -> Any:
    """A context in which BLAS/OpenMP use one thread (threadpoolctl ships with scikit-learn)."""
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    return threadpool_limits(limits=1)


def latency_gate(stats: LatencyStats, budget_ms: float) -> GateResult:
    """p99 CPU time of one single-row call on the served path (or its fastest wall time) within the budget."""
    value = stats.gated_ms
    ok = value <= budget_ms
    path = stats.path.split(":", 1)[0] or "served path"
    waits = f"; the fastest call took {stats.wall_min_ms:.2f} ms by the clock" if value > stats.p99_ms else ""
    return GateResult(
        "latency.p99_ms",
        "pass" if ok else "fail",
        value,
        budget_ms,
        f"{path}: single-row CPU time p50 {stats.p50_ms:.2f} ms, p99 {stats.p99_ms:.2f} ms over "
        f"{stats.single_rows} calls (wall p99 {stats.wall_p99_ms:.2f} ms){waits}; "
        f"batch {stats.batch_rows_per_s:,.0f} rows/s",
        "≤",
        _setting("latency_p99_ms", budget_ms),
    )


def size_gate(size_bytes: int, budget_mb: float) -> GateResult:
    """Serialized model directory size; MB = 10^6 bytes."""
    mb = size_bytes / 1e6
    ok = mb <= budget_mb
    return GateResult(
        "size_mb",
        "pass" if ok else "fail",
        mb,
        budget_mb,
        f"model directory {size_bytes:,} bytes on disk",
        "≤",
        _setting("max_model_size_mb", budget_mb),
    )


def robustness_gate(model: Any, X: pd.DataFrame, pred: np.ndarray, settings: Settings) -> GateResult:
    """Gaussian noise of `robustness_noise` x std on each numeric feature; the flip rate must not be
    shown above `max_flip_rate`.

    n-aware: on 89 rows, 2 flips (2.2 %) say nothing about a 2 % limit. The gate fails only
    when the flips are more than a true rate of `max_flip_rate` would plausibly give — the
    one-sided binomial test at `confidence` (equivalently, the Clopper-Pearson lower bound of
    the flip rate is above the limit). The detail says how many flips the limit tolerates.
    """
    import numpy as np
    from scipy.stats import binom

    gates, name = settings.gates, "robustness.flip_rate"
    setting = _setting("max_flip_rate", gates.max_flip_rate)
    numeric = [c for c in settings.numeric_features if c in X.columns]
    if not numeric:
        return GateResult(name, "skipped", None, gates.max_flip_rate, "no numeric features to perturb", setting=setting)
    rng = np.random.default_rng(settings.seed)
    noisy = X.copy()
    for col in numeric:
        values = X[col].astype(float)
        std = float(values.std(ddof=0))
        noisy[col] = values + rng.normal(0.0, gates.robustness_noise * std if math.isfinite(std) else 0.0, len(X))
    try:
        from mlship.model.metrics import positive_proba

        flipped = (positive_proba(model, noisy) >= THRESHOLD).astype(int) != pred
    except Exception as exc:  # noqa: BLE001 — a model that breaks on noise fails the gate
        return GateResult(
            name,
            "fail",
            None,
            gates.max_flip_rate,
            f"model failed on perturbed input: {_first_line(exc)}",
            setting=setting,
        )
    n, flips = len(X), int(flipped.sum())
    rate = flips / n if n else 0.0
    alpha = 1.0 - gates.confidence
    tolerated = tolerated_flips(n, gates.max_flip_rate, alpha)
    ok = flips <= tolerated
    p_value = float(binom.sf(flips - 1, n, gates.max_flip_rate)) if flips else 1.0
    return GateResult(
        name,
        "pass" if ok else "fail",
        rate,
        gates.max_flip_rate,
        f"{flips:,} of {n:,} predictions flipped under noise of {gates.robustness_noise:g} x std on "
        f"{len(numeric)} numeric features; a flip rate of {gates.max_flip_rate:g} tolerates up to {tolerated:,} of "
        f"{n:,} (one-sided binomial, {gates.confidence:.0%}; p={p_value:.3g})",
        "≤ (binomial)",
        setting,
    )


def tolerated_flips(n: int, limit: float, alpha: float) -> int:
    """The most flips of `n` still consistent with a true rate of `limit`: P(X ≥ k | n, limit) ≥ alpha."""
    from scipy.stats import binom

    if n <= 0 or limit <= 0:
        return 0
    k = int(binom.isf(alpha, n, limit))  # around the answer; settle it exactly below
    while k < n and binom.sf(k, n, limit) >= alpha:  # P(X ≥ k+1) still plausible
        k += 1
    while k > 0 and binom.sf(k - 1, n, limit) < alpha:  # P(X ≥ k) implausible
        k -= 1
    return k


def reproducibility_gate(settings: Settings, data: EvalData, candidate_proba: np.ndarray) -> GateResult:
    """Opt-in: train the configured estimator twice on the same split and seed; predictions must match."""
    import numpy as np

    from mlship.data.io import read_table
    from mlship.model.metrics import positive_proba
    from mlship.model.train import build_estimator, split

    name = "reproducibility"
    if not settings.gates.reproducibility:
        return GateResult(name, "skipped", None, None, "opt-in (gates.reproducibility = true): it retrains")
    train_df, _ = split(settings, read_table(data.train_path))
    runs = []
    for _ in range(2):
        model = build_estimator(settings)
        model.fit(train_df[settings.features], train_df[settings.target].astype(int))
        runs.append(positive_proba(model, data.X))
    gap = float(np.max(np.abs(runs[0] - runs[1]))) if len(data.X) else 0.0
    same = bool(np.array_equal(runs[0], runs[1]))
    matches = "reproduces" if np.array_equal(runs[0], candidate_proba) else "does not reproduce"
    detail = (
        f"two retrains of {settings.estimator} (seed {settings.seed}) "
        f"{'agree exactly' if same else f'differ (max |Δp| {gap:.2e})'}; the retrain {matches} the candidate"
    )
    return GateResult(
        name, "pass" if same else "fail", gap, 0.0, detail, "max |Δp| ≤", _setting("reproducibility", True)
    )


# The whole gate ----------------------------------------------------------------------------


def run_gate(
    settings: Settings,
    candidate: str,
    *,
    champion: str | None = None,
    no_champion: bool = False,
    data_path: Path | None = None,
    report_dir: Path | None = None,
    log_to_run: bool = True,
) -> GateReport:
    """Evaluate every gate, write gate.json / gate.md / plots to `report_dir`, log to the candidate's run."""

    from mlship.model import report as render
    from mlship.model.fairness import group_rates
    from mlship.model.metrics import classification_metrics, positive_proba
    from mlship.registry import Registry

    started = time.perf_counter()
    timings: dict[str, float] = {}
    clock = [started]

    def lap(phase: str) -> None:
        now = time.perf_counter()
        timings[phase] = round(now - clock[0], 3)
        clock[0] = now

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
        try:
            p_cand = positive_proba(cand.model, data.X)
        except Exception as exc:  # noqa: BLE001 — user model code
            raise ConfigError(
                f"candidate {candidate} cannot score the evaluation data: {_first_line(exc)}",
                hint="does the model take the configured features?",
            ) from None
        p_champ = None
        if champ is not None:
            try:
                p_champ = positive_proba(champ.model, data.X)
            except Exception as exc:  # noqa: BLE001 — fail closed
                raise InfraError(
                    f"champion {champ.ref} cannot score the evaluation data: {_first_line(exc)}",
                    hint="compare on data the champion accepts, or pass --no-champion",
                ) from None
        lap("score")
        metrics = {"candidate": classification_metrics(data.y, p_cand, THRESHOLD)}
        if p_champ is not None:
            metrics["champion"] = classification_metrics(data.y, p_champ, THRESHOLD)
        comparison = compare(data.y, p_cand, p_champ, gates, settings.seed)
        primary = next(r for r in comparison if r.metric == gates.primary_metric)
        mcnemar = (
            mcnemar_pvalue(data.y, p_cand, p_champ)
            if p_champ is not None and gates.primary_metric == "accuracy"
            else None
        )
        lap("bootstrap")
        pred = (p_cand >= THRESHOLD).astype(int)
        fairness = (
            group_rates(
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
            if settings.sensitive_feature and data.groups is not None
            else None
        )
        lap("fairness")
        timed = served_latency(cand, data.X, settings)
        latency = timed if isinstance(timed, LatencyStats) else LatencyStats(math.nan, math.nan, 0, 0, math.nan)
        lap("latency")
        robustness = robustness_gate(cand.model, data.X, pred, settings)
        lap("robustness")
        reproducibility = reproducibility_gate(settings, data, p_cand)
        lap("reproducibility")
        results = [
            *metric_floor_gates(metrics["candidate"], gates.metric_floors),
            versus_champion_gate(primary if p_champ is not None else None, gates, champion_note, mcnemar),
            *fairness_gates(fairness, gates),
            latency_gate(timed, gates.latency_p99_ms) if isinstance(timed, LatencyStats) else timed,
            size_gate(size_bytes, gates.max_model_size_mb),
            robustness,
            reproducibility,
        ]
    failed = [g for g in results if g.failed]
    report = GateReport(
        verdict="fail" if failed else "pass",
        summary=_summary(cand, results, primary, p_champ is not None, champion_note),
        candidate=cand,
        champion=champ,
        champion_note="" if champ else champion_note,
        data=data.describe(),
        metrics=metrics,
        comparison=comparison,
        gates=results,
        fairness=fairness,
        latency=latency,
        size_bytes=size_bytes,
        confidence=gates.confidence,
        primary_metric=gates.primary_metric,
        timings=timings,
    )
    report.plots = render.write_plots(report, data.y, p_cand, p_champ, out_dir)
    lap("plots")
    report.seconds = time.perf_counter() - started
    render.write_report(report, out_dir)
    if log_to_run:
        report.logged_to_run = _log(registry, report, out_dir)
        if report.logged_to_run:
            render.write_report(report, out_dir)  # say where it went (the logged copy predates this line)
    return report


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


def _log(registry: Registry, report: GateReport, out_dir: Path) -> str | None:
    """Gate metrics, the verdict tag and the report folder on the candidate's run, if this store has it."""
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
    registry.log_to_run(run_id, metrics=metrics, tags=gate_tags(report), artifacts=out_dir, artifact_path="gate")
    return run_id


def gate_tags(report: GateReport) -> dict[str, str]:
    """The verdict tag, and the ⚠ note when some gate lacked the evidence (recorded on run and version).

    The note is written (possibly empty) every time, so a re-gated run does not keep an old warning.
    """
    from mlship.registry import GATE_TAG, GATE_WARNING_TAG

    return {GATE_TAG: report.verdict, GATE_WARNING_TAG: report.warning[:INCONCLUSIVE_TAG_LIMIT]}


def register_challenger(settings: Settings, report: GateReport) -> str:
    """After a pass: make the candidate `@challenger` (a new version unless it is one). Never `champion`."""
    from mlship.registry import MODEL_ARTIFACT, Registry

    if not report.passed:
        raise ConfigError("refusing to register a candidate that failed the gate")
    registry = Registry.from_settings(settings)
    cand = report.candidate
    if cand.name == settings.model_name and cand.version:
        registry.set_version_tags(settings.model_name, cand.version, gate_tags(report))
        registry.set_alias(settings.model_name, "challenger", cand.version)
        return f"{cand.label} is @challenger"
    if cand.uri.startswith(("runs:/", "models:/")):
        source = cand.uri
    elif report.logged_to_run:
        source = f"runs:/{report.logged_to_run}/{MODEL_ARTIFACT}"
    else:
        raise ConfigError(
            f"cannot register {cand.ref}: it is not tracked in {settings.resolved_tracking_uri}",
            hint="gate a models:/ or runs:/ URI, or a directory exported by `mlship train` against this store",
        )
    resolved = registry.register(source, settings.model_name, alias="challenger", tags=gate_tags(report))
    return f"{resolved.label} is @challenger"
