"""The gate's report folder: gate.json (the machine verdict), gate.md (a pull-request comment), PNG plots.

gate.md is written for a reviewer with ten seconds: the verdict and its reason on the first
line, then the numbers that back it, then the plots (relative links, so the folder can be
attached or uploaded as is).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlship import provenance
from mlship.data.io import fingerprint
from mlship.fsutil import write_json, write_text, write_with
from mlship.model.gates.types import LET_PASS
from mlship.model.gates.verdict import GATE_TAG
from mlship.redaction import redact

if TYPE_CHECKING:
    import numpy as np

    from mlship.model.gates.fairness import FairnessReport
    from mlship.model.gates.types import GateReport, GateResult

ICON = {"pass": "✅", "fail": "❌", "skipped": "⏭️", "inconclusive": "⚠️"}
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
    text = f"`{redact(model.uri)}`"
    if model.label != model.uri:
        text = f"{model.label}: {text}"
    if model.ref not in (model.uri, model.label):
        text += f" (from `{redact(model.ref)}`)"
    return text


def _provenance_lines(data: dict[str, Any]) -> list[str]:
    """What the verdict is about: the data (and its sha256) and the code (git sha), one line each."""
    source = str(data["source"])
    line = f"- **Data:** {source}: {data['rows']:,} rows, {data['positives']:,} positives"
    found = re.match(r"^(?:test split of )?(?P<path>.+?) \(", source)
    path = Path(found["path"]) if found else None
    if path is not None and path.is_file():
        line += f"; sha256 `{fingerprint(path)}`"
    return [line, f"- **Code:** git `{provenance.git_sha()}`"]


def render_markdown(report: GateReport) -> str:
    """The pull-request comment: verdict line first, then comparison, gates, fairness, latency, plots."""
    lines = [f"## {headline(report)}: {report.summary}", ""]
    cand, champ = report.candidate, report.champion
    lines.append(f"- **Candidate:** {_model_line(cand)}")
    lines.append(f"- **Champion:** {_model_line(champ)}" if champ else f"- **Champion:** {report.champion_note}")
    lines += _provenance_lines(report.data)
    lines += ["", _comparison_table(report), "", "### Gates", ""]
    lines += ["| | gate | value | threshold | detail | setting |", "|---|---|---:|---|---|---|"]
    for g in report.gates:
        detail = g.detail.replace("|", "\\|")
        setting = f"`{g.setting}`" if g.setting else ""
        lines.append(
            f"| {ICON[g.status]} | `{g.name}` | {gate_value(g)} | {gate_threshold(g)} | {detail} | {setting} |"
        )
    if not report.passed:
        lines += ["", f"**To change what failed** (or change the model or the data): {failing_settings(report, '`')}"]
    if report.inconclusive:
        lines += ["", *_evidence_section(report)]
    if report.fairness is not None:
        lines += ["", *_fairness_table(report)]
    lat = report.latency
    lines += [
        "",
        "### Latency and size",
        "",
        (
            f"Single-row predictions on the path the server takes ({lat.path or 'served path'}), after warm-up, "
            f"{lat.single_rows} calls: CPU time per call p50 **{_num(lat.p50_ms, 2)} ms**, p99 "
            f"**{_num(lat.p99_ms, 2)} ms** (gated: CPU time does not grow when the machine is busy); wall clock "
            f"p50 {_num(lat.wall_p50_ms, 2)} ms, p99 {_num(lat.wall_p99_ms, 2)} ms, fastest {_num(lat.wall_min_ms, 2)} "
            f"ms. Batch: **{_num(lat.batch_rows_per_s, 0)} rows/s** on {lat.batch_rows:,} rows. "
            if lat.single_rows
            else "Latency could not be measured (see the `latency.p99_ms` gate). "
        )
        + f"Model directory: **{report.size_bytes / 1e6:.2f} MB**.",
    ]
    if report.plots:
        lines += ["", "### Plots", ""]
        lines += [f"![{PLOT_TITLES.get(p, p)}]({p})" for p in report.plots]
    tail = [f"Gate ran in {report.seconds:.1f} s."]
    if report.logged_to_run:
        tail.append(f"Logged to MLflow run `{report.logged_to_run}` (metrics `gate.*`, tag `{GATE_TAG}`).")
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


def _conf(confidence: float) -> str:
    return f"{confidence:.0%}" if math.isfinite(confidence) else ""


def _ci3(ci: tuple[float, float]) -> str:
    return f"[{_num(ci[0], 3)}, {_num(ci[1], 3)}]"


def _fairness_table(report: GateReport) -> list[str]:
    fair = report.fairness
    assert fair is not None
    lines = [
        f"### Fairness by `{fair.feature}`",
        "",
        f"Demographic-parity difference **{_num(fair.demographic_parity_difference, 3)}** "
        f"({_conf(fair.confidence)} CI {_ci3(fair.demographic_parity_ci)}), "
        f"equalized-odds difference **{_num(fair.equalized_odds_difference, 3)}** "
        f"({_conf(fair.confidence)} CI {_ci3(fair.equalized_odds_ci)}) "
        f"over groups with ≥ {fair.min_group_size} rows (equalized odds: and ≥ {fair.min_class_rows} positives "
        "and negatives); stratified bootstrap, each end a one-sided bound. A difference passes when its whole "
        "interval is within its limit, fails when it is wholly beyond, and otherwise is ⚠ not enough evidence.",
        "",
        "| group | rows | positives | selection rate | TPR | FPR | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for g in fair.groups:
        note = "" if g.odds_sufficient else "⚠️ not enough evidence: " + g.note
        lines.append(
            f"| {g.group} | {g.rows:,} | {g.positives:,} | {_num(g.selection_rate, 3)} | {_num(g.tpr, 3)} | "
            f"{_num(g.fpr, 3)} | {note} |"
        )
    return lines


def headline(report: GateReport) -> str:
    """The verdict in three states: passed, passed with ⚠ not enough evidence, failed."""
    if not report.passed:
        return "❌ **Gate failed**"
    if report.inconclusive:
        return "⚠️ **Gate passed, not enough evidence**"
    return "✅ **Gate passed**"


def _evidence_section(report: GateReport) -> list[str]:
    """The ⚠ gates: what would settle each, and what the inconclusive policy did with them."""
    lines = [
        "### ⚠️ Not enough evidence",
        "",
        "Neither shown within the limit nor beyond it: more data settles it, a wider limit does not.",
        "",
        "| gate | what would settle it | effect |",
        "|---|---|---|",
    ]
    for g in report.inconclusive:
        effect = "fails the gate" if g.blocking else "passes with this warning"
        lines.append(f"| `{g.name}` | {g.settle.replace('|', chr(92) + '|')} | {effect} (`{g.setting}`) |")
    return lines


def failing_settings(report: GateReport, quote: str = "") -> str:
    """Each failing gate with what to change: the setting that governs it and its current value, or,
    for a gate without enough evidence, the evidence that would settle it and the inconclusive policy."""
    failed = [g for g in report.gates if g.failed]
    out = []
    for g in failed:
        if g.status == "inconclusive":
            out.append(f"{g.name} → ⚠ not enough evidence: {g.settle}; or {quote}{LET_PASS}{quote}")
        else:
            out.append(f"{g.name} → {quote}{g.setting}{quote}" if g.setting else g.name)
    return "; ".join(out)


# Plots -------------------------------------------------------------------------------------


def write_plots(
    report: GateReport, y: np.ndarray, cand: np.ndarray, champ: np.ndarray | None, out_dir: Path
) -> list[str]:
    """curves.png, confusion.png, calibration.png and (with a sensitive feature) fairness.png."""
    import matplotlib  # noqa: PLC0415 - matplotlib: heavy, imported where it is used (off `--help` and the light paths)

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
    import matplotlib.pyplot as plt  # noqa: PLC0415 - matplotlib: heavy, imported where it is used (off `--help` and the light paths)

    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def _legend_below(ax: Any) -> None:
    """A legend under the axes, never on top of a curve."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False, fontsize=8)


