"""Data contracts: validate a table against a Great Expectations 1.x suite kept as JSON.

GX treats every failed expectation as a failure; mlship honours each expectation's
`severity` itself: `critical` failures make the data invalid, `warning`/`info` ones are
reported but let the pipeline go on. A column the suite needs but the data lacks is
reported as such, not as an obscure metric error.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlship.data.io import read_table
from mlship.errors import ConfigError
from mlship.fsutil import write_json, write_text
from mlship.report_text import MAX_TEXT, cell, code, one_line

if TYPE_CHECKING:
    import pandas as pd

    from mlship.settings import Settings

SAMPLE = 10


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's verdict, in words a data engineer acts on."""

    expectation: str
    column: str | None
    severity: str
    success: bool
    expected: dict[str, Any]
    observed: Any = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    sample: list[Any] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class ValidationReport:
    """The result of `mlship validate`: valid unless a critical expectation failed."""

    data: str
    suite: str
    rows: int
    columns: int
    outcomes: list[ExpectationOutcome]
    note: str | None = None
    """One line for the user that is not a failure (e.g. the suite predates column kinds)."""

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success and o.severity == "critical"]

    @property
    def warnings(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success and o.severity != "critical"]

    @property
    def valid(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "data": self.data,
            "suite": self.suite,
            "rows": self.rows,
            "columns": self.columns,
            "evaluated": len(self.outcomes),
            "failed": len(self.failures),
            "warnings": len(self.warnings),
            "outcomes": [asdict(o) for o in self.outcomes],
            "note": self.note,
        }


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


INTEGER_TYPES = ("int", "int8", "int16", "int32", "int64", "Int64", "uint8", "uint16", "uint32", "uint64")
FLOAT_TYPES = ("float", "float32", "float64", "Float64")
STRING_TYPES = ("str", "string", "object", "StringDtype")
BOOLEAN_TYPES = ("bool", "boolean", "BooleanDtype")
KINDS = ("integer", "float", "string", "boolean")
TRAINING_KINDS = "training_kinds.json"
"""Under the state directory: each configured column's kind in the data the last `mlship train` used."""
REFRESH = "refresh it with `mlship validate --init --force` (profiles the data; overwrites hand edits)"


