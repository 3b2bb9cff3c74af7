"""A/B (canary) decision: one-sided pooled two-proportion z-test without peeking.

With ``max_looks == 1`` it is a fixed-horizon test that refuses to conclude before the
required n per arm. With ``max_looks > 1`` it is a group-sequential test whose per-look
boundary comes from O'Brien-Fleming-type Lan-DeMets alpha spending
(alpha(t) = 2 - 2 Phi(z_{alpha/2} / sqrt(t))), with equally spaced looks at information
fraction t = looks_done / max_looks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class AbDecision:
    """Outcome: ``state`` is promote | reject | inconclusive, with the numbers behind it."""

    state: Literal["promote", "reject", "inconclusive"]
    p_value: float
    z: float
    ci: tuple[float, float]
    required_n: int
    boundary: float
    reason: str


def required_n(baseline: float, mde: float, alpha: float, power: float) -> int:
    """Per-arm n for a one-sided test detecting an absolute lift ``mde`` over ``baseline``."""
    from scipy.stats import norm

    p1, p2 = baseline, min(baseline + mde, 1 - 1e-9)
    za, zb = float(norm.isf(alpha)), float(norm.isf(1 - power))
    pbar = (p1 + p2) / 2
    root = za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(root**2 / mde**2)


def obf_spent(t: float, alpha: float) -> float:
    """Cumulative one-sided alpha spent at information fraction t (O'Brien-Fleming-type)."""
    from scipy.stats import norm

    return 0.0 if t <= 0 else float(2 - 2 * norm.cdf(norm.isf(alpha / 2) / math.sqrt(min(t, 1.0))))


def boundary(looks_done: int, max_looks: int, alpha: float) -> float:
    """Nominal z boundary at this look; approximated by spending the increment independently."""
    from scipy.stats import norm

    if max_looks <= 1:
        return float(norm.isf(alpha))
    inc = obf_spent(looks_done / max_looks, alpha) - obf_spent((looks_done - 1) / max_looks, alpha)
    return float(norm.isf(max(inc, 1e-15)))


def decide(
    control_successes: int,
    control_n: int,
    treatment_successes: int,
    treatment_n: int,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    mde: float = 0.01,
    looks_done: int = 1,
    max_looks: int = 1,
    direction: Literal["greater", "less"] = "greater",
) -> AbDecision:
    """Decide a canary from success counts.

    ``direction="greater"`` means success is good (H1: treatment rate > control); "less"
    means success is bad (e.g. errors). ``promote``: significant in the wanted direction
    at this look's boundary. ``reject``: the horizon (n or final look) is reached without
    significance, or the treatment is significantly worse. Otherwise ``inconclusive``:
    keep collecting. ``ci`` is the two-sided (1-2*alpha) Wald CI of treatment - control.
    """
    from scipy.stats import norm

    if (
        min(control_n, treatment_n) <= 0
        or not (0 <= control_successes <= control_n)
        or not (0 <= treatment_successes <= treatment_n)
    ):
        from mlship.errors import ConfigError

        raise ConfigError("invalid counts: need 0 <= successes <= n and n > 0", hint="pass S/N per arm")
    pa, pb = control_successes / control_n, treatment_successes / treatment_n
    pool = (control_successes + treatment_successes) / (control_n + treatment_n)
    se = math.sqrt(pool * (1 - pool) * (1 / control_n + 1 / treatment_n)) or 1e-12
    z = (pb - pa) / se
    if direction == "less":
        z = -z
    p = float(norm.sf(z))
    se_u = math.sqrt(pa * (1 - pa) / control_n + pb * (1 - pb) / treatment_n)
    zc = norm.isf(alpha)
    ci = (pb - pa - zc * se_u, pb - pa + zc * se_u)
    n_req = required_n(min(max(pa, 1e-3), 0.999 - mde), mde, alpha, power)
    b = boundary(looks_done, max_looks, alpha)
    n = min(control_n, treatment_n)
    if max_looks <= 1:
        if n < n_req:
            return AbDecision("inconclusive", p, z, ci, n_req, b, f"keep collecting: {n} < {n_req} per arm")
        if z >= b:
            return AbDecision("promote", p, z, ci, n_req, b, f"treatment better: z={z:.3f} >= {b:.3f}")
        return AbDecision("reject", p, z, ci, n_req, b, f"horizon reached without significance (p={p:.4f})")
    if z >= b:
        return AbDecision("promote", p, z, ci, n_req, b, f"crossed look {looks_done} boundary z={b:.3f}")
    if z <= -b or looks_done >= max_looks:
        return AbDecision("reject", p, z, ci, n_req, b, f"look {looks_done}/{max_looks}: not better (z={z:.3f})")
    return AbDecision("inconclusive", p, z, ci, n_req, b, f"look {looks_done}/{max_looks}: keep collecting")


def sample_ratio_mismatch(control_n: int, treatment_n: int, expected_treatment_share: float) -> float:
    """Chi-square goodness-of-fit p-value of the arm counts vs the configured split (SRM if < 0.001)."""
    from scipy.stats import chisquare

    total = control_n + treatment_n
    exp = [total * (1 - expected_treatment_share), total * expected_treatment_share]
    return float(chisquare([control_n, treatment_n], exp).pvalue)
