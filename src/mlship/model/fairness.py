"""Group fairness of a binary classifier's decisions on one sensitive attribute.

Demographic-parity difference (spread of selection rates) and equalized-odds difference
(the larger of the TPR and FPR spreads) across groups, as Fairlearn defines them. A group
too small to estimate its rates is *insufficient data*: it is left out of the spreads and,
by default, fails the gate — an unmeasured group is not a fair group.

Both differences come with a bootstrap confidence interval (simultaneous over the pairs
of groups, see `disparity_intervals`): on ~70 rows a group, a model with no disparity at
all shows a selection-rate spread of 0.09 by chance, so a point estimate against a 0.10
limit is a coin toss. The bootstrap is stratified by group and
class (each group keeps its positives and negatives; what is resampled is which of them the
model flags), and because the outcome is binary, resampling a cell's `m` rows and counting
the flagged ones is exactly a Binomial(m, flagged share) draw: no row-level loop, 1,000
replicates in a millisecond.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


@dataclass(frozen=True)
class GroupRates:
    """One group's counts and rates (NaN where a rate is undefined, e.g. TPR without positives)."""

    group: str
    rows: int
    positives: int
    negatives: int
    selection_rate: float
    tpr: float
    fpr: float
    sufficient: bool
    note: str = ""


@dataclass(frozen=True)
class FairnessReport:
    """Per-group rates and the two disparity measures over the sufficient groups."""

    feature: str
    groups: list[GroupRates]
    demographic_parity_difference: float
    equalized_odds_difference: float
    min_group_size: int
    insufficient: list[str] = field(default_factory=list)
    demographic_parity_ci: tuple[float, float] = (math.nan, math.nan)
    equalized_odds_ci: tuple[float, float] = (math.nan, math.nan)
    confidence: float = math.nan

    @property
    def measured(self) -> list[GroupRates]:
        return [g for g in self.groups if g.sufficient]

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "demographic_parity_difference": self.demographic_parity_difference,
            "equalized_odds_difference": self.equalized_odds_difference,
            "min_group_size": self.min_group_size,
            "insufficient": self.insufficient,
            "demographic_parity_ci": list(self.demographic_parity_ci),
            "equalized_odds_ci": list(self.equalized_odds_ci),
            "confidence": self.confidence,
            "groups": [asdict(g) for g in self.groups],
        }


def _rate(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def _spread(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return max(finite) - min(finite) if len(finite) >= 2 else math.nan


def group_rates(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    groups: npt.ArrayLike,
    *,
    feature: str,
    min_group_size: int,
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> FairnessReport:
    """Selection rate, TPR and FPR per group; disparities over groups with enough data.

    A group is insufficient when it has fewer than `min_group_size` rows, or lacks positives
    or negatives (its TPR or FPR would be undefined, so equalized odds could not be checked).
    Missing values of the attribute form their own group, `(missing)`: they are people too.
    """
    import numpy as np
    import pandas as pd

    y = np.asarray(y_true).astype(int)
    pred = np.asarray(y_pred).astype(int)
    labels = pd.Series(np.asarray(groups, dtype=object)).astype("string").fillna("(missing)").to_numpy(dtype=object)
    rates: list[GroupRates] = []
    for name in sorted(set(labels.tolist()), key=str):
        mask = labels == name
        n = int(mask.sum())
        yg, pg = y[mask], pred[mask]
        pos, neg = int(yg.sum()), int(n - yg.sum())
        notes = []
        if n < min_group_size:
            notes.append(f"{n} rows < min_group_size {min_group_size}")
        if pos == 0:
            notes.append("no positives (TPR undefined)")
        if neg == 0:
            notes.append("no negatives (FPR undefined)")
        rates.append(
            GroupRates(
                group=str(name),
                rows=n,
                positives=pos,
                negatives=neg,
                selection_rate=_rate(int(pg.sum()), n),
                tpr=_rate(int((pg & yg).sum()), pos),
                fpr=_rate(int((pg & (1 - yg)).sum()), neg),
                sufficient=not notes,
                note="; ".join(notes),
            )
        )
    measured = [g for g in rates if g.sufficient]
    dpd = _spread([g.selection_rate for g in measured])
    tpr_gap, fpr_gap = _spread([g.tpr for g in measured]), _spread([g.fpr for g in measured])
    eod = max(tpr_gap, fpr_gap) if math.isfinite(tpr_gap) and math.isfinite(fpr_gap) else math.nan
    dp_ci, eo_ci = disparity_intervals(measured, samples=samples, confidence=confidence, seed=seed)
    return FairnessReport(
        feature=feature,
        groups=rates,
        demographic_parity_difference=dpd,
        equalized_odds_difference=eod,
        min_group_size=min_group_size,
        insufficient=[g.group for g in rates if not g.sufficient],
        demographic_parity_ci=dp_ci,
        equalized_odds_ci=eo_ci,
        confidence=confidence,
    )


def disparity_intervals(
    measured: list[GroupRates], *, samples: int, confidence: float, seed: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Simultaneous bootstrap intervals of the DP and EO differences over `measured` groups.

    A spread (max − min) is not a smooth statistic: the percentile interval of its bootstrap
    replicates sits above the estimate (with four equal groups it can exclude it). Instead
    every pairwise difference of group rates gets a studentized simultaneous band — one
    critical value `c` for all pairs, the `confidence` quantile of the largest standardized
    deviation over the replicates — and the spread, being the largest |difference|, lies in
    [max(|d| − c·se), max(|d| + c·se)] whenever all the bands hold. For equalized odds the
    TPR and FPR pairs form one family, each with its own standard error.

    Per replicate and group: flagged positives ~ Binomial(positives, TPR) and flagged
    negatives ~ Binomial(negatives, FPR) — the stratified bootstrap of a binary decision.
    """
    import numpy as np

    nan = (math.nan, math.nan)
    if len(measured) < 2:
        return nan, nan
    rng = np.random.default_rng(seed)
    pos = np.array([g.positives for g in measured], dtype=np.int64)
    neg = np.array([g.negatives for g in measured], dtype=np.int64)
    tp = rng.binomial(pos, [g.tpr for g in measured], size=(samples, len(measured)))
    fp = rng.binomial(neg, [g.fpr for g in measured], size=(samples, len(measured)))
    point = {
        "selection": np.array([g.selection_rate for g in measured]),
        "tpr": np.array([g.tpr for g in measured]),
        "fpr": np.array([g.fpr for g in measured]),
    }
    boot = {"selection": (tp + fp) / (pos + neg), "tpr": tp / pos, "fpr": fp / neg}
    dp = _band([point["selection"]], [boot["selection"]], confidence)
    eo = _band([point["tpr"], point["fpr"]], [boot["tpr"], boot["fpr"]], confidence)
    return dp, eo


def _band(points: list[np.ndarray], boots: list[np.ndarray], confidence: float) -> tuple[float, float]:
    """The interval of max |pairwise difference| over one family of rates (see disparity_intervals)."""
    import numpy as np

    i, j = np.triu_indices(len(points[0]), k=1)
    d_hat = np.concatenate([p[i] - p[j] for p in points])  # (pairs,)
    d_star = np.concatenate([b[:, i] - b[:, j] for b in boots], axis=1)  # (replicates, pairs)
    se = d_star.std(axis=0)
    dev = np.abs(d_star - d_hat)
    z = np.divide(dev, se, out=np.zeros_like(dev), where=se > 0)
    c = float(np.quantile(z.max(axis=1), confidence))
    magnitude = np.abs(d_hat)
    return float(max(0.0, float(np.max(magnitude - c * se)))), float(np.max(magnitude + c * se))
