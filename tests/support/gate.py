"""Deliberately flawed models for the gate tests: each one must make exactly one gate fail.

They are importable (`tests.support.gate:<factory>` as `estimator` in the settings), so a
model trained with them is logged to MLflow and loaded back like any other.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from mlship.model.estimators import logistic_regression


def weak(categorical: list[str], numeric: list[str], seed: int) -> Any:
    """Logistic regression on one numeric feature: learns something, far less than the champion."""
    return logistic_regression([], numeric[:1], seed)


class GroupBiased(ClassifierMixin, BaseEstimator):
    """A sound model whose scores are then pushed up for one group of the sensitive attribute."""

    def __init__(self, base: Any = None, column: str = "customer_segment", group: str = "student", boost: float = 0.6):
        self.base, self.column, self.group, self.boost = base, column, group, boost

    def fit(self, X: Any, y: Any) -> GroupBiased:
        self.base.fit(X, y)
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        p = self.base.predict_proba(X)[:, 1]
        p = np.clip(p + self.boost * (X[self.column].to_numpy() == self.group), 0.0, 1.0)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


def biased(categorical: list[str], numeric: list[str], seed: int) -> Any:
    """Uses the sensitive attribute (listed as a feature) to flag every 'student' transaction."""
    return GroupBiased(base=logistic_regression(categorical, numeric, seed))


class Ballast(ClassifierMixin, BaseEstimator):
    """A fine model carrying megabytes of incompressible dead weight into its pickle."""

    def __init__(self, base: Any = None, megabytes: float = 3.0):
        self.base, self.megabytes = base, megabytes

    def fit(self, X: Any, y: Any) -> Ballast:
        self.base.fit(X, y)
        self.classes_ = np.array([0, 1])
        self.ballast_ = np.random.default_rng(0).bytes(int(self.megabytes * 1e6))
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.asarray(self.base.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.base.predict(X))


def bloated(categorical: list[str], numeric: list[str], seed: int) -> Any:
    return Ballast(base=logistic_regression(categorical, numeric, seed))
