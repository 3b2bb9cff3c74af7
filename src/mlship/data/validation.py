"""Data contracts: validate a table against a Great Expectations 1.x suite kept as JSON.

GX treats every failed expectation as a failure; mlship honours each expectation's
`severity` itself: `critical` failures make the data invalid, `warning`/`info` ones are
reported but let the pipeline go on. A column the suite needs but the data lacks is
reported as such, not as an obscure metric error.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlship.data.io import read_table
from mlship.data.schema import kinds_note, schema_outcomes
from mlship.data.suite import load_suite
from mlship.data.validation_report import SAMPLE, ExpectationOutcome, ValidationReport, plain
from mlship.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from mlship.settings import Settings


def validate_file(data_path: Path, suite_path: Path, settings: Settings | None = None) -> ValidationReport:
    """Read `data_path` (exit 2 if unreadable) and validate it against the suite at `suite_path`.

    With `settings`, the configured schema is checked first (see `schema_outcomes`): a suite
    generated earlier cannot vouch for a column the configuration now needs.
    """

    suite = load_suite(suite_path)
    df = read_table(data_path)
    report = validate_frame(df, suite, data=str(data_path), suite_name=str(suite_path))
    if settings is None:
        return report
    own = schema_outcomes(df, settings, suite)
    note = kinds_note(settings, suite, suite_path)
    return ValidationReport(report.data, report.suite, report.rows, report.columns, [*own, *report.outcomes], note)


def validate_frame(df: pd.DataFrame, suite: dict[str, Any], *, data: str, suite_name: str) -> ValidationReport:
    """Run every expectation of `suite` on `df` in one GX batch."""
    gx, ExpectationSuite = _gx()
    entries = suite["expectations"]
    try:
        gx_suite = ExpectationSuite(
            **{k: v for k, v in suite.items() if k in ("name", "expectations", "meta", "notes")}
        )
    except Exception as exc:  # noqa: BLE001 — GX raises many types for a bad expectation entry
        raise ConfigError(f"expectation suite {suite_name} is invalid: {str(exc).splitlines()[0]}") from None
    if len(gx_suite.expectations) != len(entries):
        # GX logs and drops an entry it cannot build; a silently shorter contract is worse than none.
        built = [e.expectation_type for e in gx_suite.expectations]
        bad = next((e.get("type") for e in entries if e.get("type") not in built), "an entry")
        raise ConfigError(
            f"expectation suite {suite_name} is invalid: {bad!r} is not a known expectation or has bad arguments",
            hint="fix or remove that entry",
        )
    from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: PLC0415 - great_expectations: heavy, imported where it is used (off `--help` and the light paths)

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no tqdm bars in CI logs
    batch_def = (
        context.data_sources.add_pandas(name="mlship")
        .add_dataframe_asset(name="table")
        .add_batch_definition_whole_dataframe("whole")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = batch_def.get_batch(batch_parameters={"dataframe": df}).validate(gx_suite, result_format="SUMMARY")
    order = {json.dumps(e, sort_keys=True, default=str): i for i, e in enumerate(suite["expectations"])}
    outcomes = sorted((_outcome(r, df) for r in result.results), key=lambda o: _position(o, order))
    return ValidationReport(data=data, suite=suite_name, rows=len(df), columns=df.shape[1], outcomes=outcomes)


def _outcome(r: Any, df: pd.DataFrame) -> ExpectationOutcome:
    config = r.expectation_config
    kwargs = {k: v for k, v in dict(config.kwargs).items() if k not in ("batch_id", "result_format")}
    column = kwargs.get("column")
    severity = getattr(config.severity, "value", str(config.severity or "critical")).lower()
    error = _exception(r.exception_info)
    if error and column and column not in df.columns:
        error = f"column {column!r} is missing from the data"
    res = dict(r.result or {})
    sample = [plain(v) for v in (res.get("partial_unexpected_list") or [])[:SAMPLE]]
    percent = res.get("unexpected_percent")
    return ExpectationOutcome(
        expectation=str(config.type),
        column=column,
        severity=severity,
        success=bool(r.success),
        expected={k: plain(v) for k, v in kwargs.items() if k != "column"},
        observed=plain(res.get("observed_value")),
        unexpected_count=res.get("unexpected_count"),
        unexpected_percent=None if percent is None else round(float(percent), 4),
        sample=sample,
        error=error,
    )


def _position(o: ExpectationOutcome, order: dict[str, int]) -> tuple[int, str]:
    for key, pos in order.items():
        entry = json.loads(key)
        if entry.get("type") == o.expectation and entry.get("kwargs", {}).get("column") == o.column:
            return pos, o.expectation
    return len(order), o.expectation


def _exception(info: Any) -> str | None:
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "expectation raised an error").splitlines()[0]
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message") or "metric raised an error").splitlines()[0]
    return None


def _gx() -> tuple[Any, Any]:
    """Import GX quietly (no progress bars, no analytics, no deprecation noise)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import great_expectations as gx  # noqa: PLC0415 - great_expectations: heavy, imported where it is used (off `--help` and the light paths)
        from great_expectations.core.expectation_suite import ExpectationSuite  # noqa: PLC0415 - great_expectations: heavy, imported where it is used (off `--help` and the light paths)
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    return gx, ExpectationSuite
