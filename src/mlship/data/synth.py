"""A deterministic synthetic card-fraud dataset, with optional drift and injected defects.

The label follows a logistic model of the features plus latent noise, so a good model
reaches a ROC AUC near 0.9 but never 1.0. `customer_segment` (the sensitive attribute)
does not enter the label: a model that uses it has nothing to gain but unfairness.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from mlship.data.io import table_format, write_table
from mlship.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

MERCHANTS = ["grocery", "restaurants", "fuel", "pharmacy", "electronics", "travel", "online_gaming", "jewelry"]
MERCHANT_P = [0.26, 0.20, 0.14, 0.10, 0.10, 0.08, 0.07, 0.05]
MERCHANT_RISK = [-0.6, -0.4, -0.3, -0.5, 0.6, 0.5, 1.0, 1.1]
COUNTRIES = ["US", "GB", "DE", "FR", "ES", "BR", "IN", "MX"]
COUNTRY_P = [0.40, 0.12, 0.11, 0.10, 0.07, 0.08, 0.07, 0.05]
COUNTRY_RISK = [-0.2, -0.1, -0.3, -0.1, 0.0, 0.5, 0.4, 0.6]
DEVICES = ["pos", "mobile", "desktop", "tablet"]
DEVICE_P = [0.40, 0.35, 0.18, 0.07]
DEVICE_RISK = [-0.7, 0.2, 0.3, 0.4]
SEGMENTS = ["standard", "premium", "student", "business"]
SEGMENT_P = [0.55, 0.20, 0.15, 0.10]
HOUR_WEIGHTS = [1, 1, 1, 1, 1, 2, 3, 5, 7, 8, 8, 8, 9, 8, 8, 8, 8, 9, 9, 8, 6, 4, 3, 2]

COLUMNS = [
    "transaction_id",
    "amount",
    "hour",
    "merchant_category",
    "country",
    "device_type",
    "customer_segment",
    "account_age_days",
    "num_tx_24h",
    "is_fraud",
]


class Corruption(StrEnum):
    """One defect to inject, so the validation stage can be exercised honestly."""

    nulls = "nulls"
    negative_amounts = "negative_amounts"
    unknown_category = "unknown_category"
    missing_column = "missing_column"
    wrong_dtype = "wrong_dtype"
    duplicate_ids = "duplicate_ids"
    out_of_range_hour = "out_of_range_hour"
    empty = "empty"


def generate(rows: int, seed: int = 42, drift: float = 0.0) -> pd.DataFrame:
    """`rows` transactions; the same (rows, seed, drift) always gives the same frame.

    `drift` >= 0 shifts the feature distributions (bigger amounts, more night-time and
    online activity, younger accounts): 0.5 is a moderate, clearly detectable shift.
    """
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)
    import pandas as pd  # noqa: PLC0415 - pandas: heavy, imported where it is used (off `--help` and the light paths)

    if rows < 1:
        raise ConfigError(f"--rows must be at least 1, got {rows}")
    if drift < 0:
        raise ConfigError(f"--drift must be >= 0, got {drift}")
    rng = np.random.default_rng(seed)

    hour_p = np.asarray(HOUR_WEIGHTS, dtype=float)
    night = np.isin(np.arange(24), [0, 1, 2, 3, 4, 5, 22, 23])
    hour_p = hour_p * np.where(night, 1.0 + 2.0 * drift, 1.0)
    hour_p /= hour_p.sum()
    merchant_p = _tilt(MERCHANT_P, [0, 0, 0, 0, 1, 1, 1, 1], drift)
    device_p = _tilt(DEVICE_P, [0, 1, 1, 0], drift)

    merchant = rng.choice(len(MERCHANTS), size=rows, p=merchant_p)
    country = rng.choice(len(COUNTRIES), size=rows, p=COUNTRY_P)
    device = rng.choice(len(DEVICES), size=rows, p=device_p)
    segment = rng.choice(len(SEGMENTS), size=rows, p=SEGMENT_P)
    hour = rng.choice(24, size=rows, p=hour_p)
    amount = np.round(rng.lognormal(mean=3.6 + 0.6 * drift, sigma=1.0, size=rows) + 1.0, 2)
    age = np.floor(rng.exponential(scale=900.0 / (1.0 + drift), size=rows)).astype(np.int64)
    busy = rng.poisson(lam=2.0 + 1.5 * drift, size=rows)

    logit = (
        -1.9
        + 0.9 * (np.log(amount) - 3.6)
        + 0.9 * night[hour]
        + 0.8 * (night[hour] & (merchant >= 4))
        + np.asarray(MERCHANT_RISK)[merchant]
        + np.asarray(COUNTRY_RISK)[country]
        + np.asarray(DEVICE_RISK)[device]
        - 0.55 * np.log1p(age / 90.0)
        + 0.28 * busy
        + rng.normal(0.0, 0.5, size=rows)
    )
    fraud = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    # Fraudsters tend to burst: a fraud adds a few extra transactions in the last 24h.
    busy = busy + fraud * rng.poisson(lam=2.0, size=rows)

    return pd.DataFrame(
        {
            "transaction_id": [f"tx-{seed:04d}-{i:09d}" for i in range(rows)],
            "amount": amount,
            "hour": hour.astype(np.int64),
            "merchant_category": np.asarray(MERCHANTS, dtype=object)[merchant],
            "country": np.asarray(COUNTRIES, dtype=object)[country],
            "device_type": np.asarray(DEVICES, dtype=object)[device],
            "customer_segment": np.asarray(SEGMENTS, dtype=object)[segment],
            "account_age_days": age,
            "num_tx_24h": busy.astype(np.int64),
            "is_fraud": fraud,
        },
        columns=COLUMNS,
    )


def corrupt(df: pd.DataFrame, kind: Corruption | str, seed: int = 42) -> pd.DataFrame:
    """Return a copy of `df` with one defect injected (the first rows are always affected)."""
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)

    kind = Corruption(kind)
    out = df.copy()
    n = len(out)
    rng = np.random.default_rng(seed + 7)
    some = (
        np.unique(np.concatenate([[0], rng.choice(n, size=max(1, n // 20), replace=False)]))
        if n
        else np.zeros(0, dtype=np.int64)
    )
    if kind is Corruption.nulls:
        out["amount"] = out["amount"].astype("float64")
        out.loc[out.index[some], "amount"] = np.nan
    elif kind is Corruption.negative_amounts:
        out.loc[out.index[some], "amount"] = -out.loc[out.index[some], "amount"]
    elif kind is Corruption.unknown_category:
        out.loc[out.index[some], "merchant_category"] = "crypto_atm"
    elif kind is Corruption.missing_column:
        out = out.drop(columns=["country"])
    elif kind is Corruption.wrong_dtype:
        out["amount"] = [f"{v:.2f} USD" for v in out["amount"]]
    elif kind is Corruption.duplicate_ids:
        ids = out["transaction_id"].to_numpy(copy=True)
        if n > 1:
            ids[some[some > 0]] = ids[0]
            ids[1] = ids[0]
        out["transaction_id"] = ids
    elif kind is Corruption.out_of_range_hour:
        out.loc[out.index[some], "hour"] = 24 + (out.loc[out.index[some], "hour"] % 7)
    else:  # Corruption.empty: the header survives, the rows don't
        out = out.iloc[0:0]
    return out


def _tilt(p: list[float], risky: list[int], drift: float) -> list[float]:
    """Shift probability mass toward the `risky` categories by a factor growing with drift."""
    w = [pi * (1.0 + 1.5 * drift if r else 1.0) for pi, r in zip(p, risky, strict=True)]
    total = sum(w)
    return [wi / total for wi in w]


def write_synthetic(out: Path, *, rows: int, seed: int = 42, drift: float = 0.0, corruption: str | None = None) -> str:
    """Generate, optionally corrupt, and atomically write a dataset; return a one-line summary."""

    table_format(out)  # reject an unsupported extension before doing any work
    df = generate(rows, seed=seed, drift=drift)
    if corruption:
        df = corrupt(df, corruption, seed=seed)
    write_table(df, out)
    rate = float(df["is_fraud"].mean()) if len(df) and "is_fraud" in df else float("nan")
    extra = f", drift {drift:g}" if drift else ""
    extra += f", defect {corruption}" if corruption else ""
    return f"wrote {out} ({len(df):,} rows, fraud rate {rate:.1%}{extra})"
