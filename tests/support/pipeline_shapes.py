"""Pipeline shapes a user may configure, and a small public dataset to train them on.

The factories are importable by a `mlship serve` subprocess (`tests.support.pipeline_shapes:<name>`
as `estimator`), like a team's own module would be. The data is scikit-learn's bundled
diabetes table (442 rows, numeric only; no download) with the target made binary, plus a
few categorical columns derived from it for the shapes that need them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

DIABETES_NUMERIC = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
DERIVED_CATEGORICAL = ["sex_label", "age_band", "bmi_band"]


def diabetes_frame(nan_share: float = 0.0) -> pd.DataFrame:
    """The diabetes data, `progressed` = 1 when the one-year progression is above its median.

    With `nan_share`, that share of the `bmi` values (seeded) is missing.
    """
    from sklearn.datasets import load_diabetes

    df = load_diabetes(as_frame=True, scaled=False).frame
    progression = df.pop("target")
    df["progressed"] = (progression > progression.median()).astype(int)
    df["sex_label"] = np.where(df["sex"] == 1, "F", "M")
    df["age_band"] = (df["age"] // 10 * 10).astype(int).astype(str) + "s"
    df["bmi_band"] = pd.cut(df["bmi"], [0, 18.5, 25, 30, 100], labels=["under", "normal", "over", "obese"]).astype(str)
    if nan_share:
        rng = np.random.default_rng(0)
        df.loc[rng.random(len(df)) < nan_share, "bmi"] = np.nan
    return df


def random_forest(categorical: list[str], numeric: list[str], seed: int) -> Any:
    """One-hot + passthrough into a small random forest."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    pre = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
            ("numeric", "passthrough", numeric),
        ]
    )
    return Pipeline([("pre", pre), ("forest", RandomForestClassifier(n_estimators=40, max_depth=6, random_state=seed))])


class SignedLog(TransformerMixin, BaseEstimator):
    """A team's own transformer: sign(x) · log1p(|x|), column by column."""

    def fit(self, X: Any, y: Any = None) -> SignedLog:
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def transform(self, X: Any) -> np.ndarray:
        values = np.asarray(X, dtype=np.float64)
        return np.sign(values) * np.log1p(np.abs(values))


def custom_transformer(categorical: list[str], numeric: list[str], seed: int) -> Any:
    """A user's factory with their own transformer before a logistic regression."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    pre = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
            ("numeric", SignedLog(), numeric),
        ]
    )
    return Pipeline([("pre", pre), ("model", LogisticRegression(max_iter=2000, random_state=seed))])
