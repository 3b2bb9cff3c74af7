"""Training: a seeded stratified split, the configured estimator, held-out metrics, an MLflow run.

Same data and seed give the same split, the same model and the same predictions, so a
gate or a reviewer can always reproduce what was shipped.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlship import provenance
from mlship.data.io import fingerprint, read_table
from mlship.data.validation import record_training_kinds
from mlship.errors import ConfigError
from mlship.fsutil import ordinary_permissions, write_json, write_with
from mlship.model.metrics import classification_metrics, positive_proba
from mlship.registry import Registry

if TYPE_CHECKING:
    import pandas as pd

    from mlship.settings import Settings

EstimatorFactory = Callable[[list[str], list[str], int], Any]


@dataclass(frozen=True)
class TrainResult:
    """What `mlship train` produced: the MLflow run and model, and the held-out metrics."""

    run_id: str
    model_uri: str
    metrics: dict[str, float]
    data_sha256: str
    n_train: int
    n_test: int
    seconds: float
    out_dir: str | None = None
    plots: list[str] = field(default_factory=list)

    @property
    def run_model_uri(self) -> str:
        return f"runs:/{self.run_id}/model"

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "model_uri": self.model_uri,
            "run_model_uri": self.run_model_uri,
            "metrics": self.metrics,
            "data_sha256": self.data_sha256,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "seconds": round(self.seconds, 3),
            "out_dir": self.out_dir,
        }


def check_frame(settings: Settings, df: pd.DataFrame, what: str = "data") -> None:
    """The frame has every configured column and a binary 0/1 target (else exit 2)."""
    needed = [*settings.features, settings.target]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ConfigError(
            f"{what} lacks configured column(s): {', '.join(missing)}",
            hint="fix the data or the features/target settings",
        )
    empty = [c for c in needed if df[c].isna().all()]
    if empty:
        raise ConfigError(
            f"{what}: column(s) {', '.join(empty)} hold no values (all null)",
            hint="fill them, or remove them from the features (`mlship validate` reports such defects)",
        )
    labels = set(df[settings.target].dropna().unique().tolist())
    if not labels <= {0, 1}:
        shown = ", ".join(map(str, sorted(labels, key=str)[:5]))
        raise ConfigError(
            f"target {settings.target!r} has values {shown}: only binary classification (0/1) is supported",
            hint="encode the target as 0/1",
        )
    if len(labels) < 2:
        raise ConfigError(f"target {settings.target!r} has a single class in {what}", hint="use data with both classes")


def split(settings: Settings, df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The deterministic stratified train/test split every stage agrees on."""
    from sklearn.model_selection import train_test_split  # noqa: PLC0415 - sklearn: heavy, imported where it is used (off `--help` and the light paths)

    train_df, test_df = train_test_split(
        df, test_size=settings.test_size, stratify=df[settings.target], random_state=settings.seed
    )
    return train_df, test_df


def load_estimator_factory(ref: str) -> EstimatorFactory:
    """Import `package.module:function` (exit 2 with the reason when it cannot be used)."""
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"estimator {ref!r}: cannot import {module_name!r} ({exc})", hint="is the module on PYTHONPATH?"
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"estimator {ref!r}: {module_name} has no function {attr!r}")
    return factory  # type: ignore[no-any-return]


def build_estimator(settings: Settings) -> Any:
    factory = load_estimator_factory(settings.estimator)
    try:
        estimator = factory(list(settings.categorical_features), list(settings.numeric_features), settings.seed)
    except Exception as exc:  # noqa: BLE001 — user code: any failure is a configuration problem
        raise ConfigError(
            f"estimator {settings.estimator!r} failed: {type(exc).__name__}: {exc}",
            hint="a factory takes (categorical, numeric, seed) and returns an unfitted classifier",
        ) from None
    if not (hasattr(estimator, "fit") and hasattr(estimator, "predict_proba")):
        raise ConfigError(f"estimator {settings.estimator!r} did not return a classifier with fit/predict_proba")
    return estimator


