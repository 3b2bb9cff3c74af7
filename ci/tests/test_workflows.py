"""The CI definitions, tested against what runs them: the dagger-for-github action's real input
semantics, bash for `run:` steps, and mlship's real reports."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from dagger import dag
from ml_pipeline.main import MlPipeline

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
ENGINE = json.loads((ROOT / "dagger.json").read_text())["engineVersion"]
ACTION = "dagger/dagger-for-github@"
EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.S)


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def dagger_steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for step in steps(workflow) if str(step.get("uses", "")).startswith(ACTION)]


def expression_value(expr: str) -> str:
    """A stand-in for a `${{ }}` value: the first branch of `cond && 'a' || 'b'`, else a token."""
    literal = re.search(r"&&\s*'([^']*)'", expr)
    return literal.group(1) if literal else "VALUE"


def action_command(with_: dict[str, Any]) -> tuple[str, list[str]]:
    """What dagger-for-github v8.4.1 runs for these inputs: (verb, argv after the verb).

    The action picks the verb (`call` when `call:` is set, `check` for `check:`, none for
    `shell:`, which it writes to a script file and hands to `dagger` as a Dagger Shell script,
    else `verb:`), collapses newlines of `args`/`call` into spaces and pastes the text,
    unquoted, into a bash command line: bash splits and expands it. `args` wins over `call`.
    """
    args = str(with_.get("args", "") or "")
    call = str(with_.get("call", "") or "")
    if call:
        verb = "call"
    elif with_.get("check"):
        verb = "check"
    elif with_.get("shell"):
        return "shell-script", [str(with_["shell"])]
    else:
        verb = str(with_.get("verb", "call"))
    text = re.sub(r"\\\n|\n", " ", args or call)
    text = EXPRESSION.sub(lambda m: expression_value(m.group(1)), text)
    out = subprocess.run(["bash", "-c", f"printf '%s\\0' {text}"], capture_output=True, text=True, check=True)
    return verb, [word for word in out.stdout.split("\0") if word]


def test_action_model_rejects_the_dagger_shell_trap() -> None:
    """The old report step: `shell:` runs Dagger Shell, in which `dagger call …` is no command."""
    verb, argv = action_command({"shell": "dagger call gate --no-champion export --path=reports/gate\n"})
    assert verb == "shell-script" and argv[0].startswith("dagger call")
    assert action_command({"call": "all --git-sha=${{ github.sha }}"}) == ("call", ["all", "--git-sha=VALUE"])
    verb, argv = action_command({"call": "rollback\n  ${{ inputs.env == 'production' && '--approve' || '' }}"})
    assert (verb, argv) == ("call", ["rollback", "--approve"])


@pytest.mark.parametrize("path", sorted(WORKFLOWS.glob("*.yml")), ids=lambda p: p.name)
def test_every_dagger_step_is_a_dagger_call(path: Path) -> None:
    for step in dagger_steps(load(path)):
        assert "shell" not in step["with"], f"{path.name}: `shell:` is Dagger Shell, not bash: use `call:`"
        verb, argv = action_command(step["with"])
        assert verb == "call" and argv, (path.name, step.get("name"))
        assert not argv[0].startswith("-") and argv[0] != "dagger", (path.name, argv)


@pytest.mark.parametrize(
    ("schema", "path"),
    [("vendor.github-workflows", p) for p in sorted(WORKFLOWS.glob("*.yml"))]
    + [("vendor.gitlab-ci", ROOT / ".gitlab-ci.yml")],
    ids=lambda v: v.name if isinstance(v, Path) else v,
)
def test_schema_valid(schema: str, path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dagger_step_pins_the_engine_version() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        wf = load(path)
        assert wf["env"]["DAGGER_VERSION"] == ENGINE.lstrip("v"), path.name
        for step in dagger_steps(wf):
            assert step["with"]["version"] == "${{ env.DAGGER_VERSION }}", path.name
    gitlab = load(ROOT / ".gitlab-ci.yml")
    assert gitlab["variables"]["DAGGER_VERSION"] == ENGINE


def test_ci_runs_all_then_exports_reports_even_when_all_fails() -> None:
    wf = load(WORKFLOWS / "ci.yml")
    on = wf.get("on", wf.get(True))
    assert "pull_request" in on and on["push"]["branches"] == ["main"]
    job = wf["jobs"]["pipeline"]["steps"]
    calls = [(s, action_command(s["with"])[1]) for s in dagger_steps(wf)]
    assert calls[0][1][0] == "all"
    exported = {}
    for step, argv in calls[1:]:
        assert step.get("if") == "always()", argv  # a red `all` must not skip its reports
        assert argv[-2] == "export" and argv[-1].startswith("--path=reports/"), argv
        exported[argv[0]] = argv[-1].removeprefix("--path=")
    assert exported == {
        "gate": "reports/gate",
        "test-report": "reports/tests",
        "scan-report": "reports/trivy.sarif",
        "scan-summary": "reports/scan",
    }
    summary = next(s for s in job if "GITHUB_STEP_SUMMARY" in str(s.get("run", "")))
    assert f"{exported['gate']}/gate.md" in summary["run"] and summary["if"] == "always()"
    assert f"{exported['scan-summary']}/scan-gate.md" in summary["run"], "the scan summary reaches the job summary"
    comment = next(s for s in wf["jobs"]["review-comment"]["steps"] if "mlship comment" in str(s.get("run", "")))
    assert f"--scan-report {exported['scan-summary']}/scan-gate.json" in comment["run"]
    upload = next(s for s in job if str(s.get("uses", "")).startswith("actions/upload-artifact@"))
    assert upload["with"]["path"] == "reports/" and upload["if"] == "always()"
    sarif = next(s for s in job if str(s.get("uses", "")).startswith("github/codeql-action/upload-sarif@"))
    assert sarif["with"]["sarif_file"] == exported["scan-report"]


def test_ci_gate_report_call_matches_what_all_gated() -> None:
    """Without a tracking server `all` gates with --no-champion; the report call must ask for the
    same gate, so it is the cached result of the run, not a different one."""
    wf = load(WORKFLOWS / "ci.yml")
    argv = next(a for s in dagger_steps(wf) for a in [action_command(s["with"])[1]] if a[0] == "gate")
    all_argv = action_command(dagger_steps(wf)[0]["with"])[1]
    assert not any(a.startswith("--tracking-uri") for a in all_argv) and "--no-champion" in argv
    # the SARIF is of the image `all` scanned: the same labels, so the same build
    calls = {action_command(s["with"])[1][0]: str(s["with"]["call"]) for s in dagger_steps(wf)}
    all_call, sarif_call, summary_call = calls["all"], calls["scan-report"], calls["scan-summary"]
    for flag in ("--git-sha=${{ github.sha }}", "--created=${{ steps.meta.outputs.created }}"):
        assert flag in all_call and flag in sarif_call and flag in summary_call, flag


def _run_step(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A `run:` step as GitHub runs it: `bash --noprofile --norc -eo pipefail {0}`."""
    path = cwd / "step.sh"
    path.write_text(script)
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(path)],
        cwd=cwd,
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_production_deploys_what_staging_verified_after_approval() -> None:
    wf = load(WORKFLOWS / "deploy.yml")
    staging, prod = wf["jobs"]["staging"], wf["jobs"]["production"]
    assert prod["environment"] == "production" and prod["needs"] == "staging"
    assert staging["outputs"] == {
        "model": "${{ steps.release.outputs.MLSHIP_MODEL }}",
        "image": "${{ steps.release.outputs.MLSHIP_IMAGE }}",
    }
    call = dagger_steps({"jobs": {"p": prod}})[0]["with"]["call"]
    assert "--model=${{ needs.staging.outputs.model }}" in call
    assert "--image=${{ needs.staging.outputs.image }}" in call
    _, argv = action_command(dagger_steps({"jobs": {"p": prod}})[0]["with"])
    assert argv[0] == "deploy" and "--env=PRODUCTION" in argv and "--approve" in argv
    assert "--tracking-uri=VALUE" in argv and "--tracking-token=env://MLFLOW_TRACKING_TOKEN" in argv
    _, staging_argv = action_command(dagger_steps({"jobs": {"s": staging}})[0]["with"])
    assert staging_argv[0] == "all" and "--approve" not in staging_argv
    rollback = action_command(dagger_steps({"jobs": {"r": wf["jobs"]["rollback"]}})[0]["with"])[1]
    assert rollback[0] == "rollback" and "--env=PRODUCTION" in rollback and "--approve" in rollback


