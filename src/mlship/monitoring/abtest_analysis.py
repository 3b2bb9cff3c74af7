"""A/B analysis from an events file: one row per exposed unit, an arm and a 0/1 outcome.

Reads CSV, Parquet or JSON lines, counts successes per arm, runs the decision of
:mod:`mlship.monitoring.abtest` plus a sample-ratio-mismatch check, and writes
``abtest.json`` / ``abtest.md`` atomically. An SRM (p < ``SRM_ALPHA``) means the split
itself is broken (logging, routing or bot traffic), so no decision built on it is trusted:
the report's state becomes ``srm`` whatever the z-test says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlship.data.io import read_table
from mlship.errors import ConfigError
from mlship.fsutil import write_json, write_text
from mlship.monitoring.abtest import MAX_LOOKS, AbDecision, decide, sample_ratio_mismatch
from mlship.report_text import MAX_TEXT, cell, code, one_line

if TYPE_CHECKING:
    import pandas as pd

SRM_ALPHA = 0.001
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
State = Literal["promote", "reject", "inconclusive", "srm"]


@dataclass(frozen=True)
class Arm:
    """One arm's name, successes and exposures."""

    name: str
    successes: int
    n: int

    @property
    def rate(self) -> float:
        return self.successes / self.n if self.n else float("nan")


@dataclass
class AbReport:
    """Everything the decision rests on, for humans (abtest.md) and scripts (abtest.json)."""

    control: Arm
    treatment: Arm
    decision: AbDecision
    alpha: float
    power: float
    mde: float
    looks_done: int
    max_looks: int
    direction: str
    expected_treatment_share: float | None = None
    srm_p_value: float | None = None
    source: str | None = None
    action: str = "none"
    notes: list[str] = field(default_factory=list)

    @property
    def srm(self) -> bool:
        return self.srm_p_value is not None and self.srm_p_value < SRM_ALPHA

    @property
    def state(self) -> State:
        return "srm" if self.srm else self.decision.state

    @property
    def lift(self) -> float:
        """Absolute lift: treatment rate - control rate."""
        return self.treatment.rate - self.control.rate

    @property
    def relative_lift(self) -> float | None:
        return self.lift / self.control.rate if self.control.rate > 0 else None

    @property
    def next_look_n(self) -> int:
        """Per-arm n the next step is planned at: the required n (fixed horizon), else the next
        equally spaced look's share of the plan's maximum n."""
        if self.max_looks <= 1:
            return self.decision.required_n
        upcoming = min(self.looks_done + 1, self.max_looks)
        return math.ceil(self.decision.required_n * upcoming / self.max_looks)

    @property
    def need_per_arm(self) -> int:
        """More exposures per arm before the next planned step (the fixed-horizon n, or the next look)."""
        return max(self.next_look_n - min(self.control.n, self.treatment.n), 0)

    @property
    def summary(self) -> str:
        """The one line a user reads first."""
        if self.srm:
            share = self.treatment.n / (self.control.n + self.treatment.n)
            return (
                f"sample ratio mismatch: treatment got {share:.1%} of events, expected "
                f"{self.expected_treatment_share:.1%} (p={self.srm_p_value:.2g} < {SRM_ALPHA}); "
                "refusing to decide until the split is fixed"
            )
        d = self.decision
        if d.state == "inconclusive":
            more = f"need {self.need_per_arm} more per arm" if self.need_per_arm else "collect until the next look"
            if self.max_looks > 1:
                more += f" for look {self.looks_done + 1}/{self.max_looks} (planned at {self.next_look_n} per arm)"
            return f"inconclusive: keep collecting, {more} ({d.reason})"
        return f"{d.state}: {d.reason}"

    def to_dict(self) -> dict[str, Any]:
        d = self.decision
        return {
            "state": self.state,
            "summary": self.summary,
            "action": self.action,
            "source": self.source,
            "control": {
                "arm": self.control.name,
                "successes": self.control.successes,
                "n": self.control.n,
                "rate": self.control.rate,
            },
            "treatment": {
                "arm": self.treatment.name,
                "successes": self.treatment.successes,
                "n": self.treatment.n,
                "rate": self.treatment.rate,
            },
            "lift": self.lift,
            "relative_lift": self.relative_lift,
            "lift_ci": list(d.ci),
            "ci_level": 1 - 2 * self.alpha,
            "z": d.z,
            "p_value": d.p_value,
            "boundary": d.boundary,
            "required_n_per_arm": d.required_n,
            "need_per_arm": self.need_per_arm,
            "next_look_n_per_arm": self.next_look_n,
            "test_decision": d.state,
            "reason": d.reason,
            "srm": {
                "p_value": self.srm_p_value,
                "expected_treatment_share": self.expected_treatment_share,
                "threshold": SRM_ALPHA,
                "mismatch": self.srm,
            },
            "design": {
                "alpha": self.alpha,
                "power": self.power,
                "mde": self.mde,
                "look": self.looks_done,
                "max_looks": self.max_looks,
                "direction": self.direction,
            },
            "notes": self.notes,
        }


