"""Batch scoring where the data lives: files, folders, globs or s3:// prefixes, in bounded memory.

Each input file becomes one Parquet part (atomic, named from the input), a `_SUCCESS`
manifest is written last, and a re-run skips parts already written from the same input
(size, mtime and a content key: batch_io.content_fingerprint) with the same model and policy
(see batch_io for what atomic means where).
A report (batch.md/json/png, batch_report) says what was scored, refused, and drifted.

Rows are checked against the model's input signature with the rules of `/predict` (numeric
columns: a finite number; string columns: a string; booleans: a boolean; never null). A bad
row is never scored silently: `refuse` (the default) scores nothing and says how many rows
failed and why (exit 1: the data said no); `flag` scores the good rows and gives every row an
`input_error` column (null when the row was fine), the bad rows with null predictions.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlship.deploy.faults import checkpoint
from mlship.errors import ConfigError, PipelineRejected
from mlship.monitoring.batch_io import (
    Dataset,
    InputFile,
    content_fingerprint,
    list_inputs,
    part_name,
    read_chunks,
    real_path,
    split,
    within,
)
from mlship.monitoring.batch_report import BatchSummary, PartStats, Sample, drift_dict, plot, render_markdown, verdict

if TYPE_CHECKING:
    import pandas as pd

    from mlship.monitoring.drift import DriftReport
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
    parts: int = 1
    parts_skipped: int = 0
    """Parts already written by an earlier run from the same input, model and policy."""
    report: str = ""
    """Where batch.md was written."""
    verdict: str = ""


def iter_chunks(path: Path, chunk_size: int) -> Iterator[pd.DataFrame]:
    """Yield DataFrames of at most ``chunk_size`` rows without loading the whole file (or files).

    A file that is not what its suffix says, or is cut short, is bad input (exit 2), not a crash.
    """
    fs, inputs = list_inputs(str(path))
    for inp in inputs:
        yield from read_chunks(fs, inp, chunk_size)


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


@dataclass
class _Run:
    """The fixed inputs of one batch run, shared by every part."""

    settings: Settings
    model: Any
    columns: list[Column]
    policy: str
    chunk_size: int
    meta: dict[bytes, bytes]
    sample: Sample


def _new_run(settings: Settings, model: Any, directory: Path, resolved: Any, policy: str, chunk_size: int) -> _Run:
    """A run's fixed inputs: the model's input columns and the footer every part carries (both engines)."""
    from mlship.registry import model_input_schema  # mlflow: kept off `--help`
    from mlship.serving.model import Column  # pandas/numpy: kept off `--help`

    return _Run(
        settings,
        model,
        [Column(name, kind) for name, kind in model_input_schema(directory)],
        policy,
        chunk_size,
        {
            b"mlship.model_uri": resolved.uri.encode(),
            b"mlship.model_name": (resolved.name or "").encode(),
            b"mlship.model_version": (resolved.version or "").encode(),
            b"mlship.bad_rows": policy.encode(),
        },
        Sample(seed=settings.seed),
    )


class _Refused(Exception):
    """A part with bad rows under `refuse`: its staged file is dropped, never moved into place."""


def predict_batch(
    settings: Settings,
    model_ref: str,
    input_path: Path | str,
    output_path: Path | str,
    chunk_size: int = 100_000,
    bad_rows: str = "refuse",
    *,
    overwrite: bool = False,
    report_dir: Path | str | None = None,
    reference: Path | None = None,
    progress: bool | None = None,
) -> BatchResult:
    """Score every input file into one Parquet part each, then the manifest, then the report.

    An output ending in `.parquet` is one file (the input must be one file); anything else is a
    dataset folder or s3:// prefix. `bad_rows` is the policy for rows that fail the model's
    input schema: `refuse` writes no part holding such rows and raises PipelineRejected naming
    how many rows failed and why; `flag` scores the rest and adds the `input_error` column.
    Parts already written from the same input (content_fingerprint), model and policy are skipped
    unless `overwrite`. `progress` None means: a bar on a terminal, a line per part otherwise.
    """
    import tempfile
    import time

    from mlship.registry import Registry, load_model_dir

    if bad_rows not in BAD_ROW_POLICIES:
        raise ConfigError(f"unknown bad-row policy {bad_rows!r}", hint=f"use one of: {', '.join(BAD_ROW_POLICIES)}")
    started = time.perf_counter()
    in_spec, out_spec = str(input_path), str(output_path)
    fs_in, inputs = list_inputs(in_spec)
    single = out_spec.lower().endswith(".parquet")
    fs_out, out_root = split(out_spec)  # a bad output URI is exit 2 before the model is loaded
    if fs_out.type_name == fs_in.type_name:  # an output inside the input folder is not input on the next run
        # compared as the filesystem will resolve them: an output symlinked into the input folder is in it
        out_real = real_path(fs_out, out_root)
        inputs = [i for i in inputs if not within(real_path(fs_in, i.path), out_real)]
        if not inputs:
            shown = out_spec if out_real == out_root else f"{out_spec} (which resolves to {out_real})"
            raise ConfigError(
                f"--output {shown} holds the input {in_spec}: the parts would be written among the input files",
                hint="write the output outside the input",
            )
    if single and len(inputs) > 1:
        raise ConfigError(
            f"--output {out_spec} is one file but {in_spec} holds {len(inputs)} input files",
            hint="pass a folder or s3:// prefix as --output: one part per input",
        )
    registry = Registry.from_settings(settings)
    resolved = registry.resolve(model_ref)
    with tempfile.TemporaryDirectory(prefix="mlship-batch-") as tmp:
        directory = registry.download(resolved, Path(tmp))  # verified against the recorded sha256
        run = _new_run(settings, load_model_dir(directory), directory, resolved, bad_rows, chunk_size)
    if single:
        parent, _, leaf = out_spec.rstrip("/").rpartition("/")
        dataset, names = Dataset(parent or "."), [leaf]
    else:
        dataset, names = Dataset(out_spec), [part_name(i) for i in inputs]
    for upload in dataset.prepare(dataset=not single):
        print(f"aborted the unfinished upload of {upload}: a killed run left it", file=sys.stderr)
    total = PartStats()
    entries: list[dict[str, Any]] = []
    refused: list[str] = []
    skipped = rows_this_run = 0
    scoring = 0.0
    show = _Progress(len(inputs), sys.stderr.isatty() if progress is None else progress)
    with show:
        for k, (inp, name) in enumerate(zip(inputs, names, strict=True), start=1):
            fingerprint = content_fingerprint(fs_in, inp)
            source = json.dumps({**fingerprint, "model_uri": resolved.uri, "bad_rows": bad_rows}, sort_keys=True)
            done = None if overwrite else _finished_part(dataset, name, source)
            t0 = time.perf_counter()
            if done is not None:
                stats, skipped = done, skipped + 1
                show.part(k, inp, name, f"skipped: already written from this input ({stats.rows:,} rows)")
            else:
                stats, ok = _score_part(run, fs_in, inp, dataset, name, source, show)
                rows_this_run += stats.rows
                seconds = time.perf_counter() - t0
                scoring += seconds
                if not single and (not ok or stats.rows == 0):
                    dataset.remove(name)  # an earlier run's part from other data or policy must not stay
                if not ok:
                    refused.append(inp.uri)
                    show.part(k, inp, name, f"REFUSED: {stats.bad_rows:,} of {stats.rows:,} rows fail the input schema")
                elif stats.rows == 0:
                    show.part(k, inp, name, "no rows: no part")
                else:
                    show.part(k, inp, name, f"{stats.rows:,} rows in {seconds:.1f} s")
                checkpoint(f"batch-part-{k}")
            total.merge(stats)
            if stats.rows and inp.uri not in refused:
                entries.append({"part": name, **fingerprint, "rows": stats.rows, "bad_rows": stats.bad_rows})
    if total.rows == 0:
        raise ConfigError(f"{in_spec} has no rows", hint="score a non-empty file")
    _close_dataset(
        dataset,
        names,
        skipped,
        len(inputs),
        not single and not refused,
        resolved.uri,
        bad_rows,
        in_spec,
        total.rows,
        entries,
    )
    seconds = time.perf_counter() - started
    summary = _summary(
        run,
        resolved.uri,
        in_spec,
        dataset.uri(names[0]) if single else out_spec,
        inputs,
        total,
        refused,
        skipped,
        rows_this_run,
        (seconds, scoring),
        reference,
    )
    report = _write_report(summary, report_dir, dataset, single)
    if refused:
        where = f"of {inputs[0].uri}" if len(inputs) == 1 else f"in {len(refused)} of {len(inputs)} parts"
        rest = "nothing was scored" if len(inputs) == 1 else "those parts were not written, the others were"
        raise PipelineRejected(
            f"{total.bad_rows:,} of {total.rows:,} rows {where} fail the model's input schema "
            f"({reasons_line(total.refused)}); {rest}",
            hint="fix the data, or pass --bad-rows flag to score the rest and flag these",
        )
    return BatchResult(
        dataset.uri(names[0]) if single else out_spec,
        total.rows,
        resolved.uri,
        resolved.name,
        resolved.version,
        seconds,
        bad_rows=total.bad_rows,
        bad_row_reasons=reasons_line(total.refused),
        parts=len(inputs),
        parts_skipped=skipped,
        report=report,
        verdict=summary.verdict,
    )


def _close_dataset(
    dataset: Dataset,
    names: list[str],
    skipped: int,
    inputs: int,
    finish: bool,
    model_uri: str,
    bad_rows: str,
    in_spec: str,
    rows: int,
    entries: list[dict[str, Any]],
) -> None:
    """Say what resumption skipped; with `finish` (a folder output, no part refused), drop the parts of
    inputs that are gone and write the `_SUCCESS` manifest. Both engines close a dataset this way."""
    if skipped:
        print(
            f"skipped {skipped} of {inputs} parts already written from the same input and model "
            "(pass --overwrite to redo them)",
            file=sys.stderr,
        )
    if not finish:
        return
    for stale in dataset.drop_parts_except(set(names)):
        print(f"removed {stale}: its input is gone", file=sys.stderr)
    dataset.finish({"model_uri": model_uri, "bad_rows": bad_rows, "input": in_spec, "rows": rows, "parts": entries})


def _finished_part(dataset: Dataset, name: str, source: str) -> PartStats | None:
    """The stats of a part an earlier run wrote from this very input, model and policy; else None."""
    meta = dataset.part_metadata(name)
    if not meta or meta.get(b"mlship.source") != source.encode() or b"mlship.stats" not in meta:
        return None
    return PartStats.from_json(meta[b"mlship.stats"])


def _score_part(
    run: _Run, fs: Any, inp: InputFile, dataset: Dataset, name: str, source: str, show: _Progress
) -> tuple[PartStats, bool]:
    """Score one input into its staged part; (stats, True) once the part is in place.

    Under `refuse` a part with any bad row is read to the end (to count the reasons) and
    dropped: (stats, False).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlship.monitoring.drift import PROBABILITY

    stats = PartStats()
    flag = run.policy == "flag"
    before = run.sample.state()
    try:
        with dataset.staged(name) as stream:
            writer: pq.ParquetWriter | None = None
            try:
                for chunk in read_chunks(fs, inp, run.chunk_size):
                    require_columns(inp, chunk, [c.name for c in run.columns] or run.settings.features)
                    if chunk.empty:
                        continue  # a header-only CSV: no rows, no part
                    stats.rows += len(chunk)
                    show.rows(len(chunk))
                    if not flag:
                        stats.add_reasons(row_problems(run.columns, chunk) if run.columns else _none(chunk))
                        if stats.refused:
                            continue  # this part will not be written; keep counting for the message
                    scored = score_frame(run.settings, run.model, chunk, run.columns, flag=flag)
                    if flag:
                        stats.add_reasons(scored[FLAG_COLUMN])
                    probability = scored["probability"].to_numpy(dtype="float64")
                    stats.add_scores(probability, scored["prediction"])
                    good = ~scored["probability"].isna().to_numpy()
                    features = [c.name for c in run.columns] if run.columns else run.settings.features
                    run.sample.add(chunk.loc[good, features].assign(**{PROBABILITY: probability[good]}))
                    table = pa.Table.from_pandas(scored, preserve_index=False)
                    if writer is None:
                        schema = _nullable(table.schema).with_metadata({**(table.schema.metadata or {}), **run.meta})
                        writer = pq.ParquetWriter(stream, schema)
                    writer.write_table(table.cast(writer.schema))
                if stats.refused and not flag:
                    raise _Refused
                if writer is None:
                    raise _Refused  # an empty input: no part to write
                writer.add_key_value_metadata({"mlship.source": source, "mlship.stats": stats.to_json()})
            finally:
                if writer is not None:
                    writer.close()
    except _Refused:
        run.sample.restore(before)  # a refused part's rows are not in the output, nor in the report
        return PartStats(rows=stats.rows, refused=stats.refused), stats.rows == 0
    return stats, True