def test_staging_release_step_reads_the_release_all_prints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real `all` summary (engine stood in) through the real step script: the job outputs
    are exactly the model version and image digest `all` deployed to staging."""
    from test_plans import FakeEngine, release

    engine = FakeEngine()
    engine.install(monkeypatch)
    output = anyio.run(
        lambda: MlPipeline(source=dag.directory())._all(
            release(
                tracking_uri="http://mlflow:5000",
                address="reg.example/mlship:abc",
                username="ci",
                password=dag.set_secret("pw", "p"),
                kubeconfig=dag.set_secret("kc", "k"),
            )
        )
    )
    step = next(s for s in load(WORKFLOWS / "deploy.yml")["jobs"]["staging"]["steps"] if s.get("id") == "release")
    out = tmp_path / "github_output"
    result = _run_step(step["run"], tmp_path, {"ALL_OUTPUT": output, "GITHUB_OUTPUT": str(out)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(out.read_text().splitlines()) == [
        f"MLSHIP_IMAGE=reg.example/mlship:abc@sha256:{'a' * 64}",
        "MLSHIP_MODEL=models:/card-fraud/7",
    ]
    # an `all` that printed no release (e.g. nothing was published) fails the step, so production never runs
    result = _run_step(step["run"], tmp_path, {"ALL_OUTPUT": "lint ok", "GITHUB_OUTPUT": str(out)})
    assert result.returncode != 0 and "no release" in result.stdout


SECRET_FLAGS = (
    "--password=",
    "--kubeconfig=",
    "--tracking-token=",
    "--aws-access-key-id=",
    "--aws-secret-access-key=",
    "--aws-session-token=",
)


def test_secrets_reach_dagger_only_as_secret_providers() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        for step in dagger_steps(load(path)):
            call = str(step["with"].get("call", ""))
            assert "secrets." not in call, path.name
            for flag in SECRET_FLAGS:
                if flag in call:
                    assert f"{flag}env://" in call, (path.name, flag)
    gitlab = (ROOT / ".gitlab-ci.yml").read_text()
    for flag in SECRET_FLAGS:
        assert all(f"{flag}env://" in line for line in gitlab.splitlines() if flag in line), flag


def test_gitlab_exports_reports_when_all_fails_and_hands_the_release_to_production() -> None:
    gitlab = load(ROOT / ".gitlab-ci.yml")
    for name in ("pipeline", "release-staging"):
        script = [line for item in gitlab[name]["script"] for line in (item if isinstance(item, list) else [item])]
        run_all = next(line for line in script if line.startswith("dagger call all"))
        assert run_all.endswith("|| status=$?") and script[-1] == "exit $status", name
        assert script.index(run_all) < next(i for i, line in enumerate(script) if "test-report export" in line)
        assert gitlab[name]["artifacts"]["when"] == "always"
    assert gitlab["release-staging"]["artifacts"]["reports"]["dotenv"] == "release.env"
    prod = gitlab["deploy-production"]
    assert prod["needs"] == ["release-staging"] and prod["rules"][-1]["when"] == "manual"
    # the manual rollback is optional (allow_failure: true), so no pipeline on main shows *blocked*
    # waiting for it; the production deploy stays blocking (the release is not done until it runs)
    assert gitlab["rollback"]["rules"][-1]["when"] == "manual" and gitlab["rollback"]["allow_failure"] is True
    assert prod.get("allow_failure", False) is False
    for name in ("pipeline", "release-staging"):
        script = " ".join(
            str(x) for item in gitlab[name]["script"] for x in (item if isinstance(item, list) else [item])
        )
        assert (
            "scan-summary --git-sha=$CI_COMMIT_SHA --created=$CI_COMMIT_TIMESTAMP export --path=reports/scan" in script
        )
    note = " ".join(gitlab["review-comment"]["script"])
    assert "--scan-report reports/scan/scan-gate.json" in note
    deploy = prod["script"][-1]
    assert "--model=$MLSHIP_MODEL" in deploy and "--image=$MLSHIP_IMAGE" in deploy and "--approve" in deploy


@pytest.mark.parametrize(("drift", "verdict"), [(0.0, "false"), (1.0, "true")])
def test_monitor_reads_the_verdict_of_a_real_drift_report(tmp_path: Path, drift: float, verdict: str) -> None:
    """mlship writes drift.json (the same library call `mlship drift` makes); the workflow's step
    must read the key mlship writes."""
    from mlship.data.synth import write_synthetic
    from mlship.monitoring.drift import detect
    from mlship.settings import load_settings

    write_synthetic(tmp_path / "ref.parquet", rows=3000, seed=1)
    write_synthetic(tmp_path / "cur.parquet", rows=3000, seed=2, drift=drift)
    settings = load_settings(cwd=ROOT)
    report = detect(settings, tmp_path / "ref.parquet", tmp_path / "cur.parquet", tmp_path / "reports" / "drift")
    assert report.dataset_drift is (verdict == "true")
    wf = load(WORKFLOWS / "monitor.yml")
    step = next(s for s in wf["jobs"]["drift"]["steps"] if s.get("id") == "check")
    out, summary = tmp_path / "github_output", tmp_path / "summary.md"
    ran = _run_step(step["run"], tmp_path, {"GITHUB_OUTPUT": str(out), "GITHUB_STEP_SUMMARY": str(summary)})
    assert ran.returncode == 0, ran.stderr
    assert out.read_text().strip() == f"drift={verdict}"
    assert summary.read_text() == (tmp_path / "reports" / "drift" / "drift.md").read_text()
    assert wf["jobs"]["drift"]["outputs"]["drift"] == "${{ steps.check.outputs.drift }}"
    assert wf["jobs"]["retrain"]["if"] == "needs.drift.outputs.drift == 'true'"


def test_monitor_step_fails_on_a_report_without_the_verdict(tmp_path: Path) -> None:
    (tmp_path / "reports" / "drift").mkdir(parents=True)
    (tmp_path / "reports" / "drift" / "drift.json").write_text(json.dumps({"drift": True}))
    step = next(s for s in load(WORKFLOWS / "monitor.yml")["jobs"]["drift"]["steps"] if s.get("id") == "check")
    out = tmp_path / "github_output"
    ran = _run_step(step["run"], tmp_path, {"GITHUB_OUTPUT": str(out), "GITHUB_STEP_SUMMARY": str(tmp_path / "s")})
    assert ran.returncode != 0 and "dataset_drift" in ran.stderr


def test_monitor_retrains_on_drift_and_never_deploys() -> None:
    wf = load(WORKFLOWS / "monitor.yml")
    on = wf.get("on", wf.get(True))
    assert on["schedule"]
    calls = [action_command(s["with"])[1][0] for s in dagger_steps(wf)]
    assert calls == ["monitor", "train", "batch-predict"]
    assert "deploy" not in " ".join(str(s["with"]) for s in dagger_steps(wf))


def _batch_step(name: str) -> dict[str, Any]:
    return next(s for s in load(WORKFLOWS / "monitor.yml")["jobs"]["batch"]["steps"] if s.get("name") == name)


def test_nightly_batch_scores_a_bucket_prefix_with_secret_credentials() -> None:
    wf = load(WORKFLOWS / "monitor.yml")
    on = wf.get("on", wf.get(True))
    assert on["schedule"] and "batch" in wf["jobs"]
    verb, argv = action_command(_batch_step("dagger call batch-predict")["with"])
    assert verb == "call" and argv[0] == "batch-predict" and argv[-2:] == ["export", "--path=reports/batch"]
    flags = dict(a.split("=", 1) for a in argv[1:-2])
    assert {"--input-uri", "--output-uri", "--model-uri", "--tracking-uri"} <= flags.keys()
    for secret in ("--aws-access-key-id", "--aws-secret-access-key", "--tracking-token"):
        assert flags[secret].startswith("env://"), secret
    env = _batch_step("dagger call batch-predict")["env"]
    assert env["AWS_SECRET_ACCESS_KEY"] == "${{ secrets.AWS_SECRET_ACCESS_KEY }}"
    upload = next(s for s in wf["jobs"]["batch"]["steps"] if str(s.get("uses", "")).startswith("actions/upload-"))
    assert upload["if"] == "always()" and upload["with"]["path"] == "reports/batch"


@pytest.mark.parametrize("code", [0, 1, 3])
def test_batch_verdict_step_keeps_the_report_and_fails_with_mlships_exit_code(tmp_path: Path, code: int) -> None:
    """The step reads the exit-code file batch-predict returns beside report/ (as `monitor` does)."""
    out = tmp_path / "reports" / "batch"
    (out / "report").mkdir(parents=True)
    (out / "exit-code").write_text(f"{code}\n")
    if code != 3:  # an environment error (exit 3) writes no report
        (out / "report" / "batch.md").write_text("# batch: 37 rows refused\n")
    summary = tmp_path / "summary.md"
    ran = _run_step(_batch_step("Batch verdict")["run"], tmp_path, {"GITHUB_STEP_SUMMARY": str(summary)})
    assert ran.returncode == code, ran.stderr
    assert f"exited {code}" in ran.stdout
    assert summary.exists() == (code != 3)


def test_batch_verdict_step_fails_without_an_exit_code(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    ran = _run_step(_batch_step("Batch verdict")["run"], tmp_path, {"GITHUB_STEP_SUMMARY": str(summary)})
    assert ran.returncode != 0 and "exit-code" in ran.stderr


def test_gitlab_schedule_runs_only_the_batch_scoring() -> None:
    """A nightly schedule on the default branch scores the bucket; it never releases or deploys."""
    gitlab = load(ROOT / ".gitlab-ci.yml")
    jobs = {name: job for name, job in gitlab.items() if isinstance(job, dict) and "script" in job}
    for name, job in jobs.items():
        first = job["rules"][0]
        on_schedule = first["if"] == '$CI_PIPELINE_SOURCE == "schedule"' and first.get("when") != "never"
        assert on_schedule == (name == "batch-scoring"), name
    batch = jobs["batch-scoring"]
    assert batch["artifacts"]["when"] == "always" and batch["artifacts"]["paths"] == ["reports/batch/"]
    call, *rest = batch["script"]
    assert call.startswith("dagger call batch-predict ") and call.endswith("export --path=reports/batch")
    assert rest[0] == "code=$(cat reports/batch/exit-code)" and rest[-1] == 'exit "$code"'


# ---- actions on current runtimes: the table in .github/action-versions.toml ----

ACTION_TABLE = ROOT / ".github" / "action-versions.toml"


def _version(tag: str) -> tuple[int, ...]:
    match = re.fullmatch(r"v(\d+(?:\.\d+)*)", tag)
    assert match, f"{tag!r} is not a vN[.N.N] tag (a branch or sha cannot be compared with the table)"
    return tuple(int(part) for part in match[1].split("."))


def pins_below_the_table(workflow_text: str, table: dict[str, dict[str, str]]) -> list[str]:
    """Every `uses:` of a workflow older than the table's minimum, or not in the table at all."""
    problems = []
    for use in re.findall(r"^\s*(?:-\s*)?uses:\s*(\S+)", workflow_text, flags=re.MULTILINE):
        name, _, tag = use.partition("@")
        if name not in table:
            problems.append(f"{use}: not in {ACTION_TABLE.name}")
            continue
        minimum = _version(table[name]["min"])
        found = _version(tag)
        # `v7` pins the moving major: it satisfies v7.x.y minimums; otherwise compare in full
        if found[: len(minimum)] < minimum[: len(found)] or (len(found) >= len(minimum) and found < minimum):
            problems.append(f"{use}: older than {table[name]['min']}")
    return problems


