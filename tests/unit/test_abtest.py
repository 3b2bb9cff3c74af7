"""A/B decisions: correct one-sided p, no peeking, type-I error under repeated looks."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from mlship.cli import app
from mlship.commands import register_all
from mlship.monitoring.abtest import (
    boundary,
    decide,
    inflation_factor,
    obf_spent,
    required_n,
    sample_ratio_mismatch,
    sequential_boundaries,
)


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
    # exact spending: at the nominal level, within 3 Monte-Carlo SE (0.49 points at 2000 sims)
    assert 0.05 - 0.015 <= false_promotions / sims <= 0.05 + 0.015


def test_boundaries_match_the_published_lan_demets_obrien_fleming_table() -> None:
    # K=5 equally spaced looks, one-sided alpha 0.025 (Jennison & Turnbull 2000; R ldbounds/gsDesign sfLDOF)
    published = (4.8769, 3.3570, 2.6803, 2.2898, 2.0310)
    assert all(abs(a - b) < 2e-4 for a, b in zip(sequential_boundaries(5, 0.025), published, strict=True))
    assert boundary(3, 5, 0.025) == sequential_boundaries(5, 0.025)[2]
    assert abs(boundary(1, 1, 0.05) - 1.6449) < 1e-4
    # 50 looks at a tiny alpha: the first looks have (numerically) nothing to spend, so no crossing
    many = sequential_boundaries(50, 0.001)
    assert many[0] > 7.9 and 3.0 < many[-1] < 3.3 and list(many[1:]) == sorted(many[1:], reverse=True)


def test_the_boundaries_spend_exactly_alpha_on_a_simulated_score_process() -> None:
    rng = np.random.default_rng(11)
    looks, sims, alpha = 4, 400_000, 0.05
    z = rng.standard_normal((sims, looks)).cumsum(axis=1) / np.sqrt(np.arange(1, looks + 1))
    crossed = (z >= np.array(sequential_boundaries(looks, alpha))).any(axis=1).mean()
    assert abs(crossed - alpha) < 3 * np.sqrt(alpha * (1 - alpha) / sims)
    # the first look spends the spending function's first increment, no more
    first = (z[:, 0] >= sequential_boundaries(looks, alpha)[0]).mean()
    assert abs(first - obf_spent(0.25, alpha)) < 4 * np.sqrt(obf_spent(0.25, alpha) / sims) + 1e-5


def test_a_sequential_plan_is_sized_up_by_its_inflation_factor_and_keeps_its_power() -> None:
    factor = inflation_factor(5, 0.05, 0.8)
    assert 1.01 < factor < 1.06 and inflation_factor(1, 0.05, 0.8) == 1.0
    fixed, planned = required_n(0.10, 0.02, 0.05, 0.8), required_n(0.10, 0.02, 0.05, 0.8, max_looks=5)
    assert planned == int(np.ceil(fixed * factor)) or abs(planned - fixed * factor) <= 1
    # power of the 5-look plan on the score process at the drift the fixed design is powered for, scaled up
    rng = np.random.default_rng(5)
    drift = (1.6449 + 0.8416) * np.sqrt(factor)
    t = np.arange(1, 6) / 5
    s = (rng.standard_normal((200_000, 5)) * np.sqrt(np.diff(t, prepend=0))).cumsum(axis=1) + drift * t
    power = (s / np.sqrt(t) >= np.array(sequential_boundaries(5, 0.05))).any(axis=1).mean()
    assert abs(power - 0.8) < 0.005


def test_srm_and_cli() -> None:
    assert sample_ratio_mismatch(9000, 1000, 0.1) > 0.001
    assert sample_ratio_mismatch(8500, 1500, 0.1) < 0.001
    register_all(app)
    r = CliRunner().invoke(app, ["abtest", "--control", "100/20000", "--treatment", "400/20000", "--mde", "0.01"])
    assert r.exit_code == 0 and "promote" in r.output
    assert "control 100/20000 (0.0050), treatment 400/20000 (0.0200)" in r.output
    bad = CliRunner().invoke(app, ["abtest", "--control", "x", "--treatment", "1/2"])
    assert bad.exit_code == 2