def schema_outcomes(
    df: pd.DataFrame, settings: Settings, suite: dict[str, Any] | None = None
) -> list[ExpectationOutcome]:
    """mlship's own contract, checked before the suite: types and values, not just ranges.

    Every configured column is present; numeric features are numbers and finite (no ±inf);
    each configured column holds its kind (see `column_kinds`): an integer column whole
    numbers, a float column numbers, a string column text, a boolean column true/false. The
    target is an integer column always. Nulls are the suite's business
    (`expect_column_values_to_not_be_null`).
    """
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)
    import pandas as pd  # noqa: PLC0415 - pandas: heavy, imported where it is used (off `--help` and the light paths)

    out: list[ExpectationOutcome] = []

    def outcome(kind: str, column: str, ok: bool, **kw: Any) -> None:
        out.append(ExpectationOutcome(kind, column, "critical", ok, kw.pop("expected", {}), **kw))

    configured = [settings.id_column, *settings.features, settings.sensitive_feature, settings.target]
    for col in dict.fromkeys(c for c in configured if c):
        present = col in df.columns
        error = None if present else f"column {col!r} is configured but missing from the data"
        outcome("mlship_configured_column_exists", col, present, error=error)
    kinds = column_kinds(settings, suite)
    numeric = [*settings.numeric_features, *(c for c, (k, _) in kinds.items() if k in ("integer", "float"))]
    for col in [c for c in dict.fromkeys(numeric) if c in df.columns]:
        values = df[col]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            bad = values[pd.to_numeric(values, errors="coerce").isna() & values.notna()]
            outcome(
                "mlship_column_is_numeric",
                col,
                False,
                observed=str(values.dtype),
                unexpected_count=len(bad),
                sample=[_plain(v) for v in bad.head(SAMPLE)],
                error=f"column {col!r} is {values.dtype}, not numeric" + _from(kinds.get(col)),
            )
            continue
        numbers = values.dropna().to_numpy(dtype=np.float64)
        infinite = numbers[~np.isfinite(numbers)]
        outcome(
            "mlship_column_values_finite",
            col,
            len(infinite) == 0,
            unexpected_count=len(infinite),
            sample=[str(v) for v in infinite[:SAMPLE]],
        )
    integers = [settings.target, *(c for c, (k, _) in kinds.items() if k == "integer")]
    for col in [c for c in dict.fromkeys(integers) if c in df.columns]:
        numbers = pd.to_numeric(df[col], errors="coerce").dropna().to_numpy(dtype=np.float64)
        fractional = numbers[np.isfinite(numbers) & (numbers != np.round(numbers))]
        outcome(
            "mlship_column_values_integer",
            col,
            len(fractional) == 0,
            expected={"kind": "integer", "source": kinds.get(col, ("integer", "the target"))[1]},
            unexpected_count=len(fractional),
            sample=[_plain(v) for v in fractional[:SAMPLE]],
        )
    for col, (kind, source) in kinds.items():
        if kind not in ("string", "boolean") or col not in df.columns:
            continue
        values = df[col].dropna()
        if kind == "string":
            bad = values[values.map(lambda v: not isinstance(v, str))]
        else:
            bad = values[values.map(lambda v: not (isinstance(v, (bool, np.bool_)) or v in (0, 1)))]
        outcome(
            f"mlship_column_values_{kind}",
            col,
            bad.empty,
            expected={"kind": kind, "source": source},
            observed=str(df[col].dtype),
            unexpected_count=len(bad),
            sample=[_plain(v) for v in bad.head(SAMPLE)],
        )
    return out


def _from(found: tuple[str, str] | None) -> str:
    return f" (its kind is {found[0]}, from {found[1]})" if found else ""


def column_kinds(settings: Settings, suite: dict[str, Any] | None) -> dict[str, tuple[str, str]]:
    """Each configured column's kind and where it was learnt, most explicit source first.

    1. The suite's own record (`meta.column_kinds`, written by `mlship validate --init` from the
       data it profiled; edit it to change a kind on purpose).
    2. The training data, as `mlship train` recorded it (`<state_dir>/training_kinds.json`):
       what the model was fitted on, so a suite written before kinds existed still gets them.
    3. The suite's type expectations (`expect_column_values_to_be_in_type_list` naming one kind).
    """
    configured = [c for c in [settings.id_column, *settings.features, settings.sensitive_feature, settings.target] if c]
    declared = ((suite or {}).get("meta") or {}).get("column_kinds") or {}
    trained = recorded_kinds(settings)
    typed = suite_type_kinds(suite)
    out: dict[str, tuple[str, str]] = {}
    for col in dict.fromkeys(configured):
        if declared.get(col) in KINDS:
            out[col] = (str(declared[col]), "the suite's meta.column_kinds")
        elif trained.get(col) in KINDS:
            out[col] = (str(trained[col]), f"the training data recorded in {settings.state_dir / TRAINING_KINDS}")
        elif col in typed:
            out[col] = (typed[col], "the suite's type expectation")
    return out


def suite_type_kinds(suite: dict[str, Any] | None) -> dict[str, str]:
    """Columns whose type expectation names one kind (a list of ints and floats is a float column)."""
    out: dict[str, str] = {}
    for entry in (suite or {}).get("expectations", []):
        kwargs = entry.get("kwargs") or {}
        column = kwargs.get("column")
        types = [str(t) for t in (kwargs.get("type_list") or ([kwargs["type_"]] if kwargs.get("type_") else []))]
        if entry.get("type") not in ("expect_column_values_to_be_in_type_list", "expect_column_values_to_be_of_type"):
            continue
        if not column or not types:
            continue
        for kind, names in (
            ("integer", INTEGER_TYPES),
            ("float", (*INTEGER_TYPES, *FLOAT_TYPES)),
            ("string", STRING_TYPES),
            ("boolean", BOOLEAN_TYPES),
        ):
            if all(t in names for t in types):
                out[str(column)] = kind
                break
    return out


