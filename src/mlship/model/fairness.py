"""Group fairness of a binary classifier's decisions on one sensitive attribute.

Demographic-parity difference (spread of selection rates) and equalized-odds difference
(the larger of the TPR and FPR spreads) across groups, as Fairlearn defines them. A group
too small to estimate its rates is *insufficient data*: it is left out of the spreads and,
by default, fails the gate — an unmeasured group is not a fair group.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
            "groups": [asdict(g) for g in self.groups],
        }


def _rate(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def _spread(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return max(finite) - min(finite) if len(finite) >= 2 else math.nan


def group_rates(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, groups: npt.ArrayLike, *, feature: str, min_group_size: int
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
    return FairnessReport(
        feature=feature,
        groups=rates,
        demographic_parity_difference=dpd,
        equalized_odds_difference=eod,
        min_group_size=min_group_size,
        insufficient=[g.group for g in rates if not g.sufficient],
    )
