"""Each gate on its own: it passes what it should, and it can fail."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlship.model.gates.checks import (
    fairness_gates,
    metric_floor_gates,
    robustness_gate,
    size_gate,
    versus_champion_gate,
)
from mlship.model.gates.fairness import FairnessReport, GroupRates, group_rates
from mlship.model.gates.latency import latency_gate, measure_latency
from mlship.model.gates.run import directory_bytes
from mlship.model.gates.statistics import mcnemar_pvalue, tolerated_flips
from mlship.model.gates.types import ComparisonRow, GateResult, LatencyStats
from mlship.settings import GateSettings, Settings


def test_metric_floors_pass_fail_and_fail_closed_on_undefined() -> None:
    gates = metric_floor_gates(
        {"roc_auc": 0.85, "pr_auc": 0.30, "f1": math.nan}, {"roc_auc": 0.8, "pr_auc": 0.4, "f1": 0.1}
    )
    by = {g.name: g for g in gates}
    assert by["floor.roc_auc"].status == "pass"
    assert by["floor.pr_auc"].status == "fail" and "0.3000 < floor 0.4" in by["floor.pr_auc"].detail
    assert by["floor.f1"].status == "fail" and "undefined" in by["floor.f1"].detail


def _row(delta: float, low: float, high: float) -> ComparisonRow:
    return ComparisonRow("roc_auc", 0.9, (0.88, 0.92), champion=0.9 - delta, delta=delta, delta_ci=(low, high))


def test_versus_champion_is_a_non_inferiority_test_on_the_interval() -> None:
    gates = GateSettings(max_regression=0.01)
    worse = versus_champion_gate(_row(-0.03, -0.05, -0.01), gates, "")
    assert worse.status == "fail" and "worse than the champion by more than 0.01" in worse.detail
    assert "significant regression" in worse.detail
    # point estimate harmless, but the interval reaches past -max_regression: not shown safe → fail
    unsure = versus_champion_gate(_row(-0.002, -0.02, 0.016), gates, "")
    assert unsure.status == "fail" and "no significant difference" in unsure.detail
    same = versus_champion_gate(_row(0.0, -0.004, 0.005), gates, "")
    assert same.status == "pass" and "no significant difference" in same.detail
    better = versus_champion_gate(_row(0.02, 0.01, 0.03), gates, "")
    assert better.status == "pass" and "significant improvement" in better.detail
    assert better.threshold == -0.01 and better.value == 0.02


def test_versus_champion_without_champion_is_skipped_never_passed() -> None:
    g = versus_champion_gate(None, GateSettings(), "no champion yet (first deploy)")
    assert g.status == "skipped" and g.detail == "no champion yet (first deploy)" and not g.failed


def test_mcnemar_on_accuracy() -> None:
    y = np.array([1] * 100 + [0] * 100)
    good = y.astype(float)  # always right
    flipped = good.copy()
    flipped[:30] = 0.0  # wrong on 30 positives
    assert mcnemar_pvalue(y, good, flipped) < 1e-6
    assert mcnemar_pvalue(y, good, good) == 1.0
    g = versus_champion_gate(_row(0.15, 0.1, 0.2), GateSettings(primary_metric="accuracy"), "", mcnemar_p=1e-9)
    assert g.status == "pass" and "significant improvement (McNemar p=1e-09)" in g.detail


def _fairness(min_group_size: int) -> object:
    rng = np.random.default_rng(0)
    n = 1000
    groups = np.where(np.arange(n) < 950, "large", "small")
    y = (rng.random(n) < 0.3).astype(int)
    return group_rates(y, y, groups, feature="segment", min_group_size=min_group_size)


def test_tiny_group_is_insufficient_and_fails_closed_by_default() -> None:
    report = _fairness(min_group_size=100)
    size, dp, eo = fairness_gates(report, GateSettings(min_group_size=100))  # type: ignore[arg-type]
    assert size.status == "fail" and "insufficient data: small (50 rows < min_group_size 100)" in size.detail
    assert size.value == 50
    # one measurable group: parity cannot be compared, which is not enough evidence (⚠), not a number
    assert dp.status == eo.status == "inconclusive" and "cannot compare" in dp.detail
    assert not dp.failed and dp.settle == "at least 100 rows in two or more groups"
    strict = fairness_gates(report, GateSettings(min_group_size=100, fairness_inconclusive="fail"))  # type: ignore[arg-type]
    assert strict[1].failed and strict[2].failed and strict[1].setting == 'gates.fairness_inconclusive = "fail"'
    relaxed = fairness_gates(report, GateSettings(min_group_size=100, insufficient_group_fails=False))  # type: ignore[arg-type]
    assert [g.status for g in relaxed] == ["inconclusive"] * 3 and not any(g.failed for g in relaxed)
    assert "not enough evidence, reported" in relaxed[0].detail


def test_disparity_over_the_threshold_fails() -> None:
    y = np.array([1, 0] * 200)
    groups = np.array(["a"] * 200 + ["b"] * 200)
    pred = np.where(groups == "b", 1, y)  # group b is always flagged
    report = group_rates(y, pred, groups, feature="segment", min_group_size=50)
    size, dp, eo = fairness_gates(report, GateSettings(min_group_size=50))
    assert size.status == "pass"
    assert dp.status == "fail" and dp.value == pytest.approx(0.5)
    assert "0.500, 95% bounds [0.4" in dp.detail and "across 2 groups of segment: beyond 0.1" in dp.detail
    assert dp.setting == "gates.max_demographic_parity_difference = 0.1"
    assert dp.advice == "setting gates.max_demographic_parity_difference = 0.1"  # a fail is about the limit
    assert eo.status == "fail" and eo.value == pytest.approx(1.0)
    assert eo.setting == "gates.max_equalized_odds_difference = 0.15"


def _report(dp: float, dp_ci: tuple[float, float], rows: int = 100) -> FairnessReport:
    rates = [GroupRates(g, rows, rows // 2, rows // 2, 0.5, 0.5, 0.5, True) for g in ("a", "b")]
    return FairnessReport("segment", rates, dp, 0.0, 30, [], dp_ci, (0.0, 0.01), 0.95, 10)


def test_a_disparity_is_judged_on_its_interval_in_three_states() -> None:
    within = fairness_gates(_report(0.03, (0.01, 0.08)), GateSettings())[1]
    assert within.status == "pass" and "within 0.1" in within.detail
    beyond = fairness_gates(_report(0.2, (0.12, 0.28)), GateSettings())[1]
    assert beyond.status == "fail" and "beyond 0.1" in beyond.detail
    straddle = fairness_gates(_report(0.091, (0.02, 0.19)), GateSettings())[1]
    # not enough evidence: its own state, passing with the warning by default
    assert straddle.status == "inconclusive" and straddle.warned and not straddle.failed
    assert 'not enough evidence (passes with a warning: gates.fairness_inconclusive = "warn")' in straddle.detail
    # what would settle it: 100 rows · (0.099 / 0.009)² = 12,100 rows per group
    assert straddle.settle == "about 12,100 rows per group (now 100) would settle it, as a pass if the estimate holds"
    # above the limit but not shown beyond it: more rows would settle it as a fail
    above = fairness_gates(_report(0.13, (0.07, 0.19)), GateSettings())[1]
    assert above.status == "inconclusive" and "as a fail" in above.settle and "about 400 rows" in above.settle
    at_limit = fairness_gates(_report(0.1, (0.05, 0.15)), GateSettings())[1]
    assert at_limit.status == "inconclusive" and "more rows alone will not settle it" in at_limit.settle
    strict = fairness_gates(_report(0.091, (0.02, 0.19)), GateSettings(fairness_inconclusive="fail"))[1]
    assert strict.status == "inconclusive" and strict.blocking and strict.failed
    assert 'not enough evidence (fails: gates.fairness_inconclusive = "fail")' in strict.detail
    # the advice names the evidence and the policy, never the limit
    assert strict.advice == 'more evidence, or gates.fairness_inconclusive = "warn"'
    assert "max_demographic_parity_difference" not in strict.advice
    # no interval at all is never a pass
    unknown = fairness_gates(_report(0.03, (math.nan, math.nan)), GateSettings())[1]
    assert unknown.failed and "no interval could be computed" in unknown.detail
    # the beyond case fails whatever the policy: the policy is only for missing evidence
    assert fairness_gates(_report(0.2, (0.12, 0.28)), GateSettings())[1].failed


def test_a_group_without_enough_positives_is_not_enough_evidence_for_equalized_odds() -> None:
    """40 rows a group, 5 positives each: one flags 5 of 5, the other 1 of 5. A TPR gap of 0.8 on five
    people is not a measurement; the old gate failed it on a bootstrap that claimed certainty."""
    y = np.array(([1] * 5 + [0] * 35) * 2)
    groups = np.array(["a"] * 40 + ["b"] * 40)
    pred = np.concatenate([[1] * 5 + [0] * 35, [1] + [0] * 4 + [0] * 35])
    report = group_rates(y, pred, groups, feature="g", min_group_size=30, min_class_rows=10)
    assert [g.odds_sufficient for g in report.groups] == [False, False]
    assert all(g.sufficient for g in report.groups) and "5 positives < 10" in report.groups[0].note
    assert math.isnan(report.equalized_odds_difference)  # no number for a gap that cannot be measured
    size, dp, eo = fairness_gates(report, GateSettings())
    assert size.status == "pass" and dp.status != "fail"
    assert eo.status == "inconclusive" and eo.value is None and not eo.failed
    assert "a (5 positives, 35 negatives)" in eo.detail
    assert eo.settle == "at least 10 positives and 10 negatives in every group"
    # two comparable groups and one without positives: a disparity among the two still fails...
    y3 = np.concatenate([np.tile([1, 0], 50), np.tile([1, 0], 50), np.zeros(60, dtype=int)])
    g3 = np.array(["a"] * 100 + ["b"] * 100 + ["c"] * 60)
    p3 = np.concatenate([np.tile([1, 0], 50), np.ones(100, dtype=int), np.zeros(60, dtype=int)])
    three = group_rates(y3, p3, g3, feature="g", min_group_size=30, min_class_rows=10)
    assert fairness_gates(three, GateSettings())[2].status == "fail"
    # ...while an even treatment of the two is not shown fair for the third
    fair3 = group_rates(y3, np.concatenate([np.tile([1, 0], 100), np.zeros(60, dtype=int)]), g3, feature="g",
                        min_group_size=30, min_class_rows=10)  # fmt: skip
    eo3 = fairness_gates(fair3, GateSettings())[2]
    assert eo3.status == "inconclusive" and "c (0 positives, 60 negatives)" in eo3.detail


def test_equalized_odds_says_how_many_positives_would_settle_it() -> None:
    rates = [GroupRates(g, 120, 40, 80, 0.3, 0.8, 0.1, True) for g in ("a", "b")]
    report = FairnessReport("g", rates, 0.0, 0.10, 30, [], (0.0, 0.01), (0.0, 0.25), 0.95, 10)
    eo = fairness_gates(report, GateSettings())[2]
    # 40 · (0.15 / 0.05)² = 360 positives, 80 · 9 = 720 negatives
    assert eo.status == "inconclusive"
    assert eo.settle == (
        "about 360 positives and 720 negatives per group (now 40 and 80) would settle it, "
        "as a pass if the estimate holds"
    )


def test_a_rate_of_one_on_few_rows_does_not_claim_certainty() -> None:
    """12 positives a group, every one flagged in both: a plug-in bootstrap gives each TPR a standard
    error of 0, so the TPR gap's interval was [0, 0] and equalized odds "passed" on 24 people. The
    Agresti–Caffo draws keep the uncertainty: not shown within 0.15, so not enough evidence."""
    y = np.array(([1] * 12 + [0] * 88) * 2)
    groups = np.array(["a"] * 100 + ["b"] * 100)
    pred = np.array(([1] * 12 + [1] * 9 + [0] * 79) * 2)  # TPR 1.0, FPR 9/88 in both groups
    report = group_rates(y, pred, groups, feature="g", min_group_size=30)
    assert report.equalized_odds_difference == 0.0
    low, high = report.equalized_odds_ci
    assert low == 0.0 and high > 0.15
    eo = fairness_gates(report, GateSettings())[2]
    assert eo.status == "inconclusive" and "about " in eo.settle and "positives" in eo.settle


def test_fairness_intervals_cover_the_estimate_and_narrow_with_more_rows() -> None:
    rng = np.random.default_rng(3)
    widths = []
    for n in (140, 1400, 14000):
        groups = rng.choice(["a", "b"], n)  # assigned at random: no real disparity
        y = (rng.random(n) < 0.4).astype(int)
        pred = np.where(rng.random(n) < 0.8, y, 1 - y)
        report = group_rates(y, pred, groups, feature="g", min_group_size=30, samples=1000, seed=1)
        low, high = report.demographic_parity_ci
        assert low <= report.demographic_parity_difference <= high
        assert report.equalized_odds_ci[0] <= report.equalized_odds_difference <= report.equalized_odds_ci[1]
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    again = group_rates(y, pred, groups, feature="g", min_group_size=30, samples=1000, seed=1)
    assert again.demographic_parity_ci == report.demographic_parity_ci  # seeded


def test_fairness_without_sensitive_feature_is_skipped() -> None:
    assert {g.status for g in fairness_gates(None, GateSettings())} == {"skipped"}


def _constant(rows: list[dict[str, object]]) -> tuple[list[int], list[float]]:
    return [1] * len(rows), [0.6] * len(rows)


def _busy(seconds: float) -> object:
    """A predictor that computes (burns CPU) for `seconds` on every call."""

    def predict(rows: list[dict[str, object]]) -> tuple[list[int], list[float]]:
        # This thread's CPU time: process_time counts every thread of the pytest process, so
        # another thread's work would end the burn early and the >= 29 ms below would flake.
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass
        return _constant(rows)

    return predict


def _sleepy(rows: list[dict[str, object]]) -> tuple[list[int], list[float]]:
    """A predictor that waits (as on a remote call) without using the CPU."""
    time.sleep(0.03)
    return _constant(rows)


ROWS: list[dict[str, object]] = [{"amount": float(i)} for i in range(50)]


def _measured_alone(predict: object, **options: object) -> LatencyStats:
    """measure_latency in a fresh process of its own: the gate's process_time counts every thread
    of the process it runs in, and the pytest process may hold other tests' threads, which would
    push a CPU-time upper bound over by their work, not the predictor's."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(measure_latency, predict, ROWS, **options).result(timeout=300)


