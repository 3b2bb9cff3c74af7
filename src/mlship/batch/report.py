"""The batch report: what a nightly scoring run did, readable in seconds (verdict line first).

Every figure is built from per-part statistics that are mergeable and small (a 1000-bin
histogram of the positive-class probability, class counts, refusal reasons), stored in each
part's Parquet metadata, so a resumed run reports on the whole dataset without re-reading it,
and memory never depends on the number of rows. Quantiles are read off the histogram (to
0.001). Input drift compares a uniform sample of the rows scored in this run against the
reference data with `mlship.monitoring.drift.compare`.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mlship.report_text import MAX_TEXT, cell, code, one_line

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlship.monitoring.drift import DriftReport

BINS = 1000
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
SAMPLE_ROWS = 50_000


@dataclass
class PartStats:
    """What one part holds: rows, refusals by reason, and the distribution of its scores."""

    rows: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    hist: list[int] = field(default_factory=lambda: [0] * BINS)
    classes: dict[str, int] = field(default_factory=dict)

    @property
    def scored(self) -> int:
        return sum(self.classes.values())

    @property
    def bad_rows(self) -> int:
        return sum(self.refused.values())

    def add_reasons(self, reasons: pd.Series[Any]) -> None:
        for reason, n in reasons.dropna().value_counts().items():
            self.refused[str(reason)] = self.refused.get(str(reason), 0) + int(n)

    def add_scores(self, probability: np.ndarray, prediction: pd.Series[Any] | Any) -> None:
        import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)

        finite = probability[np.isfinite(probability)]
        counts = np.bincount(np.clip((finite * BINS).astype(np.int64), 0, BINS - 1), minlength=BINS)
        self.hist = [a + int(b) for a, b in zip(self.hist, counts, strict=True)]
        for label, n in prediction.dropna().astype("int64").value_counts().items():
            self.classes[str(label)] = self.classes.get(str(label), 0) + int(n)

    def merge(self, other: PartStats) -> None:
        self.rows += other.rows
        for reason, n in other.refused.items():
            self.refused[reason] = self.refused.get(reason, 0) + n
        self.hist = [a + b for a, b in zip(self.hist, other.hist, strict=True)]
        for label, n in other.classes.items():
            self.classes[label] = self.classes.get(label, 0) + n

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> PartStats:
        raw = json.loads(text)
        return cls(
            rows=int(raw["rows"]), refused=dict(raw["refused"]), hist=list(raw["hist"]), classes=dict(raw["classes"])
        )


def quantile(hist: list[int], q: float) -> float | None:
    """The q-quantile of the scores, linearly interpolated inside its 1/BINS-wide bin."""
    total = sum(hist)
    if total == 0:
        return None
    target = q * total
    seen = 0
    for i, n in enumerate(hist):
        if n and seen + n >= target:
            return round((i + (target - seen) / n) / BINS, 4)
        seen += n
    return 1.0


def coarse(hist: list[int], bins: int = 20) -> list[int]:
    """The 1000-bin histogram summed into `bins` equal bins over [0, 1]."""
    step = len(hist) // bins
    return [sum(hist[i : i + step]) for i in range(0, len(hist), step)]


class Sample:
    """A uniform sample without replacement of at most `size` rows over a stream of chunks.

    Bottom-k sampling: every row draws a random key and the rows with the k smallest keys are
    kept, which is uniform whatever the chunk sizes and needs memory for k rows only.
    """

    def __init__(self, size: int = SAMPLE_ROWS, seed: int = 0) -> None:
        import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)

        self.size = size
        self.rng = np.random.default_rng(seed)
        self.frame: pd.DataFrame | None = None
        self.keys: np.ndarray | None = None

    def state(self) -> tuple[pd.DataFrame | None, np.ndarray | None]:
        return self.frame, self.keys

    def restore(self, state: tuple[pd.DataFrame | None, np.ndarray | None]) -> None:
        """Forget what was added since `state` (the rows of a part that was refused)."""
        self.frame, self.keys = state

    def add(self, chunk: pd.DataFrame) -> None:
        import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)
        import pandas as pd  # noqa: PLC0415 - pandas: heavy, imported where it is used (off `--help` and the light paths)

        keys = self.rng.random(len(chunk))
        if self.keys is not None and len(self.keys) >= self.size:
            wanted = keys < self.keys.max()  # only these can enter a full sample: few, once it is full
            chunk, keys = chunk[wanted], keys[wanted]
            if not len(chunk):
                return
        if self.frame is None or self.keys is None:
            frame, allkeys = chunk.reset_index(drop=True), keys
        else:
            frame = pd.concat([self.frame, chunk.reset_index(drop=True)], ignore_index=True)
            allkeys = np.concatenate([self.keys, keys])
        if len(frame) > self.size:
            keep = np.sort(np.argpartition(allkeys, self.size - 1)[: self.size])
            frame, allkeys = frame.iloc[keep].reset_index(drop=True), allkeys[keep]
        self.frame, self.keys = frame, allkeys


@dataclass
class BatchSummary:
    """Everything `batch.json` holds; `batch.md` and the plot are views of it."""

    verdict: str
    model_uri: str
    input: str
    output: str
    bad_rows_policy: str
    parts: int
    parts_scored: int
    parts_skipped: int
    parts_refused: list[str]
    stats: PartStats
    seconds: float
    """The whole run: listing, model load, scoring, drift, report."""
    scoring_seconds: float
    """Reading, checking, scoring and writing the parts of this run: what rows/s is measured on."""
    rows_this_run: int
    drift: dict[str, Any] | None
    drift_note: str

    @property
    def rows_per_second(self) -> float:
        return self.rows_this_run / self.scoring_seconds if self.scoring_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        s = self.stats
        return {
            "verdict": self.verdict,
            "model_uri": self.model_uri,
            "input": self.input,
            "output": self.output,
            "bad_rows_policy": self.bad_rows_policy,
            "parts": {
                "total": self.parts,
                "scored": self.parts_scored,
                "skipped": self.parts_skipped,
                "refused": self.parts_refused,
            },
            "rows": {"total": s.rows, "scored": s.scored, "refused": s.bad_rows},
            "refused_by_reason": dict(sorted(s.refused.items(), key=lambda kv: (-kv[1], kv[0]))),
            "scores": {
                "quantiles": {f"p{round(q * 100)}": quantile(s.hist, q) for q in QUANTILES},
                "histogram": {"edges": [round(i / 20, 2) for i in range(21)], "counts": coarse(s.hist)},
            },
            "predicted_classes": dict(sorted(s.classes.items())),
            "drift": self.drift,
            "drift_note": self.drift_note,
            "seconds": round(self.seconds, 3),
            "scoring_seconds": round(self.scoring_seconds, 3),
            "rows_this_run": self.rows_this_run,
            "rows_per_second": round(self.rows_per_second, 1),
        }


def verdict(stats: PartStats, refused_parts: list[str], policy: str, drift: DriftReport | None) -> str:
    """One line: did the run score everything, and is there anything to look at."""
    if refused_parts:
        head = (
            f"REFUSED: {stats.bad_rows:,} rows in {len(refused_parts)} part(s) fail the model's input schema; "
            "those parts were not written"
        )
    elif stats.bad_rows:
        head = f"FLAGGED: {stats.scored:,} rows scored, {stats.bad_rows:,} flagged as bad input ({policy})"
    else:
        head = f"OK: {stats.scored:,} rows scored"
    if drift is None:
        return head + "; drift not computed"
    if drift.dataset_drift:
        return head + f"; input DRIFT in {', '.join(drift.drifted)}"
    if drift.drifted:
        return head + f"; drift in {', '.join(drift.drifted)} (below the dataset threshold)"
    return head + "; no input drift"


def drift_dict(report: DriftReport) -> dict[str, Any]:
    d = report.to_dict()
    return {
        "reference": d["reference"],
        "n_reference": d["n_reference"],
        "n_current": d["n_current"],
        "dataset_drift": d["dataset_drift"],
        "drift_share": d["drift_share"],
        "drifted_features": d["drifted_features"],
        "features": d["features"],
        "prediction": d["prediction"],
        "warnings": d["warnings"],
    }


def render_markdown(summary: BatchSummary) -> str:
    d = summary.to_dict()
    lines = [
        f"# Batch scoring: {one_line(summary.verdict, 2 * MAX_TEXT)}",
        "",
        f"- model: {code(summary.model_uri)}",
        f"- input: {code(summary.input)} -> output: {code(summary.output)}",
        f"- parts: {summary.parts} ({summary.parts_scored} scored in this run, "
        f"{summary.parts_skipped} already written and skipped, {len(summary.parts_refused)} refused)",
        f"- rows: {d['rows']['total']:,} read, {d['rows']['scored']:,} scored, "
        f"{d['rows']['refused']:,} refused or flagged (--bad-rows {summary.bad_rows_policy})",
        f"- time: {summary.seconds:.1f} s in all; {summary.scoring_seconds:.1f} s reading, scoring and writing "
        f"the {summary.rows_this_run:,} rows of this run ({summary.rows_per_second:,.0f} rows/s)",
        "",
    ]
    if d["refused_by_reason"]:
        lines += ["## Bad rows by reason", "", "| reason | rows |", "|---|---:|"]
        lines += [f"| {cell(reason)} | {n:,} |" for reason, n in d["refused_by_reason"].items()]
        lines.append("")
    quantiles = d["scores"]["quantiles"]
    lines += ["## Scores (positive-class probability)", ""]
    lines += ["| " + " | ".join(quantiles) + " |", "|" + "---:|" * len(quantiles)]
    lines += ["| " + " | ".join("-" if v is None else f"{v:.3f}" for v in quantiles.values()) + " |", ""]
    total = max(summary.stats.scored, 1)
    lines += ["## Predicted classes", "", "| class | rows | share |", "|---|---:|---:|"]
    lines += [f"| {cell(label)} | {n:,} | {n / total:.2%} |" for label, n in d["predicted_classes"].items()]
    lines += ["", "## Input drift against the training data", "", one_line(summary.drift_note, 2 * MAX_TEXT), ""]
    if summary.drift is not None:
        lines += ["| feature | PSI | effect | level |", "|---|---:|---:|---|"]
        rows = [*summary.drift["features"], *([summary.drift["prediction"]] if summary.drift["prediction"] else [])]
        lines += [
            f"| {cell(f['feature'])} | {f['psi']:.3f} | {f['effect_name']}={f['effect']:.3f} | {f['level']} |"
            for f in rows
        ]
        lines += [f"- warning: {one_line(w, 2 * MAX_TEXT)}" for w in summary.drift["warnings"]]
        lines.append("")
    lines += ["![scores and classes](batch.png)", ""]
    return "\n".join(lines)


def plot(summary: BatchSummary) -> bytes:
    """One PNG: the score histogram (20 bins) and the predicted class counts."""
    import matplotlib  # noqa: PLC0415 - matplotlib: heavy, imported where it is used (off `--help` and the light paths)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - matplotlib: heavy, imported where it is used (off `--help` and the light paths)

    counts = coarse(summary.stats.hist)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    try:
        left.bar([i / 20 for i in range(20)], counts, width=0.05, align="edge", color="#4477aa")
        left.set(title="positive-class probability", xlabel="probability", ylabel="rows", xlim=(0, 1))
        labels = sorted(summary.stats.classes)
        right.bar(labels, [summary.stats.classes[k] for k in labels], color="#ee6677")
        right.set(title="predicted class", xlabel="class", ylabel="rows")
        fig.suptitle(summary.verdict[:100], fontsize=9)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90)
    finally:
        plt.close(fig)
    return buffer.getvalue()
