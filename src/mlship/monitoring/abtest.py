"""A/B (canary) decision: one-sided pooled two-proportion z-test without peeking.

With ``max_looks == 1`` it is a fixed-horizon test that refuses to conclude before the
required n per arm. With ``max_looks > 1`` it is a group-sequential test whose per-look
boundary comes from O'Brien-Fleming-type Lan-DeMets alpha spending
(alpha(t) = 2 - 2 Phi(z_{alpha/2} / sqrt(t))), with equally spaced looks at information
fraction t = looks_done / max_looks.

The boundaries are exact: look k's boundary c_k solves P(Z_1 < c_1, ..., Z_{k-1} < c_{k-1},
Z_k >= c_k) = alpha(t_k) - alpha(t_{k-1}) under H0, computed by recursive numerical
integration of the score process (independent increments; Armitage, McPherson & Rowe 1969;
Jennison & Turnbull 2000, ch. 19) on a Simpson grid. Spending each increment as if the looks
were independent (the usual shortcut) over-protects: it spends about 3.2% of a 5% alpha over
5 looks and loses power. The required n of a sequential plan is the fixed-horizon n times the
design's inflation factor, found from the same recursion, so the planned looks keep the
stated power.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from mlship.errors import ConfigError


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


def required_n(baseline: float, mde: float, alpha: float, power: float, max_looks: int = 1) -> int:
    """Per-arm n for a one-sided test detecting an absolute lift ``mde`` over ``baseline``.

    With ``max_looks > 1`` this is the maximum n of the sequential plan (the last look): the
    fixed-horizon n times the spending design's inflation factor.
    """
    from scipy.stats import norm  # noqa: PLC0415 - scipy: heavy, imported where it is used (off `--help` and the light paths)

    p1, p2 = baseline, min(baseline + mde, 1 - 1e-9)
    za, zb = float(norm.isf(alpha)), float(norm.isf(1 - power))
    pbar = (p1 + p2) / 2
    root = za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    fixed = root**2 / mde**2
    return math.ceil(fixed * inflation_factor(max_looks, alpha, power) if max_looks > 1 else fixed)


def obf_spent(t: float, alpha: float) -> float:
    """Cumulative one-sided alpha spent at information fraction t (O'Brien-Fleming-type)."""
    from scipy.stats import norm  # noqa: PLC0415 - scipy: heavy, imported where it is used (off `--help` and the light paths)

    return 0.0 if t <= 0 else float(2 - 2 * norm.cdf(norm.isf(alpha / 2) / math.sqrt(min(t, 1.0))))


MAX_LOOKS = 50  # boundaries for more looks than this are neither needed nor quick
_GRID = 401  # Simpson points per look; boundaries agree with published tables to 1e-5
_TAIL_SD = 8.0  # the continuation region is cut this many sd below the drift (mass < 1e-15)


def _simpson_weights(n: int, width: float) -> np.ndarray:
    w = np.ones(n)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return w * width / (3 * (n - 1))


@dataclass(frozen=True)
class _Walk:
    """The score process S_t ~ N(drift*t, t) after some looks: its sub-density on the grid of
    values that crossed no boundary so far (Simpson weights folded in). Before the first look
    it is a point mass at 0 at t = 0, so the first look needs no case of its own."""

    t: float
    grid: np.ndarray
    dens: np.ndarray

    @staticmethod
    def start() -> _Walk:
        return _Walk(0.0, np.zeros(1), np.ones(1))

    def crossing(self, c: float, t: float, drift: float) -> float:
        """Probability of first crossing z boundary ``c`` at information time ``t``."""
        from scipy.special import ndtr  # noqa: PLC0415 - scipy: heavy, imported where it is used (off `--help` and the light paths)

        step = t - self.t
        return float(self.dens @ ndtr((self.grid + drift * step - c * math.sqrt(t)) / math.sqrt(step)))

    def advance(self, c: float, t: float, drift: float) -> _Walk:
        """The walk at time ``t``, kept only below boundary ``c``."""
        top, scale = c * math.sqrt(t), math.sqrt(t - self.t)
        grid = np.linspace(min(drift * t - _TAIL_SD * math.sqrt(t), top - 1e-9), top, _GRID)
        z = (grid[:, None] - self.grid[None, :] - drift * (t - self.t)) / scale
        kernel = np.exp(-0.5 * z**2) / (scale * math.sqrt(2 * math.pi))
        return _Walk(t, grid, (kernel @ self.dens) * _simpson_weights(_GRID, top - grid[0]))


@lru_cache(maxsize=64)
def sequential_boundaries(max_looks: int, alpha: float) -> tuple[float, ...]:
    """Exact O'Brien-Fleming-type Lan-DeMets z boundaries for ``max_looks`` equally spaced looks."""
    from scipy.optimize import brentq  # noqa: PLC0415 - scipy: heavy, imported where it is used (off `--help` and the light paths)
    from scipy.stats import norm  # noqa: PLC0415 - scipy: heavy, imported where it is used (off `--help` and the light paths)

    walk, bounds = _Walk.start(), []
    for k in range(1, max_looks + 1):
        t = k / max_looks
        target = obf_spent(t, alpha) - obf_spent((k - 1) / max_looks, alpha)
        if target <= 1e-15:  # nothing to spend this early: the boundary is out of reach
            c = float(norm.isf(1e-15))
        else:
            c = float(brentq(lambda c, w=walk, t=t, g=target: w.crossing(c, t, 0.0) - g, -10.0, 40.0, xtol=1e-10))
        bounds.append(c)
        walk = walk.advance(c, t, 0.0)
    return tuple(bounds)


@lru_cache(maxsize=64)
def inflation_factor(max_looks: int, alpha: float, power: float) -> float:
    """Maximum information of the sequential design over the fixed-horizon one at the same power."""
    from scipy.optimize import brentq  # noqa: PLC0415 - scipy: heavy, imported where it is used (off `--help` and the light paths)
    from scipy.stats import norm  # noqa: PLC0415 - scipy: heavy, imported where it is used (off `--help` and the light paths)

    if max_looks <= 1:
        return 1.0
    bounds = sequential_boundaries(max_looks, alpha)

    def shortfall(drift: float) -> float:
        walk, crossed = _Walk.start(), 0.0
        for k, c in enumerate(bounds, start=1):
            crossed += walk.crossing(c, k / max_looks, drift)
            walk = walk.advance(c, k / max_looks, drift)
        return crossed - power

    fixed_drift = float(norm.isf(alpha) + norm.isf(1 - power))
    drift = float(brentq(shortfall, fixed_drift, 2 * fixed_drift + 5, xtol=1e-8))
    return (drift / fixed_drift) ** 2


def boundary(looks_done: int, max_looks: int, alpha: float) -> float:
    """Nominal z boundary at this look (the fixed-horizon critical value when there is one look)."""
    from scipy.stats import norm  # noqa: PLC0415 - scipy: heavy, imported where it is used (off `--help` and the light paths)

    if max_looks <= 1:
        return float(norm.isf(alpha))
    return sequential_boundaries(max_looks, alpha)[looks_done - 1]


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
    from scipy.stats import norm  # noqa: PLC0415 - scipy: heavy, imported where it is used (off `--help` and the light paths)

    if (
        min(control_n, treatment_n) <= 0
        or not (0 <= control_successes <= control_n)
        or not (0 <= treatment_successes <= treatment_n)
    ):
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
    n_req = required_n(min(max(pa, 1e-3), 0.999 - mde), mde, alpha, power, max_looks)
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
    below = f"look {looks_done}/{max_looks}: z={z:.3f} is below the boundary {b:.3f}"
    return AbDecision("inconclusive", p, z, ci, n_req, b, below)


def sample_ratio_mismatch(control_n: int, treatment_n: int, expected_treatment_share: float) -> float:
    """Chi-square goodness-of-fit p-value of the arm counts vs the configured split (SRM if < 0.001)."""
    from scipy.stats import chisquare  # noqa: PLC0415 - scipy: heavy, imported where it is used (off `--help` and the light paths)

    total = control_n + treatment_n
    exp = [total * (1 - expected_treatment_share), total * expected_treatment_share]
    return float(chisquare([control_n, treatment_n], exp).pvalue)
