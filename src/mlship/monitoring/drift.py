"""Feature drift between a reference and a current sample, decided on effect size.

p-values vanish at large n (a 0.01 SD shift is "significant" at 1M rows), so the decision
uses effect sizes: normalised Wasserstein (W1 / std_ref) for numeric features, Jensen-Shannon
distance for categorical ones; PSI (10 reference-quantile bins, eps 1e-4) is reported and
fails at ``psi_fail``. KS / chi-square p-values are reported on a subsample of at most
``TEST_SAMPLE`` rows per side. PSI is biased upward below ``MIN_ROWS`` rows: the report says so.

Prediction drift compares the model's positive-class probability on both sides: taken from
the prediction log when ``--current`` is one, and computed with ``--model`` otherwise (the
reference, typically training data, never carries predictions). It is reported, and plotted
when it drifts, but the dataset verdict (exit code) stays a feature-drift decision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlship.data.io import read_table
from mlship.errors import ConfigError, PipelineRejected
from mlship.fsutil import write_json, write_text, write_with
from mlship.registry import Registry

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlship.settings import DriftSettings, Settings

EPS = 1e-4
PROBABILITY = "__probability__"
"""Column holding the model's positive-class probability (from the log or from --model)."""
BINS = 10
TEST_SAMPLE = 50_000
MIN_ROWS = 1000


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift measures and verdict."""

    feature: str
    kind: str
    psi: float
    effect: float
    effect_name: str
    test: str
    p_value: float
    drifted: bool
    level: str
    shift: str = ""
    """The change in the feature's own units: median and mean before → after, W1 in units (numeric),
    or the category whose share moved most (categorical)."""


@dataclass
class DriftReport:
    """The whole comparison: per-feature results, dataset verdict, warnings."""

    reference: str
    current: str
    n_reference: int
    n_current: int
    features: list[FeatureDrift]
    drift_share: float
    dataset_drift: bool
    prediction: FeatureDrift | None = None
    prediction_source: str | None = None
    warnings: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)
    """The `[tool.mlship.drift]` settings the verdicts were decided with."""

    @property
    def drifted(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["drifted_features"] = self.drifted
        return d


def psi(ref: np.ndarray, cur: np.ndarray) -> float:
    """Population stability index on quantile bins taken from the reference."""
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)

    edges = np.unique(np.quantile(ref, np.linspace(0, 1, BINS + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1) / len(ref)
    c = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1) / len(cur)
    r, c = np.maximum(r, EPS), np.maximum(c, EPS)
    return float(np.sum((c - r) * np.log(c / r)))


def _categorical_psi(r: np.ndarray, c: np.ndarray) -> float:
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)

    r, c = np.maximum(r, EPS), np.maximum(c, EPS)
    return float(np.sum((c - r) * np.log(c / r)))


def _sample(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= TEST_SAMPLE else rng.choice(x, TEST_SAMPLE, replace=False)


def numeric_drift(name: str, ref: np.ndarray, cur: np.ndarray, cfg: DriftSettings) -> FeatureDrift:
    """PSI + normalised Wasserstein (full data) + KS p-value (subsample)."""
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)
    from scipy import stats  # noqa: PLC0415 - scipy: heavy, imported where it is used (off `--help` and the light paths)

    ref = ref[~np.isnan(ref)]
    cur = cur[~np.isnan(cur)]
    p = psi(ref, cur)
    std = float(np.std(ref)) or 1.0
    w = float(_wasserstein_sorted(np.sort(ref), np.sort(cur))) / std
    rng = np.random.default_rng(0)
    pv = float(stats.ks_2samp(_sample(ref, rng), _sample(cur, rng)).pvalue)
    drifted = w >= cfg.wasserstein_threshold or p >= cfg.psi_fail
    level = "fail" if drifted else ("warn" if p >= cfg.psi_warn else "ok")
    raw_w = w * std
    shift = (
        f"median {_n(np.median(ref))} → {_n(np.median(cur))}, mean {_n(np.mean(ref))} → {_n(np.mean(cur))} "
        f"(W1 {_n(raw_w)} = {w:.2f} SD of {_n(std)})"
        if len(ref) and len(cur)
        else "no values"
    )
    return FeatureDrift(name, "numeric", p, w, "wasserstein_norm", "ks", pv, drifted, level, shift)


def _n(x: float) -> str:
    """A number in its own units, short: 3 significant digits, no exponent for everyday magnitudes."""
    value = float(x)
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _wasserstein_sorted(a: np.ndarray, b: np.ndarray) -> float:
    """W1 between two samples via their quantile functions on a common grid (vectorised)."""
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)

    q = np.linspace(0, 1, 2001)
    return float(np.mean(np.abs(np.quantile(a, q, method="linear") - np.quantile(b, q, method="linear"))))


def categorical_drift(name: str, ref: pd.Series, cur: pd.Series, cfg: DriftSettings) -> FeatureDrift:
    """PSI + Jensen-Shannon distance on category frequencies + chi-square p-value."""
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)
    from scipy import stats  # noqa: PLC0415 - scipy: heavy, imported where it is used (off `--help` and the light paths)
    from scipy.spatial.distance import jensenshannon  # noqa: PLC0415 - scipy: heavy, imported where it is used (off `--help` and the light paths)

    rc = ref.astype("string").fillna("<NA>").value_counts()
    cc = cur.astype("string").fillna("<NA>").value_counts()
    cats = rc.index.union(cc.index)
    r = rc.reindex(cats, fill_value=0).to_numpy(float)
    c = cc.reindex(cats, fill_value=0).to_numpy(float)
    rp, cp = r / r.sum(), c / c.sum()
    js = float(jensenshannon(rp, cp, base=2))
    p = _categorical_psi(rp, cp)
    scale = min(1.0, TEST_SAMPLE / max(r.sum(), c.sum()))
    table = np.vstack([r, c]) * scale + 0.5
    pv = float(stats.chi2_contingency(table, correction=False).pvalue)
    drifted = js >= cfg.jensen_shannon_threshold or p >= cfg.psi_fail
    level = "fail" if drifted else ("warn" if p >= cfg.psi_warn else "ok")
    moved = int(np.argmax(np.abs(cp - rp)))
    shift = f"'{cats[moved]}' {rp[moved]:.1%} → {cp[moved]:.1%} of rows"
    return FeatureDrift(name, "categorical", p, js, "jensen_shannon", "chi2", pv, drifted, level, shift)


def load_current(path: Path) -> pd.DataFrame:
    """A CSV/Parquet data file, or a JSONL prediction log (features from ``inputs``)."""
    import pandas as pd  # noqa: PLC0415 - pandas: heavy, imported where it is used (off `--help` and the light paths)

    if path.suffix.lower() in {".jsonl", ".ndjson"}:
        if not path.exists():
            raise ConfigError(f"cannot read {path}: no such file", hint="pass an existing prediction log")
        try:
            log = pd.read_json(path, lines=True)
        except ValueError as exc:
            raise ConfigError(f"cannot read {path}: not JSON lines ({exc})", hint="one JSON object per line") from exc
        if "inputs" not in log.columns:
            raise ConfigError(f"{path} has no 'inputs' key", hint="use the server's prediction log format")
        frame = pd.json_normalize(log["inputs"].tolist())
        if "probability" in log.columns:
            frame[PROBABILITY] = pd.to_numeric(log["probability"], errors="coerce")
        return frame
    return read_table(path)


def compare(settings: Settings, ref: pd.DataFrame, cur: pd.DataFrame, *, ref_name: str, cur_name: str) -> DriftReport:
    """Compare every configured feature present in both frames."""
    import numpy as np  # noqa: PLC0415 - numpy: heavy, imported where it is used (off `--help` and the light paths)

    cfg = settings.drift
    feats: list[FeatureDrift] = []
    missing = [f for f in settings.categorical_features + settings.numeric_features if f not in cur.columns]
    if missing or len(ref) == 0 or len(cur) == 0:
        raise ConfigError(
            f"cannot compare: missing features {missing} or empty input",
            hint="pass files with the configured feature columns",
        )
    for f in settings.numeric_features:
        if f not in ref.columns:
            raise ConfigError(f"reference has no column {f!r}", hint="pass the training data as --reference")
        feats.append(
            numeric_drift(f, ref[f].to_numpy(float, na_value=np.nan), cur[f].to_numpy(float, na_value=np.nan), cfg)
        )
    for f in settings.categorical_features:
        if f not in ref.columns:
            raise ConfigError(f"reference has no column {f!r}", hint="pass the training data as --reference")
        feats.append(categorical_drift(f, ref[f], cur[f], cfg))
    warnings = []
    if min(len(ref), len(cur)) < MIN_ROWS:
        warnings.append(
            f"small sample ({min(len(ref), len(cur))} rows < {MIN_ROWS}): PSI is biased upward, "
            "treat results as indicative"
        )
    prediction = None
    if PROBABILITY in cur.columns and PROBABILITY in ref.columns:
        prediction = numeric_drift(
            "prediction_probability",
            ref[PROBABILITY].to_numpy(float, na_value=np.nan),
            cur[PROBABILITY].to_numpy(float, na_value=np.nan),
            cfg,
        )
    elif PROBABILITY in cur.columns:
        warnings.append(
            "the current log has predictions but the reference has none: "
            "pass --model to score the reference and report prediction drift"
        )
    share = sum(f.drifted for f in feats) / len(feats)
    return DriftReport(
        reference=ref_name,
        current=cur_name,
        n_reference=len(ref),
        n_current=len(cur),
        features=feats,
        drift_share=share,
        dataset_drift=share >= cfg.drift_share,
        prediction=prediction,
        warnings=warnings,
        thresholds=cfg.model_dump(),
    )


def render_markdown(report: DriftReport) -> str:
    """Human report: verdict, per-feature table, warnings, figures."""
    verdict = "DRIFT" if report.dataset_drift else "no dataset drift"
    lines = [
        f"# Drift report: {verdict}",
        "",
        f"Reference `{report.reference}` ({report.n_reference} rows) vs current `{report.current}` "
        f"({report.n_current} rows). Drifted share {report.drift_share:.0%}.",
        "",
    ]
    t = report.thresholds
    if t:
        lines += [
            f"Thresholds (`[tool.mlship.drift]`): a numeric feature drifts at normalised Wasserstein ≥ "
            f"{t['wasserstein_threshold']:g} (W1 in reference SDs), a categorical one at Jensen-Shannon ≥ "
            f"{t['jensen_shannon_threshold']:g}; either at PSI ≥ {t['psi_fail']:g} (warn ≥ {t['psi_warn']:g}); "
            f"the dataset drifts when ≥ {t['drift_share']:.0%} of features do.",
            "",
        ]
    if report.prediction is not None:
        p = report.prediction
        lines += [
            f"Prediction drift ({report.prediction_source}): "
            f"{'DRIFT' if p.drifted else p.level}, {p.effect_name}={p.effect:.4f}, PSI={p.psi:.4f}.",
            "",
        ]
    lines += [
        "| feature | kind | shift (in the feature's units) | effect | value | PSI | test p | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = report.features + ([report.prediction] if report.prediction else [])
    for f in rows:
        lines.append(
            f"| {f.feature} | {f.kind} | {f.shift or '—'} | {f.effect_name} | {f.effect:.4f} | {f.psi:.4f} "
            f"| {f.test} {f.p_value:.3g} | {'DRIFT' if f.drifted else f.level} |"
        )
    lines += [""] + [f"> {w}" for w in report.warnings] + [f"![{Path(p).stem}]({Path(p).name})" for p in report.figures]
    return "\n".join(lines) + "\n"


def _plot(ref: pd.Series, cur: pd.Series, kind: str, title: str, dest: Path) -> Path:
    import matplotlib  # noqa: PLC0415 - matplotlib: heavy, imported where it is used (off `--help` and the light paths)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - matplotlib: heavy, imported where it is used (off `--help` and the light paths)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if kind == "numeric":
        ax.hist([ref.dropna(), cur.dropna()], bins=40, density=True, label=["reference", "current"], alpha=0.7)
    else:
        import pandas as pd  # noqa: PLC0415 - pandas: heavy, imported where it is used (off `--help` and the light paths)

        freq = pd.DataFrame(
            {"reference": ref.value_counts(normalize=True), "current": cur.value_counts(normalize=True)}
        ).fillna(0)
        freq.plot.bar(ax=ax)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    write_with(dest, lambda p: fig.savefig(p, format="png", dpi=80))
    plt.close(fig)
    return dest


def score(settings: Settings, model: Any, frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """``frame`` with the model's positive-class probability in the PROBABILITY column."""
    missing = [f for f in settings.features if f not in frame.columns]
    if missing:
        raise ConfigError(f"cannot score {name}: missing features {missing}", hint="pass files with the model's inputs")
    try:
        proba = model.predict_proba(frame[settings.features])[:, 1]
    except (ValueError, TypeError, KeyError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"the model cannot score {name}: {first}", hint="is it the model trained on this schema?"
        ) from None
    return frame.assign(**{PROBABILITY: proba})