def read_events(
    path: Path, arm_column: str = "arm", outcome_column: str = "outcome", unit_column: str | None = None
) -> pd.DataFrame:
    """The two columns of an events file (CSV, Parquet or JSONL), validated: exit 2 on anything odd.

    With `unit_column` (e.g. `key_hash`, the hashed sticky key the servers log) the rows become
    one observation per unit: its arm (which must be the same for all its rows: a sticky split)
    and 1 if any of its rows succeeded. Exposures of one user are not independent; users are.
    """
    import pandas as pd  # noqa: PLC0415 - pandas: heavy, imported where it is used (off `--help` and the light paths)

    if path.suffix.lower() in JSONL_SUFFIXES:
        if not path.is_file():
            raise ConfigError(f"events file {path} does not exist", hint="pass an existing CSV, Parquet or JSONL file")
        try:
            frame = pd.read_json(path, lines=True) if path.stat().st_size else pd.DataFrame()
        except ValueError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"cannot read {path} as JSON lines: {first}", hint="one JSON object per line") from None
    else:
        frame = read_table(path)
    if frame.empty:
        raise ConfigError(f"events file {path} has no events", hint="export at least one row per arm")
    wanted = (arm_column, outcome_column, *((unit_column,) if unit_column else ()))
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"events file {path} has no column {', '.join(repr(c) for c in missing)} "
            f"(columns: {', '.join(map(str, frame.columns[:10]))})",
            hint="name them with --arm-column / --outcome-column / --unit-column",
        )
    outcome = _binary(frame[outcome_column], path, outcome_column)
    arms = frame[arm_column]
    if arms.isna().any():
        raise ConfigError(
            f"events file {path}: {int(arms.isna().sum())} rows have no {arm_column!r}",
            hint="every event needs the arm that served it",
        )
    rows = pd.DataFrame({"arm": arms.astype(str), "outcome": outcome})
    return rows if unit_column is None else per_unit(rows, frame[unit_column], path, unit_column)


def per_unit(rows: pd.DataFrame, units: pd.Series, path: Path, column: str) -> pd.DataFrame:
    """One row per unit: its single arm and whether any of its exposures succeeded."""
    import pandas as pd  # noqa: PLC0415 - pandas: heavy, imported where it is used (off `--help` and the light paths)

    if units.isna().any():
        raise ConfigError(
            f"events file {path}: {int(units.isna().sum())} rows have no {column!r}",
            hint="a per-key analysis needs every event's key; drop --unit-column to count exposures",
        )
    grouped = rows.assign(unit=units.astype(str).to_numpy()).groupby("unit")
    arms = grouped["arm"].nunique()
    mixed = arms[arms > 1]
    if len(mixed):
        raise ConfigError(
            f"events file {path}: {len(mixed)} of {len(arms)} keys in {column!r} were served by both arms "
            f"(e.g. {mixed.index[0]}), so the split was not sticky",
            hint="route the canary with --sticky-key, or analyse per exposure without --unit-column",
        )
    return pd.DataFrame({"arm": grouped["arm"].first(), "outcome": grouped["outcome"].max()}).reset_index(drop=True)


def _binary(values: pd.Series, path: Path, column: str) -> pd.Series:
    import pandas as pd  # noqa: PLC0415 - pandas: heavy, imported where it is used (off `--help` and the light paths)

    if values.dtype == bool:
        return values.astype("int64")
    numeric = pd.to_numeric(values, errors="coerce")
    bad = values[numeric.isna() | ~numeric.isin([0, 1])]
    if len(bad):
        examples = ", ".join(repr(v) for v in bad.drop_duplicates().head(3).tolist())
        raise ConfigError(
            f"events file {path}: column {column!r} must be 0/1, found {len(bad)} other values (e.g. {examples})",
            hint="encode the outcome as 1 (success) or 0",
        )
    return numeric.astype("int64")


def count_arms(events: pd.DataFrame, control: str, treatment: str, *, source: str = "events") -> tuple[Arm, Arm]:
    """Successes and exposures of the two named arms; arms the file has but nobody named are an error."""
    if control == treatment:
        raise ConfigError(f"control and treatment are the same arm {control!r}", hint="name two different arms")
    grouped = events.groupby("arm")["outcome"].agg(["sum", "count"])
    totals = {str(a): (int(s), int(n)) for a, s, n in zip(grouped.index, grouped["sum"], grouped["count"], strict=True)}
    present = list(totals)
    unknown = [a for a in present if a not in (control, treatment)]
    absent = [a for a in (control, treatment) if a not in present]
    if unknown or absent:
        what = f"unknown arms {unknown}" if unknown else f"no events for arm {absent[0]!r}"
        raise ConfigError(
            f"{source}: {what}; the file has arms {present}, control={control!r}, treatment={treatment!r}",
            hint="pass --control-arm / --treatment-arm matching the arm column",
        )
    return Arm(control, *totals[control]), Arm(treatment, *totals[treatment])


