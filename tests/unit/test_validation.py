from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlship.data.suite import init_suite, load_suite
from mlship.data.synth import Corruption, corrupt, generate
from mlship.data.validation import validate_file, validate_frame
from mlship.data.validation_report import render_markdown, write_report
from mlship.errors import ConfigError
from mlship.settings import Settings
from tests.conftest import SUITE

EXPECTED_FAILURE = {
    Corruption.nulls: ("expect_column_values_to_not_be_null", "amount"),
    Corruption.negative_amounts: ("expect_column_values_to_be_between", "amount"),
    Corruption.unknown_category: ("expect_column_values_to_be_in_set", "merchant_category"),
    Corruption.missing_column: ("expect_table_columns_to_match_set", None),
    Corruption.wrong_dtype: ("expect_column_values_to_be_in_type_list", "amount"),
    Corruption.duplicate_ids: ("expect_column_values_to_be_unique", "transaction_id"),
    Corruption.out_of_range_hour: ("expect_column_values_to_be_between", "hour"),
    Corruption.empty: ("expect_table_row_count_to_be_between", None),
}


@pytest.fixture(scope="module")
def suite() -> dict[str, object]:
    return load_suite(SUITE)


@pytest.fixture(scope="module")
def clean() -> object:
    return generate(3000, seed=11)


def test_clean_data_is_valid(suite: dict[str, object], clean: object) -> None:
    report = validate_frame(clean, suite, data="clean", suite_name="suite")  # type: ignore[arg-type]
    assert report.valid, [(o.expectation, o.column) for o in report.failures]
    assert len(report.outcomes) == len(suite["expectations"])  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", list(Corruption))
def test_every_defect_is_caught_and_named(kind: Corruption, suite: dict[str, object], clean: object) -> None:
    report = validate_frame(corrupt(clean, kind), suite, data="bad", suite_name="suite")  # type: ignore[arg-type]
    assert not report.valid
    failed = {(o.expectation, o.column) for o in report.failures}
    assert EXPECTED_FAILURE[kind] in failed
    offending = next(o for o in report.failures if (o.expectation, o.column) == EXPECTED_FAILURE[kind])
    if kind is Corruption.negative_amounts:
        assert offending.unexpected_count and all(v < 0 for v in offending.sample)
    if kind is Corruption.unknown_category:
        assert "crypto_atm" in offending.sample
    if kind is Corruption.missing_column:
        column_errors = [o.error for o in report.failures if o.column == "country"]
        assert column_errors and all(e == "column 'country' is missing from the data" for e in column_errors)


def test_warning_severity_is_reported_but_does_not_fail(suite: dict[str, object]) -> None:
    shifted = generate(3000, seed=2, drift=1.0)  # means move, domain rules still hold
    report = validate_frame(shifted, suite, data="drifted", suite_name="suite")
    assert report.valid
    assert any(o.expectation == "expect_column_mean_to_be_between" for o in report.warnings)
    assert "Warnings" in render_markdown(report)


def test_report_files_and_markdown(tmp_path: Path, suite: dict[str, object], clean: object) -> None:
    report = validate_frame(corrupt(clean, "negative_amounts"), suite, data="bad.csv", suite_name="s.json")  # type: ignore[arg-type]
    js, md = write_report(report, tmp_path)
    payload = json.loads(js.read_text())
    assert payload["valid"] is False and payload["failed"] == 1
    text = md.read_text()
    assert text.startswith("# Data validation: ❌ **Data invalid**")
    assert "| expect_column_values_to_be_between | amount |" in text


def test_init_suite_profiles_the_data(clean: object) -> None:
    s = Settings()
    suite = init_suite(s, clean)  # type: ignore[arg-type]
    types = {(e["type"], e["kwargs"].get("column")) for e in suite["expectations"]}
    assert ("expect_column_values_to_be_unique", "transaction_id") in types
    assert ("expect_column_values_to_be_in_set", "customer_segment") in types
    assert validate_frame(clean, suite, data="c", suite_name="s").valid  # type: ignore[arg-type]
    schema_only = init_suite(s, None)
    assert all(
        e["type"] != "expect_column_values_to_be_in_set" or e["kwargs"]["column"] == "is_fraud"
        for e in schema_only["expectations"]
    )


