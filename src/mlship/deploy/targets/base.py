"""The contract between the blue-green controller and a place colors run (local, kubernetes).

The controller holds all the decisions; a target only starts, probes, switches and stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mlship.deploy.release import Release


class ColorFailed(Exception):
    """The idle color could not start, get ready, or keep running (the controller rolls back)."""


@dataclass(frozen=True)
class Signal:
    """Cumulative request counters of one color: requests, errors, latency histogram."""

    requests: int
    errors: int
    buckets: tuple[int, ...]
    bounds_ms: tuple[float, ...]

    def since(self, earlier: Signal | None) -> Signal | None:
        """Counts in between two snapshots; None when the counters went backwards (a restart)."""
        if earlier is None:
            return self
        if self.requests < earlier.requests or len(self.buckets) != len(earlier.buckets):
            return None
        return Signal(
            requests=self.requests - earlier.requests,
            errors=self.errors - earlier.errors,
            buckets=tuple(a - b for a, b in zip(self.buckets, earlier.buckets, strict=True)),
            bounds_ms=self.bounds_ms,
        )

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def quantile_ms(self, q: float) -> float | None:
        """Upper bound of the histogram bucket holding quantile `q` (inf past the last bound)."""
        total = sum(self.buckets)
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for i, count in enumerate(self.buckets):
            seen += count
            if seen >= rank:
                return self.bounds_ms[i] if i < len(self.bounds_ms) else float("inf")
        return float("inf")


class Target(Protocol):
    """Where the two colors run."""

    name: str

    def prepare(self) -> None:
        """Make sure the shared pieces (router / Services) exist and serve; restart them if they died."""

    def start(self, color: str, release: Release) -> None:
        """Start (or replace) `color` with `release`; raise ColorFailed if it cannot start."""

    def wait_ready(self, color: str, timeout_s: float) -> None:
        """Return once `color` answers /ready; raise ColorFailed on timeout or crash."""

    def running(self, color: str) -> bool:
        """Is `color` up (process alive / replicas available)?"""

    def preview_url(self, color: str) -> str:
        """Base URL that reaches `color` alone, whatever is live."""

    def live_url(self) -> str:
        """Base URL users call."""

    def traffic_url(self, color: str) -> str:
        """Where verification probes go so that they reach `color` on its live path."""

    def set_weights(self, weights: dict[str, int]) -> None:
        """Send live traffic by weight: {"green": 100} is a switch, {"blue": 90, "green": 10} a canary."""

    def weights(self) -> dict[str, int] | None:
        """The current live traffic split, None if nothing is live or it cannot be read."""

    def signal(self, color: str) -> Signal | None:
        """Cumulative counters of `color`'s live traffic; None when unavailable (fail closed)."""

    def stop(self, color: str) -> None:
        """Stop `color` (scale to zero); only what this target started."""

    def down(self) -> list[str]:
        """Stop everything this target started; return what was stopped."""

    def close(self) -> None:
        """Release client-side resources (port-forwards)."""
