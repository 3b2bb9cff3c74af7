"""A fitted preprocessing pipeline turned into plain array operations, for the server's hot path.

On a small machine a scikit-learn `ColumnTransformer` costs far more than the model behind
it: measured here, one-hot encoding seven columns of a one-row DataFrame took 7 ms of a
12 ms call (pandas indexing and input checks per transformer), the gradient boosting 2 ms.
A server pays that on every batch. For the shapes mlship's own estimators produce —
`Pipeline([ColumnTransformer(OneHotEncoder | passthrough | StandardScaler | drop), model])`
— `compile_pipeline` builds the same feature matrix straight from the request rows with
dictionary lookups and numpy, and hands it to the final estimator's `predict_proba`.

It is an optimisation, never a change of answers: a pipeline of any other shape, or an
encoder with options this module does not reproduce (dropped or infrequent categories,
sparse output, non-string categories), is not compiled and the server calls the pipeline
as it is — and so is one whose compilation or check fails in any way at all (the caller,
`ServedModel.compile`, treats every exception as "serve the pipeline", with the reason).
A compiled pipeline is checked at load against the real one on probe rows (the input
example, every known category and an unknown one in each column, and rows with the numbers
moved) and used only if the feature matrices and the probabilities — for the whole probe
batch and for batches of one and two rows — are identical. A batch it cannot encode the
same way (a missing value, an unknown category for an encoder that raises on them) goes
through the real pipeline, so the client sees scikit-learn's own behaviour and error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from mlship.serving.columns import Columns
from mlship.serving.forest import Forest, NotCompiled

if TYPE_CHECKING:
    import pandas as pd

Rows = Sequence[dict[str, Any]]


@dataclass(frozen=True)
class _OneHot:
    column: str
    index: dict[str, int]
    """Category → its position within this column's block of indicator features."""
    width: int
    ignore_unknown: bool

    def fill(self, out: np.ndarray, start: int, values: Sequence[Any]) -> None:
        if not set(map(type, values)) <= {str}:
            bad = next(v for v in values if type(v) is not str)
            raise NotCompiled(f"{self.column}: {bad!r} is not a string")
        get = self.index.get
        hits = np.fromiter([get(v, -1) for v in values], dtype=np.intp, count=len(values))
        known = hits >= 0
        if not self.ignore_unknown and not known.all():
            raise NotCompiled(f"{self.column}: unknown category {values[int(np.argmin(known))]!r}")
        out[np.flatnonzero(known), start + hits[known]] = 1.0


@dataclass(frozen=True)
class _Numeric:
    column: str
    mean: float | None = None
    scale: float | None = None

    def fill(self, out: np.ndarray, start: int, values: Sequence[Any]) -> None:
        column = out[:, start]
        try:
            column[...] = values if isinstance(values, np.ndarray) else np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise NotCompiled(f"{self.column}: {exc}") from exc
        if np.isnan(column).any():
            raise NotCompiled(f"{self.column}: missing value")
        # The same two float64 operations, in the same order, as StandardScaler.transform
        # (in place, in the feature matrix's own column).
        if self.mean is not None:
            column -= self.mean
        if self.scale is not None:
            column /= self.scale


_Block = _OneHot | _Numeric


