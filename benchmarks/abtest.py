"""A/B decision by simulation: type-I error under A/A (fixed horizon, 5 looks, naive peeking) and power.

Every simulated test is decided by the product's own `mlship.monitoring.abtest.decide`, so the
figures are those of the code that decides canaries. Design: baseline conversion 10%,
alpha 0.05 one-sided, power 0.8, MDE +2 points -> required n per arm from `required_n`
(the fixed-horizon n, and the 5-look plan's maximum n, inflated for its looks).

Scenarios (seeded, `--sims` simulated tests each, default 2000):
  aa_fixed_horizon     A/A, look at the required n (topped up if decide asks) -> type-I error
  aa_5_looks_400       A/A, 5 looks of 400 per arm (benchmarks/README.md) -> type-I error
  aa_5_looks_planned   A/A, 5 equal looks up to the plan's maximum n      -> type-I error
  aa_naive_peeking     A/A, same 5 looks, "p < alpha at any look"         -> what peeking costs
  power_fixed_horizon  +2 points, the same fixed-horizon procedure          -> power
  power_5_looks        +2 points, 5 equal looks up to the plan's maximum n -> power, mean n per arm
  power_5_looks_fixed_n     the same looks up to the fixed-horizon n only  -> what skipping the inflation costs

`uv run python benchmarks/abtest.py [--sims N]` writes benchmarks/results/abtest.json.
Bounded: 7 x sims x at most 5 decisions (at most 60k calls at the default).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from _common import save

from mlship.monitoring.abtest import decide, required_n, sequential_boundaries

BASELINE, MDE, ALPHA, POWER, LOOKS = 0.10, 0.02, 0.05, 0.8, 5


def simulate(
    sims: int, p_control: float, p_treatment: float, per_look: int, looks: int, seed: int, *, naive: bool = False
) -> dict[str, float]:
    """Share of simulated tests that promoted / rejected, and the mean n per arm at stopping."""
    rng = np.random.default_rng(seed)
    a = rng.binomial(per_look, p_control, size=(sims, looks)).cumsum(axis=1)
    b = rng.binomial(per_look, p_treatment, size=(sims, looks)).cumsum(axis=1)
    promoted = rejected = 0
    stopped_n = 0
    for i in range(sims):
        for k in range(looks):
            n = per_look * (k + 1)
            if naive:  # an analyst who re-runs a fixed-horizon test at every look and stops at p < alpha
                d = decide(int(a[i, k]), n, int(b[i, k]), n, alpha=ALPHA, mde=MDE, max_looks=1)
                if d.p_value < ALPHA:
                    promoted += 1
                    break
                continue
            d = decide(int(a[i, k]), n, int(b[i, k]), n, alpha=ALPHA, power=POWER, mde=MDE, looks_done=k + 1,
                       max_looks=looks)  # fmt: skip
            if d.state != "inconclusive":
                promoted += d.state == "promote"
                rejected += d.state == "reject"
                break
        stopped_n += n
    return {
        "promote_rate": round(promoted / sims, 4),
        "reject_rate": round(rejected / sims, 4),
        "mean_n_per_arm": round(stopped_n / sims, 1),
        "n_per_look": per_look,
        "looks": looks,
    }


def simulate_fixed(sims: int, p_control: float, p_treatment: float, n_start: int, seed: int) -> dict[str, float]:
    """Fixed horizon as a user runs it: look at the planned n; when `decide` (whose required n
    follows the observed control rate) answers "need k more per arm", collect k more and look
    again, at most 5 times. The extra looks are counted: they are the price of a horizon that
    depends on the data."""
    rng = np.random.default_rng(seed)
    promoted = rejected = undecided = extra_looks = 0
    stopped_n = 0
    for _ in range(sims):
        n = n_start
        a, b = int(rng.binomial(n, p_control)), int(rng.binomial(n, p_treatment))
        for attempt in range(5):
            d = decide(a, n, b, n, alpha=ALPHA, power=POWER, mde=MDE)
            if d.state != "inconclusive":
                promoted += d.state == "promote"
                rejected += d.state == "reject"
                break
            extra_looks += attempt == 0
            more = d.required_n - n
            a, b = a + int(rng.binomial(more, p_control)), b + int(rng.binomial(more, p_treatment))
            n = d.required_n
        else:
            undecided += 1
        stopped_n += n
    return {
        "promote_rate": round(promoted / sims, 4),
        "reject_rate": round(rejected / sims, 4),
        "undecided_rate": round(undecided / sims, 4),
        "share_needing_more_than_planned": round(extra_looks / sims, 4),
        "mean_n_per_arm": round(stopped_n / sims, 1),
        "planned_n_per_arm": n_start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=2000, help="simulated tests per scenario")
    sims = parser.parse_args().sims
    started = time.perf_counter()
    n_fixed = required_n(BASELINE, MDE, ALPHA, POWER)
    n_max = required_n(BASELINE, MDE, ALPHA, POWER, max_looks=LOOKS)
    per_look = math.ceil(n_max / LOOKS)
    treated = BASELINE + MDE
    runs = {
        "aa_fixed_horizon": simulate_fixed(sims, BASELINE, BASELINE, n_fixed, seed=1),
        "aa_5_looks_400": simulate(sims, BASELINE, BASELINE, 400, LOOKS, seed=7),
        "aa_5_looks_planned": simulate(sims, BASELINE, BASELINE, per_look, LOOKS, seed=2),
        "aa_naive_peeking": simulate(sims, BASELINE, BASELINE, per_look, LOOKS, seed=2, naive=True),
        "power_fixed_horizon": simulate_fixed(sims, BASELINE, treated, n_fixed, seed=3),
        "power_5_looks": simulate(sims, BASELINE, treated, per_look, LOOKS, seed=4),
        "power_5_looks_fixed_n": simulate(sims, BASELINE, treated, math.ceil(n_fixed / LOOKS), LOOKS, seed=5),
    }
    # Monte-Carlo standard error of a rate near alpha: the yardstick for "stays at the nominal level".
    mc_se = math.sqrt(ALPHA * (1 - ALPHA) / sims)
    save(
        "abtest",
        {
            "design": {
                "baseline": BASELINE,
                "effect_for_power": MDE,
                "alpha_one_sided": ALPHA,
                "power_target": POWER,
                "required_n_per_arm": n_fixed,
                "sequential_max_n_per_arm": n_max,
                "looks": LOOKS,
                "boundaries": [round(b, 4) for b in sequential_boundaries(LOOKS, ALPHA)],
                "spending": "O'Brien-Fleming-type Lan-DeMets, exact boundaries",
            },
            "sims_per_scenario": sims,
            "monte_carlo_se_at_alpha": round(mc_se, 4),
            "type_one_error": {
                "fixed_horizon": runs["aa_fixed_horizon"]["promote_rate"],
                "five_looks_400_per_look": runs["aa_5_looks_400"]["promote_rate"],
                "five_looks_planned": runs["aa_5_looks_planned"]["promote_rate"],
                "naive_peeking_five_looks": runs["aa_naive_peeking"]["promote_rate"],
            },
            "power": {
                "fixed_horizon": runs["power_fixed_horizon"]["promote_rate"],
                "fixed_horizon_mean_n_per_arm": runs["power_fixed_horizon"]["mean_n_per_arm"],
                "five_looks": runs["power_5_looks"]["promote_rate"],
                "five_looks_mean_n_per_arm": runs["power_5_looks"]["mean_n_per_arm"],
                "five_looks_up_to_fixed_n": runs["power_5_looks_fixed_n"]["promote_rate"],
            },
            "scenarios": runs,
            "seconds": round(time.perf_counter() - started, 1),
        },
    )


if __name__ == "__main__":
    main()
