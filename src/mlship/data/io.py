"""Tabular files in and out: CSV or Parquet by extension, atomic writes, content fingerprints.

A file from outside is read defensively: a CSV header or line longer than its cap, a header
that is one `;`- or tab-separated column, a CSV cut off mid-row, or a Parquet schema whose
column names exceed the header cap is refused (exit 2) with one line naming what is wrong,
before it can become a column name echoed into reports or a multi-gigabyte parse.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlship.errors import ConfigError
from mlship.fsutil import write_with
from mlship.report_text import one_line

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow.fs as pafs

SUPPORTED = (".csv", ".parquet", ".pq")
MAX_HEADER_BYTES = 256 * 1024
"""Cap on a CSV header line (and on a Parquet schema's column names, summed): ~10,000 columns of 25 characters."""
MAX_LINE_BYTES = 1 << 20
"""Cap on any one CSV line: a tabular row of 1 MiB is not a row, it is a document or a missing newline."""
_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}


def table_format(path: Path) -> str:
    """`csv` or `parquet` from the file extension; anything else is a usage error (exit 2)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise ConfigError(f"{path}: unsupported file type {suffix or '(none)'!r}", hint="use a .csv or .parquet file")


def read_table(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet file; a missing, empty, malformed or hostile file is a one-line exit-2 error."""
    import pandas as pd  # noqa: PLC0415 - pandas: heavy, imported where it is used (off `--help` and the light paths)
    import pyarrow.fs as pafs  # noqa: PLC0415 - pyarrow: heavy, imported where it is used (off `--help` and the light paths)

    fmt = table_format(path)
    if not path.is_file():
        raise ConfigError(
            f"data file {path} does not exist", hint="check the path, or create it with `mlship data synth`"
        )
    size = path.stat().st_size
    if size == 0:
        raise ConfigError(f"data file {path} is empty (0 bytes)", hint="regenerate or re-export it")
    local = pafs.LocalFileSystem()
    try:
        if fmt == "csv":
            check_csv(local, str(path.resolve()), str(path), size)
            with path.open("rb") as raw:
                capped: Any = LineCapped(raw, str(path))  # duck-typed: pandas only calls read()
                return pd.read_csv(capped, usecols=columns)
        check_parquet_schema(local, str(path.resolve()), str(path))
        return pd.read_parquet(path, columns=columns)
    except (ValueError, OSError, pd.errors.ParserError, ImportError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"cannot read {path} as {fmt}: {one_line(first)}", hint="is the file complete and of that format?"
        ) from None
    except Exception as exc:  # pyarrow raises its own ArrowInvalid family
        if type(exc).__module__.startswith("pyarrow"):
            raise ConfigError(f"cannot read {path} as parquet: {one_line(exc)}", hint="is the file complete?") from None
        raise


def _size(n: int) -> str:
    return f"{n // (1 << 20)} MiB" if n % (1 << 20) == 0 else f"{n // 1024} KiB"


def check_csv(fs: pafs.FileSystem, path: str, uri: str, size: int) -> list[str]:
    """Read the head and tail of a CSV (two ranged reads on S3) and refuse what is not a sound comma CSV.

    Refused (exit 2): a header longer than MAX_HEADER_BYTES; a header that is one comma-column
    but splits on `;`, tab or `|` (the wrong delimiter, whose one "column" would be matched as
    a name); a file not ending in a newline whose last line has fewer fields than the header or
    an open quote (cut off mid-row: a truncated copy, not bad data); a last line over
    MAX_LINE_BYTES. Returns the header's field names.
    """
    with fs.open_input_file(path) as handle:
        head = handle.read_at(min(size, MAX_HEADER_BYTES + 1), 0)
        end = head.find(b"\n")
        if end < 0 and size > MAX_HEADER_BYTES:
            raise ConfigError(
                f"{uri}: the CSV header is longer than {_size(MAX_HEADER_BYTES)} (the cap on a header line)",
                hint="is it a CSV with a header row? For a table that wide, use Parquet",
            )
        header = _text(head if end < 0 else head[:end]).rstrip("\r")
        fields = _fields(header)
        if len(fields) == 1:
            for sep, name in _DELIMITERS.items():
                if len(header.split(sep)) > 1:
                    raise ConfigError(
                        f"{uri} looks {name}-delimited: its header is one comma-separated column "
                        f"({one_line(header, 80)})",
                        hint="mlship reads comma-separated CSV: re-export it with ',' as the delimiter, or as Parquet",
                    )
        if end < 0 or size == end + 1:
            return fields  # the header is the whole file
        tail = handle.read_at(min(size, MAX_LINE_BYTES + 1), max(0, size - MAX_LINE_BYTES - 1))
    if tail.endswith((b"\n", b"\r")):
        return fields
    cut = max(tail.rfind(b"\n"), tail.rfind(b"\r"))
    if cut < 0:
        raise ConfigError(
            f"{uri}: its last line is longer than {_size(MAX_LINE_BYTES)} (the cap on a CSV line)",
            hint="is the file complete, one row per line?",
        )
    last = _text(tail[cut + 1 :])
    seen = _fields(last)
    if last.count('"') % 2 or len(seen) < len(fields):
        raise ConfigError(
            f"{uri} is truncated: its last line stops mid-row ({len(seen)} of {len(fields)} fields, no final newline)",
            hint="the file was cut short (an interrupted copy or upload?): fetch or export it again",
        )
    return fields