class CompiledPipeline:
    """Request rows → the pipeline's feature matrix → the final estimator's probabilities."""

    def __init__(self, blocks: list[_Block], final: Any) -> None:
        from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: PLC0415 - sklearn: heavy, imported where it is used (off `--help` and the light paths)

        self._blocks = blocks
        self._starts: list[int] = []
        width = 0
        for block in blocks:
            self._starts.append(width)
            width += block.width if isinstance(block, _OneHot) else 1
        self.n_features = width
        groups = [
            list(range(start, start + block.width))
            for block, start in zip(blocks, self._starts, strict=True)
            if isinstance(block, _OneHot)
        ]
        self._final: Any = Forest(final, groups) if isinstance(final, HistGradientBoostingClassifier) else final
        self.order: Literal["C", "F"] = "C"
        """Memory order of the feature matrix: that of the real preprocessor's (set by `verified`)."""

    @property
    def final(self) -> Any:
        """The model the feature matrix goes to (the flattened forest, or the estimator itself)."""
        return self._final

    @property
    def forest(self) -> Forest | None:
        return self._final if isinstance(self._final, Forest) else None

    def transform(self, rows: Rows | Columns) -> np.ndarray:
        """The feature matrix the fitted preprocessor would produce; NotCompiled if it can't here."""
        batch = rows if isinstance(rows, Columns) else Columns.from_rows(rows, self.inputs)
        out = np.zeros((batch.n, self.n_features), dtype=np.float64, order=self.order)
        for block, start in zip(self._blocks, self._starts, strict=True):
            block.fill(out, start, batch.data[block.column])
        return out

    @property
    def inputs(self) -> list[str]:
        """The input columns the blocks read, each once, in order."""
        return list(dict.fromkeys(block.column for block in self._blocks))

    def predict_proba(self, rows: Rows | Columns) -> np.ndarray:
        return np.asarray(self._final.predict_proba(self.transform(rows)))


def compile_pipeline(estimator: Any, numeric_columns: set[str]) -> CompiledPipeline:
    """Compile `estimator` or raise NotCompiled saying which part is not supported.

    `numeric_columns` are the input columns the server parses as numbers: only those may
    pass through or be scaled (a passthrough string column would make an object matrix).
    """
    from sklearn.compose import ColumnTransformer  # noqa: PLC0415 - sklearn: heavy, imported where it is used (off `--help` and the light paths)
    from sklearn.pipeline import Pipeline  # noqa: PLC0415 - sklearn: heavy, imported where it is used (off `--help` and the light paths)

    if not isinstance(estimator, Pipeline) or len(estimator.steps) != 2:
        raise NotCompiled("not a two-step Pipeline (preprocessor, model)")
    pre, final = estimator.steps[0][1], estimator.steps[1][1]
    if not isinstance(pre, ColumnTransformer):
        raise NotCompiled(f"the first step is {type(pre).__name__}, not a ColumnTransformer")
    if getattr(pre, "sparse_output_", True) or pre.transformer_weights:
        raise NotCompiled("the ColumnTransformer has sparse output or transformer weights")
    if hasattr(final, "feature_names_in_") or not hasattr(final, "predict_proba"):
        raise NotCompiled("the model was fitted on named columns or has no predict_proba")
    blocks: list[_Block] = []
    for name, transformer, columns in pre.transformers_:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise NotCompiled(f"transformer {name!r} selects columns by position, not by name")
        if not columns:
            continue
        blocks += _blocks(name, transformer, columns, numeric_columns)
    return CompiledPipeline(blocks, final)


def _blocks(name: str, transformer: Any, columns: list[str], numeric: set[str]) -> list[_Block]:
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler  # noqa: PLC0415 - sklearn: heavy, imported where it is used (off `--help` and the light paths)

    if isinstance(transformer, OneHotEncoder):
        return _one_hot(name, transformer, columns)
    if not set(columns) <= numeric:
        raise NotCompiled(f"transformer {name!r} takes non-numeric columns {sorted(set(columns) - numeric)}")
    if isinstance(transformer, FunctionTransformer) and transformer.func is None:  # what "passthrough" becomes
        return [_Numeric(c) for c in columns]
    if isinstance(transformer, StandardScaler):
        means = transformer.mean_ if transformer.with_mean else [None] * len(columns)
        scales = transformer.scale_ if transformer.with_std else [None] * len(columns)
        return [
            _Numeric(c, None if m is None else float(m), None if s is None else float(s))
            for c, m, s in zip(columns, means, scales, strict=True)
        ]
    raise NotCompiled(f"transformer {name!r} is a {type(transformer).__name__}")


