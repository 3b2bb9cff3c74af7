"""`mlship data …`: make datasets (synthetic, drifted, deliberately broken)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlship import cli

if TYPE_CHECKING:
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
        from mlship.data.synth import write_synthetic

        summary = write_synthetic(out, rows=rows, seed=seed, drift=drift, corruption=corrupt)
        cli.console().print(summary)
        return 0

    cli.run(ctx, action)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
