"""One predict-batch run, whichever engine scores it: its fixed inputs, the parts' bookkeeping, and its end.

Both engines (engine.py: local, spark.py: Spark) list inputs, skip finished parts, write each
part with the same columns and footer, count what each part did, and close the dataset with the
same `_SUCCESS` manifest, report and verdict through this module: the footer and the manifest
must stay the same for either engine to resume the other's output.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlship.batch.io import Dataset, InputFile, real_path, within
from mlship.batch.report import BatchSummary, PartStats, Sample, drift_dict, plot, render_markdown, verdict
from mlship.batch.rows import FLAG_COLUMN, reasons_line
from mlship.data.io import read_table
from mlship.deploy.faults import checkpoint
from mlship.errors import ConfigError, PipelineRejected
from mlship.monitoring.drift import PROBABILITY, compare, score
from mlship.registry import model_input_schema
from mlship.serving.model import Column

if TYPE_CHECKING:
    import pandas as pd

    from mlship.monitoring.drift import DriftReport
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
    bad_rows: int = 0
    """Rows that failed the input schema (scored as nulls and flagged, under `flag`)."""
    bad_row_reasons: str = ""
    parts: int = 1
    parts_skipped: int = 0
    """Parts already written by an earlier run from the same input, model and policy."""
    report: str = ""
    """Where batch.md was written."""
    verdict: str = ""


@dataclass
class Run:
    """The fixed inputs of one batch run, shared by every part."""

    settings: Settings
    model: Any
    resolved: Any
    """The registry's ResolvedModel: uri, name and version of the model scoring every part."""
    columns: list[Column]
    policy: str
    chunk_size: int
    meta: dict[bytes, bytes]
    sample: Sample

    @property
    def features(self) -> list[str]:
        """The columns the model reads: its input signature's, else the configured features."""
        return [c.name for c in self.columns] if self.columns else self.settings.features

    def source(self, fingerprint: dict[str, Any]) -> str:
        """The footer naming what a part was made from: its input, this model and this policy."""
        return json.dumps({**fingerprint, "model_uri": self.resolved.uri, "bad_rows": self.policy}, sort_keys=True)