def _one_hot(name: str, encoder: Any, columns: list[str]) -> list[_Block]:
    if encoder.drop_idx_ is not None or getattr(encoder, "_infrequent_enabled", False):
        raise NotCompiled(f"encoder {name!r} drops or groups categories")
    if encoder.sparse_output or np.dtype(encoder.dtype) != np.float64:
        raise NotCompiled(f"encoder {name!r} is sparse or not float64")
    if encoder.handle_unknown not in ("ignore", "error"):
        raise NotCompiled(f"encoder {name!r} handles unknown categories as {encoder.handle_unknown!r}")
    blocks: list[_Block] = []
    for column, categories in zip(columns, encoder.categories_, strict=True):
        values = categories.tolist()
        if not all(isinstance(v, str) for v in values):
            raise NotCompiled(f"encoder {name!r}: column {column!r} has non-string categories")
        blocks.append(
            _OneHot(column, {v: i for i, v in enumerate(values)}, len(values), encoder.handle_unknown == "ignore")
        )
    return blocks


def probe_rows(estimator: Any, example: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The example rows; each one-hot column set to every known category and an unknown one;
    and `_JITTERED` rows with every other column moved off the example's values.

    The jittered rows make the probe a real batch even when the example is one row with no
    categorical column: scikit-learn's feature matrix is then column-major, and a linear
    model's dot product on it can differ in the last bit from the same numbers in row-major
    order — which only a batch of several distinct rows can reveal.
    """
    from sklearn.preprocessing import OneHotEncoder  # noqa: PLC0415 - sklearn: heavy, imported where it is used (off `--help` and the light paths)

    rows = [dict(r) for r in example]
    if not rows:
        return rows
    pre = estimator.steps[0][1]
    other: list[str] = []
    for _, transformer, columns in pre.transformers_:
        if isinstance(transformer, str) or not columns:  # "drop", or a transformer given no columns (never fitted)
            continue
        if not isinstance(transformer, OneHotEncoder):
            other += [str(c) for c in columns]
            continue
        if transformer.handle_unknown != "ignore":
            continue
        for column, categories in zip(columns, transformer.categories_, strict=True):
            for value in [*categories.tolist(), "\x00mlship-unknown-category"]:
                rows.append({**rows[0], column: value})
    for k in range(1, _JITTERED + 1):
        base = rows[k % len(rows)]
        rows.append({**base, **{c: _jitter(base[c], k) for c in other}})
    return rows


_JITTERED = 8


def _jitter(value: Any, k: int) -> Any:
    """A different finite number near `value` (non-numbers are left alone)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        return value
    return float(value) * (1.0 + 0.37 * k) + 0.5 * k


def verified(
    compiled: CompiledPipeline,
    estimator: Any,
    frame: Callable[[list[dict[str, Any]]], pd.DataFrame],
    rows: list[dict[str, Any]],
) -> None:
    """Raise NotCompiled unless features and probabilities equal the real pipeline's on `rows`.

    The compiled matrix takes the memory order of the real one (see `probe_rows`), and the
    probabilities are compared for the whole probe batch and for batches of one and two rows.
    """
    rows = [r for r in rows if _encodes(compiled, r)]  # e.g. a NaN in the example: the pipeline's own path
    if not rows:
        raise NotCompiled("no input example (without missing values) to check the compiled pipeline against")
    real_frame = frame(rows)
    expected_features = np.asarray(estimator.steps[0][1].transform(real_frame))
    if len(rows) > 1 and expected_features.flags.f_contiguous and not expected_features.flags.c_contiguous:
        compiled.order = "F"
    if not np.array_equal(compiled.transform(rows), expected_features):
        raise NotCompiled("the compiled features differ from the pipeline's")
    for batch in (rows, rows[:1], rows[:2]):
        if not np.array_equal(compiled.predict_proba(batch), np.asarray(estimator.predict_proba(frame(batch)))):
            raise NotCompiled("the compiled probabilities differ from the pipeline's")
    forest = compiled.forest
    if forest is not None:
        edges = forest.boundary_rows(expected_features[0])
        expected = np.asarray(estimator.steps[-1][1].predict_proba(edges))
        for path in forest.paths():  # the small-batch walk and the large-batch per-tree sum alike
            if not np.array_equal(forest.predict_proba(edges, path), expected):
                raise NotCompiled("the compiled trees split differently from sklearn's on a threshold")


def _encodes(compiled: CompiledPipeline, row: dict[str, Any]) -> bool:
    """Whether the compiled path takes this row at all (it refuses what the pipeline must decide)."""
    try:
        compiled.transform([row])
    except NotCompiled:
        return False
    return True
