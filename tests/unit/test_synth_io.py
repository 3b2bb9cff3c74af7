from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlship.data.io import fingerprint, read_table, write_table
from mlship.data.synth import COLUMNS, Corruption, corrupt, generate, write_synthetic
from mlship.errors import ConfigError


def test_schema_ranges_and_signal() -> None:
    df = generate(20_000, seed=3)
    assert list(df.columns) == COLUMNS
    assert df["transaction_id"].is_unique
    assert (df["amount"] > 0).all()
    assert df["hour"].between(0, 23).all()
    assert (df["account_age_days"] >= 0).all() and (df["num_tx_24h"] >= 0).all()
    assert set(df["is_fraud"].unique()) == {0, 1}
    assert 0.10 <= df["is_fraud"].mean() <= 0.20
    # the sensitive attribute carries no signal of its own
    rates = df.groupby("customer_segment")["is_fraud"].mean()
    assert rates.max() - rates.min() < 0.03


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_same_seed_gives_byte_identical_files(tmp_path: Path, suffix: str) -> None:
    a, b, c = (tmp_path / f"{n}{suffix}" for n in "abc")
    write_synthetic(a, rows=500, seed=9)
    write_synthetic(b, rows=500, seed=9)
    write_synthetic(c, rows=500, seed=10)
    assert a.read_bytes() == b.read_bytes()
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)
    pd.testing.assert_frame_equal(read_table(a), generate(500, 9), check_dtype=False)


def test_drift_shifts_distributions() -> None:
    base, drifted = generate(20_000, 1), generate(20_000, 1, drift=0.8)
    assert drifted["amount"].median() > 1.3 * base["amount"].median()
    assert drifted["account_age_days"].mean() < base["account_age_days"].mean()
    assert (
        drifted["merchant_category"].isin(["online_gaming", "jewelry"]).mean()
        > base["merchant_category"].isin(["online_gaming", "jewelry"]).mean()
    )


@pytest.mark.parametrize("kind", list(Corruption))
def test_each_corruption_injects_its_defect(kind: Corruption) -> None:
    df = generate(400, 5)
    bad = corrupt(df, kind)
    checks = {
        Corruption.nulls: lambda d: d["amount"].isna().any(),
        Corruption.negative_amounts: lambda d: (d["amount"] < 0).any(),
        Corruption.unknown_category: lambda d: (~d["merchant_category"].isin(df["merchant_category"].unique())).any(),
        Corruption.missing_column: lambda d: "country" not in d.columns,
        Corruption.wrong_dtype: lambda d: not pd.api.types.is_numeric_dtype(d["amount"]),
        Corruption.duplicate_ids: lambda d: d["transaction_id"].duplicated().any(),
        Corruption.out_of_range_hour: lambda d: (d["hour"] > 23).any(),
        Corruption.empty: lambda d: len(d) == 0 and list(d.columns) == COLUMNS,
    }
    assert checks[kind](bad)
    assert len(df) == 400  # the input is not modified


def test_bad_arguments_and_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rows"):
        generate(0)
    with pytest.raises(ConfigError, match="drift"):
        generate(10, drift=-1)
    with pytest.raises(ConfigError, match=r"unsupported file type '\.txt'"):
        write_synthetic(tmp_path / "x.txt", rows=10)
    assert not (tmp_path / "x.txt").exists()
    with pytest.raises(ConfigError, match="does not exist"):
        read_table(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ConfigError, match="empty"):
        read_table(tmp_path / "empty.csv")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ConfigError, match="cannot read"):
        read_table(tmp_path / "broken.parquet")


def test_write_table_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "t.parquet"
    write_table(pd.DataFrame({"a": np.arange(3)}), target)

    class Boom(pd.DataFrame):
        def to_parquet(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
            Path(str(args[0])).write_bytes(b"partial")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_table(Boom({"a": [1]}), target)
    assert read_table(target)["a"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]
