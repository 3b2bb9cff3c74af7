"""Each stage's lazy plan, walked offline: pinned images, caches, secrets, the exact mlship command."""

from __future__ import annotations

import ast
import datetime as dt
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import dagger
import pytest
from dagger import dag
from dagger._exceptions import QueryErrorValue
from dagger_plan import execs, reads_path, render, source_reads
from ml_pipeline import awaits, constants, images, main
from ml_pipeline.main import Environment, MlPipeline, ReportFormat, Severity, UsageError
from ml_pipeline.stages import DataFile

ROOT = Path(__file__).resolve().parents[2]
DIGEST = re.compile(r"^[^@\s]+:[^@\s]+@sha256:[0-9a-f]{64}$")
IMAGE = f"reg.example/mlship:abc@sha256:{'a' * 64}"


@pytest.fixture
def source() -> dagger.Directory:
    """A recognisable source tree, so a plan's reads from it can be told from other directories."""
    return dag.host().directory("/repo-under-test")


@pytest.fixture
def pipe(source: dagger.Directory) -> MlPipeline:
    return MlPipeline(source=source)


def data(name: str) -> DataFile:
    return DataFile(dag.host().file(f"/in/{name}"), name)


def froms(chain: str) -> list[str]:
    return re.findall(r"from\(address='([^']+)'\)", chain)


def test_every_image_is_pinned_by_tag_and_digest() -> None:
    for name, ref in images.ALL.items():
        assert DIGEST.match(ref), name
        assert ":" in ref.split("@")[0].rsplit("/", 1)[-1], f"{name} has no tag"


def test_base_is_pinned_python_uv_and_frozen_sync_with_cache(pipe: MlPipeline) -> None:
    base = pipe._base()
    chain = render(base)
    assert set(froms(chain)) == {images.PYTHON, images.UV}
    assert "withMountedCache(path='/root/.cache/uv', cache=<CacheVolume:cacheVolume(key='mlship-uv')>" in chain
    assert execs(base) == [["uv", "sync", "--frozen", "--no-install-project"], ["uv", "sync", "--frozen"]]


def test_all_images_used_anywhere_are_pinned(pipe: MlPipeline) -> None:
    kube = pipe._kube(dag.set_secret("kc", "x"), "", None)
    chains = [render(c) for c in (pipe._lint(), pipe._trivy(pipe._base(), ReportFormat.JSON), kube)]
    used = {ref for chain in chains for ref in froms(chain)}
    assert used == set(images.ALL.values())


