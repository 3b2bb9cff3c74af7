"""The route: which color gets a request (weights, a sticky key's bucket), the warm standby, the shadow."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from mlship.traffic.sticky import BUCKETS, parse_sticky


@dataclass(frozen=True)
class Route:
    """Where requests go: color → "host:port", color → weight (live = 100), and the warm standby.

    `sticky` ("header:NAME" or "field:NAME") routes a split by a request key's stable bucket
    instead of at random; `shadow` names a color that gets a copy of a `sample` share of the
    live /predict requests (its answers are compared, never returned).
    """

    backends: dict[str, str] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=dict)
    standby: str | None = None
    sticky: str | None = None
    shadow: str | None = None
    sample: float = 1.0
    shadow_address: str | None = None
    """Where the shadow color's process listens, when its name is also the standby's (the release parked behind it)."""

    def split(self) -> bool:
        """More than one color shares live traffic (a canary or A/B split)."""
        return sum(1 for c, w in self.weights.items() if w > 0 and c in self.backends) > 1

    def pick(self, bucket: int | None = None) -> str | None:
        """The color for one request: by `bucket` (0..9999, a sticky key's) when given, else at random.

        Buckets are laid out over the colors in name order, so a key keeps its color as long
        as the weights stay the same.
        """
        live = sorted((c, w) for c, w in self.weights.items() if w > 0 and c in self.backends)
        if not live:
            return None
        if len(live) == 1:
            return live[0][0]
        total = sum(w for _, w in live)
        x = random.random() * total if bucket is None else (bucket + 0.5) * total / BUCKETS
        for color, weight in live:
            x -= weight
            if x < 0:
                return color
        return live[-1][0]

    def fallback(self, color: str) -> str | None:
        """Where a request `color` could not answer goes: the standby, if it is another color."""
        if self.standby and self.standby != color and self.standby in self.backends:
            return self.standby
        return None

    def live(self) -> str | None:
        """The color with all the traffic (None during a canary split or with nothing live)."""
        full = [c for c, w in self.weights.items() if w >= 100 and c in self.backends]
        return full[0] if len(full) == 1 else None

    def shadow_backend(self) -> str | None:
        """Where copies go: the shadow color's address, when it is not itself taking live traffic."""
        if not self.shadow or self.weights.get(self.shadow, 0) > 0:
            return None
        return self.shadow_address or self.backends.get(self.shadow)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backends": dict(self.backends),
            "weights": dict(self.weights),
            "standby": self.standby,
            "sticky": self.sticky,
            "shadow": self.shadow,
            "sample": self.sample,
            "shadow_address": self.shadow_address,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Route:
        """A route from JSON; ValueError for a sticky key or sample the router cannot use."""
        backends = {str(k): str(v) for k, v in (raw.get("backends") or {}).items()}
        weights = {str(k): int(v) for k, v in (raw.get("weights") or {}).items()}
        standby = raw.get("standby")
        sticky = raw.get("sticky") or None
        parse_sticky(sticky)
        sample = float(raw.get("sample", 1.0) if raw.get("sample") is not None else 1.0)
        if not 0.0 < sample <= 1.0:
            raise ValueError(f"shadow sample {sample} is not in (0, 1]")
        shadow = raw.get("shadow")
        address = raw.get("shadow_address")
        return cls(
            backends=backends,
            weights=weights,
            standby=str(standby) if standby else None,
            sticky=str(sticky) if sticky else None,
            shadow=str(shadow) if shadow else None,
            sample=sample,
            shadow_address=str(address) if address else None,
        )
