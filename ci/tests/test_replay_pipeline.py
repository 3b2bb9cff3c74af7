"""Every Dagger function of the module, run for real: its lazy chain replayed on Docker.

Each test calls the @function on `MlPipeline(source=<the checkout, as DefaultPath loads
it>)` exactly as `dagger call` would, with host files and secrets as the CLI passes them,
and awaits the leaf the CLI would (`export`, `contents`, `up` …). The stand-in table is
printed once per session; each test's wall time lands in MLSHIP_REPLAY_TIMINGS when set
(benchmarks/replay.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import dagger
import httpx
import pytest
from replay import tier as replay_tier
from replay.tier import Tier, host_file, pipeline

from tests.docker import support

pytestmark = pytest.mark.replay
T = TypeVar("T")
FORMATS = ("csv", "parquet")
STAGES = ("lint", "test", "validate-data", "train", "gate", "build", "scan")


@pytest.fixture(scope="module")
def tier(request: pytest.FixtureRequest) -> Tier:
    return replay_tier.get(request.config)


def timed(tier: Tier, name: str, fn: Callable[[], Awaitable[T]]) -> T:
    start = time.monotonic()
    try:
        return tier.run(fn)
    finally:
        tier.timings[name] = round(time.monotonic() - start, 1)


@pytest.fixture(scope="module")
def user_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """A user's dataset, and a drifted one, each as CSV and as Parquet (same rows)."""
    from mlship.data.io import write_table
    from mlship.data.synth import generate

    root = tmp_path_factory.mktemp("user-data")
    base, drifted = generate(1500, seed=7), generate(1500, seed=8, drift=0.8)
    return {
        fmt: {
            "data": write_table(base, root / f"transactions.{fmt}"),
            "drifted": write_table(drifted, root / f"recent.{fmt}"),
        }
        for fmt in FORMATS
    }


