"""`predict-batch --engine spark`: a real PySpark session in local mode, against the local engine.

One small session (local[2], no UI, loopback) and one model serve the module; the CLI test
starts and stops its own session, as a user's run does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mlship.batch.engine import predict_batch
from mlship.batch.spark import predict_batch_spark, session
from mlship.cli import app
from mlship.commands import register_all
from mlship.data.synth import generate
from mlship.errors import ConfigError, InfraError, PipelineRejected
from mlship.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("spark_tier")]  # skips, or fails when required

LR = "mlship.model.estimators:logistic_regression"


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    s = session("local[2]")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(project root, model URI): a logistic regression trained once in its own project."""
    from mlship.model.train import train

    root = tmp_path_factory.mktemp("spark-project")
    (root / "pyproject.toml").write_text(f'[tool.mlship]\nestimator = "{LR}"\n')
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        generate(1500, seed=3).to_parquet("train.parquet")
        return root, train(Settings(estimator=LR), Path("train.parquet")).model_uri


@pytest.fixture
def in_project(trained: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Work in the trained project (its MLflow store), with the inputs of this test in tmp_path."""
    monkeypatch.chdir(trained[0])
    return trained[1]


def _with_bad_rows(rows: int = 400) -> pd.DataFrame:
    """37 rows /predict would refuse: 30 null and 5 infinite amounts, 2 null countries."""
    data = generate(rows, seed=4)
    data["amount"] = data["amount"].astype("float64")
    data.loc[data.index[:30], "amount"] = np.nan
    data.loc[data.index[30:35], "amount"] = np.inf
    data.loc[data.index[40:42], "country"] = None
    return data


def test_cli_spark_engine_scores_and_reports_like_the_local_engine(
    in_project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same rows flagged, same columns and footer, same probabilities (1e-9), the same report; master from the env."""
    monkeypatch.setenv("MLSHIP_SPARK_MASTER", "local[2]")
    _with_bad_rows().to_parquet(tmp_path / "in.parquet")
    register_all(app)
    runner = CliRunner()
    common = ["predict-batch", "--model", in_project, "--input", str(tmp_path / "in.parquet"), "--bad-rows", "flag"]
    common += ["--reference", "train.parquet"]
    local = runner.invoke(app, [*common, "--output", str(tmp_path / "local.parquet")])
    assert local.exit_code == 0, local.stderr
    on_spark = runner.invoke(
        app, [*common, "--output", str(tmp_path / "spark"), "--engine", "spark", "--report-dir", str(tmp_path / "rep")]
    )
    assert on_spark.exit_code == 0, on_spark.stderr
    assert on_spark.stdout.splitlines()[0] == local.stdout.splitlines()[0]  # the verdict line
    assert on_spark.stdout.splitlines()[0].startswith("FLAGGED: 363 rows scored, 37 flagged as bad input (flag); ")
    assert "scored 400 rows" in on_spark.stdout
    assert "warning: 37 of 400 rows fail the model's input schema" in on_spark.stderr

    expected = pd.read_parquet(tmp_path / "local.parquet")
    got = pd.read_parquet(tmp_path / "spark")
    assert list(got.columns) == list(expected.columns) == ["transaction_id", "prediction", "probability", "input_error"]
    assert list(got["transaction_id"]) == list(expected["transaction_id"])  # input order kept
    assert got["input_error"].tolist() == expected["input_error"].tolist()
    np.testing.assert_allclose(got["probability"], expected["probability"].astype("float64"), rtol=0, atol=1e-9)
    assert got["prediction"].tolist() == expected["prediction"].tolist()
    assert got["probability"].isna().sum() == 37 and got["prediction"].isna().sum() == 37
    part = next((tmp_path / "spark").glob("part-*.parquet"))
    local_meta = pq.read_schema(tmp_path / "local.parquet").metadata
    assert pq.read_schema(part).metadata[b"mlship.model_uri"] == local_meta[b"mlship.model_uri"]
    assert pq.read_schema(part) == pq.read_schema(tmp_path / "local.parquet")  # same types, same footer keys

    want = json.loads((tmp_path / "batch.json").read_text())  # the local engine's, beside its output file
    report = json.loads((tmp_path / "rep" / "batch.json").read_text())
    timing = ("output", "seconds", "scoring_seconds", "rows_per_second")
    assert {k: v for k, v in report.items() if k not in timing} == {k: v for k, v in want.items() if k not in timing}
    assert report["refused_by_reason"] == {
        "amount: missing or not a finite number": 35,
        "country: missing or not a string": 2,
    }
    assert report["drift"]["n_current"] == 363 and report["drift_note"].startswith("A uniform sample of 363 rows")
    assert (tmp_path / "rep" / "batch.md").read_text().startswith("# Batch scoring: FLAGGED: 363 rows scored")
    assert (tmp_path / "rep" / "batch.png").read_bytes()[:4] == b"\x89PNG"
    manifest = json.loads((tmp_path / "spark" / "_SUCCESS").read_text())
    assert manifest["rows"] == 400 and [p["part"] for p in manifest["parts"]] == [part.name]


def test_flag_with_no_good_row_scores_nothing(in_project: str, tmp_path: Path, spark: Any) -> None:
    data = generate(50, seed=6)
    data["country"] = None
    data.to_parquet(tmp_path / "in.parquet")
    r = predict_batch_spark(
        Settings(estimator=LR), in_project, str(tmp_path / "in.parquet"), str(tmp_path / "o"), "flag", spark=spark
    )
    assert (r.rows, r.bad_rows, r.bad_row_reasons) == (50, 50, "country: missing or not a string (50)")
    out = pd.read_parquet(tmp_path / "o")
    assert out["probability"].isna().all() and out["prediction"].isna().all() and len(out) == 50


def test_refuse_says_what_the_local_engine_says_and_writes_nothing(in_project: str, tmp_path: Path, spark: Any) -> None:
    data = tmp_path / "in.parquet"
    _with_bad_rows().to_parquet(data)
    settings = Settings(estimator=LR)
    with pytest.raises(PipelineRejected) as local:
        predict_batch(settings, in_project, data, tmp_path / "local.parquet")
    with pytest.raises(PipelineRejected) as on_spark:
        predict_batch_spark(settings, in_project, str(data), str(tmp_path / "out"), spark=spark)
    assert str(on_spark.value) == str(local.value)
    assert "37 of 400 rows" in str(on_spark.value)
    assert not list((tmp_path / "out").glob("part-*")) and not (tmp_path / "out" / "_SUCCESS").exists()
    report = json.loads((tmp_path / "out" / "_report" / "batch.json").read_text())
    assert report["verdict"].startswith("REFUSED: 37 rows in 1 part(s)") and report["rows"]["scored"] == 0
    assert spark.sparkContext._jsc is not None  # a session passed in is left running


def test_a_folder_of_csv_files_is_one_dataset(in_project: str, tmp_path: Path, spark: Any) -> None:
    """One part per input file; the part of an input that is gone is removed, no staging is left behind."""
    from mlship.registry import Registry

    settings = Settings(estimator=LR)
    parts = [generate(300, seed=11), generate(200, seed=12)]
    folder = tmp_path / "in"
    folder.mkdir()
    for i, part in enumerate(parts):
        part.to_csv(folder / f"part-{i}.csv", index=False)
    out = tmp_path / "scored"
    (out).mkdir()
    (out / "part-gone-0123abcd.parquet").write_bytes(b"from an older run, of an input that is gone")
    result = predict_batch_spark(settings, in_project, str(folder), str(out), spark=spark)
    assert result.rows == 500 and result.bad_rows == 0 and result.output == str(out) and result.parts == 2
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("part-")) == ["_SUCCESS", "_report"]
    assert len(list(out.glob("part-*.parquet"))) == 2  # the gone input's part was removed; no _spark-* staging
    got = pd.read_parquet(out).set_index("transaction_id")
    data = pd.concat(parts).set_index("transaction_id")
    assert sorted(got.index) == sorted(data.index)
    model = Registry.from_settings(settings).load_model(in_project)
    expected = model.predict_proba(data[settings.features])[:, 1]
    np.testing.assert_allclose(got.loc[data.index, "probability"], expected, rtol=0, atol=1e-9)


