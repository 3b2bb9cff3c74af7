"""The gate's report folder: gate.json (the machine verdict), gate.md (a pull-request comment), PNG plots.

gate.md is written for a reviewer with ten seconds: the verdict and its reason on the first
line, then the numbers that back it, then the plots (relative links, so the folder can be
attached or uploaded as is).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlship.fsutil import write_json, write_text, write_with

if TYPE_CHECKING:
    import numpy as np

    from mlship.model.gates import GateReport, GateResult

ICON = {"pass": "✅", "fail": "❌", "skipped": "⏭️"}
CANDIDATE_COLOR, CHAMPION_COLOR = "#1f77b4", "#ff7f0e"
PLOT_TITLES = {
    "curves.png": "ROC and precision-recall, candidate vs champion",
    "confusion.png": "Confusion matrix at threshold 0.5",
    "calibration.png": "Calibration (reliability) and score distribution",
    "fairness.png": "Rates per group",
}


def write_report(report: GateReport, out_dir: Path) -> tuple[Path, Path]:
    """gate.json and gate.md, each written atomically."""
    return (
        write_json(out_dir / "gate.json", report.to_dict()),
        write_text(out_dir / "gate.md", render_markdown(report)),
    )


# Markdown ----------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


def _signed(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:+.4f}"


def _ci(ci: tuple[float, float] | None, signed: bool = False) -> str:
    if ci is None or not all(math.isfinite(v) for v in ci):
        return "—"
    fmt = _signed if signed else _num
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def gate_value(g: GateResult) -> str:
    if g.value is None:
        return "—"
    if g.name == "fairness.group_size":
        return f"{int(g.value)} rows"
    if g.name == "latency.p99_ms":
        return f"{g.value:.2f} ms"
    if g.name == "size_mb":
        return f"{g.value:.2f} MB"
    if g.name == "versus_champion":
        return _signed(g.value)
    return _num(g.value)


def gate_threshold(g: GateResult) -> str:
    if g.threshold is None:
        return "—"
    value = f"{g.threshold:+g}" if g.name == "versus_champion" else f"{g.threshold:g}"
    return f"{g.op} {value}".strip()


def _model_line(model: Any) -> str:
    """Label and URI once each: `card-fraud v3` `models:/card-fraud/3` (from `models:/card-fraud@challenger`)."""
    from mlship.redaction import redact

    text = f"`{redact(model.uri)}`"
    if model.label != model.uri:
        text = f"{model.label}: {text}"
    if model.ref not in (model.uri, model.label):
        text += f" (from `{redact(model.ref)}`)"
    return text


def _provenance_lines(data: dict[str, Any]) -> list[str]:
    """What the verdict is about: the data (and its sha256) and the code (git sha), one line each."""
    import re

    from mlship import provenance
    from mlship.data.io import fingerprint

    source = str(data["source"])
    line = f"- **Data:** {source}: {data['rows']:,} rows, {data['positives']:,} positives"
    found = re.match(r"^(?:test split of )?(?P<path>.+?) \(", source)
    path = Path(found["path"]) if found else None
    if path is not None and path.is_file():
        line += f"; sha256 `{fingerprint(path)}`"
    return [line, f"- **Code:** git `{provenance.git_sha()}`"]


def render_markdown(report: GateReport) -> str:
    """The pull-request comment: verdict line first, then comparison, gates, fairness, latency, plots."""
    head = "✅ **Gate passed**" if report.passed else "❌ **Gate failed**"
    lines = [f"## {head}: {report.summary}", ""]
    cand, champ = report.candidate, report.champion
    lines.append(f"- **Candidate:** {_model_line(cand)}")
    lines.append(f"- **Champion:** {_model_line(champ)}" if champ else f"- **Champion:** {report.champion_note}")
    lines += _provenance_lines(report.data)
    lines += ["", _comparison_table(report), "", "### Gates", ""]
    lines += ["| | gate | value | threshold | detail |", "|---|---|---:|---|---|"]
    for g in report.gates:
        detail = g.detail.replace("|", "\\|")
        lines.append(f"| {ICON[g.status]} | `{g.name}` | {gate_value(g)} | {gate_threshold(g)} | {detail} |")
    if report.fairness is not None:
        lines += ["", *_fairness_table(report)]
    lat = report.latency
    lines += [
        "",
        "### Latency and size",
        "",
        f"Single-row predict (in-process, after warm-up, {lat.single_rows} calls): p50 **{lat.p50_ms:.2f} ms**, "
        f"p99 **{lat.p99_ms:.2f} ms**. Batch: **{lat.batch_rows_per_s:,.0f} rows/s** on {lat.batch_rows:,} rows. "
        f"Model directory: **{report.size_bytes / 1e6:.2f} MB**.",
    ]
    if report.plots:
        lines += ["", "### Plots", ""]
        lines += [f"![{PLOT_TITLES.get(p, p)}]({p})" for p in report.plots]
    tail = [f"Gate ran in {report.seconds:.1f} s."]
    if report.logged_to_run:
        tail.append(f"Logged to MLflow run `{report.logged_to_run}` (metrics `gate.*`, tag `mlship.gate`).")
    if report.registered:
        tail.append(f"Registered: {report.registered}.")
    lines += ["", " ".join(tail)]
    return "\n".join(lines) + "\n"


def _comparison_table(report: GateReport) -> str:
    conf = f"{report.confidence:.0%}"
    if report.champion is None:
        rows = [
            f"### Candidate metrics ({conf} bootstrap CI)",
            "",
            "| metric | candidate | CI |",
            "|---|---:|---|",
        ]
        for r in report.comparison:
            name = f"**{r.metric}** (primary)" if r.metric == report.primary_metric else r.metric
            rows.append(f"| {name} | {_num(r.candidate)} | {_ci(r.candidate_ci)} |")
        return "\n".join(rows)
    rows = [
        f"### Candidate vs champion (same rows, paired bootstrap {conf} CI of Δ)",
        "",
        "| metric | candidate | champion | Δ | CI of Δ |",
        "|---|---:|---:|---:|---|",
    ]
    for r in report.comparison:
        name = f"**{r.metric}** (primary)" if r.metric == report.primary_metric else r.metric
        rows.append(
            f"| {name} | {_num(r.candidate)} | {_num(r.champion)} | {_signed(r.delta)} | {_ci(r.delta_ci, True)} |"
        )
    return "\n".join(rows)


def _fairness_table(report: GateReport) -> list[str]:
    fair = report.fairness
    assert fair is not None
    lines = [
        f"### Fairness by `{fair.feature}`",
        "",
        f"Demographic-parity difference **{_num(fair.demographic_parity_difference, 3)}**, "
        f"equalized-odds difference **{_num(fair.equalized_odds_difference, 3)}** "
        f"(over groups with ≥ {fair.min_group_size} rows and both classes).",
        "",
        "| group | rows | positives | selection rate | TPR | FPR | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for g in fair.groups:
        note = "⚠️ insufficient data: " + g.note if not g.sufficient else ""
        lines.append(
            f"| {g.group} | {g.rows:,} | {g.positives:,} | {_num(g.selection_rate, 3)} | {_num(g.tpr, 3)} | "
            f"{_num(g.fpr, 3)} | {note} |"
        )
    return lines


# Plots -------------------------------------------------------------------------------------


def write_plots(
    report: GateReport, y: np.ndarray, cand: np.ndarray, champ: np.ndarray | None, out_dir: Path
) -> list[str]:
    """curves.png, confusion.png, calibration.png and (with a sensitive feature) fairness.png."""
    import matplotlib

    matplotlib.use("Agg")
    out_dir.mkdir(parents=True, exist_ok=True)
    plots: list[tuple[str, Callable[[], Any]]] = [
        ("curves.png", lambda: _curves(y, cand, champ)),
        ("confusion.png", lambda: _confusion(y, cand, champ)),
        ("calibration.png", lambda: _calibration(y, cand, champ)),
    ]
    if report.fairness is not None:
        plots.append(("fairness.png", lambda: _fairness(report)))
    names = []
    for name, draw in plots:
        _save(draw(), out_dir / name)
        names.append(name)
    return names


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def _series(champ: np.ndarray | None, cand: np.ndarray) -> list[tuple[str, np.ndarray, str, str]]:
    out = [("candidate", cand, CANDIDATE_COLOR, "-")]
    if champ is not None:
        out.append(("champion", champ, CHAMPION_COLOR, "--"))
    return out


def _curves(y: np.ndarray, cand: np.ndarray, champ: np.ndarray | None) -> Any:
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    fig, (roc, pr) = plt.subplots(1, 2, figsize=(11, 4.3))
    for label, p, color, style in _series(champ, cand):
        fpr, tpr, _ = roc_curve(y, p)
        roc.plot(fpr, tpr, color=color, linestyle=style, label=f"{label}  AUC {roc_auc_score(y, p):.3f}")
        precision, recall, _ = precision_recall_curve(y, p)
        pr.plot(
            recall, precision, color=color, linestyle=style, label=f"{label}  AP {average_precision_score(y, p):.3f}"
        )
    roc.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
    roc.set(title="ROC (held-out)", xlabel="false positive rate", ylabel="true positive rate")
    roc.legend(loc="lower right")
    pr.axhline(float(np.mean(y)), color="grey", linewidth=0.8, linestyle=":", label="base rate")
    pr.set(title="Precision-recall (held-out)", xlabel="recall", ylabel="precision", ylim=(0, 1.02))
    pr.legend(loc="upper right")
    return fig


def _confusion(y: np.ndarray, cand: np.ndarray, champ: np.ndarray | None) -> Any:
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import confusion_matrix

    series = _series(champ, cand)
    fig, axes = plt.subplots(1, len(series), figsize=(4.6 * len(series), 4.0), squeeze=False)
    for ax, (label, p, _, _) in zip(axes[0], series, strict=True):
        cm = confusion_matrix(y, (p >= 0.5).astype(int), labels=[0, 1])
        share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(2):
            for j in range(2):
                color = "white" if share[i, j] > 0.6 else "black"
                ax.text(j, i, f"{cm[i, j]:,}\n{share[i, j]:.1%}", ha="center", va="center", color=color)
        ax.set(
            title=f"{label} (threshold 0.5)",
            xticks=[0, 1],
            yticks=[0, 1],
            xticklabels=["pred 0", "pred 1"],
            yticklabels=["true 0", "true 1"],
        )
    return fig


def _calibration(y: np.ndarray, cand: np.ndarray, champ: np.ndarray | None) -> Any:
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.calibration import calibration_curve

    fig, (rel, hist) = plt.subplots(1, 2, figsize=(11, 4.3))
    for label, p, color, style in _series(champ, cand):
        observed, predicted = calibration_curve(y, p, n_bins=10, strategy="quantile")
        rel.plot(predicted, observed, marker="o", color=color, linestyle=style, label=label)
        hist.hist(p, bins=np.linspace(0, 1, 41), histtype="step", color=color, linestyle=style, label=label)
    rel.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":", label="perfectly calibrated")
    rel.set(
        title="Reliability (10 quantile bins)", xlabel="mean predicted P(positive)", ylabel="observed positive rate"
    )
    rel.legend(loc="upper left")
    hist.set(title="Score distribution", xlabel="P(positive)", ylabel="rows", yscale="log")
    hist.legend(loc="upper right")
    return fig


def _fairness(report: GateReport) -> Any:
    import matplotlib.pyplot as plt
    import numpy as np

    fair = report.fairness
    assert fair is not None
    groups = fair.groups
    x = np.arange(len(groups))
    width = 0.26
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(groups) + 2), 4.3))
    for k, (label, attr, color) in enumerate(
        (("selection rate", "selection_rate", "#4c72b0"), ("TPR", "tpr", "#55a868"), ("FPR", "fpr", "#c44e52"))
    ):
        values = [getattr(g, attr) for g in groups]
        bars = ax.bar(x + (k - 1) * width, np.nan_to_num(values), width, label=label, color=color)
        for bar, g in zip(bars, groups, strict=True):
            if not g.sufficient:
                bar.set_hatch("//")
                bar.set_alpha(0.45)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{g.group}\nn={g.rows:,}" + ("\n(insufficient)" if not g.sufficient else "") for g in groups])
    ax.set(
        ylim=(0, 1.05),
        ylabel="rate",
        title=(
            f"Per-group rates by {fair.feature}: DP diff {_num(fair.demographic_parity_difference, 3)}, "
            f"EO diff {_num(fair.equalized_odds_difference, 3)}"
        ),
    )
    ax.legend(loc="upper right")
    return fig