@pytest.fixture(scope="module")
def trained(tier: Tier, user_data: dict[str, dict[str, Path]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`dagger call train --data=transactions.parquet export --path=out/`: the model other tests use."""
    out = tmp_path_factory.mktemp("trained") / "train"

    async def body() -> str:
        directory = await pipeline().train(data=host_file(user_data["parquet"]["data"]))
        return await directory.export(str(out))

    timed(tier, "train (parquet)", body)
    return out


def model_dir(path: Path) -> dagger.Directory:
    return dagger.dag.host().directory(str(path))


ALL_TESTS = "unit or spark"


def test_all_without_credentials_runs_every_stage_and_prints_its_summary(
    tier: Tier, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # `tests="unit or spark"`: the test stage runs the unit tier and the Spark engine's tests for
    # real (pytest, --cov, junit) in its container, on the base with the spark extra and a JRE; the
    # default selection (every tier but docker/replay, ~20 min here) was replayed by hand once
    # (docs/ci.md, "What the replay proves"), not on every CI run.
    first = len(tier.interp.terminals)
    summary = timed(tier, "all", lambda: pipeline().all(tests=ALL_TESTS))
    with capsys.disabled():
        print(f"\n`dagger call all` (replayed):\n{summary}")
    # lint ∥ test ∥ validate-data run side by side, as the engine runs a task group's awaits:
    # their awaits' wall-clock intervals overlap pairwise
    ran = tier.interp.terminals[first:]
    parallel = {
        stage: next(t for t in ran if marker in t.label)
        for stage, marker in (("lint", "mypy --strict"), ("test", "pytest -m"), ("validate", "mlship validate"))
    }
    for a, b in (("lint", "test"), ("lint", "validate"), ("test", "validate")):
        x, y = parallel[a], parallel[b]
        assert x.started < y.ended and y.started < x.ended, f"{a} and {b} did not overlap: {x} / {y}"
    lines = {line.split()[0]: line for line in summary.splitlines() if line.strip()}
    for stage in STAGES:
        assert stage in lines, f"{stage} missing from the summary:\n{summary}"
        assert lines[stage].split()[1] == "ok", summary
    assert "skipped" in lines["publish"] and "skipped" in lines["deploy"], summary
    # the Spark tests ran and passed inside `all`'s test stage: its junit.xml (the same chain, so
    # the cached run, not a second one) has them, none failed or skipped
    import xml.etree.ElementTree as ET

    async def reports() -> str:
        return await (await pipeline().test_report(selection=ALL_TESTS)).export(str(tmp_path / "reports"))

    run0 = tier.interp.execs_run
    out = Path(tier.run(reports))
    assert tier.interp.execs_run == run0, "test-report re-used all's test run"
    cases = ET.parse(out / "junit.xml").getroot().iter("testcase")
    spark = [c for c in cases if "test_batch_spark" in c.get("classname", "")]
    assert len(spark) >= 10, [c.get("name") for c in spark]
    bad = [c.get("name") for c in spark if c.find("failure") is not None or c.find("error") is not None]
    skipped = [c.get("name") for c in spark if c.find("skipped") is not None]
    assert not bad and not skipped, f"failed: {bad}; skipped: {skipped}"
    with capsys.disabled():
        print(f"Spark tests in all's test stage: {len(spark)} passed")


def _checkout_with_lint_error(dest: Path) -> Path:
    """A copy of the working tree (what DefaultPath would load) with one ruff error, where only lint reads it."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=replay_tier.REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, files.split("\0")):
        src = replay_tier.REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / "benchmarks" / "replay_lint_probe.py").write_text("import os\n")  # F401: unused import
    return dest


def test_a_stage_that_fails_makes_all_fail_naming_it_and_its_output(tier: Tier, tmp_path: Path) -> None:
    root = _checkout_with_lint_error(tmp_path / "checkout")
    # `tests="replay"`: the test stage runs only the replay tier, which must skip inside its
    # container, so this run does not pay for the whole suite a second time.
    with pytest.raises(Exception) as info:  # its type is asserted by name below
        timed(tier, "all (lint error)", lambda: pipeline(root).all(tests="replay"))
    message = str(info.value)
    assert type(info.value).__name__ == "PipelineFailed", message
    assert "failed: lint" in message.splitlines()[0], message
    lint = next(line for line in message.splitlines() if line.startswith("lint "))
    assert "FAILED" in lint, message
    # A failing stage cancels no sibling: the test stage ran to its end beside it (the replay tier
    # it selects skips in its container, where no Docker daemon answers; a narrow selection has no floor).
    test = next(line for line in message.splitlines() if line.startswith("test "))
    assert test.split()[1] == "ok", message
    assert "replay_lint_probe.py" in message and "F401" in message, "the failing exec's output is shown"


@pytest.mark.parametrize("fmt", FORMATS)
def test_validate_data_reads_a_users_file(tier: Tier, user_data: dict[str, dict[str, Path]], fmt: str) -> None:
    out = timed(
        tier, f"validate-data ({fmt})", lambda: pipeline().validate_data(data=host_file(user_data[fmt]["data"]))
    )
    assert "1500" in out.replace(",", ""), out


@pytest.mark.parametrize("fmt", FORMATS)
def test_train_reads_a_users_file(
    tier: Tier, user_data: dict[str, dict[str, Path]], fmt: str, tmp_path: Path, trained: Path
) -> None:
    if fmt == "parquet":
        out = trained
    else:

        async def body() -> str:
            directory = await pipeline().train(data=host_file(user_data[fmt]["data"]))
            return await directory.export(str(tmp_path / "train"))

        out = Path(timed(tier, f"train ({fmt})", body))
    assert (out / "model" / "MLmodel").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics, "metrics.json is empty"
    assert (out / "mlflow").is_dir(), "without a tracking server the embedded store comes back"


@pytest.mark.parametrize("fmt", FORMATS)
def test_gate_reads_a_users_file_and_exports_its_report(
    tier: Tier, user_data: dict[str, dict[str, Path]], trained: Path, fmt: str, tmp_path: Path
) -> None:
    async def body() -> str:
        directory = await pipeline().gate(
            model=model_dir(trained / "model"), data=host_file(user_data[fmt]["data"]), no_champion=True
        )
        return await directory.export(str(tmp_path / "gate"))

    out = Path(timed(tier, f"gate ({fmt})", body))
    report = json.loads((out / "gate.json").read_text())
    assert report["verdict"] in ("pass", "fail"), report
    assert (out / "exit-code").read_text().strip() == ("0" if report["verdict"] == "pass" else "1")
    assert (out / "gate.md").is_file()


@pytest.mark.parametrize("fmt", FORMATS)
def test_monitor_reads_users_files_and_finds_the_drift(
    tier: Tier, user_data: dict[str, dict[str, Path]], fmt: str, tmp_path: Path
) -> None:
    async def body() -> str:
        directory = await pipeline().monitor(
            reference=host_file(user_data[fmt]["data"]), current=host_file(user_data[fmt]["drifted"])
        )
        return await directory.export(str(tmp_path / "drift"))

    out = Path(timed(tier, f"monitor ({fmt})", body))
    drift = json.loads((out / "drift.json").read_text())
    assert drift["dataset_drift"] is True, drift
    assert (out / "exit-code").read_text().strip() == "1"


@pytest.mark.parametrize("fmt", FORMATS)
def test_batch_predict_scores_a_users_file(
    tier: Tier, user_data: dict[str, dict[str, Path]], trained: Path, fmt: str, tmp_path: Path
) -> None:
    import pandas as pd

    async def body() -> str:
        scored = await pipeline().batch_predict(
            input=host_file(user_data[fmt]["data"]), model=model_dir(trained / "model")
        )
        return await scored.export(str(tmp_path / "batch"))

    out = Path(timed(tier, f"batch-predict ({fmt})", body))
    predictions = pd.read_parquet(out / "predictions")
    assert len(predictions) == 1500
    assert (out / "exit-code").read_text().strip() == "0"
    assert (out / "report" / "batch.json").is_file()


def test_test_report_returns_junit_and_coverage(tier: Tier, tmp_path: Path) -> None:
    async def body() -> str:
        return await (await pipeline().test_report(selection="unit")).export(str(tmp_path / "reports"))

    out = Path(timed(tier, "test-report", body))
    junit = (out / "junit.xml").read_text()
    assert "<testsuite" in junit and 'failures="0"' in junit
    assert "<coverage" in (out / "coverage.xml").read_text()
    assert (out / "exit-code").read_text().strip() == "0"


def test_build_scan_publish_ends_with_a_pullable_digest(tier: Tier, trained: Path) -> None:
    registry = tier.registry()
    address = f"{registry.host}/mlship-serving:abc1234"
    password = dagger.dag.set_secret("registry-password", registry.password)
    model = model_dir(trained / "model")

    scan = timed(tier, "scan", lambda: pipeline().scan(model=model))
    assert scan.strip(), "scan-gate printed nothing"

    async def sarif() -> str:
        report = pipeline().scan_report(model=model)
        return await report.contents()

    assert json.loads(timed(tier, "scan-report (sarif)", sarif))["version"] == "2.1.0"

    ref = timed(
        tier,
        "publish",
        lambda: pipeline().publish(
            address=address,
            username=registry.username,
            password=password,
            model=model,
            git_sha="abc1234",
            model_version="3",
        ),
    )
    assert ref.startswith(address + "@sha256:") and len(ref.split("@sha256:")[1]) == 64
    pulled = registry.pull(ref)
    assert pulled.returncode == 0, pulled.stderr
    labels = support.inspect(ref)["Config"]["Labels"]
    assert labels["org.opencontainers.image.revision"] == "abc1234"
    assert labels["io.mlship.model.version"] == "3"


@pytest.fixture
def served(tier: Tier, trained: Path) -> Iterator[str]:
    port = support.free_port()
    svc = pipeline().serve(model=model_dir(trained / "model"))
    timed(tier, "serve up", lambda: svc.up(ports=[dagger.PortForward(backend=8000, frontend=port)]))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        tier.interp.stop_services()


def test_serve_answers_ready_and_predict(tier: Tier, served: str, trained: Path) -> None:
    from mlship.registry import model_input_example

    container = tier.interp._services[-1]
    support.wait_ready(served, container)
    example: Any = model_input_example(trained / "model")
    records = example.to_dict(orient="records")
    response = httpx.post(f"{served}/predict", json={"records": records}, timeout=30)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == len(records)
