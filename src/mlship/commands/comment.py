"""`mlship comment`: the gate report as one pull/merge request comment, updated in place on every push."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlship import cli

if TYPE_CHECKING:
    from mlship.settings import Settings


def comment(
    ctx: typer.Context,
    provider: Annotated[
        str, typer.Option("--provider", help="github (pull request comment) or gitlab (merge request note).")
    ],
    report: Annotated[
        Path | None, typer.Option("--report", help="The gate.json to post (default: <reports>/gate/gate.json).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the comment; post nothing.")] = False,
    scan_report: Annotated[
        Path | None,
        typer.Option("--scan-report", help="A scan-gate.json to summarise in the comment (skipped when absent)."),
    ] = None,
) -> None:
    """Post the gate report on the pull/merge request, or update the comment posted before (exit 3 on API errors).

    GitHub: GITHUB_TOKEN (the workflow's `pull-requests: write`), GITHUB_API_URL, GITHUB_REPOSITORY and
    the pull request from GITHUB_EVENT_PATH. GitLab: MLSHIP_GITLAB_TOKEN (a project access token, api
    scope), CI_API_V4_URL, CI_PROJECT_ID, CI_MERGE_REQUEST_IID. MLSHIP_PLOTS_URL overrides where plots link.
    """

    def action(settings: Settings) -> int:
        from mlship.pr_comment import comment as post_comment  # noqa: PLC0415 - httpx: kept off `--help`

        path = report or settings.reports_path / "gate" / "gate.json"
        scan = scan_report if scan_report is not None and scan_report.is_file() else None
        body, posted = post_comment(
            path, provider, mlflow_tracking_uri=settings.resolved_tracking_uri, dry_run=dry_run, scan_report=scan
        )
        out = cli.console()
        if posted is None:
            out.print(body, markup=False, end="")
            return 0
        where = f" ({posted.url})" if posted.url else ""
        out.print(f"comment {posted.action}: id {posted.comment_id}{where}; {posted.pages} page(s) of comments read")
        return 0

    cli.run(ctx, action)


def register(app: typer.Typer) -> None:
    app.command("comment")(comment)