def test_bad_inputs_are_one_line_errors(in_project: str, tmp_path: Path, spark: Any) -> None:
    settings = Settings(estimator=LR)
    with pytest.raises(ConfigError, match=r"cannot read .*nope\.parquet"):
        predict_batch_spark(settings, in_project, str(tmp_path / "nope.parquet"), str(tmp_path / "o"), spark=spark)
    generate(10, seed=1).drop(columns=["amount"]).to_parquet(tmp_path / "narrow.parquet")
    with pytest.raises(ConfigError, match=r"narrow\.parquet lacks the model's feature column\(s\) amount \(it has "):
        predict_batch_spark(settings, in_project, str(tmp_path / "narrow.parquet"), str(tmp_path / "o"), spark=spark)
    (tmp_path / "semi.csv").write_text("transaction_id;amount\n1;2.5\n")  # refused by the local engine's CSV check
    with pytest.raises(ConfigError, match=r"semi\.csv looks .*-delimited"):
        predict_batch_spark(settings, in_project, str(tmp_path / "semi.csv"), str(tmp_path / "o"), spark=spark)
    generate(10, seed=1).iloc[:0].to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(ConfigError, match="has no rows"):
        predict_batch_spark(settings, in_project, str(tmp_path / "empty.parquet"), str(tmp_path / "o"), spark=spark)
    (tmp_path / "o.txt").write_text("x")
    generate(10, seed=1).to_parquet(tmp_path / "ok.parquet")
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        predict_batch_spark(settings, in_project, str(tmp_path / "ok.parquet"), str(tmp_path / "o.txt"), spark=spark)
    with pytest.raises(ConfigError, match="unknown bad-row policy"):
        predict_batch_spark(settings, in_project, "x.parquet", "o", bad_rows="ignore", spark=spark)
    assert not list((tmp_path / "o").glob("part-*")) and not (tmp_path / "o" / "_SUCCESS").exists()


