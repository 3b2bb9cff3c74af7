"""Batch scoring of files larger than memory: chunked read, atomic Parquet with model metadata.

Rows are checked against the model's input signature with the rules of `/predict` (numeric
columns: a finite number; string columns: a string; booleans: a boolean; never null). A bad
row is never scored silently: `refuse` (the default) scores nothing and says how many rows
failed and why (exit 1: the data said no); `flag` scores the good rows and gives every row an
`input_error` column (null when the row was fine), the bad rows with null predictions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlship.errors import ConfigError, PipelineRejected
from mlship.fsutil import atomic_path

if TYPE_CHECKING:
    import pandas as pd

    from mlship.serving.model import Column
    from mlship.settings import Settings

BAD_ROW_POLICIES = ("refuse", "flag")
FLAG_COLUMN = "input_error"


@dataclass(frozen=True)
class BatchResult:
    """What was scored, with which model, and how fast."""

    output: str
    rows: int
    model_uri: str
    model_name: str | None
    model_version: str | None
    seconds: float
    bad_rows: int = 0
    """Rows that failed the input schema (scored as nulls and flagged, under `flag`)."""
    bad_row_reasons: str = ""


def iter_chunks(path: Path, chunk_size: int) -> Iterator[pd.DataFrame]:
    """Yield DataFrames of at most ``chunk_size`` rows without loading the whole file.

    A file that is not what its suffix says, or is cut short, is bad input (exit 2), not a crash.
    """
    if not path.exists():
        raise ConfigError(f"cannot read {path}: no such file", hint="pass an existing CSV or Parquet file")
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ConfigError(f"unsupported input {path.name}", hint="use .csv or .parquet")
    try:
        yield from _chunks(path, suffix, chunk_size)
    except (OSError, ValueError, UnicodeDecodeError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"cannot read {path}: {first}", hint="is the file complete and of that format?") from None


def _chunks(path: Path, suffix: str, chunk_size: int) -> Iterator[pd.DataFrame]:
    import pandas as pd
    import pyarrow.parquet as pq

    if suffix == ".parquet":
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_size):
            yield batch.to_pandas()
    else:
        yield from pd.read_csv(path, chunksize=chunk_size)


def row_problems(columns: list[Column], df: pd.DataFrame) -> pd.Series[Any]:
    """Per row, the first reason it fails the model's input schema (None when it is fine).

    The rules of `/predict` (serving/schema.py), applied column-wise: a number must be a
    finite number, a string a string, a boolean a boolean, and none may be null.
    """
    import pandas as pd

    reasons = pd.Series([None] * len(df), index=df.index, dtype=object)
    for col in columns:
        if col.kind == "any":
            continue
        bad, why = _bad_cells(df[col.name], col.kind)
        reasons = reasons.where(reasons.notna() | ~bad, f"{col.name}: {why}")
    return reasons


def _bad_cells(values: pd.Series[Any], kind: str) -> tuple[pd.Series[Any], str]:
    import math

    import numpy as np
    import pandas as pd

    api = pd.api.types
    if kind == "number":
        if api.is_numeric_dtype(values) and not api.is_bool_dtype(values):
            numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
            return pd.Series(~np.isfinite(numbers), index=values.index), "missing or not a finite number"

        def finite_number(v: Any) -> bool:
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)

        return ~values.map(finite_number).astype(bool), "missing or not a finite number"
    if kind == "string":
        return ~values.map(lambda v: isinstance(v, str)).astype(bool), "missing or not a string"
    return ~values.map(lambda v: isinstance(v, (bool, np.bool_))).astype(bool), "missing or not a boolean"


def score_frame(
    settings: Settings, model: Any, df: pd.DataFrame, columns: list[Column] | None = None, *, flag: bool = False
) -> pd.DataFrame:
    """id column (if present) + prediction + probability of the positive class (+ input_error when flagging).

    Under `flag`, rows that fail the input schema get null predictions and their reason; the
    good rows are scored exactly as they would be alone.
    """
    import numpy as np
    import pandas as pd

    names = [c.name for c in columns] if columns else settings.features
    missing = [f for f in names if f not in df.columns]
    if missing:
        raise ConfigError(f"input lacks feature columns {missing}", hint="score a file with the training schema")
    reasons = row_problems(columns, df) if columns else pd.Series([None] * len(df), index=df.index, dtype=object)
    good = reasons.isna().to_numpy()
    proba = np.full(len(df), np.nan)
    if good.any():
        proba[good] = model.predict_proba(df.loc[good, names])[:, 1]
    prediction = pd.array(np.where(good, proba >= 0.5, False).astype("int64"), dtype="Int64")
    prediction[~good] = pd.NA
    out = pd.DataFrame({"prediction": prediction, "probability": proba})
    if flag:
        out[FLAG_COLUMN] = reasons.to_numpy()
    if settings.id_column and settings.id_column in df.columns:
        out.insert(0, settings.id_column, df[settings.id_column].to_numpy())
    return out


def predict_batch(
    settings: Settings,
    model_ref: str,
    input_path: Path,
    output_path: Path,
    chunk_size: int = 100_000,
    bad_rows: str = "refuse",
) -> BatchResult:
    """Score ``input_path`` chunk by chunk into ``output_path`` (Parquet, written atomically).

    `bad_rows` is the policy for rows that fail the model's input schema: `refuse` writes
    nothing and raises PipelineRejected naming how many rows failed and why; `flag` scores
    the rest and adds the `input_error` column.
    """
    import tempfile
    import time

    import pyarrow as pa
    import pyarrow.parquet as pq
    from rich.console import Console
    from rich.progress import Progress

    from mlship.registry import Registry, load_model_dir, model_input_schema
    from mlship.serving.model import Column

    if bad_rows not in BAD_ROW_POLICIES:
        raise ConfigError(f"unknown bad-row policy {bad_rows!r}", hint=f"use one of: {', '.join(BAD_ROW_POLICIES)}")
    started = time.perf_counter()
    registry = Registry.from_settings(settings)
    resolved = registry.resolve(model_ref)
    with tempfile.TemporaryDirectory(prefix="mlship-batch-") as tmp:
        directory = registry.download(resolved, Path(tmp))  # verified against the recorded sha256
        model = load_model_dir(directory)
        columns = [Column(name, kind) for name, kind in model_input_schema(directory)]
    meta = {
        b"mlship.model_uri": resolved.uri.encode(),
        b"mlship.model_name": (resolved.name or "").encode(),
        b"mlship.model_version": (resolved.version or "").encode(),
        b"mlship.bad_rows": bad_rows.encode(),
    }
    rows = 0
    flagged: dict[str, int] = {}
    writer: pq.ParquetWriter | None = None
    with atomic_path(output_path) as tmp_out, Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"scoring {input_path.name}", total=None)
        try:
            for chunk in iter_chunks(input_path, chunk_size):
                rows += len(chunk)
                progress.update(task, advance=len(chunk))
                if bad_rows == "refuse":
                    _count(flagged, row_problems(columns, chunk) if columns else None)
                    if flagged:
                        continue  # nothing more is written; keep counting for the message
                scored = score_frame(settings, model, chunk, columns, flag=bad_rows == "flag")
                if bad_rows == "flag":
                    _count(flagged, scored[FLAG_COLUMN])
                table = pa.Table.from_pandas(scored, preserve_index=False)
                if writer is None:
                    schema = _nullable(table.schema).with_metadata({**(table.schema.metadata or {}), **meta})
                    writer = pq.ParquetWriter(tmp_out, schema)
                writer.write_table(table.cast(writer.schema))
            if rows == 0:
                raise ConfigError(f"{input_path} has no rows", hint="score a non-empty file")
            if bad_rows == "refuse" and flagged:
                raise PipelineRejected(
                    f"{sum(flagged.values()):,} of {rows:,} rows of {input_path} fail the model's input schema "
                    f"({_reasons(flagged)}); nothing was scored",
                    hint="fix the data, or pass --bad-rows flag to score the rest and flag these",
                )
        finally:
            if writer is not None:
                writer.close()
    return BatchResult(
        str(output_path),
        rows,
        resolved.uri,
        resolved.name,
        resolved.version,
        time.perf_counter() - started,
        bad_rows=sum(flagged.values()),
        bad_row_reasons=_reasons(flagged),
    )


def _count(tally: dict[str, int], reasons: pd.Series[Any] | None) -> None:
    if reasons is None:
        return
    for reason, n in reasons.dropna().value_counts().items():
        tally[str(reason)] = tally.get(str(reason), 0) + int(n)


def _reasons(tally: dict[str, int], limit: int = 3) -> str:
    ranked = sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))
    text = "; ".join(f"{reason} ({n:,})" for reason, n in ranked[:limit])
    return text + (f"; and {len(ranked) - limit} more reasons" if len(ranked) > limit else "")


def _nullable(schema: Any) -> Any:
    """The first chunk decides the file's schema: let later chunks carry nulls the first did not."""
    import pyarrow as pa

    fields = [pa.field(f.name, pa.string() if pa.types.is_null(f.type) else f.type, nullable=True) for f in schema]
    return pa.schema(fields, metadata=schema.metadata)
