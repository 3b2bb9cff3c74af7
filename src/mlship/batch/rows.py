"""The rules of `/predict` applied to a frame of batch rows: which rows fail the model's input schema, and why.

Both engines check rows with `row_problems` (the Spark engine partition by partition), derive
a prediction from a probability with `predictions`, and word refused or flagged rows with
`reasons_line`, so their outputs and messages are the same.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from mlship.batch.io import InputFile
from mlship.errors import ConfigError
from mlship.report_text import one_line

if TYPE_CHECKING:
    import pandas as pd

    from mlship.serving.model import Column
    from mlship.settings import Settings

BAD_ROW_POLICIES = ("refuse", "flag")
FLAG_COLUMN = "input_error"


def check_policy(bad_rows: str) -> None:
    """A known bad-row policy, or one line naming the choices (exit 2)."""
    if bad_rows not in BAD_ROW_POLICIES:
        raise ConfigError(f"unknown bad-row policy {bad_rows!r}", hint=f"use one of: {', '.join(BAD_ROW_POLICIES)}")


def row_problems(columns: list[Column], df: pd.DataFrame) -> pd.Series[Any]:
    """Per row, the first reason it fails the model's input schema (None when it is fine).

    The rules of `/predict` (serving/schema.py), applied column-wise: a number must be a
    finite number, a string a string, a boolean a boolean, and none may be null.
    """
    reasons = no_problems(df)
    for col in columns:
        if col.kind == "any":
            continue
        bad, why = _bad_cells(df[col.name], col.kind)
        reasons = reasons.where(reasons.notna() | ~bad, f"{col.name}: {why}")
    return reasons


def no_problems(df: pd.DataFrame) -> pd.Series[Any]:
    """Every row fine: what `row_problems` says of a model without an input signature."""
    import pandas as pd  # noqa: PLC0415 - pandas: heavy, imported where it is used (off `--help` and the light paths)

    return pd.Series([None] * len(df), index=df.index, dtype=object)


def _bad_cells(values: pd.Series[Any], kind: str) -> tuple[pd.Series[Any], str]:
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)
    import pandas as pd  # noqa: PLC0415 - pandas: heavy, imported where it is used (off `--help` and the light paths)

    api = pd.api.types
    if kind == "number":
        if api.is_numeric_dtype(values) and not api.is_bool_dtype(values):
            numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
            return pd.Series(~np.isfinite(numbers), index=values.index), "missing or not a finite number"

        def finite_number(v: Any) -> bool:
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)

        return ~values.map(finite_number).astype(bool), "missing or not a finite number"
    if kind == "string":
        return ~values.map(lambda v: isinstance(v, str)).astype(bool), "missing or not a string"
    return ~values.map(lambda v: isinstance(v, (bool, np.bool_))).astype(bool), "missing or not a boolean"


def predictions(probability: Any, good: Any = None) -> Any:
    """The class of each probability (>= 0.5), null where the row was not scored: both engines' rule.

    `good` marks the rows that were scored; by default, those with a probability (not NaN).
    """
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)
    import pandas as pd  # noqa: PLC0415 - pandas: heavy, imported where it is used (off `--help` and the light paths)

    if good is None:
        good = ~np.isnan(probability)
    prediction = pd.array(np.where(good, probability >= 0.5, False).astype("int64"), dtype="Int64")
    prediction[~good] = pd.NA  # a row that was not scored has no class
    return prediction


def score_frame(
    settings: Settings, model: Any, df: pd.DataFrame, columns: list[Column] | None = None, *, flag: bool = False
) -> pd.DataFrame:
    """id column (if present) + prediction + probability of the positive class (+ input_error when flagging).

    Under `flag`, rows that fail the input schema get null predictions and their reason; the
    good rows are scored exactly as they would be alone.
    """
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)
    import pandas as pd  # noqa: PLC0415 - pandas: heavy, imported where it is used (off `--help` and the light paths)

    names = [c.name for c in columns] if columns else settings.features
    missing = [f for f in names if f not in df.columns]
    if missing:
        raise ConfigError(f"input lacks feature columns {missing}", hint="score a file with the training schema")
    reasons = row_problems(columns, df) if columns else no_problems(df)
    good = reasons.isna().to_numpy()
    proba = np.full(len(df), np.nan)
    if good.any():
        proba[good] = model.predict_proba(df.loc[good, names])[:, 1]
    out = pd.DataFrame({"prediction": predictions(proba, good), "probability": proba})
    if flag:
        out[FLAG_COLUMN] = reasons.to_numpy()
    if settings.id_column and settings.id_column in df.columns:
        out.insert(0, settings.id_column, df[settings.id_column].to_numpy())
    return out


def require_columns(inp: InputFile, chunk: Any, names: list[str]) -> None:
    """Every column the model reads is in the file: a missing one is a wrong file (exit 2), not bad rows.

    `chunk` is a pandas or a Spark DataFrame: both have the `columns` they read.
    """
    missing = [n for n in names if n not in chunk.columns]
    if not missing:
        return
    has = ", ".join(map(str, chunk.columns))
    raise ConfigError(
        f"{inp.uri} lacks the model's feature column(s) {one_line(', '.join(missing), 120)} "
        f"(it has {len(chunk.columns)}: {one_line(has, 120)})",
        hint="score a file with the columns of the model's input signature",
    )


def reasons_line(tally: dict[str, int], limit: int = 3) -> str:
    """`reason (n); …`, most frequent first: how both engines word refused or flagged rows."""
    ranked = sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))
    text = "; ".join(f"{reason} ({n:,})" for reason, n in ranked[:limit])
    return text + (f"; and {len(ranked) - limit} more reasons" if len(ranked) > limit else "")