def undeclared_columns(settings: Settings, suite: dict[str, Any]) -> list[str]:
    """Configured columns the suite records no kind for (a suite written before kinds existed)."""
    declared = (suite.get("meta") or {}).get("column_kinds") or {}
    configured = [c for c in [settings.id_column, *settings.features, settings.sensitive_feature, settings.target] if c]
    return [c for c in dict.fromkeys(configured) if declared.get(c) not in KINDS]


def kinds_note(settings: Settings, suite: dict[str, Any], suite_path: Path) -> str | None:
    """One line when the suite lacks kinds for configured columns: where they come from, how to refresh."""
    missing = undeclared_columns(settings, suite)
    if not missing:
        return None
    trained = recorded_kinds(settings)
    learnt = [c for c in missing if c in trained]
    shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
    where = (
        f"{len(learnt)} of them are checked against the kinds `mlship train` recorded"
        if learnt
        else "nothing records their kinds yet (`mlship train` does)"
    )
    return f"the suite {suite_path} has no type expectations for {shown}; {where}; {REFRESH}"


def column_kind(values: pd.Series[Any]) -> str | None:
    """integer, float, string or boolean, from a column's dtype (and, for objects, its values)."""
    import pandas as pd  # noqa: PLC0415 - pandas: heavy, imported where it is used (off `--help` and the light paths)

    if pd.api.types.is_bool_dtype(values):
        return "boolean"
    if pd.api.types.is_integer_dtype(values):
        return "integer"
    if pd.api.types.is_float_dtype(values):
        return "float"
    present = values.dropna()
    if len(present) and bool(present.map(lambda v: isinstance(v, str)).all()):
        return "string"
    return None


def record_training_kinds(settings: Settings, df: pd.DataFrame, data_path: Path) -> Path:
    """At training time: each configured column's kind in the data the model is fitted on."""
    configured = [c for c in [settings.id_column, *settings.features, settings.sensitive_feature, settings.target] if c]
    kinds = {c: column_kind(df[c]) for c in dict.fromkeys(configured) if c in df.columns}
    record = {"data": str(data_path), "columns": {c: k for c, k in kinds.items() if k}}
    return write_json(settings.state_path / TRAINING_KINDS, record)


def recorded_kinds(settings: Settings) -> dict[str, str]:
    """The kinds the last `mlship train` recorded, or {} before the first one."""
    path = settings.state_path / TRAINING_KINDS
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read the recorded training kinds {path}: {exc}", hint="delete it; `mlship train` writes it again"
        ) from None
    columns = record.get("columns") if isinstance(record, dict) else None
    return {str(k): str(v) for k, v in columns.items()} if isinstance(columns, dict) else {}


