"""Batch scoring on Spark: MLflow's Spark UDF, with the local engine's checks, dataset, resumption and report.

`mlship predict-batch --engine spark` lists its inputs as the local engine does (a file, a
folder, a glob, or an `s3://` prefix) and runs one Spark job per input (a few at once, up to
the session's parallelism): `row_problems` on every partition (so the rows the local engine
refuses or flags are refused or flagged here), then the good rows scored by
`mlflow.pyfunc.spark_udf(..., env_manager="local")` into a staging folder of the output. The
driver streams each staging folder, in input order, into the part the local engine would have
written (same columns, footer and atomic move), then writes the same `_SUCCESS` manifest and
batch report: so a re-run skips finished parts, and either engine resumes the other's dataset.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlship.batch.io import (
    Dataset,
    InputFile,
    content_fingerprint,
    is_s3,
    list_inputs,
    part_name,
    split,
    storage,
)
from mlship.batch.report import PartStats
from mlship.batch.rows import FLAG_COLUMN, check_policy, predictions, require_columns, row_problems
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
from mlship.data.io import check_column_names, check_csv
from mlship.errors import ConfigError, InfraError
from mlship.registry import Registry, load_model_dir, spark_proba_udf

if TYPE_CHECKING:
    import pandas as pd

    from mlship.serving.model import Column
    from mlship.settings import Settings

ENGINES = ("local", "spark")
MASTER_ENV = "MLSHIP_SPARK_MASTER"
DEFAULT_MASTER = "local[*]"
STAGING_PREFIX = "_spark-"
STAGING_DIR = re.compile(rf"{STAGING_PREFIX}[0-9a-f]{{32}}-.+")
"""Spark's output for one input, inside the output folder until the driver has made it a part (readers skip `_`)."""
MAX_PARALLEL_PARTS = 8
"""Inputs scored at once (each a Spark job); also bounds the staging space in use."""


def spark_master(option: str | None) -> str:
    """--spark-master, else $MLSHIP_SPARK_MASTER, else every core of this machine."""
    return option or os.environ.get(MASTER_ENV) or DEFAULT_MASTER


def require_spark() -> None:
    """Java and pyspark, or one line naming the fix (exit 3): Spark cannot start without both."""
    java_home = os.environ.get("JAVA_HOME")
    has_java = shutil.which("java") is not None or (java_home is not None and Path(java_home, "bin", "java").is_file())
    if not has_java:
        raise InfraError(
            "--engine spark needs Java, and no `java` is on PATH (nor in $JAVA_HOME)",
            hint="install a Java 17+ runtime, e.g. `apt-get install openjdk-17-jre-headless`",
        )
    try:
        import pyspark  # noqa: F401, PLC0415 - optional dependency (the spark extra): is it installed?
    except ImportError:
        raise InfraError(
            "--engine spark needs pyspark, which is not installed",
            hint="install mlship's spark extra: `pip install 'mlship[spark]'` (or `uv sync --extra spark`)",
        ) from None


def session(master: str) -> Any:
    """A Spark session on `master`; a local one stays on loopback, without the UI, on this Python."""

    from pyspark.sql import SparkSession  # noqa: PLC0415 - pyspark: optional dependency (the spark extra)

    # pyspark 4 warns on every pandas 3 conversion; the engine's results are checked against the
    # local engine's (tests/integration/test_batch_spark.py), so the warning only adds noise.
    warnings.filterwarnings("ignore", message=r".*PySpark does not yet fully support pandas", category=FutureWarning)

    builder = SparkSession.builder.appName("mlship-predict-batch").master(master)
    if master.startswith("local"):
        # Workers are forked from this interpreter's venv (pyspark reads PYSPARK_PYTHON, not the conf).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = (
            builder.config("spark.ui.enabled", "false")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.sql.shuffle.partitions", "4")
        )
    for key, value in _s3a_conf().items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")  # Spark's WARN lines are not the user's business; errors are
    return spark


