"""Per-color counters: requests, errors, a latency histogram and requests in flight.

They are the signal the blue-green controller verifies a release on and drains a color by.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BUCKETS_MS = (1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000, 10000)
"""Upper bounds of the latency histogram (ms); the last bucket is everything slower."""


@dataclass
class Counters:
    """Requests, errors (5xx or unreachable backend), a latency histogram and requests in flight."""

    requests: int = 0
    errors: int = 0
    in_flight: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_MS) + 1))

    def observe(self, status: int, seconds: float) -> None:
        self.requests += 1
        if status >= 500:
            self.errors += 1
        ms = seconds * 1000.0
        for i, bound in enumerate(BUCKETS_MS):
            if ms <= bound:
                self.buckets[i] += 1
                return
        self.buckets[-1] += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "in_flight": self.in_flight,
            "buckets": list(self.buckets),
        }
