"""`mlship data …`: make datasets (synthetic, drifted, deliberately broken)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlship import cli
from mlship.data.io import read_table
from mlship.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from mlship.settings import Settings

CORRUPTIONS = [
    "nulls",
    "negative_amounts",
    "unknown_category",
    "missing_column",
    "wrong_dtype",
    "duplicate_ids",
    "out_of_range_hour",
    "empty",
]

data_app = typer.Typer(
    rich_markup_mode=None,
    help="Make datasets: synthetic card-fraud data, with drift or injected defects.",
    no_args_is_help=True,
)


@data_app.command("synth")
def synth(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Output file; .csv or .parquet decides the format.")],
    rows: Annotated[int, typer.Option("--rows", min=1, help="Number of transactions.")] = 20_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, byte-identical file.")] = 42,
    drift: Annotated[
        float, typer.Option("--drift", min=0.0, help="Shift the feature distributions (0 none, 0.5 moderate).")
    ] = 0.0,
    corrupt: Annotated[
        str | None,
        typer.Option("--corrupt", help=f"Inject one defect: {', '.join(CORRUPTIONS)}.", metavar="KIND"),
    ] = None,
) -> None:
    """Write a deterministic synthetic card-fraud dataset."""
    if corrupt is not None and corrupt not in CORRUPTIONS:
        raise typer.BadParameter(
            f"unknown defect {corrupt!r}; choose one of: {', '.join(CORRUPTIONS)}", param_hint="--corrupt"
        )

    def action(settings: Settings) -> int:
        from mlship.data.synth import write_synthetic  # noqa: PLC0415 - pulls in the heavy stack of its stage: kept off `--help`

        summary = write_synthetic(out, rows=rows, seed=seed, drift=drift, corruption=corrupt)
        cli.console().print(summary)
        return 0

    cli.run(ctx, action)


def validate(
    ctx: typer.Context,
    data: Annotated[Path | None, typer.Option("--data", help="CSV or Parquet file (default: `data` setting).")] = None,
    suite: Annotated[
        Path | None, typer.Option("--suite", help="Expectation suite JSON (default: `suite` setting).")
    ] = None,
    report_dir: Annotated[
        Path | None, typer.Option("--report-dir", help="Where validate.json/.md go (default: .mlship/reports).")
    ] = None,
    init: Annotated[
        bool, typer.Option("--init", help="Write a suite for the configured schema (profiled from --data) and exit.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="With --init: overwrite an existing suite.")] = False,
) -> None:
    """Validate a dataset against its expectation suite (exit 0 valid, 1 invalid, 2 unreadable)."""

    def action(settings: Settings) -> int:
        from mlship.data import validation  # noqa: PLC0415 - pulls in the heavy stack of its stage: kept off `--help`

        data_path = data or settings.data_path
        suite_path = suite or settings.suite_path
        out = console()
        if init:
            if suite_path.exists() and not force:
                raise ConfigError(f"suite {suite_path} already exists", hint="pass --force to overwrite it")

            sample = read_table(data_path) if data_path.exists() else None
            validation.write_suite(validation.init_suite(settings, sample), suite_path)
            source = f"profiled from {data_path}" if sample is not None else "schema only (no data to profile)"
            out.print(f"wrote expectation suite {suite_path} ({source})")
            return 0
        report = validation.validate_file(data_path, suite_path, settings)
        if report.note:
            print(f"mlship: note: {report.note}", file=sys.stderr)
        reports = report_dir or settings.reports_path
        _, md = validation.write_report(report, reports)
        print_validation(report)
        out.print(f"report: {md}")
        return 0 if report.valid else 1

    cli.run(ctx, action)


def print_validation(report: object) -> None:
    """A rich table of failures and warnings, and the verdict line."""
    from rich.table import Table  # noqa: PLC0415 - rich: heavy, imported where it is used (off `--help` and the light paths)

    from mlship.data.validation import ValidationReport, describe_observed  # noqa: PLC0415 - pulls in the heavy stack of its stage: kept off `--help`

    assert isinstance(report, ValidationReport)
    out = console()
    bad = report.failures + report.warnings
    if bad:
        table = Table(title="Failed expectations", show_lines=False)
        for col in ("severity", "expectation", "column", "expected", "observed", "sample"):
            table.add_column(col, overflow="fold")
        for o in bad:
            table.add_row(
                o.severity,
                o.expectation.removeprefix("expect_"),
                o.column or "—",
                _brief(o.expected),
                describe_observed(o),
                _brief(o.sample) if o.sample else "—",
            )
        out.print(table)
    verdict = "VALID" if report.valid else "INVALID"
    out.print(
        f"{verdict}: {report.data}: {report.rows:,} rows, {len(report.outcomes)} expectations, "
        f"{len(report.failures)} failed, {len(report.warnings)} warnings"
    )


def _brief(value: object, limit: int = 60) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def console() -> Console:
    return cli.console()


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
    app.command("validate")(validate)
