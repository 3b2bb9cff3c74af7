from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlship.data.synth import Corruption, corrupt, generate
from mlship.data.validation import (
    init_suite,
    load_suite,
    render_markdown,
    validate_file,
    validate_frame,
    write_report,
)
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