def test_bad_suite_and_data_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_suite(tmp_path / "none.json")
    (tmp_path / "s.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_suite(tmp_path / "s.json")
    (tmp_path / "s.json").write_text('{"name": "x"}')
    with pytest.raises(ConfigError, match="no 'expectations' list"):
        load_suite(tmp_path / "s.json")
    (tmp_path / "s.json").write_text('{"name": "x", "expectations": [{"type": "expect_nothing_real", "kwargs": {}}]}')
    (tmp_path / "d.csv").write_text("a\n1\n")
    with pytest.raises(ConfigError, match="is invalid"):
        validate_file(tmp_path / "d.csv", tmp_path / "s.json")


def test_the_configured_schema_is_checked_before_the_suite(tmp_path: Path, clean: object) -> None:
    """A configured column absent from the file fails by name, even when the (older) suite never mentions it."""
    import pandas as pd

    assert isinstance(clean, pd.DataFrame)
    old_suite = tmp_path / "suite.json"
    old_suite.write_text(json.dumps({"name": "old", "expectations": []}))
    data = tmp_path / "d.parquet"
    clean.drop(columns=["num_tx_24h"]).to_parquet(data)
    assert validate_file(data, old_suite).valid  # what `validate` used to say: VALID
    report = validate_file(data, old_suite, Settings())
    assert not report.valid
    [failure] = report.failures
    assert (failure.expectation, failure.column) == ("mlship_configured_column_exists", "num_tx_24h")
    assert "column 'num_tx_24h' is configured but missing from the data" in render_markdown(report)


@pytest.mark.parametrize(
    ("column", "value", "expectation"),
    [
        ("amount", float("inf"), "mlship_column_values_finite"),
        ("amount", float("-inf"), "mlship_column_values_finite"),
        ("is_fraud", 0.5, "mlship_column_values_integer"),
        ("hour", 3.5, "mlship_column_values_integer"),  # the suite types hour as integers only
        ("account_age_days", "many", "mlship_column_is_numeric"),
    ],
)
def test_types_and_values_not_just_ranges(
    tmp_path: Path, clean: object, column: str, value: object, expectation: str
) -> None:
    import pandas as pd

    assert isinstance(clean, pd.DataFrame)
    settings = Settings()
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps(init_suite(settings, clean)))
    assert validate_file(_write(tmp_path, clean), suite, settings).valid
    bad = clean.copy()
    bad[column] = bad[column].astype(object if isinstance(value, str) else "float64")
    bad.loc[bad.index[:3], column] = value
    report = validate_file(_write(tmp_path, bad), suite, settings)
    ours = [o for o in report.failures if o.expectation.startswith("mlship_")]
    assert [(o.expectation, o.column) for o in ours] == [(expectation, column)]
    assert ours[0].unexpected_count == 3 or ours[0].expectation == "mlship_column_is_numeric"


def _write(folder: Path, df: object) -> Path:
    import pandas as pd

    assert isinstance(df, pd.DataFrame)
    path = folder / "data.csv"  # CSV: a column may mix numbers and text, as exported data does
    df.to_csv(path, index=False)
    return path


def _fractional_hour(clean: object) -> object:
    import pandas as pd

    assert isinstance(clean, pd.DataFrame)
    bad = clean.copy()
    bad["hour"] = bad["hour"].astype("float64")
    bad.loc[bad.index[:2], "hour"] = 13.5
    return bad


def _old_suite() -> dict[str, object]:
    """The shipped suite as it was before column kinds: no meta.column_kinds, ints-or-floats for every number."""
    old = json.loads(SUITE.read_text())
    old["meta"] = {"generated_by": "mlship validate --init"}
    for entry in old["expectations"]:
        if entry["type"] == "expect_column_values_to_be_in_type_list":
            entry["kwargs"]["type_list"] = ["int", "int32", "int64", "Int64", "float", "float32", "float64", "Float64"]
    return old


