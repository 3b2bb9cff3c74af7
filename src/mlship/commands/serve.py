"""`mlship serve`: one pinned model behind a FastAPI/uvicorn server (fastapi is imported lazily)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlship import cli

if TYPE_CHECKING:
    from mlship.settings import Settings


def serve(
    ctx: typer.Context,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help=(
                "models:/NAME@ALIAS (pinned once at start), models:/NAME/VERSION, runs:/ID/model or a model directory."
            ),
        ),
    ],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0: any free port).")] = 8000,
    color: Annotated[
        str | None,
        typer.Option("--color", envvar="MLSHIP_COLOR", help="Deployment color reported by /version and the logs."),
    ] = None,
    prediction_log: Annotated[
        Path | None,
        typer.Option(
            "--prediction-log",
            help="JSONL file for sampled predictions (default: .mlship/predictions/<color>.jsonl).",
        ),
    ] = None,
) -> None:
    """Serve a model: /predict, /health, /ready, /metrics, /version; SIGTERM drains in-flight requests."""

    def action(settings: Settings) -> int:
        from mlship.serving.server import serve as run_server  # noqa: PLC0415 - pulls in the heavy stack of its stage: kept off `--help`

        return run_server(settings, model, host=host, port=port, color=color, prediction_log=prediction_log)

    cli.run(ctx, action)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
