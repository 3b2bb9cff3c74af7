"""Shadow comparison: a candidate's answers to copied requests against the live answers.

Per copied request, over the rows both answered: agreement of the predicted classes, absolute
difference of the probabilities (mean and max exact; p99 over a bounded reservoir), the
candidate's errors and latency (p50/p99 over a reservoir), and the `TOP_DISAGREEMENTS` rows
where the two differ most (the request record and both answers).
"""

from __future__ import annotations

import heapq
import random
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

RESERVOIR = 10_000
TOP_DISAGREEMENTS = 20


class Reservoir:
    """A uniform sample of at most `size` values (Vitter's algorithm R) for quantiles."""

    def __init__(self, size: int = RESERVOIR, seed: int | None = None) -> None:
        self.size = size
        self.seen = 0
        self.values: list[float] = []
        self._random = random.Random(seed)

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(value)
            return
        j = self._random.randrange(self.seen)
        if j < self.size:
            self.values[j] = value

    def quantile(self, q: float) -> float | None:
        if not self.values:
            return None
        ordered = sorted(self.values)
        return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))]


@dataclass
class ShadowStats:
    """What the shadow has shown so far; `to_dict()` is what the admin API, status and reports carry."""

    target: str = ""
    sample: float = 1.0
    started: float = field(default_factory=time.time)
    offered: int = 0
    dropped: int = 0
    requests: int = 0
    compared_rows: int = 0
    agreed_rows: int = 0
    errors: int = 0
    live_errors: int = 0
    diff_sum: float = 0.0
    diff_max: float = 0.0
    diffs: Reservoir = field(default_factory=Reservoir)
    latency: Reservoir = field(default_factory=Reservoir)
    top: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    _seq: int = 0

    def record(
        self,
        request: bytes,
        live_status: int,
        live_body: bytes,
        status: int | None,
        body: bytes,
        seconds: float,
    ) -> None:
        """One copy's outcome: `status` None means the candidate could not be reached."""
        self.requests += 1
        self.latency.add(seconds * 1000.0)
        if not 200 <= live_status < 300:
            self.live_errors += 1  # nothing to compare with; the candidate's own failure still counts
            self.errors += status is None or status >= 500
            return
        if status is None or not 200 <= status < 300:
            self.errors += 1  # unreachable, or refused / failed what live answered
            return
        try:
            live, cand = orjson.loads(live_body), orjson.loads(body)
            records = _records(request)
            self._compare(records, live, cand)
        except (ValueError, TypeError, KeyError, AttributeError):  # orjson.JSONDecodeError is a ValueError
            self.errors += 1  # a candidate answer that does not parse is its error

    def _compare(self, records: list[Any], live: dict[str, Any], cand: dict[str, Any]) -> None:
        live_p, cand_p = live["probabilities"], cand["probabilities"]
        live_y, cand_y = live["predictions"], cand["predictions"]
        if len(cand_p) != len(live_p) or len(cand_y) != len(live_y):
            raise ValueError("the candidate answered a different number of rows")
        for i, (a, b) in enumerate(zip(live_p, cand_p, strict=True)):
            diff = _distance(a, b)
            self.compared_rows += 1
            agreed = live_y[i] == cand_y[i]
            self.agreed_rows += agreed
            self.diff_sum += diff
            self.diff_max = max(self.diff_max, diff)
            self.diffs.add(diff)
            weight = diff + (1.0 if not agreed else 0.0)  # a flipped class ranks above any probability gap
            full = len(self.top) >= TOP_DISAGREEMENTS
            if full and weight <= self.top[0][0]:
                continue  # the common case: not among the most different rows, so no row record is built
            row = {
                "record": records[i] if i < len(records) else None,
                "live": {"prediction": live_y[i], "probability": a},
                "candidate": {"prediction": cand_y[i], "probability": b},
                "abs_diff": round(diff, 6),
                "agree": agreed,
            }
            self._seq += 1
            item = (weight, self._seq, row)
            if full:
                heapq.heapreplace(self.top, item)
            else:
                heapq.heappush(self.top, item)

    def to_dict(self) -> dict[str, Any]:
        p = self.diffs.quantile
        lat = self.latency.quantile
        rows = self.compared_rows
        return {
            "target": self.target,
            "sample": self.sample,
            "started": self.started,
            "offered": self.offered,
            "dropped": self.dropped,
            "requests": self.requests,
            "queued": max(0, self.offered - self.dropped - self.requests),
            "compared_rows": rows,
            "agreement": self.agreed_rows / rows if rows else None,
            "abs_diff": {
                "mean": self.diff_sum / rows if rows else None,
                "p99": p(0.99),
                "max": self.diff_max if rows else None,
            },
            "errors": self.errors,
            "live_errors": self.live_errors,
            "latency_ms": {"p50": lat(0.5), "p99": lat(0.99)},
            "disagreements": [row for _, _, row in sorted(self.top, key=lambda t: (-t[0], t[1]))],
        }


def _records(request: bytes) -> list[Any]:
    raw = orjson.loads(request) if request else {}
    if isinstance(raw, dict) and isinstance(raw.get("records"), list):
        return list(raw["records"])
    return [raw] if isinstance(raw, dict) else list(raw)


def _distance(a: Any, b: Any) -> float:
    """|a - b| for one row's probability, or the largest per-class gap when rows are lists."""
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            raise ValueError("class counts differ")
        return max((abs(float(x) - float(y)) for x, y in zip(a, b, strict=True)), default=0.0)
    return abs(float(a) - float(b))
