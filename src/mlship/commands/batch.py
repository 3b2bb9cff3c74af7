"""`mlship predict-batch`: score files, folders or an object-store prefix into a Parquet dataset."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlship import cli

if TYPE_CHECKING:
    from mlship.batch.run import BatchResult
    from mlship.settings import Settings


PREDICT_BATCH_HELP = """\
Score files or an object-store prefix in chunks into Parquet, recording the model version in its metadata.

Rows are validated like /predict requests; a bad row is never scored silently (see --bad-rows).
A re-run skips the parts already written (same input: size, mtime and a content key; same model and policy).
"""


def predict_batch(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="Model URI (models:/name@alias, runs:/id/model, or a dir).")],
    input_path: Annotated[
        str,
        typer.Option(
            "--input",
            help="What to score: a CSV/Parquet file, a folder or glob of them, or an s3://bucket/prefix (any size).",
        ),
    ],
    output: Annotated[
        str,
        typer.Option(
            "--output",
            help="A .parquet file (one input), or a folder / s3:// prefix: one Parquet part per input, "
            "each written atomically, and a _SUCCESS manifest last.",
        ),
    ],
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=1, help="Rows scored per chunk.")] = 100_000,
    bad_rows: Annotated[
        str,
        typer.Option(
            "--bad-rows",
            help="Rows that fail the model's input schema (as /predict would reject them): 'refuse' writes no part "
            "holding one and exits 1 saying how many and why; 'flag' scores the rest and adds an input_error column.",
        ),
    ] = "refuse",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Redo parts an earlier run already wrote from the same input.")
    ] = False,
    report_dir: Annotated[
        str | None,
        typer.Option(
            "--report-dir",
            help="Where batch.md/json/png go (a folder or s3:// prefix); default: beside the output file, "
            "or _report/ in the output dataset.",
        ),
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option("--reference", help="Data to measure input drift against (default: [tool.mlship] data)."),
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="'local' scores in chunks on this machine; 'spark' scores each input through MLflow's Spark UDF "
            "on a Spark session into the same Parquet dataset, manifest and report (needs Java and the spark extra).",
        ),
    ] = "local",
    spark_master: Annotated[
        str | None,
        typer.Option(
            "--spark-master",
            help="Spark master URL for --engine spark (default: $MLSHIP_SPARK_MASTER, else local[*]).",
        ),
    ] = None,
) -> None:
    """The predict-batch command (its help is PREDICT_BATCH_HELP); long only for the option declarations typer reads."""
    if engine not in ("local", "spark"):
        raise typer.BadParameter(f"expected local or spark, got {engine!r}", param_hint="--engine")
    if spark_master is not None and engine != "spark":
        raise typer.BadParameter("--spark-master needs --engine spark", param_hint="--spark-master")

    def action(settings: Settings) -> int:
        if engine == "spark":
            from mlship.batch.spark import predict_batch_spark  # noqa: PLC0415 - pandas/pyarrow: kept off `--help`

            r = predict_batch_spark(
                settings,
                model,
                str(input_path),
                str(output),
                bad_rows,
                spark_master,
                chunk_size=chunk_size,
                overwrite=overwrite,
                report_dir=report_dir,
                reference=reference,
            )
        else:
            from mlship.batch.engine import predict_batch as run_batch  # noqa: PLC0415 - pandas/pyarrow: kept off `--help`

            r = run_batch(
                settings,
                model,
                input_path,
                output,
                chunk_size,
                bad_rows=bad_rows,
                overwrite=overwrite,
                report_dir=report_dir,
                reference=reference,
            )
        _print_result(r)
        return 0

    cli.run(ctx, action)


def _print_result(r: BatchResult) -> None:
    """The verdict, what was scored where, the report, and a warning for flagged rows."""
    out = cli.console()
    out.print(r.verdict, markup=False)
    parts = f" in {r.parts} parts ({r.parts_skipped} skipped)" if r.parts > 1 or r.parts_skipped else ""
    out.print(f"scored {r.rows} rows{parts} with {r.model_uri} -> {r.output} in {r.seconds:.1f} s", markup=False)
    if r.report:
        out.print(f"report: {r.report}", markup=False)
    if r.bad_rows:
        cli.err_console().print(
            f"warning: {r.bad_rows:,} of {r.rows:,} rows fail the model's input schema ({r.bad_row_reasons}): "
            "scored as null, reason in the input_error column",
            markup=False,
        )


def register(app: typer.Typer) -> None:
    app.command("predict-batch", help=PREDICT_BATCH_HELP)(predict_batch)
