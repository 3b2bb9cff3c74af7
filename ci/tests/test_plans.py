"""Each stage's lazy plan, walked offline: pinned images, caches, secrets, the exact mlship command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import dagger
import pytest
from dagger import dag
from dagger_plan import execs, render
from ml_pipeline import images, main
from ml_pipeline.main import MlPipeline

ROOT = Path(__file__).resolve().parents[2]
DIGEST = re.compile(r"^[^@\s]+:[^@\s]+@sha256:[0-9a-f]{64}$")


@pytest.fixture
def pipe() -> MlPipeline:
    return MlPipeline(source=dag.directory())


def froms(chain: str) -> list[str]:
    return re.findall(r"from\(address='([^']+)'\)", chain)


def test_every_image_is_pinned_by_tag_and_digest() -> None:
    for name, ref in images.ALL.items():
        assert DIGEST.match(ref), name
        assert ":" in ref.split("@")[0].rsplit("/", 1)[-1], f"{name} has no tag"


def test_base_is_pinned_python_uv_and_frozen_sync_with_cache(pipe: MlPipeline) -> None:
    base = pipe._base()
    chain = render(base)
    assert froms(chain) == [images.PYTHON, images.UV] or set(froms(chain)) == {images.PYTHON, images.UV}
    assert "withMountedCache(path='/root/.cache/uv', cache=<CacheVolume:cacheVolume(key='mlship-uv')>" in chain
    assert execs(base) == [["uv", "sync", "--frozen", "--no-install-project"], ["uv", "sync", "--frozen"]]


def test_all_images_used_anywhere_are_pinned(pipe: MlPipeline) -> None:
    kube = pipe._kube(dag.set_secret("kc", "x"))
    chains = [render(c) for c in (pipe._lint(), pipe._trivy(pipe._base(), "json"), kube)]
    used = {ref for chain in chains for ref in froms(chain)}
    assert used == set(images.ALL.values())


def test_lint_runs_the_project_linters_and_hadolint(pipe: MlPipeline) -> None:
    lint = pipe._lint()
    assert execs(lint)[2:] == [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy", "--strict"]]
    assert "withExec(args=['/bin/hadolint', '/Dockerfile'])" in render(lint)
    assert "file(path='deployment/Dockerfile')" in render(lint)


def test_test_writes_junit_and_coverage(pipe: MlPipeline) -> None:
    assert execs(pipe._test())[-1] == [
        "pytest",
        "--junitxml",
        "/reports/junit.xml",
        "--cov-report=xml:/reports/coverage.xml",
    ]
    assert render(pipe.test_report()).endswith("directory(path='/reports')")


def test_validate_and_train_run_the_host_commands(pipe: MlPipeline) -> None:
    assert execs(pipe._validate(None))[-2:] == [
        ["mlship", "data", "synth", "--rows", "20000", "--seed", "42", "--out", "/work/data.parquet"],
        ["mlship", "validate", "--data", "/work/data.parquet", "--report-dir", "/out/validate"],
    ]
    train = pipe._train(dag.host().file("data.csv"), "", None)
    assert execs(train)[-1] == ["mlship", "train", "--data", "/work/data.parquet", "--out", "/out/train"]
    assert "withEnvVariable(name='MLFLOW_TRACKING_URI'" not in render(train)
    # without a tracking server the embedded MLflow store is returned with the model
    assert "withDirectory(path='mlflow'" in render(pipe._train_dir(None, "", None))


def test_tracking_token_is_a_secret_variable_never_an_env_or_arg(pipe: MlPipeline) -> None:
    token = dag.set_secret("token", "s3cr3t")
    chain = render(pipe._train(None, "http://mlflow:5000", token))
    assert "withSecretVariable(name='MLFLOW_TRACKING_TOKEN', secret=<Secret:setSecret(name='token'" in chain
    assert "withEnvVariable(name='MLFLOW_TRACKING_URI', value='http://mlflow:5000')" in chain
    assert chain.count("s3cr3t") == 1  # only inside setSecret itself


def test_gate_runs_mlship_gate_on_the_candidate(pipe: MlPipeline) -> None:
    gate = pipe._gate(dag.directory(), None, "", None, no_champion=True)
    assert execs(gate)[-1] == [
        "mlship",
        "gate",
        "--candidate",
        "/work/candidate",
        "--data",
        "/work/data.parquet",
        "--report-dir",
        "/out/gate",
        "--no-champion",
    ]


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


def test_scan_runs_trivy_on_the_tarball_with_db_cache_then_scan_gate(pipe: MlPipeline) -> None:
    image = pipe._build(dag.directory(), "s", "m", "1", "c")
    trivy = pipe._trivy(image, "json")
    chain = render(trivy)
    assert froms(chain)[0] == images.TRIVY
    assert "withMountedCache(path='/root/.cache/trivy', cache=<CacheVolume:cacheVolume(key='mlship-trivy-db')>" in chain
    assert "asTarball()" in chain
    assert execs(trivy) == [
        ["trivy", "image", "--input", "/scan/image.tar", "--format", "json", "--output", "/scan/report.json"]
    ]
    gate = pipe._scan_gate(trivy.file("/scan/report.json"), "HIGH", True)
    assert execs(gate)[-1] == [
        "mlship",
        "scan-gate",
        "--report",
        "/reports/trivy.json",
        "--severity",
        "HIGH",
        "--ignore-file",
        ".trivyignore",
        "--report-dir",
        "/reports",
        "--ignore-unfixed",
    ]


def test_scan_report_formats(pipe: MlPipeline) -> None:
    report = pipe.scan_report(format="cyclonedx", model=dag.directory())
    assert "'--format', 'cyclonedx', '--output', '/scan/report.cyclonedx'" in render(report)
    assert render(report).endswith("file(path='/scan/report.cyclonedx')")
    with pytest.raises(ValueError, match="sarif, json or cyclonedx"):
        pipe.scan_report(format="html", model=dag.directory())


def test_deploy_and_rollback_mount_kubeconfig_as_secret(pipe: MlPipeline) -> None:
    kc = dag.set_secret("kubeconfig", "apiVersion: v1")
    deploy = pipe._deploy(kc, "models:/card-fraud@challenger", "production", "ml", True, "img@sha256:1")
    chain = render(deploy)
    assert froms(chain).count(images.KUBECTL) == 1
    assert "withMountedSecret(path='/root/.kube/config', source=<Secret:setSecret(name='kubeconfig'" in chain
    assert "withFile(path='/root/.kube/config'" not in chain
    assert execs(deploy)[-1] == [
        "mlship",
        "deploy",
        "--model",
        "models:/card-fraud@challenger",
        "--target",
        "kubernetes",
        "--env",
        "production",
        "--namespace",
        "ml",
        "--approve",
        "--image",
        "img@sha256:1",
    ]
    assert execs(pipe._rollback(kc, "staging", "ml"))[-1] == [
        "mlship",
        "rollback",
        "--target",
        "kubernetes",
        "--env",
        "staging",
        "--namespace",
        "ml",
    ]


def test_serve_monitor_and_batch_predict(pipe: MlPipeline) -> None:
    serve = render(pipe._serve(dag.directory()))
    assert "withExposedPort(port=8000)" in serve
    assert (
        "asService(args=['mlship', 'serve', '--model', '/opt/model', '--host', '0.0.0.0', '--port', '8000'])" in serve
    )
    drift = pipe._monitor(dag.host().file("ref.parquet"), dag.host().file("cur.parquet"))
    assert execs(drift)[-1] == [
        "mlship",
        "drift",
        "--reference",
        "/work/reference.parquet",
        "--current",
        "/work/current.parquet",
        "--report-dir",
        "/out/drift",
    ]
    batch = pipe._batch_predict(dag.directory(), dag.host().file("x.parquet"), "input.parquet")
    assert execs(batch)[-1] == [
        "mlship",
        "predict-batch",
        "--model",
        "/work/model",
        "--input",
        "/work/input.parquet",
        "--output",
        "/out/predictions.parquet",
    ]


def _run_all(pipe: MlPipeline, monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> tuple[list[str], str]:
    order: list[str] = []

    async def settle(obj: Any) -> None:
        order.append(render(obj))

    async def publish(image: Any, address: str) -> str:
        order.append(f"publish {address}")
        return f"{address}@sha256:{'a' * 64}"

    monkeypatch.setattr(main, "_settle", settle)
    monkeypatch.setattr(main, "_publish", publish)
    args: dict[str, Any] = dict(
        data=None,
        tracking_uri="",
        tracking_token=None,
        severity="HIGH",
        git_sha="abc",
        address="",
        username="",
        password=None,
        kubeconfig=None,
        namespace="ml",
    )
    args.update(kwargs)
    summary = anyio.run(lambda: pipe._all(**args))
    return order, summary


def _stage(chain: str) -> str:
    for needle, name in (
        ("'--input', '/scan/image.tar'", "scan"),
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


def test_all_wires_stages_in_order_and_skips_uncredentialed(pipe: MlPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    order, summary = _run_all(pipe, monkeypatch)
    stages = [_stage(c) for c in order]
    assert sorted(stages[:3]) == ["lint", "test", "validate"]
    assert stages[3:] == ["train", "gate", "build", "scan"]
    assert "scan-gate" in order[-1]
    assert "publish: skipped" in summary and "deploy: skipped" in summary


def test_all_publishes_and_deploys_the_published_digest(pipe: MlPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    order, summary = _run_all(
        pipe,
        monkeypatch,
        address="reg.example/mlship:abc",
        username="ci",
        password=dag.set_secret("pw", "p"),
        kubeconfig=dag.set_secret("kc", "k"),
    )
    assert order[-2] == "publish reg.example/mlship:abc"
    assert _stage(order[-1]) == "deploy"
    assert f"'--image', 'reg.example/mlship:abc@sha256:{'a' * 64}'" in order[-1]
    assert "'--env', 'staging'" in order[-1] and "--approve" not in order[-1]
    assert summary.splitlines()[-1] == "deploy staging: ok"


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


def test_no_secret_or_unpinned_image_in_source() -> None:
    text = (ROOT / "ci" / "src" / "ml_pipeline" / "main.py").read_text()
    assert 'from_("' not in text and ":latest" not in text
    assert isinstance(dagger.Secret, type)
