"""drift.md says what decided it (the thresholds) and how far each feature moved, in its own units."""

from __future__ import annotations

from mlship.data.synth import generate
from mlship.monitoring.drift import compare, render_markdown
from mlship.settings import Settings


def test_drift_md_shows_thresholds_and_shifts_in_units() -> None:
    settings = Settings(drift={"wasserstein_threshold": 0.2, "psi_fail": 0.3})
    ref = generate(4000, seed=1)
    cur = ref.copy()
    cur["amount"] = cur["amount"] + 100.0  # every transaction 100 currency units larger
    cur.loc[cur.index[:2000], "country"] = "XX"
    report = compare(settings, ref, cur, ref_name="ref", cur_name="cur")
    md = render_markdown(report)
    assert (
        "a numeric feature drifts at normalised Wasserstein ≥ 0.2 (W1 in reference SDs), a categorical one at "
        "Jensen-Shannon ≥ 0.1; either at PSI ≥ 0.3 (warn ≥ 0.1); the dataset drifts when ≥ 50% of features do."
    ) in md
    amount = next(f for f in report.features if f.feature == "amount")
    before, after = float(ref["amount"].mean()), float(cur["amount"].mean())
    assert f"mean {before:.3g} → {after:.3g}" in amount.shift
    assert "W1 100 = " in amount.shift  # a constant +100 moves every quantile by 100
    country = next(f for f in report.features if f.feature == "country")
    assert country.shift == "'XX' 0.0% → 50.0% of rows"
    assert f"| amount | numeric | {amount.shift} |" in md
    hour = next(f for f in report.features if f.feature == "hour")
    assert "W1 0 = 0.00 SD" in hour.shift  # unchanged feature: no shift
