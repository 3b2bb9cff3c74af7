"""`mlship drift`, `mlship abtest`: watch a shipped model and decide canaries."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlship import cli

if TYPE_CHECKING:
    from mlship.settings import Settings


def drift(
    ctx: typer.Context,
    reference: Annotated[Path, typer.Option("--reference", help="Reference data (CSV/Parquet), e.g. training data.")],
    current: Annotated[Path, typer.Option("--current", help="Current data (CSV/Parquet) or JSONL prediction log.")],
    report_dir: Annotated[
        Path | None, typer.Option("--report-dir", help="Where drift.json/.md/PNGs go (default: .mlship/reports).")
    ] = None,
) -> None:
    """Detect feature drift (exit 0 none, 1 drift, 2 bad input)."""

    def action(settings: Settings) -> int:
        from mlship.monitoring.drift import check, detect

        report = detect(settings, reference, current, report_dir)
        from rich.table import Table

        table = Table(title="drift")
        for col in ("feature", "effect", "PSI", "verdict"):
            table.add_column(col)
        for f in report.features:
            table.add_row(
                f.feature, f"{f.effect_name}={f.effect:.4f}", f"{f.psi:.4f}", "DRIFT" if f.drifted else f.level
            )
        cli.console().print(table)
        for w in report.warnings:
            cli.err_console().print(f"warning: {w}")
        return check(report)

    cli.run(ctx, action)


def _counts(text: str, option: str) -> tuple[int, int]:
    try:
        s, n = (int(x) for x in text.split("/"))
    except ValueError as exc:
        raise typer.BadParameter(f"expected SUCCESSES/N, got {text!r}", param_hint=option) from exc
    return s, n


def abtest(
    ctx: typer.Context,
    control: Annotated[str, typer.Option("--control", help="Control arm as SUCCESSES/N.")],
    treatment: Annotated[str, typer.Option("--treatment", help="Treatment arm as SUCCESSES/N.")],
    alpha: Annotated[float, typer.Option("--alpha", help="One-sided significance level.")] = 0.05,
    power: Annotated[float, typer.Option("--power", help="Power used for the required n per arm.")] = 0.8,
    mde: Annotated[float, typer.Option("--mde", help="Minimum detectable absolute effect.")] = 0.01,
    looks_done: Annotated[int, typer.Option("--look", help="Which interim look this is (1-based).")] = 1,
    max_looks: Annotated[int, typer.Option("--max-looks", help="Planned looks (1 = fixed horizon).")] = 1,
    direction: Annotated[str, typer.Option("--direction", help="greater: success is good; less: bad.")] = "greater",
) -> None:
    """Decide a canary: promote (exit 0), reject (exit 1) or inconclusive (exit 0, keep collecting)."""
    cs, cn = _counts(control, "--control")
    ts, tn = _counts(treatment, "--treatment")

    def action(settings: Settings) -> int:
        from mlship.monitoring.abtest import decide

        d = decide(
            cs,
            cn,
            ts,
            tn,
            alpha=alpha,
            power=power,
            mde=mde,
            looks_done=looks_done,
            max_looks=max_looks,
            direction="less" if direction == "less" else "greater",
        )
        cli.console().print(
            f"{d.state}: {d.reason} (z={d.z:.3f}, p={d.p_value:.4g}, "
            f"diff CI [{d.ci[0]:.4f}, {d.ci[1]:.4f}], required n/arm {d.required_n})"
        )
        return 1 if d.state == "reject" else 0

    cli.run(ctx, action)


def predict_batch(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="Model URI (models:/name@alias, runs:/id/model, or a dir).")],
    input_path: Annotated[Path, typer.Option("--input", help="CSV or Parquet file to score (any size).")],
    output: Annotated[Path, typer.Option("--output", help="Parquet file to write (atomically).")],
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=1, help="Rows scored per chunk.")] = 100_000,
) -> None:
    """Score a file in chunks into Parquet, recording the model version in its metadata."""

    def action(settings: Settings) -> int:
        from mlship.monitoring.batch import predict_batch as run_batch

        r = run_batch(settings, model, input_path, output, chunk_size)
        cli.console().print(f"scored {r.rows} rows with {r.model_uri} -> {r.output} in {r.seconds:.1f} s")
        return 0

    cli.run(ctx, action)


def register(app: typer.Typer) -> None:
    app.command("predict-batch")(predict_batch)
    app.command("drift")(drift)
    app.command("abtest")(abtest)
