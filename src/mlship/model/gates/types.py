"""What a gate decides: one gate's result, the evaluation data, the loaded models, the whole report.

Each gate is a small function returning a GateResult (value, threshold, pass/fail/skipped,
or *inconclusive*: not enough evidence either way; one line of detail). A gate that cannot be
evaluated is *skipped* with the reason, is *inconclusive* (shown as ⚠ everywhere, blocking or
not as its setting says), or fails closed — it never passes silently.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from mlship.model.gates.fairness import FairnessReport

Status = Literal["pass", "fail", "skipped", "inconclusive"]
LET_PASS = 'gates.fairness_inconclusive = "warn"'
"""What lets a result without enough evidence pass (with its ⚠) while the evidence is collected."""
THRESHOLD = 0.5
"""Decision threshold on P(positive) for accuracy, precision, recall, f1, fairness and flips."""


@dataclass(frozen=True)
class GateResult:
    """One gate's outcome: `value` compared with `threshold` (`op` says how), and why."""

    name: str
    status: Status
    value: float | None
    threshold: float | None
    detail: str
    op: str = ""
    setting: str = ""
    """The setting that governs this gate and its current value, e.g. `gates.max_flip_rate = 0.02`."""
    blocking: bool = False
    """For an inconclusive gate: does it fail the verdict (`gates.fairness_inconclusive = "fail"`)?"""
    settle: str = ""
    """For an inconclusive gate: the evidence that would settle it (rows, or positives, per group)."""

    @property
    def failed(self) -> bool:
        """Does this gate fail the verdict (a fail, or a blocking inconclusive)?"""
        return self.status == "fail" or (self.status == "inconclusive" and self.blocking)

    @property
    def warned(self) -> bool:
        """Inconclusive and let pass: the verdict passes with a visible warning."""
        return self.status == "inconclusive" and not self.blocking

    @property
    def advice(self) -> str:
        """For a failing gate: the setting that governs it (what to change, if not the model or the data).

        An inconclusive gate is not a limit problem: what settles it is evidence, and what lets it
        pass meanwhile is the inconclusive policy, not a wider limit.
        """
        if self.status == "inconclusive":
            return f"more evidence, or {LET_PASS}"
        return f"setting {self.setting}" if self.setting else ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EvalData:
    """The held-out rows both models are scored on, and where they came from."""

    X: pd.DataFrame
    y: np.ndarray
    groups: np.ndarray | None
    source: str
    train_path: Path

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "rows": len(self.y), "positives": int(self.y.sum())}


@dataclass
class LoadedModel:
    """A model reference pinned, materialised as a directory, and loaded."""

    ref: str
    uri: str
    label: str
    directory: Path
    model: Any
    run_id: str | None = None
    name: str | None = None
    version: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "uri": self.uri,
            "label": self.label,
            "run_id": self.run_id,
            "name": self.name,
            "version": self.version,
        }


@dataclass(frozen=True)
class ComparisonRow:
    """A metric for candidate and champion on the same rows, with paired-bootstrap intervals."""

    metric: str
    candidate: float
    candidate_ci: tuple[float, float]
    champion: float | None = None
    delta: float | None = None
    delta_ci: tuple[float, float] | None = None


@dataclass(frozen=True)
class LatencyStats:
    """Single-row predictions on the served path: CPU time per call (gated) and wall time (shown)."""

    p50_ms: float
    """CPU time per single-row call, median."""
    p99_ms: float
    """CPU time per single-row call, 99th percentile: what `latency.p99_ms` gates."""
    single_rows: int
    batch_rows: int
    batch_rows_per_s: float
    wall_p50_ms: float = math.nan
    wall_p99_ms: float = math.nan
    wall_min_ms: float = math.nan
    """The fastest call by the clock: a model that waits (sleep, I/O) on every call cannot hide."""
    path: str = ""
    """What was timed: the server's own pipeline choice (compiled or not, and why)."""

    @property
    def gated_ms(self) -> float:
        """What the budget is compared with: p99 CPU time, or the fastest wall time if that is more."""
        return max(self.p99_ms, self.wall_min_ms) if math.isfinite(self.wall_min_ms) else self.p99_ms


@dataclass
class GateReport:
    """Everything the gate decided and why: what gate.json holds and gate.md renders."""

    verdict: Literal["pass", "fail"]
    summary: str
    candidate: LoadedModel
    champion: LoadedModel | None
    champion_note: str
    data: dict[str, Any]
    metrics: dict[str, dict[str, float]]
    comparison: list[ComparisonRow]
    gates: list[GateResult]
    fairness: FairnessReport | None
    latency: LatencyStats
    size_bytes: int
    confidence: float
    primary_metric: str
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)
    logged_to_run: str | None = None
    registered: str | None = None

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    @property
    def inconclusive(self) -> list[GateResult]:
        """Gates without enough evidence either way (⚠), blocking or not."""
        return [g for g in self.gates if g.status == "inconclusive"]

    @property
    def warning(self) -> str:
        """One line naming the ⚠ gates and what would settle each; empty when there are none."""
        return "; ".join(f"{g.name}: not enough evidence ({g.settle})" for g in self.inconclusive)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "summary": self.summary,
            "inconclusive": [
                {"gate": g.name, "blocking": g.blocking, "settle": g.settle, "setting": g.setting}
                for g in self.inconclusive
            ],
            "candidate": self.candidate.describe(),
            "champion": self.champion.describe() if self.champion else None,
            "champion_note": self.champion_note,
            "data": self.data,
            "primary_metric": self.primary_metric,
            "confidence": self.confidence,
            "metrics": self.metrics,
            "comparison": [asdict(r) for r in self.comparison],
            "gates": [g.to_dict() for g in self.gates],
            "fairness": self.fairness.to_dict() if self.fairness else None,
            "latency": asdict(self.latency),
            "size_bytes": self.size_bytes,
            "plots": self.plots,
            "seconds": round(self.seconds, 3),
            "timings": self.timings,
            "logged_to_run": self.logged_to_run,
            "registered": self.registered,
        }


def setting_line(key: str, value: float | bool | str) -> str:
    """`gates.<key> = <value>` as a user writes it in the settings (TOML spelling)."""
    if isinstance(value, bool):
        shown = str(value).lower()
    elif isinstance(value, str):
        shown = f'"{value}"'
    else:
        shown = f"{value:g}"
    return f"gates.{key} = {shown}"


def first_line(exc: BaseException) -> str:
    """`Type: first line of the message`: what a one-line error says about an exception from user code."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