def test_an_integer_column_holding_a_fraction_fails_with_the_shipped_suite(tmp_path: Path, clean: object) -> None:
    settings = Settings(root=tmp_path)
    shipped = load_suite(SUITE)
    assert shipped["meta"]["column_kinds"]["hour"] == "integer"  # type: ignore[index]
    assert validate_file(_write(tmp_path, clean), SUITE, settings).valid
    report = validate_file(_write(tmp_path, _fractional_hour(clean)), SUITE, settings)
    ours = [o for o in report.failures if o.expectation == "mlship_column_values_integer"]
    assert [(o.column, o.unexpected_count, o.sample) for o in ours] == [("hour", 2, [13.5, 13.5])]
    assert ours[0].expected == {"kind": "integer", "source": "the suite's meta.column_kinds"}
    assert report.note is None  # the shipped suite declares every configured column's kind


def test_a_suite_without_kinds_learns_them_from_the_training_data_and_says_how_to_refresh(
    tmp_path: Path, clean: object
) -> None:
    import pandas as pd

    from mlship.data.schema import record_training_kinds

    settings = Settings(root=tmp_path)
    old = tmp_path / "old.json"
    old.write_text(json.dumps(_old_suite()))
    data = _write(tmp_path, _fractional_hour(clean))
    before = validate_file(data, old, settings)
    # nothing records the kinds yet: the old suite lets 13.5 through, and the note says so
    assert before.valid
    assert before.note is not None and "nothing records their kinds yet" in before.note
    assert before.note.startswith(f"the suite {old} has no type expectations for transaction_id, merchant_category")
    assert before.note.endswith(
        "refresh it with `mlship validate --init --force` (profiles the data; overwrites hand edits)"
    )
    assert isinstance(clean, pd.DataFrame)
    record_training_kinds(settings, clean, tmp_path / "train.parquet")  # what `mlship train` does
    after = validate_file(data, old, settings)
    assert not after.valid
    [failure] = [o for o in after.failures if o.expectation.startswith("mlship_")]
    assert (failure.expectation, failure.column, failure.unexpected_count) == (
        "mlship_column_values_integer",
        "hour",
        2,
    )
    assert failure.expected["source"] == "the training data recorded in .mlship/training_kinds.json"
    assert after.note is not None and "10 of them are checked against the kinds `mlship train` recorded" in after.note
    # a suite written by --init today declares them: no note
    fresh = tmp_path / "fresh.json"
    fresh.write_text(json.dumps(init_suite(settings, clean)))
    assert validate_file(_write(tmp_path, clean), fresh, settings).note is None


@pytest.mark.parametrize(
    ("column", "value", "expectation"),
    [("country", 7, "mlship_column_values_string"), ("flag", "maybe", "mlship_column_values_boolean")],
)
def test_string_and_boolean_columns_hold_their_kind(
    tmp_path: Path, clean: object, column: str, value: object, expectation: str
) -> None:
    import pandas as pd

    from mlship.data.schema import schema_outcomes

    assert isinstance(clean, pd.DataFrame)
    frame = clean.assign(flag=[True, False] * (len(clean) // 2))
    settings = Settings(root=tmp_path, categorical_features=["merchant_category", "country", "device_type", "flag"])
    suite = init_suite(settings, frame)
    assert suite["meta"]["column_kinds"]["flag"] == "boolean"  # type: ignore[index]
    assert all(o.success for o in schema_outcomes(frame, settings, suite))
    bad = frame.astype({column: object})
    bad.loc[bad.index[:3], column] = value  # a mixed column, as a CSV export or a careless join makes one
    ours = [o for o in schema_outcomes(bad, settings, suite) if not o.success]
    assert [(o.expectation, o.column, o.unexpected_count) for o in ours] == [(expectation, column, 3)]


def test_validate_says_once_that_an_old_suite_lacks_kinds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from mlship.cli import app
    from mlship.commands import register_all
    from tests.conftest import make_project

    register_all(app)
    root = make_project(tmp_path / "p", rows=500)
    monkeypatch.chdir(root)
    shipped = CliRunner().invoke(app, ["validate"])
    assert shipped.exit_code == 0, shipped.stderr
    assert "note:" not in shipped.stderr
    (root / "data" / "expectations" / "transactions.json").write_text(json.dumps(_old_suite()))
    old = CliRunner().invoke(app, ["validate"])
    assert old.exit_code == 0, old.stderr
    notes = [line for line in old.stderr.splitlines() if line.startswith("mlship: note:")]
    assert len(notes) == 1 and "validate --init --force" in notes[0]