def detect(
    settings: Settings,
    reference_path: Path,
    current_path: Path,
    report_dir: Path | None = None,
    model_ref: str | None = None,
) -> DriftReport:
    """Compare files, write drift.json/.md and one PNG per drifted feature; return the report.

    With ``model_ref`` the reference, and the current data when it has no logged
    probabilities, are scored so that prediction drift is reported too.
    """
    ref = read_table(reference_path)
    cur = load_current(current_path)
    source = "prediction log" if PROBABILITY in cur.columns else None
    if model_ref is not None:
        registry = Registry.from_settings(settings)
        resolved = registry.resolve(model_ref)
        model = registry.load_model(resolved)
        ref = score(settings, model, ref, str(reference_path))
        if PROBABILITY in cur.columns:
            source = f"reference scored with {resolved.uri}, current from the prediction log"
        else:
            cur = score(settings, model, cur, str(current_path))
            source = f"both scored with {resolved.uri}"
    report = compare(settings, ref, cur, ref_name=str(reference_path), cur_name=str(current_path))
    if report.prediction is not None:
        report.prediction_source = source
    out = report_dir or settings.reports_path
    for f in report.features:
        if f.drifted:
            report.figures.append(
                str(
                    _plot(
                        ref[f.feature],
                        cur[f.feature],
                        f.kind,
                        f"{f.feature}: {f.effect_name}={f.effect:.3f}",
                        out / f"drift_{f.feature}.png",
                    )
                )
            )
    if report.prediction is not None and report.prediction.drifted:
        p = report.prediction
        figure = _plot(
            ref[PROBABILITY],
            cur[PROBABILITY],
            "numeric",
            f"prediction: {p.effect_name}={p.effect:.3f}",
            out / "drift_prediction.png",
        )
        report.figures.append(str(figure))
    write_json(out / "drift.json", report.to_dict())
    write_text(out / "drift.md", render_markdown(report))
    return report


def check(report: DriftReport) -> int:
    """Exit code for a report: 0 none, raises PipelineRejected (exit 1) on dataset drift."""
    if report.dataset_drift:
        raise PipelineRejected(
            f"dataset drift: {len(report.drifted)}/{len(report.features)} features drifted "
            f"({', '.join(report.drifted)})",
            hint="see drift.md; retrain on recent data",
        )
    return 0
