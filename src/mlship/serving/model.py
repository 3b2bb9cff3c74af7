"""The model a server serves: pinned once at start, loaded from a local MLflow model directory.

`resolve_source` is quick and fails fast (an unknown model is exit 2 before any port is
taken); `load` does the slow part (download, unpickle) and may run in the background while
`/health` already answers. A local directory never touches a tracking server, so an image
with the model baked in runs without one.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlship.registry import Registry, load_model_dir, model_dir_info, model_input_example, model_input_schema
from mlship.serving import compiled as compiler  # the module: tests replace its functions
from mlship.serving.columns import Columns
from mlship.serving.forest import NotCompiled

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlship.settings import Settings

Kind = Literal["string", "number", "boolean", "any"]

_KINDS: dict[str, Kind] = {
    "string": "string",
    "double": "number",
    "float": "number",
    "long": "number",
    "integer": "number",
    "boolean": "boolean",
}


@dataclass(frozen=True)
class Column:
    """One input column: its name, the MLflow type of the signature and what JSON it accepts."""

    name: str
    mlflow_type: str

    @property
    def kind(self) -> Kind:
        return _KINDS.get(self.mlflow_type, "any")


@dataclass(frozen=True)
class ModelSource:
    """A model reference pinned to something immutable, not loaded yet."""

    ref: str
    uri: str
    name: str
    version: str
    run_id: str | None
    directory: Path | None = None


@dataclass
class ServedModel:
    """A loaded estimator plus what the server needs to describe and validate it."""

    estimator: Any
    columns: list[Column]
    name: str
    version: str
    run_id: str | None = None
    uri: str = ""
    example: list[dict[str, Any]] = field(default_factory=list)
    compiled: compiler.CompiledPipeline | None = None
    """The pipeline as array operations, verified equal at load (see serving/compiled.py)."""
    compile_note: str = "not compiled"
    """Why the pipeline is (not) compiled: said in the server's ready log line."""

    @property
    def classes(self) -> list[Any]:
        return [_plain(c) for c in getattr(self.estimator, "classes_", [0, 1])]

    def frame(self, rows: list[dict[str, Any]] | Columns) -> pd.DataFrame:
        """Rows (already validated) as the DataFrame the pipeline was trained on, column by column."""
        import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)
        import pandas as pd  # noqa: PLC0415 - pandas: heavy, imported where it is used (off `--help` and the light paths)

        batch = rows if isinstance(rows, Columns) else Columns.from_rows(rows, [c.name for c in self.columns])
        data: dict[str, Any] = {}
        for col in self.columns:
            values = batch.data[col.name]
            data[col.name] = np.asarray(values, dtype=np.float64) if col.kind == "number" else list(values)
        return pd.DataFrame(data, columns=[c.name for c in self.columns])

    def predict(self, rows: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
        """One `predict_proba` call for all rows: (labels, probabilities) as Python lists.

        Binary models give the positive-class probability as a float; others give the
        whole row of class probabilities. One call, not predict + predict_proba: a sklearn
        pipeline call costs milliseconds whatever the number of rows.
        """
        labels, proba = self.predict_columns(Columns.from_rows(rows, [c.name for c in self.columns]))
        return [_plain(label) for label in labels], proba.tolist()

    def predict_columns(self, batch: Columns) -> tuple[Any, np.ndarray]:
        """`predict` on columns, answering with arrays: labels (an array for numeric classes, else a
        list) and the probabilities (the positive class's for a binary model, else rows of them)."""
        import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)

        proba = self._compiled_proba(batch)
        if proba is None:
            proba = np.asarray(self.estimator.predict_proba(self.frame(batch)))
        best = proba.argmax(axis=1)
        labels: Any = self._label_array[best]
        if labels.dtype == object:
            labels = labels.tolist()
        if len(self._label_array) == 2:
            return labels, np.ascontiguousarray(proba[:, 1])
        return labels, np.ascontiguousarray(proba)

    @functools.cached_property
    def _label_array(self) -> np.ndarray:
        """The classes as an array to index with the argmax: all-int, all-float and all-bool classes
        as such arrays (JSON-encoded without a Python object each), anything else as Python objects."""
        import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)

        classes = self.classes
        for kind, dtype in ((bool, bool), (int, np.int64), (float, np.float64)):
            if all(type(c) is kind for c in classes):
                return np.asarray(classes, dtype=dtype)
        array = np.empty(len(classes), dtype=object)
        array[:] = classes
        return array

    def _compiled_proba(self, rows: Columns) -> Any:
        """The compiled pipeline's answer, or None when there is none or it can't take this batch.

        Any exception means "ask the pipeline": e.g. a missing value, which the real pipeline
        decides about; the fast path must never be the reason a request fails.
        """
        if self.compiled is None:
            return None
        try:
            return self.compiled.predict_proba(rows)
        except Exception:  # noqa: BLE001 — the pipeline answers (or raises its own error) instead
            return None

    def compile(self) -> None:
        """Use the compiled pipeline only when it gives exactly the pipeline's answers on probe rows.

        Whatever goes wrong while compiling or checking — an unsupported shape (NotCompiled) or
        an error of the compiler itself on a pipeline it did not foresee — the plain pipeline is
        served and `compile_note` (the `ready` log line) says why.
        """

        try:
            compiled = compiler.compile_pipeline(self.estimator, {c.name for c in self.columns if c.kind == "number"})
            compiler.verified(compiled, self.estimator, self.frame, compiler.probe_rows(self.estimator, self.example))
        except NotCompiled as exc:
            self.compiled, self.compile_note = None, f"not compiled: {exc}"
            return
        except Exception as exc:  # noqa: BLE001 — a fast path that breaks is no reason not to serve
            self.compiled, self.compile_note = None, f"not compiled: the compiler failed ({type(exc).__name__}: {exc})"
            return
        self.compiled, self.compile_note = compiled, "compiled: verified equal to the pipeline on probe rows"


