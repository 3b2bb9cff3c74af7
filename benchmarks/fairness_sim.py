"""How often do the fairness gates fail a model that treats groups alike — and one that does not?

    nice uv run python benchmarks/fairness_sim.py [--reps 200]

For each share of positives (13 %: the synthetic card-fraud data as generated; 50 %: the same
data with its negatives subsampled to the number of positives), REPS models, each a logistic
regression trained on its own 2,000 rows. For each number of rows per group, each model
scores fresh held-out rows, split into two groups **at random** — so the model cannot treat
them differently and any disparity is noise. The fairness gates then run exactly as `mlship
gate` runs them (`group_rates` + `fairness_gates`, default settings: limits 0.10 / 0.15,
simultaneous bootstrap bounds of 1,000 replicates, `fairness_inconclusive = "warn"`).
The same rows are scored again as by a model that uses the attribute: its P(positive) is
shifted up for group b by the smallest amount that makes each true difference at least twice
its limit (demographic parity ≥ 0.20 and equalized odds ≥ 0.30), found per model on 20,000
reference rows of the pool; and, reported alongside ("biased_dp_only"), by the smaller shift
that makes only demographic parity twice its limit. Counted per cell: the
share of models that fail (the gate's verdict), that are flagged (fail or ⚠ not enough
evidence), and that fail under `fairness_inconclusive = "fail"`.
Writes benchmarks/results/fairness_sim.json.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from _common import save

PER_GROUP = (40, 70, 300, 2500, 5000)
TRAIN_ROWS, REFERENCE_ROWS = 2000, 20_000
FAIR_MAX_FAIL, BIASED_MIN_FAIL, BIASED_MIN_FLAGGED = 0.05, 0.90, 0.90


def _verdicts(y: Any, p: Any, groups: Any, seed: int) -> dict[str, bool]:
    """The fairness gates as `mlship gate` runs them, under the default policy and under "fail"."""
    from mlship.model.gates.checks import fairness_gates
    from mlship.model.gates.fairness import group_rates
    from mlship.settings import GateSettings

    defaults = GateSettings()
    report = group_rates(
        y,
        (p >= 0.5).astype(int),
        groups,
        feature="g",
        min_group_size=defaults.min_group_size,
        min_class_rows=defaults.min_group_class_rows,
        seed=seed,
    )
    default = fairness_gates(report, defaults)
    strict = fairness_gates(report, GateSettings(fairness_inconclusive="fail"))
    return {
        "fail": any(g.failed for g in default),
        "flagged": any(g.status in ("fail", "inconclusive") for g in default),
        "inconclusive": any(g.status == "inconclusive" for g in default),
        "fail_dp": default[1].status == "fail",
        "fail_eo": default[2].status == "fail",
        "fail_if_inconclusive_fails": any(g.failed for g in strict),
    }


def _differences(p: Any, y: Any, shift: float) -> tuple[float, float]:
    """True DP and EO differences between a group scored `p` and one scored `p + shift` (same rows)."""
    import numpy as np

    before, after = p >= 0.5, p + shift >= 0.5
    pos, neg = y == 1, y == 0
    dp = float(np.mean(after) - np.mean(before))
    eo = max(float(np.mean(after[pos]) - np.mean(before[pos])), float(np.mean(after[neg]) - np.mean(before[neg])))
    return dp, eo


def _smallest_shift(p: Any, y: Any, which: int, target: float) -> float:
    """The smallest upward shift of P(positive) that makes difference `which` (0 DP, 1 EO) reach `target`."""
    lo, hi = 0.0, 1.0
    for _ in range(50):  # bisection: both differences grow with the shift
        mid = (lo + hi) / 2
        if _differences(p, y, mid)[which] < target:
            lo = mid
        else:
            hi = mid
    return hi


def _run(pool: Any, reps: int, label: str) -> tuple[list[dict[str, Any]], dict[str, float]]:
    import numpy as np

    from mlship.model.estimators import logistic_regression
    from mlship.settings import GateSettings, Settings

    settings, defaults = Settings(), GateSettings()
    targets = (2 * defaults.max_demographic_parity_difference, 2 * defaults.max_equalized_odds_difference)
    rng = np.random.default_rng(5)
    runs: dict[tuple[int, str], list[dict[str, bool]]] = {}
    truth: dict[str, list[float]] = {}
    for seed in range(reps):
        train = pool.iloc[rng.choice(len(pool), TRAIN_ROWS, replace=False)]
        model = logistic_regression(settings.categorical_features, settings.numeric_features, seed)
        model.fit(train[settings.features], train[settings.target])
        reference = pool.iloc[rng.choice(len(pool), REFERENCE_ROWS, replace=False)]
        p_ref, y_ref = model.predict_proba(reference[settings.features])[:, 1], reference[settings.target].to_numpy()
        dp_only = _smallest_shift(p_ref, y_ref, 0, targets[0])
        shift = max(dp_only, _smallest_shift(p_ref, y_ref, 1, targets[1]))  # both at least twice their limits
        for key, value in zip(
            ("shift", "dp", "eo", "shift_dp_only", "eo_dp_only"),
            (shift, *_differences(p_ref, y_ref, shift), dp_only, _differences(p_ref, y_ref, dp_only)[1]),
            strict=True,
        ):
            truth.setdefault(key, []).append(value)
        for n in PER_GROUP:
            held = pool.iloc[rng.choice(len(pool), 2 * n, replace=False)]  # fresh rows for every (model, n)
            p = model.predict_proba(held[settings.features])[:, 1]
            y = held[settings.target].to_numpy()
            groups = rng.permutation(np.repeat(["a", "b"], n))  # assigned at random
            runs.setdefault((n, "fair"), []).append(_verdicts(y, p, groups, seed))
            biased = p + shift * (groups == "b")  # the same model, using the attribute
            runs.setdefault((n, "biased"), []).append(_verdicts(y, biased, groups, seed))
            dp_biased = p + dp_only * (groups == "b")  # only demographic parity at twice its limit
            runs.setdefault((n, "biased_dp_only"), []).append(_verdicts(y, dp_biased, groups, seed))
    rows = []
    for (n, kind), verdicts in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        share = {k: round(float(np.mean([v[k] for v in verdicts])), 3) for k in verdicts[0]}
        rows.append({"positives": label, "rows_per_group": n, "model": kind, "share": share})
        print(label, n, kind, share, flush=True)
    return rows, {f"{key}_median": round(float(np.median(values)), 4) for key, values in truth.items()}


def main() -> None:
    import numpy as np
    import pandas as pd

    from mlship.data.synth import generate

    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args()
    started = time.perf_counter()
    pool = generate(200_000, seed=11)
    rng = np.random.default_rng(7)
    positives = pool[pool["is_fraud"] == 1]
    negatives = pool[pool["is_fraud"] == 0]
    balanced = pd.concat([positives, negatives.iloc[rng.choice(len(negatives), len(positives), replace=False)]])
    pools = {f"{pool['is_fraud'].mean():.0%}": pool, f"{balanced['is_fraud'].mean():.0%}": balanced}
    rows: list[dict[str, Any]] = []
    biased: dict[str, dict[str, float]] = {}
    for label, frame in pools.items():
        found, biased[label] = _run(frame.reset_index(drop=True), args.reps, label)
        rows += found
    checks = {
        "fair_fail_at_most_5pct_everywhere": all(
            r["share"]["fail"] <= FAIR_MAX_FAIL for r in rows if r["model"] == "fair"
        ),
        "biased_fail_at_least_90pct_from_300": all(
            r["share"]["fail"] >= BIASED_MIN_FAIL for r in rows if r["model"] == "biased" and r["rows_per_group"] >= 300
        ),
        "biased_flagged_at_least_90pct_at_70": all(
            r["share"]["flagged"] >= BIASED_MIN_FLAGGED
            for r in rows
            if r["model"] == "biased" and r["rows_per_group"] == 70
        ),
    }
    save(
        "fairness_sim",
        {
            "method": __doc__.split("Writes")[0].strip() if __doc__ else "",
            "reps": args.reps,
            "seconds": round(time.perf_counter() - started, 1),
            "biased_model": biased,
            "checks": checks,
            "results": rows,
        },
    )


if __name__ == "__main__":
    main()
