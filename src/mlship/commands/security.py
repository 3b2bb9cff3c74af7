"""`mlship scan-gate`: decide on a Trivy JSON report (exit 0 clean, 1 findings, 2 not a report)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlship import cli

if TYPE_CHECKING:
    from mlship.settings import Settings


def scan_gate(
    ctx: typer.Context,
    report: Annotated[Path, typer.Option("--report", help="Trivy report written with --format json.")],
    severity: Annotated[
        str, typer.Option("--severity", help="Fail on findings at or above this level (LOW, MEDIUM, HIGH, CRITICAL).")
    ] = "HIGH",
    ignore_unfixed: Annotated[
        bool, typer.Option("--ignore-unfixed", help="Skip vulnerabilities that have no fixed version yet.")
    ] = False,
    ignore_file: Annotated[
        Path, typer.Option("--ignore-file", help="Accepted IDs, one a line, '#' comments, optional exp:YYYY-MM-DD.")
    ] = Path(".trivyignore"),
    report_dir: Annotated[
        Path | None, typer.Option("--report-dir", help="Where scan-gate.json/.md go (default: .mlship/reports).")
    ] = None,
) -> None:
    """Gate an image on its Trivy scan: vulnerabilities, failed misconfigurations, secrets."""

    def action(settings: Settings) -> int:
        from rich.table import Table

        from mlship.security.trivy import scan_gate as run_gate

        result = run_gate(
            report,
            severity=severity,
            ignore_unfixed=ignore_unfixed,
            ignore_file=ignore_file,
            report_dir=report_dir if report_dir is not None else settings.reports_path,
        )
        console = cli.console()
        if result.blocking:
            table = Table(title=f"Findings at or above {result.severity}")
            for column in ("severity", "kind", "id", "target", "package", "installed", "fixed in"):
                table.add_column(column)
            for f in result.blocking:
                table.add_row(f.severity, f.kind, f.id, f.target, f.package, f.installed, f.fixed or "-")
            console.print(table)
        for expired in result.expired_ignores:
            cli.err_console().print(f"warning: ignore entry {expired} is no longer honoured")
        for warning in result.ignore_policy_warnings:
            cli.err_console().print(f"warning: ignore entry {warning}")
        console.print(
            f"scan gate {'PASSED' if result.passed else 'FAILED'}: {len(result.blocking)} blocking, "
            f"{len(result.ignored)} ignored, {len(result.below_threshold)} below {result.severity}, "
            f"{len(result.unfixed_skipped)} unfixed skipped"
        )
        return 0 if result.passed else 1

    cli.run(ctx, action)


def register(app: typer.Typer) -> None:
    app.command("scan-gate")(scan_gate)
