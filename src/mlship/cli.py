"""`mlship`: parse, load settings, call ONE library function, map the outcome to an exit code.

Commands live in `mlship.commands.<area>` (one module per pipeline area, each registering
itself on `app`); this module owns the app, the global options and the exit-code contract:
0 done · 1 the pipeline said no · 2 usage/configuration · 3 environment/infrastructure.
Heavy libraries are imported inside command bodies so `mlship --help` stays instant.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from mlship.errors import MlshipError
from mlship.redaction import redact, redact_logs

if TYPE_CHECKING:
    from rich.console import Console

    from mlship.settings import Settings

app = typer.Typer(
    name="mlship",
    help=(
        "mlship: a portable CI/CD pipeline for ML models. Validate data, train with MLflow "
        "tracking, gate against the champion, scan, deploy blue-green and roll back.\n\n"
        "Exit codes: 0 done/passed, 1 the pipeline said no, 2 usage or configuration error, "
        "3 environment or infrastructure error."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@dataclass(frozen=True)
class GlobalOptions:
    """What the top-level callback parsed, handed to every command through the typer context."""

    config: Path | None
    debug: bool


@app.callback()
def _global(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="TOML file with the settings at top level (default: [tool.mlship] of ./pyproject.toml).",
            envvar="MLSHIP_CONFIG",
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")] = False,
    require_integrity: Annotated[
        bool,
        typer.Option(
            "--require-integrity",
            help="Refuse (exit 2) to load a model that has no recorded sha256 (a bare model directory without "
            "mlship-sha256.txt), instead of warning.",
            envvar="MLSHIP_REQUIRE_INTEGRITY",
        ),
    ] = False,
) -> None:
    if require_integrity:  # through the environment, so the model servers a deploy starts refuse too
        os.environ["MLSHIP_REQUIRE_INTEGRITY"] = "1"
    ctx.obj = GlobalOptions(config=config, debug=debug)


def options(ctx: typer.Context) -> GlobalOptions:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, GlobalOptions) else GlobalOptions(config=None, debug=False)


def console() -> Console:
    """The stdout console for tables and summaries (progress and errors go to stderr)."""
    from rich.console import Console  # noqa: PLC0415 - rich: heavy, imported where it is used (off `--help` and the light paths)

    return Console(highlight=False, soft_wrap=True)


def err_console() -> Console:
    from rich.console import Console  # noqa: PLC0415 - rich: heavy, imported where it is used (off `--help` and the light paths)

    return Console(stderr=True, highlight=False, soft_wrap=True)


def run(ctx: typer.Context, action: Callable[[Settings], int | None]) -> NoReturn:
    """Load settings, run `action`, and exit with the code the contract prescribes.

    `action` returns an exit code (None means 0) or raises an MlshipError; anything else is
    an unexpected failure, reported in one line (with the traceback under --debug), exit 3.
    """
    opts = options(ctx)
    try:
        from mlship.settings import defaults_note, load_settings  # noqa: PLC0415 - pydantic: kept off `--help`

        settings = load_settings(opts.config)
        note = defaults_note(opts.config)
        if note:
            print(f"mlship: note: {note}", file=sys.stderr)
        code = action(settings) or 0
    except MlshipError as exc:
        if opts.debug:
            _print_traceback()
        _print_error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        _print_error("interrupted")
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 — the contract: one line (traceback under --debug), exit 3
        if opts.debug:
            _print_traceback()  # --debug adds the traceback; it never changes the exit code
        hint = "" if opts.debug else " (run with --debug for the traceback)"
        _print_error(f"unexpected {type(exc).__name__}: {exc}{hint}")
        raise typer.Exit(3) from None
    raise typer.Exit(code)


def _print_error(message: str) -> None:
    first = message.strip().splitlines()[0] if message.strip() else "error"
    print(f"mlship: error: {redact(first)}", file=sys.stderr)


def _print_traceback() -> None:
    print(redact(traceback.format_exc()), end="", file=sys.stderr)


def _quiet_libraries() -> None:
    """Keep third-party chatter (telemetry, deprecation noise) out of a CI log."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def main() -> None:
    """Console-script entry point."""
    from mlship.commands import register_all  # noqa: PLC0415 - pulls in the heavy stack of its stage: kept off `--help`

    _quiet_libraries()
    redact_logs()
    register_all(app)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