def test_lint_runs_the_project_linters_and_hadolint(pipe: MlPipeline) -> None:
    lint = pipe._lint()
    assert execs(lint)[2:] == [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy", "--strict"]]
    assert "withExec(args=['/bin/hadolint', '--ignore', 'DL3006', '/Dockerfile'])" in render(lint)
    assert "file(path='deployment/Dockerfile')" in render(lint)


def test_hadolint_skips_dl3006_only_because_every_from_is_pinned() -> None:
    """hadolint 2.12.0 fails `FROM ${BASE_IMAGE}` with DL3006 (found by the replay tier): it cannot
    see the ARG's default. The rule is skipped only while every FROM is pinned by tag and digest."""
    dockerfile = (ROOT / "deployment" / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", dockerfile, flags=re.M))
    stages = set(re.findall(r"^FROM \S+ AS (\w+)", dockerfile, flags=re.M))
    froms = re.findall(r"^FROM (\S+)", dockerfile, flags=re.M)
    assert froms
    for ref in froms:
        arg = re.fullmatch(r"\$\{(\w+)\}", ref)
        image = args[arg.group(1)] if arg else ref
        assert image in stages or DIGEST.match(image), f"FROM {ref} is not pinned by tag and digest"


# --- data files keep their own name: mlship picks its reader by the extension ---


@pytest.mark.parametrize("name", ["transactions.csv", "transactions.parquet"])
def test_validate_train_and_gate_read_the_file_under_its_own_name(pipe: MlPipeline, name: str) -> None:
    path = f"/work/data/{name}"
    validate = pipe._validate(data(name))
    assert f"withFile(path='{path}', source=<File:host().file(path='/in/{name}')>)" in render(validate)
    assert execs(validate)[-1] == ["mlship", "validate", "--data", path, "--report-dir", "/out/validate"]
    assert execs(pipe._train(data(name), "", None))[-1] == ["mlship", "train", "--data", path, "--out", "/out/train"]
    gate = execs(pipe._gate(dag.directory(), data(name), "", None, no_champion=True))[-1]
    assert gate[gate.index("--data") + 1] == path
    assert "data.parquet" not in render(validate)


def test_functions_take_the_name_from_the_file(pipe: MlPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """The functions ask the engine for the file's name (File.name) instead of inventing one."""

    async def file_name(file: dagger.File) -> str:
        return render(file).split("/")[-1].rstrip("')")

    async def exit_code(ctr: dagger.Container) -> int:
        return 0

    monkeypatch.setattr(awaits, "file_name", file_name)
    monkeypatch.setattr(awaits, "exit_code", exit_code)
    csv = dag.host().file("/in/january.csv")
    trained = anyio.run(lambda: pipe.train(data=csv))
    assert "'--data', '/work/data/january.csv'" in render(trained)
    log = dag.host().file("/in/predictions.jsonl")
    drift = anyio.run(lambda: pipe.monitor(reference=dag.host().file("/in/ref.parquet"), current=log))
    assert "'--current', '/work/current/predictions.jsonl'" in render(drift)
    scored = anyio.run(lambda: pipe.batch_predict(input=csv, model=dag.directory()))
    assert "'--input', '/work/input/january.csv'" in render(scored)


def test_without_data_the_synthetic_parquet_is_generated(pipe: MlPipeline) -> None:
    assert execs(pipe._validate(None))[-2:] == [
        ["mlship", "data", "synth", "--rows", "20000", "--seed", "42", "--out", "/work/data/synthetic.parquet"],
        ["mlship", "validate", "--data", "/work/data/synthetic.parquet", "--report-dir", "/out/validate"],
    ]
    # without a tracking server the embedded MLflow store is returned with the model
    assert "withDirectory(path='mlflow'" in render(pipe._train_dir(None, "", None))


# --- test: coverage and reports, also when the tests fail ---


def test_test_runs_with_coverage_and_writes_junit_and_coverage_xml(pipe: MlPipeline) -> None:
    run = pipe._test()
    argv = execs(run)[-1]
    assert argv[0] == "pytest" and "--cov" in argv
    assert "--cov-report=xml:/reports/coverage.xml" in argv and "--junitxml=/reports/junit.xml" in argv
    # the floor lives in pyproject and pytest-cov enforces it whenever --cov is given
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["tool"]["coverage"]["report"]["fail_under"] >= 90
    # a failing run still produces its reports: the exit code is read, not raised, and the
    # report directory exists even when pytest dies before writing into it
    assert argv[1:3] == ["-m", "not docker and not replay"]  # every tier that needs no Docker daemon
    assert "--cov-fail-under=0" not in argv  # the default selection is gated by the floor …
    narrow = execs(pipe._test("not slow and not docker"))[-1]
    assert narrow[1:3] == ["-m", "not slow and not docker"]
    assert narrow[-1] == "--cov-fail-under=0"  # … a narrower one (replay found) reports coverage, not gates on it
    assert render(run).endswith("expect='ANY')")
    assert "withDirectory(path='/reports', source=<Directory:directory()>).withExec(args=['pytest'" in render(run)


def test_the_test_stage_runs_what_ci_runs_minus_docker_the_spark_extra_and_a_jre(pipe: MlPipeline) -> None:
    """.ci/run syncs `--extra spark` and installs a JRE; so does the test stage's base, so the Spark
    tests run in `dagger call all` (and the stage requires them to, instead of skipping them)."""
    run = pipe._test()
    argv = execs(run)
    apt = argv[0]
    assert apt[:2] == ["sh", "-c"] and "apt-get install" in apt[2] and constants.JRE_PACKAGE in apt[2]
    syncs = [a for a in argv if a[:2] == ["uv", "sync"]]
    assert syncs == [
        ["uv", "sync", "--frozen", "--no-install-project", "--extra", "spark"],
        ["uv", "sync", "--frozen", "--extra", "spark"],
    ]
    assert "name='MLSHIP_REQUIRE_TIERS', value='spark'" in render(run)
    ci_run = (ROOT / ".ci" / "run").read_text()
    assert "uv sync --extra spark" in ci_run, "the extra .ci/run installs is the one the stage syncs"
    # the other stages keep the slim base: no JRE, no spark
    assert not any("apt-get" in " ".join(a) for a in execs(pipe._lint()))
    assert all("--extra" not in a for a in execs(pipe._validate(None)) if a[:2] == ["uv", "sync"])


def test_test_report_returns_reports_and_exit_code_when_tests_fail(
    pipe: MlPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def exit_code(ctr: dagger.Container) -> int:
        return 1

    async def stdout(ctr: dagger.Container) -> str:
        return "FAILED tests/unit/test_x.py::test_y\n1 failed, 10 passed"

    monkeypatch.setattr(awaits, "exit_code", exit_code)
    monkeypatch.setattr(awaits, "stdout", stdout)
    report = render(anyio.run(pipe.test_report))
    assert "directory(path='/reports').withNewFile(path='exit-code', contents='1\\n')" in report
    with pytest.raises(main.PipelineFailed, match=r"(?s)pytest exited 1.*1 failed, 10 passed"):
        anyio.run(pipe.test)


def test_gate_returns_its_report_and_exit_code_when_the_gate_fails(
    pipe: MlPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def exit_code(ctr: dagger.Container) -> int:
        return 1

    monkeypatch.setattr(awaits, "exit_code", exit_code)
    gate = pipe._gate(dag.directory(), None, "", None, no_champion=True)
    assert execs(gate)[-1][:2] == ["mlship", "gate"] and execs(gate)[-1][-1] == "--no-champion"
    assert render(gate).endswith("expect='ANY')")
    assert "withDirectory(path='/out/gate', source=<Directory:directory()>).withExec(" in render(gate)
    out = render(anyio.run(lambda: pipe.gate(model=dag.directory(), no_champion=True)))
    assert out.endswith("directory(path='/out/gate').withNewFile(path='exit-code', contents='1\\n')")


def test_tracking_token_is_a_secret_variable_never_an_env_or_arg(pipe: MlPipeline) -> None:
    token = dag.set_secret("token", "s3cr3t")
    chain = render(pipe._train(None, "http://mlflow:5000", token))
    assert "withSecretVariable(name='MLFLOW_TRACKING_TOKEN', secret=<Secret:setSecret(name='token'" in chain
    assert "withEnvVariable(name='MLFLOW_TRACKING_URI', value='http://mlflow:5000')" in chain
    assert chain.count("s3cr3t") == 1  # only inside setSecret itself


# --- cache: busted on purpose where the outside world matters, nowhere else ---


def fresh(obj: Any) -> list[str]:
    return re.findall(r"withEnvVariable\(name='(MLSHIP_FRESH_\w+)'", render(obj))


def test_cache_is_busted_only_where_freshness_matters(pipe: MlPipeline) -> None:
    kc = dag.set_secret("kc", "k")
    image = pipe._build(dag.directory(), "s", "m", "1", "")
    before = dt.datetime.now(dt.UTC).date().isoformat()
    trivy = pipe._trivy(image, ReportFormat.JSON)
    after = dt.datetime.now(dt.UTC).date().isoformat()
    assert fresh(trivy) == ["MLSHIP_FRESH_VULNERABILITY_DATABASE"]
    # a scan is reused for the rest of the UTC day, never longer: the value is the day's date
    day = re.search(r"name='MLSHIP_FRESH_VULNERABILITY_DATABASE', value='([^']+)'\)", render(trivy))
    assert day is not None and day.group(1) in {before, after}
    assert fresh(pipe._train(None, "http://mlflow:5000", None)) == ["MLSHIP_FRESH_TRACKING_SERVER_STATE"]
    assert fresh(pipe._gate(dag.directory(), None, "http://mlflow:5000", None, no_champion=False)) == [
        "MLSHIP_FRESH_TRACKING_SERVER_STATE"
    ]
    assert "MLSHIP_FRESH_CLUSTER_STATE" in fresh(
        pipe._deploy(kc, "models:/m/1", Environment.STAGING, "n", False, IMAGE)
    )
    assert "MLSHIP_FRESH_CLUSTER_STATE" in fresh(pipe._rollback(kc, Environment.STAGING, "n"))
    # deterministic stages are cache hits when their inputs did not change
    for stable in (
        pipe._lint(),
        pipe._test(),
        pipe._validate(None),
        pipe._train(None, "", None),
        pipe._gate(dag.directory(), None, "", None, no_champion=True),
        image,
        pipe._scan_gate(dag.host().file("r.json"), Severity.HIGH, False),
        pipe._monitor(data("a.parquet"), data("b.parquet")),
    ):
        assert fresh(stable) == [], render(stable)[:200]


def test_build_has_no_timestamp_unless_one_is_given(pipe: MlPipeline) -> None:
    """A build arg that changes every run (now()) would rebuild, and so re-scan, every run."""
    assert "'CREATED'" not in render(pipe._build(dag.directory(), "s", "m", "1", ""))
    assert "{'name': 'CREATED', 'value': '2026-01-01T00:00:00Z'}" in render(
        pipe._build(dag.directory(), "s", "m", "1", "2026-01-01T00:00:00Z")
    )


# --- each stage reads only the paths it needs ---

UNRELATED_EDITS = ["README.md", ".github/workflows/ci.yml", ".gitlab-ci.yml", "docs/notes.md"]


def test_each_stage_reads_only_its_paths(pipe: MlPipeline, source: dagger.Directory) -> None:
    model = dag.directory()
    image = pipe._build(model, "s", "m", "1", "")
    stages: dict[str, Any] = {
        "lint": pipe._lint(),
        "validate": pipe._validate(None),
        "train": pipe._train_dir(None, "", None),
        "gate": pipe._gate(model, None, "", None, no_champion=True),
        "build": image,
        "scan": pipe._scan_gate(pipe._trivy(image, ReportFormat.JSON).file("/scan/report.json"), Severity.HIGH, True),
        "deploy": pipe._deploy(dag.set_secret("kc", "k"), "models:/m/1", Environment.STAGING, "n", False, IMAGE),
        "monitor": pipe._monitor(data("a.parquet"), data("b.parquet")),
        "serve": pipe._serve(model),
    }
    for name, plan in stages.items():
        reads = source_reads(plan, source)
        assert "**" not in reads, name
        assert reads_path(reads, "src/mlship/cli.py") and reads_path(reads, "uv.lock"), (name, reads)
        for edit in UNRELATED_EDITS:
            assert not reads_path(reads, edit), (name, edit, reads)
    assert not reads_path(source_reads(stages["train"], source), "deployment/k8s/base/deployment.yaml")
    assert not reads_path(source_reads(stages["build"], source), "tests/unit/test_trivy.py")
    assert reads_path(source_reads(stages["validate"], source), "data/expectations/transactions.json")
    assert reads_path(source_reads(stages["build"], source), "deployment/Dockerfile")
    assert reads_path(source_reads(stages["scan"], source), ".trivyignore")
    assert reads_path(source_reads(stages["deploy"], source), "deployment/k8s/overlays/staging/kustomization.yaml")
    assert reads_path(source_reads(stages["lint"], source), "ci/tests/test_plans.py")
    # the test suite checks the README and the CI files, so it (and only it) reads everything
    assert source_reads(pipe._test(), source) >= {"**"}


def test_the_include_filters_match_real_repository_files() -> None:
    """A filter pattern that matches nothing would hand a stage an empty tree."""
    skip = {".git", ".venv", ".mlship", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", "sdk"}
    tracked = []
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in skip]
        tracked += [Path(top, f).relative_to(ROOT).as_posix() for f in files]
    for include in (
        constants.LINT_PATHS,
        constants.DATA_PATHS,
        constants.BUILD_PATHS,
        constants.SCAN_GATE_PATHS,
        constants.DEPLOY_PATHS,
    ):
        for pattern in include:
            assert any(reads_path({pattern}, path) for path in tracked), pattern


# --- build, scan, deploy ---


def test_build_uses_the_dockerfile_with_release_build_args(pipe: MlPipeline) -> None:
    chain = render(pipe._build(dag.directory(), "abc123", "card-fraud", "7", "2026-01-01T00:00:00Z"))
    assert "withDirectory(path='build/model'" in chain
    assert "dockerBuild(dockerfile='deployment/Dockerfile'" in chain
    for name, value in (
        ("BASE_IMAGE", images.PYTHON),
        ("GIT_SHA", "abc123"),
        ("MODEL_NAME", "card-fraud"),
        ("MODEL_VERSION", "7"),
        ("CREATED", "2026-01-01T00:00:00Z"),
    ):
        assert f"{{'name': '{name}', 'value': '{value}'}}" in chain


def test_build_args_and_model_dir_match_the_dockerfile(pipe: MlPipeline) -> None:
    """A build arg the Dockerfile does not declare is silently ignored: keep both sides in step."""
    dockerfile = (ROOT / "deployment" / "Dockerfile").read_text()
    declared = dict(re.findall(r"^ARG (\w+)(?:=(\S*))?", dockerfile, flags=re.M))
    chain = render(pipe._build(dag.directory(), "abc123", "card-fraud", "7", "2026-01-01T00:00:00Z"))
    passed = re.findall(r"\{'name': '(\w+)', 'value':", chain)
    assert passed and set(passed) <= set(declared), set(passed) - set(declared)
    assert f"withDirectory(path='{declared['MODEL_DIR']}'" in chain
    # one pin for the python base: what a hand-built image uses is what Dagger builds on
    assert declared["BASE_IMAGE"] == images.PYTHON
    dockerignore = (ROOT / ".dockerignore").read_text().split()
    assert f"!{declared['MODEL_DIR']}/" in dockerignore
    # every file the Dockerfile copies from the context is in the build's filtered context
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, flags=re.M)
    for src in (s for line in copied for s in line.split()):
        if not src.startswith("${"):
            assert reads_path(set(constants.BUILD_PATHS) | {"README.md"}, src), src


def test_scan_runs_trivy_on_the_tarball_with_db_cache_then_scan_gate(pipe: MlPipeline) -> None:
    image = pipe._build(dag.directory(), "s", "m", "1", "c")
    trivy = pipe._trivy(image, ReportFormat.JSON)
    chain = render(trivy)
    assert froms(chain)[0] == images.TRIVY
    assert "withMountedCache(path='/root/.cache/trivy', cache=<CacheVolume:cacheVolume(key='mlship-trivy-db')>" in chain
    # Trivy's fs cache takes an exclusive lock: concurrent scans on the volume must take turns
    assert "cacheVolume(key='mlship-trivy-db')>, sharing='LOCKED')" in chain
    assert "asTarball()" in chain
    assert execs(trivy) == [
        ["trivy", "image", "--input", "/scan/image.tar", "--format", "json", "--output", "/scan/report.json"]
    ]
    gate = pipe._scan_gate(trivy.file("/scan/report.json"), Severity.CRITICAL, True)
    assert execs(gate)[-1] == [
        "mlship",
        "scan-gate",
        "--report",
        "/reports/trivy.json",
        "--severity",
        "CRITICAL",
        "--ignore-file",
        ".trivyignore",
        "--report-dir",
        "/reports",
        "--ignore-unfixed",
    ]


def test_scan_report_formats_are_an_enum(pipe: MlPipeline) -> None:
    report = pipe.scan_report(format=ReportFormat.CYCLONEDX, model=dag.directory())
    assert "'--format', 'cyclonedx', '--output', '/scan/report.cyclonedx'" in render(report)
    assert render(report).endswith("file(path='/scan/report.cyclonedx')")
    assert [m.name for m in Severity] == ["UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL"]


def test_deploy_and_rollback_mount_kubeconfig_as_secret_and_reach_mlflow(pipe: MlPipeline) -> None:
    kc = dag.set_secret("kubeconfig", "apiVersion: v1")
    token = dag.set_secret("token", "t")
    deploy = pipe._deploy(
        kc, "models:/card-fraud/3", Environment.PRODUCTION, "ml", True, IMAGE, "http://ml:5000", token
    )
    chain = render(deploy)
    assert froms(chain).count(images.KUBECTL) == 1
    # the pinned kubectl is the one `mlship` runs: it replaces the venv's (dev dependency) kubectl,
    # which is first on PATH; in /usr/local/bin it was shadowed
    venv = constants.VENV
    assert f"withFile(path='{venv}/bin/kubectl', source=<File:container().from(address='{images.KUBECTL}')" in chain
    assert re.search(r"withEnvVariable\(name='PATH', value='" + re.escape(venv) + "/bin:", chain)
    assert "withMountedSecret(path='/root/.kube/config', source=<Secret:setSecret(name='kubeconfig'" in chain
    assert "withFile(path='/root/.kube/config'" not in chain
    assert "withEnvVariable(name='MLFLOW_TRACKING_URI', value='http://ml:5000')" in chain
    assert "withSecretVariable(name='MLFLOW_TRACKING_TOKEN'" in chain
    assert execs(deploy)[-1] == [
        "mlship",
        "deploy",
        "--model",
        "models:/card-fraud/3",
        "--target",
        "kubernetes",
        "--env",
        "production",
        "--namespace",
        "ml",
        "--image",
        IMAGE,
        "--approve",
    ]
    rollback = pipe._rollback(kc, Environment.STAGING, "ml", False, "http://ml:5000", token)
    assert execs(rollback)[-1] == [
        "mlship",
        "rollback",
        "--target",
        "kubernetes",
        "--env",
        "staging",
        "--namespace",
        "ml",
    ]
    assert "withEnvVariable(name='MLFLOW_TRACKING_URI', value='http://ml:5000')" in render(rollback)


def test_deploy_rollback_and_all_let_the_settings_choose_the_namespace_by_default(
    pipe: MlPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Staging and production are separate namespaces (the overlays, the RBAC kustomizations, the
    settings' `namespaces.<env>`): no `--namespace` unless one is given, so `mlship` picks
    `namespaces.<env>`; an empty value (a CI variable left unset) is no value."""
    import inspect

    for fn in (MlPipeline.deploy, MlPipeline.rollback, MlPipeline.all):
        assert inspect.signature(fn).parameters["namespace"].default is None, fn.__name__
    kc = dag.set_secret("kubeconfig", "apiVersion: v1")
    for namespace in (None, ""):
        deploy = execs(pipe._deploy(kc, "models:/m/1", Environment.PRODUCTION, namespace, True, IMAGE))[-1]
        assert "--namespace" not in deploy and deploy[deploy.index("--env") + 1] == "production"
        rollback = execs(pipe._rollback(kc, Environment.PRODUCTION, namespace, True))[-1]
        assert "--namespace" not in rollback and "--approve" in rollback
    views: list[str] = []

    async def view(ctr: dagger.Container) -> str:
        views.append("kubectl config view")
        return (
            '{"current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],'
            '"clusters": [{"name": "k", "cluster": {"server": "https://k8s.example:6443"}}], "users": []}'
        )

    ran: list[list[str]] = []

    async def stdout(self: dagger.Container) -> str:
        ran.append(execs(self)[-1])
        return ""

    monkeypatch.setattr(awaits, "stdout", view)
    monkeypatch.setattr(dagger.Container, "stdout", stdout)
    anyio.run(lambda: pipe.deploy(kubeconfig=kc, image=IMAGE, env=Environment.PRODUCTION, approve=True))
    anyio.run(lambda: pipe.rollback(kubeconfig=kc, env=Environment.PRODUCTION, approve=True))
    assert views == ["kubectl config view"] * 2
    assert [argv[:2] for argv in ran] == [["mlship", "deploy"], ["mlship", "rollback"]]
    assert all("--namespace" not in argv for argv in ran), ran


@pytest.mark.parametrize("image", ["", "reg.example/mlship:abc", "reg.example/mlship@sha256:123"])
def test_deploy_without_an_image_digest_is_a_usage_error_before_anything_runs(
    pipe: MlPipeline, monkeypatch: pytest.MonkeyPatch, image: str
) -> None:
    ran: list[str] = []

    async def stdout(self: dagger.Container) -> str:
        ran.append("exec")
        return ""

    monkeypatch.setattr(dagger.Container, "stdout", stdout)
    with pytest.raises(UsageError, match="--image"):
        anyio.run(lambda: pipe.deploy(kubeconfig=dag.set_secret("kc", "k"), image=image))
    assert ran == []


def test_serve_monitor_and_batch_predict(pipe: MlPipeline) -> None:
    serve = render(pipe._serve(dag.directory()))
    assert "withExposedPort(port=8000)" in serve
    assert (
        "asService(args=['mlship', 'serve', '--model', '/opt/model', '--host', '0.0.0.0', '--port', '8000'])" in serve
    )
    drift = pipe._monitor(data("ref.parquet"), data("predictions.jsonl"))
    assert execs(drift)[-1] == [
        "mlship",
        "drift",
        "--reference",
        "/work/reference/ref.parquet",
        "--current",
        "/work/current/predictions.jsonl",
        "--report-dir",
        "/out/drift",
    ]
    batch = pipe._batch_predict(dag.directory(), data("x.csv"))
    assert execs(batch)[-1] == [
        "mlship",
        "predict-batch",
        "--model",
        "/work/model",
        "--input",
        "/work/input/x.csv",
        "--output",
        "/out/batch/predictions",
        "--report-dir",
        "/out/batch/report",
        "--bad-rows",
        "refuse",
    ]
    assert fresh(batch) == []  # a file handed in is an input like any other: a cache hit when unchanged


def test_batch_predict_scores_a_bucket_prefix_with_secret_credentials(pipe: MlPipeline) -> None:
    """The nightly shape: a registered model, an s3:// prefix in and out, credentials as secrets."""
    job = main.BatchJob(
        output="s3://scores/2026-12-01/",
        tracking_uri="http://mlflow:5000",
        tracking_token=dag.set_secret("token", "t"),
        bad_rows=main.BadRows.FLAG,
        aws_access_key_id=dag.set_secret("key-id", "AKIDEXAMPLE"),
        aws_secret_access_key=dag.set_secret("secret-key", "s3cr3t"),
        endpoint_url="http://minio:9000",
        region="eu-west-1",
    )
    run = pipe._batch_predict("models:/card-fraud@champion", "s3://landing/transactions/", job)
    assert execs(run)[-1] == [
        "mlship",
        "predict-batch",
        "--model",
        "models:/card-fraud@champion",
        "--input",
        "s3://landing/transactions/",
        "--output",
        "s3://scores/2026-12-01/",
        "--report-dir",
        "/out/batch/report",
        "--bad-rows",
        "flag",
    ]
    chain = render(run)
    for name, secret in (("AWS_ACCESS_KEY_ID", "key-id"), ("AWS_SECRET_ACCESS_KEY", "secret-key")):
        assert f"withSecretVariable(name='{name}', secret=<Secret:setSecret(name='{secret}'" in chain
    assert "AWS_SESSION_TOKEN" not in chain  # an optional secret not given is not set at all
    plain = re.findall(r"withEnvVariable\(name='\w+', value='([^']*)'\)", chain) + execs(run)[-1]
    assert not {"AKIDEXAMPLE", "s3cr3t"} & set(plain)  # never an env value nor an argument
    assert "withEnvVariable(name='AWS_ENDPOINT_URL', value='http://minio:9000')" in chain
    assert "withEnvVariable(name='AWS_DEFAULT_REGION', value='eu-west-1')" in chain
    assert "withSecretVariable(name='MLFLOW_TRACKING_TOKEN'" in chain
    # the bucket and the registry change without the engine knowing: the scoring always re-runs
    assert fresh(run) == ["MLSHIP_FRESH_TRACKING_SERVER_STATE", "MLSHIP_FRESH_BATCH_INPUT"]


def test_batch_predict_takes_exactly_one_input_and_one_model(pipe: MlPipeline) -> None:
    csv = dag.host().file("/in/x.csv")
    with pytest.raises(UsageError, match="exactly one"):
        anyio.run(pipe.batch_predict)
    with pytest.raises(UsageError, match="exactly one"):
        anyio.run(lambda: pipe.batch_predict(input=csv, input_uri="s3://b/p/"))
    with pytest.raises(UsageError, match="not both"):
        anyio.run(lambda: pipe.batch_predict(input_uri="s3://b/p/", model=dag.directory(), model_uri="models:/m/1"))
    with pytest.raises(UsageError, match="pass --tracking-uri too"):
        anyio.run(lambda: pipe.batch_predict(input_uri="s3://b/p/", model_uri="models:/m/1"))


# --- all: every stage runs, each outcome is reported, failures are named ---


def exec_error(stderr: str, code: int = 1) -> dagger.ExecError:
    value = QueryErrorValue(
        message="process did not complete successfully",
        extensions={"_type": "EXEC_ERROR", "cmd": ["x"], "exitCode": code, "stdout": "", "stderr": stderr},
    )
    return dagger.ExecError([value], SimpleNamespace(document=None))  # type: ignore[arg-type]


def _stage(chain: str) -> str:
    for needle, name in (
        ("'mlship', 'scan-gate'", "scan"),
        ("'mlship', 'deploy'", "deploy"),
        ("'mlship', 'gate'", "gate"),
        ("dockerBuild(", "build"),
        ("'mlship', 'train'", "train"),
        ("'mlship', 'validate'", "validate"),
        ("'ruff', 'check'", "lint"),
        ("'pytest'", "test"),
    ):
        if needle in chain:
            return name
    return chain[:40]


class FakeEngine:
    """Stands in for the engine's awaits: records what ran, fails the stages it is told to."""

    def __init__(self, fail: dict[str, str] | None = None, exit_codes: dict[str, int] | None = None) -> None:
        self.fail = fail or {}
        self.exit_codes = exit_codes or {}
        self.ran: list[str] = []
        self.chains: dict[str, str] = {}

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(awaits, "settle", self.settle)
        monkeypatch.setattr(awaits, "exit_code", self.exit_code)
        monkeypatch.setattr(awaits, "stdout", self.output)
        monkeypatch.setattr(awaits, "stderr", self.output)
        monkeypatch.setattr(awaits, "publish", self.publish)
        monkeypatch.setattr(awaits, "contents", self.contents)

    def _record(self, obj: Any) -> str:
        name = _stage(render(obj))
        self.ran.append(name)
        self.chains[name] = render(obj)
        return name

    async def settle(self, obj: Any) -> None:
        name = self._record(obj)
        await anyio.sleep(0.01 if name == "lint" else 0)  # siblings overlap with a failing stage
        if name in self.fail:
            raise exec_error(self.fail[name])

    async def exit_code(self, ctr: Any) -> int:
        return self.exit_codes.get(self._record(ctr), 0)

    async def output(self, ctr: Any) -> str:
        return f"{_stage(render(ctr))} said why"

    async def publish(self, image: Any, address: str) -> str:
        self.ran.append("publish")
        self.chains["publish"] = render(image)
        return f"{address}@sha256:{'a' * 64}"

    async def contents(self, file: Any) -> str:
        self.ran.append("read gate.json")
        return '{"registered": "card-fraud v7 is @challenger"}'


def release(**kwargs: Any) -> main.Release:
    args: dict[str, Any] = dict(
        data=None,
        tracking_uri="",
        tracking_token=None,
        severity=Severity.HIGH,
        ignore_unfixed=False,
        strict=False,
        tests=constants.TEST_SELECTION,
        git_sha="abc",
        created="",
        address="",
        username="",
        password=None,
        kubeconfig=None,
        namespace="ml",
    )
    args.update(kwargs)
    return main.Release(**args)


def test_all_runs_every_stage_in_order_and_skips_uncredentialed(
    pipe: MlPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine()
    engine.install(monkeypatch)
    summary = anyio.run(lambda: pipe._all(release()))
    assert sorted(engine.ran[:3]) == ["lint", "test", "validate"]
    assert engine.ran[3:] == ["train", "gate", "build", "scan"]
    lines = summary.splitlines()
    assert [line.split()[0] for line in lines] == [
        "lint",
        "test",
        "validate-data",
        "train",
        "gate",
        "build",
        "scan",
        "publish",
        "deploy",
    ]
    assert all(line.split()[1] == "ok" for line in lines[:7])
    assert re.search(r"^publish\s+skipped\s+no registry address and credentials$", summary, re.M)
    assert re.search(r"^deploy staging\s+skipped\s+no kubeconfig$", summary, re.M)


def test_all_a_failing_stage_is_named_with_its_stderr_and_siblings_finish(
    pipe: MlPipeline, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = FakeEngine(fail={"validate": "mlship: error: data invalid: 12 rows with amount < 0"})
    engine.install(monkeypatch)
    with pytest.raises(main.PipelineFailed) as err:
        anyio.run(lambda: pipe._all(release()))
    message = str(err.value)
    assert message.startswith("failed: validate-data\n")
    assert re.search(r"^validate-data\s+FAILED\s+\d+\.\ds  exit 1: mlship: error: data invalid: 12 rows", message, re.M)
    # the failing stage cancelled nothing: lint (slower) and test still finished and are reported ok
    assert sorted(engine.ran) == ["lint", "test", "validate"]
    assert re.search(r"^lint\s+ok", message, flags=re.M) and re.search(r"^test\s+ok", message, flags=re.M)
    assert re.search(r"^train\s+skipped\s+an earlier stage failed", message, flags=re.M)
    assert "unhandled errors in a TaskGroup" not in message
    assert re.search(r"^validate-data\s+FAILED", capsys.readouterr().out, re.M)  # the summary is printed before failing


def test_all_a_failing_gate_or_test_run_fails_all_by_its_exit_code(
    pipe: MlPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine(exit_codes={"test": 1})
    engine.install(monkeypatch)
    with pytest.raises(main.PipelineFailed, match=r"(?s)^failed: test\n.*test\s+FAILED.*exit 1: test said why"):
        anyio.run(lambda: pipe._all(release()))
    engine = FakeEngine(exit_codes={"gate": 1})
    engine.install(monkeypatch)
    with pytest.raises(main.PipelineFailed, match=r"^failed: gate\n"):
        anyio.run(lambda: pipe._all(release()))
    assert engine.ran[-1] == "gate"  # nothing is built from a model that failed its gate


def test_all_passes_ignore_unfixed_severity_and_test_selection_on(
    pipe: MlPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine()
    engine.install(monkeypatch)
    anyio.run(lambda: pipe._all(release(severity=Severity.CRITICAL, ignore_unfixed=True, tests="not slow")))
    assert "'pytest', '-m', 'not slow'" in engine.chains["test"]
    assert (
        "'--severity', 'CRITICAL', '--ignore-file', '.trivyignore', '--report-dir', '/reports', '--ignore-unfixed'"
        in (engine.chains["scan"])
    )


def test_all_deploys_the_version_whose_gate_passed_in_the_image_it_scanned_and_published(
    pipe: MlPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine()
    engine.install(monkeypatch)
    token = dag.set_secret("token", "t")
    summary = anyio.run(
        lambda: pipe._all(
            release(
                tracking_uri="http://mlflow:5000",
                tracking_token=token,
                address="reg.example/mlship:abc",
                username="ci",
                password=dag.set_secret("pw", "p"),
                kubeconfig=dag.set_secret("kc", "k"),
            )
        )
    )
    assert engine.ran[-5:] == ["read gate.json", "build", "scan", "publish", "deploy"]
    assert "'--register'" in engine.chains["gate"]
    # the image scanned is the image published: the same build, labelled with the gated version
    built = engine.chains["build"]
    assert "{'name': 'MODEL_VERSION', 'value': '7'}" in built
    assert built in engine.chains["scan"] and built in engine.chains["publish"]
    deploy = engine.chains["deploy"]
    assert "'--model', 'models:/card-fraud/7'" in deploy
    assert f"'--image', 'reg.example/mlship:abc@sha256:{'a' * 64}'" in deploy
    assert "'--env', 'staging'" in deploy and "--approve" not in deploy
    assert "withEnvVariable(name='MLFLOW_TRACKING_URI', value='http://mlflow:5000')" in deploy
    assert "withSecretVariable(name='MLFLOW_TRACKING_TOKEN'" in deploy
    assert "registered card-fraud v7 as @challenger" in summary
    assert summary.splitlines()[-2:] == [
        f"MLSHIP_IMAGE=reg.example/mlship:abc@sha256:{'a' * 64}",
        "MLSHIP_MODEL=models:/card-fraud/7",
    ]


def test_all_a_gate_that_registered_nothing_fails_the_gate_stage(
    pipe: MlPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine()
    engine.install(monkeypatch)

    async def contents(file: Any) -> str:
        return '{"registered": null}'

    monkeypatch.setattr(awaits, "contents", contents)
    with pytest.raises(main.PipelineFailed, match=r"(?s)^failed: gate\n.*registered no version"):
        anyio.run(lambda: pipe._all(release(tracking_uri="http://mlflow:5000")))
    assert engine.ran[-1] == "gate"  # nothing is built, scanned or deployed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"address": "reg/x:1"}, "--address needs --username and --password"),
        ({"kubeconfig": "kc"}, "--kubeconfig needs --address"),
        ({"kubeconfig": "kc", "address": "reg/x:1", "username": "u", "password": "pw"}, "--tracking-uri"),
    ],
)
def test_all_argument_mistakes_are_usage_errors_before_anything_runs(
    pipe: MlPipeline, monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any], message: str
) -> None:
    engine = FakeEngine()
    engine.install(monkeypatch)
    secrets = {k: dag.set_secret(k, v) for k, v in kwargs.items() if k in ("kubeconfig", "password")}
    with pytest.raises(UsageError, match=message):
        anyio.run(lambda: pipe._all(release(**(kwargs | secrets))))
    assert engine.ran == []
    # the function itself checks before it asks the engine anything (even a data file's name)
    asked: list[str] = []

    async def file_name(file: dagger.File) -> str:
        asked.append("name")
        return "d.csv"

    monkeypatch.setattr(awaits, "file_name", file_name)
    with pytest.raises(UsageError, match=message):
        anyio.run(lambda: pipe.all(data=dag.host().file("/in/d.csv"), **(kwargs | secrets)))
    assert asked == [] and engine.ran == []


def test_mypy_strict_over_the_module() -> None:
    """The module type-checks against the installed dagger-io (the engine's version)."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(ROOT / "ci" / "src")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_import_of_the_module_is_a_declared_dependency() -> None:
    """The engine installs ci/pyproject.toml's dependencies, not the repository's dev environment."""
    project = tomllib.loads((ROOT / "ci" / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}
    distribution = {"dagger": "dagger-io"}
    for path in (ROOT / "ci" / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "ml_pipeline":
                    continue
                assert distribution.get(top, top) in declared, f"{path.name} imports {top}, undeclared"


def test_no_secret_or_unpinned_image_in_source() -> None:
    for path in (ROOT / "ci" / "src" / "ml_pipeline").glob("*.py"):
        text = path.read_text()
        assert 'from_("' not in text and ":latest" not in text
    assert isinstance(dagger.Secret, type)