def action_table() -> dict[str, dict[str, str]]:
    import tomllib

    table: dict[str, dict[str, str]] = tomllib.loads(ACTION_TABLE.read_text())["actions"]
    return table


def test_every_workflow_pins_each_action_at_the_recorded_version_or_newer() -> None:
    table = action_table()
    for row in table.values():
        assert row["runtime"] in ("node24", "composite"), f"{row}: no deprecated runtime (node20) in the table"
    used = set()
    for path in WORKFLOWS.glob("*.yml"):
        text = path.read_text()
        assert pins_below_the_table(text, table) == [], path.name
        used |= {u.partition("@")[0] for u in re.findall(r"uses:\s*(\S+)", text)}
    assert used == set(table), "the table lists exactly the actions the workflows use"


def test_the_version_check_fails_on_an_older_pin_or_an_unknown_action() -> None:
    table = action_table()
    old = "steps:\n  - uses: actions/checkout@v4\n  - uses: astral-sh/setup-uv@v9.0.0\n  - uses: someone/else@v1\n"
    assert pins_below_the_table(old, table) == [
        "actions/checkout@v4: older than v7",
        "astral-sh/setup-uv@v9.0.0: older than v10.0.1",
        "someone/else@v1: not in action-versions.toml",
    ]
    ok = "steps:\n  - uses: actions/checkout@v7.0.1\n  - uses: astral-sh/setup-uv@v10.0.1\n"
    assert pins_below_the_table(ok, table) == []
