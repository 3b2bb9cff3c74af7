"""predict-batch over folders, globs and s3:// prefixes: one atomic part per input, a manifest, a report, resumption.

The object store is a real S3-compatible server (moto's server mode) on 127.0.0.1, driven
through the same pyarrow S3 client users get; nothing of the client is mocked.
"""

from __future__ import annotations

import json
import os
import socket
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

from mlship.cli import app
from mlship.commands import register_all
from mlship.data.synth import generate
from mlship.registry import load_model_dir
from mlship.settings import Settings
from tests.conftest import make_project

register_all(app)
runner = CliRunner()
BUCKET = "mlship-batch"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(exported model dir, its training data): one logistic regression, trained once for the module."""
    root = make_project(
        tmp_path_factory.mktemp("batchds") / "p", rows=1500, estimator="mlship.model.estimators:logistic_regression"
    )
    cwd = Path.cwd()
    os.chdir(root)
    try:
        result = runner.invoke(app, ["train", "--out", "out"])
        assert result.exit_code == 0, result.stderr
    finally:
        os.chdir(cwd)
    return root / "out" / "model", root / "data" / "transactions.parquet"


def write_inputs(folder: Path) -> dict[str, pd.DataFrame]:
    """Three inputs in two formats, one in a subfolder; plus files that are not data."""
    frames = {"a.csv": generate(300, seed=11), "b.parquet": generate(500, seed=12), "sub/c.csv": generate(200, seed=13)}
    for name, frame in frames.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False) if name.endswith(".csv") else frame.to_parquet(path)
    (folder / "README.txt").write_text("not data")
    (folder / "_SUCCESS").write_text("{}")
    return frames


def expected_probability(model_dir: Path, frame: pd.DataFrame) -> np.ndarray:
    est = load_model_dir(model_dir)
    return np.asarray(est.predict_proba(frame[Settings().features])[:, 1])


def part_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("part-*.parquet"))}


def test_a_folder_becomes_one_part_per_input_with_a_manifest_and_a_report(
    project: Path, model: tuple[Path, Path]
) -> None:
    model_dir, train_data = model
    frames = write_inputs(project / "in")
    r = runner.invoke(
        app,
        ["predict-batch", "--model", str(model_dir), "--input", "in", "--output", "scored", "--chunk-size", "128",
         "--reference", str(train_data)],
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith("OK: 1,000 rows scored; no input drift")
    parts = part_files(project / "scored")
    assert len(parts) == 3 and all(name.startswith(("part-a-", "part-b-", "part-sub-c-")) for name in parts)
    manifest = json.loads((project / "scored" / "_SUCCESS").read_text())
    assert manifest["rows"] == 1000 and [p["rows"] for p in manifest["parts"]] == [300, 500, 200]
    for entry, frame in zip(manifest["parts"], frames.values(), strict=True):
        out = pd.read_parquet(project / "scored" / entry["part"])
        np.testing.assert_allclose(out["probability"], expected_probability(model_dir, frame))
        assert list(out["transaction_id"]) == list(frame["transaction_id"])
    assert len(pd.read_parquet(project / "scored")) == 1000  # readers skip _SUCCESS and _report/
    assert not [p for p in (project / "scored").iterdir() if p.name.endswith(".tmp")]

    report = json.loads((project / "scored" / "_report" / "batch.json").read_text())
    assert report["rows"] == {"total": 1000, "scored": 1000, "refused": 0}
    assert sum(report["predicted_classes"].values()) == 1000
    assert sum(report["scores"]["histogram"]["counts"]) == 1000
    everything = np.concatenate([expected_probability(model_dir, f) for f in frames.values()])
    # "Exact to 0.001" (docs/monitoring.md): the estimate and the sample quantile it reads (the inverted CDF, the
    # smallest score with at least half the rows at or below it) share one of the 1000 bins.
    median = np.quantile(everything, 0.5, method="inverted_cdf")
    assert report["scores"]["quantiles"]["p50"] == pytest.approx(median, abs=0.001)
    assert report["drift"]["n_current"] == 1000 and report["drift"]["dataset_drift"] is False
    assert report["rows_per_second"] > 0
    md = (project / "scored" / "_report" / "batch.md").read_text()
    assert md.startswith("# Batch scoring: OK: 1,000 rows scored") and "batch.png" in md
    assert (project / "scored" / "_report" / "batch.png").read_bytes()[:4] == b"\x89PNG"

    inside = runner.invoke(  # the output inside the input folder: its parts are never read as input
        app, ["predict-batch", "--model", str(model_dir), "--input", "in", "--output", "in/scored"]
    )
    assert inside.exit_code == 0, inside.stderr
    again = runner.invoke(app, ["predict-batch", "--model", str(model_dir), "--input", "in", "--output", "in/scored"])
    assert again.exit_code == 0 and "skipped 3 of 3 parts" in again.stderr

    glob = runner.invoke(
        app, ["predict-batch", "--model", str(model_dir), "--input", "in/*.csv", "--output", "csv-only"]
    )
    assert glob.exit_code == 0, glob.stderr
    assert sorted(part_files(project / "csv-only")) == sorted(n for n in parts if not n.startswith("part-b-"))


def test_refused_parts_are_not_written_and_the_dataset_has_no_manifest(project: Path, model: tuple[Path, Path]) -> None:
    model_dir, _ = model
    write_inputs(project / "in")
    bad = generate(100, seed=14)
    bad["amount"] = bad["amount"].astype("float64").where(bad.index >= 7)
    bad.to_parquet(project / "in" / "bad.parquet")
    args = ["predict-batch", "--model", str(model_dir), "--input", "in", "--output", "scored", "--report-dir", "rep"]
    r = runner.invoke(app, args)
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1] == (
        "mlship: error: 7 of 1,100 rows in 1 of 4 parts fail the model's input schema "
        "(amount: missing or not a finite number (7)); those parts were not written, the others were "
        "(fix the data, or pass --bad-rows flag to score the rest and flag these)"
    )
    assert len(part_files(project / "scored")) == 3 and not (project / "scored" / "_SUCCESS").exists()
    report = json.loads((project / "rep" / "batch.json").read_text())
    assert report["verdict"].startswith("REFUSED: 7 rows in 1 part(s)")
    assert report["parts"]["refused"] == ["in/bad.parquet"] and report["rows"]["scored"] == 1000
    assert "[4/4] in/sub/c.csv -> part-sub-c-" in r.stderr  # one line per part in a log
    assert report["drift"] is None and report["drift_note"].startswith("Not computed: no reference data at ")

    flagged = runner.invoke(app, [*args, "--bad-rows", "flag"])
    assert flagged.exit_code == 0, flagged.stderr
    report = json.loads((project / "rep" / "batch.json").read_text())
    assert report["rows"] == {"total": 1100, "scored": 1093, "refused": 7}
    assert report["refused_by_reason"] == {"amount: missing or not a finite number": 7}
    assert (project / "scored" / "_SUCCESS").exists() and len(part_files(project / "scored")) == 4
    refused_again = runner.invoke(app, args)  # the flagged part of the bad input must not outlive this refusal
    assert refused_again.exit_code == 1 and len(part_files(project / "scored")) == 3

    (project / "in" / "bad.parquet").unlink()
    (project / "in" / "empty.csv").write_text(",".join(Settings().features) + "\n")  # a header, no rows
    with_empty = runner.invoke(app, [*args, "--overwrite"])
    assert with_empty.exit_code == 0, with_empty.stderr
    assert len(part_files(project / "scored")) == 3 and "in/empty.csv -> part-empty-" in with_empty.stderr
    assert "no rows: no part" in with_empty.stderr
    manifest = json.loads((project / "scored" / "_SUCCESS").read_text())
    assert [p["rows"] for p in manifest["parts"]] == [300, 500, 200]
    (project / "in" / "a.csv").unlink()
    gone = runner.invoke(app, args)  # the part of an input that is gone goes too: the folder is the manifest
    assert gone.exit_code == 0 and "removed part-a-" in gone.stderr and len(part_files(project / "scored")) == 2
    nothing = runner.invoke(app, [*args[:4], "in/empty.csv", "--output", "e.parquet"])
    assert nothing.exit_code == 2 and "in/empty.csv has no rows" in nothing.stderr

    many = runner.invoke(app, ["predict-batch", "--model", str(model_dir), "--input", "in", "--output", "one.parquet"])
    assert many.exit_code == 2 and "is one file but in holds 3 input files" in many.stderr


def run_cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from mlship.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.mark.slow
def test_a_run_killed_after_part_two_resumes_and_ends_identical(project: Path, model: tuple[Path, Path]) -> None:
    """SIGKILL after part 2 of 4 (MLSHIP_FAULT_AT); the re-run skips 2 parts and ends byte-identical to a clean run."""
    model_dir, _ = model
    write_inputs(project / "in")
    generate(250, seed=15).to_parquet(project / "in" / "d.parquet")
    args = ["predict-batch", "--model", str(model_dir), "--input", "in", "--chunk-size", "100"]

    killed = run_cli([*args, "--output", "scored"], env={"MLSHIP_FAULT_AT": "batch-part-2"})
    assert killed.returncode == -9, killed.stderr
    assert len(part_files(project / "scored")) == 2 and not (project / "scored" / "_SUCCESS").exists()

    resumed = run_cli([*args, "--output", "scored"])
    assert resumed.returncode == 0, resumed.stderr
    assert "skipped 2 of 4 parts already written" in resumed.stderr
    assert resumed.stderr.count("skipped: already written from this input") == 2

    clean = run_cli([*args, "--output", "clean"])
    assert clean.returncode == 0, clean.stderr
    assert part_files(project / "scored") == part_files(project / "clean")
    assert (project / "scored" / "_SUCCESS").read_bytes() == (project / "clean" / "_SUCCESS").read_bytes()
    report = json.loads((project / "scored" / "_report" / "batch.json").read_text())
    assert report["parts"]["skipped"] == 2 and report["rows"]["total"] == 1250  # skipped parts still counted

    os.utime(project / "in" / "a.csv", ns=(1, 1))  # a changed input is scored again; --overwrite redoes all
    again = run_cli([*args, "--output", "scored"])
    assert "skipped 3 of 4 parts" in again.stderr
    redo = run_cli([*args, "--output", "scored", "--overwrite"])
    assert redo.returncode == 0 and "skipped" not in redo.stderr


def edit_keeping_size_and_mtime(path: Path, row: int) -> float:
    """Change one digit of `amount` in data row `row` (negative: from the end), then restore the mtime.

    What `touch -r`, `rsync --times` or a restore from backup leaves: same size, same mtime,
    other bytes. Returns the new amount.
    """
    before = path.stat()
    lines = path.read_text().splitlines(keepends=True)
    index = row if row >= 0 else len(lines) + row
    fields = lines[index].split(",")
    fields[1] = ("1" if fields[1][0] != "1" else "2") + fields[1][1:]  # same length, another value
    lines[index] = ",".join(fields)
    path.write_text("".join(lines))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    return float(fields[1])


def test_an_edit_that_keeps_size_and_mtime_is_scored_again(project: Path, model: tuple[Path, Path]) -> None:
    """Resume keys on content too (first and last MiB locally): size + mtime alone skipped such an edit."""
    model_dir, _ = model
    (project / "in").mkdir()
    generate(300, seed=21).to_csv(project / "in" / "small.csv", index=False)
    generate(40_000, seed=22).to_csv(project / "in" / "big.csv", index=False)  # > 2 MiB: its two ends are hashed
    assert (project / "in" / "big.csv").stat().st_size > 2 << 20
    args = ["predict-batch", "--model", str(model_dir), "--input", "in", "--output", "scored", "--chunk-size", "5000"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.stderr
    assert "skipped 2 of 2 parts" in runner.invoke(app, args).stderr  # unchanged inputs are skipped

    small_amount = edit_keeping_size_and_mtime(project / "in" / "small.csv", 5)
    big_amount = edit_keeping_size_and_mtime(project / "in" / "big.csv", -1)
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.stderr
    assert "skipped" not in again.stderr  # both were scored again, from their new bytes
    for name, row, amount in (("small", 4, small_amount), ("big", -1, big_amount)):
        frame = pd.read_csv(project / "in" / f"{name}.csv")
        assert frame["amount"].iloc[row] == amount
        part = next((project / "scored").glob(f"part-{name}-*.parquet"))
        np.testing.assert_allclose(
            pd.read_parquet(part)["probability"].iloc[row], expected_probability(model_dir, frame)[row]
        )
    manifest = json.loads((project / "scored" / "_SUCCESS").read_text())
    assert all(len(p["ends_sha256"]) == 64 for p in manifest["parts"])


# --- a real S3-compatible server on 127.0.0.1 --------------------------------------------------


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """moto's S3 server on a free loopback port, the AWS env pointing at it, and a boto3 client to inspect it."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for name in list(os.environ):
            if name.startswith("AWS_"):
                monkeypatch.delenv(name)
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws of the developer
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "mlship-test")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "mlship-test-secret")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://{host}:{port}")
        client = boto3.client("s3", endpoint_url=f"http://{host}:{port}")
        client.create_bucket(Bucket=BUCKET)
        yield client
    finally:
        server.stop()


