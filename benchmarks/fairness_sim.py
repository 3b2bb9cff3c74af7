"""How often do the fairness gates fail a model that treats groups alike — and one that does not?

    uv run python benchmarks/fairness_sim.py [--reps 200]

REPS models, each a logistic regression trained on its own 2,000 synthetic card-fraud rows;
for each number of rows per group, each model scores fresh held-out rows, and the rows are
split into two groups **at random** — so the model cannot treat them differently and any
disparity is noise. The fairness gates then run exactly as `mlship gate` runs them
(`group_rates` + `fairness_gates`, default settings: limits 0.10 / 0.15, 95 % simultaneous
bootstrap intervals of 1,000 replicates, `fairness_inconclusive = "fail"`). Counted: the share
of models failing, under the default policy and under `fairness_inconclusive = "pass"`,
and what the old point-estimate gate would have failed. The same rows are scored again as
by a model that uses the sensitive attribute (P(positive) raised by 0.4 for group b): it must fail.
Writes benchmarks/results/fairness_sim.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save

PER_GROUP = (70, 150, 300, 600, 1200, 2500, 5000)
TRAIN_ROWS, BIAS = 2000, 0.4


def _verdicts(y: Any, p: Any, groups: Any, seed: int) -> dict[str, bool]:
    """The fairness gates as `mlship gate` runs them (default settings), and the old point-estimate rule."""
    from mlship.model.fairness import group_rates
    from mlship.model.gates import fairness_gates
    from mlship.settings import GateSettings

    defaults = GateSettings()
    report = group_rates(
        y, (p >= 0.5).astype(int), groups, feature="g", min_group_size=defaults.min_group_size, seed=seed
    )
    default = fairness_gates(report, defaults)
    lenient = fairness_gates(report, GateSettings(fairness_inconclusive="pass"))
    point_fail = not (
        report.demographic_parity_difference <= defaults.max_demographic_parity_difference
        and report.equalized_odds_difference <= defaults.max_equalized_odds_difference
    )
    return {
        "default": any(g.failed for g in default),
        "default_dp": default[1].failed,
        "default_eo": default[2].failed,
        "inconclusive_pass": any(g.failed for g in lenient),
        "point_estimate": point_fail,
    }


def _model(pool: Any, rng: Any, seed: int) -> Any:
    """A logistic regression trained on its own TRAIN_ROWS rows of the pool."""
    from mlship.model.estimators import logistic_regression
    from mlship.settings import Settings

    settings = Settings()
    train = pool.iloc[rng.choice(len(pool), TRAIN_ROWS, replace=False)]
    model = logistic_regression(settings.categorical_features, settings.numeric_features, seed)
    return model.fit(train[settings.features], train[settings.target])


def main() -> None:
    import numpy as np

    from mlship.data.synth import generate

    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args()
    pool = generate(200_000, seed=11)
    rng = np.random.default_rng(5)
    from mlship.settings import Settings

    settings = Settings()
    runs: dict[tuple[int, str], list[dict[str, bool]]] = {}
    for seed in range(args.reps):
        model = _model(pool, rng, seed)
        for n in PER_GROUP:
            held = pool.iloc[rng.choice(len(pool), 2 * n, replace=False)]  # fresh rows for every (model, n)
            p = model.predict_proba(held[settings.features])[:, 1]
            y = held[settings.target].to_numpy()
            groups = rng.permutation(np.repeat(["a", "b"], n))  # assigned at random
            runs.setdefault((n, "fair"), []).append(_verdicts(y, p, groups, seed))
            boosted = np.clip(p + BIAS * (groups == "b"), 0.0, 1.0)  # the same model using the attribute
            runs.setdefault((n, "biased"), []).append(_verdicts(y, boosted, groups, seed))
    rows: list[dict[str, Any]] = []
    for (n, kind), verdicts in runs.items():
        share = {k: round(float(np.mean([v[k] for v in verdicts])), 3) for k in verdicts[0]}
        rows.append({"rows_per_group": n, "model": kind, "fail_share": share})
        print(n, kind, share, flush=True)
    fair = [r for r in rows if r["model"] == "fair"]
    holds = [r["rows_per_group"] for r in fair if r["fail_share"]["default"] <= 0.05]
    save(
        "fairness_sim",
        {
            "method": __doc__.split("Writes")[0].strip() if __doc__ else "",
            "reps": args.reps,
            "positive_rate": round(float(pool["is_fraud"].mean()), 4),
            "results": rows,
            "default_fails_at_most_5pct_from_rows_per_group": min(holds) if holds else None,
            "biased_model_fail_share_default": {
                r["rows_per_group"]: r["fail_share"]["default"] for r in rows if r["model"] == "biased"
            },
        },
    )


if __name__ == "__main__":
    main()
