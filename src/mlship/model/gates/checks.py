"""One function per gate: metric floors, versus the champion, fairness, size, robustness, reproducibility.

Each returns GateResult(s); none loads a model or writes anything (`run` composes them; the
latency gate, which times the served path, is in `latency`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from mlship.data.io import read_table
from mlship.model.gates.statistics import tolerated_flips
from mlship.model.gates.types import THRESHOLD, ComparisonRow, EvalData, GateResult, first_line, setting_line
from mlship.model.metrics import positive_proba
from mlship.model.train import build_estimator, split

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlship.model.gates.fairness import FairnessReport
    from mlship.settings import GateSettings, Settings


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
                setting_line(f"metric_floors.{name}", floor),
            )
        )
    return out


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
            setting_line("max_regression", gates.max_regression),
        )
    return GateResult(
        name,
        "pass",
        row.delta,
        threshold,
        f"Δ{row.metric} {row.delta:+.4f}, {ci}; {verdict}",
        "CI low ≥",
        setting_line("max_regression", gates.max_regression),
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
    size_setting = setting_line("min_group_size", gates.min_group_size)
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
            size_setting if fails else setting_line("insufficient_group_fails", False),
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
        setting_line("max_demographic_parity_difference", gates.max_demographic_parity_difference),
        gates.max_demographic_parity_difference,
        report,
        gates,
        odds=False,
    )
    eo = _disparity_gate(
        names[2],
        report.equalized_odds_difference,
        report.equalized_odds_ci,
        setting_line("max_equalized_odds_difference", gates.max_equalized_odds_difference),
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
    policy = setting_line("fairness_inconclusive", gates.fairness_inconclusive)
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
        setting_line("max_model_size_mb", budget_mb),
    )


def robustness_gate(model: Any, X: pd.DataFrame, pred: np.ndarray, settings: Settings) -> GateResult:
    """Gaussian noise of `robustness_noise` x std on each numeric feature; the flip rate must not be
    shown above `max_flip_rate`.

    n-aware: on 89 rows, 2 flips (2.2 %) say nothing about a 2 % limit. The gate fails only
    when the flips are more than a true rate of `max_flip_rate` would plausibly give — the
    one-sided binomial test at `confidence` (equivalently, the Clopper-Pearson lower bound of
    the flip rate is above the limit). The detail says how many flips the limit tolerates.
    """
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)
    from scipy.stats import binom  # noqa: PLC0415 - scipy: heavy, imported where it is used (off `--help` and the light paths)

    gates, name = settings.gates, "robustness.flip_rate"
    setting = setting_line("max_flip_rate", gates.max_flip_rate)
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
        flipped = (positive_proba(model, noisy) >= THRESHOLD).astype(int) != pred
    except Exception as exc:  # noqa: BLE001 — a model that breaks on noise fails the gate
        return GateResult(
            name,
            "fail",
            None,
            gates.max_flip_rate,
            f"model failed on perturbed input: {first_line(exc)}",
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


def reproducibility_gate(settings: Settings, data: EvalData, candidate_proba: np.ndarray) -> GateResult:
    """Opt-in: train the configured estimator twice on the same split and seed; predictions must match."""
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)

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
        name, "pass" if same else "fail", gap, 0.0, detail, "max |Δp| ≤", setting_line("reproducibility", True)
    )
