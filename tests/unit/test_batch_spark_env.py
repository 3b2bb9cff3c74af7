"""The Spark engine's environment: master choice, s3a settings, formats, and what is missing (exit 3)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlship.batch.io import Dataset
from mlship.batch.spark import (
    DEFAULT_MASTER,
    _drop_stale_staging,
    _s3a_conf,
    require_spark,
    spark_master,
    spark_uri,
)
from mlship.cli import app
from mlship.commands import register_all
from mlship.errors import ConfigError, InfraError
from tests.conftest import tier_unavailable


def test_master_comes_from_the_option_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLSHIP_SPARK_MASTER", raising=False)
    assert spark_master(None) == DEFAULT_MASTER == "local[*]"
    monkeypatch.setenv("MLSHIP_SPARK_MASTER", "spark://head:7077")
    assert spark_master(None) == "spark://head:7077"
    assert spark_master("local[2]") == "local[2]"


def test_aws_variables_become_s3a_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    assert _s3a_conf() == {}
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    assert _s3a_conf() == {
        "spark.hadoop.fs.s3a.access.key": "AKIDEXAMPLE",
        "spark.hadoop.fs.s3a.secret.key": "s3cr3t",
        "spark.hadoop.fs.s3a.endpoint": "http://127.0.0.1:9000",
        "spark.hadoop.fs.s3a.path.style.access": "true",
    }
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9100")
    assert _s3a_conf()["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9100"


def test_uris(tmp_path: Path) -> None:
    assert spark_uri("s3://bucket/nightly/") == "s3a://bucket/nightly/"
    assert spark_uri("hdfs://nn/x.parquet") == "hdfs://nn/x.parquet"
    assert spark_uri("in.parquet") == str(Path("in.parquet").absolute())


def test_a_killed_runs_spark_staging_is_dropped_and_nothing_else(tmp_path: Path) -> None:
    """Spark writes each input into `_spark-<32 hex>-<part>/` inside the output; a run killed mid-job leaves it."""
    out = tmp_path / "scored"
    staging = out / f"_spark-{'0a' * 16}-part-a-12345678.parquet"
    staging.mkdir(parents=True)
    (staging / "part-00000-x.snappy.parquet").write_bytes(b"half")
    for kept in ("_report", f"_spark-{'0a' * 15}-short", "_spark-notes"):
        (out / kept).mkdir()
    (out / "part-a-12345678.parquet").write_bytes(b"a finished part")
    _drop_stale_staging(Dataset(str(out)))
    assert sorted(p.name for p in out.iterdir()) == [
        "_report",
        f"_spark-{'0a' * 15}-short",
        "_spark-notes",
        "part-a-12345678.parquet",
    ]


def test_missing_java_is_an_environment_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(InfraError, match="needs Java") as err:
        require_spark()
    assert err.value.exit_code == 3 and "openjdk-17-jre-headless" in (err.value.hint or "")
    java = tmp_path / "jdk" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text("")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    monkeypatch.setitem(sys.modules, "pyspark", None)
    with pytest.raises(InfraError, match="needs pyspark"):
        require_spark()  # Java was found through JAVA_HOME: the next thing missing is pyspark


def test_missing_pyspark_is_an_environment_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    java = tmp_path / "java"
    java.write_text("")
    java.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "pyspark", None)  # what an install without the extra looks like
    with pytest.raises(InfraError, match="needs pyspark") as err:
        require_spark()
    assert "mlship[spark]" in (err.value.hint or "")


def test_cli_engine_options_are_checked_before_anything_runs(project: Path) -> None:
    register_all(app)
    runner = CliRunner()
    base = ["predict-batch", "--model", "m", "--input", "in.parquet", "--output", "out"]
    bad = runner.invoke(app, [*base, "--engine", "dask"])
    assert bad.exit_code == 2 and "expected local or spark" in bad.stderr
    stray = runner.invoke(app, [*base, "--spark-master", "local[2]"])
    assert stray.exit_code == 2 and "--spark-master needs --engine spark" in stray.stderr
    report_options = ["--overwrite", "--report-dir", "rep", "--reference", "ref.parquet"]
    spark = runner.invoke(app, [*base, "--engine", "spark", *report_options])  # the local engine's options too
    assert spark.exit_code == 2 and "cannot read in.parquet: no such file" in spark.stderr, spark.stderr


def test_a_model_without_a_pyfunc_flavor_cannot_be_a_spark_udf(tmp_path: Path) -> None:
    """The UDF is MLflow's pyfunc one: a model directory with no python_function flavor is bad input."""
    if importlib.util.find_spec("pyspark") is None:
        tier_unavailable("spark", "the spark extra is not installed (`uv sync --extra spark`, as .ci/run does)")
    from mlship.registry import spark_proba_udf

    model = tmp_path / "model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors:\n  sklearn:\n    pickled_model: model.pkl\n")
    with pytest.raises(ConfigError, match="has no python_function flavor"):
        spark_proba_udf(object(), model, tmp_path / "work")
