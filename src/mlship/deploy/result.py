"""What one deploy, rollback or promotion did: the result users and CI read, and how it is written.

Also the JSON shape of a target's request counters (`Signal`) kept in the deploy state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlship.deploy.release import Release
from mlship.deploy.smoke import SmokeResult
from mlship.deploy.targets.base import Signal
from mlship.deploy.verify import VerifyResult
from mlship.fsutil import write_json, write_text


@dataclass
class DeployResult:
    """What one deploy / rollback did: the outcome users and CI scripts read."""

    action: str
    env: str
    target: str
    release: Release
    live_url: str
    live: str | None
    previous: Release | None = None
    smoke: SmokeResult | None = None
    verify: VerifyResult | None = None
    weights: dict[str, int] | None = None
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "env": self.env,
            "target": self.target,
            "release": self.release.to_dict(),
            "live_url": self.live_url,
            "live": self.live,
            "previous": self.previous.to_dict() if self.previous else None,
            "smoke": self.smoke.to_dict() if self.smoke else None,
            "verify": self.verify.to_dict() if self.verify else None,
            "weights": self.weights,
            "timings_s": self.timings_s,
        }


def render_markdown(result: DeployResult) -> str:
    r = result.release
    lines = [
        f"# {result.action}: {r.label} on {result.target}/{result.env}",
        "",
        f"- live URL: {result.live_url}",
        f"- live color: {result.live}; weights: {result.weights}",
        f"- model: `{r.uri}` (run {r.run_id or '-'}), image {r.image or '-'}, git {r.git_sha}",
        f"- previous: {result.previous.label if result.previous else '-'}",
    ]
    if result.smoke:
        lines += ["", "## Smoke test", "", "| check | ok | detail |", "|---|---|---|"]
        lines += [f"| {c.name} | {'yes' if c.ok else 'NO'} | {c.detail} |" for c in result.smoke.checks]
    if result.verify:
        lines += ["", "## Verification", "", f"{result.verify.reason} over {result.verify.window_s} s"]
    if result.timings_s:
        lines += ["", "## Timings (s)", "", ", ".join(f"{k} {v}" for k, v in result.timings_s.items())]
    return "\n".join(lines) + "\n"


def write_report(reports: Path, result: DeployResult) -> None:
    """`deploy.json` and `deploy.md` in the reports directory (atomic writes)."""
    write_json(reports / "deploy.json", result.to_dict())
    write_text(reports / "deploy.md", render_markdown(result))


def signal_dict(signal: Signal | None) -> dict[str, Any] | None:
    """A Signal as the deploy state stores it (JSON)."""
    if signal is None:
        return None
    return {
        "requests": signal.requests,
        "errors": signal.errors,
        "buckets": list(signal.buckets),
        "bounds_ms": list(signal.bounds_ms),
    }


def signal_from(raw: Any) -> Signal | None:
    """A Signal back from the state (None when absent or not of that shape)."""
    if not isinstance(raw, dict):
        return None
    try:
        return Signal(
            int(raw["requests"]),
            int(raw["errors"]),
            tuple(int(b) for b in raw["buckets"]),
            tuple(float(b) for b in raw["bounds_ms"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