def require_columns(inp: InputFile, chunk: pd.DataFrame, names: list[str]) -> None:
    """Every column the model reads is in the file: a missing one is a wrong file (exit 2), not bad rows."""
    from mlship.report_text import one_line

    missing = [n for n in names if n not in chunk.columns]
    if not missing:
        return
    has = ", ".join(map(str, chunk.columns))
    raise ConfigError(
        f"{inp.uri} lacks the model's feature column(s) {one_line(', '.join(missing), 120)} "
        f"(it has {len(chunk.columns)}: {one_line(has, 120)})",
        hint="score a file with the columns of the model's input signature",
    )


def _none(chunk: pd.DataFrame) -> pd.Series[Any]:
    import pandas as pd

    return pd.Series([None] * len(chunk), index=chunk.index, dtype=object)


class _Progress:
    """A rich bar over the parts on a terminal; one plain line per part in CI logs."""

    def __init__(self, parts: int, tty: bool) -> None:
        from rich.console import Console
        from rich.progress import Progress

        self.parts = parts
        self.bar = Progress(console=Console(stderr=True), transient=True) if tty else None
        self.task = self.bar.add_task("parts", total=parts) if self.bar is not None else None
        self.rows_task = self.bar.add_task("rows scored", total=None) if self.bar is not None else None

    def rows(self, n: int) -> None:
        """Count rows as chunks go by, so a single large file shows progress too (terminal only)."""
        if self.bar is not None and self.rows_task is not None:
            self.bar.update(self.rows_task, advance=n)

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def part(self, k: int, inp: InputFile, name: str, what: str) -> None:
        """Report part `k` done; a one-file run says it all in its summary (and error) line."""
        line = f"[{k}/{self.parts}] {inp.uri} -> {name}: {what}"
        if self.parts == 1:
            return
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, advance=1, description=f"{k}/{self.parts} {inp.uri}")
            self.bar.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=sys.stderr, flush=True)