def keys(client: Any, prefix: str) -> list[str]:
    """The objects under `prefix`, without the empty `folder/` markers pyarrow leaves when a folder empties."""
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []) if not o["Key"].endswith("/"))


def test_s3_prefix_in_s3_prefix_out_and_a_rerun_skips(project: Path, model: tuple[Path, Path], s3: Any) -> None:
    model_dir, train_data = model
    frames = write_inputs(project / "in")
    for path in sorted((project / "in").rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), BUCKET, f"landing/2026-12-01/{path.relative_to(project / 'in')}")
    args = ["predict-batch", "--model", str(model_dir), "--input", f"s3://{BUCKET}/landing/2026-12-01",
            "--output", f"s3://{BUCKET}/scored/2026-12-01", "--reference", str(train_data)]  # fmt: skip
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.stderr
    written = keys(s3, "scored/")
    parts = [k for k in written if k.rsplit("/", 1)[1].startswith("part-")]
    assert len(parts) == 3 and not [k for k in written if "_tmp" in k]
    assert "scored/2026-12-01/_SUCCESS" in written and "scored/2026-12-01/_report/batch.md" in written
    local = project / "download"
    local.mkdir()
    for k in parts:
        s3.download_file(BUCKET, k, str(local / k.rsplit("/", 1)[1]))
    scored = {p.name.split("-")[1]: pd.read_parquet(p) for p in local.iterdir()}
    np.testing.assert_allclose(scored["b"]["probability"], expected_probability(model_dir, frames["b.parquet"]))
    assert pq.read_schema(next(local.iterdir())).metadata[b"mlship.model_uri"]
    md = s3.get_object(Bucket=BUCKET, Key="scored/2026-12-01/_report/batch.md")["Body"].read().decode()
    assert md.startswith("# Batch scoring: OK: 1,000 rows scored")

    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "skipped 3 of 3 parts" in again.stderr
    single = runner.invoke(
        app,
        ["predict-batch", "--model", str(model_dir), "--input", f"s3://{BUCKET}/landing/2026-12-01/a.csv",
         "--output", f"s3://{BUCKET}/one/a.parquet", "--report-dir", "rep"],
    )  # fmt: skip
    assert single.exit_code == 0, single.stderr
    assert keys(s3, "one/") == ["one/a.parquet"] and (project / "rep" / "batch.json").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bad_uris_credentials_and_endpoints_are_one_line_errors(
    project: Path, model: tuple[Path, Path], s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import moto.settings

    model_dir, _ = model
    (project / "pyproject.toml").write_text("[tool.mlship]\n")  # no defaults note: stderr is the error alone
    s3.put_object(Bucket=BUCKET, Key="in/a.csv", Body=generate(50, seed=1).to_csv(index=False).encode())
    base = ["predict-batch", "--model", str(model_dir)]
    cases = [
        (["--input", "s3://", "--output", "o"], 2, "bad S3 URI 's3://'"),
        (["--input", "gs://b/x.csv", "--output", "o"], 2, "unsupported URI scheme in 'gs://b/x.csv'"),
        (["--input", f"s3://{BUCKET}/nothing-here", "--output", "o"], 2, "no .csv/.parquet files there"),
        (["--input", f"s3://{BUCKET}/in", "--output", "ftp://x/o"], 2, "unsupported URI scheme"),
    ]
    for args, code, text in cases:
        r = runner.invoke(app, [*base, *args])
        assert r.exit_code == code and text in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("mlship: error: ")

    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # the server now checks credentials
    denied = runner.invoke(app, [*base, "--input", f"s3://{BUCKET}/in", "--output", "o"])
    assert denied.exit_code == 3 and "access denied" in denied.stderr and "AWS_ACCESS_KEY_ID" in denied.stderr
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", float("inf"))

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")
    down = runner.invoke(app, [*base, "--input", f"s3://{BUCKET}/in", "--output", "o"])
    assert down.exit_code == 3 and "the object store is unreachable" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1


KILLED_UPLOAD = """
import os, signal
from mlship.batch.io import Dataset
with Dataset("s3://mlship-batch/scored/2026-12-02").staged("part-big.parquet") as stream:
    stream.write(b"x" * (12 << 20))  # over pyarrow's part size: a multipart upload is open
    stream.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # killed mid-part, as a node loss or OOM kill leaves it
"""


def test_an_upload_left_open_by_a_killed_run_is_aborted_and_s3_resume_keys_on_the_etag(
    project: Path, model: tuple[Path, Path], s3: Any
) -> None:
    model_dir, train_data = model
    generate(200, seed=31).to_csv(project / "a.csv", index=False)
    s3.upload_file(str(project / "a.csv"), BUCKET, "landing/2026-12-02/a.csv")
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_UPLOAD], capture_output=True, text=True, timeout=120, check=False
    )
    assert killed.returncode == -9, killed.stderr
    foreign = s3.create_multipart_upload(Bucket=BUCKET, Key="scored/2026-12-02/someone-elses.bin")["UploadId"]
    open_uploads = s3.list_multipart_uploads(Bucket=BUCKET, Prefix="scored/").get("Uploads", [])
    staged = [u["Key"] for u in open_uploads if "/_tmp-" in u["Key"]]
    assert len(staged) == 1 and len(open_uploads) == 2  # what the killed run left, and another writer's

    args = ["predict-batch", "--model", str(model_dir), "--input", f"s3://{BUCKET}/landing/2026-12-02",
            "--output", f"s3://{BUCKET}/scored/2026-12-02", "--reference", str(train_data)]  # fmt: skip
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.stderr
    assert f"aborted the unfinished upload of s3://{BUCKET}/{staged[0]}: a killed run left it" in r.stderr
    left = s3.list_multipart_uploads(Bucket=BUCKET, Prefix="scored/").get("Uploads", [])
    assert [(u["Key"], u["UploadId"]) for u in left] == [("scored/2026-12-02/someone-elses.bin", foreign)]

    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key="scored/2026-12-02/_SUCCESS")["Body"].read())
    etag = s3.head_object(Bucket=BUCKET, Key="landing/2026-12-02/a.csv")["ETag"].strip('"')
    assert [p["etag"] for p in manifest["parts"]] == [etag]  # the store's own content key, one HEAD
    assert "skipped 1 of 1 parts" in runner.invoke(app, args).stderr
