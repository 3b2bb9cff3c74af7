"""MLflow tracking and model registry: the ONLY package in mlship that imports mlflow.

Embedded default: a sqlite file and an artifact folder under `.mlship/`; `MLFLOW_TRACKING_URI`
(or `tracking_uri` in the settings) points at any server instead. `client` holds the Registry
(runs, versions, aliases, what the store remembers about a model), `model_dir` the model
directories (load, signature, input example), `passed` where a version was verified live and
`connection` MLflow's quieting and its one-line connection errors. The gate's verdict tags it
reads are `mlship.model.gates.verdict`'s.
"""

from __future__ import annotations

from mlship.registry.client import (
    ALIASES,
    MODEL_ARTIFACT,
    LoggedRun,
    ModelNotFound,
    Registry,
    ResolvedModel,
    VersionInfo,
)
from mlship.registry.model_dir import (
    default_requirements,
    load_model_dir,
    model_dir_info,
    model_input_example,
    model_input_schema,
    spark_proba_udf,
)
from mlship.registry.passed import PASSED_FIELDS, PASSED_IMAGES_KEPT, PASSED_TAG, PassedRecord

__all__ = [
    "ALIASES",
    "MODEL_ARTIFACT",
    "PASSED_FIELDS",
    "PASSED_IMAGES_KEPT",
    "PASSED_TAG",
    "LoggedRun",
    "ModelNotFound",
    "PassedRecord",
    "Registry",
    "ResolvedModel",
    "VersionInfo",
    "default_requirements",
    "load_model_dir",
    "model_dir_info",
    "model_input_example",
    "model_input_schema",
    "spark_proba_udf",
]