def _series(champ: np.ndarray | None, cand: np.ndarray) -> list[tuple[str, np.ndarray, str, str]]:
    out = [("candidate", cand, CANDIDATE_COLOR, "-")]
    if champ is not None:
        out.append(("champion", champ, CHAMPION_COLOR, "--"))
    return out


def _curves(y: np.ndarray, cand: np.ndarray, champ: np.ndarray | None) -> Any:
    import matplotlib.pyplot as plt  # noqa: PLC0415 - matplotlib: heavy, imported where it is used (off `--help` and the light paths)
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve  # noqa: PLC0415 - sklearn: heavy, imported where it is used (off `--help` and the light paths)

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
    _legend_below(roc)
    pr.axhline(float(np.mean(y)), color="grey", linewidth=0.8, linestyle=":", label="base rate")
    pr.set(title="Precision-recall (held-out)", xlabel="recall", ylabel="precision", ylim=(0, 1.02))
    _legend_below(pr)
    return fig


def _confusion(y: np.ndarray, cand: np.ndarray, champ: np.ndarray | None) -> Any:
    import matplotlib.pyplot as plt  # noqa: PLC0415 - matplotlib: heavy, imported where it is used (off `--help` and the light paths)
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)
    from sklearn.metrics import confusion_matrix  # noqa: PLC0415 - sklearn: heavy, imported where it is used (off `--help` and the light paths)

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
    import matplotlib.pyplot as plt  # noqa: PLC0415 - matplotlib: heavy, imported where it is used (off `--help` and the light paths)
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)
    from sklearn.calibration import calibration_curve  # noqa: PLC0415 - sklearn: heavy, imported where it is used (off `--help` and the light paths)

    fig, (rel, hist) = plt.subplots(1, 2, figsize=(11, 4.3))
    for label, p, color, style in _series(champ, cand):
        observed, predicted = calibration_curve(y, p, n_bins=10, strategy="quantile")
        rel.plot(predicted, observed, marker="o", color=color, linestyle=style, label=label)
        hist.hist(p, bins=np.linspace(0, 1, 41), histtype="step", color=color, linestyle=style, label=label)
    rel.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":", label="perfectly calibrated")
    rel.set(
        title="Reliability (10 quantile bins)", xlabel="mean predicted P(positive)", ylabel="observed positive rate"
    )
    _legend_below(rel)
    hist.set(title="Score distribution", xlabel="P(positive)", ylabel="rows", yscale="log")
    _legend_below(hist)
    return fig