def load_suite(path: Path) -> dict[str, Any]:
    """The suite as its JSON dict; a missing or malformed suite is a configuration error."""
    if not path.is_file():
        raise ConfigError(f"expectation suite {path} does not exist", hint="create one with `mlship validate --init`")
    try:
        suite = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"expectation suite {path} is not valid JSON: {exc}") from None
    if not isinstance(suite, dict) or not isinstance(suite.get("expectations"), list):
        raise ConfigError(
            f"expectation suite {path} has no 'expectations' list", hint="regenerate it with `mlship validate --init`"
        )
    return suite


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
    sample = [_plain(v) for v in (res.get("partial_unexpected_list") or [])[:SAMPLE]]
    percent = res.get("unexpected_percent")
    return ExpectationOutcome(
        expectation=str(config.type),
        column=column,
        severity=severity,
        success=bool(r.success),
        expected={k: _plain(v) for k, v in kwargs.items() if k != "column"},
        observed=_plain(res.get("observed_value")),
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


def _plain(value: Any) -> Any:
    """JSON-friendly scalars (numpy → python, NaN → None)."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, str):
        return one_line(value, MAX_TEXT) if len(value) > MAX_TEXT else value  # a column name or cell from the file
    if value is None or isinstance(value, (int, float, bool)):
        return value
    return one_line(value, MAX_TEXT)


def _gx() -> tuple[Any, Any]:
    """Import GX quietly (no progress bars, no analytics, no deprecation noise)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import great_expectations as gx  # noqa: PLC0415 - great_expectations: heavy, imported where it is used (off `--help` and the light paths)
        from great_expectations.core.expectation_suite import ExpectationSuite  # noqa: PLC0415 - great_expectations: heavy, imported where it is used (off `--help` and the light paths)
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    return gx, ExpectationSuite


# Suite authoring ------------------------------------------------------------------------------


def init_suite(settings: Settings, df: pd.DataFrame | None = None) -> dict[str, Any]:
    """A suite for the configured schema; with a sample frame, value sets and ranges come from it.

    Critical: the exact column set, at least one row, unique non-null ids, a 0/1 target,
    non-null features, numeric dtypes, categorical value sets, non-negative numerics where
    the sample has no negatives. Warning: class balance and numeric means near the sample's.
    """
    exps: list[dict[str, Any]] = []

    def add(kind: str, severity: str = "critical", **kwargs: Any) -> None:
        exps.append({"type": kind, "kwargs": kwargs, "meta": {}, "severity": severity})

    columns = [c for c in [settings.id_column, *settings.features, settings.sensitive_feature, settings.target] if c]
    columns = list(dict.fromkeys(columns))
    add("expect_table_columns_to_match_set", column_set=columns, exact_match=True)
    add("expect_table_row_count_to_be_between", min_value=1)
    if settings.id_column:
        add("expect_column_values_to_not_be_null", column=settings.id_column)
        add("expect_column_values_to_be_unique", column=settings.id_column)
    add("expect_column_values_to_not_be_null", column=settings.target)
    add("expect_column_values_to_be_in_set", column=settings.target, value_set=[0, 1])
    for col in settings.numeric_features:
        add("expect_column_values_to_not_be_null", column=col)
        whole = df is not None and col in df and pd_is_integer(df[col])
        # a column sampled as integers must stay integers (a count, an hour): mlship checks the values too
        add(
            "expect_column_values_to_be_in_type_list",
            column=col,
            type_list=list(INTEGER_TYPES if whole else ("int", "int32", "int64", "Int64", *FLOAT_TYPES)),
        )
        if df is not None and col in df:
            lo, hi, mean, std = (
                float(df[col].min()),
                float(df[col].max()),
                float(df[col].mean()),
                float(df[col].std()),
            )
            if lo >= 0:
                add("expect_column_values_to_be_between", column=col, min_value=0)
            if bool(df[col].round().eq(df[col]).all()) and hi - lo <= 100:
                # A small integer range seen in the sample (an hour, a rating): worth a warning;
                # promote it to critical in the suite when it is a true domain bound.
                add("expect_column_values_to_be_between", "warning", column=col, min_value=int(lo), max_value=int(hi))
            spread = max(std, abs(mean) * 0.05, 1e-9)
            add(
                "expect_column_mean_to_be_between",
                "warning",
                column=col,
                min_value=round(mean - spread, 4),
                max_value=round(mean + spread, 4),
            )
    for col in [*settings.categorical_features, *([settings.sensitive_feature] if settings.sensitive_feature else [])]:
        add("expect_column_values_to_not_be_null", column=col)
        if df is not None and col in df:
            add("expect_column_values_to_be_in_set", column=col, value_set=sorted(map(str, df[col].dropna().unique())))
    if df is not None and settings.target in df and len(df):
        rate = float(df[settings.target].mean())
        add(
            "expect_column_mean_to_be_between",
            "warning",
            column=settings.target,
            min_value=round(max(0.0, rate / 2), 4),
            max_value=round(min(1.0, rate * 2), 4),
        )
    meta: dict[str, Any] = {"generated_by": "mlship validate --init"}
    if df is not None:
        kinds = {c: column_kind(df[c]) for c in columns if c in df.columns}
        meta["column_kinds"] = {c: k for c, k in kinds.items() if k}
    return {"name": f"{settings.model_name}-data", "expectations": exps, "meta": meta, "notes": None}


def pd_is_integer(values: pd.Series[Any]) -> bool:
    import pandas as pd  # noqa: PLC0415 - pandas: heavy, imported where it is used (off `--help` and the light paths)

    return bool(pd.api.types.is_integer_dtype(values)) and not pd.api.types.is_bool_dtype(values)


def write_suite(suite: dict[str, Any], path: Path) -> Path:
    return write_text(path, json.dumps(suite, indent=2) + "\n")


# Reports --------------------------------------------------------------------------------------


def write_report(report: ValidationReport, report_dir: Path) -> tuple[Path, Path]:
    """validate.json (machine) and validate.md (human), both atomic."""
    js = write_json(report_dir / "validate.json", report.to_dict())
    md = write_text(report_dir / "validate.md", render_markdown(report))
    return js, md


def render_markdown(report: ValidationReport) -> str:
    verdict = "✅ **Data valid**" if report.valid else "❌ **Data invalid**"
    lines = [
        f"# Data validation: {verdict}",
        "",
        f"{code(report.data)} ({report.rows:,} rows × {report.columns} columns) against {code(report.suite)}: "
        f"{len(report.outcomes)} expectations, {len(report.failures)} failed, {len(report.warnings)} warnings.",
        "",
    ]
    for title, rows in (("Failed (critical)", report.failures), ("Warnings", report.warnings)):
        if not rows:
            continue
        lines += [
            f"## {title}",
            "",
            "| expectation | column | expected | observed | offending sample |",
            "|---|---|---|---|---|",
        ]
        for o in rows:
            lines.append(
                f"| {cell(o.expectation)} | {cell(o.column or '—')} | {cell(_short(o.expected))} | "
                f"{cell(describe_observed(o), 2 * MAX_TEXT)} | {cell(_short(o.sample)) if o.sample else '—'} |"
            )
        lines.append("")
    passed = [o for o in report.outcomes if o.success]
    if passed:
        lines += ["<details><summary>Passed expectations</summary>", ""]
        lines += [f"- {cell(o.expectation)} ({cell(o.column or 'table')})" for o in passed]
        lines += ["", "</details>", ""]
    return "\n".join(lines)


def describe_observed(o: ExpectationOutcome) -> str:
    """What was observed, in one bounded line (column names come from the file: see report_text)."""
    return one_line(_observed(o), 2 * MAX_TEXT)


def _observed(o: ExpectationOutcome) -> str:
    if o.error:
        return o.error
    if o.expectation == "expect_table_columns_to_match_set" and isinstance(o.observed, list):
        expected = [str(c) for c in o.expected.get("column_set") or []]
        missing = [c for c in expected if c not in o.observed]
        extra = [c for c in o.observed if c not in expected]
        return "; ".join(
            part
            for part in (
                f"missing: {', '.join(missing)}" if missing else "",
                f"unexpected: {', '.join(extra)}" if extra else "",
            )
            if part
        ) or _short(o.observed)
    if o.unexpected_count:
        pct = f" ({o.unexpected_percent:.2f}%)" if o.unexpected_percent is not None else ""
        return f"{o.unexpected_count:,} unexpected{pct}"
    return _short(o.observed) if o.observed is not None else "—"


def _short(value: Any, limit: int = 80) -> str:
    """A value in one line of at most `limit` characters (markdown escaping is `cell`'s job)."""
    text = json.dumps(value, default=str) if not isinstance(value, str) else one_line(value, limit)
    return text if len(text) <= limit else text[: limit - 1] + "…"
