"""The contract between the blue-green controller and a place colors run (local, kubernetes).

The controller holds all the decisions; a target only starts, probes, switches and stops.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from mlship.deploy import synthetic
from mlship.deploy.release import Release
from mlship.errors import ConfigError


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


class Unsupported(ConfigError):
    """The target cannot do what was asked (a shadow, sticky routing): a usage error, exit 2."""

    def __init__(self, target: str, what: str, hint: str = "use the local or kubernetes target") -> None:
        super().__init__(f"the {target} target cannot {what}", hint=hint)


class Target(ABC):
    """Where the two colors run.

    Every target implements the abstract methods. The optional capabilities below have defaults
    that say "not supported": a probe returns None ("nothing to report"), a hook does nothing
    where doing nothing is right (`preflight`, `release_parked`), and an action raises
    `Unsupported`. `supports_shadow` / `supports_sticky` let a caller refuse an option before
    anything runs.
    """

    name: str
    namespace: str | None = None
    """The Kubernetes namespace a target runs in (None elsewhere); the retirement rebuilds it from this."""
    supports_shadow: bool = False
    """Can copy live requests to a shadow (`set_shadow`, `shadowing`, `shadow_stats`)."""
    supports_sticky: bool = False
    """Can route a canary split by a hashed request key (`set_sticky`)."""

    @abstractmethod
    def prepare(self) -> None:
        """Make sure the shared pieces (router / Services) exist and serve; restart them if they died."""

    @abstractmethod
    def start(self, color: str, release: Release) -> None:
        """Start (or replace) `color` with `release`; raise ColorFailed if it cannot start."""

    @abstractmethod
    def wait_ready(self, color: str, timeout_s: float) -> None:
        """Return once `color` answers /ready; raise ColorFailed on timeout or crash."""

    @abstractmethod
    def running(self, color: str) -> bool:
        """Is `color` up (process alive / replicas available)?"""

    @abstractmethod
    def preview_url(self, color: str) -> str:
        """Base URL that reaches `color` alone, whatever is live."""

    @abstractmethod
    def live_url(self) -> str:
        """Base URL users call."""

    @abstractmethod
    def traffic_url(self, color: str) -> str:
        """Where verification probes go so that they reach `color` on its live path."""

    @abstractmethod
    def set_weights(self, weights: dict[str, int]) -> None:
        """Send live traffic by weight: {"green": 100} is a switch, {"blue": 90, "green": 10} a canary."""

    @abstractmethod
    def weights(self) -> dict[str, int] | None:
        """The current live traffic split, None if nothing is live or it cannot be read."""

    @abstractmethod
    def signal(self, color: str) -> Signal | None:
        """Cumulative counters of `color`'s live traffic; None when unavailable (fail closed)."""

    @abstractmethod
    def stop(self, color: str) -> None:
        """Stop `color` (scale to zero); only what this target started."""

    @abstractmethod
    def down(self) -> list[str]:
        """Stop everything this target started; return what was stopped."""

    @abstractmethod
    def close(self) -> None:
        """Release client-side resources (port-forwards)."""

    # Optional capabilities: the defaults say "not supported" -----------------------------------

    def preflight(self) -> None:
        """Fail fast before a deploy (a busy live port); by default there is nothing to check."""
        return None

    def synthetic_headers(self, purpose: str) -> dict[str, str]:
        """The marker for mlship's own requests to `traffic_url`; with a proof where a router checks one."""
        return synthetic.headers(purpose)

    def release_parked(self, color: str) -> None:
        """Let go of an older release kept behind `color` once it is settled; by default none is kept."""
        return None

    def router_info(self) -> dict[str, Any] | None:
        """The router in front of the colors (pid, url, failover); None: this target has no router."""
        return None

    def live_problem(self) -> str | None:
        """Why the live path does not serve although its color runs; None: nothing more to check here."""
        return None

    def set_sticky(self, spec: str | None) -> None:
        """Route a canary split by a request key ("header:NAME" / "field:NAME"), or at random with None."""
        raise Unsupported(self.name, "route by key", hint="sticky routing needs the local router")

    def set_shadow(self, color: str | None, sample: float = 1.0) -> None:
        """Copy a `sample` of live /predict requests to `color` (None: stop copying)."""
        raise Unsupported(self.name, "run a shadow")

    def shadowing(self) -> str | None:
        """The color that gets copies now; None: none (or no shadow support)."""
        return None

    def shadow_stats(self) -> dict[str, Any] | None:
        """The running shadow's comparison figures; None: none recorded (or no shadow support)."""
        return None