def resolve_source(ref: str, settings: Settings) -> ModelSource:
    """Pin `ref` (an alias becomes the version it names now); unknown models raise ModelNotFound."""
    path = Path(ref)
    if (path / "MLmodel").is_file():
        info = model_dir_info(path)
        return ModelSource(
            ref=ref,
            uri=str(path.resolve()),
            name=os.environ.get("MLSHIP_MODEL_NAME") or info["name"] or settings.model_name,
            version=os.environ.get("MLSHIP_MODEL_VERSION") or info["version"] or "unknown",
            run_id=info["run_id"],
            directory=path.resolve(),
        )
    resolved = Registry.from_settings(settings).resolve(ref)
    return ModelSource(
        ref=ref,
        uri=resolved.uri,
        name=resolved.name or settings.model_name,
        version=resolved.version or "unknown",
        run_id=resolved.run_id,
    )


def load(source: ModelSource, settings: Settings) -> ServedModel:
    """Download (when remote) and load the native estimator, its input schema and example."""
    if source.directory is not None:
        return _from_dir(source.directory, source, settings)
    with tempfile.TemporaryDirectory(prefix="mlship-serve-") as tmp:
        directory = Registry.from_settings(settings).download(source.uri, Path(tmp))
        return _from_dir(directory, source, settings)


def _from_dir(directory: Path, source: ModelSource, settings: Settings) -> ServedModel:
    return served_view(load_model_dir(directory), directory, source, settings)


def served_view(estimator: Any, directory: Path, source: ModelSource, settings: Settings) -> ServedModel:
    """A loaded estimator as the server holds it: schema, example, and the compiled path if verified.

    The latency gate times this very object, so it measures the path that ships.
    """
    columns = [Column(name, kind) for name, kind in model_input_schema(directory)]
    if not columns:  # a model logged without a signature: fall back to the configured features
        columns = [Column(c, "string") for c in settings.categorical_features]
        columns += [Column(c, "double") for c in settings.numeric_features]
    frame = model_input_example(directory)
    rows: list[dict[str, Any]] = []
    if frame is not None:
        rows = [{str(k): _plain(v) for k, v in r.items()} for r in frame.to_dict(orient="records")]
    served = ServedModel(
        estimator=estimator,
        columns=columns,
        name=source.name,
        version=source.version,
        run_id=source.run_id,
        uri=source.uri,
        example=rows,
    )
    served.compile()
    return served


def request_rows(model: ServedModel, frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of `frame` as `/predict` hands them to the model (JSON types); rows a client could not
    send — a missing number — are left out."""

    rows = []
    for record in frame.to_dict(orient="records"):
        row: dict[str, Any] = {}
        for col in model.columns:
            value = _plain(record.get(col.name))
            if col.kind == "number":
                if value is None or isinstance(value, str) or not math.isfinite(float(value)):
                    break
                row[col.name] = float(value)
            elif col.kind == "string":
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    break
                row[col.name] = str(value)
            else:
                row[col.name] = value
        else:
            rows.append(row)
    return rows


def warmup_rows(model: ServedModel) -> list[dict[str, Any]]:
    """The logged input example, or one neutral row built from the schema when there is none."""
    if model.example:
        return model.example[:1]
    neutral: dict[Kind, Any] = {"string": "", "number": 0.0, "boolean": False, "any": ""}
    return [{c.name: neutral[c.kind] for c in model.columns}]


def _plain(value: Any) -> Any:
    """numpy scalars → Python scalars, so JSON encoders and comparisons behave."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value
