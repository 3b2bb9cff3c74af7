"""Tabular files in and out: CSV or Parquet by extension, atomic writes, content fingerprints."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from mlship.errors import ConfigError
from mlship.fsutil import write_with

if TYPE_CHECKING:
    import pandas as pd

SUPPORTED = (".csv", ".parquet", ".pq")


def table_format(path: Path) -> str:
    """`csv` or `parquet` from the file extension; anything else is a usage error (exit 2)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise ConfigError(f"{path}: unsupported file type {suffix or '(none)'!r}", hint="use a .csv or .parquet file")


def read_table(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet file; a missing, empty or malformed file is a one-line exit-2 error."""
    import pandas as pd

    fmt = table_format(path)
    if not path.is_file():
        raise ConfigError(
            f"data file {path} does not exist", hint="check the path, or create it with `mlship data synth`"
        )
    if path.stat().st_size == 0:
        raise ConfigError(f"data file {path} is empty (0 bytes)", hint="regenerate or re-export it")
    try:
        if fmt == "csv":
            return pd.read_csv(path, usecols=columns)
        return pd.read_parquet(path, columns=columns)
    except (ValueError, OSError, pd.errors.ParserError, ImportError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"cannot read {path} as {fmt}: {first}", hint="is the file complete and of that format?"
        ) from None
    except Exception as exc:  # pyarrow raises its own ArrowInvalid family
        if type(exc).__module__.startswith("pyarrow"):
            raise ConfigError(f"cannot read {path} as parquet: {exc}", hint="is the file complete?") from None
        raise


def write_table(df: pd.DataFrame, path: Path) -> Path:
    """Write a DataFrame atomically as CSV or Parquet (by extension), without the index."""
    fmt = table_format(path)
    if fmt == "csv":
        return write_with(path, lambda tmp: df.to_csv(tmp, index=False))
    return write_with(path, lambda tmp: df.to_parquet(tmp, index=False, engine="pyarrow"))


def fingerprint(path: Path) -> str:
    """sha256 of the file's bytes: the data version recorded with every training run."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
