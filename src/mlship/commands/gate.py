"""`mlship gate`: may this candidate ship? Gates against thresholds and the champion, with a report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlship import cli, notify
from mlship.errors import ConfigError

if TYPE_CHECKING:
    from mlship.model.gates.types import GateReport
    from mlship.settings import Settings


def gate(
    ctx: typer.Context,
    candidate: Annotated[
        str,
        typer.Option(
            "--candidate",
            help="Model to gate: models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model or a model directory.",
        ),
    ],
    champion: Annotated[
        str | None,
        typer.Option(
            "--champion",
            help="Model to compare with (default: models:/<model_name>@champion when that alias exists).",
        ),
    ] = None,
    no_champion: Annotated[
        bool, typer.Option("--no-champion", help="Skip the comparison: gate on absolute thresholds only.")
    ] = False,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="Data whose deterministic test split is scored (default: eval_data whole, else data)."
        ),
    ] = None,
    report_dir: Annotated[
        Path | None,
        typer.Option("--report-dir", help="Folder for gate.json, gate.md and the plots (default: <reports>/gate)."),
    ] = None,
    register: Annotated[
        bool, typer.Option("--register", help="On pass, register the candidate and point @challenger at it.")
    ] = False,
) -> None:
    """Evaluate the candidate (and champion) on held-out data: exit 0 pass, 1 fail, 3 champion unloadable."""

    def action(settings: Settings) -> int:
        from mlship.model.gates.run import run_gate  # noqa: PLC0415 - numpy (the served path) and more: kept off `--help`

        if champion and no_champion:
            raise ConfigError("--champion and --no-champion contradict each other", hint="pass one of them")
        out_dir = report_dir or settings.reports_path / "gate"
        with cli.err_console().status("gating…"):
            report = run_gate(
                settings,
                candidate,
                champion=champion,
                no_champion=no_champion,
                data_path=data,
                report_dir=out_dir,
                register=register,
            )
        _print(report, out_dir)
        notify.gate(settings, report, out_dir)
        return 0 if report.passed else 1

    cli.run(ctx, action)


def _print(report: GateReport, out_dir: Path) -> None:
    from rich.table import Table  # noqa: PLC0415 - rich: heavy, imported where it is used (off `--help` and the light paths)

    # the gate's renderer comes with the gate: kept off `--help` like the rest of the command
    from mlship.model.gates.report import ICON, failing_settings, gate_threshold, gate_value  # noqa: PLC0415 - pulls in the heavy stack of its stage: kept off `--help`

    table = Table(title=f"gate: {report.candidate.label} on {report.data['rows']:,} rows")
    for col in ("", "gate", "value", "threshold", "detail"):
        table.add_column(col, justify="right" if col == "value" else "left", overflow="fold")
    for g in report.gates:
        table.add_row(ICON[g.status], g.name, gate_value(g), gate_threshold(g), g.detail)
    out = cli.console()
    out.print(table)
    if report.registered:
        out.print(f"registered: {report.registered}")
    if report.logged_to_run:
        out.print(f"logged to run {report.logged_to_run}")
    out.print(f"report: {out_dir / 'gate.md'}")
    if not report.passed:
        out.print(f"{ICON['fail']} gate FAIL: {report.summary}", markup=False)
        out.print(f"to change what failed: {failing_settings(report)}", markup=False)
    elif report.inconclusive:
        out.print(f"{ICON['inconclusive']} gate PASS, not enough evidence: {report.summary}", markup=False)
        policies = ", ".join(dict.fromkeys(g.setting for g in report.inconclusive))
        out.print(f"{ICON['inconclusive']} {report.warning}; let pass by {policies}", markup=False)
    else:
        out.print(f"{ICON['pass']} gate PASS: {report.summary}", markup=False)


def register(app: typer.Typer) -> None:
    app.command("gate")(gate)