def test_s3_without_hadoop_aws_names_the_fix(in_project: str, tmp_path: Path, spark: Any) -> None:
    """pyspark ships no s3a filesystem: an s3:// input on local mode is an environment error (exit 3)."""
    with pytest.raises(InfraError, match="no s3a filesystem") as err:
        predict_batch_spark(
            Settings(estimator=LR), in_project, "s3://bucket/in.parquet", str(tmp_path / "o"), spark=spark
        )
    assert err.value.exit_code == 3 and "hadoop-aws" in str(err.value)


def _run_cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from mlship.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MLSHIP_SPARK_MASTER": "local[2]", **(env or {})},
        check=False,
    )


def _parts(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("part-*.parquet"))}


def test_a_spark_run_killed_after_part_two_resumes_and_ends_identical(
    in_project: str, tmp_path: Path, spark: Any
) -> None:
    """SIGKILL after part 2 of 4 (MLSHIP_FAULT_AT); the re-run skips 2 parts and ends byte-identical to a clean run.

    As the local engine's test (test_batch_dataset.py), with two processes only: Spark starts slowly.
    """
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    generate(300, seed=11).to_csv(folder / "a.csv", index=False)  # CSV and Parquet inputs in one folder
    generate(500, seed=12).to_parquet(folder / "b.parquet")
    generate(200, seed=13).to_csv(folder / "sub" / "c.csv", index=False)
    generate(250, seed=15).to_parquet(folder / "d.parquet")
    args = ["predict-batch", "--engine", "spark", "--model", in_project, "--input", str(folder)]
    scored = tmp_path / "scored"

    killed = _run_cli([*args, "--output", str(scored)], env={"MLSHIP_FAULT_AT": "batch-part-2"})
    assert killed.returncode == -9, killed.stderr
    assert len(_parts(scored)) == 2 and not (scored / "_SUCCESS").exists()

    resumed = _run_cli([*args, "--output", str(scored), "--report-dir", str(tmp_path / "rep")])
    assert resumed.returncode == 0, resumed.stderr
    assert "skipped 2 of 4 parts already written" in resumed.stderr
    assert resumed.stderr.count("skipped: already written from this input") == 2
    assert sorted(p.name for p in scored.iterdir() if not p.name.startswith("part-")) == ["_SUCCESS"]  # no staging
    report = json.loads((tmp_path / "rep" / "batch.json").read_text())
    assert report["parts"]["skipped"] == 2 and report["rows"]["total"] == 1250  # skipped parts still counted
    assert report["rows_this_run"] == 450 and report["drift"] is None  # train.parquet is not the default data

    settings = Settings(estimator=LR)
    clean = predict_batch_spark(settings, in_project, str(folder), str(tmp_path / "clean"), spark=spark)
    assert clean.parts == 4 and clean.parts_skipped == 0
    assert _parts(scored) == _parts(tmp_path / "clean")
    assert (scored / "_SUCCESS").read_bytes() == (tmp_path / "clean" / "_SUCCESS").read_bytes()
    local = predict_batch(settings, in_project, folder, scored)  # either engine resumes the other's dataset
    assert local.parts_skipped == 4

    os.utime(folder / "a.csv", ns=(1, 1))  # a changed input is scored again; overwrite redoes all
    again = predict_batch_spark(settings, in_project, str(folder), str(scored), spark=spark)
    assert again.parts_skipped == 3
    redo = predict_batch_spark(settings, in_project, str(folder), str(scored), spark=spark, overwrite=True)
    assert redo.parts_skipped == 0 and len(_parts(scored)) == 4
