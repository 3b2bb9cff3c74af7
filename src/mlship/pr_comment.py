"""The gate report as ONE review comment on the pull request (GitHub) or merge request (GitLab),
updated in place on every push.

The comment is built from `gate.json` (verdict line, candidate-vs-champion table, fairness
table, links to the plots and the MLflow run) and starts with a hidden marker; posting lists the
existing comments (every page), edits the one that starts with the marker, or creates it. Every
address comes from the CI's own variables and the token from the environment: no host name is
written anywhere, and the token is never printed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlship.errors import ConfigError, InfraError
from mlship.notify import mlflow_run_url
from mlship.redaction import MASK, redact
from mlship.security.trivy import summary_from_json

MARKER = "<!-- mlship-gate-report -->"
GITLAB_TOKEN_ENV = "MLSHIP_GITLAB_TOKEN"
PER_PAGE = 100
MAX_PAGES = 50
"""A bound on the comment listing (5,000 comments): a pull request with more is not a review."""


# The comment ----------------------------------------------------------------------------------


def _num(value: Any, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _signed(value: Any) -> str:
    return "–" if value is None else f"{value:+.4f}"


def _ci(ci: Any, signed: bool = False) -> str:
    if not ci:
        return "–"
    fmt = "{:+.4f}" if signed else "{:.4f}"
    return f"[{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _model(model: Mapping[str, Any] | None) -> str:
    if not model:
        return "none"
    label, uri = str(model.get("label") or model.get("uri")), redact(str(model.get("uri") or ""))
    return f"{label} (`{uri}`)" if uri and uri != label else f"`{redact(label)}`"


def render(report: Mapping[str, Any], links: Mapping[str, str], plots_url: str | None = None) -> str:
    """The comment's markdown: marker, verdict line, tables, links. Pure: what you see is what is posted."""
    passed = report.get("verdict") == "pass"
    gates = report.get("gates", [])
    inconclusive = [g for g in gates if g.get("status") == "inconclusive"]
    head = "✅ **Gate passed**" if passed else "❌ **Gate failed**"
    if passed and inconclusive:
        head = "⚠️ **Gate passed, not enough evidence**"
    lines = [MARKER, f"## {head}: {_cell(report.get('summary', ''))}", ""]
    lines.append(f"- **Candidate:** {_model(report.get('candidate'))}")
    champion = report.get("champion")
    lines.append(f"- **Champion:** {_model(champion) if champion else _cell(report.get('champion_note') or 'none')}")
    data = report.get("data") or {}
    if data:
        lines.append(f"- **Data:** {_cell(data.get('source'))}: {data.get('rows', 0):,} rows")
    lines += ["", *_comparison(report, bool(champion))]
    failed = [g for g in gates if g.get("status") == "fail"]
    if failed:
        lines += ["", "### Failed gates", "", "| gate | detail | setting |", "|---|---|---|"]
        lines += [
            f"| `{g['name']}` | {_cell(g.get('detail', ''))} | `{_cell(g.get('setting') or '')}` |" for g in failed
        ]
    if inconclusive:
        lines += ["", "### ⚠️ Not enough evidence", "", "| gate | what would settle it | effect |", "|---|---|---|"]
        for g in inconclusive:
            effect = "fails the gate" if g.get("blocking") else "passes with this warning"
            lines.append(
                f"| `{g['name']}` | {_cell(g.get('settle') or g.get('detail', ''))} | "
                f"{effect} (`{_cell(g.get('setting') or '')}`) |"
            )
    fairness = report.get("fairness")
    if fairness:
        lines += ["", *_fairness(fairness)]
    lines += ["", "### Links", ""]
    plots = report.get("plots") or []
    if plots and plots_url:
        base = plots_url.rstrip("/")
        lines.append("- **Plots:** " + " · ".join(f"[{Path(p).stem}]({base}/{p})" for p in plots))
    elif plots:
        where = f" in the [CI run]({links['ci run']})" if "ci run" in links else ""
        lines.append(f"- **Plots:** {', '.join(f'`{p}`' for p in plots)} (the report artifact{where})")
    run = (report.get("candidate") or {}).get("run_id") or report.get("logged_to_run")
    if "mlflow run" in links:
        lines.append(f"- **MLflow run:** [{run}]({links['mlflow run']})")
    elif run:
        lines.append(f"- **MLflow run:** `{run}`")
    if "ci run" in links:
        lines.append(f"- **CI run:** {links['ci run']}")
    lines += ["", "<sub>Posted by `mlship comment`; updated in place on every push.</sub>"]
    return "\n".join(lines) + "\n"


