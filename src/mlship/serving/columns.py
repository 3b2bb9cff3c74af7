"""A batch of request rows held column by column: what the server validates, batches and predicts.

A request's rows go from the body to one array (numbers, float64) or one list (strings,
booleans, anything else) per input column, and stay that way through the micro-batcher
and the compiled model: no per-row dict is made on the hot path. Row dicts are built only
where a row is needed as such: the sampled prediction log (`RowView`, one dict per logged
row) and the tests.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Columns:
    """`n` rows; `data` maps each input column to its `n` values (a float64 array or a list).

    `unlogged` marks rows kept out of the prediction log (a synthetic request's), or None.
    """

    n: int
    data: Mapping[str, Any]
    unlogged: np.ndarray | None = None

    def __len__(self) -> int:
        return self.n

    def rows(self) -> RowView:
        """The rows as dicts of plain Python values, built on access."""
        return RowView(self)

    def not_logged(self) -> Columns:
        """The same rows, marked to stay out of the prediction log."""
        return replace(self, unlogged=np.ones(self.n, dtype=bool))

    def logged_rows(self) -> list[int]:
        """Indices of the rows the prediction log may sample."""
        if self.unlogged is None:
            return list(range(self.n))
        return np.flatnonzero(~self.unlogged).tolist()

    @staticmethod
    def from_rows(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> Columns:
        """Row dicts → columns (values as given; a missing key raises KeyError)."""
        return Columns(len(rows), {name: [row[name] for row in rows] for name in names})

    @staticmethod
    def concat(parts: Sequence[Columns]) -> Columns:
        """One batch of all `parts`, in order (every part has the same columns)."""
        if len(parts) == 1:
            return parts[0]
        data: dict[str, Any] = {}
        for name, first in parts[0].data.items():
            if isinstance(first, np.ndarray):
                data[name] = np.concatenate([np.asarray(p.data[name]) for p in parts])
            else:
                merged: list[Any] = []
                for p in parts:
                    merged.extend(p.data[name])
                data[name] = merged
        unlogged = None
        if any(p.unlogged is not None for p in parts):
            unlogged = np.concatenate([p.unlogged if p.unlogged is not None else np.zeros(p.n, bool) for p in parts])
        return Columns(sum(p.n for p in parts), data, unlogged)


class RowView(Sequence[dict[str, Any]]):
    """Row `i` of a `Columns` as a dict of plain Python values, made when asked for."""

    def __init__(self, columns: Columns) -> None:
        self._columns = columns

    def __len__(self) -> int:
        return self._columns.n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self._columns.n))]
        return {name: _plain(values[i]) for name, values in self._columns.data.items()}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(self._columns.n))


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) else value
