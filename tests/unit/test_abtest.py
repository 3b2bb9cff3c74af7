"""A/B decisions: correct one-sided p, no peeking, type-I error under repeated looks."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from mlship.cli import app
from mlship.commands import register_all
from mlship.monitoring.abtest import decide, required_n, sample_ratio_mismatch


def test_one_sided_p_value_matches_reference() -> None:
    d = decide(200, 2000, 240, 2000, mde=0.02)
    assert abs(d.z - 2.0213) < 1e-3 and abs(d.p_value - 0.02162) < 1e-4
    worse = decide(240, 2000, 200, 2000, mde=0.02)
    assert worse.p_value > 0.97


def test_fixed_horizon_refuses_to_conclude_early() -> None:
    d = decide(10, 100, 30, 100, mde=0.01)
    assert d.state == "inconclusive" and d.required_n > 100
    assert required_n(0.10, 0.02, 0.05, 0.8) == 3026


def test_type_one_error_with_repeated_looks_stays_nominal() -> None:
    rng = np.random.default_rng(7)
    sims, looks, per_look, p = 2000, 5, 400, 0.1
    a = rng.binomial(per_look, p, size=(sims, looks)).cumsum(axis=1)
    b = rng.binomial(per_look, p, size=(sims, looks)).cumsum(axis=1)
    false_promotions = 0
    for i in range(sims):
        for k in range(looks):
            n = per_look * (k + 1)
            d = decide(int(a[i, k]), n, int(b[i, k]), n, looks_done=k + 1, max_looks=looks)
            if d.state != "inconclusive":
                false_promotions += d.state == "promote"
                break
    assert false_promotions / sims <= 0.05 + 0.015


def test_srm_and_cli() -> None:
    assert sample_ratio_mismatch(9000, 1000, 0.1) > 0.001
    assert sample_ratio_mismatch(8500, 1500, 0.1) < 0.001
    register_all(app)
    r = CliRunner().invoke(app, ["abtest", "--control", "100/20000", "--treatment", "400/20000", "--mde", "0.01"])
    assert r.exit_code == 0 and "promote" in r.output
    bad = CliRunner().invoke(app, ["abtest", "--control", "x", "--treatment", "1/2"])
    assert bad.exit_code == 2
