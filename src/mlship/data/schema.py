"""mlship's own schema contract, checked before the suite: each configured column present and of its kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlship.data.validation_report import SAMPLE, ExpectationOutcome, plain
from mlship.errors import ConfigError
from mlship.fsutil import write_json

if TYPE_CHECKING:
    import pandas as pd

    from mlship.settings import Settings

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
                sample=[plain(v) for v in bad.head(SAMPLE)],
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
            sample=[plain(v) for v in fractional[:SAMPLE]],
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
            sample=[plain(v) for v in bad.head(SAMPLE)],
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
