"""Batch scoring on Spark: MLflow's Spark UDF, with the local engine's input checks and output columns.

`mlship predict-batch --engine spark` reads the input as a Spark DataFrame (a file, a folder,
a glob, or `s3://…` read through Hadoop's s3a), applies `row_problems` to every partition
(so the rows the local engine refuses or flags are refused or flagged here), scores the good
rows with `mlflow.pyfunc.spark_udf(..., env_manager="local")` and writes a Parquet dataset
with the columns of `score_frame`: [id], prediction, probability[, input_error].
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlship.errors import ConfigError, InfraError, PipelineRejected
from mlship.monitoring.batch import BAD_ROW_POLICIES, FLAG_COLUMN, BatchResult, reasons_line, row_problems

if TYPE_CHECKING:
    import pandas as pd

    from mlship.serving.model import Column
    from mlship.settings import Settings

ENGINES = ("local", "spark")
MASTER_ENV = "MLSHIP_SPARK_MASTER"
DEFAULT_MASTER = "local[*]"


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
        import pyspark  # noqa: F401
    except ImportError:
        raise InfraError(
            "--engine spark needs pyspark, which is not installed",
            hint="install mlship's spark extra: `pip install 'mlship[spark]'` (or `uv sync --extra spark`)",
        ) from None


def session(master: str) -> Any:
    """A Spark session on `master`; a local one stays on loopback, without the UI, on this Python."""
    import warnings

    from pyspark.sql import SparkSession

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


def input_format(location: str) -> str:
    """parquet or csv, from the input's suffix, or from the files of a local folder."""
    name = location.rstrip("/").lower()
    for fmt, suffix in (("parquet", ".parquet"), ("csv", ".csv")):
        if name.endswith(suffix):
            return fmt
    path = Path(location)
    if "://" not in location and path.is_dir():
        suffixes = {p.suffix.lower() for p in path.iterdir() if p.is_file() and not p.name.startswith(("_", "."))}
        if suffixes == {".csv"}:
            return "csv"
        if suffixes == {".parquet"}:
            return "parquet"
    raise ConfigError(
        f"cannot tell the format of {location}",
        hint="name .parquet or .csv files, or a folder holding only one of the two",
    )


def predict_batch_spark(
    settings: Settings,
    model_ref: str,
    input_location: str,
    output_location: str,
    bad_rows: str = "refuse",
    master: str | None = None,
    spark: Any = None,
) -> BatchResult:
    """Score ``input_location`` on Spark into the Parquet dataset ``output_location``.

    `bad_rows` as in the local engine: `refuse` writes nothing and raises PipelineRejected
    naming how many rows failed and why; `flag` scores the rest and adds `input_error`.
    A session passed in is reused and left running; one made here is stopped at the end.
    """
    import tempfile
    import time

    from mlship.registry import Registry, model_input_schema
    from mlship.serving.model import Column

    if bad_rows not in BAD_ROW_POLICIES:
        raise ConfigError(f"unknown bad-row policy {bad_rows!r}", hint=f"use one of: {', '.join(BAD_ROW_POLICIES)}")
    started = time.perf_counter()
    fmt = input_format(input_location)
    registry = Registry.from_settings(settings)
    resolved = registry.resolve(model_ref)
    require_spark()
    own = spark is None
    if own:
        spark = session(spark_master(master))
    try:
        with tempfile.TemporaryDirectory(prefix="mlship-spark-") as tmp:
            directory = registry.download(resolved, Path(tmp) / "download")  # verified against the recorded sha256
            columns = [Column(name, kind) for name, kind in model_input_schema(directory)]
            frame = _read(spark, fmt, spark_uri(input_location))
            names = [c.name for c in columns] if columns else settings.features
            missing = [f for f in names if f not in frame.columns]
            if missing:
                raise ConfigError(
                    f"input lacks feature columns {missing}", hint="score a file with the training schema"
                )
            checked = _checked(frame, columns)
            tally = _tally(checked)
            rows = sum(tally.values())
            flagged = {str(reason): n for reason, n in tally.items() if reason is not None}
            if rows == 0:
                raise ConfigError(f"{input_location} has no rows", hint="score a non-empty input")
            if bad_rows == "refuse" and flagged:
                raise PipelineRejected(
                    f"{sum(flagged.values()):,} of {rows:,} rows of {input_location} fail the model's input schema "
                    f"({reasons_line(flagged)}); nothing was scored",
                    hint="fix the data, or pass --bad-rows flag to score the rest and flag these",
                )
            from mlship.registry import spark_proba_udf

            udf = spark_proba_udf(spark, directory, Path(tmp))
            scored = _scored(
                checked, udf, names, settings.id_column, tally, flag=bad_rows == "flag", model_uri=resolved.uri
            )
            _write(scored, output_location)
    finally:
        if own:
            spark.stop()
    return BatchResult(
        output_location,
        rows,
        resolved.uri,
        resolved.name,
        resolved.version,
        time.perf_counter() - started,
        bad_rows=sum(flagged.values()),
        bad_row_reasons=reasons_line(flagged),
    )