def _summary(
    run: _Run,
    model_uri: str,
    in_spec: str,
    out_spec: str,
    inputs: list[InputFile],
    total: PartStats,
    refused: list[str],
    skipped: int,
    rows_this_run: int,
    seconds: tuple[float, float],
    reference: Path | None,
) -> BatchSummary:
    drift, note = _drift(run, reference)
    return BatchSummary(
        verdict=verdict(total, refused, run.policy, drift),
        model_uri=model_uri,
        input=in_spec,
        output=out_spec,
        bad_rows_policy=run.policy,
        parts=len(inputs),
        parts_scored=len(inputs) - skipped - len(refused),
        parts_skipped=skipped,
        parts_refused=refused,
        stats=total,
        seconds=seconds[0],
        scoring_seconds=seconds[1],
        rows_this_run=rows_this_run,
        drift=drift_dict(drift) if drift is not None else None,
        drift_note=note,
    )


def _drift(run: _Run, reference: Path | None) -> tuple[DriftReport | None, str]:
    """Input (and prediction) drift of this run's sample against the reference data, and what was compared."""
    from mlship.data.io import read_table
    from mlship.monitoring.drift import compare, score

    ref_path = reference or run.settings.data_path
    sample = run.sample.frame
    if sample is None or sample.empty:
        return None, "Not computed: no rows were scored in this run (parts skipped or refused)."
    if not ref_path.exists():
        return None, (
            f"Not computed: no reference data at {ref_path} "
            "(pass --reference, or set [tool.mlship] data to the training data)."
        )
    try:
        ref = score(run.settings, run.model, read_table(ref_path), str(ref_path))
        report = compare(run.settings, ref, sample, ref_name=str(ref_path), cur_name="batch sample")
    except ConfigError as exc:
        return None, f"Not computed: {exc}"
    return report, (
        f"A uniform sample of {len(sample):,} rows scored in this run against {ref_path} "
        f"({'--reference' if reference else 'the configured training data'}), "
        "with the thresholds of `mlship drift`; informational, not part of the exit code."
    )


