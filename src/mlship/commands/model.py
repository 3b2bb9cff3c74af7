"""`mlship train | register | promote | models`: training runs and the model registry."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlship import cli
from mlship.errors import ConfigError
from mlship.fsutil import write_json
from mlship.model import train as training
from mlship.model.gates.verdict import FORCED_TAG, require_pass
from mlship.registry import Registry, model_dir_info

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
        with cli.err_console().status("training…"):
            result = training.train(settings, data, out)
        write_json(settings.reports_path / "train.json", result.to_dict())
        out_console = cli.console()
        out_console.print(metrics_table(result.metrics, title=f"held-out metrics ({result.n_test:,} rows)"))
        out_console.print(f"run id:    {result.run_id}")
        out_console.print(f"model uri: {result.run_model_uri}")
        if result.out_dir:
            out_console.print(f"exported:  {result.out_dir}/model, {result.out_dir}/metrics.json")
        return 0

    cli.run(ctx, action)


Force = Annotated[
    bool, typer.Option("--force", help="Override a failed or missing gate verdict (needs --reason; recorded).")
]
Reason = Annotated[
    str | None, typer.Option("--reason", help="Why the gate is overridden: recorded on the version as a tag.")
]


def register_model(
    ctx: typer.Context,
    run: Annotated[str, typer.Option("--run", help="Run id printed by `mlship train` (or a model URI).")],
    alias: Annotated[str | None, typer.Option("--alias", help="Alias to point at the new version.")] = "challenger",
    force: Force = False,
    reason: Reason = None,
) -> None:
    """Register a gated run's model as a new version of `model_name` (alias: challenger).

    Refused (exit 1) when the run's gate failed or never ran, unless --force --reason TEXT.
    """

    def action(settings: Settings) -> int:
        if alias == "champion":
            raise ConfigError("register never moves 'champion'", hint="use `mlship promote --version V`")
        registry = Registry.from_settings(settings)
        record = _record_of(registry, run)
        override = require_pass(
            record, f"run {run}", "mlship gate --candidate runs:/<run id>/model", force, reason, _warn
        )
        tags = {FORCED_TAG: f"register: {override}"} if override else {}
        resolved = registry.register(run, settings.model_name, alias=alias or None, tags=tags)
        suffix = f" as @{alias}" if alias else ""
        cli.console().print(f"registered {resolved.label}{suffix}: {resolved.uri}")
        return 0

    cli.run(ctx, action)


def promote(
    ctx: typer.Context,
    version: Annotated[str, typer.Option("--version", help="Registered version to make the champion.")],
    alias: Annotated[str, typer.Option("--alias", help="Alias to move.")] = "champion",
    force: Force = False,
    reason: Reason = None,
) -> None:
    """Point `champion` (or another alias) at a registered version: promotion and rollback in one call.

    Refused (exit 1) when the version's gate failed or never ran, unless --force --reason TEXT.
    """

    def action(settings: Settings) -> int:
        registry = Registry.from_settings(settings)
        record = registry.version_record(settings.model_name, version)
        label = f"{settings.model_name} v{version}"
        override = require_pass(record, label, "mlship gate --candidate models:/<name>/<version>", force, reason, _warn)
        before = registry.alias_version(settings.model_name, alias)
        if override:
            registry.set_version_tags(settings.model_name, version, {FORCED_TAG: f"promote to @{alias}: {override}"})
        registry.set_alias(settings.model_name, alias, version)
        was = f" (was v{before})" if before else ""
        cli.console().print(f"{settings.model_name}@{alias} -> v{version}{was}")
        return 0

    cli.run(ctx, action)


def _record_of(registry: Registry, ref: str) -> dict[str, str]:
    """The gate record of what `register --run` names: a run id, a runs:/ or models:/ URI, a model dir."""

    version = re.match(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$", ref)
    if version:
        return registry.version_record(version["name"], version["version"])
    resolved = registry.resolve(ref if "/" in ref or Path(ref).exists() else f"runs:/{ref}/model")
    run_id = resolved.run_id
    if run_id is None and Path(resolved.uri).is_dir():
        run_id = model_dir_info(Path(resolved.uri))["run_id"]
    return registry.run_record(run_id) if run_id else {}


def _warn(message: str) -> None:
    cli.err_console().print(message, markup=False)


def models(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List registered versions with their aliases, gate verdict and key metrics."""

    def action(settings: Settings) -> int:
        from rich.table import Table  # noqa: PLC0415 - rich: heavy, imported where it is used (off `--help` and the light paths)

        versions = Registry.from_settings(settings).versions(settings.model_name)
        if as_json:
            print(json.dumps([asdict(v) for v in versions], indent=2))
            return 0
        if not versions:
            cli.console().print(f"no registered versions of {settings.model_name!r} yet (run `mlship run`)")
            return 0
        table = Table(title=f"{settings.model_name}: registered versions")
        for col in ("version", "aliases", "gate", *KEY_METRICS):
            table.add_column(col, no_wrap=col != "gate")
        table.add_column("run id", overflow="fold")
        for v in versions:
            table.add_row(
                v.version,
                "\n".join(f"@{a}" for a in v.aliases) or "—",
                v.gate,
                *(f"{v.metrics[m]:.4f}" if m in v.metrics else "—" for m in KEY_METRICS),
                v.run_id or "—",
            )
        cli.console().print(table)
        return 0

    cli.run(ctx, action)


def metrics_table(metrics: dict[str, float], title: str) -> object:
    from rich.table import Table  # noqa: PLC0415 - rich: heavy, imported where it is used (off `--help` and the light paths)

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
