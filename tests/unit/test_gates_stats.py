"""The statistics behind the gates: the vectorised bootstrap agrees with scikit-learn, fairness rates are exact."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from mlship.model.gates.fairness import group_rates
from mlship.model.gates.statistics import (
    BOOTSTRAP_METRICS,
    paired_differences,
    percentile_interval,
    weight_chunks,
    weighted_metric,
)
from mlship.model.metrics import classification_metrics


def _scores(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.15).astype(int)
    p = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    return y, np.round(p, 2)  # rounding creates ties across both classes


@pytest.mark.parametrize("metric", BOOTSTRAP_METRICS)
def test_weighted_metrics_equal_sklearn_on_resampled_rows(metric: str) -> None:
    y, p = _scores()
    assert weighted_metric(metric, y, p, np.ones((1, len(y))))[0] == pytest.approx(
        classification_metrics(y, p)[metric], abs=1e-9
    )
    idx = np.random.default_rng(3).integers(0, len(y), len(y))
    counts = np.bincount(idx, minlength=len(y)).astype(float)[None, :]
    expected = classification_metrics(y[idx], p[idx])[metric]
    assert weighted_metric(metric, y, p, counts)[0] == pytest.approx(expected, abs=1e-9)


def test_unknown_weighted_metric_is_refused() -> None:
    y, p = _scores(50)
    with pytest.raises(ValueError, match="log_loss"):
        weighted_metric("log_loss", y, p, np.ones((1, 50)))


def test_bootstrap_weights_are_resamples_and_seeded() -> None:
    chunks = list(weight_chunks(1000, 250, seed=7))
    W = np.vstack(chunks)
    assert W.shape == (250, 1000) and np.all(W.sum(axis=1) == 1000)
    again = np.vstack(list(weight_chunks(1000, 250, seed=7)))
    np.testing.assert_array_equal(W, again)
    assert not np.array_equal(W, np.vstack(list(weight_chunks(1000, 250, seed=8))))


def test_identical_models_have_a_zero_difference_and_better_ones_a_positive_interval() -> None:
    y, p = _scores()
    same = paired_differences(["roc_auc", "accuracy"], y, p, p.copy(), samples=200, seed=1)
    for _, diff in same.values():
        assert diff is not None and np.all(diff == 0)
    noisy = np.clip(p + np.random.default_rng(5).normal(0, 0.3, len(p)), 0, 1)
    better = paired_differences(["roc_auc"], y, p, noisy, samples=300, seed=1)
    values, diff = better["roc_auc"]
    assert diff is not None
    low, high = percentile_interval(diff, 0.95)
    delta = skm.roc_auc_score(y, p) - skm.roc_auc_score(y, noisy)
    assert 0 < low < delta < high
    c_low, c_high = percentile_interval(values, 0.95)
    assert c_low < skm.roc_auc_score(y, p) < c_high


def test_percentile_interval_ignores_undefined_replicates() -> None:
    assert percentile_interval(np.array([np.nan, 1.0, 2.0, 3.0]), 0.5) == (1.5, 2.5)
    low, high = percentile_interval(np.array([np.nan]), 0.95)
    assert math.isnan(low) and math.isnan(high)


def test_group_rates_and_disparities() -> None:
    # group a: 4 rows, 2 positives, predicts [1, 0 | 1, 0]; group b: 4 rows, 2 positives, predicts all 1
    y = [1, 1, 0, 0, 1, 1, 0, 0]
    pred = [1, 0, 1, 0, 1, 1, 1, 1]
    groups = ["a"] * 4 + ["b"] * 4
    report = group_rates(y, pred, groups, feature="g", min_group_size=4)
    a, b = report.groups
    assert (a.group, a.rows, a.positives, a.selection_rate, a.tpr, a.fpr) == ("a", 4, 2, 0.5, 0.5, 0.5)
    assert (b.selection_rate, b.tpr, b.fpr) == (1.0, 1.0, 1.0)
    assert report.demographic_parity_difference == 0.5
    assert report.equalized_odds_difference == 0.5
    assert report.insufficient == []


def test_small_groups_are_insufficient_and_one_class_groups_are_left_out_of_equalized_odds() -> None:
    y = [1, 0] * 50 + [0] * 30 + [1, 0, 1]
    pred = [1, 0] * 50 + [1] * 30 + [0, 0, 0]
    groups = ["big"] * 100 + ["negatives_only"] * 30 + [None] * 3
    report = group_rates(y, pred, groups, feature="g", min_group_size=10)
    by = {g.group: g for g in report.groups}
    assert set(by) == {"big", "negatives_only", "(missing)"}
    assert "0 positives < 1 (TPR not comparable)" in by["negatives_only"].note and math.isnan(by["negatives_only"].tpr)
    assert "3 rows < min_group_size 10" in by["(missing)"].note
    assert report.insufficient == ["(missing)"]
    # a group of negatives only still has a selection rate: it is in demographic parity...
    assert [g.group for g in report.measured] == ["big", "negatives_only"]
    assert report.demographic_parity_difference == 0.5
    # ...but not in equalized odds: one comparable group, nothing to compare (undefined, not 0)
    assert [g.group for g in report.odds_measured] == ["big"]
    assert [g.group for g in report.odds_unmeasured] == ["negatives_only"]
    assert math.isnan(report.equalized_odds_difference)
    assert report.to_dict()["insufficient"] == ["(missing)"]
    assert report.to_dict()["odds_unmeasured"] == ["negatives_only"]