def _read(spark: Any, fmt: str, uri: str) -> Any:
    """The input as a DataFrame; a path that names nothing is bad input, a missing s3a driver the environment's."""
    from pyspark.errors import AnalysisException

    reader = spark.read.option("header", "true").option("inferSchema", "true") if fmt == "csv" else spark.read
    try:
        return reader.format(fmt).load(uri)
    except AnalysisException as exc:
        raise ConfigError(
            f"cannot read {uri}: {_first_line(exc)}", hint="pass an existing file, folder or glob"
        ) from None
    except Exception as exc:  # py4j's Java errors: e.g. no S3AFileSystem class on this cluster
        if "S3AFileSystem" in str(exc) or "No FileSystem for scheme" in str(exc):
            raise InfraError(
                f"cannot read {uri}: this Spark has no s3a filesystem (hadoop-aws)",
                hint="run on a cluster with the hadoop-aws jars (see the README: Spark on a cluster)",
            ) from None
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _checked(frame: Any, columns: list[Column]) -> Any:
    """The input plus `input_error`: what `row_problems` says of every row, partition by partition."""
    from pyspark.sql.types import StringType, StructField, StructType

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
    checked: Any,
    udf: Any,
    names: list[str],
    id_column: str | None,
    tally: dict[str | None, int],
    *,
    flag: bool,
    model_uri: str,
) -> Any:
    """[id], prediction, probability[, input_error], in input order, in one narrow pass.

    The model never sees a bad row: under `flag` each one is replaced by the first good row's
    features before the UDF, and its result thrown away (null). No split, union or sort, so
    the output keeps the input's order and the UDF runs once per row.
    """
    from pyspark.sql import functions as sf
    from pyspark.sql.types import DoubleType

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
    keep += [
        sf.when(proba.isNull(), sf.lit(None)).otherwise((proba >= 0.5).cast("long")).cast("long").alias("prediction"),
        proba.alias("probability", metadata={"mlship.model_uri": model_uri}),  # in the files' Spark schema
    ]
    if flag:
        keep.append(sf.col(FLAG_COLUMN))
    return checked.select(*keep)


def _write(scored: Any, output_location: str) -> None:
    """A local folder appears whole (written beside it, then renamed); elsewhere Spark's committer decides."""
    import tempfile

    if "://" in output_location:
        scored.write.mode("overwrite").parquet(spark_uri(output_location))
        return
    dest = Path(output_location).absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        scored.write.mode("overwrite").parquet(str(staging / "data"))
        if dest.is_dir():
            old = staging / "previous"
            dest.rename(old)
        elif dest.exists():
            raise ConfigError(f"{dest} exists and is not a folder", hint="--engine spark writes a Parquet folder")
        (staging / "data").rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