def train(settings: Settings, data_path: Path | None = None, out: Path | None = None) -> TrainResult:
    """Fit the configured estimator on the training split, evaluate, and log everything to MLflow."""
    started = time.perf_counter()
    path = data_path or settings.data_path
    df = read_table(path)
    check_frame(settings, df, what=str(path))
    record_training_kinds(settings, df, path)  # what `mlship validate` checks a column's kind against
    train_df, test_df = split(settings, df)
    X_train, y_train = train_df[settings.features], train_df[settings.target].astype(int)
    X_test, y_test = test_df[settings.features], test_df[settings.target].astype(int)

    model = build_estimator(settings)
    model.fit(X_train, y_train)
    proba = positive_proba(model, X_test)
    metrics = classification_metrics(y_test, proba)
    sha = fingerprint(path)

    registry = Registry.from_settings(settings)
    with tempfile.TemporaryDirectory(prefix="mlship-train-") as tmp:
        plots = training_plots(y_test.to_numpy(), proba, Path(tmp) / "plots")
        logged = registry.log_model_run(
            model,
            input_example=X_test.head(5),
            params={
                "estimator": settings.estimator,
                "seed": settings.seed,
                "test_size": settings.test_size,
                "n_train": len(train_df),
                "n_test": len(test_df),
                "features": ",".join(settings.features),
                "target": settings.target,
                **_estimator_params(model),
            },
            metrics=metrics,
            tags={
                "mlship.git_sha": provenance.git_sha(settings.root),
                "mlship.data_path": str(path),
                "mlship.data_sha256": sha,
                **{f"mlship.version.{k}": v for k, v in provenance.versions().items()},
            },
            artifacts=Path(tmp) / "plots",
            run_name=f"train-{settings.model_name}",
        )
        plot_names = [p.name for p in plots]
    out_dir = None
    if out is not None:
        out_dir = str(export(registry, logged.model_uri, out, metrics | {"run_id": logged.run_id}))
    return TrainResult(
        run_id=logged.run_id,
        model_uri=logged.model_uri,
        metrics=metrics,
        data_sha256=sha,
        n_train=len(train_df),
        n_test=len(test_df),
        seconds=time.perf_counter() - started,
        out_dir=out_dir,
        plots=plot_names,
    )


def export(registry: Any, model_uri: str, out: Path, metrics: dict[str, Any]) -> Path:
    """Write `<out>/model` (the MLflow model dir) and `<out>/metrics.json`, each swapped in whole."""
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".model-", dir=out))
    try:
        downloaded = registry.download(model_uri, staging)
        ordinary_permissions(downloaded)  # staged under an owner-only mkdtemp folder
        target = out / "model"
        if target.exists():
            shutil.rmtree(target)
        Path(downloaded).rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_json(out / "metrics.json", metrics)
    return out


def training_plots(y_true: Any, proba: Any, folder: Path) -> list[Path]:
    """ROC and precision-recall curves plus the score distribution by class, as one PNG."""
    import matplotlib  # noqa: PLC0415 - matplotlib: heavy, imported where it is used (off `--help` and the light paths)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - matplotlib: heavy, imported where it is used (off `--help` and the light paths)
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)
    from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve  # noqa: PLC0415 - sklearn: heavy, imported where it is used (off `--help` and the light paths)

    folder.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    fpr, tpr, _ = roc_curve(y_true, proba)
    axes[0].plot(fpr, tpr, color="#1f77b4", label=f"AUC {roc_auc_score(y_true, proba):.3f}")
    axes[0].plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
    axes[0].set(title="ROC curve (held-out)", xlabel="false positive rate", ylabel="true positive rate")
    axes[0].legend(loc="lower right")
    precision, recall, _ = precision_recall_curve(y_true, proba)
    axes[1].plot(recall, precision, color="#d62728")
    axes[1].axhline(float(np.mean(y_true)), color="grey", linestyle="--", linewidth=0.8, label="base rate")
    axes[1].set(title="Precision-recall (held-out)", xlabel="recall", ylabel="precision")
    axes[1].legend(loc="upper right")
    bins = np.linspace(0, 1, 41)
    axes[2].hist(proba[y_true == 0], bins=bins, alpha=0.6, label="negative", density=True)
    axes[2].hist(proba[y_true == 1], bins=bins, alpha=0.6, label="positive", density=True)
    axes[2].set(title="Score distribution by class", xlabel="P(positive)", ylabel="density")
    axes[2].legend()
    fig.tight_layout()
    path = folder / "training.png"
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return [path]


def _estimator_params(model: Any) -> dict[str, Any]:
    """The final step's hyper-parameters (the whole pipeline's would drown the run page)."""
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    try:
        params = final.get_params(deep=False)
    except (AttributeError, TypeError):
        return {}
    return {f"model.{k}": v for k, v in params.items() if isinstance(v, (int, float, str, bool)) or v is None}
