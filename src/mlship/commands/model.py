"""`mlship train | register | promote | models`: training runs and the model registry."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlship import cli

if TYPE_CHECKING:
    from mlship.settings import Settings

KEY_METRICS = ("roc_auc", "pr_auc", "f1", "accuracy")


def train(
    ctx: typer.Context,
    data: Annotated[
        Path | None, typer.Option("--data", help="Training data, CSV or Parquet (default: `data`).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Also write the model to OUT/model and metrics to OUT/metrics.json.")
    ] = None,
) -> None:
    """Train the configured estimator, evaluate on the held-out split, log the run to MLflow."""

    def action(settings: Settings) -> int:
        from mlship.fsutil import write_json
        from mlship.model.train import train as run_training

        with cli.err_console().status("training…"):
            result = run_training(settings, data, out)
        write_json(settings.reports_path / "train.json", result.to_dict())
        out_console = cli.console()
        out_console.print(metrics_table(result.metrics, title=f"held-out metrics ({result.n_test:,} rows)"))
        out_console.print(f"run id:    {result.run_id}")
        out_console.print(f"model uri: {result.run_model_uri}")
        if result.out_dir:
            out_console.print(f"exported:  {result.out_dir}/model, {result.out_dir}/metrics.json")
        return 0

    cli.run(ctx, action)


def register_model(
    ctx: typer.Context,
    run: Annotated[str, typer.Option("--run", help="Run id printed by `mlship train` (or a model URI).")],
    alias: Annotated[str | None, typer.Option("--alias", help="Alias to point at the new version.")] = "challenger",
) -> None:
    """Register a training run's model as a new version of `model_name` (alias: challenger)."""

    def action(settings: Settings) -> int:
        from mlship.registry import Registry

        if alias == "champion":
            from mlship.errors import ConfigError

            raise ConfigError("register never moves 'champion'", hint="use `mlship promote --version V`")
        resolved = Registry.from_settings(settings).register(run, settings.model_name, alias=alias or None)
        suffix = f" as @{alias}" if alias else ""
        cli.console().print(f"registered {resolved.label}{suffix}: {resolved.uri}")
        return 0

    cli.run(ctx, action)


def promote(
    ctx: typer.Context,
    version: Annotated[str, typer.Option("--version", help="Registered version to make the champion.")],
    alias: Annotated[str, typer.Option("--alias", help="Alias to move.")] = "champion",
) -> None:
    """Point `champion` (or another alias) at a registered version: promotion and rollback in one call."""

    def action(settings: Settings) -> int:
        from mlship.registry import Registry

        registry = Registry.from_settings(settings)
        before = registry.alias_version(settings.model_name, alias)
        registry.set_alias(settings.model_name, alias, version)
        was = f" (was v{before})" if before else ""
        cli.console().print(f"{settings.model_name}@{alias} -> v{version}{was}")
        return 0

    cli.run(ctx, action)


def models(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List registered versions with their aliases and key metrics."""

    def action(settings: Settings) -> int:
        import json
        from dataclasses import asdict

        from rich.table import Table

        from mlship.registry import Registry

        versions = Registry.from_settings(settings).versions(settings.model_name)
        if as_json:
            print(json.dumps([asdict(v) for v in versions], indent=2))
            return 0
        if not versions:
            cli.console().print(f"no registered versions of {settings.model_name!r} yet (run `mlship run`)")
            return 0
        table = Table(title=f"{settings.model_name}: registered versions")
        for col in ("version", "aliases", *KEY_METRICS, "run id"):
            table.add_column(col)
        for v in versions:
            table.add_row(
                v.version,
                ", ".join(f"@{a}" for a in v.aliases) or "—",
                *(f"{v.metrics[m]:.4f}" if m in v.metrics else "—" for m in KEY_METRICS),
                v.run_id or "—",
            )
        cli.console().print(table)
        return 0

    cli.run(ctx, action)


def metrics_table(metrics: dict[str, float], title: str) -> object:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}")
    return table


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("register")(register_model)
    app.command("promote")(promote)
    app.command("models")(models)