def analyse(
    control: Arm,
    treatment: Arm,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    mde: float = 0.01,
    looks_done: int = 1,
    max_looks: int = 1,
    direction: Literal["greater", "less"] = "greater",
    expected_treatment_share: float | None = None,
    source: str | None = None,
) -> AbReport:
    """The decision on two arms, plus the SRM check when the intended split is known."""
    if not 0 < alpha < 0.5 or not 0 < power < 1 or not 0 < mde < 1:
        raise ConfigError(
            f"invalid design alpha={alpha}, power={power}, mde={mde}",
            hint="use 0 < alpha < 0.5, 0 < power < 1, 0 < mde < 1",
        )
    if not 1 <= looks_done <= max_looks:
        raise ConfigError(f"look {looks_done} of {max_looks} is out of range", hint="use 1 <= --look <= --max-looks")
    if max_looks > MAX_LOOKS:
        raise ConfigError(
            f"{max_looks} planned looks is more than {MAX_LOOKS}",
            hint=f"plan at most {MAX_LOOKS} looks (e.g. one a day for a few weeks)",
        )
    if expected_treatment_share is not None and not 0 < expected_treatment_share < 1:
        raise ConfigError(
            f"treatment share {expected_treatment_share} is out of range", hint="use a fraction, e.g. 0.1 for 10%"
        )
    decision = decide(
        control.successes,
        control.n,
        treatment.successes,
        treatment.n,
        alpha=alpha,
        power=power,
        mde=mde,
        looks_done=looks_done,
        max_looks=max_looks,
        direction=direction,
    )
    srm_p = (
        sample_ratio_mismatch(control.n, treatment.n, expected_treatment_share)
        if expected_treatment_share is not None
        else None
    )
    report = AbReport(
        control,
        treatment,
        decision,
        alpha,
        power,
        mde,
        looks_done,
        max_looks,
        direction,
        expected_treatment_share,
        srm_p,
        source,
    )
    if srm_p is None:
        report.notes.append("no intended split given: sample-ratio-mismatch check skipped (pass --treatment-share)")
    return report


def render_markdown(report: AbReport) -> str:
    """abtest.md: verdict first, then the numbers a reviewer checks.

    Arm names come from the events file: each is a table cell escaped as the validate and batch
    reports escape data (report_text), so a `|`, a newline or HTML cannot break or inject into the report.
    """
    c, t, d = report.control, report.treatment, report.decision
    level = 1 - 2 * report.alpha
    rel = f" ({report.relative_lift:+.1%} relative)" if report.relative_lift is not None else ""
    srm = (
        f"p={report.srm_p_value:.3g} vs intended treatment share {report.expected_treatment_share:.1%} "
        f"-> {'MISMATCH' if report.srm else 'ok'}"
        if report.srm_p_value is not None
        else "not checked (intended split unknown)"
    )
    lines = [
        f"# A/B decision: {report.state}",
        "",
        report.summary,
        "",
        "| arm | role | successes | n | rate |",
        "|---|---|---|---|---|",
        f"| {cell(c.name)} | control | {c.successes} | {c.n} | {c.rate:.4f} |",
        f"| {cell(t.name)} | treatment | {t.successes} | {t.n} | {t.rate:.4f} |",
        "",
        f"- lift (treatment - control): {report.lift:+.4f}{rel}, {level:.0%} CI [{d.ci[0]:+.4f}, {d.ci[1]:+.4f}]",
        f"- one-sided test ({report.direction}): z={d.z:.3f}, p={d.p_value:.4g}, boundary z>={d.boundary:.3f} "
        f"(look {report.looks_done}/{report.max_looks})",
        f"- required n per arm: {d.required_n}{' at the last look' if report.max_looks > 1 else ''} "
        f"(alpha {report.alpha}, power {report.power}, mde {report.mde}); next step at {report.next_look_n} "
        f"per arm, need {report.need_per_arm} more",
        f"- sample ratio: {srm}",
        f"- action: {one_line(report.action, 2 * MAX_TEXT)}",
    ]
    if report.source:
        lines.append(f"- events: {code(report.source)}")
    lines += [f"> {one_line(n, 2 * MAX_TEXT)}" for n in report.notes]
    return "\n".join(lines) + "\n"


def write_report(report: AbReport, out_dir: Path) -> tuple[Path, Path]:
    """abtest.json + abtest.md, each written atomically."""
    return write_json(out_dir / "abtest.json", report.to_dict()), write_text(
        out_dir / "abtest.md", render_markdown(report)
    )
