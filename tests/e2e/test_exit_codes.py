"""The exit-code contract, table-driven: bad input × command → the code the README promises, and one line.

0 done · 1 the pipeline said no · 2 usage/configuration · 3 environment. Every error is one
`mlship: error: …` line (a traceback only under --debug, which never changes the code), and a
credential in a URI never reaches it.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mlship.cli import app
from mlship.commands import register_all
from mlship.data.io import MAX_HEADER_BYTES, MAX_LINE_BYTES, read_table
from tests.conftest import make_project

register_all(app)
runner = CliRunner()

UNREACHABLE = "http://alice:s3cret-pw@127.0.0.1:9/?token=tok-123"
"""A tracking server that refuses connections, with credentials in its URI (user info and a token)."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A project with one trained (logistic regression) run: (root, run id)."""
    import os

    root = make_project(
        tmp_path_factory.mktemp("codes") / "p", rows=1200, estimator="mlship.model.estimators:logistic_regression"
    )
    cwd = Path.cwd()
    os.chdir(root)
    try:
        result = runner.invoke(app, ["train", "--out", "out"])
        assert result.exit_code == 0, result.stderr
        run_id = next(line.split()[-1] for line in result.stdout.splitlines() if line.startswith("run id:"))
    finally:
        os.chdir(cwd)
    df = read_table(root / "data" / "transactions.parquet")
    df.assign(amount=np.nan).to_parquet(root / "null-amount.parquet")
    df.drop(columns=["num_tx_24h"]).to_parquet(root / "no-num-tx.parquet")
    whole = (root / "data" / "transactions.parquet").read_bytes()
    (root / "cut.parquet").write_bytes(whole[: len(whole) // 2])
    df.assign(amount=df["amount"].where(df.index % 10 != 0)).to_parquet(root / "some-null.parquet")
    (root / "trivy.json").write_text("not json")
    df.drop(columns=["amount"]).to_csv(root / "no-amount.csv", index=False)
    df.to_csv(root / "semicolon.csv", index=False, sep=";")
    text = df.to_csv(index=False)
    (root / "cut.csv").write_text(text[: len(text) // 2 + 7])  # cut mid-row, as an interrupted copy leaves it
    (root / "one-line.csv").write_text("x" * (MAX_HEADER_BYTES * 4))  # one line, no newline: the header
    header, body = text.split("\n", 1)
    (root / "long-row.csv").write_text(f"{header}\n{'9' * (MAX_LINE_BYTES + 1)}\n{body}")
    (root / "in").mkdir()
    (root / "in" / "a.csv").write_text(text)
    (root / "link").symlink_to("in", target_is_directory=True)  # --output link writes into the input folder
    return root, run_id


def tamper(root: Path) -> None:
    """A copy of the exported model whose pickle was swapped after it was logged."""
    import shutil

    shutil.copytree(root / "out" / "model", root / "tampered", dirs_exist_ok=True)
    (root / "tampered" / "model.pkl").write_bytes(pickle.dumps({"not": "the model"}))


def bare(root: Path) -> None:
    """A copy of the exported model without its mlship-sha256.txt: nothing records what it should hold."""
    import shutil

    shutil.copytree(root / "out" / "model", root / "bare", dirs_exist_ok=True)
    (root / "bare" / "mlship-sha256.txt").unlink()


def bad_config(root: Path) -> None:
    (root / "bad.toml").write_text("seeed = 1\n")


def nothing(_root: Path) -> None:
    return None


CASES: list[tuple[str, list[str], Callable[[Path], None], int, str]] = [
    # id, argv ({run} = the trained run id), setup, exit code, the one line (regex, after "mlship: error: ")
    (
        "train all-null column",
        ["train", "--data", "null-amount.parquet"],
        nothing,
        2,
        r"null-amount\.parquet: column\(s\) amount hold no values \(all null\) \(fill them",
    ),
    ("train missing file", ["train", "--data", "nope.parquet"], nothing, 2, r"data file nope\.parquet does not exist"),
    ("unknown setting", ["--config", "bad.toml", "train"], bad_config, 2, r".*bad\.toml: unknown key 'seeed'"),
    ("validate absent configured column", ["validate", "--data", "no-num-tx.parquet"], nothing, 1, None),
    ("validate unreadable", ["validate", "--data", "cut.parquet"], nothing, 2, r"cannot read cut\.parquet as parquet"),
    (
        "predict-batch truncated parquet",
        ["predict-batch", "--model", "out/model", "--input", "cut.parquet", "--output", "o.parquet"],
        nothing,
        2,
        r"cannot read cut\.parquet: .* \(is the file complete and of that format\?\)",
    ),
    (
        "validate one-line file over the header cap",
        ["validate", "--data", "one-line.csv"],
        nothing,
        2,
        r"one-line\.csv: the CSV header is longer than 256 KiB \(the cap on a header line\)",
    ),
    (
        "predict-batch one-line file over the header cap",
        ["predict-batch", "--model", "out/model", "--input", "one-line.csv", "--output", "o.parquet"],
        nothing,
        2,
        r"one-line\.csv: the CSV header is longer than 256 KiB \(the cap on a header line\)",
    ),
    (
        "validate a line over the line cap",
        ["validate", "--data", "long-row.csv"],
        nothing,
        2,
        r"long-row\.csv: line 2 is longer than 1 MiB \(the cap on a CSV line\)",
    ),
    (
        "predict-batch a line over the line cap",
        ["predict-batch", "--model", "out/model", "--input", "long-row.csv", "--output", "o.parquet"],
        nothing,
        2,
        r"long-row\.csv: line 2 is longer than 1 MiB \(the cap on a CSV line\)",
    ),
    (
        "predict-batch missing feature column",
        ["predict-batch", "--model", "out/model", "--input", "no-amount.csv", "--output", "o.parquet"],
        nothing,
        2,
        r"no-amount\.csv lacks the model's feature column\(s\) amount \(it has 9: transaction_id, hour, ",
    ),
    (
        "predict-batch missing feature column, parquet",
        ["predict-batch", "--model", "out/model", "--input", "no-num-tx.parquet", "--output", "o.parquet"],
        nothing,
        2,
        r"no-num-tx\.parquet lacks the model's feature column\(s\) num_tx_24h",
    ),
    (
        "predict-batch semicolon-delimited",
        ["predict-batch", "--model", "out/model", "--input", "semicolon.csv", "--output", "o.parquet"],
        nothing,
        2,
        r"semicolon\.csv looks semicolon-delimited: its header is one comma-separated column \(transaction_id;",
    ),
    (
        "validate semicolon-delimited",
        ["validate", "--data", "semicolon.csv"],
        nothing,
        2,
        r"semicolon\.csv looks semicolon-delimited",
    ),
    (
        "predict-batch truncated csv",
        ["predict-batch", "--model", "out/model", "--input", "cut.csv", "--output", "o.parquet"],
        nothing,
        2,
        r"cut\.csv is truncated: its last line stops mid-row \(\d of 10 fields, no final newline\)",
    ),
    (
        "validate truncated csv",
        ["validate", "--data", "cut.csv"],
        nothing,
        2,
        r"cut\.csv is truncated: its last line stops mid-row",
    ),
    (
        "predict-batch output symlinked to the input folder",
        ["predict-batch", "--model", "out/model", "--input", "in", "--output", "link"],
        nothing,
        2,
        r"--output link \(which resolves to /.*/in\) holds the input in: the parts would be written among the input",
    ),
    (
        "predict-batch null rows",
        ["predict-batch", "--model", "out/model", "--input", "some-null.parquet", "--output", "o.parquet"],
        nothing,
        1,
        r"120 of 1,200 rows of some-null\.parquet fail the model's input schema \(amount: missing or not a finite",
    ),
    (
        "predict-batch bad policy",
        [
            "predict-batch",
            "--model",
            "out/model",
            "--input",
            "some-null.parquet",
            "--output",
            "o.parquet",
            "--bad-rows",
            "skip",
        ],
        nothing,
        2,
        r"unknown bad-row policy 'skip'",
    ),
    (
        "predict-batch tampered model",
        ["predict-batch", "--model", "tampered", "--input", "some-null.parquet", "--output", "o.parquet"],
        tamper,
        2,
        r"model .*tampered does not match the sha256 recorded when it was logged",
    ),
    (
        "gate tampered model",
        ["gate", "--candidate", "tampered", "--no-champion"],
        tamper,
        2,
        r"model .*tampered does not match the sha256 recorded",
    ),
    (
        "gate tampered champion",
        ["gate", "--candidate", "out/model", "--champion", "tampered"],
        tamper,
        2,
        r"champion tampered: model .*tampered does not match the sha256 recorded when it was logged",
    ),
    (
        "predict-batch bare model dir under --require-integrity",
        ["--require-integrity", "predict-batch", "--model", "bare", "--input", "in", "--output", "o.parquet"],
        bare,
        2,
        r"model .*bare has no recorded sha256 \(no mlship-sha256\.txt in it and none in the tracking store\); "
        r"--require-integrity refuses to load it",
    ),
    (
        "predict-batch unwritable output folder",
        ["predict-batch", "--model", "out/model", "--input", "in", "--output", "/sys/mlship-unwritable/"],
        nothing,
        2,
        r"cannot write to /sys/mlship-unwritable: .* \(check the path and that it is writable\)",
    ),
    (
        "gate unknown model",
        ["gate", "--candidate", "models:/card-fraud@nobody"],
        nothing,
        2,
        r"models:/card-fraud@nobody: model 'card-fraud' has no alias 'nobody'",
    ),
    (
        "serve unknown model",
        ["serve", "--model", "no/such/dir", "--port", "0"],
        nothing,
        2,
        r"'no/such/dir' is not a model reference",
    ),
    ("register never gated", ["register", "--run", "{run}"], nothing, 1, r"run \w+ was never gated; refusing"),
    (
        "register force without reason",
        ["register", "--run", "{run}", "--force"],
        nothing,
        2,
        r"--force needs --reason TEXT",
    ),
    (
        "register reason without force",
        ["register", "--run", "{run}", "--reason", "why"],
        nothing,
        2,
        r"--reason is only meaningful with --force",
    ),
    ("register an ungated model dir", ["register", "--run", "out/model"], nothing, 1, r"run out/model was never gated"),
    ("promote unknown version", ["promote", "--version", "77"], nothing, 2, r"model 'card-fraud' has no version 77"),
    (
        "drift missing reference",
        ["drift", "--reference", "nope.csv", "--current", "cut.parquet"],
        nothing,
        2,
        r"data file nope\.csv does not exist",
    ),
    (
        "scan-gate not a trivy report",
        ["scan-gate", "--report", "trivy.json"],
        nothing,
        2,
        r"trivy\.json is not a Trivy JSON report",
    ),
]


@pytest.mark.parametrize(("argv", "setup", "code", "line"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_exit_code_and_one_line(
    trained: tuple[Path, str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    setup: Callable[[Path], None],
    code: int,
    line: str | None,
) -> None:
    root, run_id = trained
    monkeypatch.chdir(root)
    setup(root)
    result = runner.invoke(app, [a.replace("{run}", run_id) for a in argv])
    assert result.exit_code == code, result.stderr or result.stdout
    if line is None:  # a verdict (INVALID) printed as a report, not an error line
        assert result.stderr == ""
        return
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mlship: error: ")
    assert re.match(line, lines[0].removeprefix("mlship: error: ")), lines[0]


def test_validate_names_the_absent_configured_column(
    trained: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = trained
    monkeypatch.chdir(root)
    result = runner.invoke(app, ["validate", "--data", "no-num-tx.parquet", "--report-dir", "rep"])
    assert result.exit_code == 1 and "INVALID" in result.stdout
    assert "column 'num_tx_24h' is configured but missing from the data" in (root / "rep" / "validate.md").read_text()


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "--debug"])
def test_an_unreachable_tracking_server_is_3_and_its_credentials_stay_secret(
    trained: tuple[Path, str], monkeypatch: pytest.MonkeyPatch, debug: bool
) -> None:
    root, _ = trained
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", UNREACHABLE)
    result = runner.invoke(app, [*(["--debug"] if debug else []), "models"])
    assert result.exit_code == 3  # --debug adds a traceback; it never turns 3 into 1
    err = result.stderr
    assert "s3cret-pw" not in err and "alice" not in err and "tok-123" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("mlship: error: MLflow tracking server http://***@127.0.0.1:9/?token=*** is unreachable")
    assert ("Traceback (most recent call last)" in err) is debug


def test_no_configuration_says_which_defaults_apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "--data", "nope.parquet"])
    assert result.exit_code == 2
    note, error = result.stderr.strip().splitlines()
    assert note.startswith("mlship: note: no --config and no [tool.mlship] in ") and "card-fraud" in note
    assert error == (
        "mlship: error: data file nope.parquet does not exist (check the path, or create it with `mlship data synth`)"
    )


def test_an_output_symlinked_to_the_input_folder_writes_nothing_there(
    trained: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = trained
    monkeypatch.chdir(root)
    before = sorted(p.name for p in (root / "in").iterdir())
    result = runner.invoke(app, ["predict-batch", "--model", "out/model", "--input", "in", "--output", "link/"])
    assert result.exit_code == 2, result.stderr
    assert sorted(p.name for p in (root / "in").iterdir()) == before == ["a.csv"]


def test_a_bare_model_dir_loads_with_one_warning_line(
    trained: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = trained
    monkeypatch.chdir(root)
    bare(root)
    result = runner.invoke(app, ["predict-batch", "--model", "bare", "--input", "in", "--output", "bare-out.parquet"])
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("mlship: warning:")]
    assert len(warnings) == 1 and "model " in warnings[0] and "bare has no recorded sha256" in warnings[0]