def _s3a_conf() -> dict[str, str]:
    """The usual AWS variables as Hadoop s3a settings (the cluster still needs the hadoop-aws jars)."""
    conf: dict[str, str] = {}
    names = {
        "AWS_ACCESS_KEY_ID": "fs.s3a.access.key",
        "AWS_SECRET_ACCESS_KEY": "fs.s3a.secret.key",
        "AWS_SESSION_TOKEN": "fs.s3a.session.token",
    }
    for env, key in names.items():
        if os.environ.get(env):
            conf[f"spark.hadoop.{key}"] = os.environ[env]
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        conf["spark.hadoop.fs.s3a.endpoint"] = endpoint
        conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
    return conf


def spark_uri(location: str) -> str:
    """`s3://bucket/key` is Hadoop's `s3a://bucket/key`; a local path becomes absolute."""
    if location.startswith("s3://"):
        return "s3a://" + location.removeprefix("s3://")
    if "://" in location:
        return location
    return str(Path(location).absolute())


def predict_batch_spark(
    settings: Settings,
    model_ref: str,
    input_location: str,
    output_location: str,
    bad_rows: str = "refuse",
    master: str | None = None,
    spark: Any = None,
    *,
    chunk_size: int = 100_000,
    overwrite: bool = False,
    report_dir: Path | str | None = None,
    reference: Path | None = None,
    progress: bool | None = None,
) -> BatchResult:
    """Score every input file on Spark into one Parquet part each, then the manifest, then the report.

    The local engine's dataset, part by part: `bad_rows`, resumption (parts whose footer names
    this input, model and policy are skipped unless `overwrite`), the `_SUCCESS` manifest and the
    batch report (`report_dir`, drift against `reference`) are its own. A session passed in is
    reused and left running; one made here is stopped at the end.
    """
    check_policy(bad_rows)
    started = time.perf_counter()
    in_spec, out_spec = str(input_location), str(output_location)
    needs_s3a = is_s3(in_spec) or is_s3(out_spec)
    fs_out, out_root = split(out_spec)  # a bad output URI is exit 2 before Spark starts
    _not_a_file(fs_out, out_root, out_spec)
    listed = None if needs_s3a else _inputs(in_spec, fs_out, out_root, out_spec)
    registry = Registry.from_settings(settings)
    resolved = registry.resolve(model_ref)
    require_spark()
    own = spark is None
    if own:
        spark = session(spark_master(master))
    try:
        if needs_s3a:
            _require_s3a(spark, in_spec if is_s3(in_spec) else out_spec)
        fs_in, inputs = listed or _inputs(in_spec, fs_out, out_root, out_spec)
        with tempfile.TemporaryDirectory(prefix="mlship-spark-") as tmp:
            directory = registry.download(resolved, Path(tmp) / "download")  # verified against the recorded sha256
            # the driver scores the drift reference, as the local engine does
            run = new_run(settings, load_model_dir(directory), directory, resolved, bad_rows, chunk_size)
            out = Output(Dataset(out_spec), [part_name(i) for i in inputs], out_spec)
            prepare_output(out.dataset)
            _drop_stale_staging(out.dataset)
            job = _Job(spark, spark_proba_udf(spark, directory, Path(tmp)), run, out.dataset, fs_in)
            outcome = _run_parts(job, fs_in, inputs, overwrite=overwrite, progress=progress)
    finally:
        if own:
            spark.stop()
    # worded as the local engine words it, refusal included (tests compare the two messages)
    return conclude(
        run, out, inputs, outcome, in_spec=in_spec, started=started, report_dir=report_dir, reference=reference
    )


@dataclass
class _Job:
    """What every part of one Spark run shares: the session, the UDF, the local engine's run and the output."""

    spark: Any
    udf: Any
    run: Run
    dataset: Dataset
    fs_in: Any

    @property
    def names(self) -> list[str]:
        return self.run.features


@dataclass
class _Staged:
    """One input after its Spark job: its row count, bad rows by reason, and Spark's output (None: not scored)."""

    inp: InputFile
    rows: int
    flagged: dict[str, int]
    path: str | None
    seconds: float


def _inputs(in_spec: str, fs_out: Any, out_root: str, out_spec: str) -> tuple[Any, list[InputFile]]:
    """The input files, as the local engine lists them; an output inside the input folder is not input."""
    fs_in, inputs = list_inputs(in_spec)
    return fs_in, outside_output(fs_in, inputs, fs_out, out_root, in_spec, out_spec)


