"""MLflow model directories: load one (verified), read its signature, input example and registered identity.

Every model mlship unpickles comes through `load_model_dir`; with the Registry, these are the
only places mlship calls MLflow.
"""

from __future__ import annotations

import shutil
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlship import integrity
from mlship.errors import ConfigError
from mlship.registry.connection import quiet

if TYPE_CHECKING:
    import pandas as pd


def load_model_dir(path: Path, expected_sha256: str | None = None) -> Any:
    """Load a native scikit-learn model from an MLflow model directory (no tracking server).

    Every model mlship loads comes through here: the files are checked against the recorded
    sha256 (the directory's own record, and `expected_sha256` when the caller has the tracking
    store's) before pickle runs any of their code.
    """
    quiet()
    import mlflow.sklearn  # noqa: PLC0415 - mlflow: heavy, imported where it is used (off `--help` and the light paths)

    integrity.verify(Path(path), expected_sha256)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mlflow.sklearn.load_model(str(path))


def model_input_schema(model_dir: Path) -> list[tuple[str, str]]:
    """(column, MLflow type) pairs of a model's input signature, in order."""
    quiet()
    from mlflow.models import Model  # noqa: PLC0415 - mlflow: heavy, imported where it is used (off `--help` and the light paths)

    meta = Model.load(str(model_dir))
    if meta.signature is None:
        return []
    return [(str(spec.name), getattr(spec.type, "name", str(spec.type))) for spec in meta.signature.inputs.inputs]


def model_input_example(model_dir: Path) -> pd.DataFrame | None:
    """The input example logged with the model (golden rows for smoke tests), if any."""
    quiet()
    import pandas as pd  # noqa: PLC0415 - pandas: heavy, imported where it is used (off `--help` and the light paths)
    from mlflow.models import Model  # noqa: PLC0415 - mlflow: heavy, imported where it is used (off `--help` and the light paths)

    meta = Model.load(str(model_dir))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        example = meta.load_input_example(str(model_dir))
    return example if isinstance(example, pd.DataFrame) else None


def default_requirements() -> list[str]:
    """Exact pins for what a logged model needs to load: faster and truer than inference."""

    return [f"{pkg}=={version(pkg)}" for pkg in ("scikit-learn", "cloudpickle", "pandas", "numpy", "scipy")]


def model_dir_info(model_dir: Path) -> dict[str, str | None]:
    """Registered name, version and run id recorded inside a model directory (None when absent).

    MLflow writes `registered_model_meta` when a registered version is downloaded, so a
    directory baked into an image still knows which version it is.
    """
    quiet()
    from mlflow.models import Model  # noqa: PLC0415 - mlflow: heavy, imported where it is used (off `--help` and the light paths)
    from mlflow.utils.yaml_utils import read_yaml  # noqa: PLC0415 - mlflow: heavy, imported where it is used (off `--help` and the light paths)

    meta = Model.load(str(model_dir))
    info: dict[str, str | None] = {"name": None, "version": None, "run_id": meta.run_id}
    registered = Path(model_dir) / "registered_model_meta"
    if registered.is_file():
        loaded = read_yaml(str(model_dir), "registered_model_meta") or {}  # type: ignore[no-untyped-call]
        if isinstance(loaded, dict):
            for key, field_name in (("name", "model_name"), ("version", "model_version")):
                value = loaded.get(field_name)
                info[key] = str(value) if value not in (None, "") else None
    return info


def spark_proba_udf(spark: Any, model_dir: Path, work_dir: Path) -> Any:
    """MLflow's Spark UDF over a model's positive-class probability (a column of [p0, p1] arrays).

    mlship logs scikit-learn models whose pyfunc `predict` gives labels; the UDF is built on a
    copy of the (already verified) model directory whose pyfunc flavor calls `predict_proba`
    instead, the flavor option MLflow itself writes for `pyfunc_predict_fn`.
    """
    quiet()
    import mlflow.pyfunc  # noqa: PLC0415 - mlflow: heavy, imported where it is used (off `--help` and the light paths)
    import yaml  # noqa: PLC0415 - yaml: heavy, imported where it is used (off `--help` and the light paths)
    from pyspark.sql.types import ArrayType, DoubleType  # noqa: PLC0415 - pyspark: optional dependency (the spark extra)

    view = work_dir / "proba-model"
    shutil.copytree(model_dir, view)
    meta = yaml.safe_load((view / "MLmodel").read_text())
    pyfunc = meta.get("flavors", {}).get("python_function")
    if not isinstance(pyfunc, dict):
        raise ConfigError(f"{model_dir} has no python_function flavor", hint="score an MLflow model logged by mlship")
    pyfunc["predict_fn"] = "predict_proba"
    (view / "MLmodel").write_text(yaml.safe_dump(meta, sort_keys=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mlflow.pyfunc.spark_udf(spark, str(view), result_type=ArrayType(DoubleType()), env_manager="local")