def _fairness(report: GateReport) -> Any:
    """Left: per-group rates. Right: each disparity with its confidence interval against its limit.

    Legends sit outside the axes, so none covers a bar or an interval.
    """
    import matplotlib.pyplot as plt  # noqa: PLC0415 - matplotlib: heavy, imported where it is used (off `--help` and the light paths)

    fair = report.fairness
    assert fair is not None
    fig, (ax, dis) = plt.subplots(
        1, 2, figsize=(max(6.0, 1.6 * len(fair.groups) + 2) + 4.5, 4.6), gridspec_kw={"width_ratios": [2, 1]}
    )
    _group_bars(ax, fair)
    _disparity_panel(dis, report, fair)
    return fig


def _group_bars(ax: Any, fair: FairnessReport) -> None:
    """Selection rate, TPR and FPR per group; a group without enough rows is hatched and faded."""
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)

    groups = fair.groups
    x = np.arange(len(groups))
    width = 0.26
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
    ax.set(ylim=(0, 1.0), ylabel="rate", title=f"Per-group rates by {fair.feature}")
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.22), ncol=3, frameon=False)


def _disparity_panel(dis: Any, report: GateReport, fair: FairnessReport) -> None:
    """Each disparity with its confidence interval, coloured by its verdict, against its limit."""
    limits = {g.name: g.threshold for g in report.gates}
    rows = [
        (
            "demographic parity",
            fair.demographic_parity_difference,
            fair.demographic_parity_ci,
            limits.get("fairness.demographic_parity"),
        ),
        (
            "equalized odds",
            fair.equalized_odds_difference,
            fair.equalized_odds_ci,
            limits.get("fairness.equalized_odds"),
        ),
    ]
    for i, (_label, value, (low, high), limit) in enumerate(rows):
        if math.isfinite(value) and math.isfinite(low) and math.isfinite(high):
            color = (
                "#2e7d32"
                if limit is not None and high <= limit
                else "#c62828"
                if limit is not None and low > limit
                else "#ef6c00"
            )
            dis.errorbar(
                [value],
                [i],
                xerr=[[max(value - low, 0.0)], [max(high - value, 0.0)]],
                fmt="o",
                color=color,
                capsize=6,
                linewidth=2,
            )
        if limit is not None:
            dis.plot([limit, limit], [i - 0.35, i + 0.35], color="black", linestyle="--", linewidth=1.2)
            dis.annotate(f"limit {limit:g}", (limit, i + 0.38), ha="center", fontsize=8)
    dis.set_yticks(range(len(rows)))
    dis.set_yticklabels([r[0] for r in rows])
    dis.set(
        ylim=(-0.6, len(rows) - 0.3),
        xlim=(
            0,
            max(
                0.3,
                *[h * 1.08 for _, _, (_, h), _ in rows if math.isfinite(h)],
                *[lim * 1.3 for *_, lim in rows if lim is not None],
            ),
        ),
        xlabel="difference (max − min over groups)",
        title=f"Disparities, {_conf(fair.confidence)} CI",
    )
    dis.text(
        0.0,
        -0.22,
        "green: within the limit · red: beyond · orange: not enough evidence",
        transform=dis.transAxes,
        fontsize=8,
        va="top",
    )