def _not_a_file(fs: Any, root: str, spec: str) -> None:
    import pyarrow.fs as pafs  # noqa: PLC0415 - pyarrow: heavy, imported where it is used (off `--help` and the light paths)

    if fs.type_name != "s3" and fs.get_file_info(root).type == pafs.FileType.File:
        raise ConfigError(f"{spec} exists and is not a folder", hint="--engine spark writes a Parquet folder")


def _no_s3a(exc: Exception, what: str) -> InfraError | None:
    """The error to raise when py4j's Java error `exc` says this Spark has no s3a filesystem; else None."""
    if "S3AFileSystem" in str(exc) or "No FileSystem for scheme" in str(exc):
        return InfraError(
            f"{what}: this Spark has no s3a filesystem (hadoop-aws)",
            hint="run on a cluster with the hadoop-aws jars (see the README: Spark on a cluster)",
        )
    return None


def _require_s3a(spark: Any, uri: str) -> None:
    """Hadoop's s3a filesystem, looked up as Hadoop would (pyspark's own distribution has none)."""
    try:
        jvm = spark._jvm
        jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass("s3a", spark._jsc.hadoopConfiguration())
    except Exception as exc:  # py4j's Java errors: ClassNotFoundException, UnsupportedFileSystemException
        missing = _no_s3a(exc, f"cannot use {uri}")
        if missing is not None:
            raise missing from None
        raise


def _drop_stale_staging(dataset: Dataset) -> None:
    """Spark output folders a killed run left behind (its parts were never moved into place)."""
    import pyarrow.fs as pafs  # noqa: PLC0415 - pyarrow: heavy, imported where it is used (off `--help` and the light paths)

    with storage(f"list {dataset.spec}"):
        for info in dataset.fs.get_file_info(pafs.FileSelector(dataset.root, allow_not_found=True)):
            if info.type == pafs.FileType.Directory and STAGING_DIR.fullmatch(info.base_name):
                dataset.fs.delete_dir(info.path)


def _run_parts(job: _Job, fs_in: Any, inputs: list[InputFile], *, overwrite: bool, progress: bool | None) -> Outcome:
    """Skip finished parts, run a Spark job per other input (a few at once), finish each part in input order.

    Spark jobs run in threads, up to the session's parallelism, so small inputs still use every
    core; the driver moves parts into place one by one in input order, so a run killed after part
    k leaves parts 1..k complete and a uniform sample independent of which job finished first.
    """

    out = Outcome()
    names = [part_name(i) for i in inputs]
    fingerprints = [content_fingerprint(fs_in, i) for i in inputs]
    sources = [job.run.source(f) for f in fingerprints]  # the local engine's footer: either resumes the other's
    done = [None if overwrite else finished_part(job.dataset, n, s) for n, s in zip(names, sources, strict=True)]
    pending = iter([k for k, d in enumerate(done) if d is None])
    workers = max(1, min(MAX_PARALLEL_PARTS, int(job.spark.sparkContext.defaultParallelism)))
    group = f"mlship-predict-batch-{uuid.uuid4().hex}"
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlship-spark-part")
    futures: dict[int, Future[_Staged]] = {}

    def submit_next() -> None:
        k = next(pending, None)
        if k is not None:
            futures[k] = pool.submit(_stage, job, group, inputs[k], names[k])

    started = time.perf_counter()
    try:
        for _ in range(workers):
            submit_next()
        with progress_for(len(inputs), progress) as show:
            for k, (inp, name) in enumerate(zip(inputs, names, strict=True), start=1):
                finished = done[k - 1]
                if finished is not None:
                    out.skip(show, k, inp, name, finished, fingerprints[k - 1])
                    continue
                staged = futures.pop(k - 1).result()
                submit_next()
                t0 = time.perf_counter()
                result = _finish_part(job, staged, name, sources[k - 1], show)
                seconds = staged.seconds + time.perf_counter() - t0
                out.scored(show, k, inp, name, result, seconds, fingerprints[k - 1], job.dataset)
    except BaseException:
        job.spark.sparkContext.cancelJobGroup(group)  # the parts still running are not wanted any more
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    out.scoring = time.perf_counter() - started if out.rows_this_run else 0.0
    return out


