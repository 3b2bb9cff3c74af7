"""Group fairness of a binary classifier's decisions on one sensitive attribute.

Demographic-parity difference (spread of selection rates) and equalized-odds difference
(the larger of the TPR and FPR spreads) across groups, as Fairlearn defines them. A group
with fewer than `min_group_size` rows is *insufficient data*: it is left out of both spreads.
A group with enough rows but fewer than `min_class_rows` positives or negatives is measured for
demographic parity only: its TPR or FPR is not a number to compare (fairlearn reports a TPR of
0.0 for a group without positives, which invents a disparity), so equalized odds over it is
*not enough evidence* rather than a figure.

Both differences come with bootstrap confidence bounds (simultaneous over the pairs of
groups, see `disparity_intervals`): on ~70 rows a group, a model with no disparity at all
shows a selection-rate spread of 0.09 by chance, so a point estimate against a 0.10 limit is
a coin toss. The bootstrap is stratified by group and class (each group keeps its positives
and negatives; what is resampled is which of them the model flags), and because the outcome
is binary, resampling a cell's `m` rows and counting the flagged ones is exactly a
Binomial(m, flagged share) draw: no row-level loop, 1,000 replicates in a millisecond.
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
    """Enough rows to be measured at all (demographic parity)."""
    note: str = ""
    odds_sufficient: bool = True
    """Also enough positives and negatives for equalized odds (implies `sufficient`)."""


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
    """Each end of an interval is a one-sided bound at this confidence (the two-sided band is 2c − 1)."""
    min_class_rows: int = 1

    @property
    def measured(self) -> list[GroupRates]:
        """Groups in the demographic-parity spread."""
        return [g for g in self.groups if g.sufficient]

    @property
    def odds_measured(self) -> list[GroupRates]:
        """Groups in the equalized-odds spread."""
        return [g for g in self.groups if g.odds_sufficient]

    @property
    def odds_unmeasured(self) -> list[GroupRates]:
        """Groups measured for parity whose positives or negatives are too few for equalized odds."""
        return [g for g in self.groups if g.sufficient and not g.odds_sufficient]

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "demographic_parity_difference": self.demographic_parity_difference,
            "equalized_odds_difference": self.equalized_odds_difference,
            "min_group_size": self.min_group_size,
            "min_class_rows": self.min_class_rows,
            "insufficient": self.insufficient,
            "odds_unmeasured": [g.group for g in self.odds_unmeasured],
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
    min_class_rows: int = 1,
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> FairnessReport:
    """Selection rate, TPR and FPR per group; disparities over groups with enough data.

    A group is insufficient when it has fewer than `min_group_size` rows; a sufficient group
    with fewer than `min_class_rows` positives or negatives is left out of equalized odds only.
    Missing values of the attribute form their own group, `(missing)`: they are people too.
    """
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)
    import pandas as pd  # noqa: PLC0415 - pandas: heavy, imported where it is used (off `--help` and the light paths)

    y = np.asarray(y_true).astype(int)
    pred = np.asarray(y_pred).astype(int)
    labels = pd.Series(np.asarray(groups, dtype=object)).astype("string").fillna("(missing)").to_numpy(dtype=object)
    need = max(1, min_class_rows)
    rates: list[GroupRates] = []
    for name in sorted(set(labels.tolist()), key=str):
        mask = labels == name
        n = int(mask.sum())
        yg, pg = y[mask], pred[mask]
        pos, neg = int(yg.sum()), int(n - yg.sum())
        notes = []
        if n < min_group_size:
            notes.append(f"{n} rows < min_group_size {min_group_size}")
        if pos < need:
            notes.append(f"{pos} positives < {need} (TPR not comparable)")
        if neg < need:
            notes.append(f"{neg} negatives < {need} (FPR not comparable)")
        rates.append(
            GroupRates(
                group=str(name),
                rows=n,
                positives=pos,
                negatives=neg,
                selection_rate=_rate(int(pg.sum()), n),
                tpr=_rate(int((pg & yg).sum()), pos),
                fpr=_rate(int((pg & (1 - yg)).sum()), neg),
                sufficient=n >= min_group_size,
                note="; ".join(notes),
                odds_sufficient=not notes,
            )
        )
    measured = [g for g in rates if g.sufficient]
    odds = [g for g in rates if g.odds_sufficient]
    dpd = _spread([g.selection_rate for g in measured])
    tpr_gap, fpr_gap = _spread([g.tpr for g in odds]), _spread([g.fpr for g in odds])
    eod = max(tpr_gap, fpr_gap) if math.isfinite(tpr_gap) and math.isfinite(fpr_gap) else math.nan
    dp_ci, eo_ci = disparity_intervals(measured, odds, samples=samples, confidence=confidence, seed=seed)
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
        min_class_rows=need,
    )


def disparity_intervals(
    measured: list[GroupRates],
    odds: list[GroupRates] | None = None,
    *,
    samples: int,
    confidence: float,
    seed: int,
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Simultaneous bootstrap bounds of the DP difference (over `measured`) and EO (over `odds`).

    A spread (max − min) is not a smooth statistic: the percentile interval of its bootstrap
    replicates sits above the estimate (with four equal groups it can exclude it). Instead
    every pairwise difference of group rates gets a studentized simultaneous band — one
    critical value `c` for all pairs, the (2·`confidence` − 1) quantile of the largest
    standardized deviation over the replicates — and the spread, being the largest
    |difference|, lies in [max(|d| − c·se), max(|d| + c·se)] whenever all the bands hold. Each
    end is then a one-sided bound at `confidence`, which is what each decision uses: *beyond
    the limit* is shown at 95 % by the lower end, *within it* by the upper end (the two
    one-sided tests of an equivalence test; a 95 % two-sided band would test each at 97.5 %).
    For equalized odds the TPR and FPR pairs form one family, each with its own standard error.

    Per replicate and group: flagged positives ~ Binomial(positives, TPR) and flagged
    negatives ~ Binomial(negatives, FPR) — the stratified bootstrap of a binary decision. The
    standard errors come from replicates drawn at the Agresti–Caffo rates (one success and one
    failure added per group), so a rate of exactly 0 or 1 on few rows — nine of nine positives
    flagged — does not claim a standard error of 0 (which would make any difference "certain").
    """
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)

    nan = (math.nan, math.nan)
    odds = measured if odds is None else odds
    rng = np.random.default_rng(seed)
    level = 2 * confidence - 1
    dp = eo = nan
    if len(measured) >= 2:
        n = np.array([g.rows for g in measured], dtype=np.int64)
        flagged = np.array([round(g.selection_rate * g.rows) for g in measured], dtype=np.int64)
        point, boot = _draws(rng, flagged, n, samples)
        dp = _band([point], [boot], level)
    if len(odds) >= 2:
        pos = np.array([g.positives for g in odds], dtype=np.int64)
        neg = np.array([g.negatives for g in odds], dtype=np.int64)
        tp = np.array([round(g.tpr * g.positives) for g in odds], dtype=np.int64)
        fp = np.array([round(g.fpr * g.negatives) for g in odds], dtype=np.int64)
        tpr, tpr_boot = _draws(rng, tp, pos, samples)
        fpr, fpr_boot = _draws(rng, fp, neg, samples)
        eo = _band([tpr, fpr], [tpr_boot, fpr_boot], level)
    return dp, eo


