"""`mlship comment` against local replays of the GitHub and GitLab comment APIs (no network).

The fake APIs answer with the recorded shapes in tests/fixtures/review (from the public API
docs), paginate like the real ones (GitHub: `Link` rel="next"; GitLab: `X-Next-Page`), and
keep the thread's state, so create-then-update is exercised end to end through the CLI.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlship.cli import app
from mlship.commands import register_all
from mlship.pr_comment import MARKER, render
from tests.support.http_recorder import Recorded, Recorder, closed_port_url, recorder

register_all(app)
runner = CliRunner()
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "review"
GATE = FIXTURES / "gate.json"
TOKEN = "ghs_s3cr3tT0ken"
CI_VARS = (
    "GITHUB_TOKEN",
    "GITHUB_API_URL",
    "GITHUB_REPOSITORY",
    "GITHUB_EVENT_PATH",
    "GITHUB_REF",
    "GITHUB_SERVER_URL",
    "GITHUB_RUN_ID",
    "MLSHIP_GITLAB_TOKEN",
    "CI_API_V4_URL",
    "CI_PROJECT_ID",
    "CI_MERGE_REQUEST_IID",
    "CI_JOB_URL",
    "CI_PROJECT_DIR",
    "CI_PIPELINE_URL",
    "MLSHIP_PLOTS_URL",
)


def shape(name: str, base: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text().replace("{base}", base))  # type: ignore[no-any-return]


class FakeThread:
    """One pull/merge request's comments, served page by page in the provider's own way."""

    def __init__(self, provider: str, existing: int) -> None:
        self.provider = provider
        self.base = ""
        self.comments: list[dict[str, Any]] = []
        self.next_id = 1000
        for i in range(existing):
            self._add(f"comment {i} by a reviewer")

    def _add(self, body: str) -> dict[str, Any]:
        name = "github/comment.json" if self.provider == "github" else "gitlab/note.json"
        item = copy.deepcopy(shape(name, self.base))
        self.next_id += 1
        item["id"], item["body"] = self.next_id, body
        if "html_url" in item:
            item["html_url"] = f"{self.base}/acme/fraud/issues/1347#issuecomment-{self.next_id}"
        self.comments.append(item)
        return item

    def answer(self, req: Recorded) -> tuple[int, Any, dict[str, str]]:
        gh = self.provider == "github"
        list_path = "/repos/acme/fraud/issues/1347/comments" if gh else "/projects/42/merge_requests/7/notes"
        if req.method == "GET" and req.path == list_path:
            per_page, page = int(req.query["per_page"][0]), int(req.query["page"][0])
            chunk = self.comments[(page - 1) * per_page : page * per_page]
            pages = max(1, -(-len(self.comments) // per_page))
            nxt = page + 1 if page < pages else None
            if gh:
                link = f'<{self.base}{list_path}?per_page={per_page}&page={pages}>; rel="last"'
                if nxt:
                    link = f'<{self.base}{list_path}?per_page={per_page}&page={nxt}>; rel="next", ' + link
                return 200, chunk, {"Link": link}
            return (
                200,
                chunk,
                {
                    "X-Page": str(page),
                    "X-Next-Page": str(nxt or ""),
                    "X-Total-Pages": str(pages),
                    "X-Per-Page": str(per_page),
                    "X-Total": str(len(self.comments)),
                },
            )
        if req.method == "POST" and req.path == list_path:
            return 201, self._add(req.body["body"]), {}
        edit = "/repos/acme/fraud/issues/comments/" if gh else f"{list_path}/"
        if req.method == ("PATCH" if gh else "PUT") and req.path.startswith(edit):
            wanted = int(req.path.rsplit("/", 1)[1])
            for item in self.comments:
                if item["id"] == wanted:
                    item["body"] = req.body["body"]
                    return 200, item, {}
        return 404, {"message": "Not Found" if gh else "404 Not found"}, {}


@pytest.fixture(autouse=True)
def _no_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CI_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[Recorder, FakeThread]]:
    thread = FakeThread("github", existing=130)  # two pages of 100
    with recorder(thread.answer) as api:
        thread.base = api.url
        event = tmp_path / "event.json"
        event.write_text(json.dumps({"action": "synchronize", "number": 1347, "pull_request": {"number": 1347}}))
        for name, value in {
            "GITHUB_TOKEN": TOKEN,
            "GITHUB_API_URL": api.url,
            "GITHUB_REPOSITORY": "acme/fraud",
            "GITHUB_EVENT_PATH": str(event),
            "GITHUB_SERVER_URL": "https://github.test",
            "GITHUB_RUN_ID": "99",
        }.items():
            monkeypatch.setenv(name, value)
        yield api, thread


@pytest.fixture
def gitlab(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[Recorder, FakeThread]]:
    thread = FakeThread("gitlab", existing=120)
    with recorder(thread.answer) as api:
        thread.base = api.url
        for name, value in {
            "MLSHIP_GITLAB_TOKEN": "glpat-s3cr3t",
            "CI_API_V4_URL": api.url,
            "CI_PROJECT_ID": "42",
            "CI_MERGE_REQUEST_IID": "7",
            "CI_JOB_URL": "https://gitlab.test/acme/fraud/-/jobs/5",
            "CI_PROJECT_DIR": str(tmp_path),
            "CI_PIPELINE_URL": "https://gitlab.test/acme/fraud/-/pipelines/3",
        }.items():
            monkeypatch.setenv(name, value)
        yield api, thread


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["comment", *args])
    return result.exit_code, result.stdout, result.stderr


def test_the_comment_has_the_verdict_tables_and_links() -> None:
    report = json.loads(GATE.read_text())
    body = render(
        report,
        {"ci run": "https://ci.test/run/1", "mlflow run": "https://mlflow.test/#/runs/r"},
        plots_url="https://ci.test/artifacts",
    )
    lines = body.splitlines()
    assert lines[0] == MARKER
    assert lines[1].startswith("## ✅ **Gate passed**: ")
    assert "| metric | candidate | champion | Δ | CI of Δ |" in lines
    assert "| **roc_auc** (primary) | 0.8115 | 0.8115 | +0.0000 | [+0.0000, +0.0000] |" in lines
    assert "### Fairness by `customer_segment`" in lines
    groups = [
        line.split("|")[1].strip() for line in lines if line.startswith("| ") and "| 0." in line and "%" not in line
    ]
    assert {"business", "premium", "standard", "student"} <= set(groups)
    assert "[curves](https://ci.test/artifacts/curves.png)" in body
    assert "- **MLflow run:** [a1f73c3a02bd4148b6d6ff8817bed43f](https://mlflow.test/#/runs/r)" in lines
    failing = {
        **report,
        "verdict": "fail",
        "champion": None,
        "champion_note": "no @champion yet",
        "gates": [
            {
                "name": "floor.roc_auc",
                "status": "fail",
                "detail": "0.70 < 0.80 | low",
                "setting": "gates.metric_floors.roc_auc = 0.8",
            }
        ],
    }
    text = render(failing, {})
    assert text.splitlines()[1].startswith("## ❌ **Gate failed**")
    assert "| metric | candidate | CI |" in text and "- **Champion:** no @champion yet" in text
    assert "| `floor.roc_auc` | 0.70 < 0.80 \\| low | `gates.metric_floors.roc_auc = 0.8` |" in text


def test_not_enough_evidence_is_its_own_state_in_the_comment() -> None:
    report = json.loads(GATE.read_text())
    unsettled = {
        "name": "fairness.equalized_odds",
        "status": "inconclusive",
        "detail": "not enough evidence (passes with a warning): 0.053, 95% bounds [0.000, 0.208] straddles 0.15",
        "setting": 'gates.fairness_inconclusive = "warn"',
        "blocking": False,
        "settle": "about 79 positives and 49 negatives per group (now 31 and 19) would settle it",
    }
    warned = {**report, "verdict": "pass", "gates": [*report["gates"], unsettled]}
    lines = render(warned, {}).splitlines()
    assert lines[1].startswith("## ⚠️ **Gate passed, not enough evidence**: ")
    assert "### ⚠️ Not enough evidence" in lines and "### Failed gates" not in lines
    row = next(line for line in lines if line.startswith("| `fairness.equalized_odds`"))
    assert "about 79 positives and 49 negatives per group" in row
    assert 'passes with this warning (`gates.fairness_inconclusive = "warn"`)' in row
    blocked = {**warned, "verdict": "fail", "gates": [*report["gates"], {**unsettled, "blocking": True}]}
    text = render(blocked, {})
    assert text.splitlines()[1].startswith("## ❌ **Gate failed**") and "fails the gate" in text


def test_github_creates_then_updates_in_place(github: tuple[Recorder, FakeThread]) -> None:
    api, thread = github
    code, out, err = invoke("--provider", "github", "--report", str(GATE))
    assert code == 0, err
    assert "comment created" in out and "2 page(s)" in out
    first = [(r.method, r.path, r.query.get("page")) for r in api.requests]
    assert first == [
        ("GET", "/repos/acme/fraud/issues/1347/comments", ["1"]),
        ("GET", "/repos/acme/fraud/issues/1347/comments", ["2"]),
        ("POST", "/repos/acme/fraud/issues/1347/comments", None),
    ]
    for req in api.requests:
        assert req.headers["authorization"] == f"Bearer {TOKEN}"
        assert req.headers["accept"] == "application/vnd.github+json"
        assert req.headers["x-github-api-version"] == "2022-11-28"
    posted = api.requests[-1].body
    assert set(posted) == {"body"} and posted["body"].startswith(MARKER)
    assert "https://github.test/acme/fraud/actions/runs/99" in posted["body"]
    created = thread.comments[-1]["id"]

    api.requests.clear()
    code, out, _ = invoke("--provider", "github", "--report", str(GATE))
    assert code == 0 and "comment updated" in out
    assert [(r.method, r.path) for r in api.requests][-1] == ("PATCH", f"/repos/acme/fraud/issues/comments/{created}")
    assert "POST" not in [r.method for r in api.requests]
    assert sum(c["body"].startswith(MARKER) for c in thread.comments) == 1, "one comment, updated in place"
    assert len(thread.comments) == 131


def test_a_quoted_marker_is_not_our_comment(github: tuple[Recorder, FakeThread]) -> None:
    api, thread = github
    thread._add(f"> {MARKER}\n> ## ❌ **Gate failed**: quoted by a reviewer")
    assert invoke("--provider", "github", "--report", str(GATE))[0] == 0
    assert api.requests[-1].method == "POST" and thread.comments[-2]["body"].startswith("> ")


def test_github_pull_number_from_the_ref_when_the_event_has_none(
    github: tuple[Recorder, FakeThread], monkeypatch: pytest.MonkeyPatch
) -> None:
    api, _ = github
    monkeypatch.delenv("GITHUB_EVENT_PATH")
    monkeypatch.setenv("GITHUB_REF", "refs/pull/1347/merge")
    assert invoke("--provider", "github", "--report", str(GATE))[0] == 0
    assert api.requests[0].path == "/repos/acme/fraud/issues/1347/comments"


def test_gitlab_creates_then_updates_in_place(gitlab: tuple[Recorder, FakeThread], tmp_path: Path) -> None:
    api, thread = gitlab
    report = tmp_path / "reports" / "gate" / "gate.json"
    report.parent.mkdir(parents=True)
    report.write_text(GATE.read_text())
    code, out, err = invoke("--provider", "gitlab", "--report", str(report))
    assert code == 0, err
    first = [(r.method, r.path, r.query.get("page")) for r in api.requests]
    assert first == [
        ("GET", "/projects/42/merge_requests/7/notes", ["1"]),
        ("GET", "/projects/42/merge_requests/7/notes", ["2"]),
        ("POST", "/projects/42/merge_requests/7/notes", None),
    ]
    assert all(r.headers["private-token"] == "glpat-s3cr3t" and "authorization" not in r.headers for r in api.requests)
    assert api.requests[0].query["sort"] == ["asc"]
    body = api.requests[-1].body["body"]
    assert "[curves](https://gitlab.test/acme/fraud/-/jobs/5/artifacts/file/reports/gate/curves.png)" in body
    created = thread.comments[-1]["id"]
    api.requests.clear()
    code, out, _ = invoke("--provider", "gitlab", "--report", str(report))
    assert code == 0 and "comment updated" in out
    assert [(r.method, r.path) for r in api.requests][-1] == ("PUT", f"/projects/42/merge_requests/7/notes/{created}")
    assert sum(c["body"].startswith(MARKER) for c in thread.comments) == 1


@pytest.mark.parametrize(
    ("provider", "unset", "says"),
    [
        ("github", "GITHUB_TOKEN", "GITHUB_TOKEN is not set (pass `GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}`"),
        ("github", "GITHUB_EVENT_PATH", "this run is not for a pull request"),
        ("github", "GITHUB_API_URL", "GITHUB_API_URL is not set"),
        ("gitlab", "MLSHIP_GITLAB_TOKEN", "CI_JOB_TOKEN cannot write merge request notes"),
        ("gitlab", "CI_MERGE_REQUEST_IID", "CI_MERGE_REQUEST_IID is not set"),
    ],
)
def test_missing_token_or_ci_variable_is_exit_2_in_one_line(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, provider: str, unset: str, says: str
) -> None:
    api, _ = request.getfixturevalue(provider)
    monkeypatch.delenv(unset)
    code, _, err = invoke("--provider", provider, "--report", str(GATE))
    assert code == 2 and err.count("\n") == 1 and err.startswith("mlship: error: ")
    assert says in err and api.requests == []


def test_bad_report_or_provider_is_exit_2(tmp_path: Path) -> None:
    assert invoke("--provider", "github", "--report", str(tmp_path / "none.json"))[0] == 2
    (tmp_path / "x.json").write_text('{"hello": 1}')
    code, _, err = invoke("--provider", "github", "--report", str(tmp_path / "x.json"), "--dry-run")
    assert code == 2 and "is not a gate report" in err
    assert invoke("--provider", "bitbucket", "--report", str(GATE))[0] == 2


@pytest.mark.parametrize("provider", ["github", "gitlab"])
def test_an_api_error_is_exit_3_in_one_line_without_the_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, provider: str
) -> None:
    fixture = "github/error_403.json" if provider == "github" else "gitlab/error_401.json"
    status = 403 if provider == "github" else 401
    with recorder(lambda _r: (status, shape(fixture, "http://docs"), {})) as api:
        env = (
            {
                "GITHUB_TOKEN": TOKEN,
                "GITHUB_API_URL": api.url,
                "GITHUB_REPOSITORY": "acme/fraud",
                "GITHUB_REF": "refs/pull/5/merge",
            }
            if provider == "github"
            else {
                "MLSHIP_GITLAB_TOKEN": TOKEN,
                "CI_API_V4_URL": api.url,
                "CI_PROJECT_ID": "42",
                "CI_MERGE_REQUEST_IID": "7",
            }
        )
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        code, _, err = invoke("--provider", provider, "--report", str(GATE))
    assert code == 3 and err.count("\n") == 1 and TOKEN not in err
    expected = "Resource not accessible by integration" if provider == "github" else "401 Unauthorized"
    assert f"answered {status} to GET" in err and expected in err
    assert ("pull-requests: write" if provider == "github" else "api scope") in err


def test_an_unreachable_api_is_exit_3(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "GITHUB_TOKEN": TOKEN,
        "GITHUB_API_URL": closed_port_url(),
        "GITHUB_REPOSITORY": "acme/fraud",
        "GITHUB_REF": "refs/pull/5/merge",
    }.items():
        monkeypatch.setenv(name, value)
    code, _, err = invoke("--provider", "github", "--report", str(GATE))
    assert code == 3 and "github API unreachable" in err and TOKEN not in err


def test_dry_run_prints_the_comment_and_needs_no_ci() -> None:
    code, out, _ = invoke("--provider", "gitlab", "--report", str(GATE), "--dry-run")
    assert code == 0 and out.startswith(MARKER) and "### Fairness by `customer_segment`" in out


REPO = Path(__file__).resolve().parents[2]


def _mlship_argv(line: str) -> list[str]:
    import shlex

    words = shlex.split(line)
    return words[words.index("mlship") + 1 :]


def test_github_workflow_posts_on_pull_requests_only_with_least_permissions() -> None:
    import yaml

    job = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())["jobs"]["review-comment"]
    assert job["permissions"] == {"contents": "read", "pull-requests": "write"}
    assert job["needs"] == "pipeline" and "always()" in job["if"]
    assert "github.event_name == 'pull_request'" in job["if"]
    assert "head.repo.full_name == github.repository" in job["if"], "fork PRs have a read-only token"
    step = next(s for s in job["steps"] if "mlship comment" in str(s.get("run", "")))
    assert step["env"] == {"GITHUB_TOKEN": "${{ secrets.GITHUB_TOKEN }}"}
    argv = _mlship_argv(step["run"])
    assert argv[:3] == ["comment", "--provider", "github"]
    report = argv[argv.index("--report") + 1]
    assert report == "reports/gate/gate.json" and f"hashFiles('{report}')" in step["if"]
    download = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/download-artifact"))
    assert download["with"]["path"] == "reports/"
    code, out, err = invoke(*argv[1 : argv.index("--report")], "--report", str(GATE), "--dry-run")
    assert code == 0 and out.startswith(MARKER), err


def test_gitlab_job_posts_on_merge_request_pipelines_after_the_pipeline() -> None:
    import yaml

    ci = yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())
    job = ci["review-comment"]
    assert ci["stages"].index(job["stage"]) == ci["stages"].index(ci["pipeline"]["stage"]) + 1
    assert job["needs"] == [{"job": "pipeline", "artifacts": True}]
    assert job["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "merge_request_event"', "when": "always"}]
    assert job["artifacts"]["paths"] == ["reports/"], "the note's plot links point into this job's artifacts"
    line = next(line for line in job["script"] if "mlship comment" in line)
    argv = _mlship_argv(line)
    assert argv[:3] == ["comment", "--provider", "gitlab"]
    assert "MLSHIP_GITLAB_TOKEN" not in str(job.get("variables", {})), "the token comes from a masked variable"
    code, out, _ = invoke(*argv[1 : argv.index("--report")], "--report", str(GATE), "--dry-run")
    assert code == 0 and out.startswith(MARKER)


def test_dry_run_with_a_scan_report_carries_the_scan_section_above_the_footer(tmp_path: Path) -> None:
    from mlship.security import trivy

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "trivy" / "debian-slim-unfixed-only.json"
    trivy.scan_gate(fixture, report_dir=tmp_path)
    code, out, _ = invoke(
        "--provider", "github", "--report", str(GATE), "--dry-run", "--scan-report", str(tmp_path / "scan-gate.json")
    )
    assert code == 0, out
    assert "### ✅ Image scan gate passed" in out
    assert "unfixed (no fixed version yet): 13" in out, "mlflow's CVE-2024-37054 too: no ignore file here"
    assert out.index("Image scan gate") < out.index("Posted by `mlship comment`")
    # absent (the scan step did not run): the gate comment alone, no error
    code, out, _ = invoke(
        "--provider", "github", "--report", str(GATE), "--dry-run", "--scan-report", str(tmp_path / "none.json")
    )
    assert code == 0 and "Image scan gate" not in out
    (tmp_path / "bad.json").write_text("[1]")
    code, _out, err = invoke(
        "--provider", "github", "--report", str(GATE), "--dry-run", "--scan-report", str(tmp_path / "bad.json")
    )
    assert code == 2 and "not a scan-gate report" in err