def _stage(job: _Job, group: str, inp: InputFile, name: str) -> _Staged:
    """One input's Spark job: check every row, count reasons, and score into a staging folder of the output.

    Nothing is scored when the input has no rows, or has bad rows under `refuse`.
    """
    started = time.perf_counter()
    job.spark.sparkContext.setJobGroup(group, f"mlship predict-batch {inp.uri}")
    if inp.suffix == ".csv":
        with storage(f"read {inp.uri}"):
            check_csv(job.fs_in, inp.path, inp.uri, inp.size)  # the local engine's refusals of a CSV's head and tail
    frame = _read(job.spark, "csv" if inp.suffix == ".csv" else "parquet", spark_uri(inp.uri))
    check_column_names(list(frame.columns), inp.uri)
    require_columns(inp, frame, job.names)  # a Spark DataFrame has the `columns` it reads
    checked = _checked(frame, job.run.columns)
    tally = _tally(checked)
    rows = sum(tally.values())
    flagged = {str(reason): n for reason, n in tally.items() if reason is not None}
    flag = job.run.policy == "flag"
    if rows == 0 or (flagged and not flag):
        return _Staged(inp, rows, flagged, None, time.perf_counter() - started)
    path = f"{job.dataset.root}/{STAGING_PREFIX}{uuid.uuid4().hex}-{name}"
    scored = _scored(checked, job.udf, job.names, job.run.settings.id_column, tally, flag=flag)
    scored.write.mode("errorifexists").parquet(f"s3a://{path}" if job.dataset.is_s3 else path)
    return _Staged(inp, rows, flagged, path, time.perf_counter() - started)


def _finish_part(job: _Job, staged: _Staged, name: str, source: str, show: Progress) -> tuple[PartStats, bool]:
    """Stream Spark's output of one input into the part the local engine would write; (stats, True) once in place.

    The same columns and types, footer (model, policy, source, statistics) and atomic move as
    the local engine's parts (one PartWriter); the features Spark carried along feed the report's
    uniform sample. A part not scored (bad rows under `refuse`, or no rows) gives (stats, rows == 0).
    """
    import pyarrow.fs as pafs  # noqa: PLC0415 - pyarrow: heavy, imported where it is used (off `--help` and the light paths)
    import pyarrow.parquet as pq  # noqa: PLC0415 - pyarrow: heavy, imported where it is used (off `--help` and the light paths)

    if staged.path is None:
        return PartStats(rows=staged.rows, refused=dict(staged.flagged)), staged.rows == 0
    fs = job.dataset.fs
    features = [_feature(i) for i in range(len(job.names))]
    stats = PartStats()
    try:
        with storage(f"read Spark's output for {name}"):
            files = sorted(
                i.path
                for i in fs.get_file_info(pafs.FileSelector(staged.path))
                if i.type == pafs.FileType.File and i.base_name.startswith("part-")
            )  # part-00000-…, part-00001-…: Spark's partitions, in input order
        with job.dataset.staged(name) as stream:
            part = PartWriter(job.run, stream, stats)
            try:
                for path in files:
                    with fs.open_input_file(path) as handle:
                        for batch in pq.ParquetFile(handle).iter_batches(batch_size=job.run.chunk_size):
                            chunk = batch.to_pandas()
                            stats.rows += len(chunk)
                            show.rows(len(chunk))
                            part.write(_part_chunk(job, staged, chunk), chunk[features].set_axis(job.names, axis=1))
                if part.empty or stats.rows != staged.rows:
                    raise InfraError(
                        f"Spark's output for {staged.inp.uri} holds {stats.rows:,} rows, not {staged.rows:,}",
                        hint="re-run; the part was not written",
                    )
                part.seal(source)
            finally:
                part.close()
    finally:
        with suppress(OSError):
            fs.delete_dir(staged.path)
    return stats, True


