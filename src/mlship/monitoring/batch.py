"""Batch scoring of files larger than memory: chunked read, atomic Parquet with model metadata."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlship.errors import ConfigError
from mlship.fsutil import atomic_path

if TYPE_CHECKING:
    import pandas as pd

    from mlship.settings import Settings


@dataclass(frozen=True)
class BatchResult:
    """What was scored, with which model, and how fast."""

    output: str
    rows: int
    model_uri: str
    model_name: str | None
    model_version: str | None
    seconds: float


def iter_chunks(path: Path, chunk_size: int) -> Iterator[pd.DataFrame]:
    """Yield DataFrames of at most ``chunk_size`` rows without loading the whole file."""
    import pandas as pd
    import pyarrow.parquet as pq

    if not path.exists():
        raise ConfigError(f"cannot read {path}: no such file", hint="pass an existing CSV or Parquet file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_size):
            yield batch.to_pandas()
    elif suffix == ".csv":
        yield from pd.read_csv(path, chunksize=chunk_size)
    else:
        raise ConfigError(f"unsupported input {path.name}", hint="use .csv or .parquet")


def score_frame(settings: Settings, model: Any, df: pd.DataFrame) -> pd.DataFrame:
    """id column (if present) + prediction + probability of the positive class."""
    import pandas as pd

    missing = [f for f in settings.features if f not in df.columns]
    if missing:
        raise ConfigError(f"input lacks feature columns {missing}", hint="score a file with the training schema")
    proba = model.predict_proba(df[settings.features])[:, 1]
    out = pd.DataFrame({"prediction": (proba >= 0.5).astype("int64"), "probability": proba})
    if settings.id_column and settings.id_column in df.columns:
        out.insert(0, settings.id_column, df[settings.id_column].to_numpy())
    return out


def predict_batch(
    settings: Settings, model_ref: str, input_path: Path, output_path: Path, chunk_size: int = 100_000
) -> BatchResult:
    """Score ``input_path`` chunk by chunk into ``output_path`` (Parquet, written atomically)."""
    import time

    import pyarrow as pa
    import pyarrow.parquet as pq
    from rich.console import Console
    from rich.progress import Progress

    from mlship.registry import Registry

    started = time.perf_counter()
    registry = Registry.from_settings(settings)
    resolved = registry.resolve(model_ref)
    model = registry.load_model(resolved)
    meta = {
        b"mlship.model_uri": resolved.uri.encode(),
        b"mlship.model_name": (resolved.name or "").encode(),
        b"mlship.model_version": (resolved.version or "").encode(),
    }
    rows = 0
    writer: pq.ParquetWriter | None = None
    with atomic_path(output_path) as tmp, Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"scoring {input_path.name}", total=None)
        try:
            for chunk in iter_chunks(input_path, chunk_size):
                table = pa.Table.from_pandas(score_frame(settings, model, chunk), preserve_index=False)
                if writer is None:
                    schema = table.schema.with_metadata({**(table.schema.metadata or {}), **meta})
                    writer = pq.ParquetWriter(tmp, schema)
                writer.write_table(table.cast(writer.schema))
                rows += len(chunk)
                progress.update(task, advance=len(chunk))
            if writer is None:
                raise ConfigError(f"{input_path} has no rows", hint="score a non-empty file")
        finally:
            if writer is not None:
                writer.close()
    return BatchResult(
        str(output_path), rows, resolved.uri, resolved.name, resolved.version, time.perf_counter() - started
    )