def _text(data: bytes) -> str:
    """The bytes as text for the checks above (a bad byte is pandas' to report, with its position)."""
    return data.decode("utf-8", errors="replace")


def _fields(line: str) -> list[str]:
    try:
        return next(csv.reader([line]), [])
    except csv.Error:
        return [line]


def check_parquet_schema(fs: pafs.FileSystem, path: str, uri: str) -> None:
    """Refuse a Parquet file whose column names exceed the header cap (read from the footer only)."""
    import pyarrow.parquet as pq  # noqa: PLC0415 - pyarrow: heavy, imported where it is used (off `--help` and the light paths)

    with fs.open_input_file(path) as handle:
        check_column_names(pq.ParquetFile(handle).schema_arrow.names, uri)


def check_column_names(names: list[str], uri: str) -> None:
    """The header cap for a schema: column names together (one separator each) within MAX_HEADER_BYTES."""
    total = sum(len(n.encode("utf-8", errors="replace")) + 1 for n in names)
    if total > MAX_HEADER_BYTES:
        raise ConfigError(
            f"{uri}: its column names take {total:,} bytes, over the {_size(MAX_HEADER_BYTES)} cap on a header",
            hint="is this the table you meant? Column names are echoed into every report",
        )


class LineCapped:
    """A binary stream that refuses (exit 2) a line longer than MAX_LINE_BYTES as the bytes go by.

    pandas' C parser buffers a whole line, however long, before it can say anything: this
    wrapper bounds that buffer without a second pass over the file (newlines are found with
    `bytes.find`/`count`, C scans of each block, not a Python loop over lines).
    """

    def __init__(self, raw: Any, uri: str, cap: int = MAX_LINE_BYTES) -> None:
        self.raw = raw
        self.uri = uri
        self.cap = cap
        self.run = 0
        """Bytes since the last newline."""
        self.line = 1

    def read(self, size: int = -1) -> bytes:
        data = bytes(self.raw.read(size))
        first = data.find(b"\n")
        if first < 0:
            self.run += len(data)
            self._check(self.run, 0)
            return data
        self._check(self.run + first, 0)
        newlines = data.count(b"\n")
        if len(data) > self.cap:  # only a block longer than the cap can hold a whole line over it
            self._interior(data)
        self.run = len(data) - data.rfind(b"\n") - 1
        self._check(self.run, newlines)
        self.line += newlines
        return data

    def _check(self, length: int, offset: int) -> None:
        if length > self.cap:
            raise ConfigError(
                f"{self.uri}: line {self.line + offset:,} is longer than {_size(self.cap)} (the cap on a CSV line)",
                hint="is the file complete, one row per line? For very long values, use Parquet",
            )

    def _interior(self, data: bytes) -> None:
        import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)

        ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
        lengths = np.diff(ends) - 1
        over = np.flatnonzero(lengths > self.cap)
        if len(over):
            self._check(int(lengths[over[0]]), int(over[0]) + 1)

    def readable(self) -> bool:
        return True

    def __iter__(self) -> Any:
        """Blocks, not lines (pandas only calls `read`; file-like detection wants `__iter__`)."""
        return iter(lambda: self.read(MAX_LINE_BYTES), b"")

    def close(self) -> None:
        self.raw.close()


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
