"""Expectation suites kept as JSON: load one, write one, and author one from the configured schema and a data sample."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlship.data.schema import FLOAT_TYPES, INTEGER_TYPES, column_kind
from mlship.errors import ConfigError
from mlship.fsutil import write_text

if TYPE_CHECKING:
    import pandas as pd

    from mlship.settings import Settings


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