def _draws(rng: Any, hits: np.ndarray, n: np.ndarray, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Observed rates, and bootstrap replicates of them centred on those rates.

    The replicates are drawn at the Agresti–Caffo rate (hits + 1) / (n + 2) and re-centred by
    the difference, so their spread is that of the adjusted rate while the band stays around
    the observed one.
    """
    observed = hits / n
    adjusted = (hits + 1) / (n + 2)
    replicates = rng.binomial(n, adjusted, size=(samples, len(n))) / n
    return observed, replicates - adjusted + observed


def _band(points: list[np.ndarray], boots: list[np.ndarray], level: float) -> tuple[float, float]:
    """The interval of max |pairwise difference| over one family of rates (see disparity_intervals)."""
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)

    i, j = np.triu_indices(len(points[0]), k=1)
    d_hat = np.concatenate([p[i] - p[j] for p in points])  # (pairs,)
    d_star = np.concatenate([b[:, i] - b[:, j] for b in boots], axis=1)  # (replicates, pairs)
    se = d_star.std(axis=0)
    dev = np.abs(d_star - d_hat)
    z = np.divide(dev, se, out=np.zeros_like(dev), where=se > 0)
    c = float(np.quantile(z.max(axis=1), level))
    magnitude = np.abs(d_hat)
    return float(max(0.0, float(np.max(magnitude - c * se)))), float(np.max(magnitude + c * se))