def _comparison(report: Mapping[str, Any], with_champion: bool) -> list[str]:
    primary = report.get("primary_metric")
    conf = f"{float(report.get('confidence') or 0.95):.0%}"
    rows = report.get("comparison") or []

    def name(metric: str) -> str:
        return f"**{metric}** (primary)" if metric == primary else metric

    if not with_champion:
        out = [f"### Candidate metrics ({conf} bootstrap CI)", "", "| metric | candidate | CI |", "|---|---:|---|"]
        out += [f"| {name(r['metric'])} | {_num(r.get('candidate'))} | {_ci(r.get('candidate_ci'))} |" for r in rows]
        return out
    out = [
        f"### Candidate vs champion (paired bootstrap {conf} CI of Δ)",
        "",
        "| metric | candidate | champion | Δ | CI of Δ |",
        "|---|---:|---:|---:|---|",
    ]
    out += [
        f"| {name(r['metric'])} | {_num(r.get('candidate'))} | {_num(r.get('champion'))} | {_signed(r.get('delta'))} "
        f"| {_ci(r.get('delta_ci'), True)} |"
        for r in rows
    ]
    return out


def _fairness(fair: Mapping[str, Any]) -> list[str]:
    out = [
        f"### Fairness by `{_cell(fair.get('feature'))}`",
        "",
        f"Demographic-parity difference **{_num(fair.get('demographic_parity_difference'), 3)}** "
        f"(CI {_ci(fair.get('demographic_parity_ci'))}), equalized-odds difference "
        f"**{_num(fair.get('equalized_odds_difference'), 3)}** (CI {_ci(fair.get('equalized_odds_ci'))}).",
        "",
        "| group | rows | positives | selection rate | TPR | FPR | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for g in fair.get("groups", []):
        enough = g.get("odds_sufficient", g.get("sufficient", True))
        note = "" if enough else f"⚠️ not enough evidence: {_cell(g.get('note', ''))}"
        out.append(
            f"| {_cell(g.get('group'))} | {g.get('rows', 0):,} | {g.get('positives', 0):,} | "
            f"{_num(g.get('selection_rate'), 3)} | {_num(g.get('tpr'), 3)} | {_num(g.get('fpr'), 3)} | {note} |"
        )
    return out


def read_report(path: Path) -> dict[str, Any]:
    """gate.json, or exit 2 saying what is wrong with it."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no gate report at {path}", hint="run `mlship gate` first, or pass --report") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the gate report {path}: {exc}") from None
    if not isinstance(raw, dict) or "verdict" not in raw or "comparison" not in raw:
        raise ConfigError(f"{path} is not a gate report (gate.json)", hint="pass the gate.json `mlship gate` wrote")
    return raw


# Where to post -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thread:
    """One pull/merge request's comment thread on one API."""

    provider: str
    api: str
    """Base URL of the API (from the CI's variables)."""
    comments: str
    """Path of the thread's comment list, relative to `api`."""
    edit: str
    """Path of one comment, with `{id}`, relative to `api`."""
    edit_method: str
    headers: dict[str, str]
    token: str
    """Kept to mask it out of any error text."""
    plots_url: str | None
    links: dict[str, str]
    label: str


def _require(env: Mapping[str, str], name: str, hint: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set", hint=hint)
    return value


def github_thread(env: Mapping[str, str]) -> Thread:
    """GitHub Actions: issues comments API of the pull request, token GITHUB_TOKEN (pull-requests: write)."""
    token = _require(
        env,
        "GITHUB_TOKEN",
        "pass `GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}` to the step, with `permissions: pull-requests: write`",
    )
    api = _require(env, "GITHUB_API_URL", "run inside GitHub Actions, which sets it").rstrip("/")
    repo = _require(env, "GITHUB_REPOSITORY", "run inside GitHub Actions, which sets it")
    number = _pull_number(env)
    links = {}
    server, run = env.get("GITHUB_SERVER_URL"), env.get("GITHUB_RUN_ID")
    if server and run:
        links["ci run"] = f"{server.rstrip('/')}/{repo}/actions/runs/{run}"
    return Thread(
        provider="github",
        api=api,
        comments=f"/repos/{repo}/issues/{number}/comments",
        edit=f"/repos/{repo}/issues/comments/{{id}}",
        edit_method="PATCH",
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        },
        token=token,
        plots_url=env.get("MLSHIP_PLOTS_URL") or None,
        links=links,
        label=f"{repo}#{number}",
    )


def _pull_number(env: Mapping[str, str]) -> int:
    """The pull request's number: from the event payload, else from `refs/pull/<n>/merge`."""
    event_path = env.get("GITHUB_EVENT_PATH")
    if event_path:
        try:
            event = json.loads(Path(event_path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read GITHUB_EVENT_PATH {event_path}: {exc}") from None
        number = (event.get("pull_request") or {}).get("number") if isinstance(event, dict) else None
        if isinstance(number, int):
            return number
    found = re.fullmatch(r"refs/pull/(\d+)/(?:merge|head)", env.get("GITHUB_REF", ""))
    if found:
        return int(found[1])
    raise ConfigError(
        "this run is not for a pull request (no pull_request in GITHUB_EVENT_PATH, GITHUB_REF is not refs/pull/N/…)",
        hint="run the comment step on pull_request events only",
    )


def gitlab_thread(env: Mapping[str, str], report_dir: Path) -> Thread:
    """GitLab CI: merge request notes API, a project access token (api scope) in a masked variable."""
    token = _require(
        env,
        GITLAB_TOKEN_ENV,
        "create a project access token (role Reporter or above, scope api) and store it as a masked CI/CD "
        f"variable {GITLAB_TOKEN_ENV}; CI_JOB_TOKEN cannot write merge request notes",
    )
    api = _require(env, "CI_API_V4_URL", "run inside GitLab CI, which sets it").rstrip("/")
    project = _require(env, "CI_PROJECT_ID", "run inside GitLab CI, which sets it")
    iid = _require(env, "CI_MERGE_REQUEST_IID", "run the job in merge request pipelines (rules: merge_request_event)")
    links = {"ci run": env["CI_PIPELINE_URL"]} if env.get("CI_PIPELINE_URL") else {}
    return Thread(
        provider="gitlab",
        api=api,
        comments=f"/projects/{project}/merge_requests/{iid}/notes",
        edit=f"/projects/{project}/merge_requests/{iid}/notes/{{id}}",
        edit_method="PUT",
        headers={"PRIVATE-TOKEN": token},
        token=token,
        plots_url=env.get("MLSHIP_PLOTS_URL") or _gitlab_plots(env, report_dir),
        links=links,
        label=f"!{iid}",
    )


def _gitlab_plots(env: Mapping[str, str], report_dir: Path) -> str | None:
    """The plots in this job's own artifacts (the job keeps the report folder under `artifacts:`)."""
    job, project_dir = env.get("CI_JOB_URL"), env.get("CI_PROJECT_DIR")
    if not job or not project_dir:
        return None
    try:
        folder = report_dir.resolve().relative_to(Path(project_dir).resolve())
    except ValueError:
        return None  # outside the project: not in the job's artifacts
    return f"{job.rstrip('/')}/artifacts/file/{folder.as_posix()}"


# Posting -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Posted:
    action: str
    """"created" or "updated"."""
    comment_id: int
    url: str | None
    pages: int


def post(thread: Thread, body: str, *, timeout_s: float = 30.0) -> Posted:
    """List the thread (every page), update the comment with the marker or create one. API failure → exit 3."""
    import httpx  # noqa: PLC0415 - httpx: heavy, imported where it is used (off `--help` and the light paths)

    with httpx.Client(base_url=thread.api, headers=thread.headers, timeout=timeout_s) as client:
        existing, pages = _find(client, thread)
        if existing is not None:
            answer = _call(client, thread, thread.edit_method, thread.edit.format(id=existing), {"body": body})
            action = "updated"
        else:
            answer = _call(client, thread, "POST", thread.comments, {"body": body})
            action = "created"
    return Posted(action=action, comment_id=int(answer["id"]), url=answer.get("html_url"), pages=pages)


def _find(client: Any, thread: Thread) -> tuple[int | None, int]:
    """The id of the first comment that starts with the marker, and how many pages were read."""
    page = 1
    for read in range(1, MAX_PAGES + 1):
        comments, next_page = _list_page(client, thread, page)
        for comment in comments:
            if str(comment.get("body") or "").lstrip().startswith(MARKER):
                return int(comment["id"]), read
        if next_page is None:
            return None, read
        page = next_page
    return None, MAX_PAGES


def _list_page(client: Any, thread: Thread, page: int) -> tuple[list[dict[str, Any]], int | None]:
    params: dict[str, int | str] = {"per_page": PER_PAGE, "page": page}
    if thread.provider == "gitlab":
        params.update({"sort": "asc", "order_by": "created_at"})
    response = _send(client, thread, "GET", thread.comments, params=params)
    comments = response.json()
    if not isinstance(comments, list):
        raise InfraError(f"{thread.provider} API: listing the comments of {thread.label} gave no list")
    return comments, _next_page(response, thread.provider)


def _next_page(response: Any, provider: str) -> int | None:
    """GitHub: the `Link` header's rel="next"; GitLab: `X-Next-Page` (empty on the last page)."""
    if provider == "gitlab":
        nxt = response.headers.get("x-next-page", "").strip()
        if nxt.isdigit():
            return int(nxt)
    link = response.headers.get("link", "")
    for part in link.split(","):
        if 'rel="next"' in part:
            found = re.search(r"[?&]page=(\d+)", part)
            if found:
                return int(found[1])
    return None


def _call(client: Any, thread: Thread, method: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    answer = _send(client, thread, method, path, json_body=payload).json()
    if not isinstance(answer, dict) or "id" not in answer:
        raise InfraError(f"{thread.provider} API: {method} {path} answered without a comment id")
    return answer


def _send(
    client: Any,
    thread: Thread,
    method: str,
    path: str,
    *,
    params: dict[str, Any] | None = None,
    json_body: dict[str, Any] | None = None,
) -> Any:
    import httpx  # noqa: PLC0415 - httpx: heavy, imported where it is used (off `--help` and the light paths)

    secret = thread.token
    try:
        response = client.request(method, path, params=params, json=json_body)
    except httpx.HTTPError as exc:
        text = str(exc).replace(secret, MASK) or type(exc).__name__
        raise InfraError(
            f"{thread.provider} API unreachable ({method} {path}): {redact(text)}",
            hint="check the CI's API URL variable and the network",
        ) from None
    if response.is_success:
        return response
    try:
        message = response.json().get("message") or response.text
    except ValueError:
        message = response.text
    message = redact(str(message).replace(secret, MASK)).strip().splitlines()[0] if str(message).strip() else ""
    raise InfraError(
        f"{thread.provider} API answered {response.status_code} to {method} {path}: {message}",
        hint=_advice(thread.provider, response.status_code),
    )


def _advice(provider: str, status: int) -> str:
    if status in (401, 403):
        return (
            "the workflow needs `permissions: pull-requests: write` for GITHUB_TOKEN (fork pull requests get a "
            "read-only token)"
            if provider == "github"
            else f"{GITLAB_TOKEN_ENV} must be a project access token with the api scope and role Reporter or above"
        )
    if status == 404:
        return "check the repository/project and the pull/merge request number the CI variables give"
    return "retry; the comment is updated in place, so a rerun never duplicates it"


def _thread(provider: str, env: Mapping[str, str], report_dir: Path) -> Thread:
    return github_thread(env) if provider == "github" else gitlab_thread(env, report_dir)


FOOTER = "<sub>Posted by `mlship comment`"


def read_scan_report(path: Path) -> dict[str, Any]:
    """scan-gate.json, or exit 2 saying what is wrong with it."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the scan report {path}: {exc}", hint="pass the scan-gate.json") from None
    if not isinstance(raw, dict) or "passed" not in raw or "counts" not in raw:
        raise ConfigError(f"{path} is not a scan-gate report", hint="pass the scan-gate.json `mlship scan-gate` wrote")
    return raw


def with_scan_section(body: str, scan: Mapping[str, Any]) -> str:
    """The comment with the image scan's section inserted above its footer."""
    head, sep, tail = body.partition(FOOTER)
    return f"{head}{summary_from_json(dict(scan))}\n{sep}{tail}"


def comment(
    report_path: Path,
    provider: str,
    *,
    environ: Mapping[str, str] | None = None,
    mlflow_tracking_uri: str | None = None,
    dry_run: bool = False,
    scan_report: Path | None = None,
) -> tuple[str, Posted | None]:
    """Build the comment from `report_path` and (unless `dry_run`) create or update it on `provider`.

    With `scan_report` (a scan-gate.json the pipeline exported), the comment also carries the image
    scan's verdict, its unfixed vulnerabilities per severity and top packages, and stale ignores."""
    env = os.environ if environ is None else environ
    if provider not in ("github", "gitlab"):
        raise ConfigError(f"unknown provider {provider!r}", hint="use --provider github or --provider gitlab")
    report = read_report(report_path)
    thread = _thread(provider, env, report_path.parent) if not dry_run else None
    links = dict(thread.links) if thread else {}
    run = (report.get("candidate") or {}).get("run_id") or report.get("logged_to_run")
    mlflow = mlflow_run_url(mlflow_tracking_uri or "", run)
    if mlflow:
        links["mlflow run"] = mlflow
    body = render(report, links, thread.plots_url if thread else env.get("MLSHIP_PLOTS_URL"))
    if scan_report is not None:
        body = with_scan_section(body, read_scan_report(scan_report))
    if thread is None:
        return body, None
    return body, post(thread, body)