def test_latency_is_cpu_time_per_call_on_the_given_path() -> None:
    fast = _measured_alone(_constant, calls=20, path="compiled: verified")
    assert fast.single_rows == 20 and fast.batch_rows == 50 and fast.batch_rows_per_s > 0
    assert fast.p99_ms < 5 and fast.wall_min_ms <= fast.wall_p50_ms <= fast.wall_p99_ms
    gate = latency_gate(fast, budget_ms=250)
    assert gate.status == "pass" and gate.detail.startswith("compiled: single-row CPU time p50")


def test_a_predictor_that_computes_too_long_fails_latency() -> None:
    slow = measure_latency(_busy(0.03), ROWS, calls=10, warmup=1)
    assert slow.p50_ms >= 29
    gate = latency_gate(slow, budget_ms=10)
    assert gate.status == "fail" and gate.value == slow.gated_ms >= slow.p99_ms and "p99" in gate.detail


def test_a_predictor_that_waits_cannot_hide_behind_cpu_time() -> None:
    sleepy = _measured_alone(_sleepy, calls=10, warmup=1)
    assert sleepy.p99_ms < 10 <= 30 <= sleepy.wall_min_ms
    gate = latency_gate(sleepy, budget_ms=10)
    assert gate.status == "fail" and gate.value == sleepy.wall_min_ms and "fastest call took" in gate.detail


