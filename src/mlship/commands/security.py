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
    strict: Annotated[
        bool,
        typer.Option(
            "--strict", help="Also fail on unfixed vulnerabilities at or above the threshold and on stale ignores."
        ),
    ] = False,
) -> None:
    """Gate an image on its Trivy scan: fixable findings at or above the threshold fail.

    Vulnerabilities with no fixed version yet are listed (count per severity, top packages) and
    fail only with --strict or `[tool.mlship.scan] fail_on_unfixed = true`; an ignore entry that
    matches nothing in the report is reported as stale (and fails with --strict).
    """

    def action(settings: Settings) -> int:
        from rich.table import Table  # noqa: PLC0415 - rich: heavy, imported where it is used (off `--help` and the light paths)

        from mlship.security.trivy import scan_gate as run_gate  # noqa: PLC0415 - pulls in the heavy stack of its stage: kept off `--help`

        result = run_gate(
            report,
            severity=severity,
            ignore_unfixed=ignore_unfixed,
            ignore_file=ignore_file,
            report_dir=report_dir if report_dir is not None else settings.reports_path,
            strict=strict,
            fail_on_unfixed=settings.scan.fail_on_unfixed,
        )
        console = cli.console()
        if result.blocking:
            table = Table(title=f"Findings at or above {result.severity}")
            for column in ("severity", "kind", "id", "target", "package", "installed", "fixed in"):
                table.add_column(column)
            for f in result.blocking:
                table.add_row(f.severity, f.kind, f.id, f.target, f.package, f.installed, f.fixed or "-")
            console.print(table)
        if result.unfixed:
            counts = ", ".join(f"{n} {sev}" for sev, n in result.unfixed_counts().items())
            top = ", ".join(f"{r['package']} ({r['count']})" for r in result.top_unfixed_packages())
            failing = result.strict or result.fail_on_unfixed
            console.print(
                f"unfixed (no fixed version yet): {counts}; top packages: {top}"
                + ("" if failing else " — listed, not failing (--strict or scan.fail_on_unfixed = true to fail)"),
                markup=False,
            )
        for expired in result.expired_ignores:
            cli.err_console().print(f"warning: ignore entry {expired} is no longer honoured")
        for stale in result.stale_ignores:
            cli.err_console().print(f"warning: stale ignore entry {stale}: remove it", markup=False)
        for warning in result.ignore_policy_warnings:
            cli.err_console().print(f"warning: ignore entry {warning}")
        console.print(
            f"scan gate {'PASSED' if result.passed else 'FAILED'}: {len(result.blocking)} blocking, "
            f"{len(result.unfixed)} unfixed, {len(result.ignored)} ignored, {len(result.below_threshold)} below "
            f"{result.severity}, {len(result.unfixed_skipped)} unfixed skipped, {len(result.stale_ignores)} stale "
            "ignore(s)" + (f" ({'; '.join(result.failures)})" if result.failures else "")
        )
        return 0 if result.passed else 1

    cli.run(ctx, action)


def register(app: typer.Typer) -> None:
    app.command("scan-gate")(scan_gate)
