"""Estimator factories referenced from settings as `"module:function"`.

A factory takes the categorical and numeric feature lists and a seed and returns an
unfitted scikit-learn classifier that accepts a DataFrame of those columns.
"""

from __future__ import annotations

from typing import Any


def gradient_boosting(categorical: list[str], numeric: list[str], seed: int) -> Any:
    """One-hot encoding + histogram gradient boosting: strong, fast, deterministic for a seed."""
    from sklearn.compose import ColumnTransformer  # noqa: PLC0415 - sklearn: heavy, imported where it is used (off `--help` and the light paths)
    from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: PLC0415 - sklearn: heavy, imported where it is used (off `--help` and the light paths)
    from sklearn.pipeline import Pipeline  # noqa: PLC0415 - sklearn: heavy, imported where it is used (off `--help` and the light paths)
    from sklearn.preprocessing import OneHotEncoder  # noqa: PLC0415 - sklearn: heavy, imported where it is used (off `--help` and the light paths)

    pre = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
            ("numeric", "passthrough", numeric),
        ],
        verbose_feature_names_out=False,
    )
    clf = HistGradientBoostingClassifier(
        max_iter=200,
        learning_rate=0.08,
        max_leaf_nodes=31,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=seed,
    )
    return Pipeline([("preprocess", pre), ("classifier", clf)])


def logistic_regression(categorical: list[str], numeric: list[str], seed: int) -> Any:
    """Scaled logistic regression: a small, quick baseline."""
    from sklearn.compose import ColumnTransformer  # noqa: PLC0415 - sklearn: heavy, imported where it is used (off `--help` and the light paths)
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415 - sklearn: heavy, imported where it is used (off `--help` and the light paths)
    from sklearn.pipeline import Pipeline  # noqa: PLC0415 - sklearn: heavy, imported where it is used (off `--help` and the light paths)
    from sklearn.preprocessing import OneHotEncoder, StandardScaler  # noqa: PLC0415 - sklearn: heavy, imported where it is used (off `--help` and the light paths)

    pre = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
            ("numeric", StandardScaler(), numeric),
        ],
        verbose_feature_names_out=False,
    )
    return Pipeline([("preprocess", pre), ("classifier", LogisticRegression(max_iter=1000, random_state=seed))])