def test_latency_without_rows_to_time_is_refused() -> None:
    with pytest.raises(ValueError, match="no complete rows"):
        measure_latency(_constant, [], calls=10)


def test_size_gate_counts_every_file_of_the_model_directory(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.pkl").write_bytes(b"x" * 1_500_000)
    (tmp_path / "model" / "MLmodel").write_bytes(b"y" * 1000)
    size = directory_bytes(tmp_path / "model")
    assert size == 1_501_000
    assert size_gate(size, budget_mb=1.0).status == "fail"
    assert size_gate(size, budget_mb=2.0).status == "pass"


class _Threshold:
    """P(positive) jumps at amount = 100: rows near the edge flip under noise."""

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = (X["amount"].to_numpy(dtype=float) > 100).astype(float) * 0.8 + 0.1
        return np.column_stack([1 - p, p])


class _Broken:
    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        if X["amount"].dtype.kind == "f" and not np.all(X["amount"] == X["amount"].round()):
            raise ValueError("expects whole amounts")
        return np.tile([0.9, 0.1], (len(X), 1))


def test_robustness_gate_counts_flips_under_noise() -> None:
    settings = Settings(numeric_features=["amount"], categorical_features=[], gates={"robustness_noise": 0.5})
    edge = pd.DataFrame({"amount": np.linspace(99.0, 101.0, 400)})
    pred = (_Threshold().predict_proba(edge)[:, 1] >= 0.5).astype(int)
    gate = robustness_gate(_Threshold(), edge, pred, settings)
    assert gate.status == "fail" and gate.value is not None and gate.value > 0.02
    far = pd.DataFrame({"amount": np.r_[np.full(200, 10.0), np.full(200, 1000.0)]})
    pred = (_Threshold().predict_proba(far)[:, 1] >= 0.5).astype(int)
    calm = Settings(numeric_features=["amount"], categorical_features=[])  # noise 0.01 x std ≈ 5 on 10 vs 1000
    assert robustness_gate(_Threshold(), far, pred, calm).value == 0.0
    broken = robustness_gate(_Broken(), far, np.zeros(400, dtype=int), calm)
    assert broken.status == "fail" and "expects whole amounts" in broken.detail
    no_numeric = Settings(numeric_features=[], categorical_features=["country"])
    assert robustness_gate(_Threshold(), far, pred, no_numeric).status == "skipped"


def test_the_flip_rate_tolerance_accounts_for_the_number_of_rows() -> None:
    """Regression: 2 flips in 89 rows (2.2 %) failed a 2 % limit; that many is what a 2 % rate gives."""
    from scipy.stats import binom

    for n, limit in ((89, 0.02), (1000, 0.02), (20, 0.1), (5000, 0.001)):
        k = tolerated_flips(n, limit, 0.05)
        assert binom.sf(k - 1, n, limit) >= 0.05 > binom.sf(k, n, limit)  # k plausible, k + 1 not
    assert tolerated_flips(89, 0.02, 0.05) == 4 and tolerated_flips(89, 0.0, 0.05) == 0
    settings = Settings(numeric_features=["amount"], categorical_features=[], gates={"robustness_noise": 0.5})

    class _FlipsFirst:
        """Flips exactly the first `k` rows when their amounts are moved (predicts 0 on whole amounts)."""

        def __init__(self, k: int) -> None:
            self.k = k

        def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
            moved = X["amount"].to_numpy() != X["amount"].round().to_numpy()
            p = np.where(moved & (np.arange(len(X)) < self.k), 0.9, 0.1)
            return np.column_stack([1 - p, p])

    rows = pd.DataFrame({"amount": np.arange(89.0)})
    zeros = np.zeros(89, dtype=int)
    two = robustness_gate(_FlipsFirst(2), rows, zeros, settings)
    assert two.status == "pass" and two.value == pytest.approx(2 / 89)
    assert "2 of 89 predictions flipped" in two.detail and "tolerates up to 4 of 89" in two.detail
    six = robustness_gate(_FlipsFirst(6), rows, zeros, settings)
    assert six.status == "fail" and six.setting == "gates.max_flip_rate = 0.02"


def test_the_inconclusive_fairness_policy_is_a_checked_setting(tmp_path: Path) -> None:
    from mlship.errors import ConfigError
    from mlship.settings import settings_from_mapping

    assert GateSettings().fairness_inconclusive == "warn"  # pass with a visible warning unless a project says otherwise
    strict = settings_from_mapping({"gates": {"fairness_inconclusive": "fail"}}, root=tmp_path)
    assert strict.gates.fairness_inconclusive == "fail"
    # "pass", the lenient value before three-state verdicts, keeps letting it through, now visibly
    assert (
        settings_from_mapping({"gates": {"fairness_inconclusive": "pass"}}, root=tmp_path).gates.fairness_inconclusive
        == "warn"
    )
    with pytest.raises(ConfigError, match=r"gates\.fairness_inconclusive"):
        settings_from_mapping({"gates": {"fairness_inconclusive": "maybe"}}, root=tmp_path)


def test_no_legend_of_the_gate_plots_sits_on_the_data() -> None:
    """Every legend of fairness.png, curves.png and calibration.png is drawn outside its axes."""
    from types import SimpleNamespace

    import matplotlib

    matplotlib.use("Agg")
    from mlship.model.gates import report as render

    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(int)
    p = np.clip(y * 0.5 + rng.random(400) * 0.5, 0, 1)
    groups = rng.choice(["a", "b", "c"], 400)
    fair = group_rates(y, (p >= 0.5).astype(int), groups, feature="segment", min_group_size=30)
    fake = SimpleNamespace(fairness=fair, gates=fairness_gates(fair, GateSettings()))
    figures = [render._fairness(fake), render._curves(y, p, p[::-1]), render._calibration(y, p, None)]  # type: ignore[arg-type]
    legends = 0
    for fig in figures:
        fig.tight_layout()
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is None:
                continue
            legends += 1
            assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer)), ax.get_title()
    assert legends == 5
    # the disparity panel shows both intervals with their limits
    dis = figures[0].axes[1]
    assert [t.get_text() for t in dis.get_yticklabels()] == ["demographic parity", "equalized odds"]
    assert {t.get_text() for t in dis.texts} >= {"limit 0.1", "limit 0.15"}


