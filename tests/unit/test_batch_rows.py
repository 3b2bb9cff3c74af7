"""predict-batch's row check applies /predict's rules column by column, whatever pandas inferred."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlship.batch.rows import row_problems
from mlship.serving.model import Column


def test_each_row_gets_its_first_reason() -> None:
    columns = [
        Column("amount", "double"),
        Column("country", "string"),
        Column("card", "boolean"),
        Column("x", "binary"),
    ]
    df = pd.DataFrame(
        {
            "amount": pd.Series([1.5, "12", np.inf, 3, None, True, 2.0], dtype=object),  # mixed, as CSV exports are
            "country": ["DE", "FR", "US", 7, "DE", "DE", None],
            "card": [True, False, True, True, "yes", np.True_, True],
            "x": [b"", None, 1, "a", 2.0, None, b"z"],  # a type /predict does not check: neither is it checked here
        }
    )
    assert row_problems(columns, df).tolist() == [
        None,
        "amount: missing or not a finite number",  # "12" is text, not a number
        "amount: missing or not a finite number",
        "country: missing or not a string",
        "amount: missing or not a finite number",
        "amount: missing or not a finite number",  # a boolean is not a number
        "country: missing or not a string",
    ]
    assert row_problems(columns[2:3], df).tolist() == [
        None,
        None,
        None,
        None,
        "card: missing or not a boolean",
        None,
        None,
    ]


def test_a_numeric_column_of_booleans_is_not_numbers() -> None:
    df = pd.DataFrame({"amount": [True, False]})
    assert row_problems([Column("amount", "long")], df).tolist() == ["amount: missing or not a finite number"] * 2
