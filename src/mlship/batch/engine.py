"""The local predict-batch engine: files, folders, globs or s3:// prefixes scored in bounded memory.

Each input file becomes one Parquet part (atomic, named from the input), a `_SUCCESS`
manifest is written last, and a re-run skips parts already written from the same input
(size, mtime and a content key: io.content_fingerprint) with the same model and policy
(see io.py for what atomic means where).
A report (batch.md/json/png, report.py) says what was scored, refused, and drifted.

Rows are checked against the model's input signature with the rules of `/predict` (numeric
columns: a finite number; string columns: a string; booleans: a boolean; never null). A bad
row is never scored silently: `refuse` (the default) scores nothing and says how many rows
failed and why (exit 1: the data said no); `flag` scores the good rows and gives every row an
`input_error` column (null when the row was fine), the bad rows with null predictions.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlship.batch.io import Dataset, InputFile, content_fingerprint, list_inputs, part_name, read_chunks, split
from mlship.batch.report import PartStats
from mlship.batch.rows import check_policy, no_problems, require_columns, row_problems, score_frame
from mlship.batch.run import (
    BatchResult,
    Outcome,
    Output,
    PartWriter,
    Progress,
    Run,
    conclude,
    finished_part,
    new_run,
    outside_output,
    prepare_output,
    progress_for,
)
from mlship.errors import ConfigError
from mlship.registry import Registry, load_model_dir

if TYPE_CHECKING:
    import pandas as pd

    from mlship.settings import Settings


def iter_chunks(path: Path, chunk_size: int) -> Iterator[pd.DataFrame]:
    """Yield DataFrames of at most ``chunk_size`` rows without loading the whole file (or files).

    A file that is not what its suffix says, or is cut short, is bad input (exit 2), not a crash.
    """
    fs, inputs = list_inputs(str(path))
    for inp in inputs:
        yield from read_chunks(fs, inp, chunk_size)


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
    check_policy(bad_rows)
    started = time.perf_counter()
    in_spec, out_spec = str(input_path), str(output_path)
    fs_in, inputs = list_inputs(in_spec)
    single = out_spec.lower().endswith(".parquet")
    fs_out, out_root = split(out_spec)  # a bad output URI is exit 2 before the model is loaded
    inputs = outside_output(fs_in, inputs, fs_out, out_root, in_spec, out_spec)
    if single and len(inputs) > 1:
        raise ConfigError(
            f"--output {out_spec} is one file but {in_spec} holds {len(inputs)} input files",
            hint="pass a folder or s3:// prefix as --output: one part per input",
        )
    registry = Registry.from_settings(settings)
    resolved = registry.resolve(model_ref)
    with tempfile.TemporaryDirectory(prefix="mlship-batch-") as tmp:
        directory = registry.download(resolved, Path(tmp))  # verified against the recorded sha256
        run = new_run(settings, load_model_dir(directory), directory, resolved, bad_rows, chunk_size)
    if single:
        parent, _, leaf = out_spec.rstrip("/").rpartition("/")
        out = Output(Dataset(parent or "."), [leaf], out_spec, single=True)
    else:
        out = Output(Dataset(out_spec), [part_name(i) for i in inputs], out_spec)
    prepare_output(out.dataset, folder=not single)
    outcome = Outcome()
    with progress_for(len(inputs), progress) as show:
        for k, (inp, name) in enumerate(zip(inputs, out.names, strict=True), start=1):
            fingerprint = content_fingerprint(fs_in, inp)
            source = run.source(fingerprint)
            done = None if overwrite else finished_part(out.dataset, name, source)
            if done is not None:
                outcome.skip(show, k, inp, name, done, fingerprint)
                continue
            t0 = time.perf_counter()
            result = _score_part(run, fs_in, inp, out.dataset, name, source, show)
            seconds = time.perf_counter() - t0
            outcome.scoring += seconds
            outcome.scored(show, k, inp, name, result, seconds, fingerprint, None if single else out.dataset)
    return conclude(
        run, out, inputs, outcome, in_spec=in_spec, started=started, report_dir=report_dir, reference=reference
    )


def _score_part(
    run: Run, fs: Any, inp: InputFile, dataset: Dataset, name: str, source: str, show: Progress
) -> tuple[PartStats, bool]:
    """Score one input into its staged part; (stats, True) once the part is in place.

    Under `refuse` a part with any bad row is read to the end (to count the reasons) and
    dropped: (stats, False).
    """
    stats = PartStats()
    flag = run.policy == "flag"
    features = run.features
    before = run.sample.state()
    try:
        with dataset.staged(name) as stream:
            part = PartWriter(run, stream, stats)
            try:
                for chunk in read_chunks(fs, inp, run.chunk_size):
                    require_columns(inp, chunk, features)
                    if chunk.empty:
                        continue  # a header-only CSV: no rows, no part
                    stats.rows += len(chunk)
                    show.rows(len(chunk))
                    if not flag:
                        stats.add_reasons(row_problems(run.columns, chunk) if run.columns else no_problems(chunk))
                        if stats.refused:
                            continue  # this part will not be written; keep counting for the message
                    part.write(score_frame(run.settings, run.model, chunk, run.columns, flag=flag), chunk[features])
                if stats.refused and not flag:
                    raise _Refused
                if part.empty:
                    raise _Refused  # an empty input: no part to write
                part.seal(source)
            finally:
                part.close()
    except _Refused:
        run.sample.restore(before)  # a refused part's rows are not in the output, nor in the report
        return PartStats(rows=stats.rows, refused=stats.refused), stats.rows == 0
    return stats, True
