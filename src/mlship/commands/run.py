"""`mlship run`: the main job, every ML stage in order on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlship import cli

if TYPE_CHECKING:
    from mlship.settings import Settings


def run(
    ctx: typer.Context,
    data: Annotated[
        Path | None, typer.Option("--data", help="Training data (default: `data`; synthesized if missing).")
    ] = None,
    rows: Annotated[
        int | None, typer.Option("--rows", min=100, help="Rows to synthesize when the data file is missing.")
    ] = None,
    drift: Annotated[
        float | None,
        typer.Option(
            "--drift",
            min=0.0,
            help=(
                "Then demonstrate monitoring: synthesize data with this drift, check, retrain on drift, "
                "gate the retrain, register it only if it passes."
            ),
        ),
    ] = None,
    no_deploy: Annotated[
        bool,
        typer.Option("--no-deploy", help="Stop after register: no local staging deploy (for CI jobs that only train)."),
    ] = False,
) -> None:
    """Run the pipeline: synth (if needed) → validate → train → gate → register @challenger → deploy (local)."""

    def action(settings: Settings) -> int:
        from mlship import job  # noqa: PLC0415 - every stage (numpy and more at import): kept off `--help`

        err = cli.err_console()
        summary = job.run(
            settings,
            data_path=data,
            rows=rows,
            drift=drift,
            deploy=not no_deploy,
            progress=lambda msg: err.print(f"mlship › {msg}", markup=False),
        )
        out = cli.console()
        out.print("")
        for s in summary.stages:
            out.print(f"  {s.name:<10} {s.seconds:6.1f}s  {s.detail}")
        out.print(f"  {'total':<10} {sum(s.seconds for s in summary.stages):6.1f}s")
        metrics = ", ".join(
            f"{k} {summary.metrics[k]:.4f}" for k in ("roc_auc", "pr_auc", "f1") if k in summary.metrics
        )
        out.print(f"\nrun id {summary.run_id} · {settings.model_name} v{summary.model_version} @challenger · {metrics}")
        if summary.live_url:
            out.print(f"live URL: {summary.live_url} (local/staging) · stop it with `mlship down`")
        out.print(f"reports: {summary.reports}/run.md")
        return 0

    cli.run(ctx, action)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