def _part_chunk(job: _Job, staged: _Staged, chunk: pd.DataFrame) -> pd.DataFrame:
    """The columns of `score_frame` for these rows: the prediction derived from the probability as it derives it."""
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)
    import pandas as pd  # noqa: PLC0415 - pandas: heavy, imported where it is used (off `--help` and the light paths)

    probability = chunk["probability"].to_numpy(dtype="float64", na_value=np.nan)
    scored = pd.DataFrame({"prediction": predictions(probability), "probability": probability})
    if job.run.policy == "flag":
        reasons = chunk[FLAG_COLUMN].astype(object)
        scored[FLAG_COLUMN] = reasons.where(reasons.notna(), None).to_numpy()
    id_column = job.run.settings.id_column
    if id_column and id_column in chunk.columns:
        ids = chunk[id_column].to_numpy()
        if staged.inp.suffix == ".csv" and ids.dtype.kind == "i":
            ids = ids.astype("int64")  # Spark infers int32 where pandas reads a CSV's integers as int64
        scored.insert(0, id_column, ids)
    return scored


def _feature(i: int) -> str:
    """The name a feature travels under in Spark's staging output (never one of the output columns)."""
    return f"__mlship_feature_{i}"


def _read(spark: Any, fmt: str, uri: str) -> Any:
    """The input as a DataFrame; a path that names nothing is bad input, a missing s3a driver the environment's."""
    from pyspark.errors import AnalysisException  # noqa: PLC0415 - pyspark: optional dependency (the spark extra)

    reader = spark.read.option("header", "true").option("inferSchema", "true") if fmt == "csv" else spark.read
    try:
        return reader.format(fmt).load(uri)
    except AnalysisException as exc:
        raise ConfigError(
            f"cannot read {uri}: {_first_line(exc)}", hint="pass an existing file, folder or glob"
        ) from None
    except Exception as exc:  # py4j's Java errors: e.g. no S3AFileSystem class on this cluster
        missing = _no_s3a(exc, f"cannot read {uri}")
        if missing is not None:
            raise missing from None
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _checked(frame: Any, columns: list[Column]) -> Any:
    """The input plus `input_error`: what `row_problems` says of every row, partition by partition."""
    from pyspark.sql.types import StringType, StructField, StructType  # noqa: PLC0415 - pyspark: optional dependency (the spark extra)

    schema = StructType([*frame.schema.fields, StructField(FLAG_COLUMN, StringType(), True)])

    def check(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            reasons = row_problems(columns, batch) if columns else None
            yield batch.assign(**{FLAG_COLUMN: None if reasons is None else reasons.to_numpy()})

    return frame.mapInPandas(check, schema)


def _tally(checked: Any) -> dict[str | None, int]:
    """Rows per `input_error` (None: the good rows), in one pass over the input."""
    return {row[FLAG_COLUMN]: int(row["count"]) for row in checked.groupBy(FLAG_COLUMN).count().collect()}


def _scored(
    checked: Any, udf: Any, names: list[str], id_column: str | None, tally: dict[str | None, int], *, flag: bool
) -> Any:
    """[id], probability[, input_error] and the features, in input order, in one narrow pass.

    The model never sees a bad row: under `flag` each one is replaced by the first good row's
    features before the UDF, and its result thrown away (null). No split, union or sort, so
    the output keeps the input's order and the UDF runs once per row. The driver derives the
    prediction from the probability, as `score_frame` does.
    """
    from pyspark.sql import functions as sf  # noqa: PLC0415 - pyspark: optional dependency (the spark extra)
    from pyspark.sql.types import DoubleType  # noqa: PLC0415 - pyspark: optional dependency (the spark extra)

    ok = sf.col(FLAG_COLUMN).isNull()
    if not tally.get(None):  # every row is bad: nothing to score
        proba = sf.lit(None).cast(DoubleType())
    elif len(tally) == 1:  # every row is good
        proba = udf(sf.struct(*[sf.col(n) for n in names])).getItem(1)
    else:
        stand_in = checked.filter(ok).select(*names).first().asDict()
        features = [sf.when(ok, sf.col(n)).otherwise(sf.lit(stand_in[n])).alias(n) for n in names]
        proba = sf.when(ok, udf(sf.struct(*features)).getItem(1))
    keep = [sf.col(id_column)] if id_column and id_column in checked.columns else []
    keep.append(proba.alias("probability"))
    if flag:
        keep.append(sf.col(FLAG_COLUMN))
    keep += [sf.col(n).alias(_feature(i)) for i, n in enumerate(names)]
    return checked.select(*keep)