def test_the_latency_gate_times_the_served_object_and_fails_closed_when_it_cannot(tmp_path: Path) -> None:
    """served_latency wraps the candidate as the server does; no sendable row, or a raising model, fails."""
    from mlship.model.estimators import logistic_regression
    from mlship.model.gates.latency import served_latency
    from mlship.model.gates.types import LatencyStats, LoadedModel

    X = pd.DataFrame({"country": ["BR", "US"] * 30, "amount": np.arange(60.0)})
    model = logistic_regression(["country"], ["amount"], 0).fit(X, np.arange(60) % 2)
    settings = Settings(categorical_features=["country"], numeric_features=["amount"], gates={"latency_rows": 10})
    import mlflow.sklearn

    directory = tmp_path / "model"
    mlflow.sklearn.save_model(model, directory, input_example=X.head(3))
    cand = LoadedModel(ref="m", uri="m", label="m", directory=directory, model=model)
    stats = served_latency(cand, X, settings)
    assert isinstance(stats, LatencyStats) and stats.single_rows == 10 and stats.batch_rows == 60
    assert stats.path == "compiled: verified equal to the pipeline on probe rows"  # what the server would take
    gaps = X.assign(amount=np.nan)  # /predict takes no missing number: nothing a client could send
    none = served_latency(cand, gaps, settings)
    assert isinstance(none, GateResult) and none.failed and "no evaluation row" in none.detail
    assert none.setting == "gates.latency_p99_ms = 50"

    class Raising:
        classes_ = np.array([0, 1])

        def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
            raise RuntimeError("broken at serving time")

    broken = served_latency(LoadedModel("m", "m", "m", directory, Raising()), X, settings)
    assert isinstance(broken, GateResult) and broken.failed and "broken at serving time" in broken.detail


def test_request_rows_are_what_a_client_can_send() -> None:
    from mlship.serving.model import Column, ServedModel, request_rows

    served = ServedModel(
        estimator=None,
        columns=[Column("country", "string"), Column("amount", "double"), Column("flag", "boolean")],
        name="m",
        version="1",
    )
    frame = pd.DataFrame(
        {
            "country": ["BR", None, "US", "US", 7],
            "amount": [1, 2.5, np.inf, 3.0, 4],
            "flag": [True, False, True, False, True],
        }
    )
    rows = request_rows(served, frame)
    assert rows == [
        {"country": "BR", "amount": 1.0, "flag": True},
        {"country": "US", "amount": 3.0, "flag": False},
        {"country": "7", "amount": 4.0, "flag": True},
    ]