def _write_report(summary: BatchSummary, report_dir: Path | str | None, dataset: Dataset, single: bool) -> str:
    """batch.json, batch.md, batch.png: in --report-dir, else next to the output file or under `_report/`."""
    if report_dir is not None:
        target, prefix = Dataset(str(report_dir)), ""
    else:
        target, prefix = dataset, "" if single else "_report/"
    target.write_bytes(f"{prefix}batch.json", (json.dumps(summary.to_dict(), indent=2) + "\n").encode())
    target.write_bytes(f"{prefix}batch.png", plot(summary))
    return target.write_bytes(f"{prefix}batch.md", render_markdown(summary).encode())


def reasons_line(tally: dict[str, int], limit: int = 3) -> str:
    """`reason (n); …`, most frequent first: how both engines word refused or flagged rows."""
    ranked = sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))
    text = "; ".join(f"{reason} ({n:,})" for reason, n in ranked[:limit])
    return text + (f"; and {len(ranked) - limit} more reasons" if len(ranked) > limit else "")


def _nullable(schema: Any) -> Any:
    """The first chunk decides the part's schema: let later chunks carry nulls the first did not."""
    import pyarrow as pa

    fields = [pa.field(f.name, pa.string() if pa.types.is_null(f.type) else f.type, nullable=True) for f in schema]
    return pa.schema(fields, metadata=schema.metadata)
