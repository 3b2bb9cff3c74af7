"""A validation run's result (each expectation's outcome, the report) and its validate.json/validate.md renderings."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlship.fsutil import write_json, write_text
from mlship.report_text import MAX_TEXT, cell, code, one_line

SAMPLE = 10
"""How many offending values an outcome keeps as its sample."""


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's verdict, in words a data engineer acts on."""

    expectation: str
    column: str | None
    severity: str
    success: bool
    expected: dict[str, Any]
    observed: Any = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    sample: list[Any] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class ValidationReport:
    """The result of `mlship validate`: valid unless a critical expectation failed."""

    data: str
    suite: str
    rows: int
    columns: int
    outcomes: list[ExpectationOutcome]
    note: str | None = None
    """One line for the user that is not a failure (e.g. the suite predates column kinds)."""

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success and o.severity == "critical"]

    @property
    def warnings(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success and o.severity != "critical"]

    @property
    def valid(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "data": self.data,
            "suite": self.suite,
            "rows": self.rows,
            "columns": self.columns,
            "evaluated": len(self.outcomes),
            "failed": len(self.failures),
            "warnings": len(self.warnings),
            "outcomes": [asdict(o) for o in self.outcomes],
            "note": self.note,
        }


def plain(value: Any) -> Any:
    """JSON-friendly scalars (numpy → python, NaN → None)."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, str):
        return one_line(value, MAX_TEXT) if len(value) > MAX_TEXT else value  # a column name or cell from the file
    if value is None or isinstance(value, (int, float, bool)):
        return value
    return one_line(value, MAX_TEXT)


def write_report(report: ValidationReport, report_dir: Path) -> tuple[Path, Path]:
    """validate.json (machine) and validate.md (human), both atomic."""
    js = write_json(report_dir / "validate.json", report.to_dict())
    md = write_text(report_dir / "validate.md", render_markdown(report))
    return js, md


def render_markdown(report: ValidationReport) -> str:
    verdict = "✅ **Data valid**" if report.valid else "❌ **Data invalid**"
    lines = [
        f"# Data validation: {verdict}",
        "",
        f"{code(report.data)} ({report.rows:,} rows × {report.columns} columns) against {code(report.suite)}: "
        f"{len(report.outcomes)} expectations, {len(report.failures)} failed, {len(report.warnings)} warnings.",
        "",
    ]
    for title, rows in (("Failed (critical)", report.failures), ("Warnings", report.warnings)):
        if not rows:
            continue
        lines += [
            f"## {title}",
            "",
            "| expectation | column | expected | observed | offending sample |",
            "|---|---|---|---|---|",
        ]
        for o in rows:
            lines.append(
                f"| {cell(o.expectation)} | {cell(o.column or '—')} | {cell(_short(o.expected))} | "
                f"{cell(describe_observed(o), 2 * MAX_TEXT)} | {cell(_short(o.sample)) if o.sample else '—'} |"
            )
        lines.append("")
    passed = [o for o in report.outcomes if o.success]
    if passed:
        lines += ["<details><summary>Passed expectations</summary>", ""]
        lines += [f"- {cell(o.expectation)} ({cell(o.column or 'table')})" for o in passed]
        lines += ["", "</details>", ""]
    return "\n".join(lines)


def describe_observed(o: ExpectationOutcome) -> str:
    """What was observed, in one bounded line (column names come from the file: see report_text)."""
    return one_line(_observed(o), 2 * MAX_TEXT)


def _observed(o: ExpectationOutcome) -> str:
    if o.error:
        return o.error
    if o.expectation == "expect_table_columns_to_match_set" and isinstance(o.observed, list):
        expected = [str(c) for c in o.expected.get("column_set") or []]
        missing = [c for c in expected if c not in o.observed]
        extra = [c for c in o.observed if c not in expected]
        return "; ".join(
            part
            for part in (
                f"missing: {', '.join(missing)}" if missing else "",
                f"unexpected: {', '.join(extra)}" if extra else "",
            )
            if part
        ) or _short(o.observed)
    if o.unexpected_count:
        pct = f" ({o.unexpected_percent:.2f}%)" if o.unexpected_percent is not None else ""
        return f"{o.unexpected_count:,} unexpected{pct}"
    return _short(o.observed) if o.observed is not None else "—"


def _short(value: Any, limit: int = 80) -> str:
    """A value in one line of at most `limit` characters (markdown escaping is `cell`'s job)."""
    text = json.dumps(value, default=str) if not isinstance(value, str) else one_line(value, limit)
    return text if len(text) <= limit else text[: limit - 1] + "…"
