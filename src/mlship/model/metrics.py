"""Binary-classification metrics on held-out predictions, one definition for train and gate."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

HIGHER_IS_BETTER = {
    "accuracy": True,
    "precision": True,
    "recall": True,
    "f1": True,
    "roc_auc": True,
    "pr_auc": True,
    "log_loss": False,
}


def classification_metrics(y_true: npt.ArrayLike, proba: npt.ArrayLike, threshold: float = 0.5) -> dict[str, float]:
    """accuracy, precision, recall, f1, roc_auc, pr_auc (average precision) and log_loss.

    Ranking metrics are NaN when only one class is present (undefined, not zero).
    """
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)
    from sklearn import metrics as skm  # noqa: PLC0415 - sklearn: heavy, imported where it is used (off `--help` and the light paths)

    y = np.asarray(y_true).astype(int)
    p = np.clip(np.asarray(proba, dtype=float), 1e-15, 1 - 1e-15)
    pred = (p >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    return {
        "accuracy": float(skm.accuracy_score(y, pred)),
        "precision": float(skm.precision_score(y, pred, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, zero_division=0)),
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(skm.average_precision_score(y, p)) if both else float("nan"),
        "log_loss": float(skm.log_loss(y, p, labels=[0, 1])),
    }


def positive_proba(model: object, X: object) -> np.ndarray:
    """P(class 1) from any fitted sklearn classifier (the pipeline's last step decides)."""
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)

    proba = np.asarray(model.predict_proba(X))  # type: ignore[attr-defined]
    return proba[:, 1] if proba.ndim == 2 else proba