def new_run(settings: Settings, model: Any, directory: Path, resolved: Any, policy: str, chunk_size: int) -> Run:
    """A run's fixed inputs: the model's input columns and the footer every part carries (both engines)."""
    return Run(
        settings,
        model,
        resolved,
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


def outside_output(
    fs_in: Any, inputs: list[InputFile], fs_out: Any, out_root: str, in_spec: str, out_spec: str
) -> list[InputFile]:
    """The inputs not inside the output: an output inside the input folder is not input on the next run.

    Compared as the filesystem will resolve them: an output symlinked into the input folder is in it.
    """
    if fs_out.type_name != fs_in.type_name:
        return inputs
    out_real = real_path(fs_out, out_root)
    inputs = [i for i in inputs if not within(real_path(fs_in, i.path), out_real)]
    if not inputs:
        shown = out_spec if out_real == out_root else f"{out_spec} (which resolves to {out_real})"
        raise ConfigError(
            f"--output {shown} holds the input {in_spec}: the parts would be written among the input files",
            hint="write the output outside the input",
        )
    return inputs


def prepare_output(dataset: Dataset, *, folder: bool = True) -> None:
    """Make the output ready, saying which unfinished uploads a killed run left (and were aborted)."""
    for upload in dataset.prepare(dataset=folder):
        print(f"aborted the unfinished upload of {upload}: a killed run left it", file=sys.stderr)


def finished_part(dataset: Dataset, name: str, source: str) -> PartStats | None:
    """The stats of a part an earlier run wrote from this very input, model and policy; else None."""
    meta = dataset.part_metadata(name)
    if not meta or meta.get(b"mlship.source") != source.encode() or b"mlship.stats" not in meta:
        return None
    return PartStats.from_json(meta[b"mlship.stats"])


class PartWriter:
    """Scored chunks into one staged part: the first chunk fixes the schema and the run's footer.

    Each chunk also counts into the part's stats and the run's uniform sample (the rows scored,
    with their features and probability), as both engines count them.
    """

    def __init__(self, run: Run, stream: Any, stats: PartStats) -> None:
        self.run, self.stream, self.stats = run, stream, stats
        self.writer: Any = None

    @property
    def empty(self) -> bool:
        return self.writer is None

    def write(self, scored: pd.DataFrame, features: pd.DataFrame) -> None:
        """Write `scored` (score_frame's columns); `features`: the same rows' model inputs, by the model's names."""
        import pyarrow as pa  # noqa: PLC0415 - pyarrow: heavy, imported where it is used (off `--help` and the light paths)
        import pyarrow.parquet as pq  # noqa: PLC0415 - pyarrow: heavy, imported where it is used (off `--help` and the light paths)

        if self.run.policy == "flag":
            self.stats.add_reasons(scored[FLAG_COLUMN])
        probability = scored["probability"].to_numpy(dtype="float64")
        self.stats.add_scores(probability, scored["prediction"])
        good = ~scored["probability"].isna().to_numpy()
        self.run.sample.add(features.loc[good].assign(**{PROBABILITY: probability[good]}))
        table = pa.Table.from_pandas(scored, preserve_index=False)
        if self.writer is None:
            schema = _nullable(table.schema).with_metadata({**(table.schema.metadata or {}), **self.run.meta})
            self.writer = pq.ParquetWriter(self.stream, schema)
        self.writer.write_table(table.cast(self.writer.schema))

    def seal(self, source: str) -> None:
        """The footer that lets a later run skip this part: what it was made from, and its stats."""
        self.writer.add_key_value_metadata({"mlship.source": source, "mlship.stats": self.stats.to_json()})

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _nullable(schema: Any) -> Any:
    """The first chunk decides the part's schema: let later chunks carry nulls the first did not."""
    import pyarrow as pa  # noqa: PLC0415 - pyarrow: heavy, imported where it is used (off `--help` and the light paths)

    fields = [pa.field(f.name, pa.string() if pa.types.is_null(f.type) else f.type, nullable=True) for f in schema]
    return pa.schema(fields, metadata=schema.metadata)


class Progress:
    """A rich bar over the parts on a terminal; one plain line per part in CI logs."""

    def __init__(self, parts: int, tty: bool) -> None:
        from rich.console import Console  # noqa: PLC0415 - rich: heavy, imported where it is used (off `--help` and the light paths)
        from rich.progress import Progress as Bar  # noqa: PLC0415 - rich: heavy, imported where it is used (off `--help` and the light paths)

        self.parts = parts
        self.bar = Bar(console=Console(stderr=True), transient=True) if tty else None
        self.task = self.bar.add_task("parts", total=parts) if self.bar is not None else None
        self.rows_task = self.bar.add_task("rows scored", total=None) if self.bar is not None else None

    def rows(self, n: int) -> None:
        """Count rows as chunks go by, so a single large file shows progress too (terminal only)."""
        if self.bar is not None and self.rows_task is not None:
            self.bar.update(self.rows_task, advance=n)

    def __enter__(self) -> Progress:
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


def progress_for(parts: int, progress: bool | None) -> Progress:
    """`progress` None means: a bar on a terminal, a line per part otherwise."""
    return Progress(parts, sys.stderr.isatty() if progress is None else progress)


@dataclass
class Outcome:
    """What the parts of a run did, counted in input order: the manifest's entries and the report's totals."""

    total: PartStats = field(default_factory=PartStats)
    entries: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    skipped: int = 0
    rows_this_run: int = 0
    scoring: float = 0.0

    def skip(
        self, show: Progress, k: int, inp: InputFile, name: str, stats: PartStats, fingerprint: dict[str, Any]
    ) -> None:
        """Part `k` was written by an earlier run from this input, model and policy."""
        self.skipped += 1
        show.part(k, inp, name, f"skipped: already written from this input ({stats.rows:,} rows)")
        self._count(inp, name, stats, fingerprint)

    def scored(
        self,
        show: Progress,
        k: int,
        inp: InputFile,
        name: str,
        result: tuple[PartStats, bool],
        seconds: float,
        fingerprint: dict[str, Any],
        dataset: Dataset | None,
    ) -> None:
        """Part `k` was scored: `result` is (stats, True once the part is in place).

        With a `dataset` (a folder output), a part refused or without rows is removed: an earlier
        run's part from other data or policy must not stay.
        """
        stats, ok = result
        self.rows_this_run += stats.rows
        if dataset is not None and (not ok or stats.rows == 0):
            dataset.remove(name)
        if not ok:
            self.refused.append(inp.uri)
            show.part(k, inp, name, f"REFUSED: {stats.bad_rows:,} of {stats.rows:,} rows fail the input schema")
        elif stats.rows == 0:
            show.part(k, inp, name, "no rows: no part")
        else:
            show.part(k, inp, name, f"{stats.rows:,} rows in {seconds:.1f} s")
        checkpoint(f"batch-part-{k}")
        self._count(inp, name, stats, fingerprint)

    def _count(self, inp: InputFile, name: str, stats: PartStats, fingerprint: dict[str, Any]) -> None:
        self.total.merge(stats)
        if stats.rows and inp.uri not in self.refused:
            self.entries.append({"part": name, **fingerprint, "rows": stats.rows, "bad_rows": stats.bad_rows})


@dataclass(frozen=True)
class Output:
    """Where a run writes: the dataset, its part names, and how the user named it."""

    dataset: Dataset
    names: list[str]
    spec: str
    single: bool = False
    """One `.parquet` file (the dataset is its folder, the one part its name)."""

    @property
    def uri(self) -> str:
        return self.dataset.uri(self.names[0]) if self.single else self.spec


def conclude(
    run: Run,
    out: Output,
    inputs: list[InputFile],
    outcome: Outcome,
    *,
    in_spec: str,
    started: float,
    report_dir: Path | str | None,
    reference: Path | None,
) -> BatchResult:
    """Close the dataset, write the report, and say what the run did: refused rows raise PipelineRejected (exit 1)."""
    total, refused, model = outcome.total, outcome.refused, run.resolved
    if total.rows == 0:
        raise ConfigError(f"{in_spec} has no rows", hint="score a non-empty input")
    _close_dataset(out, outcome, len(inputs), run, in_spec)
    seconds = time.perf_counter() - started
    drift, note = _drift(run, reference)
    summary = BatchSummary(
        verdict=verdict(total, refused, run.policy, drift),
        model_uri=model.uri,
        input=in_spec,
        output=out.uri,
        bad_rows_policy=run.policy,
        parts=len(inputs),
        parts_scored=len(inputs) - outcome.skipped - len(refused),
        parts_skipped=outcome.skipped,
        parts_refused=refused,
        stats=total,
        seconds=seconds,
        scoring_seconds=outcome.scoring,
        rows_this_run=outcome.rows_this_run,
        drift=drift_dict(drift) if drift is not None else None,
        drift_note=note,
    )
    report = _write_report(summary, report_dir, out)
    if refused:
        where = f"of {inputs[0].uri}" if len(inputs) == 1 else f"in {len(refused)} of {len(inputs)} parts"
        rest = "nothing was scored" if len(inputs) == 1 else "those parts were not written, the others were"
        raise PipelineRejected(
            f"{total.bad_rows:,} of {total.rows:,} rows {where} fail the model's input schema "
            f"({reasons_line(total.refused)}); {rest}",
            hint="fix the data, or pass --bad-rows flag to score the rest and flag these",
        )
    return BatchResult(
        out.uri,
        total.rows,
        model.uri,
        model.name,
        model.version,
        seconds,
        bad_rows=total.bad_rows,
        bad_row_reasons=reasons_line(total.refused),
        parts=len(inputs),
        parts_skipped=outcome.skipped,
        report=report,
        verdict=summary.verdict,
    )


def _close_dataset(out: Output, outcome: Outcome, inputs: int, run: Run, in_spec: str) -> None:
    """Say what resumption skipped; for a folder output with no part refused, drop the parts of
    inputs that are gone and write the `_SUCCESS` manifest."""
    if outcome.skipped:
        print(
            f"skipped {outcome.skipped} of {inputs} parts already written from the same input and model "
            "(pass --overwrite to redo them)",
            file=sys.stderr,
        )
    if out.single or outcome.refused:
        return
    for stale in out.dataset.drop_parts_except(set(out.names)):
        print(f"removed {stale}: its input is gone", file=sys.stderr)
    out.dataset.finish(
        {
            "model_uri": run.resolved.uri,
            "bad_rows": run.policy,
            "input": in_spec,
            "rows": outcome.total.rows,
            "parts": outcome.entries,
        }
    )


def _drift(run: Run, reference: Path | None) -> tuple[DriftReport | None, str]:
    """Input (and prediction) drift of this run's sample against the reference data, and what was compared."""
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


def _write_report(summary: BatchSummary, report_dir: Path | str | None, out: Output) -> str:
    """batch.json, batch.md, batch.png: in --report-dir, else next to the output file or under `_report/`."""
    if report_dir is not None:
        target, prefix = Dataset(str(report_dir)), ""
    else:
        target, prefix = out.dataset, "" if out.single else "_report/"
    target.write_bytes(f"{prefix}batch.json", (json.dumps(summary.to_dict(), indent=2) + "\n").encode())
    target.write_bytes(f"{prefix}batch.png", plot(summary))
    return target.write_bytes(f"{prefix}batch.md", render_markdown(summary).encode())
